"""`python -m bench`: the performance harness (what `make bench` runs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.population import plan_population
from bench.report import marginal_bytes_per_account, markdown_table, ratios
from bench.run import BenchOptions, measure_size

DEFAULT_ROUNDS = "1x10,100x5,1000x2"


def rounds(text: str) -> tuple[int, ...]:
    """'1x20,100x10' -> twenty rounds of 1 account, then ten of 100."""
    sizes: list[int] = []
    try:
        for part in text.split(","):
            under, _, repeat = part.partition("x")
            sizes += [int(under)] * int(repeat or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ACCOUNTSxROUNDS[,...], e.g. {DEFAULT_ROUNDS}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every round needs at least one account")
    return tuple(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Builds a devnet with N Credit Accounts per size, runs the real keeper against it and "
            "measures reaction latency, blocks to inclusion, RPC requests and CPU per block, "
            "memory per account, cold start, warm restart and full recompute; then two baseline "
            "strategies (one eth_call per account; one Multicall3 scan) on the same blocks."
        ),
        epilog=(
            "examples:\n"
            "  python -m bench                                  # 10,000 and 100,000 (make bench)\n"
            "  python -m bench --accounts 2000 --rounds 1x5,100x2 --out /tmp/quick.json\n"
            "the JSON goes to --out; a README-ready table per size is printed at the end; the\n"
            "keeper's config, database and log of each size stay beside it in keeper-N/."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--accounts",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="account counts to measure, one devnet each (default: 10000 100000)",
    )
    parser.add_argument(
        "--rounds",
        type=rounds,
        default=rounds(DEFAULT_ROUNDS),
        help=f"crash rounds as UNDERxREPEAT, in order (default: {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--steady-blocks", type=int, default=10, help="blocks per steady-state window (default 10)"
    )
    parser.add_argument(
        "--baseline-blocks",
        type=int,
        default=3,
        help="crash blocks each baseline scans (default 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/latest.json"),
        help="where the JSON goes (default: bench/results/latest.json)",
    )
    args = parser.parse_args(argv)
    if args.steady_blocks < 1 or args.baseline_blocks < 1:
        parser.error("--steady-blocks and --baseline-blocks must be at least 1")
    if args.baseline_blocks > args.rounds.count(1):
        parser.error(
            f"--baseline-blocks {args.baseline_blocks} needs as many one-account rounds, "
            f"--rounds has {args.rounds.count(1)}"
        )
    try:
        populations = [plan_population(n, args.rounds) for n in args.accounts]
    except ValueError as error:
        parser.error(str(error))

    options = BenchOptions(args.rounds, args.steady_blocks, args.baseline_blocks)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    sizes = [
        measure_size(population, options, args.out.parent / f"keeper-{n}", progress)
        for n, population in zip(args.accounts, populations, strict=True)
    ]
    record: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rounds": list(args.rounds),
        "sizes": sizes,
        "ratios": {str(size["accounts"]): ratios(size) for size in sizes},
        "rss_marginal_bytes_per_account": marginal_bytes_per_account(sizes),
        "took_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for size in sizes:
        print(markdown_table(size) + "\n")
    progress(f"done; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
