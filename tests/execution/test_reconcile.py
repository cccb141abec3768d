"""`Dispatcher.reconcile` against a real anvil: every way a journaled transaction can have ended
while no keeper was watching, settled before anything new is sent.

Each test journals transactions the way the dispatcher does (the record first), then changes the
chain behind its back (mines it, never sends it, spends its nonce elsewhere, leaves it pending)
and checks what a fresh dispatcher concludes, and what it sends next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeper.chain.rpc import RpcClient
from keeper.devnet.anvil import AnvilNode
from keeper.execution.dispatcher import Dispatcher, TxOutcome, TxRequest
from keeper.execution.fees import Eip1559Fees
from keeper.execution.journal import TxJournal, TxStatus
from keeper.execution.signer import Signer, signer_from_env
from keeper.startup import scratch_database

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

GWEI = 10**9
RECIPIENT = "0x000000000000000000000000000000000000dEaD"
FEES = Eip1559Fees(100 * GWEI, GWEI)


@pytest.fixture
def signer(node: AnvilNode) -> Signer:
    return signer_from_env("KEY", {"KEY": node.keys()[1].private_key})


@pytest.fixture
def journal(signer: Signer) -> Iterator[TxJournal]:
    with scratch_database() as database:
        yield TxJournal(database, signer.address)


def _dispatcher(rpc: RpcClient, signer: Signer, journal: TxJournal) -> Dispatcher:
    return Dispatcher(
        rpc,
        signer,
        31337,
        priority_fee_wei=GWEI,
        max_fee_wei=500 * GWEI,
        inclusion_timeout_s=30.0,
        journal=journal,
    )


def _signed(signer: Signer, nonce: int, value: int = 0) -> Any:
    return signer.sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": nonce,
            "to": RECIPIENT,
            "data": "0x",
            "value": value,
            "gas": 21_000,
            "maxFeePerGas": FEES.max_fee_per_gas,
            "maxPriorityFeePerGas": FEES.max_priority_fee_per_gas,
        }
    )


def _journaled(signer: Signer, journal: TxJournal, nonce: int, key: str) -> Any:
    """Signs a transfer and journals it as the dispatcher does before sending; returns it."""
    signed = _signed(signer, nonce)
    journal.record_pending(
        signed.hash,
        key=key,
        nonce=nonce,
        to=RECIPIENT,
        data="0x",
        gas_limit=21_000,
        fees=FEES,
        cancel=False,
    )
    return signed


def _statuses(journal: TxJournal) -> dict[str, TxStatus]:
    return {entry.key: entry.status for entry in journal.entries()}


async def test_a_journaled_transaction_mined_meanwhile_is_booked_not_resent(
    rpc: RpcClient, signer: Signer, journal: TxJournal
) -> None:
    await rpc.request("evm_setAutomine", [False])
    signed = _journaled(signer, journal, 0, "liquidate:mined")
    await rpc.request("eth_sendRawTransaction", [signed.raw_transaction])
    await rpc.request("evm_mine", [])
    adopted = await _dispatcher(rpc, signer, journal).reconcile(mined_after=0)
    assert adopted == []
    (entry,) = journal.entries()
    assert (entry.status, entry.block_number) == (TxStatus.INCLUDED, 1)


async def test_one_still_pending_is_followed_to_its_receipt_and_never_sent_twice(
    rpc: RpcClient, signer: Signer, journal: TxJournal
) -> None:
    await rpc.request("evm_setAutomine", [False])
    signed = _journaled(signer, journal, 0, "liquidate:pending")
    await rpc.request("eth_sendRawTransaction", [signed.raw_transaction])
    dispatcher = _dispatcher(rpc, signer, journal)
    ((request, future),) = await dispatcher.reconcile(mined_after=0)
    assert request.key == "liquidate:pending"
    assert dispatcher.in_flight("liquidate:pending")
    assert dispatcher.pending_nonces() == {0: [signed.hash]}
    task = asyncio.create_task(dispatcher.run())
    try:
        with pytest.raises(ValueError, match="already in flight"):
            dispatcher.submit(TxRequest("liquidate:pending", RECIPIENT, "0x", 21_000))
        await rpc.request("evm_mine", [])
        result = await asyncio.wait_for(future, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (result.outcome, result.tx_hash) == (TxOutcome.INCLUDED, signed.hash)
    assert _statuses(journal) == {"liquidate:pending": TxStatus.INCLUDED}
    count = await rpc.request("eth_getTransactionCount", [signer.address, "latest"])
    assert int(count, 16) == 1


async def test_one_never_sent_is_dropped_and_its_nonce_used_again(
    rpc: RpcClient, signer: Signer, journal: TxJournal
) -> None:
    _journaled(signer, journal, 0, "liquidate:never-sent")
    dispatcher = _dispatcher(rpc, signer, journal)
    assert await dispatcher.reconcile(mined_after=0) == []
    assert _statuses(journal) == {"liquidate:never-sent": TxStatus.DROPPED}
    task = asyncio.create_task(dispatcher.run())
    try:
        future = dispatcher.submit(TxRequest("transfer", RECIPIENT, "0x", 21_000))
        result = await asyncio.wait_for(future, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert result.outcome is TxOutcome.INCLUDED
    sent = await rpc.request("eth_getTransactionByHash", [result.tx_hash])
    assert int(sent["nonce"], 16) == 0, "the dropped transaction's nonce was not reused"


async def test_one_whose_nonce_something_else_spent_is_marked_taken(
    rpc: RpcClient, signer: Signer, journal: TxJournal
) -> None:
    _journaled(signer, journal, 0, "liquidate:outrun")
    # Another process with the same key, which the journal knows nothing of, uses nonce 0.
    other = _signed(signer, 0, value=1)
    await rpc.request("evm_setAutomine", [False])
    await rpc.request("eth_sendRawTransaction", [other.raw_transaction])
    await rpc.request("evm_mine", [])
    assert await _dispatcher(rpc, signer, journal).reconcile(mined_after=0) == []
    assert _statuses(journal) == {"liquidate:outrun": TxStatus.NONCE_TAKEN}


async def test_a_dropped_nonce_below_one_in_flight_is_filled_before_anything_after_it(
    rpc: RpcClient, signer: Signer, journal: TxJournal
) -> None:
    await rpc.request("evm_setAutomine", [False])
    _journaled(signer, journal, 0, "liquidate:never-sent")
    waiting = _journaled(signer, journal, 1, "liquidate:waiting")
    await rpc.request("eth_sendRawTransaction", [waiting.raw_transaction])
    dispatcher = _dispatcher(rpc, signer, journal)
    ((request, adopted),) = await dispatcher.reconcile(mined_after=0)
    assert request.key == "liquidate:waiting"
    assert _statuses(journal)["liquidate:never-sent"] is TxStatus.DROPPED
    task = asyncio.create_task(dispatcher.run())
    try:
        future = dispatcher.submit(TxRequest("transfer", RECIPIENT, "0x", 21_000))
        sent = await _sent_nonce(rpc, signer, 0)
        await rpc.request("evm_mine", [])
        results = await asyncio.wait_for(asyncio.gather(future, adopted), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [result.outcome for result in results] == [TxOutcome.INCLUDED] * 2
    assert results[0].tx_hash == sent, "the new transaction did not take the dropped nonce 0"
    count = await rpc.request("eth_getTransactionCount", [signer.address, "latest"])
    assert int(count, 16) == 2


async def _sent_nonce(rpc: RpcClient, signer: Signer, nonce: int) -> str:
    """The hash of `signer`'s transaction at `nonce` once it waits in the pool."""
    for _ in range(200):
        pool = await rpc.request("txpool_content", [])
        for section in ("pending", "queued"):
            found = pool[section].get(signer.address.lower(), {}).get(str(nonce))
            if found is not None:
                return str(found["hash"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no transaction of {signer.address} at nonce {nonce} in the pool")
