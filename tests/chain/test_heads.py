"""HeadFollower: increasing heads from polling, from a WebSocket, and from polling again when the
socket is refused, cut or hung, and back to the socket once it returns.

Each test mines blocks on its own anvil with raw RPC and waits (with a deadline) for the heads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import pytest
from structlog.testing import capture_logs

from keeper.chain.heads import Head, HeadFollower, head_from_notification, latest_head, parse_head
from keeper.chain.rpc import RpcClient
from keeper.devnet.anvil import AnvilNode, free_port
from tests.chain.fake_nodes import TcpProxy

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

WAIT_S = 5.0


async def next_head(heads: AsyncGenerator[Head, None], within_s: float = WAIT_S) -> Head:
    return await asyncio.wait_for(anext(heads), within_s)


async def mine(rpc: RpcClient, blocks: int = 1) -> None:
    await rpc.request("anvil_mine", [hex(blocks)])


async def test_latest_head_is_the_parsed_latest_block(rpc: RpcClient) -> None:
    await mine(rpc, 3)

    head = await latest_head(rpc)

    block = await rpc.request("eth_getBlockByNumber", ["0x3", False])
    assert head == Head(
        number=3,
        hash=block["hash"],
        parent_hash=block["parentHash"],
        timestamp=int(block["timestamp"], 16),
        base_fee_per_gas=int(block["baseFeePerGas"], 16),
    )


async def test_a_notification_missing_fields_is_completed_by_hash(rpc: RpcClient) -> None:
    await mine(rpc, 2)
    block = await rpc.request("eth_getBlockByNumber", ["0x2", False])
    partial = {"hash": bytes.fromhex(block["hash"][2:]), "number": 2}

    assert await head_from_notification(rpc, partial) == parse_head(block)
    assert await head_from_notification(rpc, {"hash": "0x" + "ab" * 32}) is None


async def test_polling_yields_increasing_heads_and_never_repeats_one(rpc: RpcClient) -> None:
    follower = HeadFollower(rpc, ws_url=None, poll_interval_s=0.02)
    async with aclosing(aiter(follower)) as heads:
        first = await next_head(heads)
        assert follower.mode == "polling"
        assert first.number == 0

        await mine(rpc)
        second = await next_head(heads)
        assert (second.number, second.parent_hash) == (1, first.hash)

        # Five blocks between two polls: one head, the newest; the consumer fetches the range.
        await mine(rpc, 5)
        third = await next_head(heads)
        assert third.number == 6

        # Many polls of an unchanged chain yield nothing.
        with pytest.raises(TimeoutError):
            await next_head(heads, within_s=0.3)


async def test_websocket_pushes_every_head(node: AnvilNode, rpc: RpcClient) -> None:
    # Polling an hour apart: any head that arrives in time came over the socket.
    follower = HeadFollower(rpc, ws_url=node.ws_url, poll_interval_s=3600)
    async with aclosing(aiter(follower)) as heads:
        with capture_logs() as logs:
            first = await next_head(heads)
        assert follower.mode == "websocket"
        assert [log["event"] for log in logs] == ["heads.websocket_subscribed"]

        pushed = []
        for _ in range(3):
            await mine(rpc)
            pushed.append(await next_head(heads))

    assert [head.number for head in pushed] == [first.number + n for n in (1, 2, 3)]
    assert [head.parent_hash for head in pushed] == [first.hash] + [h.hash for h in pushed[:2]]
    assert follower.mode == "polling"  # closed


async def test_a_slow_consumer_skips_to_the_newest_pushed_head(
    node: AnvilNode, rpc: RpcClient
) -> None:
    follower = HeadFollower(rpc, ws_url=node.ws_url, poll_interval_s=3600)
    async with aclosing(aiter(follower)) as heads:
        first = await next_head(heads)
        # Five blocks, each announced over the socket, while the consumer is busy elsewhere.
        for _ in range(5):
            await mine(rpc)
        await asyncio.sleep(0.3)

        newest = await next_head(heads)
        assert newest.number == first.number + 5
        assert follower.mode == "websocket"

        await mine(rpc)
        assert (await next_head(heads)).number == first.number + 6


async def test_refused_websocket_falls_back_to_polling(rpc: RpcClient) -> None:
    follower = HeadFollower(
        rpc, ws_url=f"ws://127.0.0.1:{free_port()}/ws/API-KEY", poll_interval_s=0.02
    )
    async with aclosing(aiter(follower)) as heads:
        with capture_logs() as logs:
            first = await next_head(heads)
            assert follower.mode == "polling"
            await mine(rpc)
            second = await next_head(heads)

    assert second.number == first.number + 1
    failures = [log for log in logs if log["event"] == "heads.websocket_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == "ProviderConnectionError"
    assert failures[0]["log_level"] == "warning"
    assert "API-KEY" not in repr(logs)


async def test_cut_websocket_falls_back_to_polling_and_returns(
    node: AnvilNode, rpc: RpcClient
) -> None:
    proxy = TcpProxy(node.port, free_port())
    await proxy.start()
    follower = HeadFollower(
        rpc, ws_url=f"ws://127.0.0.1:{proxy.port}", poll_interval_s=0.02, ws_retry_s=0.3
    )
    seen: list[Head] = []
    modes: list[str] = []
    try:
        async with aclosing(aiter(follower)) as heads:
            with capture_logs() as logs:
                seen.append(await next_head(heads))
                assert follower.mode == "websocket"

                await proxy.cut()
                await mine(rpc)
                seen.append(await next_head(heads))
                modes.append(follower.mode)

                await proxy.start()
                # Keep the chain moving until the follower has re-subscribed.
                async with asyncio.timeout(WAIT_S):
                    while follower.mode != "websocket":
                        await mine(rpc)
                        seen.append(await next_head(heads))
                await mine(rpc)
                seen.append(await next_head(heads))
    finally:
        await proxy.cut()

    assert modes == ["polling"]
    numbers = [head.number for head in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert [log["event"] for log in logs] == [
        "heads.websocket_subscribed",
        "heads.websocket_failed",
        "heads.websocket_subscribed",
    ]


async def test_a_hung_websocket_is_noticed_within_seconds(node: AnvilNode, rpc: RpcClient) -> None:
    proxy = TcpProxy(node.port, free_port())
    await proxy.start()
    follower = HeadFollower(rpc, ws_url=f"ws://127.0.0.1:{proxy.port}", poll_interval_s=0.02)
    try:
        async with aclosing(aiter(follower)) as heads:
            first = await next_head(heads)
            assert follower.mode == "websocket"

            with capture_logs() as logs:
                proxy.frozen = True
                await mine(rpc)
                # Pings go unanswered; the socket is given up and polling finds the block.
                second = await next_head(heads, within_s=8.0)
            assert follower.mode == "polling"
    finally:
        await proxy.cut()

    assert second.number == first.number + 1
    assert [log["event"] for log in logs] == ["heads.websocket_failed"]


async def test_cancelling_the_consumer_closes_the_socket(node: AnvilNode, rpc: RpcClient) -> None:
    follower = HeadFollower(rpc, ws_url=node.ws_url, poll_interval_s=3600)
    received = asyncio.Event()

    async def consume() -> None:
        async for _ in follower:
            received.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(received.wait(), WAIT_S)
    assert follower.mode == "websocket"

    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert follower.mode == "polling"
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_websocket_retries_back_off_and_start_over_after_a_working_session(
    node: AnvilNode, rpc: RpcClient
) -> None:
    proxy = TcpProxy(node.port, free_port())
    await proxy.start()
    follower = HeadFollower(
        rpc,
        ws_url=f"ws://127.0.0.1:{proxy.port}",
        poll_interval_s=0.02,
        ws_retry_s=0.4,
        ws_first_retry_s=0.05,
    )

    def failures() -> list[float]:
        return [log["retry_in_s"] for log in logs if log["event"] == "heads.websocket_failed"]

    async def follow_until(done: Callable[[], bool]) -> None:
        """Keeps the chain moving (polling only sees new blocks) until `done()`."""
        async with asyncio.timeout(WAIT_S):
            while not done():
                await mine(rpc)
                await next_head(heads)

    try:
        async with aclosing(aiter(follower)) as heads:
            with capture_logs() as logs:
                await next_head(heads)
                await proxy.cut()
                # Refused again and again: each retry waits twice as long, up to ws_retry_s.
                await follow_until(lambda: len(failures()) >= 5)
                assert failures()[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]

                await proxy.start()
                await follow_until(lambda: follower.mode == "websocket")
                await mine(rpc)
                await next_head(heads)  # pushed: the socket works again
                await proxy.cut()
                count = len(failures())
                await follow_until(lambda: len(failures()) > count)
    finally:
        await proxy.cut()

    assert failures()[count] == 0.05
    # Each connection subscribes anew.
    assert sum(log["event"] == "heads.websocket_subscribed" for log in logs) == 2
