"""Events as the keeper consumes them, and the price feeds as Chainlink-compatible sources.

The keeper rebuilds every account from `BalanceUpdated` / `DebtUpdated` and the pool index from
`InterestRateUpdated`, so these events must carry absolute values that equal the views after each
action, and replaying all logs must rebuild every open account exactly. The keeper follows prices
through `PriceFeed` exactly as it would follow Chainlink, so the feed's `decimals`,
`latestRoundData` and the raw topics of `AnswerUpdated` / `NewRound` are checked against the
Chainlink conventions, and `PriceOracle.convert` against hand-computed conversions across the
6/8/18-decimal tokens and the 8/18-decimal feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from eth_abi.abi import encode
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.types import EventData

from keeper.devnet.controls import advance_time, refresh_feeds, set_price
from keeper.devnet.network import Devnet
from keeper.devnet.tx import send
from keeper.risk.health import checked_price, convert, cumulative_index_at, debt_at
from keeper.state.model import CreditAccountState, InterestRate
from tests.contracts.helpers import (
    RAY,
    ZERO_ADDRESS,
    approve,
    assert_events_match_views,
    block_timestamp,
    events,
    fresh_address,
    market,
    mint,
    open_account,
    read_market_state,
    token_address,
    units,
    view_revert,
)

pytestmark = pytest.mark.chain


# ------------------------------------------------------------------ absolute-value events


def test_open_with_underlying_collateral_announces_each_absolute_balance(chain: Devnet) -> None:
    manager = market(chain).manager
    debt, collateral = units(chain, "USDC", 10_000), units(chain, "USDC", 2_000)

    opened = open_account(chain, chain.roles.borrowers[0].address, debt, collateral)

    updates = events(manager, "BalanceUpdated", opened.receipt)
    usdc = token_address(chain, "USDC")
    # First the borrowed funds, then the same balance with the collateral added: never a delta.
    assert [(u["creditAccount"], u["token"], u["balance"]) for u in updates] == [
        (opened.address, usdc, debt),
        (opened.address, usdc, debt + collateral),
    ]
    (debt_update,) = events(manager, "DebtUpdated", opened.receipt)
    assert debt_update["principal"] == debt
    assert (debt_update["accruedInterest"], debt_update["accruedFees"]) == (0, 0)
    assert assert_events_match_views(manager, opened.receipt) == 2


def test_every_action_emits_values_equal_to_the_views(chain: Devnet) -> None:
    manager = market(chain).manager
    adapter = chain.deployment.address("OracleSwapAdapter")
    deployer = chain.roles.deployer.address
    borrower = chain.roles.borrowers[0].address
    helper = chain.roles.competitor.address
    usdc, weth, link = (token_address(chain, s) for s in ("USDC", "WETH", "LINK"))
    opened = open_account(
        chain,
        borrower,
        units(chain, "USDC", 20_000),
        units(chain, "WETH", 5),
        collateral_symbol="WETH",
    )
    account = opened.address
    mint(chain, "LINK", helper, units(chain, "LINK", 1_000))
    approve(chain, "LINK", helper, manager.address)
    emitted = {"openCreditAccount": assert_events_match_views(manager, opened.receipt)}
    receipts = {}

    functions = manager.functions
    steps: list[tuple[str, ContractFunction, str]] = [
        ("addCollateral", functions.addCollateral(account, link, 10**20), helper),
        (
            "withdrawCollateral",
            functions.withdrawCollateral(account, weth, 10**18, borrower),
            borrower,
        ),
        ("increaseDebt", functions.increaseDebt(account, units(chain, "USDC", 3_000)), borrower),
        ("decreaseDebt", functions.decreaseDebt(account, units(chain, "USDC", 1_234)), borrower),
        (
            "swap",
            functions.swap(account, adapter, usdc, weth, units(chain, "USDC", 7_777), 0),
            borrower,
        ),
        ("swap back", functions.swap(account, adapter, weth, link, 10**17, 0), borrower),
    ]
    for name, call, sender in steps:
        # Interest accrues between steps, so DebtUpdated carries a folded, non-zero interest.
        advance_time(chain.w3, 30 * 24 * 3600)
        refresh_feeds(chain.w3, chain.deployment, deployer)
        receipts[name] = send(chain.w3, call, sender)
        emitted[name] = assert_events_match_views(manager, receipts[name])

    assert emitted == {
        "openCreditAccount": 3,  # DebtUpdated, BalanceUpdated USDC and WETH
        "addCollateral": 1,
        "withdrawCollateral": 1,
        "increaseDebt": 2,
        "decreaseDebt": 2,
        "swap": 2,
        "swap back": 2,
    }
    (folded,) = events(manager, "DebtUpdated", receipts["increaseDebt"])
    assert folded["accruedInterest"] > 0
    fee_interest = manager.functions.feeInterest().call()
    # Nothing had been folded before, so the fee is exactly the fee on all of that interest.
    assert folded["accruedFees"] == folded["accruedInterest"] * fee_interest // 10_000 > 0
    # Repaying more than fee + interest clears both and lowers the principal by the rest.
    (repaid,) = events(manager, "DebtUpdated", receipts["decreaseDebt"])
    assert (repaid["accruedInterest"], repaid["accruedFees"]) == (0, 0)
    assert repaid["principal"] < folded["principal"]


def test_replaying_all_logs_rebuilds_every_open_account(chain: Devnet) -> None:
    manager = market(chain).manager
    adapter = chain.deployment.address("OracleSwapAdapter")
    deployer = chain.roles.deployer.address
    liquidator = chain.roles.keeper.address
    first_block = chain.w3.eth.block_number + 1
    borrowers = [b.address for b in chain.roles.borrowers[:4]]
    accounts = [
        open_account(
            chain,
            borrower,
            units(chain, "USDC", 10_000),
            units(chain, "WETH", 2),
            collateral_symbol="WETH",
        )
        for borrower in borrowers[:3]
    ]
    accounts.append(
        open_account(chain, borrowers[3], units(chain, "USDC", 10_000), units(chain, "USDC", 900))
    )
    usdc, wbtc = token_address(chain, "USDC"), token_address(chain, "WBTC")
    functions = manager.functions
    send(
        chain.w3,
        functions.swap(accounts[0].address, adapter, usdc, wbtc, units(chain, "USDC", 5_000), 0),
        borrowers[0],
    )
    advance_time(chain.w3, 7 * 24 * 3600)
    refresh_feeds(chain.w3, chain.deployment, deployer)
    send(chain.w3, functions.increaseDebt(accounts[1].address, 500 * 10**6), borrowers[1])
    send(chain.w3, functions.decreaseDebt(accounts[2].address, 700 * 10**6), borrowers[2])
    mint(chain, "USDC", borrowers[0], units(chain, "USDC", 10_000))
    send(chain.w3, functions.closeCreditAccount(accounts[0].address, borrowers[0]), borrowers[0])
    set_price(chain.w3, chain.deployment, "WETH", 100 * 10**8, deployer)
    approve(chain, "USDC", liquidator, manager.address)
    send(chain.w3, functions.liquidateCreditAccount(accounts[2].address, liquidator), liquidator)

    rebuilt = _replay(chain, first_block)

    listed = manager.functions.creditAccounts(0, 100).call()
    assert set(rebuilt) == set(listed) == {accounts[1].address, accounts[3].address}
    for account, state in rebuilt.items():
        info = manager.functions.creditAccountInfo(account).call()
        assert [state.owner, *state.debt] == info
        tokens, amounts = manager.functions.balances(account).call()
        assert {t: state.balances.get(t, 0) for t in tokens} == dict(
            zip(tokens, amounts, strict=True)
        )
    # The increaseDebt a week in folded interest and its fee into accounts[1].
    assert rebuilt[accounts[1].address].debt[3] > 0

    # From the logs alone, the keeper's model gives the manager's debt view at a later time.
    advance_time(chain.w3, 5 * 24 * 3600)
    market_state = read_market_state(chain)
    index_now = cumulative_index_at(
        market_state.interest_rate, chain.w3.eth.get_block("latest")["timestamp"]
    )
    for account, state in rebuilt.items():
        principal, cumulative_index, accrued_interest, accrued_fees = state.debt
        model = CreditAccountState(
            account, state.owner, principal, cumulative_index, accrued_interest, accrued_fees
        )
        debt = debt_at(model, index_now, market_state.fees.fee_interest_bps)
        assert [debt.principal, debt.interest, debt.fee] == (
            manager.functions.calcDebt(account).call()
        )


@dataclass
class RebuiltAccount:
    owner: str
    # principal, cumulativeIndex, accruedInterest, accruedFees
    debt: tuple[int, int, int, int] = (0, 0, 0, 0)
    balances: dict[str, int] = field(default_factory=dict)


def _replay(chain: Devnet, from_block: int) -> dict[str, RebuiltAccount]:
    """Rebuilds open accounts from the manager's logs alone, the way the keeper does."""
    manager = market(chain).manager
    logs: list[EventData] = []
    for name in (
        "CreditAccountOpened",
        "BalanceUpdated",
        "DebtUpdated",
        "CreditAccountClosed",
        "CreditAccountLiquidated",
    ):
        logs += manager.events[name]().get_logs(from_block=from_block)
    logs.sort(key=lambda log: (log["blockNumber"], log["logIndex"]))
    accounts: dict[str, RebuiltAccount] = {}
    for log in logs:
        args = log["args"]
        account = args["creditAccount"]
        if log["event"] == "CreditAccountOpened":
            accounts[account] = RebuiltAccount(owner=args["owner"])
        elif log["event"] == "BalanceUpdated":
            accounts[account].balances[args["token"]] = args["balance"]
        elif log["event"] == "DebtUpdated":
            accounts[account].debt = (
                args["principal"],
                args["cumulativeIndex"],
                args["accruedInterest"],
                args["accruedFees"],
            )
        else:
            del accounts[account]
    return accounts


