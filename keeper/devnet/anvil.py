"""An anvil process owned by whoever starts it: free port, private temp dir, stopped by id."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from eth_utils.address import to_checksum_address

_REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 15.0


class AnvilError(RuntimeError):
    """anvil is missing or did not come up."""


@dataclass(frozen=True, slots=True)
class DevKey:
    """A funded anvil account: the devnet's test keys, never a production secret."""

    address: str
    private_key: str


def find_anvil() -> str:
    """The anvil binary: $ASGARD_ANVIL, the repo's pinned npm copy, or one on PATH."""
    candidates = [
        os.environ.get("ASGARD_ANVIL", ""),
        str(_REPO_ROOT / "node_modules" / ".bin" / "anvil"),
        shutil.which("anvil") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AnvilError(
        "anvil not found: run 'make setup' (installs the pinned npm package "
        "@foundry-rs/anvil-linux-amd64) or set ASGARD_ANVIL to an anvil binary"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class AnvilNode:
    """Starts anvil on loopback; `stop()` (or leaving the `with` block) ends it and its files.

    History goes to a cache path inside the node's own temp dir, so nothing accumulates in
    ~/.foundry across runs. With `dump_state` anvil writes its state there when stopped, and
    `restart()` brings it back from it on the same port; `load_state` starts from such a file.
    """

    def __init__(
        self,
        *,
        accounts: int = 12,
        block_time: float | None = None,
        chain_id: int = 31337,
        port: int | None = None,
        gas_limit: int | None = None,
        host: str = "127.0.0.1",
        dump_state: Path | None = None,
        load_state: Path | None = None,
        kept_states: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.port = port or free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix="asgard-anvil-"))
        args = [
            find_anvil(),
            "--host", host,
            "--port", str(self.port),
            "--chain-id", str(chain_id),
            "--accounts", str(accounts),
            "--balance", "1000000",
            "--cache-path", str(self._workdir / "cache"),
            "--config-out", str(self._workdir / "anvil.json"),
        ]  # fmt: skip
        if block_time is not None:
            args += ["--block-time", str(block_time)]
        if gas_limit is not None:
            args += ["--gas-limit", str(gas_limit)]
        if kept_states is not None:
            # Only the latest states, in memory: views at older blocks stop answering, but a
            # devnet of 100,000 accounts no longer holds a full copy of its state per block.
            args += ["--prune-history", str(kept_states)]
        if dump_state is not None:
            # Historical states too, so views at blocks before a restart still answer after it.
            args += ["--dump-state", str(dump_state), "--preserve-historical-states"]
        self._args = args
        self._dump_state = dump_state
        self._launch(load_state)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        """Where this node keeps its cache, config and log; removed by `stop()`."""
        return self._workdir

    @property
    def pid(self) -> int:
        return self._process.pid

    def keys(self) -> list[DevKey]:
        """The funded accounts anvil generated, in order."""
        config = json.loads((self._workdir / "anvil.json").read_text())
        return [
            DevKey(to_checksum_address(address), key)
            for address, key in zip(
                config["available_accounts"], config["private_keys"], strict=True
            )
        ]

    def is_running(self) -> bool:
        return self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        path = self._workdir / "anvil.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ends the process this node started (SIGTERM, then SIGKILL) and removes its files."""
        self._terminate()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stops anvil with SIGTERM, which makes it write its state to `dump_state`, and starts
        it again on the same port from that state: the same blocks, accounts, contracts and
        historical states, as a node operator's restart keeps its database. Mining set over RPC
        (`evm_setIntervalMining`) is not part of the state: whoever set it sets it again."""
        if self._dump_state is None:
            raise AnvilError("restart needs dump_state: without it anvil would start a new chain")
        self._dump_state.unlink(missing_ok=True)
        self._terminate()
        if not self._dump_state.exists():
            raise AnvilError(f"anvil wrote no state to {self._dump_state}:\n{self.log_tail()}")
        self._launch(self._dump_state)

    def _launch(self, load_state: Path | None) -> None:
        args = list(self._args)
        if load_state is not None:
            args += ["--load-state", str(load_state)]
        self._log = (self._workdir / "anvil.log").open("ab")
        self._process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _terminate(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self) -> AnvilNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AnvilError(
                    f"anvil exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            request = urllib.request.Request(
                self.rpc_url, body.encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200 and (self._workdir / "anvil.json").exists():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        raise AnvilError(f"anvil did not answer on port {self.port} within {_START_TIMEOUT_S}s")
