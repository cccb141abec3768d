"""What execution reports as it happens, for whoever watches (metrics, tests).

Execution defines this interface and calls it; `keeper.ops` implements it. Execution therefore
never imports the layer that observes it, and a keeper built without observers does nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keeper.execution.dispatcher import TxRequest, TxResult


@dataclass(frozen=True, slots=True)
class LiquidationReport:
    """A liquidation transaction's end, with the blocks and times its latencies come from, and
    how many of the accounts it covered it liquidated (a batch skips those that revert).

    `head_received_at` is a `time.monotonic()` reading, like the result's `sent_at` and
    `finished_at`."""

    manager: str
    underlying: str
    result: TxResult
    trigger_block: int
    head_received_at: float
    inclusion_block: int | None
    accounts: int  # covered by the transaction
    liquidated: int  # of them, liquidated by it
    premium: Decimal  # of those liquidated, whole underlying tokens, planned at trigger prices


class ExecutionObserver(Protocol):
    def transaction_finished(self, result: TxResult) -> None:
        """Every transaction the dispatcher ends, whatever the outcome."""

    def transaction_replaced(self, request: TxRequest, *, cancel: bool) -> None:
        """A fee-bumped replacement (or a cancel) the node accepted."""

    def liquidation_attempted(self, manager: str, accounts: int) -> None:
        """A liquidation transaction of `accounts` accounts handed to the dispatcher."""

    def liquidation_dropped(self, manager: str, reason: str) -> None:
        """An account below Hf 1 left alone, once per account and reason."""

    def liquidation_finished(self, report: LiquidationReport) -> None:
        """A liquidation transaction ended (mined, refused, cancelled or lost)."""


class NullExecutionObserver:
    """Observes nothing: the default."""

    def transaction_finished(self, result: TxResult) -> None:
        pass

    def transaction_replaced(self, request: TxRequest, *, cancel: bool) -> None:
        pass

    def liquidation_attempted(self, manager: str, accounts: int) -> None:
        pass

    def liquidation_dropped(self, manager: str, reason: str) -> None:
        pass

    def liquidation_finished(self, report: LiquidationReport) -> None:
        pass
