"""The SQLite file: durable settings, one keeper per file, clear errors for unusable paths."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeper.state.database import Database, DatabaseError, DatabaseLockedError, lock_path

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keeper.sqlite"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database.open(db_path)
    yield database
    database.close()


def python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_wal_and_full_sync_are_on(db: Database, db_path: Path) -> None:
    assert db.connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert db.connection.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert db_path.is_file()


def test_a_committed_transaction_is_there_after_reopening(db_path: Path) -> None:
    with Database.open(db_path) as db, db.transaction() as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.execute("INSERT INTO t VALUES (?)", (str(2**256 - 1),))
    with Database.open(db_path) as db:
        assert db.connection.execute("SELECT x FROM t").fetchall() == [(str(2**256 - 1),)]


def test_a_failing_transaction_is_rolled_back(db: Database) -> None:
    with db.transaction() as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")

    def insert_then_fail() -> None:
        with db.transaction() as connection:
            connection.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        insert_then_fail()
    assert db.connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not db.connection.in_transaction


def test_transactions_do_not_nest(db: Database) -> None:
    with db.transaction(), pytest.raises(RuntimeError, match="do not nest"), db.transaction():
        pass


def test_a_second_open_in_the_same_process_is_refused(db: Database, db_path: Path) -> None:
    """flock belongs to the open file description, so a second `open` conflicts with the first
    even in one process: two components cannot share a file by opening it twice either."""
    with pytest.raises(DatabaseLockedError) as raised:
        Database.open(db_path)
    message = str(raised.value)
    assert str(db_path) in message
    assert "another keeper" in message
    assert f"pid {os.getpid()}" in message
    db.close()
    Database.open(db_path).close()  # released by close


def test_another_process_is_refused_while_this_one_holds_the_file(
    db: Database, db_path: Path
) -> None:
    child = python(
        "from pathlib import Path\n"
        "from keeper.state.database import Database, DatabaseLockedError\n"
        f"try: Database.open(Path({str(db_path)!r}))\n"
        "except DatabaseLockedError as e: print('refused:', e)\n"
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.startswith("refused:")
    assert str(db_path) in out
    assert f"pid {os.getpid()}" in out


def test_a_killed_keeper_releases_the_file(db_path: Path) -> None:
    child = python(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from keeper.state.database import Database\n"
        f"Database.open(Path({str(db_path)!r}))\n"
        "print('open', flush=True)\n"
        "time.sleep(60)\n"
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(DatabaseLockedError, match=f"pid {child.pid}"):
            Database.open(db_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    Database.open(db_path).close()
    assert lock_path(db_path).exists()


def test_a_missing_directory_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "keeper.sqlite"
    with pytest.raises(DatabaseError, match="does not exist; create it") as raised:
        Database.open(path)
    assert str(path) in str(raised.value)
    assert not path.parent.exists()


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="is a directory"):
        Database.open(tmp_path)


def test_a_file_that_is_not_sqlite_is_refused_and_released(db_path: Path) -> None:
    db_path.write_bytes(b"not a database at all, just some text\n" * 200)
    with pytest.raises(DatabaseError) as raised:
        Database.open(db_path)
    message = str(raised.value)
    assert str(db_path) in message
    assert "move the file away" in message
    assert not isinstance(raised.value, sqlite3.Error)
    # The lock was released: a retry fails on the file, not on the lock.
    with pytest.raises(DatabaseError) as again:
        Database.open(db_path)
    assert not isinstance(again.value, DatabaseLockedError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(DatabaseError, match="writable"):
            Database.open(directory / "keeper.sqlite")
    finally:
        directory.chmod(0o700)


def test_a_file_from_a_newer_keeper_is_refused(db_path: Path) -> None:
    with Database.open(db_path) as db:
        db.connection.execute("PRAGMA user_version = 99")
    with pytest.raises(DatabaseError, match="newer keeper") as raised:
        Database.open(db_path)
    assert str(db_path) in str(raised.value)


def test_each_owner_keeps_its_schema_version(db_path: Path) -> None:
    tables = ["CREATE TABLE IF NOT EXISTS things (x TEXT)"]
    with Database.open(db_path) as db:
        db.ensure_schema("things", 2, tables)
        db.ensure_schema("things", 2, tables)  # idempotent
        db.ensure_schema("others", 1, ["CREATE TABLE IF NOT EXISTS others (y TEXT)"])
    with Database.open(db_path) as db:
        with pytest.raises(DatabaseError, match="newer keeper: upgrade"):
            db.ensure_schema("things", 1, tables)
        with pytest.raises(DatabaseError, match="move the file away"):
            db.ensure_schema("things", 3, tables)
        assert not db.connection.in_transaction
        rows = db.connection.execute("SELECT owner, version FROM schema ORDER BY owner")
        assert rows.fetchall() == [("others", 1), ("things", 2)]


def test_close_twice_is_harmless(db_path: Path) -> None:
    db = Database.open(db_path)
    db.close()
    db.close()
