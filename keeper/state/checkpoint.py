"""The protocol state as of a processed block, kept on disk so a restart resumes from it instead
of re-reading the whole history.

A checkpoint is a cache of what the logs say: whenever it cannot be trusted (another chain, a new
genesis, other CreditManagers or deploy block, unreadable rows) it is discarded and the keeper
re-reads history. Every save is one transaction, so the file always holds the state of exactly
one block. uint256 values do not fit SQLite integers: they are stored as decimal text (in JSON,
as strings), which gives back exactly the integers saved.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from keeper.state.database import Database
from keeper.state.model import CreditAccountState, Fees, InterestRate, TokenPrice
from keeper.state.store import (
    AccountKey,
    FeedConfig,
    MarketState,
    PriceKey,
    ProtocolState,
    StateChanges,
)

log = structlog.get_logger(__name__)

_OWNER = "checkpoint"
_VERSION = 1
_TABLES = (
    "checkpoint_meta",
    "checkpoint_blocks",
    "checkpoint_markets",
    "checkpoint_feeds",
    "checkpoint_prices",
    "checkpoint_accounts",
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoint_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS checkpoint_blocks (
        number INTEGER PRIMARY KEY, hash TEXT NOT NULL, timestamp INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS checkpoint_markets (
        manager TEXT PRIMARY KEY, underlying TEXT NOT NULL, pool TEXT NOT NULL,
        oracle TEXT NOT NULL, fees TEXT NOT NULL, thresholds TEXT NOT NULL,
        interest_rate TEXT, paused INTEGER NOT NULL, emergency_liquidators TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS checkpoint_feeds (
        oracle TEXT NOT NULL, token TEXT NOT NULL, feed TEXT NOT NULL,
        token_decimals TEXT NOT NULL, feed_decimals TEXT NOT NULL,
        staleness_period TEXT NOT NULL, PRIMARY KEY (oracle, token)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS checkpoint_prices (
        oracle TEXT NOT NULL, token TEXT NOT NULL, answer TEXT NOT NULL,
        feed_decimals TEXT NOT NULL, token_decimals TEXT NOT NULL, updated_at TEXT NOT NULL,
        staleness_period TEXT NOT NULL, PRIMARY KEY (oracle, token)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS checkpoint_accounts (
        manager TEXT NOT NULL, account TEXT NOT NULL, owner TEXT NOT NULL,
        principal TEXT NOT NULL, cumulative_index TEXT NOT NULL,
        accrued_interest TEXT NOT NULL, accrued_fees TEXT NOT NULL, balances TEXT NOT NULL,
        PRIMARY KEY (manager, account)) WITHOUT ROWID""",
)
_INSERT_ACCOUNT = "INSERT OR REPLACE INTO checkpoint_accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The state as of block `block_number`, and the hashes of the blocks processed before it
    (ascending, ending with this block), to find where a reorg forked."""

    state: ProtocolState
    block_number: int
    block_hash: str
    block_timestamp: int
    recent_blocks: list[tuple[int, str]]


@dataclass(frozen=True, slots=True)
class _Identity:
    """What a checkpoint is a checkpoint of; any difference makes it another keeper's state."""

    chain_id: int
    genesis_hash: str
    managers: tuple[str, ...]
    deploy_block: int

    @classmethod
    def of(
        cls, chain_id: int, genesis_hash: str, managers: Iterable[str], deploy_block: int
    ) -> _Identity:
        return cls(
            chain_id, genesis_hash.lower(), tuple(sorted(m.lower() for m in managers)), deploy_block
        )

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("chain_id", str(self.chain_id)),
            ("genesis_hash", self.genesis_hash),
            ("managers", json.dumps(self.managers)),
            ("deploy_block", str(self.deploy_block)),
        ]

    def difference(self, stored: _Identity) -> str | None:
        """Why a checkpoint of `stored` is not one of this; None when it is."""
        if stored.chain_id != self.chain_id:
            return "other chain"
        if stored.genesis_hash != self.genesis_hash:
            return "new genesis"
        if stored.managers != self.managers:
            return "other credit managers"
        if stored.deploy_block != self.deploy_block:
            return "other deploy block"
        return None


