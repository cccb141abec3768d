"""The docker-compose wiring, replayed as processes (CI has no Docker engine): the devnet writes
a keeper config and key file for another container, and a keeper started the way the image
starts it (config from that file, [ops] overridden by the image's ASGARD_KEEPER_OPS_* variables)
becomes ready; the devnet removes both files when it stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from keeper.devnet.anvil import free_port
from tests.keeper.helpers import wait_until
from tests.ops.scrape import reachable

pytestmark = pytest.mark.chain

KEEPER = [sys.executable, "-m", "keeper"]


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def test_a_keeper_in_another_container_runs_from_the_config_the_devnet_writes(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config = shared / "keeper.toml"
    rpc_port = free_port()
    devnet_log = tmp_path / "devnet.log"
    with devnet_log.open("wb") as log:
        devnet = subprocess.Popen(
            [
                *KEEPER, "devnet", "--host", "0.0.0.0", "--port", str(rpc_port),
                "--accounts", "3", "--manifest", str(tmp_path / "manifest.json"),
                "--keeper-config", str(config),
                "--advertise-url", f"http://localhost:{rpc_port}",
            ],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    keeper: subprocess.Popen[bytes] | None = None
    try:
        wait_until(
            lambda: config.exists() or devnet.poll() is not None,
            what="the devnet to write the keeper's config",
        )
        assert devnet.poll() is None, devnet_log.read_text()
        settings = tomllib.loads(config.read_text())
        assert settings["chain"]["rpc_url"] == f"http://localhost:{rpc_port}"
        assert settings["chain"]["ws_url"] == f"ws://localhost:{rpc_port}"
        assert settings["signer"] == {"private_key_file": "keeper.key"}
        assert settings["ops"]["metrics_host"] == "0.0.0.0"
        key_file = shared / "keeper.key"
        assert re.fullmatch(r"0x[0-9a-f]{64}\n", key_file.read_text())
        assert key_file.stat().st_mode & 0o077 == 0, "the key file is private to its owner"

        metrics_port = free_port()
        keeper_log = tmp_path / "keeper.log"
        with keeper_log.open("wb") as log:
            keeper = subprocess.Popen(
                [*KEEPER, "run", "--config", str(config), "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env={
                    **os.environ,
                    "ASGARD_KEEPER_OPS_METRICS_HOST": "0.0.0.0",
                    "ASGARD_KEEPER_OPS_METRICS_PORT": str(metrics_port),
                },
            )
        running = keeper

        def ready() -> bool:
            assert running.poll() is None, keeper_log.read_text()
            response = reachable(f"http://127.0.0.1:{metrics_port}/readyz")
            return response is not None and response.status == 200

        wait_until(ready, what="the keeper to become ready")
        assert stop(keeper) == 0
        keeper = None
    finally:
        if keeper is not None:
            stop(keeper)
        assert stop(devnet, signal.SIGINT) == 0, devnet_log.read_text()
    assert not config.exists()
    assert not (shared / "keeper.key").exists()
