"""From "this account is below 1" to a liquidation handed to the dispatcher.

For each candidate: may this signer liquidate it now (pause, emergency role)? Does the liquidation
still succeed against the latest block (`eth_call`)? Is it worth its gas, or is the keeper in
emergency mode? Can the signer pay the debt and the gas? Only then is a transaction queued, and
never twice for one account while one is in flight. Every decision not to liquidate is logged
once per account and reason, so an operator sees why an account below 1 is left alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog

from keeper.chain.heads import Head
from keeper.chain.rpc import RpcClient, RpcError
from keeper.display import format_health_factor
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
    eth_call,
    eth_call_data,
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


@dataclass(frozen=True, slots=True)
class LiquidationPolicy:
    """What the operator decided about liquidating: worth, fees and patience."""

    native_token: str  # a token whose oracle price is the native coin's: gas is valued with it
    min_profit_usd: Decimal
    emergency: bool  # liquidate regardless of profit
    priority_fee_wei: int
    max_fee_wei: int
    gas_limit_margin_bps: int
    max_failures: int
    failure_cooldown_s: float


@dataclass(frozen=True, slots=True)
class Permission:
    can_liquidate: bool
    why: str


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


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A liquidation in flight: the funds it holds back from the next decisions, and what it
    was decided on, for its report when it ends."""

    manager: str
    underlying: str
    amount_paid: int
    max_gas_wei: int
    trigger_block: int
    head_received_at: float
    premium: Decimal  # whole underlying tokens


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
        self._observer = observer or NullExecutionObserver()
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._skip_until: dict[str, float] = {}
        self._last_refusal: dict[str, str] = {}
        self._announced: dict[str, Permission] = {}
        self._in_flight: dict[str, _Attempt] = {}
        self._adopted_approvals: dict[str, asyncio.Future[TxResult]] = {}
        self.funding: Funding | None = None

    def skip_listed(self) -> int:
        """Accounts on the failure cooldown now."""
        now = self._clock()
        return sum(1 for until in self._skip_until.values() if until > now)

    # ------------------------------------------------------------------ permissions

    def permission(self, manager: str) -> Permission:
        market = self._state.markets[manager]
        emergency = self._signer in market.emergency_liquidators
        if not market.paused:
            return Permission(True, "protocol active: anyone may liquidate")
        if emergency:
            return Permission(True, "protocol paused: liquidating as an emergency liquidator")
        return Permission(
            False,
            "protocol paused and the signer is not an emergency liquidator: "
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
                detail=permission.why,
            )

    def follow(self, adopted: Sequence[tuple[TxRequest, asyncio.Future[TxResult]]]) -> None:
        """Transactions sent before a restart (or un-mined by a reorg) and still pending: a
        liquidation's outcome is handled like one sent now, and an approval is waited on by
        `ensure_approvals` instead of being sent again."""
        for request, future in adopted:
            if request.key.startswith("liquidate:"):
                future.add_done_callback(self._on_result)
            else:
                self._adopted_approvals[request.key] = future

    # ------------------------------------------------------------------ funding

    async def ensure_approvals(self) -> None:
        """Lets each CreditManager pull the underlying from the signer (once, for good)."""
        markets = list(self._state.markets.values())
        allowances = await multicall(
            self._rpc,
            [token_call(m.underlying, "allowance", self._signer, m.manager) for m in markets],
        )
        for market, allowance in zip(markets, allowances, strict=True):
            key = f"approve:{market.manager}"
            in_flight = self._adopted_approvals.pop(key, None)
            if allowance.outputs is not None and allowance.outputs[0] >= _APPROVAL_FLOOR:
                continue
            if in_flight is None:
                approve = token_call(market.underlying, "approve", market.manager, MAX_UINT256)
                gas = await self._estimate_gas(approve)
                in_flight = self._dispatcher.submit(
                    TxRequest(key, approve.target, approve.data, gas)
                )
            result = await in_flight
            if result.outcome is not TxOutcome.INCLUDED:
                raise RuntimeError(
                    f"approving {market.manager} to pull {market.underlying} failed: "
                    f"{result.outcome.value} {result.detail}"
                )
            log.info("keeper.approved", manager=market.manager, token=market.underlying)

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
        eligible = []
        for candidate in sorted(candidates, key=lambda c: c.health.health_factor_wad):
            if self._dispatcher.in_flight(_key(candidate.account)):
                continue
            if self._skip_until.get(candidate.account, 0) > now:
                continue
            if not self.permission(candidate.manager).can_liquidate:
                self._refuse(candidate, "paused_not_emergency_liquidator")
                continue
            eligible.append(candidate)
        if not eligible:
            return
        underlyings = sorted({self._state.markets[c.manager].underlying for c in eligible})
        gas_balance, token_balances = await self.balances(underlyings)
        simulations = await asyncio.gather(*(self.simulate(c.manager, c.account) for c in eligible))
        for attempt in self._in_flight.values():
            token = attempt.underlying
            token_balances[token] = token_balances.get(token, 0) - attempt.amount_paid
            gas_balance -= attempt.max_gas_wei
        for candidate, simulation in zip(eligible, simulations, strict=True):
            if simulation.revert is not None or simulation.gas_estimate is None:
                self._refuse(candidate, "simulation_reverted", revert=str(simulation.revert))
                self._record_failure(candidate.account)
                continue
            planned = self._plan(candidate, simulation.gas_estimate, head)
            if planned is None:
                continue
            request, amount_paid, max_gas_wei, premium = planned
            underlying = self._state.markets[candidate.manager].underlying
            if token_balances[underlying] < amount_paid:
                self._refuse(
                    candidate,
                    "insufficient_underlying",
                    needed=amount_paid,
                    available=token_balances[underlying],
                )
                continue
            if gas_balance < max_gas_wei:
                self._refuse(
                    candidate, "insufficient_gas", needed=max_gas_wei, available=gas_balance
                )
                continue
            token_balances[underlying] -= amount_paid
            gas_balance -= max_gas_wei
            decimals = self._state.prices[self._state.markets[candidate.manager].oracle][
                underlying
            ].token_decimals
            self._in_flight[candidate.account] = _Attempt(
                candidate.manager,
                underlying,
                amount_paid,
                max_gas_wei,
                head.number,
                head_received_at,
                Decimal(premium).scaleb(-decimals),
            )
            future = self._dispatcher.submit(request)
            self._observer.liquidation_attempted(candidate.manager)
            future.add_done_callback(self._on_result)

    def _plan(
        self, candidate: Candidate, gas_estimate: int, head: Head
    ) -> tuple[TxRequest, int, int, int] | None:
        """The transaction, the underlying it pays, its maximum gas cost in wei and its premium;
        or None (logged) when it is not worth sending."""
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
        request = self.liquidation_request(candidate.manager, candidate.account, gas.gas_limit)
        return request, payout.amount_paid, gas.max_wei, premium

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
        """The transaction liquidating `account` to the signer, keyed so the dispatcher never
        has two in flight for one account."""
        liquidate = manager_call(manager, "liquidateCreditAccount", account, self._signer)
        return TxRequest(_key(account), liquidate.target, liquidate.data, gas_limit)

    async def simulate(self, manager: str, account: str) -> Simulation:
        """`eth_call` of the liquidation against the latest block, and its gas estimate.

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
        """Asked by the dispatcher before replacing a stuck transaction: does it still succeed?"""
        if not request.key.startswith("liquidate:"):
            return True
        try:
            await eth_call_data(self._rpc, request.to, request.data, sender=self._signer)
        except CallRevertedError as error:
            log.info("liquidation.no_longer_needed", key=request.key, revert=str(error.reason))
            return False
        return True

    async def _estimate_gas(self, call: Call) -> int:
        estimate = await self._rpc.request(
            "eth_estimateGas",
            [{"from": self._signer, "to": call.target, "data": call.data}, "pending"],
        )
        return int(estimate, 16)

    # ------------------------------------------------------------------ outcomes

    def _on_result(self, future: asyncio.Future[TxResult]) -> None:
        result = future.result()
        account = result.request.key.removeprefix("liquidate:")
        receipt = result.receipt or {}
        block = int(receipt["blockNumber"], 16) if "blockNumber" in receipt else None
        fields = {
            "account": account,
            "outcome": result.outcome.value,
            "tx_hash": result.tx_hash,
            "replacements": result.replacements,
            "block": block,
            "gas_used": int(receipt["gasUsed"], 16) if "gasUsed" in receipt else None,
        }
        if result.outcome is TxOutcome.INCLUDED:
            self._failures.pop(account, None)
            log.info("liquidation.included", **fields)
        elif result.outcome is TxOutcome.CANCELLED:
            log.info("liquidation.cancelled", **fields)
        else:
            error = None if result.error is None else result.error.value
            log.error("liquidation.failed", error=error, detail=result.detail, **fields)
            self._record_failure(account)
        attempt = self._in_flight.pop(account, None)
        if attempt is not None:
            self._observer.liquidation_finished(
                LiquidationReport(
                    manager=attempt.manager,
                    underlying=attempt.underlying,
                    result=result,
                    trigger_block=attempt.trigger_block,
                    head_received_at=attempt.head_received_at,
                    inclusion_block=block,
                    premium=attempt.premium,
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


def _key(account: str) -> str:
    return f"liquidate:{account}"


def _usd_in_units(usd: Decimal, answer: int, feed_decimals: int, token_decimals: int) -> int:
    """`usd` in a token's smallest units at its feed answer, rounded up."""
    numerator, denominator = usd.as_integer_ratio()
    scaled: int = numerator * 10 ** (token_decimals + feed_decimals)
    return -(-scaled // (denominator * answer))
