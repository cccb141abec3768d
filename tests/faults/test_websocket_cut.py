"""Scenario 1: the keeper's WebSocket is cut and reconnects are refused while a crash makes
accounts liquidatable. The keeper must notice, fall back to polling over HTTP and liquidate on
time; once the socket accepts again it must reconnect and follow pushed heads again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.criteria import assert_fault_criteria, settle
from tests.faults.proxy import FaultProxy
from tests.faults.waits import until_liquidated
from tests.keeper.helpers import (
    Harness,
    InProcessKeeper,
    crash,
    keeper_in_process,
    liquidatable_at,
    on_chain,
    wait_for_log_async,
    wait_until_async,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

# The keeper retries a failed WebSocket every 30 s (its follower's default); allow for that.
RECONNECT_S = 45.0


async def _following_over_websocket(running: InProcessKeeper, *, expected: bool) -> None:
    async def reached() -> bool:
        return running.keeper.progress.websocket is expected

    what = "heads over the WebSocket" if expected else "heads by polling"
    await wait_until_async(reached, what=what, source=running, timeout_s=RECONNECT_S)


async def test_a_cut_websocket_falls_back_to_polling_and_reconnects(
    harness: Harness, tmp_path: Path, proxies: Callable[[int], FaultProxy]
) -> None:
    net = harness.devnet(accounts=20, seed=1, block_time=1)
    keeper = net.roles.keeper.address
    start = net.w3.eth.block_number
    socket = proxies(net.node.port)
    async with keeper_in_process(net, net.roles.keeper, tmp_path, ws_url=socket.ws_url) as running:
        await wait_for_log_async(running, "keeper.following")
        await _following_over_websocket(running, expected=True)

        socket.refuse()  # the open session is reset, and no new one gets through
        await _following_over_websocket(running, expected=False)
        crash_block = await on_chain(crash, net, "WETH", -3_000)
        below = await on_chain(liquidatable_at, net, crash_block)
        assert len(below) >= 2, f"the crash should sink at least 2 accounts, sank {below}"
        await until_liquidated(running, net, below, crash_block)

        accepted = socket.accepted
        socket.passthrough()
        await _following_over_websocket(running, expected=True)
        assert socket.accepted > accepted, "the keeper's heads came over a new connection"
        second_block = await on_chain(crash, net, "WBTC", -2_500)
        sunk = await on_chain(liquidatable_at, net, second_block)
        assert sunk, "the second crash should sink an account"
        await until_liquidated(running, net, sunk, second_block)
        snapshot = await settle(running, net, keeper)

    verdict = await on_chain(
        assert_fault_criteria, net, keeper, start_block=start, snapshot=snapshot
    )
    assert verdict.keeper_liquidations.keys() == below.keys() | sunk.keys()
