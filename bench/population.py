"""Who the benchmark devnet's accounts are: plain numbers, decided before anything is deployed.

Every account borrows the same debt in the USDC market. Most are healthy and hold one of WETH,
WBTC or LINK as collateral, so a WETH price update revalues a third of them: the work a real
crash makes a keeper do. The rest are *victims*, in groups that go under one group at a time as
WETH steps down a price staircase. Group g holds just enough WETH to be liquidatable below
`threshold_answer(g)`; round g sets WETH halfway between its threshold and the next group's, so
exactly that group crosses 1 (the margins are 0.2 %, far wider than any rounding or the interest
that accrues during a run).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keeper.devnet.spec import DEFAULT_SPEC, TokenSpec

DEBT_USDC = 500
# Staircase step between two groups' thresholds, in tenths of a percent of the start price.
_STEP_PERMILLE = 4
_HEALTHY_TOKENS = ("WETH", "WBTC", "LINK")
# Healthy accounts hold collateral worth this many USD: Hf ~1.3 to ~2.5 at any staircase price.
_HEALTHY_COLLATERAL_USD = (300, 900)


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """One account to open: its collateral token and amount (smallest units), and its group
    (the round that liquidates it; None for a healthy account)."""

    collateral_token: str
    collateral: int
    group: int | None


@dataclass(frozen=True, slots=True)
class Population:
    accounts: tuple[AccountPlan, ...]
    group_sizes: tuple[int, ...]
    weth_start_answer: int

    @property
    def debt(self) -> int:
        usdc_unit: int = 10 ** DEFAULT_SPEC.token("USDC").decimals
        return DEBT_USDC * usdc_unit

    def threshold_answer(self, group: int) -> int:
        """The WETH feed answer below which `group`'s accounts are liquidatable."""
        return self.weth_start_answer * (1000 - _STEP_PERMILLE * (group + 1)) // 1000

    def round_answer(self, group: int) -> int:
        """The WETH answer of round `group`: below its threshold, above the next group's."""
        permille = 1000 - _STEP_PERMILLE * (group + 1) - _STEP_PERMILLE // 2
        return self.weth_start_answer * permille // 1000


def plan_population(accounts: int, group_sizes: tuple[int, ...], *, seed: int = 1) -> Population:
    """`accounts` accounts of which `sum(group_sizes)` are victims; raises `ValueError` when the
    victims would be more than half of them (the healthy holders are what makes a crash cost)."""
    victims = sum(group_sizes)
    if accounts < 1 or any(size < 1 for size in group_sizes):
        raise ValueError(f"accounts = {accounts}, groups = {group_sizes}: all must be positive")
    if 2 * victims > accounts:
        raise ValueError(
            f"{victims} victims in {len(group_sizes)} rounds need at least {2 * victims} "
            f"accounts, got {accounts}: raise --accounts or lower the rounds"
        )
    weth = DEFAULT_SPEC.token("WETH")
    usdc = DEFAULT_SPEC.token("USDC")
    population = Population((), group_sizes, weth.price_answer)
    planned: list[AccountPlan] = []
    for group, size in enumerate(group_sizes):
        amount = _victim_weth(population.debt, population.threshold_answer(group), weth, usdc)
        planned += [AccountPlan("WETH", amount, group)] * size
    rng = random.Random(seed)
    healthy = accounts - victims
    for position, symbol in enumerate(_HEALTHY_TOKENS):
        # An equal share each (the first tokens take the remainder), one token after the other
        # so the opener's transactions each deposit a single token.
        share = healthy // len(_HEALTHY_TOKENS) + (position < healthy % len(_HEALTHY_TOKENS))
        token = DEFAULT_SPEC.token(symbol)
        for _ in range(share):
            usd = rng.randint(*_HEALTHY_COLLATERAL_USD)
            amount = usd * 10**token.decimals * 10**token.feed_decimals // token.price_answer
            planned.append(AccountPlan(symbol, amount, None))
    return Population(tuple(planned), group_sizes, weth.price_answer)


def _victim_weth(debt: int, threshold_answer: int, weth: TokenSpec, usdc: TokenSpec) -> int:
    """WETH whose weighted value at `threshold_answer` exactly fills the gap between the debt and
    the weighted borrowed USDC the account holds: Hf = 1 there, below 1 under it.

    The account holds its debt in USDC (weighted at the USDC threshold) plus w WETH (weighted at
    the WETH threshold), so Hf = 1 when lt_weth * w * p = (1 - lt_usdc) * debt, in USDC units."""
    thresholds = DEFAULT_SPEC.markets[0].liquidation_thresholds_bps
    lt_weth, lt_usdc = thresholds["WETH"], thresholds["USDC"]
    gap_usdc = debt * (10_000 - lt_usdc)  # times 10_000
    # value in USDC units of w wei at answer p: w * p * 10^usdc_dec / (10^weth_dec * usdc_answer)
    weth_unit: int = 10**weth.decimals
    usdc_unit: int = 10**usdc.decimals
    return gap_usdc * weth_unit * usdc.price_answer // (lt_weth * threshold_answer * usdc_unit)
