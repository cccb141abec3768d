"""The benchmark harness, run small: so `make bench` cannot rot between the runs that matter.

The same code as `make bench` runs end to end: a devnet of 300 accounts, the keeper as a process,
crash rounds, a warm restart and both baselines; only the sizes are small. What is asserted is
behaviour, never speed: every victim was liquidated (read back from the chain by the harness),
the baselines found exactly each crash block's victim, and every figure the README table shows
was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main
from bench.report import markdown_table


def test_the_harness_measures_every_figure_on_a_small_devnet(tmp_path: Path) -> None:
    out = tmp_path / "results.json"

    code = main(
        [
            "--accounts", "300",
            "--rounds", "1x2,10x1",
            "--steady-blocks", "2",
            "--baseline-blocks", "1",
            "--out", str(out),
        ]
    )  # fmt: skip

    assert code == 0
    record = json.loads(out.read_text())
    (size,) = record["sizes"]
    assert size["accounts"] == 300
    reaction = size["reaction"]
    assert reaction["victims_left_open"] == 0
    assert set(reaction["by_accounts_under"]) == {"1", "10"}
    for figures in reaction["by_accounts_under"].values():
        assert figures["all_liquidated"]
        assert figures["failed_transactions"] == 0
        assert 0 < figures["reaction_ms_p50"] <= figures["reaction_ms_p99"]
        assert figures["first_inclusion_blocks_max"] >= 1
    # The second one-account crash is scanned by the baselines and liquidated on warm restart.
    assert [r["accounts"] for r in reaction["rounds"]] == [1, 10]
    for window in size["steady"].values():
        assert window["blocks"] >= 2
        assert window["rpc_requests_per_block"] > 0
    assert size["cold_start"]["resumed"] is False
    assert size["warm_restart"]["resumed"] is True
    assert size["warm_restart"]["full_recompute_ms"] is not None
    assert size["memory"]["after_warm_restart"]["rss_bytes"] > 0
    baselines = size["baselines"]
    # Listed at the crash block: every account still open then, one call each.
    assert baselines["per_account_call"]["rpc_requests_per_block"] == 300 - 1
    assert baselines["multicall"]["rpc_requests_per_block"] == 1
    assert "| Reaction p50 / p99, 10 under at once |" in markdown_table(size)
    assert (tmp_path / "keeper-300" / "keeper.log").exists()
