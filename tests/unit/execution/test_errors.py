"""Send errors as each client words them, and the kind the keeper reads from them.

The anvil rows are the exact answers of anvil 1.7.1 to eth_sendRawTransaction (and, for reverts
and gas, eth_estimateGas), recorded by provoking each case; tests/execution checks them against a
live anvil. The other rows are geth's, Nethermind's (current and older), Erigon's and Besu's
spellings.
"""

from __future__ import annotations

import pytest

from keeper.execution.errors import SendErrorKind, classify_send_error

K = SendErrorKind
ADDRESS = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"

CASES: list[tuple[str, str, int | None, SendErrorKind]] = [
    # anvil 1.7.1
    ("anvil", "nonce too low", -32003, K.NONCE_TOO_LOW),
    ("anvil", "transaction already imported", -32003, K.ALREADY_KNOWN),
    ("anvil", "replacement transaction underpriced", -32003, K.REPLACEMENT_UNDERPRICED),
    ("anvil", "Insufficient funds for gas * price + value", -32003, K.INSUFFICIENT_FUNDS),
    ("anvil", "max fee per gas less than block base fee", -32003, K.FEE_TOO_LOW),
    ("anvil", "max priority fee per gas higher than max fee per gas", -32003, K.FEE_TOO_LOW),
    ("anvil", "intrinsic gas too low", -32000, K.GAS_LIMIT),
    (
        "anvil",
        "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit",
        -32000,
        K.GAS_LIMIT,
    ),
    ("anvil", "Out of gas: gas required exceeds allowance: 21000", -32003, K.GAS_LIMIT),
    ("anvil", "execution reverted", 3, K.EXECUTION_REVERTED),
    ("anvil", "execution reverted: nope", 3, K.EXECUTION_REVERTED),
    (
        "anvil",
        "execution reverted: custom error 0xdeadbeef: " + "\x00" * 31 + "\x07",
        3,
        K.EXECUTION_REVERTED,
    ),
    ("anvil", "invalid chain id for signer", -32003, K.UNKNOWN),
    ("anvil", "Failed to decode transaction", -32602, K.UNKNOWN),
    # geth
    ("geth", f"nonce too low: address {ADDRESS}, tx: 0 state: 1", -32000, K.NONCE_TOO_LOW),
    ("geth", f"nonce too high: address {ADDRESS}, tx: 5 state: 1", -32000, K.NONCE_TOO_HIGH),
    ("geth", "already known", -32000, K.ALREADY_KNOWN),
    ("geth", "replacement transaction underpriced", -32000, K.REPLACEMENT_UNDERPRICED),
    ("geth", "transaction underpriced", -32000, K.FEE_TOO_LOW),
    (
        "geth",
        "transaction gas price below minimum: gas tip cap 0, minimum needed 1000000",
        -32000,
        K.FEE_TOO_LOW,
    ),
    (
        "geth",
        f"insufficient funds for gas * price + value: address {ADDRESS} have 0 want 21000000",
        -32000,
        K.INSUFFICIENT_FUNDS,
    ),
    (
        "geth",
        f"max fee per gas less than block base fee: address {ADDRESS}, maxFeePerGas: 1, baseFee: 7",
        -32000,
        K.FEE_TOO_LOW,
    ),
    (
        "geth",
        f"max priority fee per gas higher than max fee per gas: address {ADDRESS}, "
        "maxPriorityFeePerGas: 2, maxFeePerGas: 1",
        -32000,
        K.FEE_TOO_LOW,
    ),
    ("geth", "intrinsic gas too low: gas 20999, minimum needed 21000", -32000, K.GAS_LIMIT),
    ("geth", "exceeds block gas limit", -32000, K.GAS_LIMIT),
    ("geth", "transaction gas limit too high", -32000, K.GAS_LIMIT),
    ("geth", "gas required exceeds allowance (30000000)", -32000, K.GAS_LIMIT),
    ("geth", "execution reverted: Ownable: caller is not the owner", 3, K.EXECUTION_REVERTED),
    ("geth", "tx fee (1.20 ether) exceeds the configured cap (1.00 ether)", -32000, K.UNKNOWN),
    ("geth", "txpool is full", -32000, K.UNKNOWN),
    # Nethermind, current (geth's phrases) and older (result names with details)
    ("nethermind", "nonce too high", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "nonce too far in future", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "gas limit reached", -32010, K.GAS_LIMIT),
    ("nethermind", "transaction underpriced", -32010, K.FEE_TOO_LOW),
    (
        "nethermind",
        "OldNonce, Current nonce: 5, nonce of rejected tx: 3",
        -32010,
        K.NONCE_TOO_LOW,
    ),
    ("nethermind", "NonceGap", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "NonceTooFarInFuture", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "AlreadyKnown", -32010, K.ALREADY_KNOWN),
    ("nethermind", "ReplacementNotAllowed", -32010, K.REPLACEMENT_UNDERPRICED),
    (
        "nethermind",
        "FeeTooLow, MaxFeePerGas too low. MaxFeePerGas: 1, BaseFee: 7, "
        "MaxPriorityFeePerGas:0, Block number: 100",
        -32010,
        K.FEE_TOO_LOW,
    ),
    ("nethermind", "FeeTooLowToCompete", -32010, K.FEE_TOO_LOW),
    (
        "nethermind",
        "InsufficientFunds, Account balance: 0, cumulative cost: 21000",
        -32010,
        K.INSUFFICIENT_FUNDS,
    ),
    (
        "nethermind",
        "GasLimitExceeded, Gas limit: 30000000, gas limit of rejected tx: 30000001",
        -32010,
        K.GAS_LIMIT,
    ),
    (
        "nethermind",
        "Invalid, IntrinsicGasTooLow: gas limit is below intrinsic gas.",
        -32010,
        K.GAS_LIMIT,
    ),
    # Erigon: the txpool's import status, then its discard reason
    ("erigon", "INTERNAL_ERROR: nonce too low", -32000, K.NONCE_TOO_LOW),
    ("erigon", "ALREADY_EXISTS: already known", -32000, K.ALREADY_KNOWN),
    ("erigon", "INTERNAL_ERROR: existing txn with same hash", -32000, K.ALREADY_KNOWN),
    (
        "erigon",
        "FEE_TOO_LOW: replacement transaction underpriced",
        -32000,
        K.REPLACEMENT_UNDERPRICED,
    ),
    ("erigon", "INTERNAL_ERROR: could not replace existing tx", -32000, K.REPLACEMENT_UNDERPRICED),
    ("erigon", "FEE_TOO_LOW: underpriced", -32000, K.FEE_TOO_LOW),
    ("erigon", "FEE_TOO_LOW: fee too low", -32000, K.FEE_TOO_LOW),
    ("erigon", "INTERNAL_ERROR: insufficient funds", -32000, K.INSUFFICIENT_FUNDS),
    ("erigon", "INTERNAL_ERROR: IntrinsicGas", -32000, K.GAS_LIMIT),
    ("erigon", "INTERNAL_ERROR: gas limit is too high", -32000, K.GAS_LIMIT),
    # Besu
    ("besu", "Nonce too low", -32001, K.NONCE_TOO_LOW),
    ("besu", "Nonce too high", -32006, K.NONCE_TOO_HIGH),
    (
        "besu",
        "Transaction nonce is too distant from current sender nonce",
        -32000,
        K.NONCE_TOO_HIGH,
    ),
    ("besu", "Known transaction", -32000, K.ALREADY_KNOWN),
    ("besu", "Replacement transaction underpriced", -32000, K.REPLACEMENT_UNDERPRICED),
    ("besu", "Upfront cost exceeds account balance", -32004, K.INSUFFICIENT_FUNDS),
    ("besu", "Intrinsic gas exceeds gas limit", -32003, K.GAS_LIMIT),
    ("besu", "Transaction gas limit exceeds block gas limit", -32005, K.GAS_LIMIT),
    ("besu", "Gas price below configured minimum gas price", -32009, K.FEE_TOO_LOW),
    ("besu", "Gas price below current base fee", -32009, K.FEE_TOO_LOW),
    ("besu", "Max priority fee per gas exceeds max fee per gas", -32000, K.FEE_TOO_LOW),
    ("besu", "Execution reverted", 3, K.EXECUTION_REVERTED),
    ("besu", "Transaction fee cap exceeded", -32000, K.UNKNOWN),
    ("besu", "Wrong chainId", -32000, K.UNKNOWN),
]


