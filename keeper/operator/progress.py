"""A one-line back-fill progress meter for people waiting at a terminal.

A back-fill from an old deploy block can take minutes on a real chain; a person needs to see it
move. The meter writes only to a terminal's stderr: stdout carries the command's answer (a table,
JSON) and a pipe or a log file must not collect carriage-return noise.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

_MIN_INTERVAL_S = 0.1


class BackfillMeter:
    """`on_progress` for `keeper.startup.load_state`: "back-fill: 1,234 / 5,000 blocks (24.7 %)",
    rewritten in place; use it as a context manager so the line is cleared afterwards."""

    def __init__(self) -> None:
        self._stream = sys.stderr
        self._live = self._stream.isatty()
        self._shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self._live:
            return
        now = time.monotonic()
        if now - self._last < _MIN_INTERVAL_S and done < total:
            return
        self._last = now
        percent = 100 * done / total if total else 100.0
        self._stream.write(f"\rback-fill: {done:,} / {total:,} blocks ({percent:.1f} %)\x1b[K")
        self._stream.flush()
        self._shown = True

    def __enter__(self) -> BackfillMeter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
