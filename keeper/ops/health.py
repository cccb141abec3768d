"""Liveness and readiness, each a list of named checks that say what they saw.

Liveness (`/healthz`) answers "restart me?": the daemon task is alive and the event loop is not
stalled. Readiness (`/readyz`) answers "can I be trusted to liquidate now?": back-fill done, the
head moving, the signer able to pay gas, every feed usable. A keeper that is alive but not ready
must not be restarted blindly: the checks say which condition failed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from keeper.daemon import Keeper

_TICK_S = 0.5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


class LoopWatch:
    """Measures how late the event loop runs a short timer: a blocked loop cannot follow heads,
    and its lag is the most direct sign of it."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self.last_tick = time.monotonic()

    async def run(self) -> None:
        while True:
            expected = time.monotonic() + _TICK_S
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            self.lag_s = max(now - expected, 0.0)
            self.last_tick = now

    def stalled_for(self) -> float:
        """Seconds the loop is behind now: the last lag, or the time since the last tick when
        that is longer (a tick overdue is a stall in progress)."""
        return max(self.lag_s, time.monotonic() - self.last_tick - _TICK_S)


def liveness(daemon: asyncio.Task[None], watch: LoopWatch, stall_s: float) -> list[Check]:
    stalled = watch.stalled_for()
    return [
        Check(
            "daemon",
            not daemon.done(),
            "running" if not daemon.done() else "the daemon task has ended",
        ),
        Check(
            "event_loop",
            stalled <= stall_s,
            f"lag {stalled:.3f} s (limit {stall_s} s)",
        ),
    ]


def readiness(keeper: Keeper) -> list[Check]:
    """What must hold before this keeper's liquidations can be counted on."""
    progress, ops = keeper.progress, keeper.config.ops
    head_age = time.time() - progress.head_received_at
    checks = [
        Check(
            "backfill",
            progress.backfilled,
            f"following from block {progress.last_block}"
            if progress.backfilled
            else "back-filling history",
        ),
        Check(
            "head",
            progress.backfilled and head_age <= ops.head_stale_s,
            f"newest head {progress.head_block} arrived {head_age:.1f} s ago "
            f"(limit {ops.head_stale_s} s)",
        ),
    ]
    pipeline = keeper.pipeline
    funding = None if pipeline is None else pipeline.liquidator.funding
    if funding is None:
        checks.append(Check("signer_funded", False, "balance not read yet"))
    else:
        checks.append(
            Check(
                "signer_funded",
                funding.native_wei >= ops.min_native_balance_wei,
                f"{funding.native_wei} wei (minimum {ops.min_native_balance_wei})",
            )
        )
    stale = [] if pipeline is None else pipeline.monitor.stale_prices()
    checks.append(
        Check(
            "feeds_fresh",
            pipeline is not None and not stale,
            "every feed usable"
            if pipeline is not None and not stale
            else f"unusable: {', '.join(token for _, token in stale) or 'not read yet'}",
        )
    )
    return checks
