"""Saving the state and loading it back: exactly equal, incremental saves included, and never the
checkpoint of another chain, genesis, market set or deploy block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from keeper.protocol.events import EmergencyLiquidatorSet, Paused, PriceFeedSet
from keeper.state.checkpoint import Checkpoint, CheckpointStore
from keeper.state.database import Database
from keeper.state.store import ProtocolState
from tests.unit.protocol_builder import PRICES, RAY, T0, Chain, Deployed, address, usdc_market
from tests.unit.state.helpers import assert_same_state

MAX = 2**256 - 1
OWNER, ADMIN = address(502), address(503)
GENESIS = "0x" + "ab" * 32
DEPLOY = 7


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "keeper.sqlite")
    yield database
    database.close()


@pytest.fixture
def markets() -> list[Deployed]:
    chain = Chain()
    return [usdc_market(chain), usdc_market(chain, base=1_000)]


def identity(markets: list[Deployed]) -> dict[str, object]:
    return {
        "chain_id": 31337,
        "genesis_hash": GENESIS,
        "managers": [m.manager for m in markets],
        "deploy_block": DEPLOY,
    }


def store_for(db: Database, markets: list[Deployed], keep_blocks: int = 128) -> CheckpointStore:
    store = CheckpointStore(db, keep_blocks=keep_blocks)
    store.set_identity(31337, GENESIS, [m.manager for m in markets], DEPLOY)
    return store


def load(store: CheckpointStore, markets: list[Deployed]) -> Checkpoint | None:
    return store.load(
        chain_id=31337, genesis_hash=GENESIS, managers=[m.manager for m in markets], deploy_block=7
    )


def busy_state(markets: list[Deployed]) -> ProtocolState:
    """Both markets deployed, with accounts at the integer extremes, a paused market, an
    emergency liquidator, a negative answer and a token with a feed but no answer."""
    first, second = markets
    state = ProtocolState(m.market_state() for m in markets)
    state.apply(first.deploy_events(rate_ray=MAX, index_ray=MAX, answers=PRICES))
    state.apply(second.deploy_events(answers={"USDC": 1, "WETH": -(2**255)}))
    at = first.chain.at
    state.apply(
        [
            *first.open(
                address(600),
                OWNER,
                principal=MAX,
                index_ray=MAX,
                accrued_interest=MAX,
                accrued_fees=MAX,
                balances={"WETH": MAX, "USDC": 0, "WBTC": 1},
            ),
            *first.open(address(601), OWNER, principal=0),
            *second.open(address(600), OWNER, principal=5, balances={"WETH": 10**30}),
            Paused(at(second.manager), ADMIN),
            EmergencyLiquidatorSet(at(second.manager), ADMIN, True),
            EmergencyLiquidatorSet(at(second.manager), OWNER, True),
            PriceFeedSet(at(first.oracle), address(900), address(800), 18, 18, MAX),
        ]
    )
    return state


def test_nothing_saved_loads_nothing(db: Database, markets: list[Deployed]) -> None:
    store = CheckpointStore(db)
    assert load(store, markets) is None
    store.set_identity(31337, GENESIS, [m.manager for m in markets], DEPLOY)
    assert load(store, markets) is None


def test_save_requires_an_identity(db: Database, markets: list[Deployed]) -> None:
    store = CheckpointStore(db)
    with pytest.raises(RuntimeError, match="set_identity"):
        store.save(
            busy_state(markets), block_number=1, block_hash="0x1", block_timestamp=1, changes=None
        )


def test_a_full_save_loads_back_exactly(db: Database, markets: list[Deployed]) -> None:
    state = busy_state(markets)
    store = store_for(db, markets)
    store.save(state, block_number=150, block_hash="0xaa", block_timestamp=T0, changes=None)

    loaded = load(store, markets)

    assert loaded is not None
    assert (loaded.block_number, loaded.block_hash, loaded.block_timestamp) == (150, "0xaa", T0)
    assert loaded.recent_blocks == [(150, "0xaa")]
    assert_same_state(loaded.state, state)
    first = markets[0]
    account = loaded.state.markets[first.manager].accounts[address(600)]
    assert account.principal == MAX
    assert account.balances[first.token("WETH")] == MAX
    assert loaded.state.prices[markets[1].oracle][markets[1].token("WETH")].answer == -(2**255)
    rate = loaded.state.markets[first.manager].interest_rate
    assert rate is not None
    assert rate.rate_per_second_ray == MAX
    # A loaded state cannot roll back below its block.
    assert loaded.state.undo_floor() is None
    loaded.state.discard_undo(100)
    assert loaded.state.undo_floor() == 150


def test_loaded_accounts_share_one_string_per_owner_and_token(
    db: Database, markets: list[Deployed]
) -> None:
    """Each row brings its own copy of the owner and token addresses; at 100,000 accounts those
    copies are ~270 B per account."""
    first = markets[0]
    state = ProtocolState(m.market_state() for m in markets)
    state.apply(first.deploy_events(answers=PRICES))
    for label in (610, 611):
        state.apply(first.open(address(label), OWNER, principal=1, balances={"WETH": 1, "USDC": 2}))
    store = store_for(db, markets)
    store.save(state, block_number=150, block_hash="0xaa", block_timestamp=T0, changes=None)

    loaded = load(store, markets)

    assert loaded is not None
    one, other = loaded.state.markets[first.manager].accounts.values()
    assert one.owner == other.owner == OWNER
    assert one.owner is other.owner
    assert list(one.balances) == list(other.balances) == [first.token("WETH"), first.token("USDC")]
    assert all(a is b for a, b in zip(one.balances, other.balances, strict=True))


def test_a_market_without_an_interest_rate_yet_round_trips(
    db: Database, markets: list[Deployed]
) -> None:
    state = ProtocolState(m.market_state() for m in markets)
    store = store_for(db, markets)
    store.save(state, block_number=8, block_hash="0x8", block_timestamp=T0, changes=None)
    loaded = load(store, markets)
    assert loaded is not None
    assert_same_state(loaded.state, state)


def test_incremental_saves_follow_added_changed_and_removed_accounts(
    db: Database, markets: list[Deployed]
) -> None:
    first, second = markets
    state = busy_state(markets)
    store = store_for(db, markets)
    store.save(state, block_number=150, block_hash="0x96", block_timestamp=T0, changes=None)

    changes = state.apply(
        [
            *first.open(address(602), OWNER, principal=3, balances={"WBTC": 4}),
            first.balance(address(600), "WETH", 0),
            first.debt(address(601), 77, RAY + 1),
            second.close(address(600), OWNER),
            first.answer("WETH", 2_100_00000000, T0 + 12),
        ]
    )
    store.save(state, block_number=151, block_hash="0x97", block_timestamp=T0 + 12, changes=changes)
    loaded = load(store, markets)
    assert loaded is not None
    assert_same_state(loaded.state, state)
    assert loaded.recent_blocks == [(150, "0x96"), (151, "0x97")]

    # A rollback over an open and its changes, merged with the new branch's blocks, saved once.
    first.chain.block, first.chain.index = 152, 0
    block_152 = state.apply(
        [*first.open(address(603), OWNER, principal=1), first.debt(address(602), 9)],
        undoable=True,
    )
    store.save(
        state, block_number=152, block_hash="0x98", block_timestamp=T0 + 24, changes=block_152
    )
    state.discard_undo(151 - 64)
    changes = state.rollback(151)
    first.chain.block, first.chain.index = 152, 0
    changes.merge(state.apply([first.close(address(601), OWNER)], undoable=True))
    store.save(
        state,
        block_number=152,
        block_hash="0x98b",
        block_timestamp=T0 + 36,
        changes=changes,
        rolled_back_to=151,
    )
    loaded = load(store, markets)
    assert loaded is not None
    assert_same_state(loaded.state, state)
    assert set(loaded.state.markets[first.manager].accounts) == {address(600), address(602)}
    assert loaded.recent_blocks == [(150, "0x96"), (151, "0x97"), (152, "0x98b")]


def test_a_save_at_a_lower_block_drops_the_blocks_above_it(
    db: Database, markets: list[Deployed]
) -> None:
    state = busy_state(markets)
    store = store_for(db, markets)
    for number in (10, 11, 12):
        store.save(
            state, block_number=number, block_hash=f"0x{number}", block_timestamp=0, changes=None
        )
    store.save(state, block_number=11, block_hash="0x11b", block_timestamp=0, changes=None)
    loaded = load(store, markets)
    assert loaded is not None
    assert loaded.recent_blocks == [(10, "0x10"), (11, "0x11b")]
    assert loaded.block_hash == "0x11b"


def test_only_the_last_blocks_are_kept(db: Database, markets: list[Deployed]) -> None:
    state = busy_state(markets)
    store = store_for(db, markets, keep_blocks=3)
    for number in range(200, 210, 2):
        store.save(
            state, block_number=number, block_hash=hex(number), block_timestamp=0, changes=None
        )
    loaded = load(store, markets)
    assert loaded is not None
    assert loaded.recent_blocks == [(206, hex(206)), (208, hex(208))]  # 206..208 are kept
    store.save(state, block_number=209, block_hash=hex(209), block_timestamp=0, changes=None)
    loaded = load(store, markets)
    assert loaded is not None
    assert loaded.recent_blocks == [(208, hex(208)), (209, hex(209))]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"chain_id": 1}, "other chain"),
        ({"genesis_hash": "0x" + "cd" * 32}, "new genesis"),
        ({"managers": [address(4242)]}, "other credit managers"),
        ({"deploy_block": 8}, "other deploy block"),
    ],
)
def test_a_checkpoint_of_something_else_is_discarded(
    db: Database, markets: list[Deployed], change: dict[str, object], reason: str
) -> None:
    store = store_for(db, markets)
    store.save(
        busy_state(markets), block_number=9, block_hash="0x9", block_timestamp=0, changes=None
    )

    with capture_logs() as logs:
        assert store.load(**{**identity(markets), **change}) is None  # type: ignore[arg-type]

    assert [(e["event"], e["reason"], e["log_level"]) for e in logs] == [
        ("checkpoint.discarded", reason, "warning")
    ]
    for table in ("meta", "blocks", "markets", "feeds", "prices", "accounts"):
        count = db.connection.execute(f"SELECT count(*) FROM checkpoint_{table}").fetchone()
        assert count == (0,), table
    assert load(store, markets) is None  # gone for the original identity too


def test_the_identity_ignores_manager_order_and_address_case(
    db: Database, markets: list[Deployed]
) -> None:
    state = busy_state(markets)
    store = store_for(db, markets)
    store.save(state, block_number=9, block_hash="0x9", block_timestamp=0, changes=None)
    loaded = store.load(
        chain_id=31337,
        genesis_hash=GENESIS.upper().replace("0X", "0x"),
        managers=[m.manager.lower() for m in reversed(markets)],
        deploy_block=DEPLOY,
    )
    assert loaded is not None


def test_setting_another_identity_clears_the_old_rows(
    db: Database, markets: list[Deployed]
) -> None:
    store = store_for(db, markets)
    store.save(
        busy_state(markets), block_number=9, block_hash="0x9", block_timestamp=0, changes=None
    )
    store.set_identity(31337, GENESIS, [m.manager for m in markets], DEPLOY)  # same: kept
    assert load(store, markets) is not None
    store.set_identity(1, GENESIS, [m.manager for m in markets], DEPLOY)
    assert db.connection.execute("SELECT count(*) FROM checkpoint_accounts").fetchone() == (0,)


def test_clear_drops_everything(db: Database, markets: list[Deployed]) -> None:
    store = store_for(db, markets)
    store.save(
        busy_state(markets), block_number=9, block_hash="0x9", block_timestamp=0, changes=None
    )
    store.clear()
    assert load(store, markets) is None


def test_unreadable_rows_are_discarded_not_raised(db: Database, markets: list[Deployed]) -> None:
    store = store_for(db, markets)
    store.save(
        busy_state(markets), block_number=9, block_hash="0x9", block_timestamp=0, changes=None
    )
    with db.transaction() as connection:
        connection.execute("UPDATE checkpoint_accounts SET principal = 'garbage'")
    with capture_logs() as logs:
        assert load(store, markets) is None
    assert logs[0]["reason"].startswith("unreadable rows")


def test_the_checkpoint_survives_reopening_the_file(
    tmp_path: Path, markets: list[Deployed]
) -> None:
    state = busy_state(markets)
    with Database.open(tmp_path / "k.sqlite") as db:
        store_for(db, markets).save(
            state, block_number=9, block_hash="0x9", block_timestamp=0, changes=None
        )
    with Database.open(tmp_path / "k.sqlite") as db:
        loaded = load(CheckpointStore(db), markets)
    assert loaded is not None
    assert_same_state(loaded.state, state)
