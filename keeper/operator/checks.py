"""`keeper check-config`: everything `keeper run` needs from the chain, checked before it is needed.

A keeper that starts against the wrong chain, an unfunded signer or a dead feed fails at the worst
moment: during a crash. Each check prints one PASS or FAIL line saying what it looked at and what
it found, so an operator fixes every problem in one pass instead of one per restart.
"""

from __future__ import annotations

import argparse
import asyncio

from eth_abi.exceptions import DecodingError
from web3 import AsyncWeb3, WebSocketProvider
from web3.exceptions import Web3Exception
from websockets.exceptions import WebSocketException

from keeper.chain.rpc import RpcClient, RpcError, RpcTransportError, redact_url
from keeper.config import ConfigError, KeeperConfig, load_config
from keeper.display import format_units
from keeper.execution.decide import NATIVE_DECIMALS
from keeper.execution.journal import TxJournal
from keeper.execution.signer import Signer, SignerError
from keeper.operator.session import backfilled, connected, quiet_logging
from keeper.operator.valuation import TokenInfo, read_tokens, short
from keeper.protocol.calls import MULTICALL3_ADDRESS, CallRevertedError, eth_call, manager_call
from keeper.risk.health import PriceUnavailableError, checked_price
from keeper.startup import (
    LoadedState,
    StartupError,
    batch_liquidator_problem,
    configured_addresses,
    load_signer,
    scratch_database,
    signing_pipeline,
)
from keeper.state.store import UnknownCreditAccountError

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
_WEBSOCKET_TIMEOUT_S = 10.0
_WEBSOCKET_KWARGS = {"open_timeout": 3, "close_timeout": 1}
_WEBSOCKET_FAILURES = (Web3Exception, WebSocketException, OSError, TimeoutError, ValueError)


class Report:
    """Prints each check's line as it completes (a slow node shows where it is) and counts."""

    def __init__(self) -> None:
        self.counts = {PASS: 0, FAIL: 0, SKIP: 0}

    def check(self, ok: bool, subject: str, detail: str) -> bool:
        self._line(PASS if ok else FAIL, subject, detail)
        return ok

    def skip(self, subject: str, detail: str) -> None:
        self._line(SKIP, subject, detail)

    def _line(self, status: str, subject: str, detail: str) -> None:
        self.counts[status] += 1
        print(f"{status}  {subject}: {detail}", flush=True)

    def summary(self) -> str:
        skipped = f", {self.counts[SKIP]} skipped" if self.counts[SKIP] else ""
        return f"{self.counts[PASS]} passed, {self.counts[FAIL]} failed{skipped}"


def check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    quiet_logging()
    report = Report()
    asyncio.run(_check(config, report))
    print(report.summary())
    return 1 if report.counts[FAIL] else 0


async def _check(config: KeeperConfig, report: Report) -> None:
    async with connected(config) as rpc:
        if not await _reachable(rpc, report):
            return
        chain_ok = await _chain_id(rpc, config, report)
        with_code = await _code(rpc, config, report)
        managers_ok = await _managers(rpc, config, with_code, report)
        await _websocket(config, report)
        signer = _signer(config, report)
        if signer is not None:
            await _gas_balance(rpc, config, signer, report)
        await _batch_liquidator(rpc, config, signer, report)
        if not (chain_ok and managers_ok and MULTICALL3_ADDRESS in with_code):
            report.skip(
                "back-fill, funds, permissions and feeds", "not checked: fix the failures above"
            )
            return
        loaded = await _backfill(rpc, config, report)
        if loaded is None:
            return
        tokens = await read_tokens(
            rpc,
            {token for _, token in loaded.state.feed_configs} | {config.liquidation.native_token},
        )
        if signer is None:
            report.skip("signer funds and permissions per market", "not checked: no signer")
        else:
            await _markets(rpc, config, signer=signer, loaded=loaded, tokens=tokens, report=report)
        _native_token(config, loaded, tokens, report)
        _feeds(loaded, tokens, report)


async def _reachable(rpc: RpcClient, report: Report) -> bool:
    subject = f"RPC endpoint {redact_url(rpc.url)}"
    try:
        block = int(await rpc.request("eth_blockNumber", []), 16)
    except (RpcTransportError, RpcError) as error:
        return report.check(False, subject, f"unreachable ({error})")
    return report.check(True, subject, f"answers, latest block {block:,}")


