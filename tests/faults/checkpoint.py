"""A keeper process's state, read back from its checkpoint: what (d) of the criteria compares with
the views when the keeper is a child process rather than a task of the test."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from keeper.devnet.network import Devnet
from keeper.state.checkpoint import CheckpointStore
from keeper.state.database import Database
from tests.faults.criteria import KeeperSnapshot


def checkpointed_block(path: Path) -> int:
    """The last block a running keeper checkpointed (read-only: WAL lets a reader beside the
    writer, and the keeper's lock is not needed to read); -1 before its first checkpoint."""
    if not path.exists():
        return -1
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        try:
            row = connection.execute("SELECT MAX(number) FROM checkpoint_blocks").fetchone()
        except sqlite3.OperationalError:  # the tables are not created yet
            return -1
    return -1 if row is None or row[0] is None else int(row[0])


def checkpoint_snapshot(path: Path, net: Devnet) -> KeeperSnapshot:
    """The state a stopped keeper left in its database at `path`, and its block."""
    deployment = net.deployment
    managers = [deployment.address(f"CreditManager.{market}") for market in deployment.markets]
    genesis = net.w3.eth.get_block(0)["hash"].to_0x_hex()
    with Database.open(path) as database:
        checkpoint = CheckpointStore(database).load(
            chain_id=deployment.chain_id,
            genesis_hash=genesis,
            managers=managers,
            deploy_block=deployment.deploy_block,
        )
    assert checkpoint is not None, f"no usable checkpoint in {path}"
    return KeeperSnapshot(checkpoint.state, checkpoint.block_number)
