"""The one progress bar: tqdm when asked for and on a terminal; where stderr is not a
terminal (a scheduler's log, `nohup`, CI), a plain line every ``PLAIN_EVERY`` seconds, so
an hour-long `index` is not silent; a plain loop when not asked for."""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable

PLAIN_EVERY = 60.0  # seconds between plain progress lines: a log gains 60 lines an hour


class bar:  # noqa: N801 - used like a function: `for x in bar(items, enabled, unit="doc")`
    """Iterate ``items``, advancing by ``weight(item)`` (default 1) after each is handled,
    so an ETA counts finished work; ``note()`` sets the text shown beside the bar."""

    def __init__(self, items: Iterable, enabled: bool = True, unit: str = "item",
                 total: int | None = None, weight: Callable | None = None):
        self.items, self.weight, self.unit = items, weight, unit
        self._started = time.monotonic()
        self._bar = None
        self._plain = False  # lines instead of a bar
        self._done, self._note, self._next_line = 0, "", self._started + PLAIN_EVERY
        if total is None and hasattr(items, "__len__"):
            total = len(items)
        self.total = total
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit=unit, disable=None, leave=False)
            self._plain = self._bar.disable

    def __iter__(self):
        try:
            for item in self.items:
                yield item
                step = self.weight(item) if self.weight else 1
                if self._plain:
                    self._line(step)
                elif self._bar is not None:
                    self._bar.update(step)
        finally:
            self.close()

    def _line(self, step: int) -> None:
        self._done += step
        now = time.monotonic()
        if now < self._next_line:
            return
        self._next_line = now + PLAIN_EVERY
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self._done / self.total:.0f}%)" if self.total else ""
        rate = self._done / self.elapsed()
        print(f"progress: {self._done:,}{of} {self.unit}s{share}, {rate:,.1f} {self.unit}s/s, "
              f"{self.elapsed():,.0f} s"
              + (f", {self._note}" if self._note else ""), file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self._note = text
        if self._bar is not None and not self._plain:
            self._bar.set_postfix_str(text, refresh=False)

    def elapsed(self) -> float:
        return max(time.monotonic() - self._started, 1e-3)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
