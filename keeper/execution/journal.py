"""The record of every transaction the signer sent, written before it is sent.

A keeper killed between handing a transaction to the node and seeing its receipt must not forget
it: on the next start it might send the same liquidation again (a duplicate that reverts at the
keeper's expense) or leave a nonce gap. So each signed transaction is written here, with its hash,
nonce and fees, *before* `eth_sendRawTransaction`, and its end (mined, refused, replaced, lost) is
written when the dispatcher learns it. After a crash, or after a reorg that may have un-mined some
of them, the dispatcher reconciles these records with the chain before it sends anything new.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass

from keeper.execution.fees import Eip1559Fees
from keeper.state.database import Database

_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tx_journal (
        tx_hash TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        key TEXT NOT NULL,
        nonce INTEGER NOT NULL,
        to_address TEXT NOT NULL,
        data TEXT NOT NULL,
        gas_limit INTEGER NOT NULL,
        max_fee_per_gas TEXT NOT NULL,
        max_priority_fee_per_gas TEXT NOT NULL,
        cancel INTEGER NOT NULL,
        status TEXT NOT NULL,
        block_number INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS tx_journal_nonce ON tx_journal (sender, nonce)",
    "CREATE INDEX IF NOT EXISTS tx_journal_status ON tx_journal (status)",
)
_COLUMNS = (
    "tx_hash, key, nonce, to_address, data, gas_limit, max_fee_per_gas, "
    "max_priority_fee_per_gas, cancel, status, block_number"
)


class TxStatus(enum.StrEnum):
    """Where one signed transaction (one hash) stands."""

    PENDING = "pending"  # written before sending: it may be on the network
    REFUSED = "refused"  # the node rejected it: it is not on the network
    INCLUDED = "included"  # mined with status 1
    REVERTED = "reverted"  # mined with status 0
    CANCELLED = "cancelled"  # a zero-value self-transfer that spent the nonce, mined
    SUPERSEDED = "superseded"  # another hash of the same nonce was mined
    NONCE_TAKEN = "nonce_taken"  # a transaction not in the journal used the nonce
    DROPPED = "dropped"  # no node knows it and its nonce is free: it never happened


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One signed transaction as recorded."""

    tx_hash: str
    key: str
    nonce: int
    to: str
    data: str
    gas_limit: int
    fees: Eip1559Fees
    cancel: bool
    status: TxStatus
    block_number: int | None


