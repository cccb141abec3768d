"""Decoding raw JSON-RPC logs into the keeper's typed events (no chain).

The logs are built here the way a node returns them (hex strings, lowercase addresses) from
signatures and indexed flags written out by hand, so the decoder's table, which it builds from
the artifacts, is checked against an independent reading of the contracts' event declarations.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.protocol.events import (
    AnswerUpdated,
    BalanceUpdated,
    CollateralTokenSet,
    CreditAccountClosed,
    CreditAccountLiquidated,
    CreditAccountOpened,
    CreditManagerInitialized,
    DebtUpdated,
    EmergencyLiquidatorSet,
    FeesSet,
    InterestRateUpdated,
    LogPosition,
    Paused,
    PriceFeedSet,
    ProtocolEvent,
    UnknownEventError,
    Unpaused,
    checksum,
    decode_log,
    decode_logs,
    event_topics,
    topic_of,
    word_decoder,
)

MAX_UINT256 = 2**256 - 1
BLOCK_HASH = "0x" + "ab" * 32


def addr(n: int) -> str:
    """A lowercase address with letters in it, as a node writes it."""
    return "0x" + f"{n:02x}" * 2 + "deadbeefcafe" * 3


def cs(address: str) -> str:
    return to_checksum_address(address)


def raw_log(
    emitter: str,
    signature: str,
    params: list[tuple[str, bool, Any]],
    *,
    block: int = 0x1234,
    log_index: int = 7,
) -> dict[str, Any]:
    """A JSON-RPC log: topic0, one topic per indexed param, the rest ABI-encoded in data."""
    topics = ["0x" + keccak(text=signature).hex()]
    topics += ["0x" + encode([kind], [value]).hex() for kind, indexed, value in params if indexed]
    data_types = [kind for kind, indexed, _ in params if not indexed]
    data_values = [value for _, indexed, value in params if not indexed]
    return {
        "address": emitter.lower(),
        "topics": topics,
        "data": "0x" + encode(data_types, data_values).hex(),
        "blockNumber": hex(block),
        "blockHash": BLOCK_HASH,
        "logIndex": hex(log_index),
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x0",
        "removed": False,
    }


MANAGER, POOL, ORACLE, FEED = addr(1), addr(2), addr(3), addr(4)
ACCOUNT, OWNER, TOKEN, LIQUIDATOR, TO, IMPL = (addr(n) for n in range(5, 11))


def pos(emitter: str, block: int = 0x1234, log_index: int = 7) -> LogPosition:
    return LogPosition(cs(emitter), block, BLOCK_HASH, log_index)


# (raw log, the event it must decode to): every tracked event, with boundary values.
CASES: list[tuple[dict[str, Any], ProtocolEvent]] = [
    (
        raw_log(
            MANAGER,
            "CreditManagerInitialized(address,address,address,address)",
            [
                ("address", True, TOKEN),
                ("address", True, POOL),
                ("address", True, ORACLE),
                ("address", False, IMPL),
            ],
        ),
        CreditManagerInitialized(pos(MANAGER), cs(TOKEN), cs(POOL), cs(ORACLE), cs(IMPL)),
    ),
    (
        raw_log(
            MANAGER,
            "CollateralTokenSet(address,uint16)",
            [("address", True, TOKEN), ("uint16", False, 65_535)],
        ),
        CollateralTokenSet(pos(MANAGER), cs(TOKEN), 65_535),
    ),
    (
        raw_log(
            MANAGER,
            "FeesSet(uint16,uint16,uint16)",
            [("uint16", False, 1_000), ("uint16", False, 150), ("uint16", False, 0)],
        ),
        FeesSet(pos(MANAGER), 1_000, 150, 0),
    ),
    (
        raw_log(
            MANAGER,
            "EmergencyLiquidatorSet(address,bool)",
            [("address", True, LIQUIDATOR), ("bool", False, True)],
        ),
        EmergencyLiquidatorSet(pos(MANAGER), cs(LIQUIDATOR), True),
    ),
    (
        raw_log(
            MANAGER,
            "EmergencyLiquidatorSet(address,bool)",
            [("address", True, LIQUIDATOR), ("bool", False, False)],
        ),
        EmergencyLiquidatorSet(pos(MANAGER), cs(LIQUIDATOR), False),
    ),
    (
        raw_log(MANAGER, "Paused(address)", [("address", True, OWNER)]),
        Paused(pos(MANAGER), cs(OWNER)),
    ),
    (
        raw_log(MANAGER, "Unpaused(address)", [("address", True, OWNER)]),
        Unpaused(pos(MANAGER), cs(OWNER)),
    ),
    (
        raw_log(
            MANAGER,
            "CreditAccountOpened(address,address)",
            [("address", True, ACCOUNT), ("address", True, OWNER)],
        ),
        CreditAccountOpened(pos(MANAGER), cs(ACCOUNT), cs(OWNER)),
    ),
    (
        raw_log(
            MANAGER,
            "BalanceUpdated(address,address,uint256)",
            [("address", True, ACCOUNT), ("address", True, TOKEN), ("uint256", False, MAX_UINT256)],
        ),
        BalanceUpdated(pos(MANAGER), cs(ACCOUNT), cs(TOKEN), MAX_UINT256),
    ),
    (
        raw_log(
            MANAGER,
            "DebtUpdated(address,uint256,uint256,uint256,uint256)",
            [
                ("address", True, ACCOUNT),
                ("uint256", False, 10**24),
                ("uint256", False, 10**27 + 1),
                ("uint256", False, 3),
                ("uint256", False, 0),
            ],
        ),
        DebtUpdated(pos(MANAGER), cs(ACCOUNT), 10**24, 10**27 + 1, 3, 0),
    ),
    (
        raw_log(
            MANAGER,
            "CreditAccountClosed(address,address,address)",
            [("address", True, ACCOUNT), ("address", True, OWNER), ("address", False, TO)],
        ),
        CreditAccountClosed(pos(MANAGER), cs(ACCOUNT), cs(OWNER), cs(TO)),
    ),
    (
        raw_log(
            MANAGER,
            "CreditAccountLiquidated(address,address,address,address,uint256,uint256,uint256,"
            "uint256,uint256,uint256)",
            [
                ("address", True, ACCOUNT),
                ("address", True, OWNER),
                ("address", True, LIQUIDATOR),
                ("address", False, TO),
                ("uint256", False, 1_000),
                ("uint256", False, 960),
                ("uint256", False, 900),
                ("uint256", False, 45),
                ("uint256", False, 15),
                ("uint256", False, 0),
            ],
            block=0,
            log_index=0,
        ),
        CreditAccountLiquidated(
            pos(MANAGER, 0, 0),
            cs(ACCOUNT),
            cs(OWNER),
            cs(LIQUIDATOR),
            cs(TO),
            1_000,
            960,
            900,
            45,
            15,
            0,
        ),
    ),
    (
        raw_log(
            POOL,
            "InterestRateUpdated(uint256,uint256,uint256)",
            [
                ("uint256", False, 3_170_979_198_376),
                ("uint256", False, 10**27),
                ("uint256", False, 1_700_000_000),
            ],
        ),
        InterestRateUpdated(pos(POOL), 3_170_979_198_376, 10**27, 1_700_000_000),
    ),
    (
        raw_log(
            ORACLE,
            "PriceFeedSet(address,address,uint8,uint8,uint32)",
            [
                ("address", True, TOKEN),
                ("address", True, FEED),
                ("uint8", False, 18),
                ("uint8", False, 8),
                ("uint32", False, 2**32 - 1),
            ],
        ),
        PriceFeedSet(pos(ORACLE), cs(TOKEN), cs(FEED), 18, 8, 2**32 - 1),
    ),
    (
        raw_log(
            FEED,
            "AnswerUpdated(int256,uint256,uint256)",
            [
                ("int256", True, 3_000 * 10**8),
                ("uint256", True, 42),
                ("uint256", False, 1_700_000_123),
            ],
            block=10**9,
            log_index=300,
        ),
        AnswerUpdated(pos(FEED, 10**9, 300), 3_000 * 10**8, 42, 1_700_000_123),
    ),
    (
        # Indexed int256 topics are two's complement: a negative answer must come back negative.
        raw_log(
            FEED,
            "AnswerUpdated(int256,uint256,uint256)",
            [("int256", True, -(2**255)), ("uint256", True, MAX_UINT256), ("uint256", False, 0)],
        ),
        AnswerUpdated(pos(FEED), -(2**255), MAX_UINT256, 0),
    ),
    (
        raw_log(
            FEED,
            "AnswerUpdated(int256,uint256,uint256)",
            [("int256", True, -1), ("uint256", True, 1), ("uint256", False, 5)],
        ),
        AnswerUpdated(pos(FEED), -1, 1, 5),
    ),
]


@pytest.mark.parametrize(
    ("log", "expected"),
    CASES,
    ids=[f"{type(event).__name__}-{i}" for i, (_, event) in enumerate(CASES)],
)
def test_each_tracked_event_decodes_to_its_dataclass(
    log: dict[str, Any], expected: ProtocolEvent
) -> None:
    decoded = decode_log(log)
    assert type(decoded) is type(expected)
    assert decoded == expected
    # Field by field, types included: addresses checksummed strings, numbers plain ints.
    for item in fields(expected):
        got, want = getattr(decoded, item.name), getattr(expected, item.name)
        assert type(got) is type(want), item.name
        if isinstance(want, str):
            assert got == cs(got), f"{item.name} not checksummed"
    assert decoded.position.emitter == cs(log["address"])
    assert decode_logs([log]) == [expected]


def test_every_tracked_event_class_is_covered_by_a_case() -> None:
    assert {type(event) for _, event in CASES} == set(ProtocolEvent.__args__)
    assert len(event_topics()) == len(ProtocolEvent.__args__)


def test_decode_logs_keeps_order_and_skips_untracked_logs() -> None:
    transfer = raw_log(
        TOKEN,
        "Transfer(address,address,uint256)",
        [("address", True, OWNER), ("address", True, ACCOUNT), ("uint256", False, 5)],
    )
    new_round = raw_log(
        FEED,
        "NewRound(uint256,address,uint256)",
        [("uint256", True, 42), ("address", True, OWNER), ("uint256", False, 1)],
    )
    anonymous = {**transfer, "topics": []}
    logs = [transfer, CASES[8][0], new_round, anonymous, CASES[9][0], CASES[0][0]]

    assert decode_logs(logs) == [CASES[8][1], CASES[9][1], CASES[0][1]]
    assert decode_logs([]) == []
    with pytest.raises(UnknownEventError, match="untracked log topic 0x"):
        decode_log(new_round)
    with pytest.raises(UnknownEventError, match="None"):
        decode_log(anonymous)


def test_a_tracked_topic_with_the_wrong_topic_count_raises() -> None:
    balance = CASES[8][0]
    short = {**balance, "topics": balance["topics"][:2]}
    with pytest.raises(ValueError, match="BalanceUpdated log has 2 topics, expected 3"):
        decode_logs([short])
    # An event of the same name with an extra indexed parameter is not the contract's event.
    long = {**balance, "topics": [*balance["topics"], "0x" + "00" * 32]}
    with pytest.raises(ValueError, match="BalanceUpdated log has 4 topics, expected 3"):
        decode_log(long)


def test_event_topics_selects_by_class() -> None:
    assert event_topics(BalanceUpdated) == [topic_of("BalanceUpdated(address,address,uint256)")]
    assert set(event_topics(Paused, AnswerUpdated)) == {
        topic_of("Paused(address)"),
        topic_of("AnswerUpdated(int256,uint256,uint256)"),
    }
    assert set(event_topics()) == {log["topics"][0] for log, _ in CASES}
    # The well-known Chainlink topic, as a sanity anchor for the hashing.
    assert topic_of("AnswerUpdated(int256,uint256,uint256)") == (
        "0x0559884fd3a460db3073b7fc896cc77986f16e378210ded43186175bf646fc5f"
    )


def test_position_reads_hex_block_and_index_and_keeps_the_hash() -> None:
    log = {**CASES[6][0], "blockNumber": "0xff", "logIndex": "0x0", "blockHash": "0x" + "0f" * 32}
    decoded = decode_log(log)
    assert decoded.position == LogPosition(cs(MANAGER), 255, "0x" + "0f" * 32, 0)


# ---------------------------------------------------------------- the one-word decoders


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["uint256", "uint16", "uint8", "int256", "int128", "address", "bool"]),
    st.data(),
)
def test_word_decoders_equal_eth_abi_on_valid_words(abi_type: str, data: st.DataObject) -> None:
    if abi_type == "address":
        value: object = to_checksum_address(data.draw(st.binary(min_size=20, max_size=20)))
    elif abi_type == "bool":
        value = data.draw(st.booleans())
    elif abi_type.startswith("uint"):
        value = data.draw(st.integers(0, 2 ** int(abi_type[4:]) - 1))
    else:
        bits = int(abi_type[3:])
        value = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    word = encode([abi_type], [value]).hex()

    expected = decode([abi_type], bytes.fromhex(word))[0]
    if abi_type == "address":
        expected = to_checksum_address(expected)  # eth_abi answers lowercase; state keeps EIP-55

    assert word_decoder(abi_type)(word) == expected


@pytest.mark.parametrize(
    ("abi_type", "word"),
    [
        ("uint16", f"{2**16:064x}"),  # above the type's range
        ("int128", f"{2**127:064x}"),
        ("address", "01" + "00" * 31),  # non-zero padding
        ("bool", f"{2:064x}"),
        ("uint256", "00" * 31),  # short word
    ],
)
def test_word_decoders_refuse_what_eth_abi_refuses(abi_type: str, word: str) -> None:
    with pytest.raises(ValueError, match=r"0x"):
        word_decoder(abi_type)(word)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=20))
def test_checksum_equals_eth_utils(raw: bytes) -> None:
    address = "0x" + raw.hex()

    assert checksum(address) == to_checksum_address(address)
    assert checksum(address.upper().replace("0X", "0x")) == to_checksum_address(address)
