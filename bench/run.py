"""One benchmark size, end to end: devnet, keeper cold start, steady state, crash rounds, warm
restart, then both baselines scanning the very blocks the rounds crashed in.

Everything is measured on the same devnet in the same run, so the keeper and the baselines face
the same node, the same accounts and the same blocks.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baselines import JsonRpc, Scan, list_accounts, scan_multicall, scan_per_account
from bench.devnet import BenchDevnet, bench_devnet
from bench.keeper_process import KeeperUnderTest, process_usage
from bench.population import Population
from keeper.devnet.controls import set_price

Progress = Callable[[str], None]
_START_TIMEOUT_S = 600.0
_ROUND_TIMEOUT_S = 120.0
_LINK_NUDGE_PERMILLE = 1  # the steady-state price update: LINK moves 0.1 % each block


@dataclass(frozen=True, slots=True)
class BenchOptions:
    group_sizes: tuple[int, ...]
    steady_blocks: int
    baseline_blocks: int


def measure_size(
    population: Population, options: BenchOptions, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """Every figure for one account count; see README "Performance" for what each means. The
    keeper's config, database and log stay in `workdir` (emptied first) for inspection."""
    accounts = len(population.accounts)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    progress(f"[{accounts:,} accounts] building the devnet")
    with bench_devnet(population, progress) as net:
        progress(f"[{accounts:,} accounts] devnet built in {net.build_s:.0f} s")
        keeper = KeeperUnderTest(net.manifest(), net.roles.keeper, workdir)
        try:
            result: dict[str, Any] = {
                "accounts": accounts,
                "devnet_build_s": round(net.build_s, 1),
                "block_time_s": net.block_time_s,
            }
            result["cold_start"] = _start(keeper, progress, "cold start (back-fill from deploy)")
            result["steady"] = {
                "quiet": _steady(keeper, net, options.steady_blocks, nudge=False),
                "price_update_each_block": _steady(keeper, net, options.steady_blocks, nudge=True),
            }
            result["memory"] = {"after_cold_start": _memory(keeper, accounts)}
            progress(f"[{accounts:,} accounts] steady state measured")
            scanned = _baseline_groups(population.group_sizes, options.baseline_blocks)
            rounds: list[dict[str, Any]] = []
            for group in range(len(net.victims)):
                if group == scanned[0]:
                    # The keeper stops; the baselines scan the crash blocks of these groups
                    # while their victims wait; the keeper's warm restart then liquidates them.
                    keeper.stop()
                    result["baselines"] = asyncio.run(_baselines(net, scanned, progress))
                    result["warm_restart"] = _start(keeper, progress, "warm restart")
                    _wait_victims_closed(net, scanned)
                    _steady(keeper, net, options.steady_blocks, nudge=False)
                    result["memory"]["after_warm_restart"] = _memory(keeper, accounts)
                if group not in scanned:
                    rounds.append(_round(keeper, net, group, progress))
            result["reaction"] = _reaction_summary(rounds)
            result["reaction"]["victims_left_open"] = asyncio.run(_victims_left_open(net))
            return result
        finally:
            keeper.stop()


def _start(keeper: KeeperUnderTest, progress: Progress, what: str) -> dict[str, Any]:
    keeper.start()
    following = keeper.wait_for("keeper.following", timeout_s=_START_TIMEOUT_S)
    took_s = time.monotonic() - keeper.started_at
    rebuilt = next(keeper.events("risk.rebuilt"), None)
    progress(f"{what}: following after {took_s:.2f} s")
    return {
        "to_following_s": round(took_s, 3),
        "from_block": following.get("from_block"),
        "resumed": next(keeper.events("keeper.resuming"), None) is not None,
        "full_recompute_ms": None if rebuilt is None else rebuilt.get("took_ms"),
    }


def _wait_caught_up(keeper: KeeperUnderTest, net: BenchDevnet) -> int:
    """Waits until the keeper has processed the chain's head; returns that block."""
    deadline = time.monotonic() + _ROUND_TIMEOUT_S
    while time.monotonic() < deadline:
        head = net.w3.eth.block_number
        if keeper.last_block() >= head:
            return head
        time.sleep(0.05)
    raise TimeoutError(f"the keeper did not catch up with block {net.w3.eth.block_number}")


