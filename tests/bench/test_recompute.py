"""`python -m bench.recompute`, run small so it cannot rot: every figure it reports is measured,
and the synthetic crash, dip and census describe the accounts it built (no chain)."""

from __future__ import annotations

from bench.recompute import UNDER_COUNTS, measure


def test_the_risk_stage_bench_measures_every_figure() -> None:
    accounts = max(UNDER_COUNTS)
    figures = measure(accounts)

    assert figures["accounts"] == accounts
    assert figures["weth_holders"] == -(-accounts // 3)
    # A 30 % crash sinks more WETH holders than a 5 % dip, and none but WETH holders.
    assert figures["weth_holders"] >= figures["crash_candidates"] > figures["dip_candidates"]
    assert figures["underlying_move_candidates"] == 0
    timed = [name for name in figures if name.endswith("_ms")]
    assert {"rebuild_ms", "census_ms", "census_longest_slice_ms"} <= set(timed)
    assert all(figures[name] > 0 for name in timed if name != "full_gc_frozen_ms")
    assert figures["rss_bytes_per_account"] > 0
