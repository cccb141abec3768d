"""The head loop's wait: a watched task's failure ends it at once, even when no head comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from keeper.chain.heads import Head
from keeper.chain.rpc import ChainMismatchError
from keeper.daemon import _next_or_failure

HEAD = Head(7, "0x" + "11" * 32, "0x" + "22" * 32, 1_700_000_000, 10**9)


async def _silent() -> AsyncIterator[Head]:
    await asyncio.Event().wait()  # a node that never announces another head
    yield HEAD


async def _one_head() -> AsyncIterator[Head]:
    yield HEAD
    await asyncio.Event().wait()


async def _runs_forever() -> None:
    await asyncio.Event().wait()


async def _fails_soon() -> None:
    await asyncio.sleep(0.01)
    raise ChainMismatchError("the node now serves another chain")


def test_a_task_failing_while_no_head_comes_is_raised() -> None:
    async def scenario() -> None:
        failing = asyncio.create_task(_fails_soon())
        with pytest.raises(ChainMismatchError):
            await asyncio.wait_for(_next_or_failure(_silent(), (failing,)), 5)

    asyncio.run(scenario())


def test_a_head_comes_while_the_tasks_run() -> None:
    async def scenario() -> Head:
        running = asyncio.create_task(_runs_forever())
        try:
            return await _next_or_failure(_one_head(), (running,))
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    assert asyncio.run(scenario()) == HEAD
