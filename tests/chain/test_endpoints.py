"""RpcClient with several endpoints: failover when the primary refuses, dies or is rate limited,
return once it answers again, stalled and lagging heads set aside, and endpoints on another
chain refused.

Real anvils serve the chain; a TCP proxy in front of one plays a primary that can be cut, and
scripted nodes play the failures only hosted nodes show. Cooldowns run on a clock the test
moves, so nothing waits for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from keeper.chain.endpoints import EndpointState
from keeper.chain.rpc import ChainMismatchError, RpcClient, RpcTransportError
from keeper.devnet.anvil import AnvilNode, free_port
from tests.chain.fake_nodes import Reply, TcpProxy, result, rpc_error, scripted_node

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

UP, DOWN = EndpointState.UP, EndpointState.DOWN


class Clock:
    """The monotonic clock, plus whatever the test skips ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += seconds


@dataclass
class Recorder:
    """An RpcObserver that keeps what it was told."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)

    def rpc_request(
        self, method: str, endpoint: str, duration_s: float, error_kind: str | None
    ) -> None:
        self.requests.append((method, endpoint, error_kind))

    def rpc_endpoint_set_aside(self, endpoint: str, reason: str) -> None:
        self.set_aside.append((endpoint, reason))

    def served_by(self, endpoint: str) -> list[str]:
        """Methods the endpoint answered, in order."""
        return [m for m, e, kind in self.requests if e == endpoint and kind in (None, "json_rpc")]

    def asked(self, endpoint: str) -> int:
        return sum(1 for _, e, _ in self.requests if e == endpoint)


@asynccontextmanager
async def client(
    *urls: str, head_stall_s: float = 30.0, attempts: int = 4
) -> AsyncIterator[tuple[RpcClient, Recorder, Clock]]:
    recorder, clock = Recorder(), Clock()
    rpc = RpcClient(
        list(urls),
        timeout_s=2.0,
        attempts=attempts,
        max_backoff_s=0.01,
        head_stall_s=head_stall_s,
        observer=recorder,
        clock=clock,
    )
    try:
        yield rpc, recorder, clock
    finally:
        await rpc.close()


@asynccontextmanager
async def proxy_to(node: AnvilNode) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(node.port, free_port())
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


def url_of(proxy: TcpProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [log for log in logs if log["event"] == name]


def states(rpc: RpcClient) -> list[tuple[EndpointState, bool]]:
    return [(status.state, status.preferred) for status in rpc.endpoints()]


async def genesis_hash(rpc: RpcClient) -> str:
    block = await rpc.request("eth_getBlockByNumber", ["0x0", False])
    return str(block["hash"])


# ------------------------------------------------------------------ failover and return


async def test_a_refusing_primary_is_passed_over_and_preferred_again_once_it_answers(
    node: AnvilNode,
) -> None:
    async with proxy_to(node) as proxy, client(url_of(proxy), node.rpc_url) as (rpc, seen, clock):
        primary, backup = url_of(proxy), node.rpc_url
        assert await rpc.request("eth_chainId", []) == "0x7a69"
        assert seen.served_by(primary) == ["eth_chainId"]

        await proxy.cut()
        with capture_logs() as logs:
            # No error reaches the caller: the backup answers the same request.
            assert await rpc.request("eth_blockNumber", []) == "0x0"
            assert await rpc.request("eth_blockNumber", []) == "0x0"

        assert seen.served_by(backup) == ["eth_blockNumber", "eth_blockNumber"]
        assert seen.asked(primary) == 1 + 2  # two attempts, then never during its cooldown
        assert states(rpc) == [(DOWN, False), (UP, True)]
        assert rpc.url == backup
        [down] = events(logs, "rpc.endpoint_down")
        assert (down["endpoint"], down["reason"], down["log_level"]) == (
            primary,
            "transport",
            "warning",
        )
        assert seen.set_aside == [(primary, "transport")]

        await proxy.start()
        clock.advance(1.0)  # the first cooldown
        # While the backup serves, no request waits on a node that may hang: the head check
        # probes the primary and brings it back.
        assert await rpc.request("eth_blockNumber", []) == "0x0"
        assert seen.asked(primary) == 1 + 2
        with capture_logs() as logs:
            await rpc.check_endpoints()
        assert states(rpc) == [(UP, True), (UP, False)]
        assert [(log["event"], log["endpoint"], log["was"]) for log in logs] == [
            ("rpc.endpoint_up", primary, "down")
        ]

        assert await rpc.request("eth_chainId", []) == "0x7a69"
        assert seen.served_by(primary)[-1] == "eth_chainId"


async def test_a_stopped_primary_anvil_fails_over_once_for_many_requests_in_flight(
    node: AnvilNode,
) -> None:
    primary = AnvilNode()
    try:
        async with client(primary.rpc_url, node.rpc_url) as (rpc, seen, _):
            await rpc.request("anvil_mine", ["0x3"])  # on the primary only
            primary.stop()
            with capture_logs() as logs:
                numbers = await asyncio.gather(
                    *(rpc.request("eth_blockNumber", []) for _ in range(20))
                )
    finally:
        primary.stop()

    assert numbers == ["0x0"] * 20  # all from the backup
    assert len(events(logs, "rpc.endpoint_down")) == 1
    assert seen.set_aside == [(primary.rpc_url, "transport")]


async def test_every_endpoint_down_is_a_transport_error_naming_each(node: AnvilNode) -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v2/SECRET-{n}" for n in range(2)]
    async with client(*dead) as (rpc, seen, _):
        with pytest.raises(RpcTransportError) as raised:
            await rpc.request("eth_blockNumber", [])
        assert not isinstance(raised.value, ChainMismatchError)
        first = [endpoint for _, endpoint, _ in seen.requests]

        # Both set aside: each is still tried once, the one set aside first (back first) first.
        with pytest.raises(RpcTransportError):
            await rpc.request("eth_blockNumber", [])
        second = [endpoint for _, endpoint, _ in seen.requests][len(first) :]

    labels = [status.endpoint for status in rpc.endpoints()]
    assert first == [labels[0], labels[0], labels[1], labels[1]]
    assert second == labels
    assert str(raised.value).count("failed after 2 attempts: ClientConnectorError") == 2
    assert "SECRET" not in str(raised.value)


async def test_a_revert_is_no_endpoint_failure() -> None:
    async with (
        scripted_node(rpc_error(3, "execution reverted", "0x30cd7471")) as primary,
        scripted_node(result("0x1")) as backup,
        client(primary.url, backup.url) as (rpc, _, _),
    ):
        with pytest.raises(Exception, match="execution reverted"):
            await rpc.request("eth_call", [{}, "latest"])

        assert (primary.hits, backup.hits) == (1, 0)
        assert states(rpc) == [(UP, True), (UP, False)]


# ------------------------------------------------------------------ rate limits


@pytest.mark.parametrize(
    "limited",
    [
        pytest.param(Reply(status=429), id="http-429"),
        pytest.param(rpc_error(-32005, "request rate limited"), id="json-rpc-limit"),
    ],
)
async def test_a_rate_limited_primary_backs_off_then_fails_over_and_returns(
    node: AnvilNode, limited: Reply
) -> None:
    async with (
        scripted_node(limited, limited, result("0x2a")) as primary,
        client(primary.url, node.rpc_url) as (rpc, seen, clock),
    ):
        with capture_logs() as logs:
            assert await rpc.request("eth_blockNumber", []) == "0x0"  # the backup's answer

        assert primary.hits == 2  # retried once after a backoff, then set aside
        assert [log["event"] for log in logs] == ["rpc.retrying", "rpc.endpoint_down"]
        assert logs[1]["reason"] == "rate_limited"
        assert seen.set_aside == [(primary.url, "rate_limited")]
        assert states(rpc) == [(EndpointState.RATE_LIMITED, False), (UP, True)]

        # Rate limits rest longer than outages; head checks leave the endpoint alone meanwhile.
        clock.advance(4.0)
        await rpc.check_endpoints()
        assert await rpc.request("eth_blockNumber", []) == "0x0"
        assert primary.hits == 2

        clock.advance(1.0)
        await rpc.check_endpoints()  # (the scripted primary's head makes anvil look behind)
        assert states(rpc)[0] == (UP, True)
        assert await rpc.request("eth_blockNumber", []) == "0x2a"


async def test_a_numeric_retry_after_is_honoured(node: AnvilNode) -> None:
    limited = Reply(status=429, headers={"Retry-After": "20"})
    async with (
        scripted_node(limited, limited, result("0x2a")) as primary,
        client(primary.url, node.rpc_url) as (rpc, _, clock),
    ):
        await rpc.request("eth_blockNumber", [])
        clock.advance(19.0)
        await rpc.check_endpoints()  # not probed while it rests
        assert await rpc.request("eth_blockNumber", []) == "0x0"

        clock.advance(1.0)
        await rpc.check_endpoints()
        assert await rpc.request("eth_blockNumber", []) == "0x2a"


# ------------------------------------------------------------------ heads


async def test_a_stalled_endpoint_is_set_aside_and_returns_once_it_moves(node: AnvilNode) -> None:
    async with (
        scripted_node(result("0x3")) as stuck,
        client(stuck.url, node.rpc_url, head_stall_s=5.0) as (rpc, seen, clock),
    ):
        await node_mine(node, 3)
        with capture_logs() as logs:
            await rpc.check_endpoints()
            clock.advance(10.0)
            # Standing still together (mining stopped) is no reason to set anything aside.
            await rpc.check_endpoints()
        assert logs == []
        assert states(rpc) == [(UP, True), (UP, False)]

        await node_mine(node)
        with capture_logs() as logs:
            await rpc.check_endpoints()

        assert [(log["event"], log["reason"], log["head"], log["best_head"]) for log in logs] == [
            ("rpc.endpoint_stalled", "stalled", 3, 4)
        ]
        assert seen.set_aside[-1] == (stuck.url, "stalled")
        assert [(s.state, s.preferred, s.head) for s in rpc.endpoints()] == [
            (EndpointState.STALLED, False, 3),
            (UP, True, 4),
        ]
        hits = stuck.hits
        assert await rpc.request("eth_blockNumber", []) == "0x4"
        assert stuck.hits == hits  # served by the backup

        stuck.replies = [result("0x4")]  # the node catches up
        with capture_logs() as logs:
            await rpc.check_endpoints()
        assert [log["event"] for log in logs] == ["rpc.endpoint_up"]
        assert states(rpc) == [(UP, True), (UP, False)]


async def test_an_endpoint_far_behind_is_set_aside_until_it_catches_up(node: AnvilNode) -> None:
    async with (
        scripted_node(result("0x1")) as lagging,
        client(lagging.url, node.rpc_url) as (rpc, _, _),
    ):
        await node_mine(node, 20)
        with capture_logs() as logs:
            await rpc.check_endpoints()

        assert [(log["event"], log["head"], log["best_head"]) for log in logs] == [
            ("rpc.endpoint_behind", 1, 20)
        ]
        assert states(rpc) == [(EndpointState.BEHIND, False), (UP, True)]

        lagging.replies = [result(hex(19))]
        await rpc.check_endpoints()
        assert states(rpc) == [(UP, True), (UP, False)]


async def node_mine(node: AnvilNode, blocks: int = 1) -> None:
    """Mines on `node` directly, not through the client under test."""
    direct = RpcClient(node.rpc_url)
    try:
        await direct.request("anvil_mine", [hex(blocks)])
    finally:
        await direct.close()


# ------------------------------------------------------------------ chain identity


async def test_an_anvil_with_another_chain_id_is_refused_when_it_is_the_only_endpoint(
    node: AnvilNode, rpc: RpcClient
) -> None:
    expected = await genesis_hash(rpc)
    other = AnvilNode(chain_id=999)
    try:
        async with client(other.rpc_url) as (wrong, seen, _):
            with capture_logs() as logs, pytest.raises(ChainMismatchError):
                await wrong.expect_chain(31337, expected)
            with pytest.raises(ChainMismatchError) as raised:
                await wrong.request("eth_blockNumber", [])
    finally:
        other.stop()

    message = str(raised.value)
    assert "DIFFERENT CHAIN (new genesis or chain id)" in message
    assert "refuses it" in message
    assert f"chain 31337 with genesis {expected}" in message
    assert "serves chain 999" in message
    [refused] = events(logs, "rpc.endpoint_refused")
    assert refused["log_level"] == "error"
    assert (refused["expected_chain_id"], refused["found_chain_id"]) == (31337, 999)
    assert refused["expected_genesis"] == expected
    assert refused["endpoint"] == other.rpc_url
    assert [status.state for status in wrong.endpoints()] == [EndpointState.WRONG_CHAIN]
    # Only the identity was asked for, once: within its cooldown it is refused without asking.
    assert [method for method, _, _ in seen.requests] == ["eth_chainId", "eth_getBlockByNumber"]


async def test_a_devnet_restarted_without_its_state_is_a_new_chain_and_refused() -> None:
    first = AnvilNode()
    port = first.port
    restarted: AnvilNode | None = None
    try:
        async with client(first.rpc_url) as (rpc, _, _):
            genesis = await rpc.request("eth_getBlockByNumber", ["0x0", False])
            await rpc.expect_chain(31337, genesis["hash"])
            await rpc.request("anvil_mine", ["0x5"])
            await rpc.check_endpoints()

            first.stop()
            with pytest.raises(RpcTransportError):
                await rpc.request("eth_blockNumber", [])
            # anvil's genesis is a function of its start second: a restart within the same
            # second would be the same chain, byte for byte.
            while int(time.time()) <= int(genesis["timestamp"], 16):
                await asyncio.sleep(0.05)
            restarted = AnvilNode(port=port)

            with capture_logs() as logs, pytest.raises(ChainMismatchError) as raised:
                await rpc.request("eth_blockNumber", [])
    finally:
        first.stop()
        if restarted is not None:
            restarted.stop()

    assert genesis["hash"] in str(raised.value)
    [refused] = events(logs, "rpc.endpoint_refused")
    assert refused["expected_genesis"] == genesis["hash"]
    assert refused["found_genesis"] != genesis["hash"]
    assert refused["found_chain_id"] == 31337


async def test_a_head_going_back_makes_the_endpoint_show_its_chain_again() -> None:
    first = AnvilNode()
    restarted: AnvilNode | None = None
    try:
        async with client(first.rpc_url) as (rpc, _, _):
            genesis = await rpc.request("eth_getBlockByNumber", ["0x0", False])
            await rpc.expect_chain(31337, genesis["hash"])
            await rpc.request("anvil_mine", ["0x5"])
            await rpc.check_endpoints()

            # Restarted between two checks, without one failed request to notice it by.
            first.stop()
            while int(time.time()) <= int(genesis["timestamp"], 16):
                await asyncio.sleep(0.05)
            restarted = AnvilNode(port=first.port)

            with pytest.raises(ChainMismatchError):
                await rpc.check_endpoints()
            assert [status.state for status in rpc.endpoints()] == [EndpointState.WRONG_CHAIN]
    finally:
        first.stop()
        if restarted is not None:
            restarted.stop()


async def test_a_backup_on_another_chain_is_refused_at_start_and_never_serves(
    node: AnvilNode, rpc: RpcClient
) -> None:
    expected = await genesis_hash(rpc)
    other = AnvilNode(chain_id=999)
    try:
        async with (
            proxy_to(node) as proxy,
            client(url_of(proxy), other.rpc_url) as (both, seen, clock),
        ):
            with capture_logs() as logs:
                await both.expect_chain(31337, expected)
            assert [log["event"] for log in events(logs, "rpc.endpoint_refused")] == [
                "rpc.endpoint_refused"
            ]
            assert states(both) == [(UP, True), (EndpointState.WRONG_CHAIN, False)]

            await proxy.cut()
            clock.advance(60.0)  # the backup is due for another check
            with pytest.raises(RpcTransportError) as raised:
                await both.request("eth_blockNumber", [])
    finally:
        other.stop()

    # The primary may come back: a failure, not a verdict on the chain.
    assert not isinstance(raised.value, ChainMismatchError)
    assert "serves chain 999" in str(raised.value)
    assert seen.served_by(other.rpc_url) == [
        "eth_chainId",
        "eth_getBlockByNumber",
        "eth_chainId",
        "eth_getBlockByNumber",
    ]


async def test_an_endpoint_that_drops_a_request_shows_its_chain_before_the_retry() -> None:
    genesis, other_genesis = "0x" + "aa" * 32, "0x" + "bb" * 32
    async with (
        scripted_node(
            result("0x7a69"),  # expect_chain: chain id,
            result({"hash": genesis}),  # genesis,
            result("0x5"),  # head
            Reply(status=503),  # the request: a load balancer without its node
            result("0x7a69"),  # the retry first asks again: same id,
            result({"hash": other_genesis}),  # another genesis
            result("0x9"),
        ) as node,
        client(node.url) as (rpc, _, _),
    ):
        await rpc.expect_chain(31337, genesis)

        with pytest.raises(ChainMismatchError, match=other_genesis):
            await rpc.request("eth_blockNumber", [])

        assert node.hits == 6
