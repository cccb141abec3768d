"""The benchmark's outputs: the JSON record of a run, and the README table drawn from it."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "reaction_ms_p99": 50,
    "rpc_requests_per_block": 3,
    "rss_bytes_per_account": 2048,
    "cold_start_s": 30,
    "warm_restart_s": 3,
    "full_recompute_ms": 100,
}


def marginal_bytes_per_account(sizes: list[dict[str, Any]]) -> float | None:
    """RSS growth per extra account between the smallest and largest run: what one more
    account costs, without the interpreter and libraries every keeper pays once."""
    if len(sizes) < 2:
        return None
    small, large = min(sizes, key=_accounts), max(sizes, key=_accounts)
    extra_accounts: int = large["accounts"] - small["accounts"]
    extra_bytes: int = (
        large["memory"]["after_warm_restart"]["rss_bytes"]
        - small["memory"]["after_warm_restart"]["rss_bytes"]
    )
    return round(extra_bytes / extra_accounts, 1)


def markdown_table(size: dict[str, Any]) -> str:
    """One size's keeper and baselines side by side, with the targets."""
    reaction = size["reaction"]["by_accounts_under"]
    steady = size["steady"]
    per_account = size["baselines"]["per_account_call"]
    multicall = size["baselines"]["multicall"]
    rows = [
        f"| Measure ({size['accounts']:,} accounts) | Keeper | (a) eth_call per account "
        "| (b) Multicall3 scan | Target |",
        "|---|---|---|---|---|",
    ]
    for under, figures in reaction.items():
        rows.append(
            f"| Reaction p50 / p99, {int(under):,} under at once "
            f"| {figures['reaction_ms_p50']:.1f} / {figures['reaction_ms_p99']:.1f} ms "
            f"| ≥ {per_account['scan_ms_p50']:,.0f} ms (scan) "
            f"| ≥ {multicall['scan_ms_p50']:,.0f} ms (scan) | p99 ≤ 50 ms |"
        )
    for under, figures in reaction.items():
        rows.append(
            f"| Blocks to inclusion, {int(under):,} under: first / last tx "
            f"| +{figures['first_inclusion_blocks_max']} / +{figures['last_inclusion_blocks_max']} "
            f"({figures['transactions_per_round_max']} tx) | — | — | next block, gas permitting |"
        )
    quiet, busy = steady["quiet"], steady["price_update_each_block"]
    rows += [
        f"| RPC requests per block, quiet / price update each block "
        f"| {quiet['rpc_requests_per_block']} / {busy['rpc_requests_per_block']} "
        f"| {per_account['rpc_requests_per_block']:,} | {multicall['rpc_requests_per_block']:,} "
        "| ≤ 3 |",
        f"| CPU per block (client), quiet / price update "
        f"| {quiet['keeper_cpu_ms_per_block']} / {busy['keeper_cpu_ms_per_block']} ms "
        f"| {per_account['client_cpu_ms_per_block']:,} ms "
        f"| {multicall['client_cpu_ms_per_block']:,} ms | — |",
        f"| Node CPU per block, quiet / price update "
        f"| {quiet['node_cpu_ms_per_block']} / {busy['node_cpu_ms_per_block']} ms "
        f"| {per_account['node_cpu_ms_per_block']:,} ms "
        f"| {multicall['node_cpu_ms_per_block']:,} ms | — |",
        f"| RSS per account (whole process / accounts), after warm restart / cold start "
        f"| {size['memory']['after_warm_restart']['rss_bytes_per_account']:,} / "
        f"{size['memory']['after_cold_start']['rss_bytes_per_account']:,} B | — | — | ≤ 2 KB |",
        f"| Cold start (back-fill from the deploy block) "
        f"| {size['cold_start']['to_following_s']:.1f} s "
        f"| {size['baselines']['account_listing_s']:.1f} s (list accounts) "
        "| same as (a) | ≤ 30 s |",
        f"| Warm restart (from the checkpoint) | {size['warm_restart']['to_following_s']:.1f} s "
        "| — | — | ≤ 3 s |",
        f"| Full recompute of every health factor | {_recompute(size)} "
        f"| {per_account['scan_ms_p50']:,.0f} ms | {multicall['scan_ms_p50']:,.0f} ms | ≤ 100 ms |",
    ]
    return "\n".join(rows)


def ratios(size: dict[str, Any]) -> dict[str, float]:
    """How many times fewer requests per block and how much faster to act the keeper is."""
    keeper_requests = max(size["steady"]["price_update_each_block"]["rpc_requests_per_block"], 1e-9)
    one_under = size["reaction"]["by_accounts_under"].get("1")
    figures: dict[str, float] = {}
    for name, baseline in size["baselines"].items():
        if not isinstance(baseline, dict):
            continue
        figures[f"{name}_requests_ratio"] = round(
            baseline["rpc_requests_per_block"] / keeper_requests, 1
        )
        if one_under is not None:
            figures[f"{name}_reaction_ratio_p50"] = round(
                baseline["scan_ms_p50"] / one_under["reaction_ms_p50"], 1
            )
    return figures


def _recompute(size: dict[str, Any]) -> str:
    took = [
        start["full_recompute_ms"]
        for start in (size["cold_start"], size["warm_restart"])
        if start.get("full_recompute_ms") is not None
    ]
    return "not logged" if not took else " / ".join(f"{t:.0f} ms" for t in took)


def _accounts(size: dict[str, Any]) -> int:
    return int(size["accounts"])
