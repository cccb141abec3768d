"""From "these accounts are below 1" to liquidations handed to the dispatcher.

For each candidate: may this signer liquidate it now (pause, emergency role)? Does the liquidation
still succeed (`eth_call`)? Is it worth its share of the gas, or is the keeper in emergency mode?
Can the signer pay the debt and the gas? Only then is it queued, and never while a transaction
for it is in flight. Every decision not to liquidate is logged once per account and reason, so an
operator sees why an account below 1 is left alone.

With a BatchLiquidator configured, one market's accounts go in batches of up to `batch_size` per
transaction. Each batch is simulated with one `eth_call` (which says which of its accounts would
be liquidated, and why not the others) and one gas estimate, and handed to the dispatcher as
soon as its own simulation returns: the first transaction leaves while later batches are still
simulated. Without one, each account is its own transaction, as it also is in a paused market
where the signer, but not the BatchLiquidator, is an emergency liquidator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import structlog

from keeper.chain.heads import Head
from keeper.chain.rpc import RpcClient, RpcError
from keeper.display import format_health_factor
from keeper.execution.batch import (
    batch_gas_limit,
    chunked,
    is_liquidation_key,
    key_accounts,
    liquidation_key,
    liquidation_outcome,
)
from keeper.execution.decide import decide_liquidation, gas_cost_in_underlying
from keeper.execution.dispatcher import Dispatcher, TxOutcome, TxRequest, TxResult
from keeper.execution.fees import Eip1559Fees, initial_fees
from keeper.execution.observer import (
    ExecutionObserver,
    LiquidationReport,
    NullExecutionObserver,
)
from keeper.protocol.calls import (
    Call,
    CallRevertedError,
    batch_liquidator_call,
    eth_call,
    eth_call_data,
    function_abi,
    manager_call,
    multicall,
    multicall_call,
    token_call,
)
from keeper.protocol.errors import RevertReason, decode_revert
from keeper.risk.health import PriceUnavailableError, checked_price
from keeper.risk.liquidation import liquidation_payout
from keeper.risk.monitor import Candidate
from keeper.state.store import ProtocolState

log = structlog.get_logger(__name__)

MAX_UINT256 = 2**256 - 1
_APPROVAL_FLOOR = 2**255
# "Low gas" means: fewer than this many liquidations of typical gas left at the current max fee.
_LOW_GAS_LIQUIDATIONS = 10
_TYPICAL_LIQUIDATION_GAS = 300_000
# Chunk simulations in flight at once: enough to keep a node's cores busy, few enough that the
# first chunks' answers are not held up by the last ones'.
_SIMULATIONS_AT_ONCE = 2
# How long the other chunks' simulations wait for the first chunk's transaction to be sent.
_FIRST_SEND_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class LiquidationPolicy:
    """What the operator decided about liquidating: worth, fees, patience and batching."""

    native_token: str  # a token whose oracle price is the native coin's: gas is valued with it
    min_profit_usd: Decimal
    emergency: bool  # liquidate regardless of profit
    priority_fee_wei: int
    max_fee_wei: int
    gas_limit_margin_bps: int
    max_failures: int
    failure_cooldown_s: float
    batch_liquidator: str | None  # the signer's BatchLiquidator; None: a transaction per account
    batch_size: int  # accounts per batch transaction at most


@dataclass(frozen=True, slots=True)
class Permission:
    """Whether the keeper may liquidate in a market now, why, and whether through its
    BatchLiquidator (else one transaction per account from the signer)."""

    can_liquidate: bool
    why: str
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Simulation:
    """A liquidation tried against the node: its gas estimate, or why it would revert."""

    gas_estimate: int | None
    revert: RevertReason | None


@dataclass(frozen=True, slots=True)
class GasPlan:
    """What sending a liquidation commits to in gas, in wei per gas and wei."""

    gas_limit: int
    fees: Eip1559Fees
    expected_wei: int
    max_wei: int


@dataclass(frozen=True, slots=True)
class Funding:
    """The signer's balances at the last funding check, in smallest units."""

    native_wei: int
    underlying: dict[str, int]


