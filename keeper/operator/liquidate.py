"""`keeper liquidate`: one account liquidated by hand, for the operator who must act now.

It decides nothing the daemon would not: the same state, health math, permission rule,
simulation, gas limit and dispatcher. What it adds is a person in the loop: everything that
matters is shown first, a liquidation that cannot succeed is refused before anything is signed,
and nothing is sent without a yes. Profit is shown but not required: that is the operator's call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from keeper.chain.heads import Head, latest_head
from keeper.chain.rpc import RpcClient
from keeper.config import KeeperConfig, checked_address, load_config
from keeper.display import format_units
from keeper.execution.decide import NATIVE_DECIMALS, gas_cost_in_underlying
from keeper.execution.dispatcher import Dispatcher, TxOutcome, TxResult
from keeper.execution.journal import TxJournal
from keeper.execution.liquidator import GasPlan, Liquidator, Permission, Simulation
from keeper.execution.signer import Signer
from keeper.operator.session import (
    backfilled,
    connected,
    quiet_logging,
)
from keeper.operator.valuation import (
    TokenInfo,
    Valuation,
    find_account,
    health_text,
    read_tokens,
    utc,
)
from keeper.protocol.calls import eth_call, token_call
from keeper.risk.health import PriceUnavailableError, checked_price
from keeper.startup import keeper_database, load_signer, scratch_database, signing_pipeline
from keeper.state.model import Market

T = TypeVar("T")
# Transactions journaled as mined in this many recent blocks are checked again before sending:
# a reorg may have undone them.
_REORG_DEPTH = 64

EXIT_REFUSED = 1
# How long the dispatcher follows (and re-prices) the liquidation before the command stops
# waiting; the transaction may still be mined after that, and the command says so.
_INCLUSION_WAIT_S = 180.0
_GWEI = 10**9

# The reference CreditManager's revert when pulling the underlying from the liquidator fails.
_TRANSFER_FAILED = "TokenCallFailed"


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything the operator is shown before deciding, read at one moment."""

    valuation: Valuation
    permission: Permission
    simulation: Simulation
    gas: GasPlan | None  # None when the simulation reverts: no estimate
    native_wei: int
    underlying_balance: int
    allowance: int

    @property
    def amount_paid(self) -> int:
        payout = self.valuation.payout()
        return 0 if payout is None else payout.amount_paid

    @property
    def needs_approval(self) -> bool:
        """The CreditManager may not pull what the liquidation pays (the simulation reverts on
        the transfer until the signer approves it)."""
        return self.allowance < max(self.amount_paid, 1)

    @property
    def reverts_for_approval(self) -> bool:
        """The simulation failed on pulling the payment, which the missing approval explains."""
        revert = self.simulation.revert
        return self.needs_approval and revert is not None and revert.name == _TRANSFER_FAILED

    def refusal(self, token: TokenInfo) -> str | None:
        """Why the liquidation must not be sent, or None. A revert while the approval is missing
        is not final: the command approves, then simulates again before sending."""
        valuation, simulation = self.valuation, self.simulation
        if valuation.health is None:
            return f"the account cannot be valued ({valuation.unpriced})"
        if not valuation.liquidatable:
            return f"the account is not liquidatable (health factor {health_text(valuation)} >= 1)"
        if not self.permission.can_liquidate:
            return self.permission.why
        if simulation.revert is not None and not self.reverts_for_approval:
            return f"the simulation reverts: {simulation.revert}"
        if self.underlying_balance < self.amount_paid:
            return (
                f"the signer holds {token.amount(self.underlying_balance)}, the liquidation "
                f"pays {token.amount(self.amount_paid)}"
            )
        if self.gas is not None and self.native_wei < self.gas.max_wei:
            return (
                f"the signer's gas balance {_native(self.native_wei)} is below the "
                f"{_native(self.gas.max_wei)} the transaction may cost"
            )
        return None


def liquidate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    address = checked_address("ADDRESS", args.address)
    signer = load_signer(config)  # before any network work: a bad key fails first, unshown
    quiet_logging()
    return asyncio.run(_liquidate(config, signer, address, args.dry_run, args.yes))


async def _liquidate(
    config: KeeperConfig, signer: Signer, address: str, dry_run: bool, assume_yes: bool
) -> int:
    # Sending uses the keeper's own database when it has one: its lock refuses this command
    # while a keeper runs with it, and its journal is reconciled before anything is sent. A
    # dry run sends nothing and may run beside the keeper.
    own_database = config.storage.database_path is not None and not dry_run
    with keeper_database(config) if own_database else scratch_database() as database:
        async with connected(config) as rpc:
            return await _assess_and_send(
                rpc,
                config,
                signer,
                journal=TxJournal(database, signer.address),
                address=address,
                dry_run=dry_run,
                assume_yes=assume_yes,
            )


