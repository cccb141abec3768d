"""The one component that sends the signer's transactions: it owns the nonce and the fees.

Everything the keeper sends goes through one task, one transaction at a time, because a node
strands concurrent sends from one sender and because two writers of one nonce counter produce gaps
and duplicates. The nonce is kept locally (the chain's pending count lags a fast sender) and
re-read from the chain whenever the node says something the dispatcher does not recognise.

A transaction not included within the inclusion timeout is replaced at the same nonce with fees
bumped by at least the node's replacement minimum, up to the configured cap. Before a replacement
the sender is asked whether the transaction is still wanted; if not, the nonce is spent on a
zero-value transfer to itself instead, so a liquidation someone else already made cannot revert
on chain at the keeper's expense.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from keeper.chain.heads import latest_head
from keeper.chain.rpc import ChainMismatchError, RpcClient, RpcError, RpcTransportError
from keeper.execution.errors import SendErrorKind, classify_send_error
from keeper.execution.fees import DEFAULT_MIN_BUMP_BPS, Eip1559Fees, bumped_fees, initial_fees
from keeper.execution.journal import JournalEntry, TxJournal, TxStatus
from keeper.execution.observer import ExecutionObserver, NullExecutionObserver
from keeper.execution.signer import Signer

log = structlog.get_logger(__name__)

_TRANSFER_GAS = 21_000
_MAX_RETRIES = 2
# Errors after which the local nonce may be wrong: re-read it from the chain.
_NONCE_SUSPECT = frozenset(
    {
        SendErrorKind.NONCE_TOO_LOW,
        SendErrorKind.NONCE_TOO_HIGH,
        SendErrorKind.REPLACEMENT_UNDERPRICED,
        SendErrorKind.UNKNOWN,
    }
)
# Errors a fresh nonce or base fee can cure; the others (funds, revert, gas limit) cannot.
_RETRYABLE = _NONCE_SUSPECT | {SendErrorKind.FEE_TOO_LOW}
_CHECK_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A transaction to send; `key` names what it is for, and no two with one key are in flight."""

    key: str
    to: str
    data: str
    gas_limit: int


class TxOutcome(enum.Enum):
    INCLUDED = "included"
    REVERTED = "reverted"  # mined with status 0: gas spent
    CANCELLED = "cancelled"  # no longer wanted; the nonce went to a self-transfer
    NOT_SENT = "not_sent"  # the node refused it; no gas spent
    NONCE_TAKEN = "nonce_taken"  # another sender used the signer's nonce first


@dataclass(frozen=True, slots=True)
class TxResult:
    request: TxRequest
    outcome: TxOutcome
    tx_hash: str | None = None
    receipt: dict[str, Any] | None = None
    error: SendErrorKind | None = None
    detail: str = ""
    replacements: int = 0
    sent_at: float | None = None  # clock reading when the node first accepted it
    finished_at: float = 0.0


@dataclass(slots=True)
class _Pending:
    request: TxRequest
    nonce: int
    fees: Eip1559Fees
    hashes: list[str]
    first_sent_at: float
    sent_at: float  # of the latest hash: the inclusion timeout counts from here
    future: asyncio.Future[TxResult]
    cancelling: bool = False
    cancel_hashes: set[str] = field(default_factory=set)
    replacements: int = 0
    at_cap: bool = False  # its fees reached the cap: it is offered again, never bumped


@dataclass(slots=True)
class _Queued:
    request: TxRequest
    future: asyncio.Future[TxResult]
    left_queue: asyncio.Future[None]  # broadcast, or given up on
    retries: int = 0


StillWanted = Callable[[TxRequest], Awaitable[bool]]


