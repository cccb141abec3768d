"""The HTTP side of a running keeper: `/metrics`, `/healthz` and `/readyz` on one aiohttp server.

It runs in the keeper's own event loop, so a loop too blocked to follow heads is also too blocked
to answer `/healthz`: the probe's timeout is then the liveness verdict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keeper.ops.health import Check
from keeper.ops.metrics import KeeperMetrics

log = structlog.get_logger(__name__)

Checks = Callable[[], list[Check]]


def _checks_response(checks: list[Check]) -> web.Response:
    ok = all(check.ok for check in checks)
    return web.json_response(
        {"ok": ok, "checks": [asdict(check) for check in checks]}, status=200 if ok else 503
    )


@asynccontextmanager
async def ops_server(
    metrics: KeeperMetrics, liveness: Checks, readiness: Checks, *, host: str, port: int
) -> AsyncIterator[int]:
    """Serves until the block ends; yields the bound port."""

    async def metrics_page(_: web.Request) -> web.Response:
        # In the loop, not a thread: collectors read state the loop is changing.
        await metrics.take_census()
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _checks_response(liveness())

    async def readyz(_: web.Request) -> web.Response:
        return _checks_response(readiness())

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    if runner.addresses:
        bound = runner.addresses[0][1]
    log.info("ops.serving", host=host, port=bound, paths=["/metrics", "/healthz", "/readyz"])
    try:
        yield bound
    finally:
        await runner.cleanup()
