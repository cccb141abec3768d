"""Every way the protocol refuses an action, checked by the decoded custom error and its arguments.

The keeper decodes these errors to tell an operator why a transaction failed, and simulates
liquidations knowing which ones a state makes impossible, so each error here is pinned by name, and
by its arguments wherever they carry information (the health factor that was too low, the balance
that was short, the token that was refused). Covered: HealthFactorBelowOne from every action that
can lower Hf, and from a repayment or swap that raises Hf but leaves it below 1 (only addCollateral
skips the health check; it is how an account below 1 is rescued), access control (NotAccountOwner,
NotOwner on every admin setter, the pool's and the Credit Account's NotCreditManager),
UnknownCreditAccount, ZeroAmount, ZeroAddress, TokenNotAllowed, AdapterNotAllowed,
InsufficientCollateral, RepaymentExceedsDebt, ProtocolPaused, InvalidBasisPoints,
TokenAlreadyAllowed, TooManyCollateralTokens, NoPriceFeed, the oracle's StalePrice (and that a stale
feed is harmless for a token the account does not hold) and NonPositivePrice, the adapter's
InsufficientOutput and the pool's InsufficientLiquidity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import RPCEndpoint

from keeper.devnet.controls import advance_time, set_price
from keeper.devnet.network import Devnet
from keeper.devnet.tx import contract_at, deploy, send
from tests.contracts.helpers import (
    WAD,
    ZERO_ADDRESS,
    OpenedAccount,
    approve,
    events,
    freeze_interest,
    fresh_address,
    market,
    mint,
    open_account,
    reverted,
    set_next_block_timestamp,
    token_address,
    units,
    view_revert,
)

pytestmark = pytest.mark.chain

STALENESS_S = 3 * 3600


@dataclass(frozen=True, slots=True)
class Position:
    """A healthy USDC-market account: 10_000 USDC borrowed, 4 WETH of collateral, Hf 1.97."""

    net: Devnet
    manager: Contract
    account: str
    owner: str
    usdc: str
    weth: str
    adapter: str


@pytest.fixture
def position(chain: Devnet) -> Position:
    freeze_interest(chain)
    owner = chain.roles.borrowers[0].address
    opened = open_account(
        chain,
        owner,
        units(chain, "USDC", 10_000),
        units(chain, "WETH", 4),
        collateral_symbol="WETH",
    )
    mint(chain, "WETH", owner, units(chain, "WETH", 10))
    mint(chain, "USDC", owner, units(chain, "USDC", 1_000))
    return Position(
        net=chain,
        manager=market(chain).manager,
        account=opened.address,
        owner=owner,
        usdc=token_address(chain, "USDC"),
        weth=token_address(chain, "WETH"),
        adapter=chain.deployment.address("OracleSwapAdapter"),
    )


@pytest.fixture
def stray_token(chain: Devnet) -> str:
    """An ERC-20 no market accepts and no oracle prices."""
    return deploy(chain.w3, "TestToken", chain.roles.deployer.address, "Stray", "STRAY", 18)


AccountAction = Callable[[Position, str], ContractFunction]

OWNER_ONLY_ACTIONS: dict[str, AccountAction] = {
    "withdrawCollateral": lambda p, account: p.manager.functions.withdrawCollateral(
        account, p.usdc, 1, p.owner
    ),
    "increaseDebt": lambda p, account: p.manager.functions.increaseDebt(account, 1),
    "decreaseDebt": lambda p, account: p.manager.functions.decreaseDebt(account, 1),
    "swap": lambda p, account: p.manager.functions.swap(
        account, p.adapter, p.usdc, p.weth, 10**6, 0
    ),
    "closeCreditAccount": lambda p, account: p.manager.functions.closeCreditAccount(
        account, p.owner
    ),
}
ACCOUNT_ACTIONS: dict[str, AccountAction] = {
    "addCollateral": lambda p, account: p.manager.functions.addCollateral(account, p.weth, 1),
    **OWNER_ONLY_ACTIONS,
}


# ------------------------------------------------------------------ HealthFactorBelowOne


def test_open_below_health_factor_one_reverts(chain: Devnet) -> None:
    manager = market(chain).manager
    borrower = chain.roles.borrowers[0].address

    reason = reverted(
        chain,
        manager.functions.openCreditAccount(units(chain, "USDC", 10_000), ZERO_ADDRESS, 0),
        borrower,
    )

    # Only the borrowed 10_000 USDC, weighted at 95 %.
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": 95 * 10**16}
    assert manager.functions.creditAccountsCount().call() == 0


def test_withdraw_that_would_leave_health_factor_below_one_reverts(chain: Devnet) -> None:
    freeze_interest(chain)
    manager = market(chain).manager
    opened = _usdc_account(chain, collateral_usdc=1_000)

    reason = reverted(
        chain,
        manager.functions.withdrawCollateral(
            opened.address, token_address(chain, "USDC"), units(chain, "USDC", 600), opened.owner
        ),
        opened.owner,
    )

    # 10_400 * 0.95 / 10_000.
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": 988 * 10**15}


def test_increase_debt_that_would_leave_health_factor_below_one_reverts(chain: Devnet) -> None:
    freeze_interest(chain)
    manager = market(chain).manager
    opened = _usdc_account(chain, collateral_usdc=1_000)

    reason = reverted(
        chain,
        manager.functions.increaseDebt(opened.address, units(chain, "USDC", 20_000)),
        opened.owner,
    )

    # 31_000 * 0.95 / 30_000.
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": 29_450 * WAD // 30_000}


def test_swap_that_would_leave_health_factor_below_one_reverts(chain: Devnet) -> None:
    freeze_interest(chain)
    manager = market(chain).manager
    opened = _usdc_account(chain, collateral_usdc=600)
    amount_in = units(chain, "USDC", 10_000)

    reason = reverted(
        chain,
        manager.functions.swap(
            opened.address,
            chain.deployment.address("OracleSwapAdapter"),
            token_address(chain, "USDC"),
            token_address(chain, "LINK"),
            amount_in,
            0,
        ),
        opened.owner,
    )

    # USDC (6 + 8 decimals) -> LINK (18 + 18) at 1 / 15, less 30 bps, then valued back in USDC.
    link_out = amount_in * 10**8 * 10**22 // (15 * 10**18) * 9_970 // 10_000
    link_value = link_out * 15 * 10**18 // (10**8 * 10**22)
    weighted_value = 600 * 10**6 * 9_500 // 10_000 + link_value * 7_000 // 10_000
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": weighted_value * WAD // (10_000 * 10**6)}


def test_partial_repayment_below_health_factor_one_reverts(position: Position) -> None:
    """A repayment that raises Hf but leaves it below 1 is refused, unlike addCollateral."""
    chain = position.net
    set_price(chain.w3, chain.deployment, "WETH", 100 * 10**8, chain.roles.deployer.address)
    # 9_500 + 400 * 0.85 = 9_840 against 10_000.
    hf_before = position.manager.functions.calcHealthFactor(position.account).call()
    assert hf_before == 984 * 10**15

    reason = reverted(
        chain,
        position.manager.functions.decreaseDebt(position.account, units(chain, "USDC", 1_000)),
        position.owner,
    )

    # It would have reached 8_890 / 9_000, higher than before, and still reverts.
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": 8_890 * WAD // 9_000}
    assert reason.args["healthFactor"] > hf_before


def test_swap_that_raises_but_leaves_health_factor_below_one_reverts(position: Position) -> None:
    """Like a partial repayment, a swap into a better-weighted token is refused below 1."""
    chain = position.net
    set_price(chain.w3, chain.deployment, "WETH", 100 * 10**8, chain.roles.deployer.address)
    hf_before = position.manager.functions.calcHealthFactor(position.account).call()
    assert hf_before == 984 * 10**15  # 9_500 + 400 * 0.85 = 9_840 against 10_000

    reason = reverted(
        chain,
        position.manager.functions.swap(
            position.account,
            position.adapter,
            position.weth,
            position.usdc,
            units(chain, "WETH", 1),
            0,
        ),
        position.owner,
    )

    # 1 WETH at 100 is 100 USDC, less 30 bps = 99.7 USDC, weighted at 95 % instead of 85 %:
    # 10_099.7 * 0.95 + 300 * 0.85 = 9_594.715 + 255 = 9_849.715 against 10_000.
    assert reason.name == "HealthFactorBelowOne"
    assert reason.args == {"healthFactor": 9_849_715 * WAD // 10_000_000}
    assert reason.args["healthFactor"] > hf_before


# ------------------------------------------------------------------ access to accounts


@pytest.mark.parametrize("action", OWNER_ONLY_ACTIONS.values(), ids=OWNER_ONLY_ACTIONS.keys())
def test_owner_only_actions_revert_for_another_caller(
    position: Position, action: AccountAction
) -> None:
    stranger = position.net.roles.borrowers[1].address

    reason = reverted(position.net, action(position, position.account), stranger)

    assert reason.name == "NotAccountOwner"
    assert reason.args == {"creditAccount": position.account, "caller": stranger}


@pytest.mark.parametrize("action", ACCOUNT_ACTIONS.values(), ids=ACCOUNT_ACTIONS.keys())
def test_actions_on_an_unknown_account_revert(position: Position, action: AccountAction) -> None:
    unknown = fresh_address("unknown-account")

    reason = reverted(position.net, action(position, unknown), position.owner)

    assert reason.name == "UnknownCreditAccount"
    assert reason.args == {"creditAccount": unknown}


def test_liquidating_an_unknown_account_reverts(position: Position) -> None:
    unknown = fresh_address("unknown-account")
    liquidator = position.net.roles.keeper.address

    reason = reverted(
        position.net,
        position.manager.functions.liquidateCreditAccount(unknown, liquidator),
        liquidator,
    )

    assert reason.name == "UnknownCreditAccount"
    assert reason.args == {"creditAccount": unknown}


def test_views_of_an_unknown_account_revert(position: Position) -> None:
    unknown = fresh_address("unknown-account")
    for view in ("calcDebt", "calcTotalDebt", "calcHealthFactor", "isLiquidatable"):
        reason = view_revert(position.manager.functions[view](unknown))
        assert reason.name == "UnknownCreditAccount", view
    # An unknown account simply has no balances and no owner.
    assert position.manager.functions.calcTotalValue(unknown).call() == [0, 0]
    assert position.manager.functions.creditAccountInfo(unknown).call()[0] == ZERO_ADDRESS


# ------------------------------------------------------------------ argument checks

ZERO_AMOUNT_ACTIONS: dict[str, AccountAction] = {
    "openCreditAccount": lambda p, _: p.manager.functions.openCreditAccount(0, p.usdc, 10**6),
    "addCollateral": lambda p, account: p.manager.functions.addCollateral(account, p.weth, 0),
    "withdrawCollateral": lambda p, account: p.manager.functions.withdrawCollateral(
        account, p.weth, 0, p.owner
    ),
    "increaseDebt": lambda p, account: p.manager.functions.increaseDebt(account, 0),
    "decreaseDebt": lambda p, account: p.manager.functions.decreaseDebt(account, 0),
    "swap": lambda p, account: p.manager.functions.swap(account, p.adapter, p.usdc, p.weth, 0, 0),
}


@pytest.mark.parametrize("action", ZERO_AMOUNT_ACTIONS.values(), ids=ZERO_AMOUNT_ACTIONS.keys())
def test_zero_amounts_revert(position: Position, action: AccountAction) -> None:
    reason = reverted(position.net, action(position, position.account), position.owner)

    assert reason.name == "ZeroAmount"


ZERO_ADDRESS_ACTIONS: dict[str, AccountAction] = {
    "withdrawCollateral": lambda p, account: p.manager.functions.withdrawCollateral(
        account, p.weth, 1, ZERO_ADDRESS
    ),
    "closeCreditAccount": lambda p, account: p.manager.functions.closeCreditAccount(
        account, ZERO_ADDRESS
    ),
    "liquidateCreditAccount": lambda p, account: p.manager.functions.liquidateCreditAccount(
        account, ZERO_ADDRESS
    ),
}


@pytest.mark.parametrize("action", ZERO_ADDRESS_ACTIONS.values(), ids=ZERO_ADDRESS_ACTIONS.keys())
def test_zero_recipient_reverts(position: Position, action: AccountAction) -> None:
    reason = reverted(position.net, action(position, position.account), position.owner)

    assert reason.name == "ZeroAddress"


def test_zero_address_admin_arguments_revert(chain: Devnet) -> None:
    manager = market(chain).manager
    deployer = chain.roles.deployer.address

    for call in (
        manager.functions.setTreasury(ZERO_ADDRESS),
        manager.functions.addCollateralToken(ZERO_ADDRESS, 5_000),
    ):
        assert reverted(chain, call, deployer).name == "ZeroAddress"


def test_tokens_outside_the_market_are_refused(position: Position, stray_token: str) -> None:
    chain = position.net
    manager = position.manager
    mint_stray = contract_at(chain.w3, "TestToken", stray_token).functions.mint
    send(chain.w3, mint_stray(position.owner, 10**18), chain.roles.deployer.address)
    send(
        chain.w3,
        contract_at(chain.w3, "TestToken", stray_token).functions.approve(manager.address, 10**18),
        position.owner,
    )
    calls = {
        "openCreditAccount": manager.functions.openCreditAccount(10**6, stray_token, 10**18),
        "addCollateral": manager.functions.addCollateral(position.account, stray_token, 10**18),
        "swap": manager.functions.swap(
            position.account, position.adapter, position.usdc, stray_token, 10**6, 0
        ),
    }
    for name, call in calls.items():
        reason = reverted(chain, call, position.owner)
        assert reason.name == "TokenNotAllowed", name
        assert reason.args == {"token": stray_token}, name

    reason = reverted(
        chain,
        manager.functions.setLiquidationThreshold(stray_token, 5_000),
        chain.roles.deployer.address,
    )
    assert reason.name == "TokenNotAllowed"
    assert reason.args == {"token": stray_token}


def test_swap_through_an_adapter_not_allowed_reverts(position: Position) -> None:
    chain = position.net
    oracle_address = chain.deployment.address("PriceOracle")

    reason = reverted(
        chain,
        position.manager.functions.swap(
            position.account, oracle_address, position.usdc, position.weth, 10**6, 0
        ),
        position.owner,
    )
    assert reason.name == "AdapterNotAllowed"
    assert reason.args == {"adapter": oracle_address}

    send(
        chain.w3,
        position.manager.functions.setAdapter(position.adapter, False),
        chain.roles.deployer.address,
    )
    reason = reverted(chain, OWNER_ONLY_ACTIONS["swap"](position, position.account), position.owner)
    assert reason.name == "AdapterNotAllowed"
    assert reason.args == {"adapter": position.adapter}


def test_moving_more_than_the_account_holds_reverts(position: Position) -> None:
    chain = position.net
    manager = position.manager
    wbtc = token_address(chain, "WBTC")
    four_weth = units(chain, "WETH", 4)
    cases = {
        "withdraw beyond the balance": (
            manager.functions.withdrawCollateral(
                position.account, position.weth, four_weth + 1, position.owner
            ),
            {"token": position.weth, "balance": four_weth, "amount": four_weth + 1},
        ),
        "withdraw a token never deposited": (
            manager.functions.withdrawCollateral(position.account, wbtc, 1, position.owner),
            {"token": wbtc, "balance": 0, "amount": 1},
        ),
        "swap beyond the balance": (
            manager.functions.swap(
                position.account, position.adapter, position.weth, position.usdc, four_weth + 1, 0
            ),
            {"token": position.weth, "balance": four_weth, "amount": four_weth + 1},
        ),
    }
    for name, (call, expected_args) in cases.items():
        reason = reverted(chain, call, position.owner)
        assert reason.name == "InsufficientCollateral", name
        assert reason.args == expected_args, name


def test_repayment_beyond_the_underlying_held_reverts(position: Position) -> None:
    chain = position.net
    usdc_held = units(chain, "USDC", 10_000)
    send(
        chain.w3,
        position.manager.functions.withdrawCollateral(
            position.account, position.usdc, units(chain, "USDC", 4_000), position.owner
        ),
        position.owner,
    )

    reason = reverted(
        chain,
        position.manager.functions.decreaseDebt(position.account, units(chain, "USDC", 7_000)),
        position.owner,
    )

    assert reason.name == "InsufficientCollateral"
    assert reason.args == {
        "token": position.usdc,
        "balance": usdc_held - units(chain, "USDC", 4_000),
        "amount": units(chain, "USDC", 7_000),
    }


def test_repayment_beyond_the_debt_reverts(position: Position) -> None:
    total_debt = position.manager.functions.calcTotalDebt(position.account).call()
    assert total_debt == units(position.net, "USDC", 10_000)  # interest is frozen

    reason = reverted(
        position.net,
        position.manager.functions.decreaseDebt(position.account, total_debt + 1),
        position.owner,
    )

    assert reason.name == "RepaymentExceedsDebt"
    assert reason.args == {"amount": total_debt + 1, "totalDebt": total_debt}


def test_swap_below_the_minimum_output_reverts(position: Position) -> None:
    chain = position.net
    adapter = chain.deployment.contract(chain.w3, "OracleSwapAdapter")
    amount_in = units(chain, "WETH", 1)
    quoted = adapter.functions.quote(position.weth, position.usdc, amount_in).call()
    assert quoted == 2_991 * 10**6  # 3_000 USDC less 30 bps

    reason = reverted(
        chain,
        position.manager.functions.swap(
            position.account, adapter.address, position.weth, position.usdc, amount_in, quoted + 1
        ),
        position.owner,
    )

    assert reason.name == "InsufficientOutput"
    assert reason.args == {"amountOut": quoted, "minAmountOut": quoted + 1}


def test_borrowing_more_than_the_pool_holds_reverts(chain: Devnet) -> None:
    weth = market(chain, "WETH")
    available = weth.pool.functions.availableLiquidity().call()
    assert available == units(chain, "WETH", 50_000)

    reason = reverted(
        chain,
        weth.manager.functions.openCreditAccount(available + 1, ZERO_ADDRESS, 0),
        chain.roles.borrowers[0].address,
    )

    assert reason.name == "InsufficientLiquidity"
    assert reason.args == {"available": available, "requested": available + 1}


# ------------------------------------------------------------------ pause


PAUSABLE_ACTIONS: dict[str, AccountAction] = {
    "openCreditAccount": lambda p, _: p.manager.functions.openCreditAccount(10**6, p.usdc, 10**6),
    **ACCOUNT_ACTIONS,
}


@pytest.mark.parametrize("action", PAUSABLE_ACTIONS.values(), ids=PAUSABLE_ACTIONS.keys())
def test_actions_revert_while_paused(position: Position, action: AccountAction) -> None:
    chain = position.net
    send(chain.w3, position.manager.functions.pause(), chain.roles.deployer.address)

    reason = reverted(chain, action(position, position.account), position.owner)

    assert reason.name == "ProtocolPaused"


def test_unpause_restores_every_action(position: Position) -> None:
    chain = position.net
    deployer = chain.roles.deployer.address
    send(chain.w3, position.manager.functions.pause(), deployer)
    assert position.manager.functions.paused().call()
    send(chain.w3, position.manager.functions.unpause(), deployer)
    assert not position.manager.functions.paused().call()

    for name, action in PAUSABLE_ACTIONS.items():
        receipt = send(chain.w3, action(position, position.account), position.owner)
        assert receipt["status"] == 1, name
    assert position.manager.functions.creditAccountInfo(position.account).call()[0] == ZERO_ADDRESS


# ------------------------------------------------------------------ admin


AdminCall = Callable[[Devnet, Contract], ContractFunction]

ADMIN_SETTERS: dict[str, AdminCall] = {
    "pause": lambda net, manager: manager.functions.pause(),
    "unpause": lambda net, manager: manager.functions.unpause(),
    "setFees": lambda net, manager: manager.functions.setFees(500, 100, 300),
    "setLiquidationThreshold": lambda net, manager: manager.functions.setLiquidationThreshold(
        token_address(net, "WETH"), 5_000
    ),
    "addCollateralToken": lambda net, manager: manager.functions.addCollateralToken(
        fresh_address("new-token"), 5_000
    ),
    "setAdapter": lambda net, manager: manager.functions.setAdapter(
        fresh_address("new-adapter"), True
    ),
    "setEmergencyLiquidator": lambda net, manager: manager.functions.setEmergencyLiquidator(
        net.roles.keeper.address, True
    ),
    "setTreasury": lambda net, manager: manager.functions.setTreasury(
        fresh_address("new-treasury")
    ),
}


@pytest.mark.parametrize("market_symbol", ["USDC", "WETH"])
@pytest.mark.parametrize("setter", ADMIN_SETTERS.values(), ids=ADMIN_SETTERS.keys())
def test_admin_setters_revert_for_anyone_but_the_owner(
    chain: Devnet, setter: AdminCall, market_symbol: str
) -> None:
    manager = market(chain, market_symbol).manager
    for outsider in (chain.roles.keeper.address, chain.roles.emergency_liquidator.address):
        reason = reverted(chain, setter(chain, manager), outsider)
        assert reason.name == "NotOwner"


def test_admin_setters_change_state_for_the_owner(chain: Devnet) -> None:
    manager = market(chain).manager
    deployer = chain.roles.deployer.address
    weth = token_address(chain, "WETH")
    new_treasury = fresh_address("new-treasury")
    new_adapter = fresh_address("new-adapter")

    receipt = send(chain.w3, manager.functions.setFees(500, 100, 300), deployer)
    assert events(manager, "FeesSet", receipt) == [
        {"feeInterest": 500, "liquidationFee": 100, "liquidationPremium": 300}
    ]
    assert (
        manager.functions.feeInterest().call(),
        manager.functions.liquidationFee().call(),
        manager.functions.liquidationPremium().call(),
    ) == (500, 100, 300)
    send(chain.w3, manager.functions.setLiquidationThreshold(weth, 5_000), deployer)
    assert manager.functions.liquidationThreshold(weth).call() == 5_000
    send(chain.w3, manager.functions.setTreasury(new_treasury), deployer)
    assert manager.functions.treasury().call() == new_treasury
    send(chain.w3, manager.functions.setAdapter(new_adapter, True), deployer)
    assert manager.functions.isAdapterAllowed(new_adapter).call()
    send(
        chain.w3,
        manager.functions.setEmergencyLiquidator(chain.roles.keeper.address, True),
        deployer,
    )
    assert manager.functions.isEmergencyLiquidator(chain.roles.keeper.address).call()
    send(
        chain.w3,
        manager.functions.setEmergencyLiquidator(chain.roles.emergency_liquidator.address, False),
        deployer,
    )
    assert not manager.functions.isEmergencyLiquidator(
        chain.roles.emergency_liquidator.address
    ).call()


def test_pool_oracle_feed_and_token_admin_calls_revert_for_outsiders(chain: Devnet) -> None:
    outsider = chain.roles.keeper.address
    pool = market(chain).pool
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    feed = chain.deployment.contract(chain.w3, "PriceFeed.WETH")
    usdc = chain.deployment.contract(chain.w3, "USDC")
    calls = {
        "LendingPool.setInterestRate": pool.functions.setInterestRate(0),
        "LendingPool.setCreditManager": pool.functions.setCreditManager(outsider),
        "PriceOracle.setPriceFeed": oracle.functions.setPriceFeed(usdc.address, feed.address, 1),
        "PriceFeed.updateAnswer": feed.functions.updateAnswer(1),
        "TestToken.mint": usdc.functions.mint(outsider, 1),
    }
    for name, call in calls.items():
        assert reverted(chain, call, outsider).name == "NotOwner", name

    reason = reverted(
        chain, pool.functions.setCreditManager(outsider), chain.roles.deployer.address
    )
    assert reason.name == "CreditManagerAlreadySet"


@pytest.mark.parametrize(
    ("setter", "invalid_value"),
    [
        pytest.param(lambda net, m: m.functions.setFees(10_001, 0, 0), 10_001, id="feeInterest"),
        pytest.param(lambda net, m: m.functions.setFees(0, 5_000, 5_001), 10_001, id="fee+premium"),
        pytest.param(
            lambda net, m: m.functions.setLiquidationThreshold(token_address(net, "WETH"), 10_001),
            10_001,
            id="setLiquidationThreshold",
        ),
        pytest.param(
            lambda net, m: m.functions.addCollateralToken(fresh_address("new-token"), 65_535),
            65_535,
            id="addCollateralToken",
        ),
    ],
)
def test_basis_points_above_ten_thousand_revert(
    chain: Devnet, setter: AdminCall, invalid_value: int
) -> None:
    reason = reverted(chain, setter(chain, market(chain).manager), chain.roles.deployer.address)

    assert reason.name == "InvalidBasisPoints"
    assert reason.args == {"value": invalid_value}


def test_basis_points_of_exactly_ten_thousand_are_accepted(chain: Devnet) -> None:
    manager = market(chain).manager
    deployer = chain.roles.deployer.address

    send(chain.w3, manager.functions.setFees(10_000, 4_000, 6_000), deployer)
    send(
        chain.w3,
        manager.functions.setLiquidationThreshold(token_address(chain, "LINK"), 10_000),
        deployer,
    )

    assert manager.functions.feeInterest().call() == 10_000
    assert manager.functions.liquidationThreshold(token_address(chain, "LINK")).call() == 10_000


def test_adding_a_collateral_token_twice_reverts(chain: Devnet) -> None:
    weth = token_address(chain, "WETH")

    reason = reverted(
        chain,
        market(chain).manager.functions.addCollateralToken(weth, 5_000),
        chain.roles.deployer.address,
    )

    assert reason.name == "TokenAlreadyAllowed"
    assert reason.args == {"token": weth}


def test_a_collateral_token_needs_a_price_feed(chain: Devnet, stray_token: str) -> None:
    reason = reverted(
        chain,
        market(chain).manager.functions.addCollateralToken(stray_token, 5_000),
        chain.roles.deployer.address,
    )

    assert reason.name == "NoPriceFeed"
    assert reason.args == {"token": stray_token}


def test_at_most_sixteen_collateral_tokens(chain: Devnet) -> None:
    manager = market(chain).manager
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    deployer = chain.roles.deployer.address
    feed = chain.deployment.address("PriceFeed.LINK")
    room = 16 - len(manager.functions.collateralTokens().call())
    for index in range(room):
        extra = deploy(chain.w3, "TestToken", deployer, f"Extra {index}", f"X{index}", 18)
        send(chain.w3, oracle.functions.setPriceFeed(extra, feed, STALENESS_S), deployer)
        send(chain.w3, manager.functions.addCollateralToken(extra, 5_000), deployer)
    assert len(manager.functions.collateralTokens().call()) == 16

    reason = reverted(
        chain, manager.functions.addCollateralToken(fresh_address("17th"), 5_000), deployer
    )

    assert reason.name == "TooManyCollateralTokens"


# ------------------------------------------------------------------ liquidation refusals


def test_liquidating_a_healthy_account_reverts(position: Position) -> None:
    liquidator = position.net.roles.keeper.address
    health_factor_wad = position.manager.functions.calcHealthFactor(position.account).call()
    assert health_factor_wad == 197 * 10**16

    reason = reverted(
        position.net,
        position.manager.functions.liquidateCreditAccount(position.account, liquidator),
        liquidator,
    )

    assert reason.name == "NotLiquidatable"
    assert reason.args == {"healthFactor": health_factor_wad}


# ------------------------------------------------------------------ oracle


def test_stale_prices_block_views_and_actions_that_need_them(position: Position) -> None:
    chain = position.net
    manager = position.manager
    weth_updated_at = (
        chain.deployment.contract(chain.w3, "PriceFeed.WETH").functions.latestRoundData().call()[3]
    )
    advance_time(chain.w3, STALENESS_S + 1)

    for view in ("calcTotalValue", "calcHealthFactor", "isLiquidatable"):
        reason = view_revert(manager.functions[view](position.account))
        assert reason.name == "StalePrice", view
        assert reason.args == {"token": position.weth, "updatedAt": weth_updated_at}
    liquidator = chain.roles.keeper.address
    calls = {
        "withdrawCollateral": OWNER_ONLY_ACTIONS["withdrawCollateral"](position, position.account),
        "increaseDebt": OWNER_ONLY_ACTIONS["increaseDebt"](position, position.account),
        "decreaseDebt": OWNER_ONLY_ACTIONS["decreaseDebt"](position, position.account),
        "swap": OWNER_ONLY_ACTIONS["swap"](position, position.account),
        "openCreditAccount": manager.functions.openCreditAccount(10**6, position.weth, 10**18),
        "liquidateCreditAccount": manager.functions.liquidateCreditAccount(
            position.account, liquidator
        ),
    }
    for name, call in calls.items():
        sender = liquidator if name == "liquidateCreditAccount" else position.owner
        reason = reverted(chain, call, sender)
        assert reason.name == "StalePrice", name


def test_actions_that_need_no_price_work_with_stale_feeds(position: Position) -> None:
    chain = position.net
    manager = position.manager
    usdc_only = _usdc_account(chain, collateral_usdc=1_000, borrower_index=1)
    advance_time(chain.w3, STALENESS_S + 1)

    # Underlying is valued 1:1 without the oracle: a USDC-only account needs no feed at all.
    assert manager.functions.calcHealthFactor(usdc_only.address).call() == 1045 * 10**15
    send(chain.w3, manager.functions.decreaseDebt(usdc_only.address, 10**6), usdc_only.owner)
    send(
        chain.w3,
        manager.functions.withdrawCollateral(
            usdc_only.address, position.usdc, 10**6, usdc_only.owner
        ),
        usdc_only.owner,
    )
    # Adding collateral and closing never value the account.
    send(
        chain.w3,
        manager.functions.addCollateral(position.account, position.weth, 1),
        position.owner,
    )
    send(
        chain.w3,
        manager.functions.closeCreditAccount(position.account, position.owner),
        position.owner,
    )
    assert manager.functions.creditAccountInfo(position.account).call()[0] == ZERO_ADDRESS


def test_a_stale_feed_only_matters_for_tokens_the_account_holds(position: Position) -> None:
    chain = position.net
    manager = position.manager
    deployer = chain.roles.deployer.address
    advance_time(chain.w3, STALENESS_S + 1)
    for symbol in ("USDC", "WETH", "LINK"):  # everything but WBTC is fresh again
        answer = (
            chain.deployment.contract(chain.w3, f"PriceFeed.{symbol}")
            .functions.latestAnswer()
            .call()
        )
        set_price(chain.w3, chain.deployment, symbol, answer, deployer)

    assert manager.functions.calcHealthFactor(position.account).call() == 197 * 10**16
    send(
        chain.w3,
        manager.functions.withdrawCollateral(position.account, position.weth, 1, position.owner),
        position.owner,
    )

    wbtc = token_address(chain, "WBTC")
    mint(chain, "WBTC", position.owner, units(chain, "WBTC", 1))
    approve(chain, "WBTC", position.owner, manager.address)
    send(chain.w3, manager.functions.addCollateral(position.account, wbtc, 1), position.owner)
    reason = view_revert(manager.functions.calcHealthFactor(position.account))
    assert reason.name == "StalePrice"
    assert reason.args["token"] == wbtc


def test_staleness_starts_one_second_after_the_period(chain: Devnet) -> None:
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    weth = token_address(chain, "WETH")
    updated_at = (
        chain.deployment.contract(chain.w3, "PriceFeed.WETH").functions.latestRoundData().call()[3]
    )

    set_next_block_timestamp(chain, updated_at + STALENESS_S)
    chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    assert oracle.functions.getPrice(weth).call() == [3_000 * 10**8, 8]

    set_next_block_timestamp(chain, updated_at + STALENESS_S + 1)
    chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    assert chain.w3.eth.get_block("latest")["timestamp"] == updated_at + STALENESS_S + 1
    reason = view_revert(oracle.functions.getPrice(weth))
    assert reason.name == "StalePrice"
    assert reason.args == {"token": weth, "updatedAt": updated_at}


@pytest.mark.parametrize("answer", [0, -1, -3_000 * 10**8])
def test_non_positive_prices_are_refused(position: Position, answer: int) -> None:
    chain = position.net
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    set_price(chain.w3, chain.deployment, "WETH", answer, chain.roles.deployer.address)

    for call in (
        oracle.functions.getPrice(position.weth),
        oracle.functions.convert(10**18, position.weth, position.usdc),
        position.manager.functions.calcHealthFactor(position.account),
    ):
        reason = view_revert(call)
        assert reason.name == "NonPositivePrice"
        assert reason.args == {"token": position.weth, "answer": answer}
    reason = reverted(
        chain, OWNER_ONLY_ACTIONS["increaseDebt"](position, position.account), position.owner
    )
    assert reason.name == "NonPositivePrice"


def test_tokens_without_a_feed_cannot_be_priced(chain: Devnet, stray_token: str) -> None:
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")

    reason = view_revert(oracle.functions.getPrice(stray_token))

    assert reason.name == "NoPriceFeed"
    assert reason.args == {"token": stray_token}


# ------------------------------------------------------------------ the pool and the account


def test_only_the_manager_may_move_pool_funds(position: Position) -> None:
    chain = position.net
    pool = market(chain).pool
    for sender in (chain.roles.deployer.address, position.owner):
        for call in (
            pool.functions.borrow(position.account, 1),
            pool.functions.repay(position.account, 1, 0, 0),
        ):
            assert reverted(chain, call, sender).name == "NotCreditManager"


def test_only_the_manager_may_move_account_funds(position: Position) -> None:
    chain = position.net
    credit_account = contract_at(chain.w3, "CreditAccount", position.account)
    calls = {
        "transfer": credit_account.functions.transfer(position.weth, position.owner, 1),
        "approve": credit_account.functions.approve(position.weth, position.owner, 1),
        "execute": credit_account.functions.execute(position.weth, b""),
    }
    for sender in (position.owner, chain.roles.deployer.address):
        for name, call in calls.items():
            assert reverted(chain, call, sender).name == "NotCreditManager", name

    reason = reverted(chain, credit_account.functions.initialize(position.owner), position.owner)
    assert reason.name == "AlreadyInitialized"
    implementation = contract_at(
        chain.w3, "CreditAccount", position.manager.functions.accountImplementation().call()
    )
    assert implementation.functions.creditManager().call() == position.manager.address
    reason = reverted(chain, implementation.functions.initialize(position.owner), position.owner)
    assert reason.name == "AlreadyInitialized"


def _usdc_account(chain: Devnet, *, collateral_usdc: int, borrower_index: int = 0) -> OpenedAccount:
    """10_000 USDC borrowed against `collateral_usdc` of USDC."""
    return open_account(
        chain,
        chain.roles.borrowers[borrower_index].address,
        units(chain, "USDC", 10_000),
        units(chain, "USDC", collateral_usdc),
    )
