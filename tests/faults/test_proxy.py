"""The fault proxy does to real anvil traffic what each mode promises, so a scenario that uses it
tests the keeper and not the proxy."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from keeper.devnet.anvil import AnvilNode
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.chain

_TIMEOUT_S = 5.0


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    with AnvilNode() as anvil:
        yield anvil


@pytest.fixture
def proxy(node: AnvilNode) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", node.port) as running:
        yield running


def _body(method: str, *params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})


def _direct(node: AnvilNode, method: str, *params: Any) -> Any:
    """A call straight to anvil, around the proxy."""
    request = urllib.request.Request(
        node.rpc_url, _body(method, *params).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        return json.loads(response.read())["result"]


def _post(connection: http.client.HTTPConnection, method: str) -> tuple[int, dict[str, Any]]:
    """One JSON-RPC request on a kept-alive connection: the HTTP status and the decoded body."""
    connection.request(
        "POST", "/", body=_body(method), headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _block_number(proxy: FaultProxy, timeout_s: float = _TIMEOUT_S) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout_s)
    try:
        status, body = _post(connection, "eth_blockNumber")
    finally:
        connection.close()
    assert status == 200, body
    return int(body["result"], 16)


@contextmanager
def _subscribe_heads(proxy: FaultProxy) -> Iterator[ClientConnection]:
    """A WebSocket through the proxy with a newHeads subscription."""
    with connect(
        proxy.ws_url, proxy=None, open_timeout=_TIMEOUT_S, ping_interval=None
    ) as websocket:
        websocket.send(_body("eth_subscribe", "newHeads"))
        assert "result" in json.loads(websocket.recv(timeout=_TIMEOUT_S))
        yield websocket


def _next_head(websocket: ClientConnection) -> int:
    notification = json.loads(websocket.recv(timeout=_TIMEOUT_S))
    return int(notification["params"]["result"]["number"], 16)


def test_pass_forwards_http_and_websocket(node: AnvilNode, proxy: FaultProxy) -> None:
    _direct(node, "evm_mine")
    assert _block_number(proxy) == int(_direct(node, "eth_blockNumber"), 16) == 1
    with _subscribe_heads(proxy) as websocket:
        _direct(node, "evm_mine")
        assert _next_head(websocket) == 2


def test_latency_delays_each_way_and_goes_away(proxy: FaultProxy) -> None:
    proxy.latency(0.2)
    started = time.monotonic()
    _block_number(proxy)
    delayed = time.monotonic() - started
    proxy.passthrough()
    started = time.monotonic()
    _block_number(proxy)
    prompt = time.monotonic() - started
    assert delayed >= 0.4, f"a request and its answer should each wait 0.2 s, took {delayed:.3f}"
    assert prompt < 0.4 <= delayed


def test_swallow_hangs_open_connections_like_a_stuck_node(proxy: FaultProxy) -> None:
    proxy.swallow()
    with pytest.raises(TimeoutError):
        _block_number(proxy, timeout_s=0.5)
    hung = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
    with hung:
        hung.sendall(_body("eth_blockNumber").encode())
        with pytest.raises(TimeoutError):
            hung.recv(1)
        assert proxy.open_connections() >= 1, "a swallowing proxy keeps connections open"
    proxy.passthrough()
    assert _block_number(proxy) == 0


def test_reset_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    open_connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=_TIMEOUT_S)
    assert _post(open_connection, "eth_blockNumber")[0] == 200
    proxy.reset()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        _post(open_connection, "eth_blockNumber")
    open_connection.close()
    with pytest.raises(ConnectionResetError):
        _block_number(proxy)
    proxy.passthrough()
    assert _block_number(proxy) == 0


def test_refuse_stops_listening_and_resumes_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    with _subscribe_heads(proxy) as websocket:
        proxy.refuse()
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=_TIMEOUT_S)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S)
    proxy.passthrough()
    assert proxy.port == port
    assert _block_number(proxy) == 0


def test_cut_drops_a_websocket_once_and_keeps_accepting(node: AnvilNode, proxy: FaultProxy) -> None:
    with _subscribe_heads(proxy) as websocket:
        assert proxy.cut() == 1
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=_TIMEOUT_S)
    with _subscribe_heads(proxy) as websocket:
        _direct(node, "evm_mine")
        assert _next_head(websocket) == 1


def test_rate_limit_answers_429_on_a_kept_alive_connection(proxy: FaultProxy) -> None:
    piped = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=_TIMEOUT_S)
    assert _post(piped, "eth_blockNumber")[0] == 200
    proxy.rate_limit()
    assert proxy.open_connections() == 0, "connections piped before the limit are closed"
    piped.close()

    throttled = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=_TIMEOUT_S)
    accepted = proxy.accepted
    for _ in range(2):
        status, body = _post(throttled, "eth_blockNumber")
        assert status == 429
        assert body["error"]["code"] == 429
    assert proxy.rate_limited == 2
    proxy.passthrough()
    status, body = _post(throttled, "eth_blockNumber")
    assert (status, body["result"]) == (200, "0x0"), "the same connection is forwarded again"
    assert proxy.accepted == accepted + 1, "every request used one kept-alive connection"
    throttled.close()
