"""ProtocolState: the protocol rebuilt from hand-built events, and what each batch reports."""

from __future__ import annotations

import pytest

from keeper.protocol.events import (
    CollateralTokenSet,
    CreditManagerInitialized,
    EmergencyLiquidatorSet,
    FeesSet,
    InterestRateUpdated,
    Paused,
    PriceFeedSet,
    Unpaused,
)
from keeper.state.model import CreditAccountState, Fees, InterestRate, TokenPrice
from keeper.state.store import (
    FeedConfig,
    ProtocolState,
    StateChanges,
    UnknownCreditAccountError,
)
from tests.unit.protocol_builder import PRICES, RAY, T0, Chain, Deployed, address, usdc_market

ACCOUNT, OTHER, OWNER, ADMIN = address(500), address(501), address(502), address(503)


def deployed_state(*markets: Deployed) -> ProtocolState:
    state = ProtocolState(m.market_state() for m in markets)
    for market in markets:
        state.apply(market.deploy_events(answers=PRICES))
    return state


@pytest.fixture
def usdc() -> Deployed:
    return usdc_market(Chain())


def test_deploy_events_configure_the_market(usdc: Deployed) -> None:
    state = ProtocolState([usdc.market_state()])
    with pytest.raises(LookupError, match="no InterestRateUpdated"):
        state.market_view(usdc.manager)

    changes = state.apply(usdc.deploy_events(rate_ray=7, index_ray=RAY + 5, answers=PRICES))

    assert changes.markets == {usdc.manager}
    assert changes.feeds_added
    assert changes.prices == {(usdc.oracle, t.address) for t in usdc.tokens.values()}
    assert (changes.accounts, changes.removed, changes.permissions) == (set(), set(), set())
    assert changes.liquidations == []
    view = state.market_view(usdc.manager)
    assert view.underlying == usdc.underlying.address
    assert view.interest_rate == InterestRate(RAY + 5, T0, 7)
    assert view.fees == Fees(1_000, 150, 400)
    assert view.liquidation_thresholds_bps == {
        usdc.token("USDC"): 9_000,
        usdc.token("WETH"): 8_000,
        usdc.token("WBTC"): 7_500,
    }
    assert view.prices[usdc.token("WETH")] == TokenPrice(2_000_00000000, 8, 18, T0, 3_600)
    assert view.prices[usdc.token("USDC")] == TokenPrice(1_00000000, 8, 6, T0, 86_400)
    assert state.feed_configs[(usdc.oracle, usdc.token("WBTC"))] == FeedConfig(
        usdc.tokens["WBTC"].feed, 8, 8, 7_200
    )
    assert state.account_count() == 0