async def _chain_id(rpc: RpcClient, config: KeeperConfig, report: Report) -> bool:
    chain_id = int(await rpc.request("eth_chainId", []), 16)
    if chain_id == config.chain.chain_id:
        return report.check(True, "chain id", f"{chain_id} matches chain.chain_id")
    return report.check(
        False,
        "chain id",
        f"the node serves chain {chain_id}, chain.chain_id is {config.chain.chain_id}",
    )


async def _code(rpc: RpcClient, config: KeeperConfig, report: Report) -> set[str]:
    """Code at every configured address and at Multicall3; returns the addresses that have it."""
    with_code = set()
    for field, address in [*configured_addresses(config), ("Multicall3", MULTICALL3_ADDRESS)]:
        code = await rpc.request("eth_getCode", [address, "latest"])
        size = (len(code) - 2) // 2 if isinstance(code, str) else 0
        if report.check(
            size > 0, f"code at {field} {address}", f"{size:,} bytes" if size else "no contract"
        ):
            with_code.add(address)
    return with_code


async def _managers(
    rpc: RpcClient, config: KeeperConfig, with_code: set[str], report: Report
) -> bool:
    """Each CreditManager with code answers the three views the keeper discovers markets by."""
    all_ok = True
    for i, manager in enumerate(config.protocol.credit_managers):
        if manager not in with_code:
            all_ok = False
            continue
        subject = f"protocol.credit_managers[{i}] {manager} answers as a CreditManager"
        answers = []
        for view in ("underlying", "pool", "oracle"):
            try:
                (answer,) = await eth_call(rpc, manager_call(manager, view))
            except (CallRevertedError, RpcError, DecodingError) as error:
                all_ok = report.check(False, subject, f"{view}() fails ({error})") and all_ok
                break
            answers.append(f"{view} {answer}")
        else:
            report.check(True, subject, ", ".join(answers))
    return all_ok


async def _websocket(config: KeeperConfig, report: Report) -> None:
    ws_url = config.chain.ws_url
    if ws_url is None:
        report.skip("WebSocket", "chain.ws_url not set: the keeper polls HTTP for new heads")
        return
    subject = f"WebSocket {redact_url(ws_url)}"
    try:
        chain_id = await asyncio.wait_for(_subscribe_new_heads(ws_url), _WEBSOCKET_TIMEOUT_S)
    except _WEBSOCKET_FAILURES as error:
        # The error's text may carry the URL (and a provider's key in it): its type only.
        report.check(False, subject, f"no newHeads subscription ({type(error).__name__})")
        return
    report.check(
        chain_id == config.chain.chain_id,
        subject,
        f"newHeads subscription accepted, chain {chain_id}"
        + (
            ""
            if chain_id == config.chain.chain_id
            else f" (chain.chain_id is {config.chain.chain_id})"
        ),
    )


async def _subscribe_new_heads(ws_url: str) -> int:
    """Subscribes to newHeads and unsubscribes (no block needs to arrive); returns the chain id
    the socket's node serves."""
    provider = WebSocketProvider(
        ws_url,
        websocket_kwargs=_WEBSOCKET_KWARGS,
        request_timeout=_WEBSOCKET_TIMEOUT_S / 2,
        max_connection_retries=1,
    )
    async with AsyncWeb3(provider) as w3:
        subscription = await w3.eth.subscribe("newHeads")
        await w3.eth.unsubscribe(subscription)
        chain_id: int = await w3.eth.chain_id
        return chain_id


def _signer(config: KeeperConfig, report: Report) -> Signer | None:
    try:
        signer = load_signer(config)
    except (SignerError, ConfigError) as error:  # their messages never hold key material
        report.check(False, "signer", str(error))
        return None
    report.check(True, "signer", f"loads, address {signer.address}")
    return signer


async def _gas_balance(
    rpc: RpcClient, config: KeeperConfig, signer: Signer, report: Report
) -> None:
    balance = int(await rpc.request("eth_getBalance", [signer.address, "latest"]), 16)
    minimum = config.ops.min_native_balance_wei
    shown, least = (format_units(v, NATIVE_DECIMALS, 4) for v in (balance, minimum))
    report.check(
        balance >= minimum,
        "signer gas balance",
        f"{shown} (native coin) {'>=' if balance >= minimum else '<'} "
        f"ops.min_native_balance {least}",
    )


async def _batch_liquidator(
    rpc: RpcClient, config: KeeperConfig, signer: Signer | None, report: Report
) -> None:
    """The BatchLiquidator, when configured, must belong to the signer: only its owner may
    liquidate through it."""
    batch = config.liquidation.batch_liquidator
    if batch is None:
        return
    subject = f"liquidation.batch_liquidator {batch}"
    if signer is None:
        report.skip(subject, "owner not checked: no signer")
        return
    problem = await batch_liquidator_problem(rpc, batch, signer.address)
    report.check(
        problem is None,
        subject,
        f"owned by the signer: batches of up to {config.liquidation.batch_size} accounts"
        if problem is None
        else f"{problem}; deploy one owned by the signer, or remove batch_liquidator",
    )


