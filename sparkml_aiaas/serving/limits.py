"""Token buckets: the per-token request rate limit and the per-address failed-auth throttle.

One :class:`RateLimiter` serves both.  The request limit takes a token per
request (:meth:`RateLimiter.acquire`); the failed-authentication throttle only
looks (:meth:`RateLimiter.wait`) before an expensive token check and takes a token
when the check fails, so a client that authenticates is never slowed by it.
This module imports no web framework.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from sparkml_aiaas.errors import ConfigError

__all__ = ["RateLimiter"]

#: Buckets kept before the full ones (idle keys) are dropped: bounded memory whatever
#: the number of distinct keys (client addresses) seen.
_MAX_BUCKETS = 50_000


class RateLimiter:
    """Token buckets, one per key: ``rate`` requests per second, bursts of ``burst``.

    A bucket starts full (``burst``, default ``max(1, rate)``), refills at
    ``rate`` per second of ``clock()`` (``time.monotonic`` unless a test injects
    another), and each request takes one token.  Thread-safe; per process.
    """

    def __init__(self, rate: float, burst: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, what: str = "rate limit"):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or \
                not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"{what} must be a positive number of requests per second, "
                              f"got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        if not self.burst >= 1:
            raise ConfigError(f"{what} burst must be at least 1, got {burst!r}")
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: Dict[str, Tuple[float, float]] = {}  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                self._store(key, tokens - 1.0, now)
                return 0.0
            self._store(key, tokens, now)
            return (1.0 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """The seconds until ``key`` has a token (0.0 now), taking none."""
        with self._lock:
            tokens = self._tokens(key, self.clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            # A full bucket is the same as no bucket: forget those.
            self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                             if t + (now - at) * self.rate < self.burst}
        self._buckets[key] = (tokens, now)
