"""A keeper configuration for a running devnet, and the keeper as a child process.

The devnet runs the real daemon (`keeper run --config …`) exactly as an operator would, in its own
process; the key travels by environment variable (or, for a keeper in another container, in a
file beside the config), never inside the config file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from keeper.devnet.anvil import DevKey
from keeper.devnet.manifest import Manifest

KEY_ENV = "ASGARD_KEEPER_KEY"


def keeper_config_toml(
    manifest: Manifest,
    *,
    key_env: str = KEY_ENV,
    use_websocket: bool = True,
    poll_interval_s: float = 0.25,
    inclusion_timeout_s: float = 6.0,
    emergency: bool = False,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
    rpc_url: str | None = None,
    ws_url: str | None = None,
    backup_rpc_urls: tuple[str, ...] = (),
    key_file: str | None = None,
    database_path: str | None = None,
    batch_liquidator: bool = True,
) -> str:
    """The TOML a keeper needs to watch every market of the devnet in `manifest`; the metrics
    and health endpoint listens on `metrics_host:metrics_port` (port 0: not served).

    `rpc_url` is where the keeper reaches the node when that differs from the manifest's (another
    container); the WebSocket URL is the same address. With `key_file` the signer's key is read
    from that file (relative to the config) instead of the environment variable `key_env`.
    `ws_url` overrides the WebSocket URL alone and `backup_rpc_urls` adds failover endpoints (a
    test puts fault-injecting proxies there). With `database_path` (relative to the config) the
    keeper keeps its checkpoint and transaction journal there. With `batch_liquidator` (and a
    devnet that has one) the keeper liquidates through the devnet's BatchLiquidator, many
    accounts per transaction; without, one transaction per account."""
    deployment = manifest.deployment
    managers = ", ".join(
        f'"{deployment.address(f"CreditManager.{m}")}"' for m in deployment.markets
    )
    http_url = rpc_url or manifest.rpc_url
    if ws_url is None:
        ws_url = manifest.ws_url if rpc_url is None else "ws" + rpc_url.removeprefix("http")
    ws_line = f'ws_url = "{ws_url}"\n' if use_websocket else ""
    backups = ", ".join(f'"{url}"' for url in backup_rpc_urls)
    backup_line = f"backup_rpc_urls = [{backups}]\n" if backup_rpc_urls else ""
    storage = "" if database_path is None else f'\n[storage]\ndatabase_path = "{database_path}"\n'
    batch_line = (
        f'batch_liquidator = "{deployment.contracts["BatchLiquidator"]}"\n'
        if batch_liquidator and "BatchLiquidator" in deployment.contracts
        else ""
    )
    signer_line = (
        f'private_key_env = "{key_env}"' if key_file is None else f'private_key_file = "{key_file}"'
    )
    return (
        "# Generated for a local devnet by `keeper devnet`; see config/ for documented examples.\n"
        "[chain]\n"
        f"chain_id = {deployment.chain_id}\n"
        f'rpc_url = "{http_url}"\n'
        f"{ws_line}"
        f"{backup_line}"
        f"poll_interval_s = {poll_interval_s}\n"
        "\n[protocol]\n"
        f"credit_managers = [{managers}]\n"
        f"deploy_block = {deployment.deploy_block}\n"
        "\n[signer]\n"
        f"{signer_line}\n"
        "\n[liquidation]\n"
        f'native_token = "{deployment.address("WETH")}"\n'
        'min_profit_usd = "1"\n'
        f"emergency = {'true' if emergency else 'false'}\n"
        f"inclusion_timeout_s = {inclusion_timeout_s}\n"
        f"{batch_line}"
        "\n[ops]\n"
        f'metrics_host = "{metrics_host}"\n'
        f"metrics_port = {metrics_port}\n"
        f"{storage}"
    )


class KeeperProcess:
    """`keeper run` as a child process with its key in the environment; stopped by its pid."""

    def __init__(
        self,
        config_path: Path,
        key: DevKey,
        *,
        key_env: str = KEY_ENV,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        env = {**os.environ, key_env: key.private_key}
        self._log = None if log_path is None else log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "keeper", "run", "--config", str(config_path), *extra_args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        return self._process.poll()

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
        return self._process.returncode
