"""The keeper's log decoder against web3's contract layer on real logs, and the state it rebuilds
from them against the contracts' views.

One history exercises every tracked event: the deployment (initialisation, thresholds, fees,
rates, feeds, emergency liquidators), then an account opened, swapped into WETH, made
liquidatable by a WETH crash and liquidated, a second account opened and closed, a pause, an
unpause, a fee change and a rate change. The raw JSON logs of all of it, as `eth_getLogs` returns
them, are decoded by `decode_logs` and compared field by field with what web3 makes of each
transaction's receipt.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from web3.logs import DISCARD
from web3.types import RPCEndpoint

from keeper.devnet.controls import set_price
from keeper.devnet.network import Devnet
from keeper.devnet.tx import contract_at, send
from keeper.protocol.artifacts import load_artifact
from keeper.protocol.events import ProtocolEvent, decode_logs
from keeper.state.store import MarketState, ProtocolState
from tests.contracts.helpers import (
    approve,
    fresh_address,
    market,
    open_account,
    read_account_state,
    read_market_state,
    token_address,
    units,
)

pytestmark = pytest.mark.chain

EMITTED_BY = {
    "CreditManager": (
        "CreditManagerInitialized",
        "CollateralTokenSet",
        "FeesSet",
        "EmergencyLiquidatorSet",
        "Paused",
        "Unpaused",
        "CreditAccountOpened",
        "BalanceUpdated",
        "DebtUpdated",
        "CreditAccountClosed",
        "CreditAccountLiquidated",
    ),
    "LendingPool": ("InterestRateUpdated",),
    "PriceOracle": ("PriceFeedSet",),
    "PriceFeed": ("AnswerUpdated",),
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _history(chain: Devnet) -> tuple[str, str]:
    """Runs the actions described in the module docstring; returns (liquidated, closed)."""
    w3 = chain.w3
    usdc = market(chain)
    manager = usdc.manager
    admin = chain.roles.deployer.address
    borrower, other = chain.roles.borrowers[0].address, chain.roles.borrowers[1].address
    keeper = chain.roles.keeper.address

    debt = units(chain, "USDC", 10_000)
    opened = open_account(chain, borrower, debt, units(chain, "USDC", 2_000))
    send(
        w3,
        manager.functions.swap(
            opened.address,
            chain.deployment.address("OracleSwapAdapter"),
            token_address(chain, "USDC"),
            token_address(chain, "WETH"),
            debt,
            0,
        ),
        borrower,
    )
    set_price(w3, chain.deployment, "WETH", 1_000 * 10**8, admin)
    assert manager.functions.isLiquidatable(opened.address).call()
    approve(chain, "USDC", keeper, manager.address)
    send(w3, manager.functions.liquidateCreditAccount(opened.address, keeper), keeper)

    closing = open_account(chain, other, units(chain, "USDC", 100), units(chain, "USDC", 50))
    send(w3, manager.functions.closeCreditAccount(closing.address, other), other)

    send(w3, manager.functions.pause(), admin)
    send(w3, manager.functions.setEmergencyLiquidator(fresh_address("emergency"), True), admin)
    send(w3, manager.functions.unpause(), admin)
    send(w3, manager.functions.setFees(900, 100, 300), admin)
    send(w3, usdc.pool.functions.setInterestRate(10**18), admin)
    # One account left open, holding two tokens, for the state comparison.
    kept = open_account(chain, borrower, units(chain, "USDC", 500), units(chain, "USDC", 400))
    send(
        w3,
        manager.functions.swap(
            kept.address,
            chain.deployment.address("OracleSwapAdapter"),
            token_address(chain, "USDC"),
            token_address(chain, "WBTC"),
            units(chain, "USDC", 300),
            0,
        ),
        borrower,
    )
    return opened.address, closing.address


def _raw_logs(chain: Devnet) -> list[dict[str, Any]]:
    response = chain.w3.provider.make_request(
        RPCEndpoint("eth_getLogs"),
        [{"fromBlock": hex(chain.deployment.deploy_block), "toBlock": "latest"}],
    )
    logs: list[dict[str, Any]] = response["result"]
    return logs


def _web3_events(chain: Devnet, logs: list[dict[str, Any]]) -> dict[tuple[int, int], Any]:
    """web3's decoding of every tracked event in the receipts of the transactions that emitted
    `logs`, keyed by (block, log index)."""
    contracts = {
        artifact: chain.w3.eth.contract(abi=load_artifact(artifact).abi) for artifact in EMITTED_BY
    }
    found: dict[tuple[int, int], Any] = {}
    for tx_hash in dict.fromkeys(log["transactionHash"] for log in logs):
        receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
        for artifact, names in EMITTED_BY.items():
            for name in names:
                for event in (
                    contracts[artifact].events[name]().process_receipt(receipt, errors=DISCARD)
                ):
                    key = (event["blockNumber"], event["logIndex"])
                    assert key not in found, f"two ABIs decode log {key}"
                    found[key] = event
    return found


def test_decode_logs_equals_web3_field_by_field(chain: Devnet) -> None:
    _history(chain)
    logs = _raw_logs(chain)
    # What a node returns: hex strings and lowercase addresses.
    assert all(log["address"] == log["address"].lower() for log in logs)
    assert all(isinstance(log["blockNumber"], str) for log in logs)

    decoded = decode_logs(logs)
    by_web3 = _web3_events(chain, logs)

    ours: dict[tuple[int, int], ProtocolEvent] = {
        (e.position.block_number, e.position.log_index): e for e in decoded
    }
    assert len(ours) == len(decoded)
    assert ours.keys() == by_web3.keys()
    assert len(decoded) < len(logs)  # Transfer, Borrow, NewRound, Swap ... were skipped
    # Chain order is kept.
    positions = [(e.position.block_number, e.position.log_index) for e in decoded]
    assert positions == sorted(positions)
    # The history produced every event the keeper tracks.
    assert {type(e).__name__ for e in decoded} == {
        name for names in EMITTED_BY.values() for name in names
    }

    for key, event in ours.items():
        theirs = by_web3[key]
        assert type(event).__name__ == theirs["event"]
        assert event.position.emitter == theirs["address"]
        assert event.position.block_hash == theirs["blockHash"].to_0x_hex()
        args = theirs["args"]
        field_names = [f for f in event.__dataclass_fields__ if f != "position"]
        assert field_names == [_snake(name) for name in args], theirs["event"]
        for name, value in args.items():
            ours_value = getattr(event, _snake(name))
            assert ours_value == value, f"{theirs['event']}.{name} at {key}"
            assert type(ours_value) is type(value), f"{theirs['event']}.{name}"


def test_state_rebuilt_from_logs_equals_the_views(chain: Devnet) -> None:
    liquidated, closed = _history(chain)
    w3 = chain.w3
    markets = []
    for symbol in chain.deployment.markets:
        contracts = market(chain, symbol)
        markets.append(
            MarketState(
                contracts.manager.address,
                contracts.underlying.address,
                contracts.pool.address,
                chain.deployment.address("PriceOracle"),
            )
        )
    state = ProtocolState(markets)
    changes = state.apply(decode_logs(_raw_logs(chain)))
    assert [e.credit_account for e in changes.liquidations] == [liquidated]
    # Feeds answer in their constructor, before the oracle knows them: like the daemon, read each
    # feed's latest round once the feeds are known.
    for feed in state.feeds():
        _, answer, _, updated_at, _ = (
            contract_at(w3, "PriceFeed", feed).functions.latestRoundData().call()
        )
        state.set_answer(feed, answer, updated_at)

    for symbol in chain.deployment.markets:
        manager = market(chain, symbol).manager
        view = state.market_view(manager.address)
        expected = read_market_state(chain, symbol)
        assert view.underlying == expected.underlying
        assert view.interest_rate == expected.interest_rate
        assert view.fees == expected.fees
        assert dict(view.liquidation_thresholds_bps) == dict(expected.liquidation_thresholds_bps)
        assert {t: view.prices[t] for t in expected.prices} == dict(expected.prices)

        accounts = state.markets[manager.address].accounts
        addresses = manager.functions.creditAccounts(0, 100).call()
        assert sorted(accounts) == sorted(addresses)
        for address, account in accounts.items():
            on_chain = read_account_state(chain, address, symbol)
            assert (account.owner, account.principal) == (on_chain.owner, on_chain.principal)
            assert account.cumulative_index_ray == on_chain.cumulative_index_ray
            assert (account.accrued_interest, account.accrued_fees) == (
                on_chain.accrued_interest,
                on_chain.accrued_fees,
            )
            held = {t: b for t, b in account.balances.items() if b}
            assert held == {t: b for t, b in on_chain.balances.items() if b}
    usdc_accounts = state.markets[market(chain).manager.address].accounts
    assert liquidated not in usdc_accounts
    assert closed not in usdc_accounts
    assert len(usdc_accounts) == 1
