"""Each keeper test brings up its own devnet and keepers, and stops all of them when it ends.

A running keeper follows the chain forward, so it cannot share the session devnet, whose tests
snapshot and revert it under the keeper's feet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from keeper.devnet.anvil import DevKey
from keeper.devnet.network import Devnet, running_devnet
from tests.keeper.helpers import KeeperRun, keeper_config


class Harness:
    """Starts devnets and keeper processes for one test; `close()` stops them, keepers first
    (by their pids), then anvil with its temp dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._stack = ExitStack()

    def devnet(self, *, accounts: int = 0, seed: int = 1, block_time: int | None = None) -> Devnet:
        """anvil on a free port + the protocol + `accounts` seeded accounts; with `block_time`,
        anvil then mines a block every that many seconds."""
        return self._stack.enter_context(
            running_devnet(accounts=accounts, seed=seed, block_time=block_time)
        )

    def write_config(
        self,
        net: Devnet,
        name: str = "keeper",
        *,
        inclusion_timeout_s: float = 6.0,
        use_websocket: bool = True,
    ) -> Path:
        """The keeper's TOML for `net`, as `keeper devnet --keeper` writes it."""
        path = self.tmp_path / f"{name}.toml"
        path.write_text(
            keeper_config(net, inclusion_timeout_s=inclusion_timeout_s, use_websocket=use_websocket)
        )
        return path

    def start_keeper(
        self,
        net: Devnet,
        key: DevKey,
        name: str = "keeper",
        *,
        inclusion_timeout_s: float = 6.0,
        use_websocket: bool = True,
    ) -> KeeperRun:
        """`keeper run --config <tmp>/<name>.toml` with `key`, logging to <tmp>/<name>.log; HTTP
        polling for heads instead of WebSocket newHeads with `use_websocket=False`."""
        config = self.write_config(
            net, name, inclusion_timeout_s=inclusion_timeout_s, use_websocket=use_websocket
        )
        run = KeeperRun(name, config, key, self.tmp_path / f"{name}.log")
        self._stack.callback(run.stop)
        return run

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()