def _steady(
    keeper: KeeperUnderTest, net: BenchDevnet, blocks: int, *, nudge: bool
) -> dict[str, Any]:
    """Requests, keeper CPU and node CPU per block over `blocks` blocks; with `nudge`, each
    block carries a LINK price update (a third of the accounts to revalue)."""
    start_block = _wait_caught_up(keeper, net)
    requests_before, usage_before = keeper.rpc_requests(), keeper.usage()
    node_before = process_usage(net.node.pid)
    updater = net.roles.deployer.address
    link = net.deployment.contract(net.w3, "PriceFeed.LINK")
    start_answer = link.functions.latestAnswer().call()
    for index in range(blocks):
        if nudge:
            step = 1000 + (_LINK_NUDGE_PERMILLE if index % 2 == 0 else 0)
            set_price(net.w3, net.deployment, "LINK", start_answer * step // 1000, updater)
        else:
            target = start_block + index + 1
            while net.w3.eth.block_number < target:
                time.sleep(0.05)
    end_block = _wait_caught_up(keeper, net)
    requests_after, usage_after = keeper.rpc_requests(), keeper.usage()
    node_after = process_usage(net.node.pid)
    processed = end_block - start_block
    by_method = {
        method: round((count - requests_before.get(method, 0.0)) / processed, 3)
        for method, count in sorted(requests_after.items())
        if count > requests_before.get(method, 0.0)
    }
    return {
        "blocks": processed,
        "rpc_requests_per_block": round(sum(by_method.values()), 3),
        "rpc_requests_per_block_by_method": by_method,
        "keeper_cpu_ms_per_block": round(
            1000 * (usage_after.cpu_s - usage_before.cpu_s) / processed, 2
        ),
        "node_cpu_ms_per_block": round(
            1000 * (node_after.cpu_s - node_before.cpu_s) / processed, 2
        ),
    }


def _round(
    keeper: KeeperUnderTest, net: BenchDevnet, group: int, progress: Progress
) -> dict[str, Any]:
    """Crashes WETH to round `group`'s price and waits until the keeper has liquidated every
    account of the group; returns the timings the keeper logged for it."""
    _wait_caught_up(keeper, net)
    answer = net.population.round_answer(group)
    trigger = set_price(net.w3, net.deployment, "WETH", answer, net.roles.deployer.address)
    expected = len(net.victims[group])
    deadline = time.monotonic() + _ROUND_TIMEOUT_S
    while True:
        outcomes = [
            line
            for line in keeper.lines()
            if line.get("event") in ("liquidation.included", "liquidation.failed")
            # Adopted at start-up (no trigger of this run): null trigger_block.
            and (line.get("trigger_block") or 0) >= trigger
        ]
        included = [line for line in outcomes if line["event"] == "liquidation.included"]
        liquidated = sum(len(line["liquidated"]) for line in included)
        if liquidated >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not included:
        raise TimeoutError(f"round {group}: nothing liquidated within {_ROUND_TIMEOUT_S:.0f} s")
    reaction_ms = min(float(line["sent_after_head_ms"]) for line in included)
    blocks = [int(line["block"]) - trigger for line in included]
    progress(
        f"round {group + 1}/{len(net.victims)}: {liquidated}/{expected} liquidated, "
        f"first tx accepted {reaction_ms:.1f} ms after the head, "
        f"included +{min(blocks)}..+{max(blocks)} blocks"
    )
    return {
        "accounts": expected,
        "liquidated": liquidated,
        "failed_transactions": len(outcomes) - len(included),
        "transactions": len(included),
        "trigger_block": trigger,
        "reaction_ms": reaction_ms,
        "first_inclusion_blocks": min(blocks),
        "last_inclusion_blocks": max(blocks),
    }


def _reaction_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    by_size: dict[str, Any] = {}
    for size in sorted({r["accounts"] for r in rounds}):
        mine = [r for r in rounds if r["accounts"] == size]
        reactions = [r["reaction_ms"] for r in mine]
        by_size[str(size)] = {
            "rounds": len(mine),
            "reaction_ms_p50": round(statistics.median(reactions), 2),
            "reaction_ms_p99": round(_percentile(reactions, 99), 2),
            "first_inclusion_blocks_max": max(r["first_inclusion_blocks"] for r in mine),
            "last_inclusion_blocks_max": max(r["last_inclusion_blocks"] for r in mine),
            "transactions_per_round_max": max(r["transactions"] for r in mine),
            "all_liquidated": all(r["liquidated"] >= r["accounts"] for r in mine),
            "failed_transactions": sum(r["failed_transactions"] for r in mine),
        }
    return {"by_accounts_under": by_size, "rounds": rounds}


def _percentile(values: list[float], percent: int) -> float:
    """Nearest-rank percentile: with fewer than 100 samples p99 is the maximum."""
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


async def _victims_left_open(net: BenchDevnet, groups: list[int] | None = None) -> int:
    """Victims (of `groups`, or all) still open now: read from the manager, not from the
    keeper's logs."""
    rpc = JsonRpc(net.node.rpc_url)
    try:
        open_now = set(await list_accounts(rpc, net.manager, block=net.w3.eth.block_number))
    finally:
        await rpc.close()
    chosen = range(len(net.victims)) if groups is None else groups
    return sum(1 for group in chosen for account in net.victims[group] if account in open_now)


def _baseline_groups(group_sizes: tuple[int, ...], count: int) -> list[int]:
    """The last `count` one-account groups: their crashes are what the baselines scan."""
    singles = [group for group, size in enumerate(group_sizes) if size == 1]
    return singles[-count:]


def _memory(keeper: KeeperUnderTest, accounts: int) -> dict[str, int]:
    rss = keeper.usage().rss_bytes
    return {"rss_bytes": rss, "rss_bytes_per_account": round(rss / accounts)}


def _wait_victims_closed(net: BenchDevnet, groups: list[int]) -> None:
    """Waits until the chain shows every victim of `groups` liquidated."""
    deadline = time.monotonic() + _ROUND_TIMEOUT_S
    while asyncio.run(_victims_left_open(net, groups)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the victims of groups {groups} were not liquidated")
        time.sleep(0.2)


async def _baselines(net: BenchDevnet, groups: list[int], progress: Progress) -> dict[str, Any]:
    """With the keeper stopped, crashes each of `groups` in turn and has both strategies scan
    the crash block: what they find must be exactly the victims under then (this group and the
    ones before it, left for the keeper's restart), or the comparison would be meaningless."""
    rpc = JsonRpc(net.node.rpc_url)
    try:
        head = net.w3.eth.block_number
        listing_started = time.perf_counter()
        await list_accounts(rpc, net.manager, block=head)
        listing_s = time.perf_counter() - listing_started
        scans: dict[str, list[Scan]] = {"per_account_call": [], "multicall": []}
        node_cpu_s = dict.fromkeys(scans, 0.0)
        expected: set[str] = set()
        for group in groups:
            block = set_price(
                net.w3,
                net.deployment,
                "WETH",
                net.population.round_answer(group),
                net.roles.deployer.address,
            )
            expected |= set(net.victims[group])
            accounts = await list_accounts(rpc, net.manager, block=block)
            for name, scan in (
                ("per_account_call", scan_per_account),
                ("multicall", scan_multicall),
            ):
                node_before = process_usage(net.node.pid).cpu_s
                found = await scan(rpc, net.manager, accounts, block)
                node_cpu_s[name] += process_usage(net.node.pid).cpu_s - node_before
                if found.liquidatable != expected:
                    raise AssertionError(
                        f"{name} found {sorted(found.liquidatable)} at block {block}, "
                        f"expected {sorted(expected)}"
                    )
                scans[name].append(found)
                progress(f"baseline {name}: block {block} scanned in {found.wall_s:.2f} s")
        results: dict[str, Any] = {}
        for name, done in scans.items():
            walls = [scan.wall_s * 1000 for scan in done]
            results[name] = {
                "blocks": len(done),
                "scan_ms_p50": round(statistics.median(walls), 1),
                "scan_ms_max": round(max(walls), 1),
                "rpc_requests_per_block": done[0].requests,
                "client_cpu_ms_per_block": round(1000 * sum(s.cpu_s for s in done) / len(done), 1),
                "node_cpu_ms_per_block": round(1000 * node_cpu_s[name] / len(done), 1),
            }
        results["account_listing_s"] = round(listing_s, 3)
        return results
    finally:
        await rpc.close()
