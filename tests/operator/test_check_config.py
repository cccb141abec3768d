"""`keeper check-config`: every check passes on a good devnet; a paused market for a signer
that is no emergency liquidator, a stale feed, the wrong chain, an address without code and a
missing key each give a FAIL line naming what was checked, and exit 1; an invalid file exits 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keeper.devnet.anvil import free_port
from keeper.devnet.controls import advance_time, latest_answer, set_price
from keeper.devnet.tx import deploy, send
from keeper.protocol.calls import MULTICALL3_ADDRESS as MULTICALL3
from tests.keeper.helpers import managers
from tests.operator.helpers import Operator

pytestmark = pytest.mark.chain

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")


def lines(stdout: str) -> tuple[list[str], tuple[int, int, int]]:
    """The check lines and the summary's (passed, failed, skipped), checked against each other."""
    *checks, summary = stdout.strip().splitlines()
    match = SUMMARY.match(summary)
    assert match, summary
    counts = tuple(int(n or 0) for n in match.groups())
    statuses = [line.split("  ", 1)[0] for line in checks]
    assert counts == (statuses.count("PASS"), statuses.count("FAIL"), statuses.count("SKIP"))
    assert len(statuses) == sum(counts), stdout
    return checks, (counts[0], counts[1], counts[2])


def test_every_check_passes_on_a_good_devnet(operator: Operator) -> None:
    net = operator.net
    result = operator.run("check-config", "--config", str(operator.config))
    assert result.returncode == 0, result.stdout + result.stderr
    checks, (passed, failed, skipped) = lines(result.stdout)
    assert failed == skipped == 0
    text = "\n".join(checks)
    for expected in (
        f"PASS  RPC endpoint {net.node.rpc_url}: answers",
        "PASS  chain id: 31337 matches chain.chain_id",
        "PASS  code at Multicall3 0xcA11bde05977b3631167028862bE2a173976CA11",
        f"PASS  WebSocket {net.node.ws_url}: newHeads subscription accepted, chain 31337",
        f"PASS  signer: loads, address {operator.signer}",
        "PASS  signer gas balance",
        "PASS  back-fill from protocol.deploy_block",
        "20 open account(s), 4 feed(s)",
    ):
        assert expected in text, text
    for i, market in enumerate(net.deployment.markets):
        manager = net.deployment.address(f"CreditManager.{market}")
        assert f"PASS  code at protocol.credit_managers[{i}] {manager}" in text
        assert f"PASS  protocol.credit_managers[{i}] {manager} answers as a CreditManager" in text
        assert f"PASS  signer {market} balance, market {market}" in text
        assert re.search(rf"PASS  liquidation permission, market {market} .*anyone may", text)
    batch = net.deployment.address("BatchLiquidator")
    assert f"PASS  code at liquidation.batch_liquidator {batch}" in text
    assert (
        f"PASS  liquidation.batch_liquidator {batch}: owned by the signer: batches of up to 25 "
        "accounts" in text
    )
    for symbol in net.deployment.tokens:
        feed = net.deployment.address(f"PriceFeed.{symbol}")
        assert re.search(rf"PASS  feed {feed} \({symbol}, .*stale after 10,800 s", text), text
    # RPC, chain id, code x5, managers x2, WebSocket, signer, gas, batch liquidator's owner,
    # back-fill, funds and permission x2 markets, native token, feeds x4
    assert passed == len(checks) == 23


