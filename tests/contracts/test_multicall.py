"""Multicall3 at its canonical address, as the keeper uses it to batch views.

The keeper reads many accounts' health in one `aggregate3` call and expects the canonical
semantics: one `Result(success, returnData)` per call in order, a failing call with
`allowFailure` reported in place (its revert data intact, so the keeper can decode why), and a
failing call without it reverting the whole batch with `CallFailed(index)`.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import decode
from web3 import Web3
from web3.contract import Contract

from keeper.devnet.network import Devnet
from keeper.devnet.tx import send
from keeper.protocol.artifacts import load_artifact
from keeper.protocol.calls import MULTICALL3_ADDRESS
from keeper.protocol.errors import decode_revert
from tests.contracts.helpers import (
    fresh_address,
    market,
    open_account,
    reverted,
    token_address,
    units,
    view_revert,
)

pytestmark = pytest.mark.chain


def _multicall(chain: Devnet) -> Contract:
    return chain.deployment.contract(chain.w3, "Multicall3")


def _call(
    target: Contract, function: str, *args: Any, allow_failure: bool = False
) -> tuple[str, bool, str]:
    return (target.address, allow_failure, target.encode_abi(function, args=list(args)))


def test_multicall3_lives_at_the_canonical_address(chain: Devnet) -> None:
    assert chain.deployment.address("Multicall3") == MULTICALL3_ADDRESS
    code = bytes(chain.w3.eth.get_code(Web3.to_checksum_address(MULTICALL3_ADDRESS)))
    assert code == bytes.fromhex(load_artifact("Multicall3").deployed_bytecode.removeprefix("0x"))

    multicall = _multicall(chain)
    latest = chain.w3.eth.get_block("latest")
    assert multicall.functions.getBlockNumber().call() == latest["number"]
    assert multicall.functions.getCurrentBlockTimestamp().call() == latest["timestamp"]
    assert multicall.functions.getChainId().call() == chain.w3.eth.chain_id
    keeper = Web3.to_checksum_address(chain.roles.keeper.address)
    assert multicall.functions.getEthBalance(keeper).call() == chain.w3.eth.get_balance(keeper)


def test_aggregate3_returns_each_result_and_reports_allowed_failures(chain: Devnet) -> None:
    manager = market(chain).manager
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    opened = open_account(
        chain,
        chain.roles.borrowers[0].address,
        units(chain, "USDC", 10_000),
        units(chain, "USDC", 1_000),
    )
    unknown = fresh_address("unknown-account")

    results = (
        _multicall(chain)
        .functions.aggregate3(
            [
                _call(manager, "creditAccountsCount"),
                _call(oracle, "getPrice", token_address(chain, "WETH")),
                _call(manager, "calcDebt", unknown, allow_failure=True),
                _call(manager, "creditAccountInfo", opened.address),
                _call(manager, "calcHealthFactor", opened.address, allow_failure=True),
            ]
        )
        .call()
    )

    assert [success for success, _ in results] == [True, True, False, True, True]
    assert decode(["uint256"], results[0][1]) == (manager.functions.creditAccountsCount().call(),)
    assert decode(["uint256", "uint8"], results[1][1]) == (3_000 * 10**8, 8)
    failure = decode_revert(results[2][1])
    assert failure.name == "UnknownCreditAccount"
    # The keeper's decoder checksums address arguments (`unknown` is checksummed).
    assert failure.args == {"creditAccount": unknown}
    assert unknown != unknown.lower()
    owner, principal, _, accrued_interest, accrued_fees = decode(
        ["address", "uint256", "uint256", "uint256", "uint256"], results[3][1]
    )
    assert (owner.lower(), principal, accrued_interest, accrued_fees) == (
        opened.owner.lower(),
        units(chain, "USDC", 10_000),
        0,
        0,
    )
    assert decode(["uint256"], results[4][1]) == (
        manager.functions.calcHealthFactor(opened.address).call(),
    )


def test_aggregate3_batches_every_accounts_health_in_one_call(chain: Devnet) -> None:
    manager = market(chain).manager
    opened = [
        open_account(
            chain,
            borrower.address,
            units(chain, "USDC", 10_000),
            units(chain, "USDC", 600 * (index + 1)),
        )
        for index, borrower in enumerate(chain.roles.borrowers[:4])
    ]

    results = (
        _multicall(chain)
        .functions.aggregate3(
            [_call(manager, "calcHealthFactor", account.address) for account in opened]
        )
        .call()
    )

    batched = [decode(["uint256"], data)[0] for _, data in results]
    direct = [manager.functions.calcHealthFactor(a.address).call() for a in opened]
    assert batched == direct
    assert batched == sorted(batched)  # more collateral, higher Hf


def test_aggregate3_reverts_on_a_failure_that_is_not_allowed(chain: Devnet) -> None:
    manager = market(chain).manager
    multicall = _multicall(chain)
    calls = [
        _call(manager, "creditAccountsCount"),
        _call(manager, "calcDebt", fresh_address("a"), allow_failure=True),
        _call(manager, "calcDebt", fresh_address("b")),
    ]

    reason = view_revert(multicall.functions.aggregate3(calls))
    assert reason.name == "CallFailed"
    assert reason.args == {"index": 2}

    tx_reason = reverted(chain, multicall.functions.aggregate3(calls), chain.roles.keeper.address)
    assert tx_reason.name == "CallFailed"
    assert tx_reason.args == {"index": 2}


def test_aggregate3_calls_as_itself_so_admin_calls_fail(chain: Devnet) -> None:
    pool = market(chain).pool
    deployer = chain.roles.deployer.address
    rate_before = pool.functions.interestRatePerSecond().call()
    batch = _multicall(chain).functions.aggregate3(
        [_call(pool, "setInterestRate", 0, allow_failure=True)]
    )

    # Even sent by the pool's owner, the call reaches the pool from Multicall3 and is refused.
    ((success, return_data),) = batch.call({"from": deployer})
    assert not success
    assert decode_revert(return_data).name == "NotOwner"
    receipt = send(chain.w3, batch, deployer)
    assert receipt["status"] == 1
    assert pool.functions.interestRatePerSecond().call() == rate_before
