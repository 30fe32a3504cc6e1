"""The serving app: registered models behind an authenticated FastAPI REST API.

``create_app(registry_root, ["churn@production"], tokens_file)`` serves each
model over REST v1 (``/v1/models/<name>``, :mod:`.rest_v1`) and the Open
Inference Protocol (``/v2/models/<name>``, :mod:`.rest_v2` on :mod:`.oip`),
behind one :class:`~.security.Gate`.  See ``docs/serving.md`` for endpoints,
scopes, limits and metrics.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from fastapi import FastAPI

from sparkml_aiaas import __version__
from sparkml_aiaas.registry import ModelRegistry
from sparkml_aiaas.serving import rest_v1, rest_v2
from sparkml_aiaas.serving.context import ServingContext
from sparkml_aiaas.serving.limits import RateLimiter
from sparkml_aiaas.serving.metrics import Metrics
from sparkml_aiaas.serving.middleware import Guard
from sparkml_aiaas.serving.models import ModelManager, ServedModel
from sparkml_aiaas.serving.openapi import describe_models
from sparkml_aiaas.serving.rest import install_error_handlers
from sparkml_aiaas.serving.security import Gate
from sparkml_aiaas.serving.tokens import TokenStore
from sparkml_aiaas.serving.validation import records_frame, validate_records

# Importable from here as before the split.
__all__ = ["ModelManager", "RateLimiter", "ServedModel", "create_app", "records_frame",
           "serving_context", "validate_records"]


def serving_context(registry_root: str, models: Sequence[str], tokens_file: str, *,
                    max_body_bytes: int = 1_000_000, max_records: int = 10_000,
                    alias_check_seconds: float = 2.0,
                    registry: Optional[ModelRegistry] = None,
                    rate_limit: Optional[float] = None,
                    clock: Callable[[], float] = time.monotonic,
                    trusted_factories=None, failed_auth_limit: Optional[float] = 5.0,
                    failed_auth_burst: float = 20.0) -> ServingContext:
    """The models (loaded), tokens, gate and metrics every protocol serves from; the
    parameters are :func:`create_app`'s."""
    registry = registry or ModelRegistry(registry_root)
    manager = ModelManager(registry, list(models), check_seconds=alias_check_seconds,
                           trusted_factories=trusted_factories)
    metrics = Metrics()
    gate = Gate(TokenStore(tokens_file), rate_limit=rate_limit, clock=clock,
                failed_auth_limit=failed_auth_limit, failed_auth_burst=failed_auth_burst,
                metrics=metrics)
    manager.load_all()
    return ServingContext(manager=manager, gate=gate, metrics=metrics,
                          max_body_bytes=max_body_bytes, max_records=max_records)


def create_app(registry_root: str, models: Sequence[str], tokens_file: str, *,
               max_body_bytes: int = 1_000_000, max_records: int = 10_000,
               alias_check_seconds: float = 2.0, registry: Optional[ModelRegistry] = None,
               rate_limit: Optional[float] = None,
               clock: Callable[[], float] = time.monotonic,
               trusted_factories=None, failed_auth_limit: Optional[float] = 5.0,
               failed_auth_burst: float = 20.0,
               context: Optional[ServingContext] = None) -> FastAPI:
    """A FastAPI app serving ``models`` (``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME``).

    Parameters
    ----------
    registry_root : str
        The model registry root (``registry=`` an existing :class:`ModelRegistry`
        instead, e.g. one with a signing key).
    tokens_file : str
        Bearer tokens (see :mod:`sparkml_aiaas.serving.tokens`); re-read on change.
        Missing, unreadable, malformed or world-writable: :class:`ConfigError` here; if
        it becomes so later, the last good tokens stay in use (and it is logged).
    max_body_bytes, max_records : int
        Larger request bodies / more records (v2: rows) are refused with 413.
    alias_check_seconds : float
        How often (at most) a request re-reads the alias a model is served by; a
        moved alias loads the new version without a restart.
    rate_limit : float, optional
        Requests per second allowed per token (a token bucket with bursts of
        ``rate_limit``; see :class:`RateLimiter`); more get 429 with
        ``Retry-After``.  None (default): no limit.
    clock : callable
        Monotonic seconds for the rate limits (tests inject a fake clock).
    trusted_factories : list of str, optional
        Torch network factories (``"pkg.module:function"`` or ``"pkg.module:*"``) the
        served models may name, plus ``SPARKML_AIAAS_TRUSTED_FACTORIES``; a model naming
        any other is refused (before import) like a corrupt one.
    failed_auth_limit, failed_auth_burst : float
        Failed authentications per client address: ``failed_auth_burst`` at once, then
        ``failed_auth_limit`` per second; past that a token the server does not already
        know is refused with 429 before its (scrypt) check.  ``failed_auth_limit=None``:
        no throttle.
    context : ServingContext, optional
        Serve this one (e.g. shared with a gRPC server) instead of building it from the
        arguments above.
    """
    context = context or serving_context(
        registry_root, models, tokens_file, max_body_bytes=max_body_bytes,
        max_records=max_records, alias_check_seconds=alias_check_seconds, registry=registry,
        rate_limit=rate_limit, clock=clock, trusted_factories=trusted_factories,
        failed_auth_limit=failed_auth_limit, failed_auth_burst=failed_auth_burst)
    app = FastAPI(title="sparkml_aiaas model serving", version=__version__,
                  description="Predictions of registered models over REST v1 and the Open "
                              "Inference Protocol (v2); see docs/serving.md.")
    app.state.context = context
    app.state.manager = context.manager
    app.state.tokens = context.gate.store
    app.state.metrics = context.metrics
    app.add_middleware(Guard, metrics=context.metrics)
    install_error_handlers(app)
    app.include_router(rest_v1.router(context))
    app.include_router(rest_v2.router(context))

    fastapi_openapi = app.openapi  # FastAPI's generator (caches the route-derived document)
    app.openapi = lambda: describe_models(fastapi_openapi(), context.manager,
                                          context.max_records)
    return app