# ------------------------------------------------------------------ pool index checkpoints


def test_interest_rate_update_checkpoints_the_index(chain: Devnet) -> None:
    pool = market(chain).pool
    deployer = chain.roles.deployer.address
    old_rate = pool.functions.interestRatePerSecond().call()
    advance_time(chain.w3, 90 * 24 * 3600)
    new_rate = 3 * old_rate

    receipt = send(chain.w3, pool.functions.setInterestRate(new_rate), deployer)

    block, timestamp = receipt["blockNumber"], block_timestamp(chain, receipt)
    (update,) = events(pool, "InterestRateUpdated", receipt)
    # The checkpoint is the index the old rate reached at this block's time.
    index_before = pool.functions.cumulativeIndexAt(timestamp).call(block_identifier=block - 1)
    assert index_before > RAY
    assert update == {
        "interestRatePerSecond": new_rate,
        "cumulativeIndex": index_before,
        "timestamp": timestamp,
    }
    assert pool.functions.calcCumulativeIndex().call(block_identifier=block) == index_before
    assert pool.functions.cumulativeIndexAtLastUpdate().call() == index_before
    assert pool.functions.lastUpdateTimestamp().call() == timestamp
    assert pool.functions.interestRatePerSecond().call() == new_rate

    # From the event alone, the index at any later time follows.
    advance_time(chain.w3, 123_457)
    later = chain.w3.eth.get_block("latest")["timestamp"]
    checkpoint = InterestRate(update["cumulativeIndex"], update["timestamp"], new_rate)
    assert pool.functions.calcCumulativeIndex().call() == cumulative_index_at(checkpoint, later)
    assert pool.functions.cumulativeIndexAt(later + 10**6).call() == cumulative_index_at(
        checkpoint, later + 10**6
    )


