"""Liquidations that share a transaction: which accounts go together, how the transaction is
keyed, and what its receipt says happened to each account.

Plain functions over plain data: the liquidator decides, these only group and read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from eth_abi.abi import decode

from keeper.protocol.artifacts import load_artifact
from keeper.protocol.errors import RevertReason, canonical_type, decode_revert
from keeper.protocol.events import checksum, topic_of

T = TypeVar("T")

LIQUIDATION_KEY_PREFIX = "liquidate:"


def liquidation_key(accounts: Sequence[str]) -> str:
    """The dispatcher and journal key of a transaction liquidating `accounts`: one scheme for a
    single liquidation ("liquidate:0xA") and a batch ("liquidate:0xA,0xB"), so a transaction
    adopted after a restart names every account it covers."""
    if not accounts:
        raise ValueError("a liquidation covers at least one account")
    return LIQUIDATION_KEY_PREFIX + ",".join(accounts)


def is_liquidation_key(key: str) -> bool:
    return key.startswith(LIQUIDATION_KEY_PREFIX)


def key_accounts(key: str) -> tuple[str, ...]:
    """The accounts a liquidation key covers, in the transaction's order."""
    if not is_liquidation_key(key):
        raise ValueError(f"{key!r} is not a liquidation key")
    return tuple(key.removeprefix(LIQUIDATION_KEY_PREFIX).split(","))


def chunked(items: Sequence[T], size: int, group: Callable[[T], Hashable]) -> list[list[T]]:
    """`items` split by `group` (a market: one batch calls one CreditManager) into runs of at
    most `size`, each in the order given; groups in order of their first item."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    return [
        members[start : start + size]
        for members in groups.values()
        for start in range(0, len(members), size)
    ]


# Gas of a batch transaction outside its accounts' attempts, each bounded from above: the
# intrinsic cost, calldata at the non-zero byte price, and the contract's entry, loop and return
# encoding per account. Measured against anvil's estimates in tests/keeper/test_batch_gas.py.
_INTRINSIC_GAS = 21_000
_CALLDATA_GAS_PER_BYTE = 16
_ENTRY_GAS = 10_000
_LOOP_GAS_PER_ACCOUNT = 2_000
# An attempt's call gets 63/64 of the gas left (EIP-150), and so does each call nested in it, four
# deep (BatchLiquidator -> CreditManager -> CreditAccount -> token): the last attempt needs
# (64/63)^4 < 1.07 times what it spends still left when it starts.
_NESTED_CALL_RESERVE = (7, 100)


def batch_gas_limit(gas_spent: Sequence[int], calldata: str) -> int:
    """The gas a `liquidateBatch` transaction needs, from what each of its accounts' attempts
    spent in an `eth_call` of it (`gasSpent`) and its calldata (hex): the node's minimum, from
    above, without a gas estimate's repeated executions. The policy's margin goes on top."""
    if not gas_spent:
        raise ValueError("a batch liquidates at least one account")
    reserve_numerator, reserve_denominator = _NESTED_CALL_RESERVE
    calldata_bytes = (len(calldata) - 2) // 2
    return (
        _INTRINSIC_GAS
        + _CALLDATA_GAS_PER_BYTE * calldata_bytes
        + _ENTRY_GAS
        + _LOOP_GAS_PER_ACCOUNT * len(gas_spent)
        + sum(gas_spent)
        + -(-max(gas_spent) * reserve_numerator // reserve_denominator)
    )


@dataclass(frozen=True, slots=True)
class LiquidationOutcome:
    """What one mined liquidation transaction did to each account it covered."""

    liquidated: tuple[str, ...]
    skipped: dict[str, RevertReason]  # a BatchLiquidator's skips, with the account's revert
    unaccounted: tuple[str, ...]  # neither: the transaction did not reach them

    @property
    def failed(self) -> tuple[str, ...]:
        """The accounts this transaction did not liquidate."""
        return (*self.skipped, *self.unaccounted)


def liquidation_outcome(
    accounts: Sequence[str], logs: Sequence[Mapping[str, Any]], liquidators: frozenset[str]
) -> LiquidationOutcome:
    """Reads a receipt's logs: a `CreditAccountLiquidated` whose liquidator is one of
    `liquidators` (the signer, its BatchLiquidator) liquidated that account; a
    `LiquidationSkipped` skipped it, for the reason it carries."""
    wanted = set(accounts)
    liquidated: set[str] = set()
    skipped: dict[str, RevertReason] = {}
    for log in logs:
        topics = log.get("topics") or []
        if not topics:
            continue
        if topics[0] == _liquidated_topic() and len(topics) == 4:
            account, liquidator = _topic_address(topics[1]), _topic_address(topics[3])
            if account in wanted and liquidator in liquidators:
                liquidated.add(account)
        elif topics[0] == _skipped_topic() and len(topics) == 3:
            account = _topic_address(topics[2])
            if account in wanted:
                (reason,) = decode(("bytes",), bytes.fromhex(log["data"][2:]))
                skipped[account] = decode_revert(reason)
    return LiquidationOutcome(
        liquidated=tuple(a for a in accounts if a in liquidated),
        skipped={a: skipped[a] for a in accounts if a in skipped and a not in liquidated},
        unaccounted=tuple(a for a in accounts if a not in liquidated and a not in skipped),
    )


def _topic_address(topic: str) -> str:
    return checksum("0x" + topic[-40:])


@cache
def _event_topic(artifact: str, name: str) -> str:
    (entry,) = [
        e for e in load_artifact(artifact).abi if e.get("type") == "event" and e["name"] == name
    ]
    return topic_of(f"{name}({','.join(canonical_type(p) for p in entry['inputs'])})")


def _liquidated_topic() -> str:
    return _event_topic("CreditManager", "CreditAccountLiquidated")


def _skipped_topic() -> str:
    return _event_topic("BatchLiquidator", "LiquidationSkipped")
