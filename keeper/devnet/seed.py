"""Opens a deterministic spread of leveraged Credit Accounts.

Each account deposits underlying as collateral, borrows, and swaps the whole loan into one risky
token: a leveraged long. Its debt is solved from a target health factor,
    Hf = (C * lt_u + D * (1 - dexFee) * lt_x) / D   =>   D = C * lt_u / (Hf - (1 - dexFee) * lt_x)
so a seed always yields the same accounts, some close to 1 and some far above it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from web3 import Web3
from web3.logs import DISCARD

from keeper.devnet.deploy import Deployment, Roles
from keeper.devnet.spec import ProtocolSpec
from keeper.devnet.tx import send

_MAX_UINT256 = 2**256 - 1
# (share of accounts, lowest target Hf in bps, highest): near 1, comfortable, very safe.
_HEALTH_BANDS = ((0.35, 10_150, 11_500), (0.40, 11_500, 16_000), (0.25, 16_000, 30_000))


@dataclass(frozen=True, slots=True)
class SeededAccount:
    address: str
    market: str
    owner: str
    risky_token: str
    target_health_factor_bps: int


def _target_health_bps(rng: random.Random) -> int:
    draw = rng.random()
    for share, low, high in _HEALTH_BANDS:
        if draw < share:
            return rng.randint(low, high)
        draw -= share
    return _HEALTH_BANDS[-1][2]


def seed_accounts(
    w3: Web3, deployment: Deployment, spec: ProtocolSpec, roles: Roles, *, count: int, seed: int
) -> list[SeededAccount]:
    rng = random.Random(seed)
    approved: set[tuple[str, str]] = set()
    seeded = []
    for index in range(count):
        market = spec.markets[index % len(spec.markets)]
        underlying = spec.token(market.underlying)
        risky = spec.token(
            rng.choice(
                sorted(s for s in market.liquidation_thresholds_bps if s != underlying.symbol)
            )
        )
        target_bps = _target_health_bps(rng)
        owner = roles.borrowers[index % len(roles.borrowers)].address
        collateral_usd = rng.randint(2_000, 200_000)
        collateral = (
            collateral_usd * 10**underlying.decimals * 10**underlying.feed_decimals
        ) // underlying.price_answer
        lt_underlying = market.liquidation_thresholds_bps[underlying.symbol]
        lt_risky = market.liquidation_thresholds_bps[risky.symbol]
        debt = (collateral * lt_underlying * 10_000) // (
            target_bps * 10_000 - (10_000 - spec.dex_fee_bps) * lt_risky
        )

        manager_name = f"CreditManager.{underlying.symbol}"
        manager = deployment.contract(w3, manager_name)
        token = deployment.contract(w3, underlying.symbol)
        send(w3, token.functions.mint(owner, collateral), roles.deployer.address)
        if (owner, manager_name) not in approved:
            send(w3, token.functions.approve(manager.address, _MAX_UINT256), owner)
            approved.add((owner, manager_name))
        receipt = send(
            w3, manager.functions.openCreditAccount(debt, token.address, collateral), owner
        )
        opened = manager.events.CreditAccountOpened().process_receipt(receipt, errors=DISCARD)[0]
        account = opened["args"]["creditAccount"]
        send(
            w3,
            manager.functions.swap(
                account,
                deployment.address("OracleSwapAdapter"),
                token.address,
                deployment.address(risky.symbol),
                debt,
                0,
            ),
            owner,
        )
        seeded.append(SeededAccount(account, underlying.symbol, owner, risky.symbol, target_bps))
    return seeded
