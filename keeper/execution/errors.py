"""What a node's refusal of `eth_sendRawTransaction` (or of the estimate before it) means.

Nodes report refusals as free text, worded differently by each client, so the kind is read from
the message. The text is normalised first (camelCase and snake_case split into words, lower case)
so that geth's "nonce too low", Nethermind's "OldNonce", Erigon's "INTERNAL_ERROR: nonce too low"
and Besu's "Nonce too low" meet the same patterns.

Patterns are tried in order, and the order matters:

- a revert comes first: its message carries the contract's own reason ("execution reverted:
  insufficient funds"), which must not be read as a pool error;
- "replacement transaction underpriced" before the bare "transaction underpriced" / "underpriced";
- Erigon prefixes its import status, so "FEE_TOO_LOW: replacement transaction underpriced" is a
  replacement, found before the generic fee rule.

anvil 1.7.1 answers (code -32003 unless noted): "nonce too low", "transaction already imported",
"replacement transaction underpriced", "Insufficient funds for gas * price + value", "max fee per
gas less than block base fee", "max priority fee per gas higher than max fee per gas", "intrinsic
gas too low" (-32000), "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit" (-32000) and,
from estimates and calls, "execution reverted[: reason]" (code 3). It queues a transaction with a
nonce gap instead of refusing it, so it never says "nonce too high".
"""

from __future__ import annotations

import enum
import re

EXECUTION_ERROR_CODE = 3  # JSON-RPC code for "execution reverted", with the revert data


class SendErrorKind(enum.Enum):
    NONCE_TOO_LOW = "nonce_too_low"
    NONCE_TOO_HIGH = "nonce_too_high"
    REPLACEMENT_UNDERPRICED = "replacement_underpriced"
    ALREADY_KNOWN = "already_known"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    FEE_TOO_LOW = "fee_too_low"
    EXECUTION_REVERTED = "execution_reverted"
    GAS_LIMIT = "gas_limit"
    UNKNOWN = "unknown"


_REVERT = re.compile(r"execution reverted|vm exception while processing transaction")

_PATTERNS: tuple[tuple[SendErrorKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile("|".join(alternatives)))
    for kind, alternatives in (
        (
            SendErrorKind.REPLACEMENT_UNDERPRICED,
            (
                r"replacement (transaction )?underpriced",
                r"transaction replacement underpriced",
                r"replacement not allowed",
                r"could not replace existing",
                r"replacement fee too low",
            ),
        ),
        (
            SendErrorKind.ALREADY_KNOWN,
            (
                r"already known",
                r"already imported",
                r"\bknown transaction\b",
                r"already exists",
                r"existing (tx|txn|transaction) with same hash",
            ),
        ),
        (
            SendErrorKind.NONCE_TOO_LOW,
            (r"nonce too low", r"nonce is too low", r"\bold nonce\b"),
        ),
        (
            SendErrorKind.NONCE_TOO_HIGH,
            (
                r"nonce too high",
                r"\bnonce gap\b",
                r"nonce too far in (the )?future",
                r"nonce is too distant",
                r"with a lower nonce exists",
            ),
        ),
        (
            SendErrorKind.INSUFFICIENT_FUNDS,
            (r"insufficient funds", r"upfront cost exceeds (account )?balance"),
        ),
        (
            SendErrorKind.GAS_LIMIT,
            (
                r"intrinsic gas",
                r"exceeds (the )?block gas limit",
                r"gas limit (exceeded|reached)",
                r"gas limit (is )?too high",
                r"gas limit cap exceeded",
                r"gas required exceeds allowance",
                r"floor data gas",
            ),
        ),
        (
            SendErrorKind.FEE_TOO_LOW,
            (
                r"\bunderpriced\b",
                r"fee too low",
                r"less than (the )?(block|current) base fee",
                r"below (the )?(block |current )?base fee",
                r"gas price below",
                r"priority fee per gas (is )?(higher than|exceeds) (the )?max fee per gas",
                r"tip higher than fee cap",
            ),
        ),
        (SendErrorKind.EXECUTION_REVERTED, (r"\breverted\b",)),
    )
)


def classify_send_error(message: str, code: int | None = None) -> SendErrorKind:
    """The kind of a node's error `message` (with its JSON-RPC `code`, if known)."""
    text = _normalise(message)
    if code == EXECUTION_ERROR_CODE or _REVERT.search(text):
        return SendErrorKind.EXECUTION_REVERTED
    for kind, pattern in _PATTERNS:
        if pattern.search(text):
            return kind
    return SendErrorKind.UNKNOWN


def _normalise(message: str) -> str:
    """Lower-case words: "FeeTooLow" and "FEE_TOO_LOW" both become "fee too low"."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", message).replace("_", " ")
    return re.sub(r"\s+", " ", words).lower()