class CheckpointStore:
    """The checkpoint tables of `db`; keeps the hashes of the last `keep_blocks` blocks."""

    def __init__(self, db: Database, *, keep_blocks: int = 128) -> None:
        if keep_blocks < 1:
            raise ValueError(f"keep_blocks must be at least 1, not {keep_blocks}")
        self._db = db
        self._keep_blocks = keep_blocks
        db.ensure_schema(_OWNER, _VERSION, _SCHEMA)

    def set_identity(
        self, chain_id: int, genesis_hash: str, managers: Iterable[str], deploy_block: int
    ) -> None:
        """Names what the next saves are a checkpoint of; rows of another identity are
        cleared. Required before the first `save`."""
        identity = _Identity.of(chain_id, genesis_hash, managers, deploy_block)
        with self._db.transaction() as connection:
            stored = _stored_identity(connection)
            if stored == identity:
                return
            _clear(connection)
            connection.executemany("INSERT INTO checkpoint_meta VALUES (?, ?)", identity.rows())

    def load(
        self, *, chain_id: int, genesis_hash: str, managers: Iterable[str], deploy_block: int
    ) -> Checkpoint | None:
        """The saved checkpoint, or None when there is none or it is not one of this identity
        (then it is cleared, and `checkpoint.discarded` says why)."""
        identity = _Identity.of(chain_id, genesis_hash, managers, deploy_block)
        connection = self._db.connection
        try:
            stored = _stored_identity(connection)
        except (ValueError, TypeError) as error:
            self._discard(f"unreadable identity ({error})")
            return None
        if stored is None:
            return None
        reason = identity.difference(stored)
        if reason is not None:
            self._discard(reason, stored=stored, expected=identity)
            return None
        blocks = connection.execute(
            "SELECT number, hash, timestamp FROM checkpoint_blocks ORDER BY number"
        ).fetchall()
        if not blocks:
            return None
        number, block_hash, timestamp = blocks[-1]
        try:
            state = _read_state(connection, number)
        except (ValueError, TypeError, KeyError) as error:
            self._discard(f"unreadable rows ({error})")
            return None
        if tuple(sorted(m.lower() for m in state.markets)) != identity.managers:
            self._discard("markets missing", saved=sorted(state.markets))
            return None
        return Checkpoint(state, number, block_hash, timestamp, [(n, h) for n, h, _ in blocks])

    def save(
        self,
        state: ProtocolState,
        *,
        block_number: int,
        block_hash: str,
        block_timestamp: int,
        changes: StateChanges | None,
        rolled_back_to: int | None = None,
    ) -> None:
        """Saves `state` as of `block_number` in one transaction. With `changes` (everything
        changed since the last save, merged), only those accounts are written; None rewrites
        every account. After a rollback, pass the block rolled back to: the blocks saved above
        it were on the abandoned branch."""
        with self._db.transaction() as connection:
            if _stored_identity(connection) is None:
                raise RuntimeError("CheckpointStore.set_identity must be called before save")
            _write_settings(connection, state)
            if changes is None:
                connection.execute("DELETE FROM checkpoint_accounts")
                connection.executemany(
                    _INSERT_ACCOUNT,
                    (
                        _account_row(market.manager, account)
                        for market in state.markets.values()
                        for account in market.accounts.values()
                    ),
                )
            else:
                _write_accounts(connection, state, changes.accounts | changes.removed)
            above = block_number if rolled_back_to is None else min(rolled_back_to, block_number)
            connection.execute("DELETE FROM checkpoint_blocks WHERE number > ?", (above,))
            connection.execute(
                "INSERT OR REPLACE INTO checkpoint_blocks VALUES (?, ?, ?)",
                (block_number, block_hash, block_timestamp),
            )
            connection.execute(
                "DELETE FROM checkpoint_blocks WHERE number <= ?",
                (block_number - self._keep_blocks,),
            )

    def clear(self) -> None:
        """Drops every checkpoint row, identity included (the keeper re-reads history)."""
        with self._db.transaction() as connection:
            _clear(connection)

    def _discard(self, reason: str, **detail: Any) -> None:
        log.warning(
            "checkpoint.discarded",
            reason=reason,
            detail="the state is re-read from the logs",
            **{key: str(value) for key, value in detail.items()},
        )
        self.clear()


def _clear(connection: sqlite3.Connection) -> None:
    for table in _TABLES:
        connection.execute(f"DELETE FROM {table}")


def _stored_identity(connection: sqlite3.Connection) -> _Identity | None:
    meta = dict(connection.execute("SELECT key, value FROM checkpoint_meta").fetchall())
    if not meta:
        return None
    return _Identity(
        int(meta["chain_id"]),
        meta["genesis_hash"],
        tuple(json.loads(meta["managers"])),
        int(meta["deploy_block"]),
    )


# ---------------------------------------------------------------- writing