async def _assess_and_send(
    rpc: RpcClient,
    config: KeeperConfig,
    signer: Signer,
    *,
    journal: TxJournal,
    address: str,
    dry_run: bool,
    assume_yes: bool,
) -> int:
    loaded = await backfilled(rpc, config)
    state, head = loaded.state, loaded.head
    valuation = find_account(state, address, head.timestamp)
    liquidator, dispatcher = signing_pipeline(rpc, config, signer, state, journal)
    liquidator.follow(await dispatcher.reconcile(mined_after=head.number - _REORG_DEPTH))
    underlying = valuation.market.underlying
    token = (await read_tokens(rpc, [underlying]))[underlying]
    print(
        f"Credit Account {address} ({token.symbol} market, CreditManager "
        f"{valuation.manager}) at block {head.number} ({utc(head.timestamp)})"
    )
    assessment = await _assess(rpc, signer.address, liquidator, valuation, head)
    _show_assessment(assessment, config, signer.address, token, head)
    refusal = assessment.refusal(token)
    if dry_run:
        if refusal is not None:
            print(f"it would be refused: {refusal}")
        succeeds = assessment.simulation.revert is None
        print(
            "dry run: nothing sent; the simulated liquidation "
            + ("succeeds" if succeeds else "does not succeed")
        )
        return 0 if succeeds else EXIT_REFUSED
    if refusal is not None:
        print(f"keeper: refused: {refusal}; nothing sent", file=sys.stderr)
        return EXIT_REFUSED
    if not assume_yes and not _confirmed(address):
        print("keeper: aborted; nothing sent", file=sys.stderr)
        return EXIT_REFUSED
    return await _send(rpc, config, liquidator, dispatcher, assessment)


async def _assess(
    rpc: RpcClient, signer: str, liquidator: Liquidator, valuation: Valuation, head: Head
) -> Assessment:
    manager, market = valuation.manager, valuation.market
    simulation = await liquidator.simulate(manager, valuation.account.address)
    native_wei, balances = await liquidator.balances([market.underlying])
    (allowance,) = await eth_call(rpc, token_call(market.underlying, "allowance", signer, manager))
    gas = (
        None
        if simulation.gas_estimate is None
        else liquidator.gas_plan(simulation.gas_estimate, head.base_fee_per_gas)
    )
    return Assessment(
        valuation,
        liquidator.permission(manager, through_batch=False),
        simulation,
        gas,
        native_wei,
        balances[market.underlying],
        allowance,
    )


def _show_assessment(
    assessment: Assessment, config: KeeperConfig, signer: str, token: TokenInfo, head: Head
) -> None:
    valuation, simulation, gas = assessment.valuation, assessment.simulation, assessment.gas
    health, payout = valuation.health, valuation.payout()
    state = "liquidatable" if valuation.liquidatable else "not liquidatable"
    _show("health factor", f"{health_text(valuation)} ({state})")
    if valuation.unpriced is not None:
        _show("", f"cannot be valued: {valuation.unpriced}")
    _show("permission", assessment.permission.why)
    premium: int | None = None
    if health is not None and payout is not None:
        premium = payout.premium(health.value.total_value)
        _show(
            "payout",
            f"pays {token.amount(payout.amount_paid)} for assets worth "
            f"{token.amount(health.value.total_value)}: a premium of {token.amount(premium)}",
        )
    if gas is None:
        _show("gas", "no estimate: the simulation reverts")
    else:
        _show(
            "gas",
            f"estimate {simulation.gas_estimate:,}, limit {gas.gas_limit:,} at up to "
            f"{format_units(gas.fees.max_fee_per_gas, 9, 4)} gwei: at most {_native(gas.max_wei)}",
        )
        if premium is not None:
            profit = _profit(
                valuation.market,
                token,
                gas,
                premium=premium,
                native_token=config.liquidation.native_token,
                timestamp=head.timestamp,
            )
            _show("profit", profit)
    _show(
        "signer",
        f"{signer} holds {token.amount(assessment.underlying_balance)} and "
        f"{_native(assessment.native_wei)}",
    )
    _show(
        "approval",
        f"missing: the CreditManager may not pull {token.symbol} from the signer yet; "
        "approve() is sent before the liquidation"
        if assessment.needs_approval
        else f"the CreditManager may pull {token.symbol} from the signer",
    )
    outcome = "succeeds" if simulation.revert is None else f"reverts: {simulation.revert}"
    if assessment.reverts_for_approval:
        outcome += " (expected without the approval: simulated again after it)"
    _show("simulation", outcome)


