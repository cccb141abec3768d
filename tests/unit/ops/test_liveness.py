"""Liveness: a finished daemon task or a stalled event loop fails `/healthz` (no chain)."""

from __future__ import annotations

import asyncio
import time

import pytest

from keeper.ops.health import LoopWatch, liveness


@pytest.mark.asyncio
async def test_a_running_daemon_on_a_free_loop_is_alive() -> None:
    watch = LoopWatch()
    watcher = asyncio.create_task(watch.run())
    daemon = asyncio.create_task(asyncio.sleep(10))
    try:
        await asyncio.sleep(0.6)
        checks = {check.name: check for check in liveness(daemon, watch, stall_s=1.0)}
        assert checks["daemon"].ok
        assert checks["event_loop"].ok, checks["event_loop"].detail
    finally:
        daemon.cancel()
        watcher.cancel()
        await asyncio.gather(daemon, watcher, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_blocked_loop_and_an_ended_daemon_are_not_alive() -> None:
    watch = LoopWatch()
    watcher = asyncio.create_task(watch.run())
    daemon = asyncio.create_task(asyncio.sleep(0))
    try:
        await asyncio.sleep(0.1)
        time.sleep(1.2)  # blocks the loop: the watch's timer fires late
        checks = {check.name: check for check in liveness(daemon, watch, stall_s=0.5)}
        assert not checks["daemon"].ok
        assert not checks["event_loop"].ok
        assert "lag" in checks["event_loop"].detail
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
