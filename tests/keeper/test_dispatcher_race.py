"""Regression: a block mined between the dispatcher's two reads of a stuck transaction.

Following a transaction past its inclusion timeout, the dispatcher first asks for the receipts
of its hashes, then for the signer's mined nonce count. When the block that includes one of its
own hashes lands between the two reads, the count says the nonce is spent while the receipt said
nothing was mined: the dispatcher took its own inclusion for "nonce used elsewhere" (a failed
liquidation, logged as an error and counted toward the skip-list). The end-to-end stuck-transaction
test hit this about one run in five; here the block is mined at exactly that moment, on a real
anvil, every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio

from keeper.chain.rpc import RpcClient
from keeper.devnet.anvil import AnvilNode
from keeper.execution.dispatcher import Dispatcher, TxOutcome, TxRequest
from keeper.execution.journal import TxJournal, TxStatus
from keeper.execution.signer import Signer, signer_from_env
from keeper.startup import scratch_database

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

GWEI = 10**9
RECIPIENT = "0x000000000000000000000000000000000000dEaD"


class MinesBeforeCountingNonces(RpcClient):
    """A client of the real node that, once armed, has the node mine a block right before the
    next `eth_getTransactionCount(…, "latest")` is answered."""

    armed = False

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        if self.armed and method == "eth_getTransactionCount" and params[-1] == "latest":
            self.armed = False
            await super().request("evm_mine", [])
        return await super().request(method, params)


@pytest_asyncio.fixture
async def node() -> AsyncIterator[AnvilNode]:
    with AnvilNode(accounts=2) as anvil:
        yield anvil


async def test_own_transaction_mined_between_receipt_and_nonce_reads_is_included(
    node: AnvilNode,
) -> None:
    rpc = MinesBeforeCountingNonces(node.rpc_url, timeout_s=5.0, attempts=2)
    signer = signer_from_env("KEY", {"KEY": node.keys()[1].private_key})
    with scratch_database() as database:
        await _race(rpc, signer, node.chain_id, TxJournal(database, signer.address))


async def _race(
    rpc: MinesBeforeCountingNonces, signer: Signer, chain_id: int, journal: TxJournal
) -> None:
    dispatcher = Dispatcher(
        rpc, signer, chain_id, priority_fee_wei=GWEI, max_fee_wei=500 * GWEI,
        inclusion_timeout_s=0.2, journal=journal,
    )  # fmt: skip
    await rpc.request("evm_setAutomine", [False])
    task = asyncio.create_task(dispatcher.run())
    try:
        rpc.armed = True
        future = dispatcher.submit(TxRequest("transfer", RECIPIENT, "0x", 21_000))
        result = await asyncio.wait_for(future, 10)
        assert not rpc.armed, "the race was not staged: no nonce count after the timeout"
        assert result.outcome is TxOutcome.INCLUDED, result
        assert result.replacements == 0
        receipt = await rpc.request("eth_getTransactionReceipt", [result.tx_hash])
        assert int(receipt["status"], 16) == 1
        assert int(receipt["blockNumber"], 16) == 1
        journaled = [
            (entry.tx_hash, entry.status, entry.block_number) for entry in journal.entries()
        ]
        assert journaled == [(result.tx_hash, TxStatus.INCLUDED, 1)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rpc.close()