def test_paused_market_and_stale_feeds_fail(fresh: Operator) -> None:
    net, deployer = fresh.net, fresh.net.roles.deployer.address
    send(net.w3, managers(net)["USDC"].functions.pause(), deployer)
    advance_time(net.w3, 3 * 3600 + 60)  # past every feed's staleness period
    set_price(
        net.w3, net.deployment, "WETH", latest_answer(net.w3, net.deployment, "WETH"), deployer
    )

    # The devnet's BatchLiquidator is an emergency liquidator of every market: without it, the
    # signer alone is not.
    single = fresh.config.with_name("single.toml")
    single.write_text(
        "\n".join(
            line
            for line in fresh.config.read_text().splitlines()
            if not line.startswith("batch_liquidator")
        )
    )
    result, batched = fresh.run_all(
        ("check-config", "--config", str(single)), ("check-config", "--config", str(fresh.config))
    )
    assert re.search(
        r"PASS  liquidation permission, market USDC .*: protocol paused: liquidating through the "
        r"BatchLiquidator, an emergency liquidator",
        batched.stdout,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    checks, (_, failed, _) = lines(result.stdout)
    failures = [line for line in checks if line.startswith("FAIL")]
    assert len(failures) == failed == 4, result.stdout  # the USDC market, 3 stale feeds
    assert re.search(
        r"FAIL  liquidation permission, market USDC .*: protocol paused and the signer is not an "
        r"emergency liquidator",
        result.stdout,
    )
    assert re.search(r"PASS  liquidation permission, market WETH ", result.stdout)
    for symbol in ("USDC", "WBTC", "LINK"):
        feed = net.deployment.address(f"PriceFeed.{symbol}")
        assert re.search(
            rf"FAIL  feed {feed} \({symbol}, .*: stale since \d+ \(\d[\d,]* s ago\)", result.stdout
        )
    assert re.search(r"PASS  feed .* \(WETH, .*updated 0 s ago", result.stdout)


def test_broken_configs_fail_or_exit_2(operator: Operator, tmp_path: Path) -> None:
    """Three configs at once: the wrong chain with an address without code and an unset key
    variable; an unreachable node (its URL carrying a secret); an invalid field."""
    text = operator.config.read_text()
    no_code = "0x" + "11" * 20
    manager = operator.net.deployment.address("CreditManager.WETH")
    port = free_port()
    wrong, unreachable, invalid = (tmp_path / f"{n}.toml" for n in ("wrong", "down", "invalid"))
    wrong.write_text(
        text.replace("chain_id = 31337", "chain_id = 1")
        .replace(manager, no_code)
        .replace('"ASGARD_KEEPER_KEY"', '"UNSET_KEEPER_KEY"')
    )
    unreachable.write_text(
        text.replace(operator.net.node.rpc_url, f"http://127.0.0.1:{port}/api-key")
    )
    invalid.write_text(text.replace("chain_id = 31337", "chain_id = 0"))
    result, down, refused = operator.run_all(
        *(("check-config", "--config", str(path)) for path in (wrong, unreachable, invalid))
    )

    assert result.returncode == 1
    checks, (_, failed, skipped) = lines(result.stdout)
    assert "FAIL  chain id: the node serves chain 31337, chain.chain_id is 1" in checks
    assert f"FAIL  code at protocol.credit_managers[1] {no_code}: no contract" in checks
    assert any(c.startswith("FAIL  signer: ") and "UNSET_KEEPER_KEY" in c for c in checks)
    assert any(c.startswith("FAIL  WebSocket") and "(chain.chain_id is 1)" in c for c in checks)
    assert failed == 4
    assert skipped == 2
    batch = operator.net.deployment.address("BatchLiquidator")
    assert f"SKIP  liquidation.batch_liquidator {batch}: owner not checked: no signer" in checks
    assert checks[-1].startswith("SKIP  back-fill, funds, permissions and feeds")

    assert down.returncode == 1
    assert down.stdout.splitlines() == [
        f"FAIL  RPC endpoint http://127.0.0.1:{port}/...: unreachable (eth_blockNumber to "
        f"http://127.0.0.1:{port}/... failed after 4 attempts: ClientConnectorError)",
        "0 passed, 1 failed",
    ]
    assert "api-key" not in down.stdout + down.stderr

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.startswith("keeper: error: chain.chain_id = 0: ")
    assert len(refused.stderr.splitlines()) == 1


def test_a_batch_liquidator_the_signer_does_not_own_fails_and_run_exits_2(
    fresh: Operator, tmp_path: Path
) -> None:
    net = fresh.net
    text = fresh.config.read_text()
    batch = net.deployment.address("BatchLiquidator")
    others = deploy(
        net.w3, "BatchLiquidator", net.roles.deployer.address, net.roles.competitor.address
    )
    no_code = "0x" + "22" * 20
    configs = {}
    for name, address in (("others", others), ("none", no_code), ("multicall", MULTICALL3)):
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(text.replace(batch, address))
    checked = fresh.run_all(*(("check-config", "--config", str(c)) for c in configs.values()))
    for result in checked:
        assert result.returncode == 1, result.stdout
    owned, absent, foreign = (result.stdout for result in checked)
    assert (
        f"FAIL  liquidation.batch_liquidator {others}: its owner() is "
        f"{net.roles.competitor.address}, not the signer {fresh.signer}; deploy one owned by the "
        "signer, or remove batch_liquidator" in owned
    )
    assert f"FAIL  code at liquidation.batch_liquidator {no_code}: no contract" in absent
    assert f"FAIL  liquidation.batch_liquidator {no_code}: no contract at this address" in absent
    assert (
        f"FAIL  liquidation.batch_liquidator {MULTICALL3}: does not answer owner(): not a "
        "BatchLiquidator" in foreign
    )

    for config, problem in (
        (configs["others"], f"its owner() is {net.roles.competitor.address}"),
        (configs["none"], "no contract at this address on chain 31337"),
    ):
        result = fresh.run("run", "--config", str(config), "--log-format", "json")
        assert result.returncode == 2, result.stdout + result.stderr
        refusal = [line for line in result.stderr.splitlines() if line.startswith("keeper: ")]
        assert len(refusal) == 1, result.stderr
        assert refusal[0].startswith("keeper: error: liquidation.batch_liquidator = "), refusal
        assert problem in refusal[0]
        assert "remove batch_liquidator to send one transaction per account" in refusal[0]
