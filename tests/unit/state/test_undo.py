"""Rolling the state back over recent blocks, as a reorg requires.

The property: applying blocks with undo records and rolling back to block k leaves exactly the
state built by applying only the blocks up to k, derived indexes included, however often the
state is rolled back and re-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.protocol.events import (
    AnswerUpdated,
    BalanceUpdated,
    CollateralTokenSet,
    CreditAccountClosed,
    CreditAccountLiquidated,
    CreditAccountOpened,
    DebtUpdated,
    EmergencyLiquidatorSet,
    FeesSet,
    InterestRateUpdated,
    Paused,
    PriceFeedSet,
    ProtocolEvent,
    Unpaused,
)
from keeper.state.model import CreditAccountState, Fees, TokenPrice
from keeper.state.store import MarketState, ProtocolState, StateChanges, UndoUnavailableError
from tests.unit.protocol_builder import PRICES, RAY, T0, Chain, Deployed, address, usdc_market
from tests.unit.state.helpers import assert_same_state, price_keys, snapshot

DEPLOY_BLOCK = 100
REORG_DEPTH = 64
OWNER, ADMIN = address(502), address(503)
ACCOUNTS = [address(600 + i) for i in range(5)]
EXTRA_TOKEN = address(900)
EXTRA_FEEDS = [address(800), address(801)]
KINDS = (
    "open",
    "balance",
    "balance",
    "debt",
    "close",
    "answer",
    "answer",
    "feed",
    "fees",
    "threshold",
    "rate",
    "pause",
    "emergency",
)
UINT256 = st.one_of(st.sampled_from([0, 1, 2**256 - 1]), st.integers(0, 2**256 - 1))
SMALL = st.integers(0, 10_000)


@dataclass
class World:
    """Two markets (each with its own oracle) and the events of every block applied so far."""

    chain: Chain = field(default_factory=Chain)
    markets: list[Deployed] = field(default_factory=list)
    blocks: dict[int, list[ProtocolEvent]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.markets = [usdc_market(self.chain), usdc_market(self.chain, base=1_000)]

    def fresh(self) -> ProtocolState:
        return ProtocolState(m.market_state() for m in self.markets)

    def deploy(self) -> list[ProtocolEvent]:
        self.chain.block, self.chain.index = DEPLOY_BLOCK, 0
        events = [e for m in self.markets for e in m.deploy_events(answers=PRICES)]
        self.blocks[DEPLOY_BLOCK] = events
        return events

    def feeds(self) -> list[str]:
        return [t.feed for m in self.markets for t in m.tokens.values()] + EXTRA_FEEDS

    def reference(self, through_block: int) -> ProtocolState:
        """The state built from the blocks up to `through_block` alone."""
        state = self.fresh()
        for number in sorted(self.blocks):
            if number <= through_block:
                state.apply(self.blocks[number])
        return state

    def forget_above(self, block: int) -> None:
        for number in [n for n in self.blocks if n > block]:
            del self.blocks[number]


def draw_block(
    data: st.DataObject, world: World, state: ProtocolState, number: int
) -> list[ProtocolEvent]:
    """A block of events valid on `state` (accounts opened before they are used)."""
    world.chain.block, world.chain.index = number, 0
    at = world.chain.at
    open_accounts = {m.manager: set(state.markets[m.manager].accounts) for m in world.markets}
    events: list[ProtocolEvent] = []
    for _ in range(data.draw(st.integers(0, 8))):
        market = data.draw(st.sampled_from(world.markets))
        manager, opened = market.manager, open_accounts[market.manager]
        tokens = [t.address for t in market.tokens.values()] + [EXTRA_TOKEN]
        kind = data.draw(st.sampled_from(KINDS))
        if kind == "open":
            closed = [a for a in ACCOUNTS if a not in opened]
            if closed:
                account = data.draw(st.sampled_from(closed))
                opened.add(account)
                events.append(CreditAccountOpened(at(manager), account, OWNER))
        elif kind in ("balance", "debt", "close") and opened:
            account = data.draw(st.sampled_from(sorted(opened)))
            if kind == "balance":
                token = data.draw(st.sampled_from(tokens))
                events.append(BalanceUpdated(at(manager), account, token, data.draw(UINT256)))
            elif kind == "debt":
                events.append(
                    DebtUpdated(
                        at(manager),
                        account,
                        data.draw(UINT256),
                        data.draw(st.integers(RAY, 2 * RAY)),
                        data.draw(UINT256),
                        data.draw(UINT256),
                    )
                )
            else:
                opened.discard(account)
                if data.draw(st.booleans()):
                    events.append(CreditAccountClosed(at(manager), account, OWNER, OWNER))
                else:
                    events.append(
                        CreditAccountLiquidated(
                            at(manager), account, OWNER, ADMIN, ADMIN, 1, 1, 1, 0, 0, 0
                        )
                    )
        elif kind == "answer":
            feed = data.draw(st.sampled_from(world.feeds()))
            answer = data.draw(st.integers(-(2**255), 2**255 - 1))
            events.append(AnswerUpdated(at(feed), answer, 1, T0 + data.draw(SMALL)))
        elif kind == "feed":
            token = data.draw(st.sampled_from(tokens))
            feed = data.draw(st.sampled_from(world.feeds()))
            events.append(PriceFeedSet(at(market.oracle), token, feed, 18, 8, data.draw(SMALL)))
        elif kind == "fees":
            events.append(FeesSet(at(manager), data.draw(SMALL), data.draw(SMALL), 400))
        elif kind == "threshold":
            token = data.draw(st.sampled_from(tokens))
            events.append(CollateralTokenSet(at(manager), token, data.draw(SMALL)))
        elif kind == "rate":
            rate = InterestRateUpdated(at(market.pool), data.draw(SMALL), RAY + 7, T0 + 1)
            events.append(rate)
        elif kind == "pause":
            cls = Paused if data.draw(st.booleans()) else Unpaused
            events.append(cls(at(manager), ADMIN))
        elif kind == "emergency":
            who = data.draw(st.sampled_from([OWNER, ADMIN]))
            events.append(EmergencyLiquidatorSet(at(manager), who, data.draw(st.booleans())))
    return events


def apply_blocks(
    data: st.DataObject, world: World, state: ProtocolState, first: int, count: int
) -> None:
    """Applies new blocks as the daemon does: recorded, then records deeper than any reorg to
    undo discarded (none are, here)."""
    for number in range(first, first + count):
        events = draw_block(data, world, state, number)
        world.blocks[number] = events
        state.apply(events, undoable=True)
        state.discard_undo(number - REORG_DEPTH)


def rollback_and_check(world: World, state: ProtocolState, to_block: int) -> None:
    """Rolls back, compares with the reference, and checks the reported changes cover every
    difference (so the risk stage revalues all it must)."""
    keys = price_keys(state, world.reference(to_block))
    before = snapshot(state, keys)
    changes = state.rollback(to_block)
    world.forget_above(to_block)
    expected = world.reference(to_block)
    assert_same_state(state, expected)
    after = snapshot(state, keys)
    for manager, (*_, accounts_before) in before["markets"].items():
        accounts_after = after["markets"][manager][-1]
        for account in set(accounts_before) | set(accounts_after):
            key = (manager, account)
            if account not in accounts_after and account in accounts_before:
                assert key in changes.removed
            elif accounts_before.get(account) != accounts_after.get(account):
                assert key in changes.accounts
        if before["markets"][manager][3:6] != after["markets"][manager][3:6]:
            assert manager in changes.markets
        if before["markets"][manager][6:8] != after["markets"][manager][6:8]:
            assert manager in changes.permissions
    assert not changes.accounts & changes.removed
    for oracle, by_token in before["prices"].items():
        for token in set(by_token) | set(after["prices"][oracle]):
            if by_token.get(token) != after["prices"][oracle].get(token):
                assert (oracle, token) in changes.prices
    if before["feed_configs"] != after["feed_configs"]:
        assert changes.feeds_added


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_rollback_equals_applying_only_the_blocks_kept(data: st.DataObject) -> None:
    world = World()
    state = world.fresh()
    deploy_undoable = data.draw(st.booleans(), label="deploy undoable")
    state.apply(world.deploy(), undoable=deploy_undoable)
    floor = DEPLOY_BLOCK - 1 if deploy_undoable else DEPLOY_BLOCK
    last = DEPLOY_BLOCK + data.draw(st.integers(1, 6), label="blocks")
    apply_blocks(data, world, state, DEPLOY_BLOCK + 1, last - DEPLOY_BLOCK)
    assert state.undo_floor() == floor
    with pytest.raises(UndoUnavailableError):
        state.rollback(floor - 1)

    # Back to k2, then further back to k1 <= k2.
    k2 = data.draw(st.integers(floor, last), label="k2")
    rollback_and_check(world, state, k2)
    k1 = data.draw(st.integers(floor, k2), label="k1")
    rollback_and_check(world, state, k1)

    # Another branch on top of k1, then a rollback into it.
    new_last = k1 + data.draw(st.integers(0, 5), label="new blocks")
    apply_blocks(data, world, state, k1 + 1, new_last - k1)
    assert_same_state(state, world.reference(new_last))
    rollback_and_check(world, state, data.draw(st.integers(floor, new_last), label="k3"))
    assert state.undo_floor() == floor


# ---------------------------------------------------------------- what a rollback reports


@pytest.fixture
def usdc() -> Deployed:
    return usdc_market(Chain())


def deployed(market: Deployed) -> ProtocolState:
    market.chain.block, market.chain.index = DEPLOY_BLOCK, 0
    state = ProtocolState([market.market_state()])
    state.apply(market.deploy_events(answers=PRICES))
    return state


def at_block(market: Deployed, number: int) -> None:
    market.chain.block, market.chain.index = number, 0


def test_rollback_reports_each_kind_of_change(usdc: Deployed) -> None:
    state = deployed(usdc)
    kept, gone = ACCOUNTS[0], ACCOUNTS[1]
    at_block(usdc, 101)
    state.apply(usdc.open(kept, OWNER, principal=5, balances={"WETH": 3}), undoable=True)
    at_block(usdc, 102)
    weth_key = (usdc.oracle, usdc.token("WETH"))
    changes = state.apply(
        [
            *usdc.open(gone, OWNER, principal=1, balances={"WETH": 1}),
            usdc.balance(kept, "WETH", 0),
            usdc.answer("WETH", 7, T0 + 1),
            FeesSet(usdc.chain.at(usdc.manager), 1, 2, 3),
            Paused(usdc.chain.at(usdc.manager), ADMIN),
        ],
        undoable=True,
    )
    assert state.holders(weth_key) == {(usdc.manager, gone)}

    changes = state.rollback(101)

    assert changes.accounts == {(usdc.manager, kept)}
    assert changes.removed == {(usdc.manager, gone)}
    assert changes.prices == {weth_key}
    assert changes.markets == {usdc.manager}
    assert changes.permissions == {usdc.manager}
    assert not changes.feeds_added
    assert state.holders(weth_key) == {(usdc.manager, kept)}
    assert state.prices[usdc.oracle][usdc.token("WETH")].answer == PRICES["WETH"]
    assert state.market_view(usdc.manager).fees == Fees(1_000, 150, 400)
    assert not state.markets[usdc.manager].paused
    # Nothing above 101 remains to undo.
    assert not state.rollback(101)


def test_rollback_restores_containers_in_place_for_views_already_handed_out(
    usdc: Deployed,
) -> None:
    state = deployed(usdc)
    view = state.market_view(usdc.manager)
    weth = usdc.token("WETH")
    at_block(usdc, 101)
    state.apply(
        [
            CollateralTokenSet(usdc.chain.at(usdc.manager), weth, 1),
            usdc.answer("WETH", 9, T0 + 2),
        ],
        undoable=True,
    )
    state.rollback(DEPLOY_BLOCK)
    assert view.liquidation_thresholds_bps[weth] == 8_000
    assert view.prices[weth].answer == PRICES["WETH"]


def test_an_account_opened_and_closed_inside_the_undone_blocks_is_no_change(
    usdc: Deployed,
) -> None:
    state = deployed(usdc)
    at_block(usdc, 101)
    state.apply(usdc.open(ACCOUNTS[0], OWNER, principal=1, balances={"WETH": 1}), undoable=True)
    at_block(usdc, 102)
    state.apply([usdc.close(ACCOUNTS[0], OWNER)], undoable=True)
    assert not state.rollback(DEPLOY_BLOCK)


def test_a_feed_repointed_in_an_undone_block_is_reported_for_a_feed_re_read(
    usdc: Deployed,
) -> None:
    state = deployed(usdc)
    weth, old_feed, new_feed = usdc.token("WETH"), usdc.tokens["WETH"].feed, EXTRA_FEEDS[0]
    at_block(usdc, 101)
    state.apply(
        [PriceFeedSet(usdc.chain.at(usdc.oracle), weth, new_feed, 18, 8, 60)], undoable=True
    )
    assert new_feed in state.watched_addresses()

    changes = state.rollback(DEPLOY_BLOCK)

    assert changes.feeds_added
    assert changes.prices == {(usdc.oracle, weth)}
    assert new_feed not in state.watched_addresses()
    assert state.feeds()[old_feed] == {(usdc.oracle, weth)}


def test_prices_read_outside_events_are_not_undone(usdc: Deployed) -> None:
    """Feed polling (`set_answer`) is not recorded: a polled price stands through a rollback,
    or is replaced by the value from before the first undone event on that price. Either way
    the caller re-reads the feeds after a rollback."""
    state = deployed(usdc)
    weth, wbtc = usdc.token("WETH"), usdc.token("WBTC")
    at_block(usdc, 101)
    state.apply([usdc.answer("WETH", 5, T0 + 1)], undoable=True)
    state.set_answer(usdc.tokens["WETH"].feed, 6, T0 + 2)
    state.set_answer(usdc.tokens["WBTC"].feed, 12_345, T0 + 50)

    changes = state.rollback(DEPLOY_BLOCK)

    assert changes.prices == {(usdc.oracle, weth)}
    assert state.prices[usdc.oracle][weth] == TokenPrice(PRICES["WETH"], 8, 18, T0, 3_600)
    assert state.prices[usdc.oracle][wbtc] == TokenPrice(12_345, 8, 8, T0 + 50, 7_200)


# ---------------------------------------------------------------- floor and discarding


def test_nothing_recorded_allows_no_rollback_below_the_last_event(usdc: Deployed) -> None:
    state = ProtocolState([usdc.market_state()])
    assert state.undo_floor() is None
    assert not state.rollback(0)  # nothing applied: nothing to undo
    state = deployed(usdc)
    assert state.undo_floor() is None
    assert not state.rollback(DEPLOY_BLOCK)  # at or above the last event: a no-op
    assert not state.rollback(DEPLOY_BLOCK + 50)
    with pytest.raises(UndoUnavailableError, match=f"roll back to block {DEPLOY_BLOCK - 1}"):
        state.rollback(DEPLOY_BLOCK - 1)


def test_the_first_recorded_block_sets_the_floor_below_it(usdc: Deployed) -> None:
    state = deployed(usdc)
    at_block(usdc, 105)
    state.apply(usdc.open(ACCOUNTS[0], OWNER, principal=1), undoable=True)
    assert state.undo_floor() == 104
    assert state.rollback(104).removed == {(usdc.manager, ACCOUNTS[0])}
    with pytest.raises(UndoUnavailableError):
        state.rollback(103)


def test_discard_undo_forgets_old_blocks_and_raises_the_floor(usdc: Deployed) -> None:
    state = deployed(usdc)
    for number in (101, 102, 103):
        at_block(usdc, number)
        state.apply(usdc.open(ACCOUNTS[number - 101], OWNER, principal=1), undoable=True)
    assert state.undo_floor() == DEPLOY_BLOCK

    state.discard_undo(101)
    assert state.undo_floor() == 101
    with pytest.raises(UndoUnavailableError):
        state.rollback(DEPLOY_BLOCK)
    changes = state.rollback(101)
    assert changes.removed == {(usdc.manager, ACCOUNTS[1]), (usdc.manager, ACCOUNTS[2])}
    assert set(state.markets[usdc.manager].accounts) == {ACCOUNTS[0]}

    state.discard_undo(99)  # the floor never goes down
    assert state.undo_floor() == 101


def test_on_a_quiet_chain_discarding_sets_a_floor_without_any_record(usdc: Deployed) -> None:
    """No events since the back-fill: nothing to record, yet a shallow reorg must not force a
    re-read. The floor is where the daemon discards to, but never below the last event applied
    without a record."""
    state = deployed(usdc)
    state.discard_undo(DEPLOY_BLOCK - 10)
    assert state.undo_floor() == DEPLOY_BLOCK
    state.discard_undo(DEPLOY_BLOCK + 36)
    assert state.undo_floor() == DEPLOY_BLOCK + 36
    assert not state.rollback(DEPLOY_BLOCK + 40)


def test_an_event_applied_without_undo_raises_the_floor_to_its_block(usdc: Deployed) -> None:
    state = deployed(usdc)
    at_block(usdc, 101)
    state.apply(usdc.open(ACCOUNTS[0], OWNER, principal=1), undoable=True)
    at_block(usdc, 103)
    state.apply(usdc.open(ACCOUNTS[1], OWNER, principal=1))
    assert state.undo_floor() == 103
    with pytest.raises(UndoUnavailableError):
        state.rollback(102)
    at_block(usdc, 104)
    state.apply([usdc.debt(ACCOUNTS[1], 9)], undoable=True)
    assert state.rollback(103).accounts == {(usdc.manager, ACCOUNTS[1])}
    assert state.markets[usdc.manager].accounts[ACCOUNTS[1]].principal == 1


def test_a_restored_state_cannot_roll_back_below_its_block(usdc: Deployed) -> None:
    original = deployed(usdc)
    at_block(usdc, 150)
    original.apply(usdc.open(ACCOUNTS[0], OWNER, principal=1, balances={"WETH": 2}))
    restored = ProtocolState.restored(
        (m for m in original.markets.values()),
        original.feed_configs,
        original.prices,
        block_number=200,
    )
    assert_same_state(restored, original)
    assert restored.undo_floor() is None
    restored.discard_undo(180)
    assert restored.undo_floor() == 200
    with pytest.raises(UndoUnavailableError):
        restored.rollback(199)


def test_restored_rebuilds_holders_feeds_and_watched_addresses() -> None:
    chain = Chain()
    first, second = usdc_market(chain), usdc_market(chain, base=1_000)
    shared = first.tokens["WETH"].feed
    original = ProtocolState([first.market_state(), second.market_state()])
    original.apply(first.deploy_events(answers=PRICES) + second.deploy_events(answers=PRICES))
    original.apply(
        [
            PriceFeedSet(chain.at(second.oracle), second.token("WETH"), shared, 18, 8, 600),
            *first.open(ACCOUNTS[0], OWNER, principal=1, balances={"WETH": 1, "USDC": 0}),
            *second.open(ACCOUNTS[1], OWNER, principal=1, balances={"WETH": 2**256 - 1}),
        ]
    )
    restored = ProtocolState.restored(
        [
            _copy_market(original, first.manager),
            _copy_market(original, second.manager),
        ],
        dict(original.feed_configs),
        {oracle: dict(by_token) for oracle, by_token in original.prices.items()},
        block_number=chain.block,
    )
    assert_same_state(restored, original)
    assert restored.holders((first.oracle, first.token("USDC"))) == set()
    assert restored.feeds()[shared] == {
        (first.oracle, first.token("WETH")),
        (second.oracle, second.token("WETH")),
    }


def _copy_market(state: ProtocolState, manager: str) -> MarketState:
    market = state.markets[manager]
    return MarketState(
        market.manager,
        market.underlying,
        market.pool,
        market.oracle,
        market.fees,
        dict(market.liquidation_thresholds_bps),
        market.interest_rate,
        market.paused,
        set(market.emergency_liquidators),
        dict(market.accounts),
    )


def test_merge_combines_a_rollback_and_the_blocks_applied_after() -> None:
    a, b, c = ("m", "a"), ("m", "b"), ("m", "c")
    rollback = StateChanges(accounts={a}, removed={b, c}, prices={("o", "t")})
    new_branch = StateChanges(accounts={b}, removed={a}, markets={"m"}, feeds_added=True)
    rollback.merge(new_branch)
    assert rollback.accounts == {b}
    assert rollback.removed == {a, c}
    assert rollback.prices == {("o", "t")}
    assert rollback.markets == {"m"}
    assert rollback.feeds_added


def test_account_prior_values_are_kept_not_aliased(usdc: Deployed) -> None:
    state = deployed(usdc)
    at_block(usdc, 101)
    state.apply(usdc.open(ACCOUNTS[0], OWNER, principal=1, balances={"WETH": 5}))
    before = state.markets[usdc.manager].accounts[ACCOUNTS[0]]
    at_block(usdc, 102)
    state.apply(
        [usdc.balance(ACCOUNTS[0], "WETH", 6), usdc.balance(ACCOUNTS[0], "WBTC", 7)],
        undoable=True,
    )
    state.rollback(101)
    assert state.markets[usdc.manager].accounts[ACCOUNTS[0]] == before
    assert before == CreditAccountState(ACCOUNTS[0], OWNER, 1, RAY, 0, 0, {usdc.token("WETH"): 5})
