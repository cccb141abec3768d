"""Batches as plain data: the key naming every account of a transaction, the split of candidates
into per-market chunks, and the reading of a receipt's logs into what happened to each account
(no chain: the logs are built here, with their signatures written out by hand)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from keeper.execution.batch import (
    batch_gas_limit,
    chunked,
    is_liquidation_key,
    key_accounts,
    liquidation_key,
    liquidation_outcome,
)

# Checksummed, as the keeper's state holds every address.
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
C = to_checksum_address("0x" + "cc" * 20)
MANAGER = "0x0B306BF915C4d645ff596e518fAf3F9669b97016"
SIGNER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
BATCH = "0x851356ae760d987E095750cCeb3bC6014560891C"
OWNER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
RIVAL = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
LIQUIDATED = (
    "0x"
    + keccak(
        text="CreditAccountLiquidated(address,address,address,address,uint256,uint256,uint256,"
        "uint256,uint256,uint256)"
    ).hex()
)
SKIPPED = "0x" + keccak(text="LiquidationSkipped(address,address,bytes)").hex()


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.removeprefix("0x").lower()


def _liquidated(account: str, liquidator: str) -> dict[str, Any]:
    data = encode(["address"] + ["uint256"] * 6, [SIGNER, 1000, 960, 900, 40, 20, 0])
    return {
        "address": MANAGER,
        "topics": [LIQUIDATED, _topic(account), _topic(OWNER), _topic(liquidator)],
        "data": "0x" + data.hex(),
    }


def _skipped(account: str, reason: bytes) -> dict[str, Any]:
    return {
        "address": BATCH,
        "topics": [SKIPPED, _topic(MANAGER), _topic(account)],
        "data": "0x" + encode(["bytes"], [reason]).hex(),
    }


def _not_liquidatable(health_factor: int) -> bytes:
    return function_signature_to_4byte_selector("NotLiquidatable(uint256)") + encode(
        ["uint256"], [health_factor]
    )


# ---------------------------------------------------------------------------- keys


def test_one_key_scheme_names_a_single_liquidation_and_a_batch() -> None:
    assert liquidation_key([A]) == f"liquidate:{A}"
    assert liquidation_key([A, B, C]) == f"liquidate:{A},{B},{C}"
    assert key_accounts(liquidation_key([A, B, C])) == (A, B, C)
    assert key_accounts(f"liquidate:{A}") == (A,)
    assert is_liquidation_key(f"liquidate:{A}")
    assert not is_liquidation_key(f"approve:{MANAGER}")


def test_a_key_needs_an_account_and_only_liquidation_keys_hold_accounts() -> None:
    with pytest.raises(ValueError, match="at least one account"):
        liquidation_key([])
    with pytest.raises(ValueError, match="not a liquidation key"):
        key_accounts(f"approve:{MANAGER}")


# ---------------------------------------------------------------------------- chunks


def test_chunks_keep_markets_apart_in_order_and_at_most_the_size() -> None:
    items = [("m1", 1), ("m2", 2), ("m1", 3), ("m1", 4), ("m2", 5), ("m1", 6), ("m3", 7)]

    chunks = chunked(items, 2, lambda item: item[0])

    assert chunks == [
        [("m1", 1), ("m1", 3)],
        [("m1", 4), ("m1", 6)],
        [("m2", 2), ("m2", 5)],
        [("m3", 7)],
    ]


@pytest.mark.parametrize("size", [1, 3, 100, 1_000])
def test_chunks_hold_every_item_once(size: int) -> None:
    items = [(f"m{i % 3}", i) for i in range(250)]

    chunks = chunked(items, size, lambda item: item[0])

    assert sorted(item for chunk in chunks for item in chunk) == sorted(items)
    assert all(1 <= len(chunk) <= size for chunk in chunks)
    assert all(len({market for market, _ in chunk}) == 1 for chunk in chunks)
    # Only each market's last chunk may be short.
    per_market: dict[str, list[int]] = {}
    for chunk in chunks:
        per_market.setdefault(chunk[0][0], []).append(len(chunk))
    assert all(all(n == size for n in sizes[:-1]) for sizes in per_market.values())


def test_no_items_no_chunks_and_a_size_below_one_is_refused() -> None:
    assert chunked([], 10, lambda item: item) == []
    with pytest.raises(ValueError, match="at least 1"):
        chunked([1], 0, lambda item: item)


# ---------------------------------------------------------------------------- outcomes


def test_a_batch_receipt_says_which_accounts_it_liquidated_and_why_it_skipped_the_others() -> None:
    logs = [
        _liquidated(A, BATCH),
        _skipped(B, _not_liquidatable(10**18 + 5)),
        _liquidated(C, BATCH),
    ]

    outcome = liquidation_outcome([A, B, C], logs, frozenset({SIGNER, BATCH}))

    assert outcome.liquidated == (A, C)
    assert list(outcome.skipped) == [B]
    assert outcome.skipped[B].name == "NotLiquidatable"
    assert outcome.skipped[B].args == {"healthFactor": 10**18 + 5}
    assert outcome.unaccounted == ()
    assert outcome.failed == (B,)


def test_a_single_liquidation_is_the_signers_event() -> None:
    outcome = liquidation_outcome([A], [_liquidated(A, SIGNER)], frozenset({SIGNER, BATCH}))
    assert outcome.liquidated == (A,)
    assert outcome.failed == ()


def test_someone_elses_liquidation_and_accounts_not_covered_are_not_the_keepers() -> None:
    logs = [
        _liquidated(A, RIVAL),  # in the same receipt, but not by the keeper
        _liquidated(C, BATCH),  # an account this transaction does not cover
        {"address": MANAGER, "topics": [], "data": "0x"},
        {"address": MANAGER, "topics": ["0x" + "12" * 32], "data": "0x"},
    ]

    outcome = liquidation_outcome([A, B], logs, frozenset({SIGNER, BATCH}))

    assert outcome.liquidated == ()
    assert outcome.skipped == {}
    assert outcome.unaccounted == (A, B)
    assert outcome.failed == (A, B)


def test_an_empty_skip_reason_decodes_as_an_empty_revert() -> None:
    outcome = liquidation_outcome([A], [_skipped(A, b"")], frozenset({BATCH}))
    assert outcome.skipped[A].name == "EmptyRevert"


def test_an_account_listed_twice_is_liquidated_once_and_not_also_skipped() -> None:
    logs = [_liquidated(A, BATCH), _skipped(A, _not_liquidatable(0))]
    outcome = liquidation_outcome([A, B], logs, frozenset({BATCH}))
    assert outcome.liquidated == (A,)
    assert outcome.skipped == {}
    assert outcome.unaccounted == (B,)


def test_the_batch_gas_limit_covers_every_attempt_the_calldata_and_the_last_calls_reserve() -> None:
    calldata = "0x" + "ab" * 100
    spent = [150_000, 170_000, 160_000]

    limit = batch_gas_limit(spent, calldata)

    # At least: the transaction's 21,000, its calldata, every attempt, and the 1/64 that each of
    # the largest attempt's nested calls keeps back; the bound's slack stays under 10 %.
    floor = 21_000 + 16 * 100 + sum(spent) + 170_000 * 4 // 63
    assert floor < limit < floor * 110 // 100
    assert batch_gas_limit(spent, calldata + "00" * 32) == limit + 16 * 32
    assert batch_gas_limit([*spent, 1], calldata) > limit
    with pytest.raises(ValueError, match="at least one account"):
        batch_gas_limit([], calldata)
