"""A block the node sends malformed is refused as a failed request, never half-read."""

from __future__ import annotations

from typing import Any

import pytest

from keeper.chain.heads import Head, MalformedBlockError, parse_head
from keeper.chain.rpc import RpcTransportError

HASH = "0x" + "ab" * 32
PARENT = "0x" + "cd" * 32
GOOD: dict[str, Any] = {
    "number": "0x10",
    "hash": HASH,
    "parentHash": PARENT,
    "timestamp": "0x6553f100",
    "baseFeePerGas": "0x3b9aca00",
}


def test_a_well_formed_block_is_read() -> None:
    assert parse_head(GOOD) == Head(16, HASH, PARENT, 0x6553F100, 10**9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", None),
        ("number", "sixteen"),
        ("number", "-0x1"),
        ("hash", "0x1234"),
        ("hash", 17),
        ("parentHash", "not a hash"),
        ("timestamp", [1]),
        ("baseFeePerGas", "0xzz"),
    ],
)
def test_a_malformed_field_is_a_failed_request(field: str, value: object) -> None:
    block = {**GOOD, field: value}
    with pytest.raises(MalformedBlockError) as raised:
        parse_head(block)
    assert isinstance(raised.value, RpcTransportError)


@pytest.mark.parametrize("field", ["number", "hash", "parentHash", "timestamp"])
def test_a_missing_field_is_a_failed_request(field: str) -> None:
    block = {name: value for name, value in GOOD.items() if name != field}
    with pytest.raises(MalformedBlockError, match="KeyError"):
        parse_head(block)
