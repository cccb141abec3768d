"""`keeper devnet --keeper` gives its keeper a database in the devnet's directory, so the local
run uses the checkpoint and the journal as production does, and removes it when it stops; one
left by a killed devnet is removed at start, one still in use refuses the start."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keeper.config import ConfigError
from keeper.devnet.commands import KEEPER_DATABASE, database_files, remove_stale_database
from keeper.state.database import Database, lock_path


def test_the_database_files_are_the_sqlite_files_and_the_lock(tmp_path: Path) -> None:
    path = tmp_path / KEEPER_DATABASE
    assert database_files(path) == [
        path,
        tmp_path / "keeper.sqlite-wal",
        tmp_path / "keeper.sqlite-shm",
        lock_path(path),
    ]


def test_a_database_left_by_a_killed_keeper_is_removed(tmp_path: Path) -> None:
    path = tmp_path / KEEPER_DATABASE
    Database.open(path).close()
    for leftover in database_files(path)[1:3]:
        leftover.write_bytes(b"left over")
    assert path.exists()
    assert lock_path(path).exists()
    remove_stale_database(path)
    assert not [p for p in database_files(path) if p.exists()]
    remove_stale_database(path)  # nothing there: nothing to do


def test_an_unreadable_leftover_is_removed_too(tmp_path: Path) -> None:
    path = tmp_path / KEEPER_DATABASE
    path.write_bytes(b"not a database" * 100)
    remove_stale_database(path)
    assert not [p for p in database_files(path) if p.exists()]


def test_a_database_in_use_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / KEEPER_DATABASE
    with Database.open(path):
        with pytest.raises(ConfigError, match=rf"in use by another keeper \(pid {os.getpid()}\)"):
            remove_stale_database(path)
        assert path.exists()
        assert lock_path(path).exists()


@pytest.mark.chain
def test_the_devnet_keeper_keeps_its_database_beside_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    database = tmp_path / KEEPER_DATABASE
    log = tmp_path / "devnet.log"
    with log.open("w") as output:
        devnet = subprocess.Popen(
            [sys.executable, "-m", "keeper", "devnet", "--accounts", "2", "--keeper",
             "--manifest", str(manifest)],
            stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        keeper_pid = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert devnet.poll() is None, log.read_text()
            started = re.search(r"keeper: pid (\d+), config \S+, database (\S+)", log.read_text())
            if started and database.exists() and _checkpointed(database):
                keeper_pid = int(started.group(1))
                assert Path(started.group(2)) == database
                break
            time.sleep(0.5)
        assert keeper_pid is not None, f"no checkpoint in {database}:\n{log.read_text()}"
        assert lock_path(database).read_text() == str(keeper_pid)
    finally:
        if devnet.poll() is None:
            devnet.send_signal(signal.SIGINT)
        try:
            code = devnet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            devnet.kill()
            code = devnet.wait()
    assert code == 0, log.read_text()
    assert "keeper exited with 0" in log.read_text()
    assert not [p for p in database_files(database) if p.exists()]
    assert not manifest.exists()


def _checkpointed(database: Path) -> bool:
    """Whether the keeper has saved a checkpoint holding accounts (read beside the keeper,
    without taking its lock)."""
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return False
    try:
        (blocks,) = connection.execute("SELECT count(*) FROM checkpoint_blocks").fetchone()
        (accounts,) = connection.execute("SELECT count(*) FROM checkpoint_accounts").fetchone()
    except sqlite3.Error:
        return False
    finally:
        connection.close()
    return int(blocks) > 0 and int(accounts) > 0
