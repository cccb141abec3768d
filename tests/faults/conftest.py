"""Fixtures of the fault suite: fault proxies in front of a test's own nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxies() -> Iterator[Callable[[int], FaultProxy]]:
    """Starts a `FaultProxy` in front of a loopback port; every one is stopped (its thread
    joined) at the end of the test."""
    with ExitStack() as stack:

        def proxy_to(port: int) -> FaultProxy:
            return stack.enter_context(FaultProxy("127.0.0.1", port))

        yield proxy_to