async def _backfill(rpc: RpcClient, config: KeeperConfig, report: Report) -> LoadedState | None:
    subject = f"back-fill from protocol.deploy_block {config.protocol.deploy_block:,}"
    try:
        loaded = await backfilled(rpc, config)
    except (ConfigError, StartupError, UnknownCreditAccountError) as error:
        report.check(False, subject, str(error))
        return None
    state = loaded.state
    report.check(
        True,
        subject,
        f"{loaded.logs:,} logs up to block {loaded.head.number:,}: {len(state.markets)} "
        f"market(s), {state.account_count():,} open account(s), {len(state.feeds())} feed(s)",
    )
    return loaded


async def _markets(
    rpc: RpcClient,
    config: KeeperConfig,
    *,
    signer: Signer,
    loaded: LoadedState,
    tokens: dict[str, TokenInfo],
    report: Report,
) -> None:
    """Per market: the signer's underlying (information: it pays the debt it liquidates) and
    whether it may liquidate at all (a paused market admits emergency liquidators only)."""
    state = loaded.state
    with scratch_database() as database:
        journal = TxJournal(database, signer.address)
        liquidator, _ = signing_pipeline(rpc, config, signer, state, journal)
        underlyings = sorted({market.underlying for market in state.markets.values()})
        _, balances = await liquidator.balances(underlyings)
    tokens = tokens | await read_tokens(rpc, underlyings)
    for manager, market in state.markets.items():
        token = tokens[market.underlying]
        where = f"market {token.symbol} {short(manager)}"
        balance = balances[market.underlying]
        note = "" if balance else ": it cannot pay for a liquidation in this market"
        report.check(True, f"signer {token.symbol} balance, {where}", token.amount(balance) + note)
        permission = liquidator.permission(manager)
        role = (
            "the signer is an emergency liquidator"
            if signer.address in market.emergency_liquidators
            else "the signer is not an emergency liquidator"
        )
        report.check(
            permission.can_liquidate,
            f"liquidation permission, {where}",
            f"{permission.why} ({role})",
        )


def _native_token(
    config: KeeperConfig, loaded: LoadedState, tokens: dict[str, TokenInfo], report: Report
) -> None:
    """Gas is valued through the native token's oracle price, which needs 18 decimals."""
    native = config.liquidation.native_token
    subject = f"liquidation.native_token {native} ({tokens[native].symbol})"
    oracles = sorted({market.oracle for market in loaded.state.markets.values()})
    unpriced = [o for o in oracles if (o, native) not in loaded.state.feed_configs]
    if unpriced:
        report.check(
            False,
            subject,
            f"no price feed in oracle(s) {', '.join(unpriced)}: gas cannot be valued, so "
            "liquidations are refused unless liquidation.emergency = true",
        )
        return
    decimals = {loaded.state.feed_configs[(o, native)].token_decimals for o in oracles}
    report.check(
        decimals == {NATIVE_DECIMALS},
        subject,
        f"priced by {len(oracles)} oracle(s), token decimals {', '.join(map(str, decimals))} "
        f"(must be {NATIVE_DECIMALS}: one wei of gas is one unit of it)",
    )


def _feeds(loaded: LoadedState, tokens: dict[str, TokenInfo], report: Report) -> None:
    """Every feed's answer at the back-filled head, judged as the oracle would judge it."""
    now = loaded.head.timestamp
    for (oracle, token), feed in sorted(loaded.state.feed_configs.items()):
        subject = f"feed {feed.feed} ({tokens[token].symbol}, oracle {short(oracle)})"
        price = loaded.state.prices[oracle].get(token)
        try:
            checked = checked_price(token, price, now)
        except PriceUnavailableError as error:
            age = "" if price is None else f" ({now - price.updated_at:,} s ago)"
            report.check(
                False,
                subject,
                f"{error.reason}{age}, staleness period {feed.staleness_period:,} s: accounts "
                "holding this token cannot be valued or liquidated until it updates",
            )
            continue
        report.check(
            True,
            subject,
            f"answer {format_units(checked.answer, checked.feed_decimals, 4)}, updated "
            f"{now - checked.updated_at:,} s ago (stale after {checked.staleness_period:,} s)",
        )
