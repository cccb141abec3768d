"""Stand-ins for misbehaving nodes: a scripted JSON-RPC server, a range-limited eth_getLogs
proxy in front of anvil, and a TCP proxy whose connections a test can cut or freeze."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: a JSON-RPC body (`result` or `error`), a raw text body, or a status
    (with headers such as Retry-After)."""

    status: int = 200
    fields: dict[str, Any] | None = None
    text: str | None = None
    delay_s: float = 0.0
    headers: dict[str, str] | None = None


def result(value: Any) -> Reply:
    return Reply(fields={"result": value})


def rpc_error(code: int, message: str, data: Any = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return Reply(fields={"error": error})


@dataclass
class ScriptedNode:
    """Answers the n-th request with the n-th reply (the last one repeats); counts requests and
    the client ports they came from (one port: one kept-alive connection)."""

    replies: list[Reply]
    url: str = ""
    hits: int = 0
    client_ports: set[int] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        if request.transport is not None:
            self.client_ports.add(request.transport.get_extra_info("peername")[1])
        body = await request.json()
        reply = self.replies[min(self.hits, len(self.replies) - 1)]
        self.hits += 1
        await asyncio.sleep(reply.delay_s)
        if reply.fields is not None:
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], **reply.fields})
        return web.Response(status=reply.status, text=reply.text or "", headers=reply.headers)


@dataclass
class RangeLimitedProxy:
    """Forwards JSON-RPC to anvil but refuses eth_getLogs spans above `max_blocks` (None: no
    limit) the way hosted nodes do; records the span of every eth_getLogs it sees."""

    upstream: str
    max_blocks: int | None
    session: aiohttp.ClientSession
    url: str = ""
    spans: list[int] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["method"] == "eth_getLogs" and "fromBlock" in body["params"][0]:
            query = body["params"][0]
            span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            self.spans.append(span)
            if self.max_blocks is not None and span > self.max_blocks:
                self.refused += 1
                error = {
                    "code": -32000,
                    "message": f"block range too large (max {self.max_blocks})",
                }
                return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": error})
        async with self.session.post(self.upstream, json=body) as upstream:
            return web.json_response(await upstream.json())


@asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[str]:
    """Serves `handler` for POST / on a free loopback port; yields the URL."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def scripted_node(*replies: Reply) -> AsyncIterator[ScriptedNode]:
    node = ScriptedNode(list(replies))
    async with serving(node.handle) as url:
        node.url = url
        yield node


@asynccontextmanager
async def range_limited_proxy(
    upstream: str, max_blocks: int | None
) -> AsyncIterator[RangeLimitedProxy]:
    async with aiohttp.ClientSession() as session:
        proxy = RangeLimitedProxy(upstream, max_blocks, session)
        async with serving(proxy.handle) as url:
            proxy.url = url
            yield proxy


class TcpProxy:
    """Forwards a loopback port to `target_port`. `cut()` resets every connection and stops
    listening, as a dying load balancer would; `start()` listens on the same port again. While
    `frozen`, bytes are swallowed in both directions: a hung node that keeps its sockets open."""

    def __init__(self, target_port: int, port: int) -> None:
        self._target_port = target_port
        self.port = port
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        if self._pipes:
            await asyncio.wait(self._pipes)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(
                "127.0.0.1", self._target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, target_writer]
        for source, sink in ((reader, target_writer), (target_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while data := await source.read(65536):
                if not self.frozen:
                    sink.write(data)
                    await sink.drain()
        sink.close()