@pytest.mark.parametrize(
    ("message", "code", "expected"),
    [pytest.param(m, c, k, id=f"{client}: {m[:60]}") for client, m, c, k in CASES],
)
def test_each_clients_message_maps_to_its_kind(
    message: str, code: int | None, expected: SendErrorKind
) -> None:
    assert classify_send_error(message, code) is expected
    assert classify_send_error(message) is expected  # the wording alone is enough


def test_the_table_covers_every_kind() -> None:
    assert {kind for _, _, _, kind in CASES} == set(SendErrorKind)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # A revert reason is the contract's text, not the node's: it must not read as a pool error.
        ("execution reverted: insufficient funds", K.EXECUTION_REVERTED),
        ("execution reverted: nonce too low", K.EXECUTION_REVERTED),
        ("VM Exception while processing transaction: revert nope", K.EXECUTION_REVERTED),
        # "known transaction" inside "unknown transaction" is not Besu's "Known transaction".
        ("unknown transaction type", K.UNKNOWN),
        ("", K.UNKNOWN),
    ],
)
def test_order_and_word_boundaries(message: str, expected: SendErrorKind) -> None:
    assert classify_send_error(message) is expected


def test_code_3_marks_a_revert_even_without_a_message() -> None:
    assert classify_send_error("", 3) is K.EXECUTION_REVERTED
