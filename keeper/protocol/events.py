"""Decoding the protocol's logs straight from raw JSON-RPC logs, without web3's contract layer.

The contract layer costs ~0.14 ms per log, and even eth_abi ~25 µs; every tracked event has
one-word fields only, so each is sliced out of the hex and converted directly (a few µs), against
a table built once from the compiled ABIs: it cannot drift from the contracts because the
signatures, indexed flags and types all come from the artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from eth_utils.crypto import keccak

from keeper.protocol.artifacts import load_artifact


@lru_cache(maxsize=1 << 18)
def checksum(address: str) -> str:
    """Checksummed (EIP-55) form of a hex address.

    Every account appears in several logs, and a back-fill of 100,000 accounts checksums each
    of them: eth_utils' `to_checksum_address` validates and converts through several layers
    (~30 µs), this is one keccak (a few µs). The cache holds every account of a large keeper."""
    lower = address[2:].lower()
    if len(lower) != 40:
        raise ValueError(f"not a 20-byte address: {address!r}")
    digest = keccak(lower.encode()).hex()
    return "0x" + "".join(
        char.upper() if nibble in "89abcdef" else char
        for char, nibble in zip(lower, digest, strict=False)
    )


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Where a log sits in the chain: emitter, block and index (the order state applies logs)."""

    emitter: str
    block_number: int
    block_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class CreditManagerInitialized:
    position: LogPosition
    underlying: str
    pool: str
    oracle: str
    account_implementation: str


@dataclass(frozen=True, slots=True)
class CollateralTokenSet:
    position: LogPosition
    token: str
    liquidation_threshold: int


@dataclass(frozen=True, slots=True)
class FeesSet:
    position: LogPosition
    fee_interest: int
    liquidation_fee: int
    liquidation_premium: int


@dataclass(frozen=True, slots=True)
class EmergencyLiquidatorSet:
    position: LogPosition
    liquidator: str
    allowed: bool


@dataclass(frozen=True, slots=True)
class Paused:
    position: LogPosition
    by: str


@dataclass(frozen=True, slots=True)
class Unpaused:
    position: LogPosition
    by: str


@dataclass(frozen=True, slots=True)
class CreditAccountOpened:
    position: LogPosition
    credit_account: str
    owner: str


@dataclass(frozen=True, slots=True)
class BalanceUpdated:
    position: LogPosition
    credit_account: str
    token: str
    balance: int


@dataclass(frozen=True, slots=True)
class DebtUpdated:
    position: LogPosition
    credit_account: str
    principal: int
    cumulative_index: int
    accrued_interest: int
    accrued_fees: int


@dataclass(frozen=True, slots=True)
class CreditAccountClosed:
    position: LogPosition
    credit_account: str
    owner: str
    to: str


@dataclass(frozen=True, slots=True)
class CreditAccountLiquidated:
    position: LogPosition
    credit_account: str
    owner: str
    liquidator: str
    to: str
    total_value: int
    amount_paid: int
    repaid_to_pool: int
    protocol_fees: int
    remaining_funds: int
    loss: int


@dataclass(frozen=True, slots=True)
class InterestRateUpdated:
    position: LogPosition
    interest_rate_per_second: int
    cumulative_index: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class PriceFeedSet:
    position: LogPosition
    token: str
    feed: str
    token_decimals: int
    feed_decimals: int
    staleness_period: int


@dataclass(frozen=True, slots=True)
class AnswerUpdated:
    position: LogPosition
    current: int
    round_id: int
    updated_at: int


ProtocolEvent = (
    CreditManagerInitialized
    | CollateralTokenSet
    | FeesSet
    | EmergencyLiquidatorSet
    | Paused
    | Unpaused
    | CreditAccountOpened
    | BalanceUpdated
    | DebtUpdated
    | CreditAccountClosed
    | CreditAccountLiquidated
    | InterestRateUpdated
    | PriceFeedSet
    | AnswerUpdated
)

# (artifact, event class): the events the keeper's state is built from. Fields of each class
# follow the event's ABI inputs in order, after `position`.
_TRACKED: tuple[tuple[str, type[ProtocolEvent]], ...] = (
    ("CreditManager", CreditManagerInitialized),
    ("CreditManager", CollateralTokenSet),
    ("CreditManager", FeesSet),
    ("CreditManager", EmergencyLiquidatorSet),
    ("CreditManager", Paused),
    ("CreditManager", Unpaused),
    ("CreditManager", CreditAccountOpened),
    ("CreditManager", BalanceUpdated),
    ("CreditManager", DebtUpdated),
    ("CreditManager", CreditAccountClosed),
    ("CreditManager", CreditAccountLiquidated),
    ("LendingPool", InterestRateUpdated),
    ("PriceOracle", PriceFeedSet),
    ("PriceFeed", AnswerUpdated),
)


class UnknownEventError(ValueError):
    """A log whose first topic is not one of the tracked events."""


