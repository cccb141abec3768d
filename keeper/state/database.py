"""The keeper's one SQLite file: the state checkpoint and the transaction journal live in it.

Committed means durable: the file is in WAL mode with `synchronous=FULL`, so a commit is on disk
before it returns and survives SIGKILL and power loss. Two keepers sharing one file would each
believe they own its records (and its nonces), so opening takes an exclusive lock on a sibling
`<name>.lock` file, held until `close` or the process ends.

Each module that stores something creates its own tables through `ensure_schema`, which also
records the module's format version: a file written by a newer keeper is refused rather than
misread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

# The layout of the `schema` table itself; `PRAGMA user_version` holds it.
_FILE_FORMAT = 1
_BUSY_TIMEOUT_MS = 5_000


class DatabaseError(Exception):
    """The database file cannot be used; the message names the file and what to do."""


class DatabaseLockedError(DatabaseError):
    """Another keeper process has the database open."""


class Database:
    """An open database file and the lock that makes this process its only user.

    `connection` is in autocommit mode: write through `transaction()`. It may be used from
    another thread (e.g. a large save in `asyncio.to_thread`), but never from two at once.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self.connection = connection
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: Path) -> Database:
        """Opens (creating if needed) the database at `path`; raises `DatabaseError`."""
        path = Path(path)
        if not path.parent.is_dir():
            raise DatabaseError(
                f"database {path}: directory {path.parent} does not exist; create it or point "
                "storage.database_path into an existing directory"
            )
        if path.is_dir():
            raise DatabaseError(
                f"database {path} is a directory; point storage.database_path at a file in it"
            )
        lock_fd = _lock(path)
        try:
            connection = _connect(path)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, connection, lock_fd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        Taken with BEGIN IMMEDIATE so it never fails half-way for want of the write lock.
        Transactions do not nest."""
        if self.connection.in_transaction:
            raise RuntimeError("a database transaction is already open; they do not nest")
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()

    def ensure_schema(self, owner: str, version: int, statements: Iterable[str]) -> None:
        """Creates `owner`'s tables (`CREATE ... IF NOT EXISTS` statements) and records their
        format `version`; a file holding another version of them is refused: there is no
        migration yet, and misreading a record is worse than stopping."""
        with self.transaction() as connection:
            row = connection.execute(
                "SELECT version FROM schema WHERE owner = ?", (owner,)
            ).fetchone()
            if row is not None and row[0] != version:
                newer = row[0] > version
                raise DatabaseError(
                    f"database {self.path}: its {owner} tables are in format {row[0]}, this "
                    f"keeper reads format {version}; "
                    + (
                        "it was written by a newer keeper: upgrade this one"
                        if newer
                        else "move the file away (a new one is created) to start afresh"
                    )
                )
            for statement in statements:
                connection.execute(statement)
            connection.execute(
                "INSERT OR REPLACE INTO schema (owner, version) VALUES (?, ?)", (owner, version)
            )

    def close(self) -> None:
        """Closes the connection and releases the lock; closing twice is harmless."""
        if self._lock_fd is None:
            return
        try:
            self.connection.close()
        finally:
            os.close(self._lock_fd)  # closing the descriptor releases its flock
            self._lock_fd = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def lock_path(path: Path) -> Path:
    """The file whose lock marks `path` as in use."""
    return path.with_name(path.name + ".lock")


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on `<path>.lock`; the lock file holds the owner's pid.
    flock belongs to the open file description, so even a second open in this same process is
    refused."""
    lock_file = lock_path(path)
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise DatabaseError(
            f"database {path}: cannot create its lock file {lock_file} ({error.strerror}); "
            "make the directory writable by the keeper's user"
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise DatabaseLockedError(
            f"database {path} is in use by another keeper"
            + (f" (pid {holder})" if holder else "")
            + "; stop it, or give this keeper its own storage.database_path"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise DatabaseError(
            f"database {path} cannot be opened ({error}); check that the keeper's user may "
            "read and write it and its directory"
        ) from error
    try:
        _configure(connection, path)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise DatabaseError(
            f"database {path} is not a usable keeper database (SQLite: {error}); check that "
            "the keeper's user may write the file and its directory, or move the file away "
            "so a new one is created"
        ) from error
    except BaseException:
        connection.close()
        raise
    return connection


def _configure(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise DatabaseError(
            f"database {path}: SQLite cannot use WAL mode there (journal mode {mode}); put "
            "the file on a local filesystem"
        )
    connection.execute("PRAGMA synchronous = FULL")
    (file_format,) = connection.execute("PRAGMA user_version").fetchone()
    if file_format > _FILE_FORMAT:
        raise DatabaseError(
            f"database {path} is in format {file_format}, written by a newer keeper (this "
            f"one reads format {_FILE_FORMAT}); upgrade this keeper"
        )
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        connection.execute(f"PRAGMA user_version = {_FILE_FORMAT}")
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