def _write_settings(connection: sqlite3.Connection, state: ProtocolState) -> None:
    """Markets, feeds and prices: a few rows each, rewritten whole."""
    connection.execute("DELETE FROM checkpoint_markets")
    connection.executemany(
        "INSERT INTO checkpoint_markets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (_market_row(market) for market in state.markets.values()),
    )
    connection.execute("DELETE FROM checkpoint_feeds")
    connection.executemany(
        "INSERT INTO checkpoint_feeds VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                oracle,
                token,
                config.feed,
                str(config.token_decimals),
                str(config.feed_decimals),
                str(config.staleness_period),
            )
            for (oracle, token), config in state.feed_configs.items()
        ),
    )
    connection.execute("DELETE FROM checkpoint_prices")
    connection.executemany(
        "INSERT INTO checkpoint_prices VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                oracle,
                token,
                str(price.answer),
                str(price.feed_decimals),
                str(price.token_decimals),
                str(price.updated_at),
                str(price.staleness_period),
            )
            for oracle, by_token in state.prices.items()
            for token, price in by_token.items()
        ),
    )


def _write_accounts(
    connection: sqlite3.Connection, state: ProtocolState, keys: Iterable[AccountKey]
) -> None:
    """Each account of `keys` as it now is: written if open, deleted if not."""
    written, deleted = [], []
    for manager, address in keys:
        account = state.markets[manager].accounts.get(address)
        if account is None:
            deleted.append((manager, address))
        else:
            written.append(_account_row(manager, account))
    connection.executemany(
        "DELETE FROM checkpoint_accounts WHERE manager = ? AND account = ?", deleted
    )
    connection.executemany(_INSERT_ACCOUNT, written)


def _market_row(market: MarketState) -> tuple[str, str, str, str, str, str, str | None, int, str]:
    rate = market.interest_rate
    return (
        market.manager,
        market.underlying,
        market.pool,
        market.oracle,
        _ints(
            [
                market.fees.fee_interest_bps,
                market.fees.liquidation_fee_bps,
                market.fees.liquidation_premium_bps,
            ]
        ),
        _int_map(market.liquidation_thresholds_bps),
        None
        if rate is None
        else _ints(
            [rate.cumulative_index_ray, rate.last_update_timestamp, rate.rate_per_second_ray]
        ),
        int(market.paused),
        json.dumps(sorted(market.emergency_liquidators)),
    )


def _account_row(
    manager: str, account: CreditAccountState
) -> tuple[str, str, str, str, str, str, str, str]:
    return (
        manager,
        account.address,
        account.owner,
        str(account.principal),
        str(account.cumulative_index_ray),
        str(account.accrued_interest),
        str(account.accrued_fees),
        _int_map(account.balances),
    )


def _ints(values: Sequence[int]) -> str:
    return json.dumps([str(value) for value in values])


def _int_map(values: Mapping[str, int]) -> str:
    return json.dumps({key: str(value) for key, value in values.items()})


# ---------------------------------------------------------------- reading


def _read_state(connection: sqlite3.Connection, block_number: int) -> ProtocolState:
    markets: dict[str, MarketState] = {}
    for row in connection.execute("SELECT * FROM checkpoint_markets"):
        manager, underlying, pool, oracle, fees, thresholds, rate, paused, emergency = row
        markets[manager] = MarketState(
            manager,
            underlying,
            pool,
            oracle,
            Fees(*_parse_ints(fees, 3)),
            _parse_int_map(thresholds),
            None if rate is None else InterestRate(*_parse_ints(rate, 3)),
            bool(paused),
            set(json.loads(emergency)),
        )
    # Each row brings its own copy of its owner and of every token it holds: interned, the
    # accounts share one string per address (~90 B per account and token saved at 100,000).
    for row in connection.execute("SELECT * FROM checkpoint_accounts"):
        manager, address, owner, principal, index, interest, fees, balances = row
        markets[manager].accounts[address] = CreditAccountState(
            address,
            sys.intern(owner),
            int(principal),
            int(index),
            int(interest),
            int(fees),
            {sys.intern(token): int(amount) for token, amount in json.loads(balances).items()},
        )
    feed_configs: dict[PriceKey, FeedConfig] = {}
    for oracle, token, feed, token_decimals, feed_decimals, staleness in connection.execute(
        "SELECT * FROM checkpoint_feeds"
    ):
        feed_configs[(oracle, token)] = FeedConfig(
            feed, int(token_decimals), int(feed_decimals), int(staleness)
        )
    prices: dict[str, dict[str, TokenPrice]] = {}
    for oracle, token, *numbers in connection.execute("SELECT * FROM checkpoint_prices"):
        prices.setdefault(oracle, {})[token] = TokenPrice(*(int(n) for n in numbers))
    return ProtocolState.restored(markets.values(), feed_configs, prices, block_number=block_number)


def _parse_ints(text: str, count: int) -> list[int]:
    values = [int(value) for value in json.loads(text)]
    if len(values) != count:
        raise ValueError(f"expected {count} integers, found {len(values)}")
    return values


def _parse_int_map(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in json.loads(text).items()}
