"""The one progress bar: tqdm when asked for and on a terminal; where stderr is not a
terminal (a scheduler's log, `nohup`, CI), a plain line every ``PLAIN_EVERY`` seconds, so
an hour-long `index` is not silent; a plain loop when not asked for."""
from __future__ import annotations

import sys
import threading
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
        self._closed = threading.Event()
        if total is None and hasattr(items, "__len__"):
            total = len(items)
        self.total = total
        if enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit=unit, disable=None, leave=False)
            self._plain = self._bar.disable
        self._due_lock = threading.Lock()
        self._held = False  # in a with block: open until it ends, not when the items do

    def __iter__(self):
        if self._plain and PLAIN_EVERY > 0:  # a line also while one item takes long (one big file)
            threading.Thread(target=self._tick, name="semsearch-progress", daemon=True).start()
        try:
            for item in self.items:
                yield item
                step = self.weight(item) if self.weight else 1
                if self._plain:
                    self._done += step
                    self._line()
                elif self._bar is not None:
                    self._bar.update(step)
                    if callable(self._note):
                        self._bar.set_postfix_str(self._note(), refresh=False)
        finally:
            if not self._held:
                self.close()

    def _tick(self) -> None:
        while not self._closed.wait(max(self._next_line - time.monotonic(), 0.0)):
            self._line()

    def _line(self) -> None:
        """A plain line, if one is due (from the loop or the ticking thread: one of them)."""
        with self._due_lock:
            if time.monotonic() < self._next_line:
                return
            self._next_line = time.monotonic() + PLAIN_EVERY
        of = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self._done / self.total:.0f}%)" if self.total else ""
        rate = self._done / self.elapsed()
        note = self._note() if callable(self._note) else self._note
        print(f"progress: {self._done:,}{of} {self.unit}s{share}, {rate:,.1f} {self.unit}s/s, "
              f"{self.elapsed():,.0f} s" + (f", {note}" if note else ""), file=sys.stderr, flush=True)

    def note(self, text: str | Callable[[], str]) -> None:
        """The text beside the bar; a callable is asked each time it is shown (live counts)."""
        self._note = text
        if self._bar is not None and not self._plain:
            self._bar.set_postfix_str(text() if callable(text) else text, refresh=False)

    def elapsed(self) -> float:
        return max(time.monotonic() - self._started, 1e-3)

    def close(self) -> None:
        self._closed.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        self._held = True
        return self

    def __exit__(self, *exc):
        self.close()
