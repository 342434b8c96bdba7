"""The one progress bar: tqdm when asked for and on a terminal, a plain loop otherwise."""
from __future__ import annotations

import time
from typing import Callable, Iterable


class bar:  # noqa: N801 - used like a function: `for x in bar(items, enabled, unit="doc")`
    """Iterate ``items``, advancing by ``weight(item)`` (default 1) after each is handled,
    so an ETA counts finished work; ``note()`` sets the text shown beside the bar."""

    def __init__(self, items: Iterable, enabled: bool = True, unit: str = "item",
                 total: int | None = None, weight: Callable | None = None):
        self.items, self.weight = items, weight
        self._started = time.monotonic()
        self._bar = None
        if enabled:
            from tqdm import tqdm
            if total is None and hasattr(items, "__len__"):
                total = len(items)
            self._bar = tqdm(total=total, unit=unit, disable=None, leave=False)

    def __iter__(self):
        try:
            for item in self.items:
                yield item
                if self._bar is not None:
                    self._bar.update(self.weight(item) if self.weight else 1)
        finally:
            self.close()

    def note(self, text: str) -> None:
        if self._bar is not None:
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