def _profit(
    market: Market,
    token: TokenInfo,
    gas: GasPlan,
    *,
    premium: int,
    native_token: str,
    timestamp: int,
) -> str:
    """The premium less the expected gas, valued through the oracle as the daemon values it."""
    try:
        gas_cost = gas_cost_in_underlying(
            gas.expected_wei,
            checked_price(native_token, market.prices.get(native_token), timestamp),
            checked_price(market.underlying, market.prices.get(market.underlying), timestamp),
        )
    except (PriceUnavailableError, ValueError) as error:
        return f"gas cannot be valued ({error}); premium {token.amount(premium)}"
    profit = premium - gas_cost
    return (
        f"{'' if profit >= 0 else '-'}{token.amount(abs(profit))} after the expected gas "
        f"({token.amount(gas_cost)}); not required to liquidate"
    )


def _show(label: str, text: str) -> None:
    print(f"  {label:<15} {text}", flush=True)


def _native(wei: int) -> str:
    return f"{format_units(wei, NATIVE_DECIMALS, 6)} native coin"


def _confirmed(address: str) -> bool:
    """Asks on stderr, reads stdin; anything but y/yes (no input at all, Ctrl-C) is a no. Read
    on the event loop's thread on purpose: nothing else runs yet, and Ctrl-C must interrupt it."""
    print(f"Liquidate {address} ? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return False


async def _send(
    rpc: RpcClient,
    config: KeeperConfig,
    liquidator: Liquidator,
    dispatcher: Dispatcher,
    assessment: Assessment,
) -> int:
    """Approves if needed, simulates again (the chain moved while the operator read), and sends
    through the dispatcher, which owns the nonce and re-prices a stuck transaction."""
    manager, address = assessment.valuation.manager, assessment.valuation.account.address
    dispatcher.observe_base_fee((await latest_head(rpc)).base_fee_per_gas)
    dispatching = asyncio.create_task(dispatcher.run(), name="dispatcher")
    try:
        if assessment.needs_approval:
            print("approving the CreditManagers to pull the underlying from the signer ...")
        try:
            await _alongside(liquidator.ensure_approvals(), dispatching, _INCLUSION_WAIT_S)
        except (RuntimeError, TimeoutError) as error:
            print(
                f"keeper: {error or 'approval not mined in time'}; no liquidation sent",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        simulation = await liquidator.simulate(manager, address)
        if simulation.revert is not None or simulation.gas_estimate is None:
            print(
                f"keeper: refused: the liquidation now reverts: {simulation.revert}; "
                "it was not sent",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        head = await latest_head(rpc)
        dispatcher.observe_base_fee(head.base_fee_per_gas)
        gas = liquidator.gas_plan(simulation.gas_estimate, head.base_fee_per_gas)
        request = liquidator.liquidation_request(manager, address, gas.gas_limit)
        print(f"sending the liquidation (gas limit {gas.gas_limit:,}) ...", flush=True)
        try:
            result = await _alongside(dispatcher.submit(request), dispatching, _INCLUSION_WAIT_S)
        except TimeoutError:
            pending = dispatcher.pending_nonces()
            print(
                f"keeper: not mined within {_INCLUSION_WAIT_S:.0f} s; still pending (nonce: "
                f"hashes) {pending}: it may yet be mined, check before retrying",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        return _report(result)
    finally:
        dispatching.cancel()
        await asyncio.gather(dispatching, return_exceptions=True)
        await dispatcher.drain(config.ops.shutdown_grace_s)


def _report(result: TxResult) -> int:
    receipt = result.receipt or {}
    block = int(receipt["blockNumber"], 16) if "blockNumber" in receipt else None
    if result.outcome is TxOutcome.INCLUDED:
        print(
            f"liquidated: tx {result.tx_hash} included in block {block}, status 1 (success), "
            f"gas used {int(receipt['gasUsed'], 16):,}"
        )
        return 0
    if result.outcome is TxOutcome.REVERTED:
        print(
            f"keeper: tx {result.tx_hash} mined in block {block} but reverted (status 0)",
            file=sys.stderr,
        )
    else:
        error = "" if result.error is None else f" ({result.error.value})"
        print(
            f"keeper: the liquidation was {result.outcome.value}{error}: {result.detail}",
            file=sys.stderr,
        )
    return EXIT_REFUSED


async def _alongside(work: Awaitable[T], dispatching: asyncio.Task[None], timeout_s: float) -> T:
    """`work`'s result, which needs the dispatcher: the dispatcher's own error if it dies first,
    `TimeoutError` after `timeout_s`."""
    job = asyncio.ensure_future(work)
    done, _ = await asyncio.wait(
        {job, dispatching}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    if job in done:
        return job.result()
    job.cancel()
    if dispatching in done:
        dispatching.result()
        raise RuntimeError("the dispatcher stopped before the transaction was settled")
    raise TimeoutError