class Dispatcher:
    def __init__(
        self,
        rpc: RpcClient,
        signer: Signer,
        chain_id: int,
        *,
        priority_fee_wei: int,
        max_fee_wei: int,
        inclusion_timeout_s: float,
        journal: TxJournal,
        min_bump_bps: int = DEFAULT_MIN_BUMP_BPS,
        still_wanted: StillWanted | None = None,
        observer: ExecutionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self._signer = signer
        self._chain_id = chain_id
        self._priority_fee_wei = priority_fee_wei
        self._max_fee_wei = max_fee_wei
        self._inclusion_timeout_s = inclusion_timeout_s
        self._journal = journal
        self._min_bump_bps = min_bump_bps
        self._still_wanted = still_wanted
        self._observer = observer or NullExecutionObserver()
        self._clock = clock
        self._queue: list[_Queued] = []
        self._pending: dict[int, _Pending] = {}
        self._keys: set[str] = set()
        self._wake = asyncio.Event()
        self._next_nonce: int | None = None
        # Held for each step of `run` and by `reconcile`, which the head loop calls while `run`
        # goes on: the two never change the nonce and the pending set at once.
        self._lock = asyncio.Lock()
        self._base_fee_wei = 0

    # ------------------------------------------------------------------ interface

    def in_flight(self, key: str) -> bool:
        return key in self._keys

    def in_flight_count(self) -> int:
        return len(self._keys)

    def pending_nonces(self) -> dict[int, list[str]]:
        """Nonce -> hashes sent for it, of every transaction not yet mined."""
        return {nonce: list(pending.hashes) for nonce, pending in self._pending.items()}

    def submit(self, request: TxRequest) -> asyncio.Future[TxResult]:
        """Queues `request`; the future resolves when it is mined, refused or cancelled."""
        if request.key in self._keys:
            raise ValueError(f"{request.key} is already in flight")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TxResult] = loop.create_future()
        self._keys.add(request.key)
        self._queue.append(_Queued(request, future, loop.create_future()))
        self._wake.set()
        return future

    async def wait_sent(self, key: str) -> None:
        """Returns once the transaction queued under `key` has left the queue: accepted by the
        node, or given up on (at once when it is not queued)."""
        for queued in self._queue:
            if queued.request.key == key:
                await asyncio.shield(queued.left_queue)
                return

    def observe_base_fee(self, base_fee_wei: int) -> None:
        """The latest block's base fee: the floor of every fee the dispatcher offers."""
        self._base_fee_wei = base_fee_wei
        self._wake.set()

    async def run(self) -> None:
        """Sends and follows transactions until cancelled."""
        async with self._lock:
            await self._sync_nonce("start")
        while True:
            try:
                async with self._lock:
                    while self._queue:
                        await self._send_new(self._queue[0])
                    if self._pending:
                        await self._follow_pending()
            except ChainMismatchError:
                raise
            except (RpcTransportError, RpcError) as error:
                # No node answered, or one answered an error to a read: queued and pending work
                # stays and is retried.
                log.warning("dispatcher.node_unreachable", error=str(error))
                await asyncio.sleep(1.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _CHECK_INTERVAL_S)

    async def drain(self, timeout_s: float) -> None:
        """Ends the queue unsent and follows what is pending for up to `timeout_s`, for a clean
        stop; call it once `run` is cancelled. Whatever is still pending then is logged: it may
        still be mined, and the next start reads the chain's nonce after it."""
        while self._queue:
            queued = self._dequeue()
            self._finish(
                queued.future,
                TxResult(queued.request, TxOutcome.NOT_SENT, detail="keeper stopping"),
            )
        deadline = self._clock() + timeout_s
        while self._pending and self._clock() < deadline:
            try:
                await self._follow_pending()
            except RpcTransportError as error:
                log.warning("dispatcher.node_unreachable", error=str(error))
            if self._pending:
                await asyncio.sleep(_CHECK_INTERVAL_S)
        for nonce, pending in sorted(self._pending.items()):
            log.warning(
                "dispatcher.left_pending",
                key=pending.request.key,
                nonce=nonce,
                tx_hashes=pending.hashes,
                detail="not mined before the stop: it may still be, and a restart resumes after it",
            )

    async def reconcile(
        self, *, mined_after: int
    ) -> list[tuple[TxRequest, asyncio.Future[TxResult]]]:
        """Settles the journal against the chain before anything new is sent: every nonce a
        previous run may have left on the network, and every nonce recorded as mined above
        block `mined_after` (a reorg may have undone it).

        A hash found mined is recorded so; a nonce whose hashes a node still holds is followed
        again, as if this run had sent it, and returned so its sender can wait on it; a nonce
        no node knows is recorded dropped (or taken, when something else used it), and the
        next send re-reads the chain's nonce, so a dropped one is used again."""
        async with self._lock:
            return await self._reconcile(mined_after)

    async def _reconcile(
        self, mined_after: int
    ) -> list[tuple[TxRequest, asyncio.Future[TxResult]]]:
        groups = self._journal.unsettled() | self._journal.mined_after(mined_after)
        adopted: list[tuple[TxRequest, asyncio.Future[TxResult]]] = []
        mined_nonce: int | None = None
        for nonce, entries in groups.items():
            if nonce in self._pending:
                continue
            sent = [entry for entry in entries if entry.status is not TxStatus.REFUSED]
            if await self._record_if_mined(nonce, sent):
                continue
            known = [entry for entry in sent if await self._node_has(entry.tx_hash)]
            if known:
                adopted.append(self._adopt(nonce, known))
                continue
            if mined_nonce is None:
                mined_nonce = await self._chain_nonce("latest")
            status = TxStatus.NONCE_TAKEN if nonce < mined_nonce else TxStatus.DROPPED
            self._journal.close_nonce((entry.tx_hash for entry in sent), status)
            self._next_nonce = None
            log.warning(
                f"journal.{status.value}",
                key=sent[-1].key if sent else entries[-1].key,
                nonce=nonce,
                tx_hashes=[entry.tx_hash for entry in sent],
                detail="no node knows it: it was never sent or a reorg dropped it; "
                "its account is judged afresh",
            )
        return adopted

    async def _record_if_mined(self, nonce: int, entries: list[JournalEntry]) -> bool:
        for entry in entries:
            receipt = await self._rpc.request("eth_getTransactionReceipt", [entry.tx_hash])
            if receipt is None:
                continue
            block = int(receipt["blockNumber"], 16)
            if entry.cancel:
                status = TxStatus.CANCELLED
            else:
                status = TxStatus.INCLUDED if int(receipt["status"], 16) == 1 else TxStatus.REVERTED
            if entry.status is not status or entry.block_number != block:
                self._journal.settle(nonce, entry.tx_hash, status, block)
                log.info(
                    "journal.found_mined",
                    key=entry.key,
                    nonce=nonce,
                    tx_hash=entry.tx_hash,
                    status=status.value,
                    block=block,
                )
            return True
        return False

    def _adopt(
        self, nonce: int, known: list[JournalEntry]
    ) -> tuple[TxRequest, asyncio.Future[TxResult]]:
        """Follows a journaled nonce still waiting in a node's pool, so it is replaced when
        stuck and never sent a second time."""
        original = next((entry for entry in known if not entry.cancel), known[0])
        latest = known[-1]
        request = TxRequest(original.key, original.to, original.data, original.gas_limit)
        future: asyncio.Future[TxResult] = asyncio.get_running_loop().create_future()
        now = self._clock()
        self._keys.add(request.key)
        self._pending[nonce] = _Pending(
            request,
            nonce,
            max((entry.fees for entry in known), key=lambda fees: fees.max_fee_per_gas),
            [entry.tx_hash for entry in known],
            now,
            now,
            future,
            cancelling=latest.cancel,
            cancel_hashes={entry.tx_hash for entry in known if entry.cancel},
        )
        self._journal.reopen(entry.tx_hash for entry in known)
        log.warning(
            "journal.adopted",
            key=request.key,
            nonce=nonce,
            tx_hashes=[entry.tx_hash for entry in known],
            detail="sent earlier and still waiting in the pool: followed, not sent again",
        )
        return request, future

    async def _chain_nonce(self, block: str) -> int:
        count = await self._rpc.request("eth_getTransactionCount", [self._signer.address, block])
        return int(count, 16)

    # ------------------------------------------------------------------ sending

    async def _sync_nonce(self, reason: str) -> None:
        """The node's next nonce, past those this dispatcher follows. A nonce lower than one in
        flight (dropped by a node or a reorg) is used again: skipping it would strand every
        later transaction behind the gap."""
        nonce = self._free_from(await self._chain_nonce("pending"))
        log.info("dispatcher.nonce_synced", nonce=nonce, reason=reason, was=self._next_nonce)
        self._next_nonce = nonce

    def _transaction(self, nonce: int, to: str, data: str, gas: int, fees: Eip1559Fees) -> Any:
        return {
            "type": 2,
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": to,
            "data": data,
            "value": 0,
            "gas": gas,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }

    async def _broadcast(
        self, tx: Any, key: str, *, cancel: bool
    ) -> tuple[str, SendErrorKind | None, str]:
        """Signs, journals, sends; returns (hash, error kind or None, node's message). The
        journal has the hash before the node does, so a crash at any point leaves a record."""
        signed = self._signer.sign_transaction(tx)
        self._journal.record_pending(
            signed.hash,
            key=key,
            nonce=tx["nonce"],
            to=tx["to"],
            data=tx["data"],
            gas_limit=tx["gas"],
            fees=Eip1559Fees(tx["maxFeePerGas"], tx["maxPriorityFeePerGas"]),
            cancel=cancel,
        )
        try:
            await self._rpc.request("eth_sendRawTransaction", [signed.raw_transaction])
        except RpcError as error:
            kind = classify_send_error(error.message, error.code)
            if kind is SendErrorKind.ALREADY_KNOWN:
                return signed.hash, None, ""
            return signed.hash, kind, error.message
        except RpcTransportError as error:
            # The node may or may not have it; the hash is known, so following it settles it.
            log.warning("dispatcher.send_unconfirmed", tx_hash=signed.hash, error=str(error))
        return signed.hash, None, ""

    async def _send_new(self, queued: _Queued) -> None:
        if self._next_nonce is None:
            await self._sync_nonce("unknown")
        assert self._next_nonce is not None
        request = queued.request
        nonce = self._free_from(self._next_nonce)
        fees = initial_fees(
            self._base_fee_wei, self._priority_fee_wei, max_fee_cap=self._max_fee_wei
        )
        tx = self._transaction(nonce, request.to, request.data, request.gas_limit, fees)
        tx_hash, kind, message = await self._broadcast(tx, request.key, cancel=False)
        if kind in _NONCE_SUSPECT and await self._node_has(tx_hash):
            # A send retried after a timeout: the first attempt got through.
            kind = None
        if kind is not None:
            self._journal.mark(tx_hash, TxStatus.REFUSED)
        if kind is None:
            self._dequeue()
            self._next_nonce = nonce + 1
            self._pending[nonce] = _Pending(
                request, nonce, fees, [tx_hash], self._clock(), self._clock(), queued.future
            )
            log.info(
                "dispatcher.sent",
                key=request.key,
                nonce=nonce,
                tx_hash=tx_hash,
                max_fee_per_gas=fees.max_fee_per_gas,
                max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            )
            return
        if kind is SendErrorKind.FEE_TOO_LOW:
            await self._refresh_base_fee()
        elif kind in _NONCE_SUSPECT:
            await self._sync_nonce(kind.value)
        if kind in _RETRYABLE and queued.retries < _MAX_RETRIES:
            queued.retries += 1
            log.info("dispatcher.retry", key=request.key, error=kind.value, detail=message)
            return
        self._dequeue()
        log.warning("dispatcher.not_sent", key=request.key, error=kind.value, detail=message)
        self._finish(
            queued.future,
            TxResult(request, TxOutcome.NOT_SENT, error=kind, detail=message),
        )

    def _dequeue(self) -> _Queued:
        queued = self._queue.pop(0)
        if not queued.left_queue.done():
            queued.left_queue.set_result(None)
        return queued

    def _free_from(self, nonce: int) -> int:
        """The first nonce from `nonce` on that no followed transaction holds."""
        while nonce in self._pending:
            nonce += 1
        return nonce

    async def _node_has(self, tx_hash: str) -> bool:
        return await self._rpc.request("eth_getTransactionByHash", [tx_hash]) is not None

    async def _refresh_base_fee(self) -> None:
        self._base_fee_wei = (await latest_head(self._rpc)).base_fee_per_gas

    def _finish(self, future: asyncio.Future[TxResult], result: TxResult) -> None:
        self._keys.discard(result.request.key)
        result = dataclasses.replace(result, finished_at=self._clock())
        self._observer.transaction_finished(result)
        if not future.done():
            future.set_result(result)

    # ------------------------------------------------------------------ following

    async def _follow_pending(self) -> None:
        mined_nonce: int | None = None
        for nonce in sorted(self._pending):
            pending = self._pending[nonce]
            receipt, tx_hash = await self._receipt(pending)
            if receipt is not None:
                self._settle(pending, receipt, tx_hash)
                continue
            if self._clock() - pending.sent_at < self._inclusion_timeout_s:
                continue
            if mined_nonce is None:
                mined_nonce = await self._chain_nonce("latest")
            if nonce < mined_nonce:
                # The nonce is spent. One of our hashes may have been mined after the receipt
                # check above (the count is read later): only if none was did someone else use
                # the key.
                receipt, tx_hash = await self._receipt(pending)
                if receipt is not None:
                    self._settle(pending, receipt, tx_hash)
                    continue
                del self._pending[nonce]
                self._journal.close_nonce(pending.hashes, TxStatus.NONCE_TAKEN)
                log.error("dispatcher.nonce_taken", key=pending.request.key, nonce=nonce)
                self._finish(
                    pending.future,
                    TxResult(
                        pending.request,
                        TxOutcome.NONCE_TAKEN,
                        detail="nonce used elsewhere",
                        sent_at=pending.first_sent_at,
                    ),
                )
                continue
            await self._replace(pending)

    async def _receipt(self, pending: _Pending) -> tuple[dict[str, Any] | None, str | None]:
        for tx_hash in reversed(pending.hashes):
            receipt = await self._rpc.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt, tx_hash
        return None, None

    def _settle(self, pending: _Pending, receipt: dict[str, Any], tx_hash: str | None) -> None:
        del self._pending[pending.nonce]
        if tx_hash in pending.cancel_hashes:
            outcome = TxOutcome.CANCELLED
        elif int(receipt["status"], 16) == 1:
            outcome = TxOutcome.INCLUDED
        else:
            outcome = TxOutcome.REVERTED
        if tx_hash is not None:
            self._journal.settle(
                pending.nonce, tx_hash, TxStatus(outcome.value), int(receipt["blockNumber"], 16)
            )
        self._finish(
            pending.future,
            TxResult(
                pending.request,
                outcome,
                tx_hash=tx_hash,
                receipt=receipt,
                replacements=pending.replacements,
                sent_at=pending.first_sent_at,
            ),
        )

    async def _replace(self, pending: _Pending) -> None:
        """Bumps the fees of a transaction not included in time. At the cap the same
        transaction is offered again at the cap: a node may have dropped it while the base fee
        was above its max fee, and it is the most the operator allows to pay."""
        fees = bumped_fees(
            pending.fees,
            self._base_fee_wei,
            min_bump_bps=self._min_bump_bps,
            max_fee_cap=self._max_fee_wei,
        )
        at_cap = fees is None
        if fees is None:
            if not pending.at_cap:
                log.warning(
                    "dispatcher.fee_cap_reached",
                    key=pending.request.key,
                    nonce=pending.nonce,
                    max_fee_per_gas=pending.fees.max_fee_per_gas,
                    cap=self._max_fee_wei,
                    detail="offered again at the cap every inclusion timeout until mined",
                )
            pending.at_cap = True
            fees = pending.fees
        if not pending.cancelling and self._still_wanted is not None:
            pending.cancelling = not await self._still_wanted(pending.request)
        if pending.cancelling:
            tx = self._transaction(pending.nonce, self._signer.address, "0x", _TRANSFER_GAS, fees)
        else:
            request = pending.request
            tx = self._transaction(pending.nonce, request.to, request.data, request.gas_limit, fees)
        tx_hash, kind, message = await self._broadcast(
            tx, pending.request.key, cancel=pending.cancelling
        )
        if kind is not None and tx_hash not in pending.hashes:
            # (A hash offered again at the cap and refused is still the one followed.)
            self._journal.mark(tx_hash, TxStatus.REFUSED)
        pending.sent_at = self._clock()
        # Even a refused replacement raises the floor of the next one.
        pending.fees = fees
        if kind is None and tx_hash not in pending.hashes:
            pending.hashes.append(tx_hash)
            if pending.cancelling:
                pending.cancel_hashes.add(tx_hash)
            pending.replacements += 1
            self._observer.transaction_replaced(pending.request, cancel=pending.cancelling)
        if kind is None:
            event = "dispatcher.resent_at_cap" if at_cap else "dispatcher.replaced"
        else:
            event = "dispatcher.replacement_refused"
        log.info(
            event,
            key=pending.request.key,
            nonce=pending.nonce,
            tx_hash=tx_hash,
            cancel=pending.cancelling,
            max_fee_per_gas=fees.max_fee_per_gas,
            error=None if kind is None else kind.value,
            detail=message or None,
        )
