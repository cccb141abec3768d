"""Reads, at one block, the raw inputs a keeper holds for an account: stored fields, not views.

Only storage getters are read here (balances, principal, index, feed answers, thresholds, the
pool's rate checkpoint); everything derived (interest, value, health factor) is left to the math
under test, whose results are then compared with the contract's own computed views.
"""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from keeper.devnet.deploy import Deployment
from keeper.devnet.tx import contract_at, revert_reason
from keeper.protocol.errors import RevertReason
from keeper.state.model import CreditAccountState, Fees, InterestRate, Market, TokenPrice


@dataclass(frozen=True, slots=True)
class ViewFigures:
    """What the contract's views report, or the revert they raise."""

    principal: int = 0
    interest: int = 0
    fee: int = 0
    total_value: int = 0
    weighted_value: int = 0
    health_factor_wad: int = 0
    is_liquidatable: bool = False
    revert: RevertReason | None = None


def read_market(
    w3: Web3, deployment: Deployment, market_symbol: str, block: int
) -> tuple[Contract, Market]:
    manager = deployment.contract(w3, f"CreditManager.{market_symbol}")
    pool = deployment.contract(w3, f"LendingPool.{market_symbol}")
    oracle = deployment.contract(w3, "PriceOracle")
    tokens = manager.functions.collateralTokens().call(block_identifier=block)
    thresholds = {
        t: manager.functions.liquidationThreshold(t).call(block_identifier=block) for t in tokens
    }
    prices = {}
    for token in tokens:
        feed, token_decimals, feed_decimals, staleness = oracle.functions.feedConfig(token).call(
            block_identifier=block
        )
        _, answer, _, updated_at, _ = (
            contract_at(w3, "PriceFeed", feed)
            .functions.latestRoundData()
            .call(block_identifier=block)
        )
        prices[token] = TokenPrice(answer, feed_decimals, token_decimals, updated_at, staleness)
    rate = InterestRate(
        pool.functions.cumulativeIndexAtLastUpdate().call(block_identifier=block),
        pool.functions.lastUpdateTimestamp().call(block_identifier=block),
        pool.functions.interestRatePerSecond().call(block_identifier=block),
    )
    fees = Fees(
        manager.functions.feeInterest().call(block_identifier=block),
        manager.functions.liquidationFee().call(block_identifier=block),
        manager.functions.liquidationPremium().call(block_identifier=block),
    )
    underlying = manager.functions.underlying().call(block_identifier=block)
    return manager, Market(underlying, rate, fees, thresholds, prices)


def read_account(manager: Contract, account: str, block: int) -> CreditAccountState:
    owner, principal, index, interest, fees = manager.functions.creditAccountInfo(account).call(
        block_identifier=block
    )
    tokens, amounts = manager.functions.balances(account).call(block_identifier=block)
    return CreditAccountState(
        account, owner, principal, index, interest, fees, dict(zip(tokens, amounts, strict=True))
    )


def read_views(manager: Contract, account: str, block: int) -> ViewFigures:
    """The manager's computed views for `account` at `block`; a revert is captured, decoded."""
    views = manager.functions
    try:
        principal, interest, fee = views.calcDebt(account).call(block_identifier=block)
        total_value, weighted_value = views.calcTotalValue(account).call(block_identifier=block)
        return ViewFigures(
            principal=principal,
            interest=interest,
            fee=fee,
            total_value=total_value,
            weighted_value=weighted_value,
            health_factor_wad=views.calcHealthFactor(account).call(block_identifier=block),
            is_liquidatable=views.isLiquidatable(account).call(block_identifier=block),
        )
    except ContractLogicError as error:
        return ViewFigures(revert=revert_reason(error))
