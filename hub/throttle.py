"""Token buckets by key: how the hub slows down what a stranger can make it do (log refusals, try
sign-in tokens) without slowing anyone else.

    t = Throttle(per_s=0.5, burst=10)
    t.take("203.0.113.9")   # True while that key has tokens left; refills at per_s, up to burst
    t.refused_since("203.0.113.9")  # how many take()s of that key were refused since its last success
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class Throttle:
    """Thread-safe; remembers at most `max_keys` keys (the least recently seen are forgotten, which can
    only ever give a forgotten key a full bucket again)."""

    def __init__(self, per_s: float, burst: float, max_keys: int = 10_000, clock=time.monotonic):
        self.per_s, self.burst, self.max_keys, self.clock = per_s, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float, int]] = OrderedDict()  # key -> (tokens, at, refused)
        self._last_refused: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str = "") -> bool:
        """Spend one token of `key` -> whether there was one."""
        now = self.clock()
        with self._lock:
            tokens, at, refused = self._buckets.pop(key, (self.burst, now, 0))
            tokens = min(self.burst, tokens + (now - at) * self.per_s)
            ok = tokens >= 1
            if ok:
                self._last_refused[key] = refused
            self._buckets[key] = (tokens - 1, now, 0) if ok else (tokens, now, refused + 1)
            while len(self._buckets) > self.max_keys:
                gone, _ = self._buckets.popitem(last=False)
                self._last_refused.pop(gone, None)
            return ok

    def blocked(self, key: str = "") -> bool:
        """Whether a take() of `key` now would be refused (nothing is spent)."""
        now = self.clock()
        with self._lock:
            tokens, at, _ = self._buckets.get(key, (self.burst, now, 0))
            return min(self.burst, tokens + (now - at) * self.per_s) < 1

    def refused_since(self, key: str = "") -> int:
        """After a take() of `key` that succeeded: how many of its take()s were refused just before it."""
        with self._lock:
            return self._last_refused.pop(key, 0)
