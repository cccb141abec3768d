"""`keeper liquidate`: shows, simulates, asks, then liquidates through the keeper's dispatcher.
Nothing is ever sent on a dry run, a "no", a healthy account or a paused market; a "yes" on a
crashed account liquidates it on chain, paid to and by the keeper's signer."""

from __future__ import annotations

import pytest

from keeper.devnet.tx import send
from tests.keeper.helpers import liquidations, managers, open_accounts
from tests.operator.helpers import Operator, by_health, crash_weth, hf_text, tx_line

pytestmark = pytest.mark.chain

MAX_UINT256 = 2**256 - 1


def test_dry_run_sends_nothing_and_says_whether_it_would_succeed(fresh: Operator) -> None:
    net = fresh.net
    hf, account, market = crash_weth(net)[0]
    nonce = fresh.nonce()
    args = ("liquidate", account, "--config", str(fresh.config), "--dry-run")

    unapproved = fresh.run(*args)
    assert unapproved.returncode == 1
    assert f"  health factor   {hf_text(hf)} (liquidatable)" in unapproved.stdout
    assert (
        f"  approval        missing: the CreditManager may not pull {market}" in unapproved.stdout
    )
    assert "  simulation      reverts: TokenCallFailed(" in unapproved.stdout
    assert fresh.nonce() == nonce

    token = net.deployment.contract(net.w3, market)
    manager = managers(net)[market].address
    send(net.w3, token.functions.approve(manager, MAX_UINT256), fresh.signer)
    nonce = fresh.nonce()
    approved = fresh.run(*args)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "  simulation      succeeds" in approved.stdout
    assert "  gas             estimate " in approved.stdout
    assert " after the expected gas " in approved.stdout
    assert approved.stdout.splitlines()[-1] == (
        "dry run: nothing sent; the simulated liquidation succeeds"
    )
    assert fresh.nonce() == nonce
    assert account in open_accounts(net)


def test_answering_no_sends_nothing(fresh: Operator) -> None:
    _, account, _ = crash_weth(fresh.net)[0]
    nonce = fresh.nonce()
    result = fresh.run("liquidate", account, "--config", str(fresh.config), stdin="n\n")
    assert result.returncode == 1
    assert result.stderr == f"Liquidate {account} ? [y/N] keeper: aborted; nothing sent\n"
    assert fresh.nonce() == nonce
    assert account in open_accounts(fresh.net)


def test_yes_liquidates_a_crashed_account(fresh: Operator) -> None:
    net = fresh.net
    _, account, market = crash_weth(net)[0]
    start = net.w3.eth.block_number
    result = fresh.run("liquidate", account, "--config", str(fresh.config), "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    tx_hash, block = tx_line(result.stdout)
    (liquidation,) = [event for event in liquidations(net, start) if event.account == account]
    assert liquidation.liquidator == fresh.signer
    assert liquidation.market == market
    assert (liquidation.tx_hash, liquidation.block) == (tx_hash, block)
    assert account not in open_accounts(net)


def test_refuses_a_healthy_account_and_a_paused_market(fresh: Operator) -> None:
    net = fresh.net
    _, sunk, market = crash_weth(net)[0]
    send(net.w3, managers(net)[market].functions.pause(), net.roles.deployer.address)
    hf, healthy, _ = by_health(net)[-1]
    nonce = fresh.nonce()
    result, paused = fresh.run_all(
        ("liquidate", healthy, "--config", str(fresh.config), "--yes"),
        ("liquidate", sunk, "--config", str(fresh.config), "--yes"),
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"keeper: refused: the account is not liquidatable (health factor {hf_text(hf)} >= 1); "
        "nothing sent\n"
    )
    assert "  simulation      reverts: NotLiquidatable(" in result.stdout
    assert paused.returncode == 1
    assert paused.stderr.startswith(
        "keeper: refused: protocol paused and the signer is not an emergency liquidator"
    )
    assert fresh.nonce() == nonce
    assert sunk in open_accounts(net)


def test_help_names_the_operator_commands_and_explains_liquidate(operator: Operator) -> None:
    overview, manual = operator.run_all(("--help",), ("liquidate", "--help"))
    assert overview.returncode == manual.returncode == 0
    for command in ("check-config", "accounts", "account", "liquidate"):
        assert f"\n    {command}" in overview.stdout
    for needle in ("--dry-run", "--yes", "[y/N]", "approve()", "exit codes", "Profit is"):
        assert needle in manual.stdout, needle
