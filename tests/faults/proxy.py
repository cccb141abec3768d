"""A TCP proxy between a client and a node that injects the connection faults of the fault suite.

It runs its own asyncio loop in a background thread, so a synchronous test, a keeper running on the
test's event loop and a keeper in a child process can all be put behind it, and every control call
returns once the fault is in place. Bytes pass through untouched (HTTP and WebSocket alike) until
a test asks for one of:

- `latency(s)`: every chunk is delivered `s` seconds after it was read, in both directions;
- `swallow()`: bytes are read and dropped both ways, connections stay open: a hung node;
- `reset()`: open connections are reset (RST) and new ones are reset as soon as accepted;
- `refuse()`: the port stops listening (connects are refused) and open connections are reset:
  a node that is down; any other mode listens on the same port again;
- `rate_limit()`: each HTTP request is answered `429 Too Many Requests` on a kept-alive
  connection, as a throttling provider does;
- `cut()`: every open connection is closed once while new ones are accepted, as a load balancer
  dropping its sessions does;
- `passthrough()`: back to forwarding everything at once.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 65_536
_CONTROL_TIMEOUT_S = 5.0
_RATE_LIMIT_BODY = b'{"jsonrpc":"2.0","id":null,"error":{"code":429,"message":"Too Many Requests"}}'
_TOO_MANY_REQUESTS = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Length: " + str(len(_RATE_LIMIT_BODY)).encode() + b"\r\n"
    b"\r\n" + _RATE_LIMIT_BODY
)


class Mode(enum.Enum):
    PASS = "pass"
    SWALLOW = "swallow"
    RESET = "reset"
    REFUSE = "refuse"
    RATE_LIMIT = "rate_limit"


@dataclass(eq=False)
class _Connection:
    """One accepted client and, once connected, its upstream connection to the target."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def close(self) -> None:
        """Closes both sides after flushing what was already written: a FIN, not a reset."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()

    def abort(self, *, reset: bool) -> None:
        """Drops both sides at once; with `reset` the client sees an RST (SO_LINGER 0)."""
        if reset:
            _linger_zero(self.client)
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `target_host:target_port`; see the module docstring for the
    faults. Use as a context manager (or `start()`/`stop()`): the loop thread is stopped and
    joined at the end, every connection closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections accepted since the start, in every mode
        self.rate_limited = 0  # HTTP requests answered 429
        self._mode = Mode.PASS
        self._latency_s = 0.0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"fault-proxy-{self._target[1]}", daemon=True
        )
        self._thread.start()
        self._control(self._listen())
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, thread = self._loop, self._thread
        self._control(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def open_connections(self) -> int:
        return self._control(self._count())

    # ------------------------------------------------------------------ faults

    def passthrough(self) -> None:
        self._control(self._switch(Mode.PASS, latency_s=0.0))

    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds}")
        self._control(self._switch(Mode.PASS, latency_s=seconds))

    def swallow(self) -> None:
        self._control(self._switch(Mode.SWALLOW))

    def reset(self) -> None:
        self._control(self._switch(Mode.RESET))

    def refuse(self) -> None:
        self._control(self._switch(Mode.REFUSE))

    def rate_limit(self) -> None:
        self._control(self._switch(Mode.RATE_LIMIT))

    def cut(self) -> int:
        """Closes every open connection once; returns how many there were."""
        return self._control(self._cut())

    # ------------------------------------------------------------------ on the proxy's loop

    def _control(self, work: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            work.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(_CONTROL_TIMEOUT_S)

    async def _count(self) -> int:
        return len(self._connections)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: Mode, *, latency_s: float | None = None) -> None:
        previous, self._mode = self._mode, mode
        if latency_s is not None:
            self._latency_s = latency_s
        if mode is Mode.REFUSE:
            server, self._server = self._server, None
            if server is not None:
                server.close()
            self._drop_all(reset=True)
            if server is not None:
                await server.wait_closed()
            return
        await self._listen()
        if mode is Mode.RESET:
            self._drop_all(reset=True)
        elif mode is Mode.RATE_LIMIT and previous is not Mode.RATE_LIMIT:
            # Requests on a connection already piped cannot be told apart mid-stream: close
            # those connections, so clients reconnect and meet the limit.
            for connection in list(self._connections):
                if connection.upstream is not None:
                    connection.close()
                    self._connections.discard(connection)

    async def _cut(self) -> int:
        count = len(self._connections)
        self._drop_all(reset=False)
        return count

    def _drop_all(self, *, reset: bool) -> None:
        for connection in list(self._connections):
            connection.abort(reset=reset)
        self._connections.clear()

    async def _shutdown(self) -> None:
        await self._switch(Mode.REFUSE)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        connection = _Connection(writer)
        if self._mode is Mode.RESET:
            connection.abort(reset=True)
            return
        self._connections.add(connection)
        try:
            first = b""
            if self._mode is Mode.RATE_LIMIT:
                forward = await self._answer_too_many_requests(reader, writer)
                if forward is None:
                    return
                first = forward
            await self._pipe(connection, reader, first)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client or the node went away: nothing to forward any more
        finally:
            self._connections.discard(connection)
            connection.abort(reset=False)

    async def _answer_too_many_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """Answers each HTTP request 429 while the rate limit lasts. Returns the first request
        read after it ended (to forward it), b"" when the mode changed between requests, or None
        when the client closed the connection."""
        while self._mode is Mode.RATE_LIMIT:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return None
            body = await reader.readexactly(_content_length(head))
            if self._mode is not Mode.RATE_LIMIT:
                return head + body
            self.rate_limited += 1
            writer.write(_TOO_MANY_REQUESTS)
            await writer.drain()
            if _closes_connection(head):
                return None
        return b""

    async def _pipe(
        self, connection: _Connection, reader: asyncio.StreamReader, first: bytes
    ) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self._target)
        except OSError:
            connection.abort(reset=True)  # the node is down, so is this connection
            return
        connection.upstream = upstream
        directions = [
            asyncio.create_task(self._forward(reader, upstream, first)),
            asyncio.create_task(self._forward(upstream_reader, connection.client, b"")),
        ]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            await asyncio.gather(*directions, return_exceptions=True)

    async def _forward(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, first: bytes
    ) -> None:
        """Copies `source` to `sink` until EOF, each chunk due `latency` after it was read (so
        latency delays without throttling); chunks read while swallowing are dropped."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        delivery = asyncio.create_task(_deliver(due, sink))
        try:
            chunk = first
            while True:
                if chunk and self._mode is not Mode.SWALLOW:
                    due.put_nowait((loop.time() + self._latency_s, chunk))
                chunk = await source.read(_CHUNK)
                if not chunk:
                    break
            due.put_nowait(None)
            await delivery
        finally:
            delivery.cancel()


async def _deliver(
    due: asyncio.Queue[tuple[float, bytes] | None], sink: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()
    while (item := await due.get()) is not None:
        at, chunk = item
        if (wait_s := at - loop.time()) > 0:
            await asyncio.sleep(wait_s)
        sink.write(chunk)
        await sink.drain()


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    """Makes the next close of `writer`'s socket send an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _header_lines(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [
        (name.strip().lower(), value.strip())
        for name, sep, value in (line.partition(":") for line in lines)
        if sep
    ]


def _content_length(head: bytes) -> int:
    for name, value in _header_lines(head):
        if name == "content-length":
            return int(value)
    return 0


def _closes_connection(head: bytes) -> bool:
    return any(
        name == "connection" and value.lower() == "close" for name, value in _header_lines(head)
    )