def test_the_deployment_emitted_the_initial_checkpoint(chain: Devnet) -> None:
    pool = market(chain).pool
    logs = pool.events.InterestRateUpdated().get_logs(from_block=chain.deployment.deploy_block)

    assert len(logs) == 1
    assert logs[0]["args"]["cumulativeIndex"] == RAY
    expected_rate = chain.spec.markets[0].rate_per_second_ray
    assert logs[0]["args"]["interestRatePerSecond"] == expected_rate
    assert pool.functions.lastUpdateTimestamp().call() == logs[0]["args"]["timestamp"]


# ------------------------------------------------------------------ Chainlink-compatible feeds


ANSWER_UPDATED_TOPIC = Web3.keccak(text="AnswerUpdated(int256,uint256,uint256)")
NEW_ROUND_TOPIC = Web3.keccak(text="NewRound(uint256,address,uint256)")


@pytest.mark.parametrize("symbol", ["USDC", "WETH", "WBTC", "LINK"])
def test_feed_describes_itself_like_chainlink(chain: Devnet, symbol: str) -> None:
    feed = chain.deployment.contract(chain.w3, f"PriceFeed.{symbol}")
    spec = chain.spec.token(symbol)

    assert feed.functions.decimals().call() == spec.feed_decimals
    assert feed.functions.description().call() == f"{symbol} / USD"
    assert feed.functions.version().call() == 4
    round_id, answer, started_at, updated_at, answered_in_round = (
        feed.functions.latestRoundData().call()
    )
    assert round_id == answered_in_round == feed.functions.latestRound().call() == 1
    assert answer == spec.price_answer == feed.functions.latestAnswer().call()
    assert started_at == updated_at == feed.functions.latestTimestamp().call()


def test_update_answer_opens_a_new_round_stamped_with_the_block_time(chain: Devnet) -> None:
    feed = chain.deployment.contract(chain.w3, "PriceFeed.WETH")
    first_round = feed.functions.latestRoundData().call()
    advance_time(chain.w3, 600)

    block = set_price(
        chain.w3, chain.deployment, "WETH", 3_100 * 10**8, chain.roles.deployer.address
    )

    timestamp = chain.w3.eth.get_block(block)["timestamp"]
    assert feed.functions.latestRoundData().call() == [2, 3_100 * 10**8, timestamp, timestamp, 2]
    # Past rounds stay readable, unknown ones revert as on Chainlink.
    assert feed.functions.getRoundData(1).call() == first_round
    for missing in (0, 3):
        assert view_revert(feed.functions.getRoundData(missing)).name == "NoDataPresent"


