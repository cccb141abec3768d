"""What the risk stage costs at scale: a synthetic protocol of N Credit Accounts, built through
the real `ProtocolState.apply` of decoded events, and the monitor's work on it timed.

The mix follows the devnet's USDC market: every account holds USDC (the underlying, 6 decimals)
and one collateral, a third each WETH (18 decimals), WBTC (8) or LINK (18, behind an 18-decimal
feed), at health factors spread between 1.05 and 3. Measured:

- a full `rebuild`;
- the block after a 30 % WETH crash and after a 5 % dip (a third of the accounts revalued;
  thousands under, or a few), and after a 0.1 % move of USDC (every account revalued: all other
  tokens convert through the underlying's price), each as the time until the candidates are known
  and the time until the books are consistent again;
- `candidates` with 1, 100 and 1,000 accounts under;
- memory per account, as the RSS a fresh interpreter grows by and as tracemalloc counts it;
- a full cyclic garbage collection with all of it in the heap, and once it is frozen
  (`gc.freeze`, as the daemon does after its rebuild);
- the health census a `/metrics` scrape takes: its CPU in all, and the longest the event loop
  waits for it between two turns (copying the books, or counting a slice).

Times are CPU time of this process (`time.process_time_ns`), the best of a few runs: on a shared
machine wall time mostly measures the wait for a core; on an idle core the two agree.

    python -m bench.recompute --accounts 100000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eth_utils.address import to_checksum_address

from keeper.ops.metrics import CENSUS_SLICE_ACCOUNTS
from keeper.protocol.events import (
    AnswerUpdated,
    BalanceUpdated,
    CollateralTokenSet,
    CreditAccountOpened,
    CreditManagerInitialized,
    DebtUpdated,
    FeesSet,
    InterestRateUpdated,
    LogPosition,
    PriceFeedSet,
    ProtocolEvent,
)
from keeper.risk.health import RAY
from keeper.risk.monitor import Candidate, RiskMonitor
from keeper.risk.summary import HealthCensus, market_health
from keeper.state.store import MarketState, ProtocolState

T0 = 1_700_000_000
BLOCK_TIME = 12
LATER_BLOCKS = 10**6  # blocks after the back-fill's are numbered from here, a block time apart
STALENESS = 3 * 3600
POOL_INDEX = RAY * 106 // 100  # the pool's index at T0: accounts opened between 1.00 and 1.06
RATE_PER_SECOND = 500 * RAY // (10_000 * 365 * 24 * 3600)  # 5 % a year
CRASH_BPS = 3_000  # WETH falls 30 %: thousands of accounts under
DIP_BPS = 500  # WETH falls 5 %: the same holders revalued, few under
UNDERLYING_MOVE_BPS = 10  # USDC moves 0.1 %: every collateral's term changes, every account
UNDER_COUNTS = (1, 100, 1_000)


def _address(label: str, number: int) -> str:
    digest = f"{label}:{number}".encode().hex()
    return to_checksum_address("0x" + digest.ljust(40, "0")[-40:])


@dataclass(frozen=True, slots=True)
class _Token:
    symbol: str
    address: str
    decimals: int
    feed: str
    feed_decimals: int
    answer: int  # USD in feed decimals
    threshold_bps: int


USDC = _Token("USDC", _address("token", 1), 6, _address("feed", 1), 8, 1_00000000, 9_500)
WETH = _Token("WETH", _address("token", 2), 18, _address("feed", 2), 8, 3_000_00000000, 8_500)
WBTC = _Token("WBTC", _address("token", 3), 8, _address("feed", 3), 8, 60_000_00000000, 8_000)
LINK = _Token("LINK", _address("token", 4), 18, _address("feed", 4), 18, 15 * 10**18, 7_000)
TOKENS = (USDC, WETH, WBTC, LINK)
COLLATERALS = (WETH, WBTC, LINK)
MANAGER, POOL, ORACLE = _address("manager", 1), _address("pool", 1), _address("oracle", 1)


class _Positions:
    """Log positions in chain order, a new block every 1,000 logs."""

    def __init__(self) -> None:
        self.block, self.index = 1, 0

    def at(self, emitter: str) -> LogPosition:
        position = LogPosition(emitter, self.block, f"0x{self.block:064x}", self.index)
        self.index += 1
        if self.index == 1_000:
            self.block, self.index = self.block + 1, 0
        return position

    def next_block(self) -> None:
        self.block, self.index = self.block + 1, 0


def _deploy_events(at: Callable[[str], LogPosition]) -> list[ProtocolEvent]:
    events: list[ProtocolEvent] = [
        CreditManagerInitialized(at(MANAGER), USDC.address, POOL, ORACLE, _address("impl", 1)),
        FeesSet(at(MANAGER), 1_000, 150, 400),
        InterestRateUpdated(at(POOL), RATE_PER_SECOND, POOL_INDEX, T0),
    ]
    for token in TOKENS:
        events.append(CollateralTokenSet(at(MANAGER), token.address, token.threshold_bps))
        events.append(
            PriceFeedSet(
                at(ORACLE),
                token.address,
                token.feed,
                token.decimals,
                token.feed_decimals,
                STALENESS,
            )
        )
        events.append(AnswerUpdated(at(token.feed), token.answer, 1, T0))
    return events


def _usd_units(token: _Token, usd: int) -> int:
    """`usd` dollars of `token`, in its smallest units."""
    scale: int = 10 ** (token.decimals + token.feed_decimals)
    return usd * scale // token.answer


def _account_events(
    accounts: int, rng: random.Random, at: Callable[[str], LogPosition]
) -> Iterator[ProtocolEvent]:
    """Open, debt and two balances per account, for health factors between 1.05 and 3."""
    for number in range(accounts):
        account = _address("account", number)
        collateral = COLLATERALS[number % 3]
        usdc_dollars = rng.randint(1_000, 100_000)
        collateral_dollars = rng.randint(1_000, 500_000)
        weighted_micro_usd = (
            usdc_dollars * USDC.threshold_bps + collateral_dollars * collateral.threshold_bps
        ) * 100
        health_bps = rng.randint(10_500, 30_000)
        index = RAY + rng.randint(0, POOL_INDEX - RAY)
        principal = weighted_micro_usd * 10_000 // health_bps * RAY // POOL_INDEX
        yield CreditAccountOpened(at(MANAGER), account, _address("owner", number))
        yield DebtUpdated(at(MANAGER), account, principal, index, rng.randint(0, 10**6), 0)
        yield BalanceUpdated(
            at(MANAGER), account, USDC.address, usdc_dollars * 10**6 + rng.randint(0, 10**6)
        )
        yield BalanceUpdated(
            at(MANAGER),
            account,
            collateral.address,
            _usd_units(collateral, collateral_dollars) + rng.randint(0, 10**6),
        )


def build_state(accounts: int, seed: int) -> ProtocolState:
    """The protocol after deployment and `accounts` opened accounts, applied as a back-fill."""
    positions = _Positions()
    state = ProtocolState([MarketState(MANAGER, USDC.address, POOL, ORACLE)])
    state.apply(_deploy_events(positions.at))
    state.apply(_account_events(accounts, random.Random(seed), positions.at))
    return state


def _ms(nanoseconds: int) -> float:
    return round(nanoseconds / 1e6, 3)


def _best_of(repeats: int, work: Callable[[], object]) -> int:
    best = None
    for _ in range(repeats):
        gc.collect()
        started = time.process_time_ns()
        work()
        elapsed = time.process_time_ns() - started
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return best


def _revalue(
    monitor: RiskMonitor, state: ProtocolState, events: list[ProtocolEvent], timestamp: int
) -> tuple[int, int, list[Candidate]]:
    """Applies one block's events as the daemon does: ns until the candidates are known, ns
    until the books are consistent again, and the candidates."""
    changes = state.apply(events, undoable=True)
    started = time.process_time_ns()
    revaluation = monitor.revalue(changes, timestamp)
    known = time.process_time_ns() - started
    monitor.settle()
    return known, time.process_time_ns() - started, revaluation.candidates


def _set_principals(
    monitor: RiskMonitor, state: ProtocolState, positions: _Positions, principals: dict[str, int]
) -> None:
    """`DebtUpdated` of each account to its new principal, the rest of its debt unchanged."""
    market = state.markets[MANAGER]
    events: list[ProtocolEvent] = []
    for account, principal in principals.items():
        held = market.accounts[account]
        events.append(
            DebtUpdated(
                positions.at(MANAGER),
                account,
                principal,
                held.cumulative_index_ray,
                held.accrued_interest,
                held.accrued_fees,
            )
        )
    monitor.apply(state.apply(events), T0)


def _price_falls(
    monitor: RiskMonitor,
    state: ProtocolState,
    positions: _Positions,
    token: _Token,
    fall_bps: int,
) -> tuple[int, int, int]:
    """`token` falls by `fall_bps` in one block, three times from the same price (restored in a
    block between): the best ns to the candidates and to consistent books, and how many
    candidates."""
    fallen = token.answer * (10_000 - fall_bps) // 10_000
    timings = []
    found = 0
    for _ in range(3):
        for answer in (fallen, token.answer):
            positions.next_block()
            at = T0 + (positions.block - LATER_BLOCKS) * BLOCK_TIME
            gc.collect()
            known, total, candidates = _revalue(
                monitor, state, [AnswerUpdated(positions.at(token.feed), answer, 2, at)], at
            )
            if answer == fallen:
                timings.append((known, total))
                found = len(candidates)
    return min(known for known, _ in timings), min(total for _, total in timings), found


def _census(monitor: RiskMonitor, state: ProtocolState) -> dict[str, float]:
    """The census's CPU in all and its longest stretch between two turns of the event loop, as
    `CensusTaker.take` runs it (ms)."""
    total = _best_of(3, lambda: market_health(state, monitor, T0))
    longest = 0
    for _ in range(3):
        gc.collect()
        started = time.process_time_ns()
        census = HealthCensus(state, monitor, T0)
        now = time.process_time_ns()
        longest, started = max(longest, now - started), now
        finished = False
        while not finished:
            finished = census.advance(CENSUS_SLICE_ACCOUNTS)
            now = time.process_time_ns()
            longest, started = max(longest, now - started), now
    return {"census_ms": _ms(total), "census_longest_slice_ms": _ms(longest)}


def measure(accounts: int, seed: int = 1) -> dict[str, float | int]:
    """Milliseconds and bytes (see the module docstring) for `accounts` accounts."""
    gc.collect()
    started = time.process_time_ns()
    state = build_state(accounts, seed)
    built = time.process_time_ns() - started

    monitor = RiskMonitor(state)
    rebuilt = _best_of(3, lambda: monitor.rebuild(T0))
    assert monitor.candidates(T0) == [], "the synthetic accounts start above 1"

    positions = _Positions()
    positions.block = LATER_BLOCKS
    rng = random.Random(seed + 1)
    chosen = rng.sample(sorted(state.markets[MANAGER].accounts), max(UNDER_COUNTS))
    original = {a: state.markets[MANAGER].accounts[a].principal for a in chosen}
    under_ms: dict[str, float] = {}
    done = 0
    for count in UNDER_COUNTS:
        # A principal far above any collateral: the account is under 1.
        _set_principals(monitor, state, positions, dict.fromkeys(chosen[done:count], 10**24))
        done = count
        assert len(monitor.candidates(T0)) == count
        under_ms[f"candidates_{count}_under_ms"] = _ms(_best_of(5, lambda: monitor.candidates(T0)))
    _set_principals(monitor, state, positions, original)
    assert monitor.candidates(T0) == []

    moves: dict[str, float | int] = {}
    for name, token, fall_bps in (
        ("crash", WETH, CRASH_BPS),
        ("dip", WETH, DIP_BPS),
        ("underlying_move", USDC, UNDERLYING_MOVE_BPS),
    ):
        known, total, found = _price_falls(monitor, state, positions, token, fall_bps)
        moves[f"{name}_candidates"] = found
        moves[f"{name}_to_candidates_ms"] = _ms(known)
        moves[f"{name}_total_ms"] = _ms(total)
    # What a full cyclic collection costs with the state and books in the heap, and once they
    # are frozen (as the daemon does after its rebuild).
    full_gc = _best_of(3, gc.collect)
    gc.freeze()
    frozen_gc = _best_of(3, gc.collect)
    gc.unfreeze()
    return {
        "accounts": accounts,
        "build_state_ms": _ms(built),
        "rebuild_ms": _ms(rebuilt),
        "weth_holders": len(state.holders((ORACLE, WETH.address))),
        **moves,
        **under_ms,
        **_census(monitor, state),
        "full_gc_ms": _ms(full_gc),
        "full_gc_frozen_ms": _ms(frozen_gc),
        **_memory(accounts, seed),
    }


def _memory(accounts: int, seed: int) -> dict[str, float | int]:
    """Bytes per account: RSS growth of a fresh interpreter, and tracemalloc's count."""
    rss = subprocess.run(
        [sys.executable, "-m", "bench.recompute", "--accounts", str(accounts), "--rss-only"],
        cwd=Path(__file__).resolve().parents[1],
        check=True,
        capture_output=True,
        text=True,
    )
    rss_bytes: int = json.loads(rss.stdout)["rss_bytes"]
    gc.collect()
    tracemalloc.start()
    state = build_state(accounts, seed)
    state_bytes = tracemalloc.get_traced_memory()[0]
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    gc.collect()
    total_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "rss_bytes_per_account": rss_bytes // accounts,
        "traced_bytes_per_account": total_bytes // accounts,
        "traced_state_bytes_per_account": state_bytes // accounts,
        "traced_books_bytes_per_account": (total_bytes - state_bytes) // accounts,
    }


