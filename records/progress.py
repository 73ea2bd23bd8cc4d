"""Progress of long work: a tqdm bar with rate and ETA on a terminal, plain lines in a log.

Redirected to a file, a tqdm bar writes every redraw (a 40-second digits run wrote over
1,000 of them). ``progress`` returns tqdm when standard error is a terminal and otherwise
a ``LineProgress``: one line when the loop ends (count, seconds, rate and the last
postfix; ``end_line=False`` where the caller prints its own, as the training loops do
once per epoch), and one line with the rate and ETA at most every ``LINE_SECONDS`` while
a long loop runs.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm import tqdm

LINE_SECONDS = 60.0


class LineProgress:
    """The part of tqdm's interface the stages use (iterate, update, set_description, set_postfix,
    close), as lines."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, file=None,
                 end_line: bool = True):
        self.iterable, self.total, self.desc, self.unit, self.end_line = iterable, total, desc, unit, end_line
        self.file = file or sys.stderr
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self._said = time.monotonic()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._said >= LINE_SECONDS:
            self._said = now
            self._say(now, eta=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.end_line:
                self._say(time.monotonic(), eta=False)

    def _say(self, now: float, eta: bool) -> None:
        seconds = now - self.start
        rate = self.n / seconds if seconds > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        parts = [f"{self.desc}: {self.n}{of} {self.unit} in {seconds:.0f} s ({rate:.3g} {self.unit}/s)"]
        if eta and self.total and rate > 0:
            parts.append(f"ETA {max(0.0, (self.total - self.n) / rate):.0f} s")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.file, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, end_line: bool = True, **tqdm_options):
    """A progress bar on a terminal, lines in a log, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    stream = tqdm_options.get("file") or sys.stderr
    if stream.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_options)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return LineProgress(iterable, total, desc, unit, file=stream, end_line=end_line)