def test_account_lifecycle_open_balance_debt_close(usdc: Deployed) -> None:
    state = deployed_state(usdc)
    weth_key, usdc_key = (usdc.oracle, usdc.token("WETH")), (usdc.oracle, usdc.token("USDC"))
    key = (usdc.manager, ACCOUNT)

    opened = state.apply(usdc.open(ACCOUNT, OWNER, principal=0)[:1])
    assert opened.accounts == {key}
    assert not opened.removed
    account = state.markets[usdc.manager].accounts[ACCOUNT]
    assert account == CreditAccountState(ACCOUNT, OWNER, 0, 1, 0, 0, {})

    debt = state.apply([usdc.debt(ACCOUNT, 5_000 * 10**6, RAY + 3, 2, 1)])
    assert debt.accounts == {key}
    assert not debt.prices
    account = state.markets[usdc.manager].accounts[ACCOUNT]
    assert (account.principal, account.cumulative_index_ray) == (5_000 * 10**6, RAY + 3)
    assert (account.accrued_interest, account.accrued_fees) == (2, 1)

    balances = state.apply(
        [usdc.balance(ACCOUNT, "USDC", 1_000 * 10**6), usdc.balance(ACCOUNT, "WETH", 3 * 10**18)]
    )
    assert balances.accounts == {key}
    account = state.markets[usdc.manager].accounts[ACCOUNT]
    assert account.balances == {usdc.token("USDC"): 1_000 * 10**6, usdc.token("WETH"): 3 * 10**18}
    assert account.principal == 5_000 * 10**6  # a balance event leaves the debt alone
    assert state.holders(weth_key) == {key}
    assert state.holders(usdc_key) == {key}

    # A swap of all WETH back: the balance goes to 0 and the account stops holding WETH.
    state.apply([usdc.balance(ACCOUNT, "WETH", 0), usdc.balance(ACCOUNT, "USDC", 7_000 * 10**6)])
    assert state.holders(weth_key) == set()
    assert state.holders(usdc_key) == {key}
    assert state.markets[usdc.manager].accounts[ACCOUNT].balances[usdc.token("WETH")] == 0

    state.apply([usdc.balance(ACCOUNT, "WBTC", 10**8)])
    closed = state.apply([usdc.close(ACCOUNT, OWNER)])
    assert closed.removed == {key}
    assert closed.accounts == set()
    assert closed.liquidations == []
    assert ACCOUNT not in state.markets[usdc.manager].accounts
    assert state.account_count() == 0
    for token in usdc.tokens.values():
        assert state.holders((usdc.oracle, token.address)) == set(), token.symbol


def test_liquidation_removes_the_account_and_is_reported(usdc: Deployed) -> None:
    state = deployed_state(usdc)
    state.apply(usdc.open(ACCOUNT, OWNER, principal=10, balances={"WETH": 1, "USDC": 2}))
    state.apply(usdc.open(OTHER, OWNER, principal=10, balances={"WETH": 1}))
    liquidation = usdc.liquidated(ACCOUNT, OWNER, ADMIN)

    changes = state.apply([liquidation, usdc.balance(OTHER, "WETH", 4)])

    assert changes.liquidations == [liquidation]
    assert changes.removed == {(usdc.manager, ACCOUNT)}
    assert changes.accounts == {(usdc.manager, OTHER)}
    assert state.holders((usdc.oracle, usdc.token("WETH"))) == {(usdc.manager, OTHER)}
    assert state.holders((usdc.oracle, usdc.token("USDC"))) == set()
    assert state.account_count() == 1


def test_an_account_opened_and_closed_in_one_batch_is_only_removed(usdc: Deployed) -> None:
    state = deployed_state(usdc)
    changes = state.apply(
        [
            *usdc.open(ACCOUNT, OWNER, principal=10, balances={"WETH": 1}),
            usdc.close(ACCOUNT, OWNER),
        ]
    )
    assert changes.removed == {(usdc.manager, ACCOUNT)}
    assert changes.accounts == set()
    assert state.holders((usdc.oracle, usdc.token("WETH"))) == set()


def test_state_changes_is_falsy_only_when_empty() -> None:
    assert not StateChanges()
    assert StateChanges(feeds_added=True)
    assert StateChanges(permissions={"0x1"})
    assert StateChanges(removed={("0x1", "0x2")})


def test_feed_set_then_answer_read_then_answer_event(usdc: Deployed) -> None:
    state = ProtocolState([usdc.market_state()])
    state.apply(usdc.deploy_events())  # feeds set, no answer yet
    weth, feed = usdc.token("WETH"), usdc.tokens["WETH"].feed
    assert weth not in state.prices[usdc.oracle]
    assert state.feeds()[feed] == {(usdc.oracle, weth)}

    # A latestRoundData read at start.
    assert state.set_answer(feed, 1_900_00000000, T0 - 10) == {(usdc.oracle, weth)}
    assert state.prices[usdc.oracle][weth] == TokenPrice(1_900_00000000, 8, 18, T0 - 10, 3_600)
    # The same round read again changes nothing.
    assert state.set_answer(feed, 1_900_00000000, T0 - 10) == set()
    # An unknown feed prices nothing.
    assert state.set_answer(address(777), 1, T0) == set()

    changes = state.apply([usdc.answer("WETH", 1_800_00000000, T0)])
    assert changes.prices == {(usdc.oracle, weth)}
    assert not changes.feeds_added
    assert state.prices[usdc.oracle][weth] == TokenPrice(1_800_00000000, 8, 18, T0, 3_600)
    # A republished identical answer is no change either.
    assert not state.apply([usdc.answer("WETH", 1_800_00000000, T0)])


