"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on grpc.aio,
with the standard health (``grpc.health.v1``) and reflection services.

The servicer is thin: protobuf to :class:`~sparkml_aiaas.serving.oip.Tensor`
(:mod:`.grpc_codec`, numpy only), then the same :mod:`~sparkml_aiaas.serving.oip` calls
as REST v2, on the same :class:`ModelManager` and :class:`Gate` as the REST app (one
model cache; one set of rate limits and failed-authentication throttles).
:func:`attach_grpc` starts the server in the FastAPI app's lifespan, on uvicorn's event
loop, and stops it at shutdown.

Security is REST's: a bearer token in the ``authorization`` metadata (``Bearer <token>``)
with the ``predict`` scope for everything but ``ServerLive``, ``ServerReady`` and the
health service (probes).  Errors map to status codes as below, with a one-line message
and never a traceback (those go to the server log):

=====================================  ========================================
AuthError "unauthenticated"            UNAUTHENTICATED
AuthError "permission_denied"          PERMISSION_DENIED
AuthError "rate_limited"               RESOURCE_EXHAUSTED + ``retry-after`` trailer
RequestTooLarge (rows > max_records)   RESOURCE_EXHAUSTED
a message over max_message_bytes       RESOURCE_EXHAUSTED (by grpc itself)
InferenceError, DataValidationError    INVALID_ARGUMENT
ModelUnavailable 404 / 503             NOT_FOUND / UNAVAILABLE
anything else                          INTERNAL ("internal error")
=====================================  ========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sparkml_aiaas.errors import ConfigError, DataValidationError
from sparkml_aiaas.serving import oip
from sparkml_aiaas.serving.grpc_codec import decode_request, encode_response, requested_outputs
from sparkml_aiaas.serving.logs import ACCESS_LOGGER
from sparkml_aiaas.serving.proto import grpc_inference_pb2 as pb
from sparkml_aiaas.serving.proto import grpc_inference_pb2_grpc as pb_grpc
from sparkml_aiaas.serving.security import AuthError
from sparkml_aiaas.serving.tls import TLSConfig

logger = logging.getLogger("sparkml_aiaas.serving.grpc")
access_logger = logging.getLogger(ACCESS_LOGGER)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Requests of up to this many rows are scored on the event loop: a hop to a worker
#: thread costs more than scoring them.  Larger ones run in a thread, so that one big
#: request does not stall every other call (REST included: they share the loop).
INLINE_ROWS = 64
#: How often the health service re-checks that every model is loaded (seconds).
HEALTH_CHECK_SECONDS = 2.0

