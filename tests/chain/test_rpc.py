"""RpcClient: raw results, JSON-RPC errors raised at once, transport failures retried, then named.

anvil answers the real calls; a scripted server plays the failures a real node only shows under
load (429s, 5xx, garbage, hangs), and counts how often the client asked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from structlog.testing import capture_logs
from web3 import Web3

from keeper.chain.rpc import RpcClient, RpcError, RpcTransportError
from keeper.devnet.anvil import AnvilNode, free_port
from keeper.devnet.tx import connect, contract_at, deploy
from tests.chain.fake_nodes import Reply, result, rpc_error, scripted_node

pytestmark = [pytest.mark.chain, pytest.mark.asyncio]

SIGNED_TX = "0x02f87082053980843b9aca00850ba43b7400825208945fbdb2315678afecb367f032d93f642f64180aa3"


def fast_client(url: str, *, attempts: int = 4, timeout_s: float = 5.0) -> RpcClient:
    return RpcClient(url, timeout_s=timeout_s, attempts=attempts, max_backoff_s=0.01)


# ------------------------------------------------------------------ against anvil


async def test_request_returns_the_raw_json_result(node: AnvilNode, rpc: RpcClient) -> None:
    assert rpc.url == node.rpc_url
    assert await rpc.request("eth_chainId", []) == "0x7a69"

    block = await rpc.request("eth_getBlockByNumber", ["0x0", False])

    # Hex strings as the node sent them, not web3's ints and HexBytes.
    assert block["number"] == "0x0"
    assert isinstance(block["hash"], str)
    assert block["hash"].startswith("0x")


async def test_unknown_method_is_an_rpc_error_with_code_and_message(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as raised:
        await rpc.request("keeper_noSuchMethod", [])

    assert (raised.value.method, raised.value.code) == ("keeper_noSuchMethod", -32601)
    assert raised.value.message == "Method not found"
    assert raised.value.data is None


async def test_invalid_params_are_an_rpc_error(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as raised:
        await rpc.request("eth_call", [{"to": "0xnot-an-address"}, "latest"])

    assert raised.value.code == -32602


async def test_revert_surfaces_at_once_with_its_data(node: AnvilNode, rpc: RpcClient) -> None:
    owner, stranger = node.keys()[:2]
    w3 = connect(node.rpc_url)
    token = contract_at(w3, "TestToken", deploy(w3, "TestToken", owner.address, "T", "T", 18))
    mint = token.functions.mint(stranger.address, 1)._encode_transaction_data()

    with pytest.raises(RpcError) as raised:
        await rpc.request(
            "eth_call", [{"from": stranger.address, "to": token.address, "data": mint}]
        )

    not_owner = Web3.keccak(text="NotOwner()")[:4].to_0x_hex()
    assert raised.value.code == 3
    assert raised.value.data == not_owner
    assert "execution reverted" in raised.value.message


async def test_concurrent_requests_from_many_tasks_all_get_their_own_answer(
    rpc: RpcClient,
) -> None:
    await rpc.request("anvil_mine", ["0x31"])

    blocks = await asyncio.gather(
        *(rpc.request("eth_getBlockByNumber", [hex(n), False]) for n in range(50))
    )

    assert [int(block["number"], 16) for block in blocks] == list(range(50))


async def test_closed_port_fails_after_all_attempts_naming_method_and_host_only() -> None:
    port = free_port()
    client = fast_client(f"http://keeper:hunter2@127.0.0.1:{port}/v2/API-KEY", attempts=3)
    try:
        with capture_logs() as logs, pytest.raises(RpcTransportError) as raised:
            await client.request("eth_sendRawTransaction", [SIGNED_TX])
    finally:
        await client.close()

    message = str(raised.value)
    assert message.startswith(
        f"eth_sendRawTransaction to http://127.0.0.1:{port}/... failed after 3 attempts: "
        "ClientConnectorError"
    )
    # Two retries were logged; neither the signed transaction nor the credentials appear.
    assert [log["attempt"] for log in logs if log["event"] == "rpc.retrying"] == [1, 2]
    for secret in (SIGNED_TX[2:20], "hunter2", "API-KEY"):
        assert secret not in message + repr(logs)


# ------------------------------------------------------------------ against a scripted node


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Reply(status=429), id="http-429"),
        pytest.param(Reply(status=503), id="http-503"),
        pytest.param(Reply(text="<html>bad gateway</html>"), id="not-json"),
        pytest.param(Reply(text='{"jsonrpc": "2.0"}'), id="neither-result-nor-error"),
        pytest.param(rpc_error(-32005, "daily request count exceeded, request rate limited")),
        pytest.param(rpc_error(429, "Too Many Requests"), id="json-rpc-429"),
        pytest.param(rpc_error(-32000, "Your app has exceeded its compute units per second")),
    ],
)
async def test_transient_failures_are_retried_until_the_node_answers(failure: Reply) -> None:
    async with scripted_node(failure, failure, result("0x2a")) as fake:
        client = fast_client(fake.url)
        try:
            assert await client.request("eth_blockNumber", []) == "0x2a"
        finally:
            await client.close()

    assert fake.hits == 3


async def test_one_connection_serves_many_requests() -> None:
    async with scripted_node(result("0x1")) as fake:
        client = fast_client(fake.url)
        try:
            for _ in range(5):
                await client.request("eth_blockNumber", [])
        finally:
            await client.close()

    assert fake.hits == 5
    assert len(fake.client_ports) == 1


async def test_exhausted_retries_raise_a_transport_error() -> None:
    async with scripted_node(Reply(status=503)) as fake:
        client = fast_client(fake.url, attempts=3)
        try:
            with pytest.raises(RpcTransportError, match=r"eth_blockNumber .* 3 attempts: HTTP 503"):
                await client.request("eth_blockNumber", [])
        finally:
            await client.close()

    assert fake.hits == 3


async def test_backoff_grows_but_stays_under_its_cap() -> None:
    async with scripted_node(Reply(status=503)) as fake:
        client = RpcClient(fake.url, attempts=4, max_backoff_s=0.15)
        started = time.monotonic()
        try:
            with pytest.raises(RpcTransportError):
                await client.request("eth_blockNumber", [])
        finally:
            await client.close()

    # Three waits: at least 0.1 + 0.15 + 0.15 (first wait is 0.1 plus jitter, the rest capped).
    assert 0.4 <= time.monotonic() - started < 1.5
    assert fake.hits == 4


async def test_a_hung_node_times_out_and_is_retried() -> None:
    async with scripted_node(Reply(delay_s=1.0, fields={"result": "0x1"})) as fake:
        client = fast_client(fake.url, attempts=2, timeout_s=0.1)
        try:
            with pytest.raises(RpcTransportError, match="no answer in time"):
                await client.request("eth_blockNumber", [])
        finally:
            await client.close()

    assert fake.hits == 2


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(rpc_error(3, "execution reverted", "0x30cd7471"), id="revert"),
        # -32005 without rate-limit words is a size limit: the log fetcher splits, not waits.
        pytest.param(rpc_error(-32005, "query returned more than 10000 results"), id="too-big"),
        pytest.param(rpc_error(-32000, "nonce too low"), id="nonce"),
    ],
)
async def test_json_rpc_errors_are_raised_on_the_first_answer(reply: Reply) -> None:
    assert reply.fields is not None
    async with scripted_node(reply, result("0x1")) as fake:
        client = fast_client(fake.url)
        try:
            with pytest.raises(RpcError) as raised:
                await client.request("eth_call", [{}, "latest"])
        finally:
            await client.close()

    assert fake.hits == 1
    assert raised.value.code == reply.fields["error"]["code"]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_http_errors_are_not_retried(status: int) -> None:
    async with scripted_node(Reply(status=status), result("0x1")) as fake:
        client = fast_client(fake.url)
        try:
            with pytest.raises(RpcTransportError, match=f"HTTP {status}"):
                await client.request("eth_blockNumber", [])
        finally:
            await client.close()

    assert fake.hits == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("0xCF479181", "0xcf479181"),
        ({"data": "0x30cd7471", "message": "NotOwner()"}, "0x30cd7471"),
        ("Reverted 0x08c379a0", "0x08c379a0"),
        ("0x", "0x"),
        ("execution reverted", None),
        (17, None),
    ],
)
async def test_revert_data_is_normalised_to_hex(data: Any, expected: str | None) -> None:
    async with scripted_node(rpc_error(3, "execution reverted", data)) as fake:
        client = fast_client(fake.url)
        try:
            with pytest.raises(RpcError) as raised:
                await client.request("eth_call", [{}, "latest"])
        finally:
            await client.close()

    assert raised.value.data == expected


async def test_non_printable_bytes_in_messages_stay_out_of_the_error_text() -> None:
    message = "execution reverted: custom error 0xcf479181: \x00\x00\x05"
    async with scripted_node(rpc_error(3, message)) as fake:
        client = fast_client(fake.url)
        try:
            with pytest.raises(RpcError) as raised:
                await client.request("eth_call", [{}, "latest"])
        finally:
            await client.close()

    assert raised.value.message == message
    assert str(raised.value).endswith(r"0xcf479181: \x00\x00\x05")