def test_repointing_a_token_to_a_new_feed_drops_its_price_and_the_old_feed(
    usdc: Deployed,
) -> None:
    state = deployed_state(usdc)
    weth = usdc.token("WETH")
    old_feed, new_feed = usdc.tokens["WETH"].feed, address(888)

    changes = state.apply([PriceFeedSet(usdc.chain.at(usdc.oracle), weth, new_feed, 18, 18, 60)])

    assert changes.feeds_added
    assert weth not in state.prices[usdc.oracle]  # unknown until the new feed answers
    assert old_feed not in state.feeds()
    assert old_feed not in state.watched_addresses()
    assert not state.apply([usdc.answer("WETH", 5, T0 + 1)])  # the old feed no longer counts
    assert state.set_answer(new_feed, 2_000 * 10**18, T0) == {(usdc.oracle, weth)}
    assert state.prices[usdc.oracle][weth] == TokenPrice(2_000 * 10**18, 18, 18, T0, 60)
    assert new_feed in state.watched_addresses()


def test_one_feed_serves_two_tokens_and_two_oracles() -> None:
    chain = Chain()
    first = usdc_market(chain)
    second = usdc_market(chain, base=1_000)
    # The second market's oracle uses the first market's WETH feed for its own WETH, and the
    # first oracle prices a second token (a wrapped ETH with 6 decimals) from the same feed.
    shared = first.tokens["WETH"].feed
    wrapped = address(900)
    state = deployed_state(first, second)
    state.apply(
        [
            PriceFeedSet(chain.at(second.oracle), second.token("WETH"), shared, 18, 8, 600),
            PriceFeedSet(chain.at(first.oracle), wrapped, shared, 6, 8, 1_200),
        ]
    )
    keys = {
        (first.oracle, first.token("WETH")),
        (second.oracle, second.token("WETH")),
        (first.oracle, wrapped),
    }
    assert state.feeds()[shared] == keys

    changes = state.apply([first.answer("WETH", 2_500_00000000, T0 + 5, round_id=2)])

    assert changes.prices == keys
    assert state.prices[first.oracle][first.token("WETH")] == TokenPrice(
        2_500_00000000, 8, 18, T0 + 5, 3_600
    )
    assert state.prices[second.oracle][second.token("WETH")] == TokenPrice(
        2_500_00000000, 8, 18, T0 + 5, 600
    )
    assert state.prices[first.oracle][wrapped] == TokenPrice(2_500_00000000, 8, 6, T0 + 5, 1_200)
    # The second market's own old WETH feed prices nothing any more.
    assert not state.apply([second.answer("WETH", 1, T0 + 6)])


def test_two_markets_on_one_oracle_share_holder_keys() -> None:
    chain = Chain()
    first = usdc_market(chain)
    second = usdc_market(chain, base=1_000, oracle=first.oracle)
    second.tokens["WETH"] = first.tokens["WETH"]
    state = ProtocolState([first.market_state(), second.market_state()])
    state.apply(first.deploy_events(answers=PRICES))
    state.apply(first.open(ACCOUNT, OWNER, principal=1, balances={"WETH": 1}))
    state.apply(second.open(OTHER, OWNER, principal=1, balances={"WETH": 2}))

    assert state.holders((first.oracle, first.token("WETH"))) == {
        (first.manager, ACCOUNT),
        (second.manager, OTHER),
    }
    state.apply([second.close(OTHER, OWNER)])
    assert state.holders((first.oracle, first.token("WETH"))) == {(first.manager, ACCOUNT)}


