"""Logs a node could not have meant are refused before anything is applied from them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from keeper.chain.logs import InconsistentLogsError, LogFetcher
from keeper.chain.rpc import RpcClient

ADDRESS = "0x00000000000000000000000000000000000000a1"


def _log(block: int, **changes: object) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": ADDRESS,
        "topics": ["0x" + "11" * 32],
        "data": "0x",
        "blockNumber": hex(block),
        "blockHash": "0x" + "22" * 32,
        "logIndex": "0x0",
    }
    entry.update(changes)
    return entry


class _Answering:
    """Answers every eth_getLogs with the same result."""

    def __init__(self, result: object) -> None:
        self._result = result

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        return self._result


def _fetch(result: object) -> list[dict[str, Any]]:
    fetcher = LogFetcher(cast(RpcClient, _Answering(result)))
    return asyncio.run(fetcher.fetch([ADDRESS], 10, 20))


def test_logs_inside_the_range_are_returned() -> None:
    assert _fetch([_log(10), _log(20)]) == [_log(10), _log(20)]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"not": "a list"}, "not a list"),
        ([_log(21)], "answered a log of block 21"),
        ([_log(9)], "answered a log of block 9"),
        ([_log(12, removed=True)], "removed by a reorg"),
        ([{"address": ADDRESS}], "without its fields"),
        ([_log(12, blockNumber="twelve")], "bad number"),
    ],
)
def test_an_answer_that_cannot_be_meant_is_refused(answer: object, why: str) -> None:
    with pytest.raises(InconsistentLogsError, match=why):
        _fetch(answer)
