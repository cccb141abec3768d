"""Comparing two `ProtocolState`s by everything the keeper reads from them, derived indexes
included (a restored or rolled-back state must answer every question as the original would)."""

from __future__ import annotations

from typing import Any

from keeper.state.store import PriceKey, ProtocolState


def price_keys(*states: ProtocolState) -> set[PriceKey]:
    """Every (oracle, token) any of `states` knows of: configured, priced or held."""
    keys: set[PriceKey] = set()
    for state in states:
        keys |= set(state.feed_configs)
        keys |= {(oracle, token) for oracle, by_token in state.prices.items() for token in by_token}
        for market in state.markets.values():
            for account in market.accounts.values():
                keys |= {(market.oracle, token) for token in account.balances}
    return keys


def snapshot(state: ProtocolState, keys: set[PriceKey]) -> dict[str, Any]:
    return {
        "markets": {
            manager: (
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
            for manager, market in state.markets.items()
        },
        "prices": {oracle: dict(by_token) for oracle, by_token in state.prices.items()},
        "feed_configs": dict(state.feed_configs),
        "feeds": {feed: set(keys) for feed, keys in state.feeds().items()},
        "holders": {key: set(state.holders(key)) for key in keys},
        "watched": state.watched_addresses(),
        "accounts": state.account_count(),
    }


def assert_same_state(actual: ProtocolState, expected: ProtocolState) -> None:
    keys = price_keys(actual, expected)
    assert snapshot(actual, keys) == snapshot(expected, keys)
