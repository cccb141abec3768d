"""What the end-to-end keeper tests share: the keeper as a process or as an asyncio task, waiting
for its log lines, mining control, and reading outcomes back from the chain.

Every outcome is read from the chain itself (events, receipts, historical view calls), never
inferred from the keeper's own logs: logs only tell the tests *when* to look.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

from eth_typing import HexStr
from structlog.testing import capture_logs
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import BlockIdentifier, RPCEndpoint

from keeper.config import parse_config
from keeper.daemon import Keeper
from keeper.devnet.anvil import DevKey
from keeper.devnet.controls import latest_answer, set_price
from keeper.devnet.keeper_config import KEY_ENV, KeeperProcess, keeper_config_toml
from keeper.devnet.network import Devnet, running_devnet
from keeper.execution.batch import is_liquidation_key, key_accounts
from keeper.execution.signer import signer_from_env
from keeper.state.model import CreditAccountState

T = TypeVar("T")

WAD = 10**18
GWEI = 10**9
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Generous: a 2-core CI box running anvil, the keeper and pytest at once can be slow; every wait
# ends as soon as its condition holds, so a long limit costs nothing when things work.
WAIT_S = 30.0
POLL_S = 0.05


# ---------------------------------------------------------------------------- raw RPC and mining


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """One raw JSON-RPC call; fails the test with the node's error."""
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, f"{method}{params} failed: {response['error']}"
    return response.get("result")


def stop_mining(w3: Web3) -> None:
    """No block is mined until `mine` or `mine_every`: transactions wait in the pool."""
    rpc(w3, "evm_setAutomine", False)
    rpc(w3, "evm_setIntervalMining", 0)


def mine(w3: Web3) -> int:
    """Mines one block now; returns its number."""
    rpc(w3, "evm_mine")
    return w3.eth.block_number


def mine_every(w3: Web3, seconds: int = 1) -> None:
    """A block every `seconds`, as a real chain produces them (and as the devnet does)."""
    rpc(w3, "evm_setIntervalMining", seconds)


def pending_of(w3: Web3, sender: str) -> dict[int, dict[str, Any]]:
    """`sender`'s transactions waiting in anvil's pool (pending or queued behind a gap), by
    nonce."""
    pool = rpc(w3, "txpool_content")
    waiting: dict[int, dict[str, Any]] = {}
    for section in ("pending", "queued"):
        for nonce, tx in pool.get(section, {}).get(sender.lower(), {}).items():
            waiting[int(nonce)] = tx
    return waiting


# ---------------------------------------------------------------------------- keeper logs


class LogSource(Protocol):
    """A running keeper's structured log."""

    name: str

    def entries(self) -> list[dict[str, Any]]: ...

    def tail(self, lines: int = 40) -> str: ...

    def check_alive(self) -> None: ...


_MISSING = object()


def matching(
    entries: Iterable[dict[str, Any]], event: str, **fields: object
) -> list[dict[str, Any]]:
    """Log entries named `event` whose `fields` have exactly the given values."""
    return [
        entry
        for entry in entries
        if entry.get("event") == event
        and all(entry.get(name, _MISSING) == value for name, value in fields.items())
    ]


def _describe_wait(source: LogSource | None, what: str, timeout_s: float) -> str:
    message = f"timed out after {timeout_s:.0f}s waiting for {what}"
    if source is not None:
        message += f"\n--- last lines of {source.name}'s log ---\n{source.tail()}"
    return message