@pytest.mark.parametrize("answer", [3_100 * 10**8, -5])
def test_answer_updated_and_new_round_have_chainlink_topics(chain: Devnet, answer: int) -> None:
    feed = chain.deployment.contract(chain.w3, "PriceFeed.WETH")
    updater = chain.roles.deployer.address

    receipt = send(chain.w3, feed.functions.updateAnswer(answer), updater)

    timestamp = block_timestamp(chain, receipt)
    logs = {bytes(log["topics"][0]): log for log in receipt["logs"]}
    assert set(logs) == {ANSWER_UPDATED_TOPIC, NEW_ROUND_TOPIC}
    answer_updated = logs[ANSWER_UPDATED_TOPIC]
    assert answer_updated["address"] == feed.address
    # int256 indexed current (two's complement), uint256 indexed roundId; updatedAt in data.
    assert [bytes(t) for t in answer_updated["topics"][1:]] == [
        encode(["int256"], [answer]),
        encode(["uint256"], [2]),
    ]
    assert bytes(answer_updated["data"]) == encode(["uint256"], [timestamp])
    new_round = logs[NEW_ROUND_TOPIC]
    assert [bytes(t) for t in new_round["topics"][1:]] == [
        encode(["uint256"], [2]),
        encode(["address"], [updater]),
    ]
    assert bytes(new_round["data"]) == encode(["uint256"], [timestamp])
    (decoded,) = events(feed, "AnswerUpdated", receipt)
    assert decoded == {"current": answer, "roundId": 2, "updatedAt": timestamp}


# ------------------------------------------------------------------ oracle conversions


@pytest.mark.parametrize(
    ("amount", "token_from", "token_to", "expected"),
    [
        (10**18, "WETH", "USDC", 3_000 * 10**6),
        (3_000 * 10**6, "USDC", "WETH", 10**18),
        (10**8, "WBTC", "WETH", 20 * 10**18),
        (10**18, "LINK", "USDC", 15 * 10**6),
        (15 * 10**6, "USDC", "LINK", 10**18),
        (10**18, "WETH", "LINK", 200 * 10**18),
        (10**8, "WBTC", "LINK", 4_000 * 10**18),
        (4_000 * 10**18, "LINK", "WBTC", 10**8),
        # 1 USDC is 1 / 60_000 WBTC = 1666.67 satoshi: rounded down.
        (10**6, "USDC", "WBTC", 1_666),
        (1, "WBTC", "USDC", 600),
        (1, "USDC", "WETH", 333_333_333),
        (10**18, "WETH", "WETH", 10**18),
    ],
)
def test_oracle_converts_across_decimals(
    chain: Devnet, amount: int, token_from: str, token_to: str, expected: int
) -> None:
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    result = oracle.functions.convert(
        amount, token_address(chain, token_from), token_address(chain, token_to)
    ).call()

    assert result == expected
    prices = read_market_state(chain).prices
    timestamp = chain.w3.eth.get_block("latest")["timestamp"]
    python_result = convert(
        amount,
        checked_price(token_from, prices[token_address(chain, token_from)], timestamp),
        checked_price(token_to, prices[token_address(chain, token_to)], timestamp),
    )
    assert python_result == expected


def test_oracle_feed_config_records_decimals_and_staleness(chain: Devnet) -> None:
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    for spec in chain.spec.tokens:
        config = oracle.functions.feedConfig(token_address(chain, spec.symbol)).call()
        assert config == [
            chain.deployment.address(f"PriceFeed.{spec.symbol}"),
            spec.decimals,
            spec.feed_decimals,
            chain.spec.staleness_period_s,
        ]
    assert oracle.functions.feedConfig(fresh_address("unpriced")).call()[0] == ZERO_ADDRESS


def test_oracle_follows_a_new_answer_at_once(chain: Devnet) -> None:
    oracle = chain.deployment.contract(chain.w3, "PriceOracle")
    weth, usdc = token_address(chain, "WETH"), token_address(chain, "USDC")

    set_price(chain.w3, chain.deployment, "WETH", 2_500 * 10**8, chain.roles.deployer.address)

    assert oracle.functions.getPrice(weth).call() == [2_500 * 10**8, 8]
    assert oracle.functions.convert(10**18, weth, usdc).call() == 2_500 * 10**6
