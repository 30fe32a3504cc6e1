"""Who may call what: bearer tokens, expiry, scopes and rate limits, for every protocol.

:meth:`Gate.authorize` is the one check REST v1, REST v2 and gRPC run; each maps
:class:`AuthError` kinds to its own codes (REST 401 + ``WWW-Authenticate: Bearer`` /
403 / 429 + ``Retry-After``; gRPC UNAUTHENTICATED / PERMISSION_DENIED /
RESOURCE_EXHAUSTED + ``retry-after`` metadata).

Checking an unknown token costs a scrypt derivation per stored token (see
:mod:`.tokens`), a cheap way for a client to burn the server's CPU.  So failed
authentications are counted per client address, and past ``failed_auth_burst``
of them (refilling at ``failed_auth_limit`` per second) a token that would need
that check is refused unchecked.  Tokens the store already knows (good or bad)
cost no derivation and are answered as usual, so a legitimate client sharing an
address with a noisy one keeps working once its token was verified.
"""

from __future__ import annotations

import math
import time
from typing import Optional

from sparkml_aiaas.serving.limits import RateLimiter
from sparkml_aiaas.serving.tokens import TokenRecord, TokenStore

__all__ = ["AuthError", "Gate", "INVALID_TOKEN"]

UNAUTHENTICATED, PERMISSION_DENIED, RATE_LIMITED = \
    "unauthenticated", "permission_denied", "rate_limited"
INVALID_TOKEN = "missing or invalid bearer token"


class AuthError(Exception):
    """A refused request: ``kind`` (unauthenticated, permission_denied, rate_limited),
    a one-line ``message`` safe to send, ``retry_after`` seconds when rate limited."""

    def __init__(self, kind: str, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def _whole_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class Gate:
    """Authorizes requests against a :class:`TokenStore`.

    Parameters
    ----------
    rate_limit : float, optional
        Requests per second per token (bursts of ``rate_limit``); None: no limit.
    failed_auth_limit, failed_auth_burst : float
        Failed authentications allowed per client address: ``failed_auth_burst`` at
        once, then ``failed_auth_limit`` per second.  ``failed_auth_limit=None``
        turns the throttle off.
    metrics : Metrics, optional
        Counts rate-limited and throttled requests.
    """

    def __init__(self, store: TokenStore, rate_limit: Optional[float] = None,
                 clock=time.monotonic, failed_auth_limit: Optional[float] = 5.0,
                 failed_auth_burst: float = 20.0, metrics=None):
        self.store = store
        self.metrics = metrics
        self.limiter = RateLimiter(rate_limit, clock=clock) if rate_limit is not None else None
        self.failures = None if failed_auth_limit is None else RateLimiter(
            failed_auth_limit, failed_auth_burst, clock=clock, what="failed-auth limit")

    def authorize(self, token: str, scope: str, client: str) -> TokenRecord:
        """The record of ``token`` if it may use ``scope``; else :class:`AuthError`.

        ``token``: the bearer token ("" when none was sent); ``client``: the peer's
        address (host, no port), the key of the failed-authentication throttle.
        """
        token = token.strip() if isinstance(token, str) else ""
        known, record = self.store.cached(token)
        if not known:
            wait = self.failures.wait(client) if self.failures is not None else 0.0
            if wait > 0:
                if self.metrics is not None:
                    self.metrics.auth_throttled.inc()
                seconds = _whole_seconds(wait)
                raise AuthError(RATE_LIMITED, "too many failed authentications from this "
                                f"address; retry after {seconds} s", seconds)
            record = self.store.lookup(token)
            if record is None and self.failures is not None:
                self.failures.acquire(client)
        if record is None:
            raise AuthError(UNAUTHENTICATED, INVALID_TOKEN)
        if record.is_expired():
            raise AuthError(UNAUTHENTICATED, f"token expired at {record.expires}")
        wait = self.limiter.acquire(record.name) if self.limiter is not None else 0.0
        if wait > 0:
            if self.metrics is not None:
                self.metrics.rate_limited.labels(record.name).inc()
            seconds = _whole_seconds(wait)
            raise AuthError(RATE_LIMITED, f"rate limit of {self.limiter.rate:g} requests/s "
                            f"exceeded for token {record.name!r}; retry after {seconds} s",
                            seconds)
        if scope not in record.scopes:
            raise AuthError(PERMISSION_DENIED, f"token {record.name!r} lacks the {scope!r} scope")
        return record
