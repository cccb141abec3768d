"""What the RPC failover scenarios (primary down, rate limited) share: a keeper process that
reaches the node only through fault proxies, how many requests of each method an endpoint
answered (read from the keeper's own metrics, since the proxies only count connections), and a
clean stop that leaves a checkpoint for the criteria to compare with the views."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keeper.chain.rpc import redact_url
from keeper.devnet.anvil import free_port
from keeper.devnet.network import Devnet
from tests.faults.checkpoint import checkpoint_snapshot, checkpointed_block
from tests.faults.criteria import KeeperSnapshot
from tests.faults.proxy import FaultProxy
from tests.keeper.helpers import (
    WAIT_S,
    Harness,
    KeeperRun,
    Liquidation,
    liquidations,
    pending_of,
    stop_mining,
    wait_for_log,
    wait_until,
)
from tests.ops.scrape import get, samples

DATABASE = "keeper.sqlite"
# A liquidation is on time when included at most this many blocks after it became due.
ON_TIME_BLOCKS = 3
# What the keeper still asks an endpoint it does not use: its head, in the periodic check.
PROBES = frozenset({"eth_blockNumber"})
# Failures that mean the endpoint did not answer; a JSON-RPC error (a reverting simulation) is
# an answer.
_NOT_ANSWERED = frozenset({"transport", "http", "rate_limited", "invalid_response"})


@dataclass(frozen=True, slots=True)
class ProxiedKeeper:
    """A `keeper run` process whose endpoints are proxies, with its metrics served."""

    run: KeeperRun
    metrics_url: str
    database: Path

    def answered(self, proxy: FaultProxy) -> Counter[str]:
        """Requests per method the endpoint behind `proxy` has answered so far."""
        endpoint = redact_url(proxy.http_url)
        answered: Counter[str] = Counter()
        for (name, labels), value in samples(get(self.metrics_url).body).items():
            label = dict(labels)
            if label.get("endpoint") != endpoint:
                continue
            if name == "keeper_rpc_requests_total":
                answered[label["method"]] += int(value)
            elif name == "keeper_rpc_errors_total" and label["kind"] in _NOT_ANSWERED:
                answered[label["method"]] -= int(value)
        return answered

    def assert_only_probed(self, proxy: FaultProxy, since: Counter[str]) -> None:
        """Since `since` (an earlier `answered`), the endpoint behind `proxy` has answered
        nothing but `PROBES`: no request of the keeper's work went to it."""
        now = self.answered(proxy)
        grew = {method for method, count in now.items() if count > since[method]}
        assert grew <= PROBES, f"{proxy.http_url} still served {sorted(grew - PROBES)}"


def start_polling_keeper(
    harness: Harness, net: Devnet, primary: FaultProxy, backups: Iterable[FaultProxy] = ()
) -> ProxiedKeeper:
    """The keeper with `primary` as rpc_url and `backups` as backup_rpc_urls, following heads by
    HTTP polling (no WebSocket: every head, log, simulation, send and receipt then depends on
    the failover under test), its checkpoint in `DATABASE`; returns once it follows the chain."""
    port = free_port()
    run = harness.start_keeper(
        net,
        net.roles.keeper,
        rpc_url=primary.http_url,
        backup_rpc_urls=tuple(backup.http_url for backup in backups),
        use_websocket=False,
        database_path=DATABASE,
        metrics_port=port,
    )
    wait_for_log(run, "keeper.following")
    return ProxiedKeeper(run, f"http://127.0.0.1:{port}/metrics", harness.tmp_path / DATABASE)


def wait_liquidated(
    keeper: KeeperRun,
    net: Devnet,
    accounts: Iterable[str],
    from_block: int,
    *,
    timeout_s: float = WAIT_S,
) -> list[Liquidation]:
    """Waits until each of `accounts` has a `CreditAccountLiquidated` since `from_block` (by
    anyone) and returns those liquidations."""
    wanted = set(accounts)

    def done() -> list[Liquidation] | None:
        found = [each for each in liquidations(net, from_block) if each.account in wanted]
        return found if {each.account for each in found} == wanted else None

    return wait_until(
        done, what=f"liquidation of {sorted(wanted)}", source=keeper, timeout_s=timeout_s
    )


def assert_on_time(found: Iterable[Liquidation], due_block: int) -> None:
    """Each liquidation was included within `ON_TIME_BLOCKS` of `due_block`."""
    late = {each.account: each.block for each in found if each.block - due_block > ON_TIME_BLOCKS}
    assert not late, f"due in block {due_block}, liquidated in blocks {late}"


def sleep_until(deadline: float) -> None:
    """Sleeps until `time.monotonic()` reaches `deadline` (at once if it has)."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def stop_and_snapshot(net: Devnet, keeper: ProxiedKeeper) -> KeeperSnapshot:
    """Once nothing of the keeper waits in the pool, stops the chain, waits for the keeper to
    checkpoint the last block, stops it with SIGTERM (it must exit 0) and returns the state its
    checkpoint holds."""
    w3, run = net.w3, keeper.run
    wait_until(
        lambda: not pending_of(w3, run.address),
        what="the keeper's transactions to be mined",
        source=run,
    )
    stop_mining(w3)
    end_block = w3.eth.block_number
    wait_until(
        lambda: checkpointed_block(keeper.database) == end_block,
        what=f"the keeper to process block {end_block}",
        source=run,
    )
    assert run.stop() == 0, f"the keeper did not stop cleanly:\n{run.tail()}"
    return checkpoint_snapshot(keeper.database, net)