_AUTH_CODES = {"unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
               "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
               "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass(frozen=True)
class GrpcOptions:
    """Where and how the gRPC endpoint listens.

    ``max_message_bytes`` caps a request message (the REST body limit: a larger one is
    refused by grpc with RESOURCE_EXHAUSTED before it is parsed); ``max_records`` caps
    the rows of one ModelInfer (RESOURCE_EXHAUSTED, like REST's 413).  ``port`` 0 picks
    a free port (see :attr:`GrpcEndpoint.port`).  ``reuse_port`` lets the worker processes
    of ``serve --workers N`` listen on one port (``SO_REUSEPORT``; the parent checked it
    was free); otherwise a port in use is an error.
    """

    host: str = "127.0.0.1"
    port: int = 8081
    tls: Optional[TLSConfig] = None
    max_message_bytes: int = 1_000_000
    max_records: int = 10_000
    grace_seconds: float = 2.0
    reuse_port: bool = False


# --------------------------------------------------------------------------- helpers
def peer_host(peer: str) -> str:
    """The client's address without its port, from ``context.peer()``
    (``ipv4:10.0.0.1:5000`` -> ``10.0.0.1``, ``ipv6:[::1]:5000`` -> ``::1``)."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6" and address.startswith("["):
        return address[1:].partition("]")[0]
    if kind == "ipv4":
        return address.rpartition(":")[0]
    return address or peer


def bearer_token(context) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata entry ("" when none)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _rpc(scope: Optional[str]):
    """Wrap a servicer method: the token check for ``scope`` (None: no token needed), then
    exceptions to status codes; every call gets an access-log line."""
    def decorate(method):
        name = method.__name__

        @functools.wraps(method)
        async def handler(self, request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if scope is not None:
                    await self.authorize(context, scope)
                return await method(self, request, context)
            except AuthError as exc:
                code = _AUTH_CODES.get(exc.kind, grpc.StatusCode.UNAUTHENTICATED)
                if exc.retry_after is not None:
                    context.set_trailing_metadata(
                        (("retry-after", str(max(1, math.ceil(exc.retry_after)))),))
                await context.abort(code, exc.message)
            except (oip.InferenceError, DataValidationError) as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, str(exc))
            except oip.ModelUnavailable as exc:
                code = (grpc.StatusCode.NOT_FOUND if exc.status == 404
                        else grpc.StatusCode.UNAVAILABLE)
                await context.abort(code, str(exc))
            except oip.RequestTooLarge as exc:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                await context.abort(code, str(exc))
            except grpc.aio.AbortError:
                raise
            except Exception:  # noqa: BLE001 - logged with its traceback, never sent
                code = grpc.StatusCode.INTERNAL
                logger.exception("internal error in gRPC %s from %s", name, context.peer())
                await context.abort(code, "internal error")
            finally:
                elapsed = time.perf_counter() - started
                self.record(name, code, elapsed)
                if access_logger.isEnabledFor(logging.INFO):  # context.peer() costs a call
                    access_logger.info("grpc %s %s %s %.1fms", peer_host(context.peer()),
                                       name, code.name, elapsed * 1000)
        return handler
    return decorate


# --------------------------------------------------------------------------- the servicer
class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` on a :class:`ModelManager` and a :class:`Gate`."""

    def __init__(self, manager, gate, max_records: int, metrics=None):
        self.manager = manager
        self.gate = gate
        self.max_records = max_records
        self.metrics = metrics

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count the call in the shared Prometheus metrics (endpoint ``grpc:<Method>``)."""
        if self.metrics is None:
            return
        endpoint = f"grpc:{method}"
        self.metrics.requests.labels(endpoint, "grpc", code.name).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
            self.metrics.errors.labels(endpoint).inc()

    async def authorize(self, context, scope: str) -> None:
        """The gate's check of the call's token.  A token the store has seen since its file
        last changed is answered from memory, on the loop; any other costs a scrypt per
        stored token (tens of ms), so it runs in a thread rather than stall every call."""
        token, client = bearer_token(context), peer_host(context.peer())
        known, _ = self.gate.store.cached(token)
        if known:
            self.gate.authorize(token, scope, client)
        else:
            await asyncio.to_thread(self.gate.authorize, token, scope, client)

    async def _served(self, name: str, version: str = ""):
        """The served model ``name`` (ModelUnavailable 404/503), checked against ``version``.
        When its alias is due for a check (a file read, maybe a model load) that happens in
        a thread; otherwise ``get`` returns at once, on the loop."""
        served = self.manager.models.get(name)
        due = served is None or served.predictor is None or \
            time.monotonic() - served.checked_at >= self.manager.check_seconds
        served = await asyncio.to_thread(self.manager.get, name) if due \
            else self.manager.get(name)
        oip.check_version(served, version or None)
        return served

    @_rpc(scope=None)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc(scope=None)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.manager.ready())

    @_rpc(scope="predict")
    async def ModelReady(self, request, context):
        try:
            await self._served(request.name, request.version)
        except oip.ModelUnavailable as exc:
            if exc.status == 404:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc(scope="predict")
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**oip.server_metadata())

    @_rpc(scope="predict")
    async def ModelMetadata(self, request, context):
        served = await self._served(request.name, request.version)
        meta = oip.model_metadata(served)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]])

    @_rpc(scope="predict")
    async def ModelInfer(self, request, context):
        served = await self._served(request.model_name, request.model_version)
        tensors = decode_request(request)
        oip.check_rows(tensors, self.max_records)
        rows = max((t.shape[0] for t in tensors if t.shape), default=0)
        requested = requested_outputs(request)

        def score():
            columns = oip.decode_inputs(served, tensors)
            return oip.infer(served, columns, requested)

        outputs = score() if rows <= INLINE_ROWS else await asyncio.to_thread(score)
        if self.metrics is not None:
            self.metrics.predictions.labels(served.name, str(served.version)).inc(rows)
        return encode_response(request, str(served.version), outputs)


# --------------------------------------------------------------------------- the server
class GrpcEndpoint:
    """A running grpc.aio server: inference, health and reflection services."""

    def __init__(self, manager, gate, options: GrpcOptions, metrics=None):
        self.manager = manager
        self.options = options
        limit = options.max_message_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            # Responses are bounded by max_records, not by the request limit.
            ("grpc.max_send_message_length", -1),
            # A port in use is an error, not a shared listener, except between workers.
            ("grpc.so_reuseport", 1 if options.reuse_port else 0),
        ])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(manager, gate, options.max_records, metrics), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server,
            pool=_reflection_pool())
        host = f"[{options.host}]" if ":" in options.host else options.host
        address = f"{host}:{options.port}"
        try:
            if options.tls is not None:
                self.port = self.server.add_secure_port(address,
                                                        options.tls.grpc_credentials())
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"gRPC cannot listen on {address}: {exc}") from None
        if not self.port:
            raise ConfigError(f"gRPC cannot listen on {address} (in use?)")
        self._health_task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        await self.server.start()
        await self._update_health()
        self._health_task = asyncio.create_task(self._watch_health())
        logger.info("gRPC (inference.GRPCInferenceService, health, reflection) on %s:%d%s",
                    self.options.host, self.port,
                    " over TLS" if self.options.tls is not None else "")

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.options.grace_seconds)

    async def _update_health(self) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if self.manager.ready()
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_CHECK_SECONDS)
            try:
                # Off the loop: a model that failed to load is retried, which reads files.
                await asyncio.to_thread(self._refresh_models)
                await self._update_health()
            except Exception:  # noqa: BLE001 - keep watching; the reason is logged
                logger.exception("gRPC health check failed")

    def _refresh_models(self) -> None:
        for name in list(self.manager.models):
            with contextlib.suppress(oip.ModelUnavailable):
                self.manager.get(name)


def _reflection_pool():
    """A descriptor pool with the services reflection describes.  Ours is not protobuf's
    default pool (see scripts/generate_grpc.py), so health's and reflection's own files
    are added beside it."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (pb, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def attach_grpc(app: Any, options: GrpcOptions) -> None:
    """Serve gRPC beside the FastAPI ``app``: started in its lifespan (on the server's
    event loop) after the app's own startup, stopped before its shutdown; uses the app's
    :class:`~.context.ServingContext` (``app.state.context``): its models, gate and metrics.  The endpoint is ``app.state.grpc`` while up."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app):
        async with inner(asgi_app) as state:
            shared = app.state.context  # the app's ServingContext
            endpoint = GrpcEndpoint(shared.manager, shared.gate, options, shared.metrics)
            await endpoint.start()
            app.state.grpc = endpoint
            try:
                yield state
            finally:
                await endpoint.stop()
                app.state.grpc = None

    app.router.lifespan_context = lifespan