def test_permissions_pause_unpause_and_emergency_liquidators(usdc: Deployed) -> None:
    state = deployed_state(usdc)
    at = usdc.chain.at
    market = state.markets[usdc.manager]
    assert not market.paused
    assert market.emergency_liquidators == set()

    changes = state.apply(
        [Paused(at(usdc.manager), ADMIN), EmergencyLiquidatorSet(at(usdc.manager), OWNER, True)]
    )
    assert changes.permissions == {usdc.manager}
    assert not changes.markets
    assert market.paused
    assert market.emergency_liquidators == {OWNER}

    changes = state.apply(
        [
            EmergencyLiquidatorSet(at(usdc.manager), ADMIN, True),
            EmergencyLiquidatorSet(at(usdc.manager), OWNER, False),
            EmergencyLiquidatorSet(at(usdc.manager), OTHER, False),  # never allowed: no-op
            Unpaused(at(usdc.manager), ADMIN),
        ]
    )
    assert changes.permissions == {usdc.manager}
    assert not market.paused
    assert market.emergency_liquidators == {ADMIN}


def test_fee_threshold_and_rate_changes_mark_the_market(usdc: Deployed) -> None:
    state = deployed_state(usdc)
    at = usdc.chain.at
    changes = state.apply([FeesSet(at(usdc.manager), 0, 0, 0)])
    assert changes.markets == {usdc.manager}
    assert state.market_view(usdc.manager).fees == Fees(0, 0, 0)

    changes = state.apply([CollateralTokenSet(at(usdc.manager), usdc.token("WETH"), 1)])
    assert changes.markets == {usdc.manager}
    assert state.market_view(usdc.manager).liquidation_thresholds_bps[usdc.token("WETH")] == 1

    changes = state.apply([InterestRateUpdated(at(usdc.pool), 11, 2 * RAY, T0 + 99)])
    assert changes.markets == {usdc.manager}
    assert state.market_view(usdc.manager).interest_rate == InterestRate(2 * RAY, T0 + 99, 11)


def test_initialisation_with_other_contracts_is_refused(usdc: Deployed) -> None:
    state = ProtocolState([usdc.market_state()])
    wrong = CreditManagerInitialized(
        usdc.chain.at(usdc.manager), usdc.underlying.address, address(4242), usdc.oracle, OWNER
    )
    with pytest.raises(ValueError, match=f"CreditManager {usdc.manager} was initialised"):
        state.apply([wrong])


@pytest.mark.parametrize("kind", ["balance", "debt"])
def test_an_event_for_an_account_never_opened_names_the_deploy_block(
    usdc: Deployed, kind: str
) -> None:
    state = deployed_state(usdc)
    event = usdc.balance(ACCOUNT, "WETH", 1) if kind == "balance" else usdc.debt(ACCOUNT, 1)
    with pytest.raises(UnknownCreditAccountError) as raised:
        state.apply([event])
    message = str(raised.value)
    assert ACCOUNT in message
    assert usdc.manager in message
    assert "deploy block" in message
    assert isinstance(raised.value, LookupError)
    assert state.account_count() == 0
    assert state.holders((usdc.oracle, usdc.token("WETH"))) == set()


def test_watched_addresses_are_every_manager_pool_oracle_and_feed() -> None:
    chain = Chain()
    first, second = usdc_market(chain), usdc_market(chain, base=1_000)
    state = ProtocolState([first.market_state(), second.market_state()])
    expected = {first.manager, first.pool, first.oracle, second.manager, second.pool, second.oracle}
    assert state.watched_addresses() == sorted(expected)

    state.apply(first.deploy_events())
    feeds = {t.feed for t in first.tokens.values()}
    assert state.watched_addresses() == sorted(expected | feeds)
    # Tokens and accounts are not followed: their Transfer logs are not the keeper's business.
    assert first.token("WETH") not in state.watched_addresses()