WordDecoder = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class _EventDecoder:
    """Decodes one event from hex: each field is a 64-character slice turned into its value."""

    event_class: type[ProtocolEvent]
    topic_decoders: tuple[WordDecoder, ...]
    data_decoders: tuple[WordDecoder, ...]
    # per ABI input: (is_indexed, position within its group)
    layout: tuple[tuple[bool, int], ...]

    def decode(self, log: Mapping[str, Any]) -> ProtocolEvent:
        topics: Sequence[str] = log["topics"]
        if len(topics) != len(self.topic_decoders) + 1:
            raise ValueError(
                f"{self.event_class.__name__} log has {len(topics)} topics, "
                f"expected {len(self.topic_decoders) + 1}"
            )
        data: str = log["data"]
        if len(data) != 2 + 64 * len(self.data_decoders):
            raise ValueError(
                f"{self.event_class.__name__} log has {len(data) - 2} hex characters of data, "
                f"expected {64 * len(self.data_decoders)}"
            )
        indexed = [
            decode_word(topic[2:])
            for decode_word, topic in zip(self.topic_decoders, topics[1:], strict=True)
        ]
        fields = [
            decode_word(data[2 + 64 * slot : 66 + 64 * slot])
            for slot, decode_word in enumerate(self.data_decoders)
        ]
        values = [indexed[slot] if is_indexed else fields[slot] for is_indexed, slot in self.layout]
        position = LogPosition(
            checksum(log["address"]),
            int(log["blockNumber"], 16),
            log["blockHash"],
            int(log["logIndex"], 16),
        )
        return self.event_class(position, *values)


def word_decoder(abi_type: str) -> WordDecoder:
    """A decoder of one 32-byte ABI word (64 hex characters) of `abi_type`, as strict as
    eth_abi: padding must be zero (or the sign, for signed integers) and a bool 0 or 1."""
    if abi_type == "address":
        return _decode_address
    if abi_type == "bool":
        return _decode_bool
    if abi_type.startswith("uint"):
        return partial(_decode_uint, 1 << int(abi_type[4:] or 256))
    if abi_type.startswith("int"):
        return partial(_decode_int, 1 << (int(abi_type[3:] or 256) - 1))
    raise TypeError(f"{abi_type}: only static one-word types are decoded from logs")


def _decode_uint(bound: int, word: str) -> int:
    value = int(word, 16)
    if value >= bound or len(word) != 64:
        raise ValueError(f"0x{word} is not a uint below {bound}")
    return value


def _decode_int(half: int, word: str) -> int:
    value = int(word, 16)
    if value >= 1 << 255:
        value -= 1 << 256
    if not -half <= value < half or len(word) != 64:
        raise ValueError(f"0x{word} is not an int in [-{half}, {half})")
    return value


def _decode_address(word: str) -> str:
    if len(word) != 64 or word[:24] != _ZERO_PADDING:
        raise ValueError(f"0x{word} is not an ABI-encoded address")
    return checksum("0x" + word[24:])


def _decode_bool(word: str) -> bool:
    value = int(word, 16)
    if value > 1 or len(word) != 64:
        raise ValueError(f"0x{word} is not an ABI-encoded bool")
    return value == 1


_ZERO_PADDING = "0" * 24


def _signature(abi_event: Mapping[str, Any]) -> str:
    types = ",".join(param["type"] for param in abi_event["inputs"])
    return f"{abi_event['name']}({types})"


def topic_of(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


@lru_cache(maxsize=1)
def _decoders() -> dict[str, _EventDecoder]:
    decoders: dict[str, _EventDecoder] = {}
    for artifact, event_class in _TRACKED:
        abi_event = next(
            entry
            for entry in load_artifact(artifact).abi
            if entry.get("type") == "event" and entry["name"] == event_class.__name__
        )
        inputs = abi_event["inputs"]
        indexed_types = tuple(p["type"] for p in inputs if p["indexed"])
        data_types = tuple(p["type"] for p in inputs if not p["indexed"])
        layout: list[tuple[bool, int]] = []
        indexed_seen = data_seen = 0
        for param in inputs:
            if param["indexed"]:
                layout.append((True, indexed_seen))
                indexed_seen += 1
            else:
                layout.append((False, data_seen))
                data_seen += 1
        expected_fields = len(event_class.__dataclass_fields__) - 1
        if expected_fields != len(inputs):
            raise TypeError(f"{event_class.__name__} has {expected_fields} fields, ABI {inputs}")
        decoders[topic_of(_signature(abi_event))] = _EventDecoder(
            event_class,
            tuple(word_decoder(abi_type) for abi_type in indexed_types),
            tuple(word_decoder(abi_type) for abi_type in data_types),
            tuple(layout),
        )
    return decoders


def event_topics(*event_classes: type[ProtocolEvent]) -> list[str]:
    """The topic0 of each given event class (all tracked events when none are given)."""
    wanted = set(event_classes)
    return [
        topic
        for topic, decoder in _decoders().items()
        if not wanted or decoder.event_class in wanted
    ]


def decode_log(log: Mapping[str, Any]) -> ProtocolEvent:
    """The typed event of one raw JSON-RPC log; raises `UnknownEventError` for other logs."""
    topics = log["topics"]
    decoder = _decoders().get(topics[0]) if topics else None
    if decoder is None:
        raise UnknownEventError(f"untracked log topic {topics[0] if topics else None}")
    return decoder.decode(log)


def decode_logs(logs: Sequence[Mapping[str, Any]]) -> list[ProtocolEvent]:
    """The tracked events among `logs`, in the order given; untracked logs are skipped
    (e.g. `NewRound`, `Transfer`) because one address filter returns them too."""
    decoders = _decoders()
    decoded = []
    for log in logs:
        topics = log["topics"]
        decoder = decoders.get(topics[0]) if topics else None
        if decoder is not None:
            decoded.append(decoder.decode(log))
    return decoded