def _rss() -> int:
    """Resident set size of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _rss_growth(accounts: int, seed: int) -> int:
    gc.collect()
    before = _rss()
    state = build_state(accounts, seed)
    monitor = RiskMonitor(state)
    monitor.rebuild(T0)
    gc.collect()
    return _rss() - before


def profile(accounts: int, seed: int = 1, top: int = 25) -> str:
    """cProfile of the rebuild and of the crash block, the `top` functions by own time."""
    state = build_state(accounts, seed)
    monitor = RiskMonitor(state)
    report = io.StringIO()
    for title, work in (
        ("rebuild", lambda: monitor.rebuild(T0)),
        (
            "crash block",
            lambda: _revalue(
                monitor,
                state,
                [
                    AnswerUpdated(
                        LogPosition(WETH.feed, 10**7, "0x" + "00" * 32, 0),
                        WETH.answer * (10_000 - CRASH_BPS) // 10_000,
                        2,
                        T0 + BLOCK_TIME,
                    )
                ],
                T0 + BLOCK_TIME,
            ),
        ),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(work)
        report.write(f"== {title}\n")
        pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(top)
    return report.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recompute", description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print cProfile reports too")
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_only:
        print(json.dumps({"rss_bytes": _rss_growth(args.accounts, args.seed)}))
        return
    print(json.dumps(measure(args.accounts, args.seed), indent=2))
    if args.profile:
        print(profile(args.accounts, args.seed))


if __name__ == "__main__":
    main()