@dataclass(slots=True)
class _Funds:
    """What one `handle` may still commit: balances less what is in flight and already queued."""

    native_wei: int
    underlying: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Accounts of one market for one transaction: a batch through the BatchLiquidator, or one
    account straight through its CreditManager."""

    manager: str
    batch: bool
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class _ChunkSimulation:
    """Which of a chunk's accounts would be liquidated, the gas estimate of the transaction
    liquidating just them, and why the others would not be."""

    succeeding: tuple[Candidate, ...]
    gas_estimate: int | None
    reverts: dict[str, RevertReason | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Decided:
    """One account worth liquidating: what it pays and earns, in the underlying's units."""

    amount_paid: int
    premium: int


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A liquidation transaction in flight: the funds it holds back from the next decisions, and
    what it was decided on, for its report when it ends."""

    manager: str
    underlying: str
    amount_paid: int  # all its accounts together
    max_gas_wei: int
    trigger_block: int
    head_received_at: float
    premiums: dict[str, Decimal]  # per account, whole underlying tokens


class Liquidator:
    def __init__(
        self,
        rpc: RpcClient,
        state: ProtocolState,
        dispatcher: Dispatcher,
        signer_address: str,
        policy: LiquidationPolicy,
        *,
        observer: ExecutionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self._state = state
        self._dispatcher = dispatcher
        self._signer = signer_address
        self._policy = policy
        self._batch = policy.batch_liquidator
        self._observer = observer or NullExecutionObserver()
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._skip_until: dict[str, float] = {}
        self._last_refusal: dict[str, str] = {}
        self._announced: dict[str, Permission] = {}
        self._in_flight: dict[str, _Attempt] = {}  # by transaction key
        self._busy: set[str] = set()  # every account a transaction in flight covers
        self._adopted_approvals: dict[str, asyncio.Future[TxResult]] = {}
        self.funding: Funding | None = None

    @property
    def liquidating_addresses(self) -> frozenset[str]:
        """Whom a `CreditAccountLiquidated` names as liquidator when this keeper liquidated."""
        return frozenset({self._signer} | ({self._batch} if self._batch else set()))

    def skip_listed(self) -> int:
        """Accounts on the failure cooldown now."""
        now = self._clock()
        return sum(1 for until in self._skip_until.values() if until > now)

    # ------------------------------------------------------------------ permissions

    def permission(self, manager: str, *, through_batch: bool = True) -> Permission:
        """What the keeper may do in `manager`'s market now; `through_batch=False` asks about
        the signer's own transactions alone (`keeper liquidate` sends one)."""
        market = self._state.markets[manager]
        batch = through_batch and self._batch is not None
        if not market.paused:
            return Permission(True, "protocol active: anyone may liquidate", batch)
        if batch and self._batch in market.emergency_liquidators:
            return Permission(
                True,
                "protocol paused: liquidating through the BatchLiquidator, an emergency liquidator",
                True,
            )
        if self._signer in market.emergency_liquidators:
            return Permission(True, "protocol paused: liquidating as an emergency liquidator")
        who = "neither the signer nor the BatchLiquidator is" if batch else "the signer is not"
        return Permission(
            False,
            f"protocol paused and {who} an emergency liquidator: "
            "no liquidation is possible until the protocol is unpaused",
        )

    def announce_permissions(self) -> None:
        """Logs, per market, what the signer can do, whenever that changes."""
        for manager, market in self._state.markets.items():
            permission = self.permission(manager)
            if self._announced.get(manager) == permission:
                continue
            self._announced[manager] = permission
            log.log(
                20 if permission.can_liquidate else 30,
                "keeper.permissions",
                manager=manager,
                paused=market.paused,
                emergency_liquidator=self._signer in market.emergency_liquidators,
                can_liquidate=permission.can_liquidate,
                batch=permission.batch,
                detail=permission.why,
            )

    def follow(self, adopted: Sequence[tuple[TxRequest, asyncio.Future[TxResult]]]) -> None:
        """Transactions sent before a restart (or un-mined by a reorg) and still pending: a
        liquidation's accounts are in flight and its outcome is handled like one sent now; an
        approval is waited on by `ensure_approvals` instead of being sent again."""
        for request, future in adopted:
            if is_liquidation_key(request.key):
                self._busy.update(key_accounts(request.key))
                future.add_done_callback(self._on_result)
            else:
                self._adopted_approvals[request.key] = future

    # ------------------------------------------------------------------ funding

    async def ensure_approvals(self) -> None:
        """Lets each CreditManager, and the BatchLiquidator, pull the underlying from the signer
        (once, for good)."""
        markets = list(self._state.markets.values())
        wanted = [(f"approve:{m.manager}", m.underlying, m.manager) for m in markets]
        if self._batch is not None:
            for token in sorted({m.underlying for m in markets}):
                wanted.append((f"approve:{self._batch}:{token}", token, self._batch))
        allowances = await multicall(
            self._rpc,
            [token_call(token, "allowance", self._signer, spender) for _, token, spender in wanted],
        )
        missing = [
            (key, token, spender)
            for (key, token, spender), allowance in zip(wanted, allowances, strict=True)
            if allowance.outputs is None or allowance.outputs[0] < _APPROVAL_FLOOR
        ]
        to_send = [
            (key, token_call(token, "approve", spender, MAX_UINT256))
            for key, token, spender in missing
            if key not in self._adopted_approvals
        ]
        estimates = await asyncio.gather(*(self._estimate_gas(call) for _, call in to_send))
        # Queued together, consecutive nonces: one block for all of them, not one each.
        sent = {
            key: self._dispatcher.submit(TxRequest(key, call.target, call.data, gas))
            for (key, call), gas in zip(to_send, estimates, strict=True)
        }
        # Sent before a restart and still pending: waited on, not sent again.
        approvals = [
            (token, spender, sent[key] if key in sent else self._adopted_approvals[key])
            for key, token, spender in missing
        ]
        self._adopted_approvals.clear()
        for token, spender, in_flight in approvals:
            result = await in_flight
            if result.outcome is not TxOutcome.INCLUDED:
                raise RuntimeError(
                    f"approving {spender} to pull {token} failed: "
                    f"{result.outcome.value} {result.detail}"
                )
            log.info("keeper.approved", spender=spender, token=token)

    async def report_funding(self, base_fee_wei: int) -> None:
        """Logs the signer's gas and underlying balances; warns when gas would not cover a few
        liquidations at today's fees, before a liquidation has to be refused for it."""
        underlyings = sorted({m.underlying for m in self._state.markets.values()})
        gas_balance, token_balances = await self.balances(underlyings)
        self.funding = Funding(gas_balance, dict(token_balances))
        fees = initial_fees(
            base_fee_wei, self._policy.priority_fee_wei, max_fee_cap=self._policy.max_fee_wei
        )
        reserve_wei = _LOW_GAS_LIQUIDATIONS * _TYPICAL_LIQUIDATION_GAS * fees.max_fee_per_gas
        log.log(
            30 if gas_balance < reserve_wei else 20,
            "keeper.funding",
            signer=self._signer,
            gas_balance_wei=gas_balance,
            low_gas=gas_balance < reserve_wei,
            underlying_balances=token_balances,
        )

    async def balances(self, tokens: Sequence[str]) -> tuple[int, dict[str, int]]:
        """The signer's native (gas) balance in wei and its balance of each of `tokens`."""
        calls = [multicall_call("getEthBalance", self._signer)]
        calls += [token_call(token, "balanceOf", self._signer) for token in tokens]
        results = await multicall(self._rpc, calls)
        values = [r.outputs[0] if r.outputs is not None else 0 for r in results]
        return values[0], dict(zip(tokens, values[1:], strict=True))

    # ------------------------------------------------------------------ liquidating

    async def handle(
        self, candidates: Sequence[Candidate], head: Head, head_received_at: float
    ) -> None:
        """Queues a liquidation for every candidate that passes every check; `head_received_at`
        (a `time.monotonic()` reading) is when `head` arrived, the start of its latency."""
        now = self._clock()
        eligible: list[tuple[Candidate, bool]] = []
        for candidate in sorted(candidates, key=lambda c: c.health.health_factor_wad):
            if candidate.account in self._busy:
                continue
            if self._skip_until.get(candidate.account, 0) > now:
                continue
            permission = self.permission(candidate.manager)
            if not permission.can_liquidate:
                self._refuse(candidate, "paused_not_emergency_liquidator")
                continue
            eligible.append((candidate, permission.batch))
        if not eligible:
            return
        # The chunks come lowest health factor first. The first is simulated and sent alone: the
        # node answers its `eth_call` and accepts its transaction without serving the other
        # chunks' simulations at the same time. Then a few at a time keep the node on the next
        # ones instead of sharing it among all of a large crash's chunks.
        concurrency = asyncio.Semaphore(_SIMULATIONS_AT_ONCE)
        first_sent = asyncio.Event()
        simulations = [
            asyncio.ensure_future(
                self._simulate(chunk, concurrency, after=None if index == 0 else first_sent)
            )
            for index, chunk in enumerate(self._chunks(eligible))
        ]
        try:
            underlyings = sorted({self._state.markets[c.manager].underlying for c, _ in eligible})
            funds = await self._funds(underlyings)
            for simulated in asyncio.as_completed(simulations):
                chunk, simulation = await simulated
                key = self._send(chunk, simulation, funds, head, head_received_at)
                if not first_sent.is_set():
                    if key is not None:
                        # Bounded: a dispatcher held up (a node down) must not hold the block.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                self._dispatcher.wait_sent(key), _FIRST_SEND_WAIT_S
                            )
                    first_sent.set()
        finally:
            for simulation_task in simulations:
                simulation_task.cancel()
            await asyncio.gather(*simulations, return_exceptions=True)

    async def _funds(self, underlyings: Sequence[str]) -> _Funds:
        """The signer's balances less what the transactions in flight may still take."""
        gas_balance, token_balances = await self.balances(underlyings)
        for attempt in self._in_flight.values():
            token = attempt.underlying
            token_balances[token] = token_balances.get(token, 0) - attempt.amount_paid
            gas_balance -= attempt.max_gas_wei
        return _Funds(gas_balance, token_balances)

    def _chunks(self, eligible: Sequence[tuple[Candidate, bool]]) -> list[_Chunk]:
        """Batches of up to `batch_size` per market, and one chunk per account liquidated alone."""
        batched = [candidate for candidate, batch in eligible if batch]
        chunks = [
            _Chunk(group[0].manager, True, tuple(group))
            for group in chunked(batched, self._policy.batch_size, lambda c: c.manager)
        ]
        chunks += [_Chunk(c.manager, False, (c,)) for c, batch in eligible if not batch]
        return chunks

    async def _simulate(
        self, chunk: _Chunk, concurrency: asyncio.Semaphore, *, after: asyncio.Event | None
    ) -> tuple[_Chunk, _ChunkSimulation]:
        if after is not None:
            await after.wait()
        async with concurrency:
            if chunk.batch:
                return chunk, await self._simulate_batch(chunk.manager, chunk.candidates)
            (candidate,) = chunk.candidates
            simulation = await self.simulate(chunk.manager, candidate.account)
        if simulation.revert is not None or simulation.gas_estimate is None:
            return chunk, _ChunkSimulation((), None, {candidate.account: simulation.revert})
        return chunk, _ChunkSimulation(chunk.candidates, simulation.gas_estimate)

    async def _simulate_batch(
        self, manager: str, candidates: Sequence[Candidate]
    ) -> _ChunkSimulation:
        """One `eth_call` of the batch against the pending state: a liquidation of one of its
        accounts already waiting in the pool makes that account fail there, so it is dropped
        instead of spending the batch's gas on a skip. The call returns what each attempt
        spent, which bounds the gas of the batch of those that succeed: no gas estimate (a
        dozen executions of the batch on the node) stands between the crash and the send."""
        call = self._batch_call(manager, [c.account for c in candidates])
        try:
            liquidated, reasons, gas_spent = await eth_call(
                self._rpc, call, sender=self._signer, block="pending"
            )
        except CallRevertedError as error:
            return _ChunkSimulation((), None, {c.account: error.reason for c in candidates})
        except RpcError as error:
            reason = decode_revert(error.data or "")
            return _ChunkSimulation((), None, {c.account: reason for c in candidates})
        outcomes = list(zip(candidates, liquidated, reasons, gas_spent, strict=True))
        succeeding = tuple(c for c, ok, _, _ in outcomes if ok)
        reverts: dict[str, RevertReason | None] = {
            c.account: decode_revert(reason) for c, ok, reason, _ in outcomes if not ok
        }
        if not succeeding:
            return _ChunkSimulation((), None, reverts)
        sent = self._batch_call(manager, [c.account for c in succeeding])
        gas = batch_gas_limit([spent for _, ok, _, spent in outcomes if ok], sent.data)
        return _ChunkSimulation(succeeding, gas, reverts)

    def _send(
        self,
        chunk: _Chunk,
        simulation: _ChunkSimulation,
        funds: _Funds,
        head: Head,
        head_received_at: float,
    ) -> str | None:
        """Decides each account of a simulated chunk on its share of the gas, funds what it
        can in order (the lowest health factor first) and hands the transaction to the
        dispatcher; returns its key, or None when nothing was worth sending."""
        for candidate in chunk.candidates:
            if candidate.account in simulation.reverts:
                revert = simulation.reverts[candidate.account]
                self._refuse(candidate, "simulation_reverted", revert=str(revert))
                self._record_failure(candidate.account)
        if simulation.gas_estimate is None or not simulation.succeeding:
            return None
        market = self._state.markets[chunk.manager]
        # Accounts dropped below only make the transaction cheaper: the estimate stays a bound.
        gas = self.gas_plan(simulation.gas_estimate, head.base_fee_per_gas)
        gas_share = -(-simulation.gas_estimate // len(simulation.succeeding))
        available = funds.underlying.get(market.underlying, 0)
        paid = 0
        chosen: list[tuple[Candidate, _Decided]] = []
        for candidate in simulation.succeeding:
            decided = self._decide(candidate, gas_share, head)
            if decided is None:
                continue
            if available - paid < decided.amount_paid:
                self._refuse(
                    candidate,
                    "insufficient_underlying",
                    needed=decided.amount_paid,
                    available=available - paid,
                )
                continue
            paid += decided.amount_paid
            chosen.append((candidate, decided))
        if not chosen:
            return None
        if funds.native_wei < gas.max_wei:
            for candidate, _ in chosen:
                self._refuse(
                    candidate, "insufficient_gas", needed=gas.max_wei, available=funds.native_wei
                )
            return None
        funds.underlying[market.underlying] = available - paid
        funds.native_wei -= gas.max_wei
        accounts = [candidate.account for candidate, _ in chosen]
        if chunk.batch:
            call = self._batch_call(chunk.manager, accounts)
            request = TxRequest(liquidation_key(accounts), call.target, call.data, gas.gas_limit)
        else:
            request = self.liquidation_request(chunk.manager, accounts[0], gas.gas_limit)
        decimals = self._state.prices[market.oracle][market.underlying].token_decimals
        self._in_flight[request.key] = _Attempt(
            chunk.manager,
            market.underlying,
            paid,
            gas.max_wei,
            head.number,
            head_received_at,
            {c.account: Decimal(d.premium).scaleb(-decimals) for c, d in chosen},
        )
        self._busy.update(accounts)
        future = self._dispatcher.submit(request)
        self._observer.liquidation_attempted(chunk.manager, len(accounts))
        future.add_done_callback(self._on_result)
        return request.key

    def _decide(self, candidate: Candidate, gas_estimate: int, head: Head) -> _Decided | None:
        """What liquidating `candidate` pays and earns, when it is worth its `gas_estimate` (its
        share of its transaction's); or None, logged."""
        market = self._state.markets[candidate.manager]
        prices = self._state.prices[market.oracle]
        health = candidate.health
        payout = liquidation_payout(health.value.total_value, health.debt, market.fees)
        premium = payout.premium(health.value.total_value)
        gas = self.gas_plan(gas_estimate, head.base_fee_per_gas)
        try:
            underlying_price = checked_price(
                market.underlying, prices.get(market.underlying), candidate.timestamp
            )
            native_price = checked_price(
                self._policy.native_token,
                prices.get(self._policy.native_token),
                candidate.timestamp,
            )
        except PriceUnavailableError as error:
            if not self._policy.emergency:
                self._refuse(candidate, "gas_unpriced", detail=str(error))
                return None
            gas_cost = min_profit = 0
        else:
            gas_cost = gas_cost_in_underlying(gas.expected_wei, native_price, underlying_price)
            min_profit = _usd_in_units(
                self._policy.min_profit_usd,
                underlying_price.answer,
                underlying_price.feed_decimals,
                underlying_price.token_decimals,
            )
        decision = decide_liquidation(
            premium=premium,
            gas_cost=gas_cost,
            min_profit=min_profit,
            emergency=self._policy.emergency,
        )
        if not decision.liquidate:
            self._refuse(
                candidate,
                decision.reason,
                premium=premium,
                gas_cost=gas_cost,
                min_profit=min_profit,
            )
            return None
        log.info(
            "liquidation.decided",
            manager=candidate.manager,
            account=candidate.account,
            health_factor=format_health_factor(health.health_factor_wad),
            total_value=health.value.total_value,
            amount_paid=payout.amount_paid,
            premium=premium,
            gas_cost=gas_cost,
            expected_profit=decision.expected_profit,
            reason=decision.reason,
            block=head.number,
        )
        self._last_refusal.pop(candidate.account, None)
        return _Decided(payout.amount_paid, premium)

    def gas_plan(self, gas_estimate: int, base_fee_wei: int) -> GasPlan:
        """The gas limit (estimate plus the policy's margin), the first fees offered at
        `base_fee_wei`, and what that costs: expected at base fee plus tip, at most the limit at
        the max fee."""
        gas_limit = gas_estimate * (10_000 + self._policy.gas_limit_margin_bps) // 10_000
        fees = initial_fees(
            base_fee_wei, self._policy.priority_fee_wei, max_fee_cap=self._policy.max_fee_wei
        )
        expected_wei = gas_estimate * min(
            fees.max_fee_per_gas, base_fee_wei + fees.max_priority_fee_per_gas
        )
        return GasPlan(gas_limit, fees, expected_wei, gas_limit * fees.max_fee_per_gas)

    def liquidation_request(self, manager: str, account: str, gas_limit: int) -> TxRequest:
        """The transaction liquidating `account` alone, to the signer, keyed so the dispatcher
        never has two in flight for one account."""
        liquidate = manager_call(manager, "liquidateCreditAccount", account, self._signer)
        return TxRequest(liquidation_key([account]), liquidate.target, liquidate.data, gas_limit)

    async def simulate(self, manager: str, account: str) -> Simulation:
        """`eth_call` of the single liquidation against the latest block, and its gas estimate.

        The estimate runs against the node's pending state on purpose: a liquidation of this
        account already waiting in the pool (sent by a competitor, or by this signer before a
        restart) makes it revert there, so the keeper does not send a duplicate."""
        call = manager_call(manager, "liquidateCreditAccount", account, self._signer)
        try:
            _, gas = await asyncio.gather(
                eth_call(self._rpc, call, sender=self._signer), self._estimate_gas(call)
            )
        except CallRevertedError as error:
            return Simulation(None, error.reason)
        except RpcError as error:
            return Simulation(None, decode_revert(error.data or ""))
        return Simulation(gas, None)

    async def still_wanted(self, request: TxRequest) -> bool:
        """Asked by the dispatcher before replacing a stuck transaction: does it still succeed?
        A batch does while one of its accounts would still be liquidated."""
        if not is_liquidation_key(request.key):
            return True
        try:
            if self._batch is not None and request.to == self._batch:
                data = await eth_call_data(self._rpc, request.to, request.data, sender=self._signer)
                liquidated, reasons, _ = function_abi("BatchLiquidator", "liquidateBatch").decode(
                    data
                )
                if any(liquidated):
                    return True
                revert = next((decode_revert(r) for r in reasons), None)
                log.info("liquidation.no_longer_needed", key=request.key, revert=str(revert))
                return False
            await eth_call_data(self._rpc, request.to, request.data, sender=self._signer)
        except CallRevertedError as error:
            log.info("liquidation.no_longer_needed", key=request.key, revert=str(error.reason))
            return False
        return True

    def _batch_call(self, manager: str, accounts: Sequence[str]) -> Call:
        assert self._batch is not None
        return batch_liquidator_call(self._batch, "liquidateBatch", manager, list(accounts))

    async def _estimate_gas(self, call: Call) -> int:
        estimate = await self._rpc.request(
            "eth_estimateGas",
            [{"from": self._signer, "to": call.target, "data": call.data}, "pending"],
        )
        return int(estimate, 16)

    # ------------------------------------------------------------------ outcomes

    def _on_result(self, future: asyncio.Future[TxResult]) -> None:
        """Attributes a liquidation transaction's end to each of its accounts: those its
        receipt shows liquidated, and (as failures) those a batch skipped or that it never
        reached."""
        result = future.result()
        accounts = key_accounts(result.request.key)
        attempt = self._in_flight.pop(result.request.key, None)
        self._busy.difference_update(accounts)
        receipt = result.receipt or {}
        block = int(receipt["blockNumber"], 16) if "blockNumber" in receipt else None
        fields: dict[str, object] = {
            "key": result.request.key,
            "accounts": len(accounts),
            "manager": None if attempt is None else attempt.manager,
            "outcome": result.outcome.value,
            "tx_hash": result.tx_hash,
            "replacements": result.replacements,
            "block": block,
            "gas_used": int(receipt["gasUsed"], 16) if "gasUsed" in receipt else None,
            "trigger_block": None if attempt is None else attempt.trigger_block,
            "sent_after_head_ms": _sent_after_head_ms(result, attempt),
        }
        liquidated: tuple[str, ...] = ()
        if result.outcome is TxOutcome.INCLUDED:
            outcome = liquidation_outcome(
                accounts, receipt.get("logs") or [], self.liquidating_addresses
            )
            liquidated = outcome.liquidated
            log.info(
                "liquidation.included",
                liquidated=list(outcome.liquidated),
                skipped=list(outcome.failed),
                **fields,
            )
            for account in outcome.liquidated:
                self._failures.pop(account, None)
            for account in outcome.failed:
                reason = outcome.skipped.get(account)
                log.warning(
                    "liquidation.skipped",
                    account=account,
                    tx_hash=result.tx_hash,
                    revert=None if reason is None else str(reason),
                )
                self._record_failure(account)
        elif result.outcome is TxOutcome.CANCELLED:
            log.info("liquidation.cancelled", **fields)
        else:
            error = None if result.error is None else result.error.value
            log.error("liquidation.failed", error=error, detail=result.detail, **fields)
            for account in accounts:
                self._record_failure(account)
        if attempt is not None:
            self._observer.liquidation_finished(
                LiquidationReport(
                    manager=attempt.manager,
                    underlying=attempt.underlying,
                    result=result,
                    trigger_block=attempt.trigger_block,
                    head_received_at=attempt.head_received_at,
                    inclusion_block=block,
                    accounts=len(accounts),
                    liquidated=len(liquidated),
                    premium=sum((attempt.premiums[a] for a in liquidated), Decimal(0)),
                )
            )

    def _record_failure(self, account: str) -> None:
        failures = self._failures.get(account, 0) + 1
        self._failures[account] = failures
        if failures >= self._policy.max_failures:
            self._failures.pop(account)
            self._skip_until[account] = self._clock() + self._policy.failure_cooldown_s
            log.warning(
                "liquidation.skip_listed",
                account=account,
                failures=failures,
                cooldown_s=self._policy.failure_cooldown_s,
            )

    def _refuse(self, candidate: Candidate, reason: str, **detail: object) -> None:
        """Logs a decision not to liquidate, once per account until the reason changes."""
        if self._last_refusal.get(candidate.account) == reason:
            return
        self._last_refusal[candidate.account] = reason
        self._observer.liquidation_dropped(candidate.manager, reason)
        log.warning(
            "liquidation.refused",
            manager=candidate.manager,
            account=candidate.account,
            health_factor=format_health_factor(candidate.health.health_factor_wad),
            reason=reason,
            **detail,
        )


def _sent_after_head_ms(result: TxResult, attempt: _Attempt | None) -> float | None:
    """Head received -> the node accepted the transaction, in milliseconds (both monotonic)."""
    if attempt is None or result.sent_at is None:
        return None
    return round((result.sent_at - attempt.head_received_at) * 1000, 3)


def _usd_in_units(usd: Decimal, answer: int, feed_decimals: int, token_decimals: int) -> int:
    """`usd` in a token's smallest units at its feed answer, rounded up."""
    numerator, denominator = usd.as_integer_ratio()
    scaled: int = numerator * 10 ** (token_decimals + feed_decimals)
    return -(-scaled // (denominator * answer))
