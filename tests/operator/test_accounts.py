"""`keeper accounts` and `keeper account`: the keeper's own figures, which must equal the
contract's views at the block they are from, in the order and with the filters an operator asks."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from web3.exceptions import ContractCustomError

from keeper.devnet.controls import advance_time, latest_answer, set_price
from keeper.devnet.keeper_config import KEY_ENV
from tests.keeper.helpers import managers, open_accounts
from tests.operator.helpers import WAD, Operator, by_health, crash_weth, hf_text, views

pytestmark = pytest.mark.chain


def json_rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_accounts_are_sorted_and_equal_the_contract_views(fresh: Operator) -> None:
    net = fresh.net
    crash_weth(net)
    usdc = net.deployment.address("CreditManager.USDC")
    every, below_105, only_usdc, table = fresh.run_all(
        ("accounts", "--config", str(fresh.config), "--json"),
        ("accounts", "--config", str(fresh.config), "--json", "--below", "1.05"),
        ("accounts", "--config", str(fresh.config), "--json", "--manager", usdc.lower()),
        ("accounts", "--config", str(fresh.config)),
    )
    rows = json_rows(every)
    block = rows[0]["block"]
    market_of = {net.deployment.address(f"CreditManager.{m}"): m for m in net.deployment.markets}
    assert {row["account"] for row in rows} == set(open_accounts(net, block))
    assert [row["account"] for row in rows] == [a for _, a, _ in by_health(net, block)]
    for row in rows:
        assert row["block"] == block
        truth = views(net, row["account"], market_of[row["manager"]], block)
        assert int(row["health_factor_wad"]) == truth["health_factor_wad"]
        assert row["health_factor"] == hf_text(truth["health_factor_wad"])
        assert int(row["total_value"]) == truth["total_value"]
        assert int(row["weighted_value"]) == truth["weighted_value"]
        assert int(row["debt"]["principal"]) == truth["principal"]
        assert int(row["debt"]["interest"]) == truth["interest"]
        assert int(row["debt"]["fee"]) == truth["fee"]
        assert row["owner"] == truth["owner"]
        assert row["liquidatable"] is truth["liquidatable"]
        assert row["market"] == market_of[row["manager"]]
        assert row["unpriced"] is None

    below = json_rows(below_105)
    assert [r["account"] for r in below] == [
        r["account"] for r in rows if int(r["health_factor_wad"]) * 100 < 105 * WAD
    ]
    assert 0 < len(below) < len(rows)
    assert [r["account"] for r in json_rows(only_usdc)] == [
        r["account"] for r in rows if r["manager"] == usdc
    ]

    assert table.returncode == 0
    header, blank, columns, rule, *body = table.stdout.splitlines()
    assert blank == ""
    assert set(rule) == {"-", " "}
    assert header.startswith(f"{len(rows)} Credit Account(s) at block {block} ")
    assert columns.split()[:5] == ["market", "manager", "credit", "account", "owner"]
    assert len(body) == len(rows)
    for line, row in zip(body, rows, strict=True):
        cells = line.split()
        assert cells[2] == row["account"]
        assert cells[4] == row["health_factor"]
        assert cells[-1] == ("yes" if row["liquidatable"] else "no")


def test_bad_below_and_manager_exit_2(operator: Operator) -> None:
    other = "0x" + "22" * 20
    config = str(operator.config)
    zero, word, manager = operator.run_all(
        ("accounts", "--config", config, "--below", "0"),
        ("accounts", "--config", config, "--below", "abc"),
        ("accounts", "--config", config, "--manager", other),
    )
    assert (zero.returncode, word.returncode, manager.returncode) == (2, 2, 2)
    assert zero.stderr.splitlines()[-1] == (
        "keeper accounts: error: argument --below: 0 must be a health factor above 0, e.g. 1.05"
    )
    assert word.stderr.splitlines()[-1] == (
        "keeper accounts: error: argument --below: 'abc' is not a number; write e.g. 1.05"
    )
    configured = [str(m.address) for m in managers(operator.net).values()]
    assert manager.stderr == (
        f"keeper: error: --manager = '{other}': not in protocol.credit_managers "
        f"({', '.join(configured)})\n"
    )
    assert zero.stdout == word.stdout == manager.stdout == ""


def test_account_breakdown_equals_the_contract_views(fresh: Operator) -> None:
    net = fresh.net
    hf, account, market = crash_weth(net)[0]
    result, text = fresh.run_all(
        ("account", account, "--config", str(fresh.config), "--json"),
        ("account", account.lower(), "--config", str(fresh.config)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    breakdown = json.loads(result.stdout)
    block = breakdown["block"]
    truth = views(net, account, market, block)
    assert int(breakdown["health_factor_wad"]) == truth["health_factor_wad"] == hf
    assert int(breakdown["total_value"]) == truth["total_value"]
    assert int(breakdown["weighted_value"]) == truth["weighted_value"]
    assert [int(breakdown["debt"][k]) for k in ("principal", "interest", "fee")] == [
        truth["principal"],
        truth["interest"],
        truth["fee"],
    ]
    assert breakdown["liquidatable"] is truth["liquidatable"] is True
    manager = managers(net)[market].functions
    tokens, amounts = manager.balances(account).call(block_identifier=block)
    held = {t: a for t, a in zip(tokens, amounts, strict=True) if a}
    assert {c["token"]: int(c["balance"]) for c in breakdown["collateral"]} == held
    assert sum(int(c["value"]) for c in breakdown["collateral"]) == truth["total_value"]
    for holding in breakdown["collateral"]:
        answer = latest_answer(net.w3, net.deployment, holding["symbol"])
        assert int(holding["price"]["answer"]) == answer
        threshold = manager.liquidationThreshold(holding["token"]).call(block_identifier=block)
        assert holding["liquidation_threshold_bps"] == threshold
    payout = manager.calcLiquidationPayout(
        truth["total_value"], truth["principal"], truth["interest"], truth["fee"]
    ).call(block_identifier=block)
    assert int(breakdown["payout"]["amount_paid"]) == payout[0]
    assert int(breakdown["payout"]["premium"]) == truth["total_value"] - payout[0]
    assert breakdown["contract_views"] == {"block": block, "match": True, "mismatches": []}

    assert text.returncode == 0
    assert f"contract views at block {block}: match" in text.stdout.splitlines()[-1]
    assert f"  health factor   {hf_text(hf)}  LIQUIDATABLE" in text.stdout
    assert f"  owner           {truth['owner']}" in text.stdout


def test_account_unknown_or_malformed_exits_2(operator: Operator) -> None:
    unknown = "0x" + "33" * 20
    result, malformed = operator.run_all(
        ("account", unknown, "--config", str(operator.config)),
        ("account", "0x1234", "--config", str(operator.config)),
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"keeper: error: ADDRESS = '{unknown}': no Credit Account with this address in the "
        "configured managers\n"
    )
    assert malformed.returncode == 2
    assert malformed.stderr == (
        "keeper: error: ADDRESS = '0x1234': must be a 0x-prefixed 20-byte hex address\n"
    )


def test_unpriced_accounts_come_first_and_the_views_refuse_them_too(fresh: Operator) -> None:
    """LINK's feed goes stale: accounts holding LINK cannot be valued by anyone."""
    net, deployer = fresh.net, fresh.net.roles.deployer.address
    advance_time(net.w3, 3 * 3600 + 60)
    for symbol in ("USDC", "WETH", "WBTC"):
        set_price(
            net.w3, net.deployment, symbol, latest_answer(net.w3, net.deployment, symbol), deployer
        )
    link = net.deployment.address("LINK")
    holding_link = sorted(
        account
        for account, market in open_accounts(net).items()
        if managers(net)[market].functions.balanceOf(account, link).call()
    )
    assert holding_link
    listed, breakdown = fresh.run_all(
        ("accounts", "--config", str(fresh.config), "--json", "--below", "0.5"),
        ("account", holding_link[0], "--config", str(fresh.config)),
    )
    rows = json_rows(listed)
    assert (
        sorted(r["account"] for r in rows) == holding_link
    )  # unpriced: listed whatever --below says
    for row in rows:
        assert row["health_factor_wad"] is None
        assert row["liquidatable"] is False
        assert row["unpriced"].startswith(f"price of {link} unavailable: stale since ")
        with pytest.raises(ContractCustomError):
            managers(net)[row["market"]].functions.calcHealthFactor(row["account"]).call()

    assert breakdown.returncode == 0, breakdown.stdout + breakdown.stderr
    assert "  health factor   unpriced" in breakdown.stdout
    assert f"unpriced: price of {link} unavailable: stale since " in breakdown.stdout
    assert breakdown.stdout.splitlines()[-1] == f"contract views at block {rows[0]['block']}: match"


def test_backfill_progress_shows_on_a_terminal_only(operator: Operator) -> None:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keeper", "accounts", "--config", str(operator.config)],
            stdout=subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            env={**os.environ, KEY_ENV: ""},
            timeout=120,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    blocks = operator.net.w3.eth.block_number
    assert f"back-fill: {blocks:,} / {blocks:,} blocks (100.0 %)".encode() in shown
    assert b"back-fill" not in result.stdout
    assert result.stdout.decode().startswith("20 Credit Account(s)")


def test_hf_text_floors() -> None:
    assert hf_text(999_999_999_999_999_999) == "0.9999"
    assert hf_text(WAD) == "1.0000"
    assert Decimal(hf_text(1_061_799_987_406_793_315)) == Decimal("1.0617")
