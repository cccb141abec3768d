"""Levers a running devnet offers: move a price, re-publish feeds, travel in time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from web3 import Web3
from web3.types import RPCEndpoint

from keeper.devnet.deploy import Deployment
from keeper.devnet.tx import send


def latest_answer(w3: Web3, deployment: Deployment, symbol: str) -> int:
    answer: int = deployment.contract(w3, f"PriceFeed.{symbol}").functions.latestAnswer().call()
    return answer


def set_price(w3: Web3, deployment: Deployment, symbol: str, answer: int, updater: str) -> int:
    """Publishes `answer` (feed decimals) as a new round; returns the block it landed in."""
    feed = deployment.contract(w3, f"PriceFeed.{symbol}")
    receipt = send(w3, feed.functions.updateAnswer(answer), updater)
    block: int = receipt["blockNumber"]
    return block


def move_price(
    w3: Web3, deployment: Deployment, symbol: str, change_bps: int, updater: str
) -> tuple[int, int]:
    """Moves a price by `change_bps` (-3000 = a 30 % crash); returns (old, new) answers."""
    old = latest_answer(w3, deployment, symbol)
    new = old * (10_000 + change_bps) // 10_000
    set_price(w3, deployment, symbol, new, updater)
    return old, new


def refresh_feeds(w3: Web3, deployment: Deployment, updater: str) -> None:
    """Re-publishes every feed's latest answer, as a Chainlink heartbeat would."""
    for symbol in deployment.tokens:
        set_price(w3, deployment, symbol, latest_answer(w3, deployment, symbol), updater)


def advance_time(w3: Web3, seconds: int) -> None:
    """Moves chain time forward and mines a block at the new time."""
    w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
    w3.provider.make_request(RPCEndpoint("evm_mine"), [])


@contextmanager
def reverted_after(w3: Web3) -> Iterator[None]:
    """Undoes every chain change made inside the block: blocks, state and time (evm_snapshot,
    then evm_revert; a snapshot id is good for one revert, so each block takes its own)."""
    snapshot = w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]
    try:
        yield
    finally:
        reverted = w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot]).get("result")
        if reverted is not True:
            raise RuntimeError(f"evm_revert to snapshot {snapshot} failed: the chain keeps changes")