class TxJournal:
    """`sender`'s rows of the `tx_journal` table; every write is committed at once. Rows of
    another sender (a rotated key) are kept and never reconciled by this one."""

    def __init__(self, database: Database, sender: str) -> None:
        self._database = database
        self._sender = sender
        database.ensure_schema("tx_journal", _SCHEMA_VERSION, _SCHEMA)

    def record_pending(
        self,
        tx_hash: str,
        *,
        key: str,
        nonce: int,
        to: str,
        data: str,
        gas_limit: int,
        fees: Eip1559Fees,
        cancel: bool,
    ) -> None:
        """Called before the transaction is sent: from here on a restart looks for it."""
        now = time.time()
        with self._database.transaction() as connection:
            connection.execute(
                "INSERT INTO tx_journal VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (tx_hash) DO UPDATE SET status = excluded.status, "
                "block_number = NULL, updated_at = excluded.updated_at",
                (
                    tx_hash,
                    self._sender,
                    key,
                    nonce,
                    to,
                    data,
                    gas_limit,
                    str(fees.max_fee_per_gas),
                    str(fees.max_priority_fee_per_gas),
                    int(cancel),
                    TxStatus.PENDING.value,
                    None,
                    now,
                    now,
                ),
            )

    def mark(self, tx_hash: str, status: TxStatus) -> None:
        with self._database.transaction() as connection:
            connection.execute(
                "UPDATE tx_journal SET status = ?, updated_at = ? WHERE tx_hash = ?",
                (status.value, time.time(), tx_hash),
            )

    def settle(self, nonce: int, tx_hash: str, status: TxStatus, block_number: int) -> None:
        """`tx_hash` was mined in `block_number`; every other hash of its nonce is superseded."""
        with self._database.transaction() as connection:
            now = time.time()
            connection.execute(
                "UPDATE tx_journal SET status = ?, block_number = NULL, updated_at = ? "
                "WHERE sender = ? AND nonce = ? AND tx_hash != ? AND status NOT IN (?, ?)",
                (
                    TxStatus.SUPERSEDED.value,
                    now,
                    self._sender,
                    nonce,
                    tx_hash,
                    TxStatus.REFUSED.value,
                    TxStatus.DROPPED.value,
                ),
            )
            connection.execute(
                "UPDATE tx_journal SET status = ?, block_number = ?, updated_at = ? "
                "WHERE tx_hash = ?",
                (status.value, block_number, now, tx_hash),
            )

    def close_nonce(self, hashes: Iterable[str], status: TxStatus) -> None:
        """Ends every one of `hashes` (one nonce's) that is not mined with `status`."""
        with self._database.transaction() as connection:
            now = time.time()
            for tx_hash in hashes:
                connection.execute(
                    "UPDATE tx_journal SET status = ?, block_number = NULL, updated_at = ? "
                    "WHERE tx_hash = ?",
                    (status.value, now, tx_hash),
                )

    def reopen(self, hashes: Iterable[str]) -> None:
        """Marks `hashes` pending again: a reorg took their block away and a node still has
        them."""
        self.close_nonce(hashes, TxStatus.PENDING)

    def unsettled(self) -> dict[int, list[JournalEntry]]:
        """Every nonce with a hash that may still be on the network, with all its hashes."""
        return self._groups(
            "SELECT DISTINCT nonce FROM tx_journal WHERE sender = ? AND status = ?",
            (self._sender, TxStatus.PENDING.value),
        )

    def mined_after(self, block_number: int) -> dict[int, list[JournalEntry]]:
        """Every nonce mined in a block after `block_number` (which a reorg may have undone),
        with all its hashes."""
        return self._groups(
            "SELECT DISTINCT nonce FROM tx_journal WHERE sender = ? AND block_number > ?",
            (self._sender, block_number),
        )

    def entries(self) -> list[JournalEntry]:
        """Every record, oldest first."""
        rows = self._database.connection.execute(
            f"SELECT {_COLUMNS} FROM tx_journal WHERE sender = ? ORDER BY nonce, created_at",
            (self._sender,),
        ).fetchall()
        return [_entry(row) for row in rows]

    def _groups(
        self, nonce_query: str, params: tuple[object, ...]
    ) -> dict[int, list[JournalEntry]]:
        connection = self._database.connection
        nonces = [row[0] for row in connection.execute(nonce_query, params)]
        groups: dict[int, list[JournalEntry]] = {}
        for nonce in sorted(nonces):
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM tx_journal WHERE sender = ? AND nonce = ? "
                "ORDER BY created_at",
                (self._sender, nonce),
            ).fetchall()
            groups[nonce] = [_entry(row) for row in rows]
        return groups


def _entry(row: tuple[object, ...]) -> JournalEntry:
    (
        tx_hash,
        key,
        nonce,
        to,
        data,
        gas_limit,
        max_fee,
        priority_fee,
        cancel,
        status,
        block_number,
    ) = row
    return JournalEntry(
        tx_hash=str(tx_hash),
        key=str(key),
        nonce=int(str(nonce)),
        to=str(to),
        data=str(data),
        gas_limit=int(str(gas_limit)),
        fees=Eip1559Fees(int(str(max_fee)), int(str(priority_fee))),
        cancel=bool(cancel),
        status=TxStatus(str(status)),
        block_number=None if block_number is None else int(str(block_number)),
    )
