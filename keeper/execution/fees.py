"""EIP-1559 fees for a liquidation and for each replacement of it, in wei.

A stuck transaction is replaced by one with the same nonce and higher fees. Pools refuse a
replacement that does not raise its fees enough, each with its own rule:

- geth: both `maxFeePerGas` and `maxPriorityFeePerGas` must be strictly higher than the pooled
  transaction's and at least `old * 110 / 100` (its default 10 % price bump). Nethermind, Erigon,
  Besu and reth also default to a 10 % bump.
- anvil 1.7.1, measured with automine off: only `maxFeePerGas` counts, and any increase is
  enough. +1 wei on the max fee with the same tip is accepted, as are +5 % and +10 % on both; the
  same max fee with a tip raised by 10 % is refused ("replacement transaction underpriced").

`DEFAULT_MIN_BUMP_BPS` therefore follows geth's 10 %, which satisfies every client above.
"""

from __future__ import annotations

from dataclasses import dataclass

BPS = 10_000
DEFAULT_MIN_BUMP_BPS = 1_000


@dataclass(frozen=True, slots=True)
class Eip1559Fees:
    """A valid fee pair: the tip can never exceed the max fee, as every node requires."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def __post_init__(self) -> None:
        if self.max_priority_fee_per_gas < 0:
            raise ValueError(f"negative priority fee {self.max_priority_fee_per_gas}")
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            raise ValueError(
                f"priority fee {self.max_priority_fee_per_gas} above max fee {self.max_fee_per_gas}"
            )


def initial_fees(
    base_fee_per_gas: int, priority_fee_per_gas: int, *, max_fee_cap: int
) -> Eip1559Fees:
    """First attempt: a max fee of twice the base fee plus the tip stays includable through five
    consecutive full blocks (+12.5 % each), so a short spike does not strand the transaction.
    The cap bounds what the keeper may ever pay per gas; the tip is clipped to it."""
    _require_non_negative(
        base_fee_per_gas=base_fee_per_gas,
        priority_fee_per_gas=priority_fee_per_gas,
        max_fee_cap=max_fee_cap,
    )
    max_fee = min(max_fee_cap, 2 * base_fee_per_gas + priority_fee_per_gas)
    return Eip1559Fees(max_fee, min(priority_fee_per_gas, max_fee))


def bumped_fees(
    previous: Eip1559Fees, base_fee_per_gas: int, *, min_bump_bps: int, max_fee_cap: int
) -> Eip1559Fees | None:
    """Fees for a replacement of a transaction priced `previous`, or None if the cap forbids one.

    Both fields rise by at least `min_bump_bps` (rounded up) and by at least 1 wei, since geth also
    requires each to be strictly higher. The max fee is raised further to twice the current base
    fee plus the new tip so the replacement is includable now, unless the cap stops it; a cap below
    the minimum bumped max fee leaves no replacement that meets the bump."""
    _require_non_negative(
        base_fee_per_gas=base_fee_per_gas, min_bump_bps=min_bump_bps, max_fee_cap=max_fee_cap
    )
    tip = _bumped(previous.max_priority_fee_per_gas, min_bump_bps)
    min_max_fee = _bumped(previous.max_fee_per_gas, min_bump_bps)
    max_fee = min(max_fee_cap, max(min_max_fee, 2 * base_fee_per_gas + tip))
    if max_fee < min_max_fee:
        return None
    return Eip1559Fees(max_fee, tip)


def max_cost_wei(gas_limit: int, fees: Eip1559Fees) -> int:
    """The most a transaction can charge its sender for gas: what its balance must cover."""
    return gas_limit * fees.max_fee_per_gas


def _bumped(value: int, bump_bps: int) -> int:
    """`value` raised by `bump_bps`, rounded up, and by at least 1 wei."""
    return max(-(-value * (BPS + bump_bps) // BPS), value + 1)


def _require_non_negative(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