def wait_until(
    condition: Callable[[], T | None],
    *,
    what: str,
    source: LogSource | None = None,
    timeout_s: float = WAIT_S,
) -> T:
    """Polls `condition` until it returns something truthy, and returns that; fails with `what`
    and the keeper's log tail on timeout, or at once if the keeper died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if source is not None:
            source.check_alive()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_describe_wait(source, what, timeout_s))
        time.sleep(POLL_S)


async def wait_until_async(
    condition: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    source: LogSource | None = None,
    timeout_s: float = WAIT_S,
) -> T:
    """`wait_until` for a test sharing its event loop with an in-process keeper."""
    deadline = time.monotonic() + timeout_s
    while True:
        if source is not None:
            source.check_alive()
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_describe_wait(source, what, timeout_s))
        await asyncio.sleep(POLL_S)


def _first_match(source: LogSource, event: str, fields: dict[str, object]) -> dict[str, Any] | None:
    found = matching(source.entries(), event, **fields)
    return found[0] if found else None


def wait_for_log(
    source: LogSource, event: str, *, timeout_s: float = WAIT_S, **fields: object
) -> dict[str, Any]:
    """The first log entry `event` with `fields`, waiting for it up to `timeout_s`."""
    return wait_until(
        lambda: _first_match(source, event, fields),
        what=f"log event {event!r} with {fields}",
        source=source,
        timeout_s=timeout_s,
    )


async def wait_for_log_async(
    source: LogSource, event: str, *, timeout_s: float = WAIT_S, **fields: object
) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        return _first_match(source, event, fields)

    return await wait_until_async(
        found, what=f"log event {event!r} with {fields}", source=source, timeout_s=timeout_s
    )


def covering(
    entries: Iterable[dict[str, Any]], event: str, account: str, **fields: object
) -> list[dict[str, Any]]:
    """Log entries `event` (with `fields`) of a liquidation transaction whose key covers
    `account`: alone ("liquidate:0xA") or in a batch ("liquidate:0xA,0xB")."""
    return [
        entry
        for entry in matching(entries, event, **fields)
        if is_liquidation_key(entry.get("key", "")) and account in key_accounts(entry["key"])
    ]


def wait_for_account_log(
    source: LogSource, event: str, account: str, *, timeout_s: float = WAIT_S, **fields: object
) -> dict[str, Any]:
    """The first entry `event` (`dispatcher.sent`, `liquidation.included`, ...) of a liquidation
    transaction covering `account`, waiting for it up to `timeout_s`."""

    def found() -> dict[str, Any] | None:
        entries = covering(source.entries(), event, account, **fields)
        return entries[0] if entries else None

    return wait_until(
        found,
        what=f"log event {event!r} covering {account} with {fields}",
        source=source,
        timeout_s=timeout_s,
    )


async def wait_for_account_log_async(
    source: LogSource, event: str, account: str, *, timeout_s: float = WAIT_S, **fields: object
) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        entries = covering(source.entries(), event, account, **fields)
        return entries[0] if entries else None

    return await wait_until_async(
        found,
        what=f"log event {event!r} covering {account} with {fields}",
        source=source,
        timeout_s=timeout_s,
    )


# ---------------------------------------------------------------------------- keeper as a process


class KeeperRun:
    """`keeper run` as a real child process writing JSON log lines to a file."""

    def __init__(self, name: str, config_path: Path, key: DevKey, log_path: Path) -> None:
        self.name = name
        self.address = key.address
        self.log_path = log_path
        self.process = KeeperProcess(config_path, key, log_path=log_path)
        self.exit_code: int | None = None

    def _lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def entries(self) -> list[dict[str, Any]]:
        parsed = []
        for line in self._lines():
            try:
                entry = json.loads(line)
            except ValueError:  # a traceback or other non-JSON output: kept for tail() only
                continue
            if isinstance(entry, dict):
                parsed.append(entry)
        return parsed

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self._lines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"keeper {self.name} (pid {self.process.pid}) exited with {code}:\n{self.tail()}"
            )

    def stop(self) -> int:
        """SIGTERM to this process (by pid); returns its exit code (0 = clean stop)."""
        if self.exit_code is None:
            self.exit_code = self.process.stop()
        return self.exit_code


class Harness:
    """Starts devnets and keeper processes for one test; `close()` stops them, keepers first
    (by their pids), then anvil with its temp dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._stack = ExitStack()

    def devnet(
        self,
        *,
        accounts: int = 0,
        seed: int = 1,
        block_time: int | None = None,
        dump_state: Path | None = None,
    ) -> Devnet:
        """anvil on a free port + the protocol + `accounts` seeded accounts; with `block_time`,
        anvil then mines a block every that many seconds; with `dump_state`, `restart_anvil`
        can restart it with its state."""
        return self._stack.enter_context(
            running_devnet(
                accounts=accounts, seed=seed, block_time=block_time, dump_state=dump_state
            )
        )

    def write_config(
        self, net: Devnet, name: str = "keeper", **options: Unpack[ConfigOptions]
    ) -> Path:
        """The keeper's TOML for `net`, as `keeper devnet --keeper` writes it, with `options`
        (fault tests put proxies and a database there)."""
        path = self.tmp_path / f"{name}.toml"
        path.write_text(keeper_config(net, **options))
        return path

    def start_keeper(
        self, net: Devnet, key: DevKey, name: str = "keeper", **options: Unpack[ConfigOptions]
    ) -> KeeperRun:
        """`keeper run --config <tmp>/<name>.toml` with `key`, logging to <tmp>/<name>.log; the
        config as `write_config` writes it (`use_websocket=False`: HTTP polling for heads;
        `metrics_port`: metrics and health endpoints on localhost unless it is 0)."""
        config = self.write_config(net, name, **options)
        run = KeeperRun(name, config, key, self.tmp_path / f"{name}.log")
        self._stack.callback(run.stop)
        return run

    def close(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------------------- keeper in-process


@dataclass
class InProcessKeeper:
    """A `Keeper` running as a task of the test's own event loop, its logs captured."""

    keeper: Keeper
    task: asyncio.Task[None]
    logs: list[MutableMapping[str, Any]]
    name: str = "in-process keeper"

    def entries(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self.logs]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(json.dumps(entry, default=str) for entry in self.logs[-lines:])

    def check_alive(self) -> None:
        if self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            raise AssertionError(f"the keeper task ended ({error!r}):\n{self.tail()}")


class ConfigOptions(TypedDict, total=False):
    """What a test may choose in the keeper's TOML; the rest is the devnet's, as
    `keeper_config_toml` writes it (its defaults apply to what is left out)."""

    inclusion_timeout_s: float
    use_websocket: bool
    metrics_port: int
    rpc_url: str | None
    ws_url: str | None
    backup_rpc_urls: tuple[str, ...]
    database_path: str | None
    batch_liquidator: bool


def keeper_config(net: Devnet, **options: Unpack[ConfigOptions]) -> str:
    """The devnet's keeper TOML, as `keeper devnet --keeper` writes it, with `options`."""
    return keeper_config_toml(net.manifest(), **options)


@asynccontextmanager
async def keeper_in_process(
    net: Devnet,
    key: DevKey,
    tmp_path: Path,
    *,
    settings: Mapping[str, Mapping[str, object]] | None = None,
    **options: Unpack[ConfigOptions],
) -> AsyncIterator[InProcessKeeper]:
    """Runs `Keeper(config, signer).run()` as a task until the block ends, then cancels it and
    waits for it; an error the task died of is raised here rather than lost. `options` as
    `keeper_config` takes them; `settings` sets further keys of the TOML's sections
    (`{"liquidation": {"max_fee_gwei": 30}}`)."""
    raw = tomllib.loads(keeper_config(net, **options))
    for section, values in (settings or {}).items():
        raw.setdefault(section, {}).update(values)
    config = parse_config(raw, base_dir=tmp_path)
    signer = signer_from_env(KEY_ENV, {KEY_ENV: key.private_key})
    with capture_logs() as logs:
        keeper = Keeper(config, signer)
        task = asyncio.create_task(keeper.run(), name="keeper")
        running = InProcessKeeper(keeper, task, logs)
        try:
            yield running
        finally:
            died = task.done() and not task.cancelled() and task.exception() is not None
            task.cancel()
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if died and isinstance(outcome, Exception):
                raise outcome


async def on_chain(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a blocking (web3 sync) call in a thread, so an in-process keeper keeps running."""
    return await asyncio.to_thread(function, *args, **kwargs)


# ---------------------------------------------------------------------------- chain reads


def manager_of(net: Devnet, market: str) -> Contract:
    return net.deployment.contract(net.w3, f"CreditManager.{market}")


def managers(net: Devnet) -> dict[str, Contract]:
    """Every market's CreditManager, by market symbol."""
    return {market: manager_of(net, market) for market in net.deployment.markets}


def open_accounts(net: Devnet, block: BlockIdentifier = "latest") -> dict[str, str]:
    """Every open Credit Account at `block`, with its market symbol."""
    found = {}
    for market, manager in managers(net).items():
        count = manager.functions.creditAccountsCount().call(block_identifier=block)
        for account in manager.functions.creditAccounts(0, count).call(block_identifier=block):
            found[account] = market
    return found


def liquidatable_at(net: Devnet, block: BlockIdentifier = "latest") -> dict[str, str]:
    """The accounts the contracts say are liquidatable at `block` (`isLiquidatable`)."""
    views = managers(net)
    return {
        account: market
        for account, market in open_accounts(net, block).items()
        if views[market].functions.isLiquidatable(account).call(block_identifier=block)
    }


def assert_account_matches_views(
    net: Devnet, market: str, address: str, account: CreditAccountState | None, block: int
) -> None:
    """What a keeper stores for `address` (None: nothing, as for a closed account) equals the
    CreditManager's `creditAccountInfo` and `balances` at `block`."""
    manager = manager_of(net, market).functions
    owner, principal, index, interest, fees = manager.creditAccountInfo(address).call(
        block_identifier=block
    )
    tokens, amounts = manager.balances(address).call(block_identifier=block)
    where = f"{market} account {address} in block {block}"
    if owner == ZERO_ADDRESS:
        assert account is None, f"{where}: closed, still in the keeper's state"
        assert not any(amounts), f"{where}: closed with balances {amounts}"
        return
    assert account is not None, f"{where}: open, missing from the keeper's state"
    stored = (account.owner, account.principal, account.cumulative_index_ray)
    assert stored == (owner, principal, index), (
        f"{where}: keeper has (owner, principal, index) {stored}, views {(owner, principal, index)}"
    )
    accrued = (account.accrued_interest, account.accrued_fees)
    assert accrued == (interest, fees), (
        f"{where}: keeper has (accrued interest, fees) {accrued}, views {(interest, fees)}"
    )
    assert set(account.balances) <= set(tokens), f"{where}: balance of a non-collateral token"
    held = {token: amount for token, amount in account.balances.items() if amount}
    viewed = {token: amount for token, amount in zip(tokens, amounts, strict=True) if amount}
    assert held == viewed, f"{where}: keeper has balances {held}, views {viewed}"


def health_factor(net: Devnet, market: str, account: str, block: BlockIdentifier = "latest") -> int:
    value: int = (
        manager_of(net, market).functions.calcHealthFactor(account).call(block_identifier=block)
    )
    return value


def feed_answers(net: Devnet, block: BlockIdentifier = "latest") -> dict[str, int]:
    """Every token's feed answer at `block`."""
    if block == "latest":
        return {s: latest_answer(net.w3, net.deployment, s) for s in net.deployment.tokens}
    return {
        symbol: net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
        .functions.latestAnswer()
        .call(block_identifier=block)
        for symbol in net.deployment.tokens
    }


@dataclass(frozen=True, slots=True)
class Liquidation:
    """One `CreditAccountLiquidated` event."""

    market: str
    account: str
    liquidator: str
    block: int
    tx_hash: str
    to: str  # who received the account's assets


def liquidations(
    net: Devnet, from_block: int, to_block: BlockIdentifier = "latest"
) -> list[Liquidation]:
    """Every liquidation in every market between the two blocks, in chain order."""
    found = []
    for market, manager in managers(net).items():
        for event in manager.events.CreditAccountLiquidated.get_logs(
            from_block=from_block, to_block=to_block
        ):
            found.append(
                Liquidation(
                    market,
                    event["args"]["creditAccount"],
                    event["args"]["liquidator"],
                    event["blockNumber"],
                    event["transactionHash"].to_0x_hex(),
                    event["args"]["to"],
                )
            )
    return sorted(found, key=lambda liquidation: liquidation.block)


def liquidated_accounts(net: Devnet, from_block: int) -> set[str]:
    return {liquidation.account for liquidation in liquidations(net, from_block)}


@dataclass(frozen=True, slots=True)
class MinedTx:
    """A transaction of the keeper's signer found in a block, with its receipt's status."""

    block: int
    index: int
    tx_hash: str
    nonce: int
    to: str
    value: int
    input: str
    status: int


def mined_transactions(w3: Web3, sender: str, from_block: int = 0) -> list[MinedTx]:
    """Every transaction `sender` got mined from `from_block` to the latest block, found by
    scanning each block's full transaction list (not trusting any index or the keeper)."""
    found = []
    for number in range(from_block, w3.eth.block_number + 1):
        block = rpc(w3, "eth_getBlockByNumber", hex(number), True)
        for tx in block["transactions"]:
            if Web3.to_checksum_address(tx["from"]) != sender:
                continue
            receipt = rpc(w3, "eth_getTransactionReceipt", tx["hash"])
            found.append(
                MinedTx(
                    block=number,
                    index=int(tx["transactionIndex"], 16),
                    tx_hash=tx["hash"],
                    nonce=int(tx["nonce"], 16),
                    to=Web3.to_checksum_address(tx["to"]),
                    value=int(tx["value"], 16),
                    input=tx["input"],
                    status=int(receipt["status"], 16),
                )
            )
    return found


@dataclass
class KeeperActivity:
    """The keeper's mined transactions, sorted into what they were."""

    approvals: list[MinedTx] = field(default_factory=list)
    liquidations: dict[str, MinedTx] = field(default_factory=dict)  # account -> the tx that did it
    skipped: dict[str, list[MinedTx]] = field(default_factory=dict)  # by a batch, per account
    batches: list[MinedTx] = field(default_factory=list)  # every liquidateBatch mined
    cancels: list[MinedTx] = field(default_factory=list)


def batch_liquidator(net: Devnet) -> str:
    """The devnet's BatchLiquidator (owned by the keeper role)."""
    return net.deployment.address("BatchLiquidator")


def check_keeper_transactions(net: Devnet, signer: str, txs: list[MinedTx]) -> KeeperActivity:
    """Asserts what the keeper may send and classifies it:

    - no transaction of the keeper reverted (every receipt has status 1);
    - a liquidation, alone or in a batch, only of an account whose health factor was below 1 in
      the block before the one that included it (the state the transaction was executed
      against), paid to itself; and no account liquidated twice, or tried again by a batch once
      the keeper had liquidated it (the in-flight guard: never two transactions for one account);
    - besides liquidations, only `approve` of a market's underlying to its manager or to the
      BatchLiquidator, and zero-value self-transfers (the dispatcher's cancellation of a
      liquidation no longer needed).
    """
    views = managers(net)
    manager_markets = {str(manager.address): market for market, manager in views.items()}
    underlyings = {net.deployment.address(market): market for market in net.deployment.markets}
    batch = net.deployment.contract(net.w3, "BatchLiquidator")
    activity = KeeperActivity()
    reverted = [tx for tx in txs if tx.status != 1]
    assert not reverted, f"keeper transactions reverted on chain: {reverted}"

    def liquidated(market: str, account: str, tx: MinedTx) -> None:
        assert account not in activity.liquidations, f"two liquidations of {account}"
        before = health_factor(net, market, account, tx.block - 1)
        assert before < WAD, (
            f"keeper liquidated {account} in block {tx.block}, but its Hf was "
            f"{before / WAD:.6f} in block {tx.block - 1}"
        )
        activity.liquidations[account] = tx

    for tx in txs:
        if tx.to in manager_markets:
            market = manager_markets[tx.to]
            function, args = views[market].decode_function_input(tx.input)
            assert function.fn_name == "liquidateCreditAccount", tx
            assert args["to"] == signer, f"liquidation paid to {args['to']}, not the keeper"
            liquidated(market, args["creditAccount"], tx)
        elif tx.to == batch.address:
            function, args = batch.decode_function_input(tx.input)
            assert function.fn_name == "liquidateBatch", tx
            market = manager_markets[args["manager"]]
            receipt = net.w3.eth.get_transaction_receipt(HexStr(tx.tx_hash))
            events = (
                views[market]
                .events.CreditAccountLiquidated()
                .process_receipt(receipt, errors=DISCARD)
            )
            done = {event["args"]["creditAccount"]: event["args"] for event in events}
            for account in args["creditAccounts"]:
                assert account not in activity.liquidations, (
                    f"batch {tx.tx_hash} tried {account}, which the keeper had liquidated"
                )
                if account not in done:
                    activity.skipped.setdefault(account, []).append(tx)
                    continue
                assert done[account]["liquidator"] == batch.address, done[account]
                assert done[account]["to"] == signer, f"{account} paid to {done[account]['to']}"
                liquidated(market, account, tx)
            activity.batches.append(tx)
        elif tx.to in underlyings:
            token = net.deployment.contract(net.w3, underlyings[tx.to])
            function, args = token.decode_function_input(tx.input)
            assert function.fn_name == "approve", tx
            assert args["spender"] in (views[underlyings[tx.to]].address, batch.address), tx
            activity.approvals.append(tx)
        elif tx.to == signer and tx.value == 0 and tx.input in ("0x", ""):
            activity.cancels.append(tx)
        else:
            raise AssertionError(f"unexpected keeper transaction {tx}")
    return activity


def approvals_expected(net: Devnet, *, batch: bool) -> int:
    """The keeper's approvals at start: each market's manager, and the BatchLiquidator for each
    underlying when it liquidates through one."""
    return len(net.deployment.markets) * (2 if batch else 1)


def assert_nonces_clean(w3: Web3, signer: str, txs: list[MinedTx]) -> None:
    """The signer's mined transactions used nonces 0..n-1, each once, and its on-chain nonce is n
    with nothing left waiting in the pool."""
    nonces = sorted(tx.nonce for tx in txs)
    assert nonces == list(range(len(txs))), f"nonce gap or duplicate: {nonces}"
    assert w3.eth.get_transaction_count(Web3.to_checksum_address(signer), "latest") == len(txs)
    assert pending_of(w3, signer) == {}, "keeper transactions still waiting in the pool"


# ---------------------------------------------------------------------------- interest


def seconds_until_liquidatable(net: Devnet, market: str, account: str) -> int:
    """How many seconds after the latest block interest alone makes `account` liquidatable at
    today's prices, from the contracts' own numbers: the pool's `cumulativeIndexAt(t)`, the
    account's `creditAccountInfo` and `calcTotalValue`, combined as docs/protocol.md states
    `calcDebt` (Hf < 1 exactly when weighted value < total debt)."""
    manager = manager_of(net, market).functions
    pool = net.deployment.contract(net.w3, f"LendingPool.{market}").functions
    _, principal, index, accrued_interest, accrued_fees = manager.creditAccountInfo(account).call()
    _, weighted_value = manager.calcTotalValue(account).call()
    fee_interest = manager.feeInterest().call()
    now: int = net.w3.eth.get_block("latest")["timestamp"]

    def underwater_after(seconds: int) -> bool:
        new = principal * pool.cumulativeIndexAt(now + seconds).call() // index - principal
        fee = accrued_fees + new * fee_interest // 10_000
        return bool(weighted_value < principal + accrued_interest + new + fee)

    assert not underwater_after(0), f"{account} is already liquidatable"
    low, high = 0, 3600
    while not underwater_after(high):
        low, high = high, high * 2
        assert high < 100 * 365 * 24 * 3600, f"interest never sinks {account}"
    while high - low > 1:
        middle = (low + high) // 2
        if underwater_after(middle):
            high = middle
        else:
            low = middle
    return high


# ---------------------------------------------------------------------------- levers


def crash(net: Devnet, symbol: str, change_bps: int) -> int:
    """Moves `symbol`'s price by `change_bps` (-3000 = -30 %); returns the block it landed in."""
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    return set_price(net.w3, net.deployment, symbol, new, net.roles.deployer.address)


def crash_in_own_block(net: Devnet, symbol: str, change_bps: int) -> int:
    """`crash` while mining is stopped: the price update is mined alone, in a block of its own,
    and nothing after it until the test mines again; returns that block."""
    feed = net.deployment.contract(net.w3, f"PriceFeed.{symbol}")
    new = latest_answer(net.w3, net.deployment, symbol) * (10_000 + change_bps) // 10_000
    feed.functions.updateAnswer(new).transact({"from": net.roles.deployer.address})
    return mine(net.w3)
