"""The serving app: registered models behind an authenticated FastAPI REST API.

``create_app(registry_root, ["churn@production"], tokens_file)`` serves each
model at ``/v1/models/<name>``.  Predictions are ``predictor.predict(
pandas.DataFrame(records))`` of the registry's Spark-free predictor: the same
code batch scoring runs in its pandas UDFs, so the same rows give the same
numbers.  See ``docs/serving.md`` for endpoints, scopes, limits and metrics.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sparkml_aiaas import __version__
from sparkml_aiaas.errors import ConfigError, DataValidationError, SparkmlAiaasError
from sparkml_aiaas.registry import ModelRegistry, parse_ref
from sparkml_aiaas.serving.tokens import TokenRecord, TokenStore

logger = logging.getLogger("sparkml_aiaas.serving")

_NUMERIC = {"tinyint", "smallint", "int", "bigint", "float", "double"}


# --------------------------------------------------------------------------- API models
class PredictRequest(BaseModel):
    """Rows to score: one object per row, keyed by input column."""

    records: List[Dict[str, Any]] = Field(
        ..., description="rows to score; each maps the model's input columns to values",
        examples=[[{"x0": 0.1, "x1": -1.2, "x2": 3.0}]])


class PredictResponse(BaseModel):
    predictions: List[Dict[str, Any]] = Field(
        ..., description="one object per input row, keyed by the model's output columns")
    model: str
    version: int


class Column(BaseModel):
    name: str
    type: str


class ModelInfo(BaseModel):
    name: str
    version: int
    ref: str = Field(..., description="the reference the server was started with")
    digest: str
    signature: List[Column] = Field(..., description="input columns and their Spark SQL types")
    outputs: List[Column]
    aliases: List[str]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    models: Dict[str, Optional[int]]


class ErrorBody(BaseModel):
    error: str
    request_id: str


_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 413, 422, 500, 503)}


# --------------------------------------------------------------------------- served models
@dataclass
class ServedModel:
    """One served reference and the predictor of the version it currently resolves to."""

    ref: str
    name: str
    alias: Optional[str]
    version: Optional[int] = None
    digest: str = ""
    aliases: List[str] = field(default_factory=list)
    predictor: Any = None
    signature: List[Dict[str, str]] = field(default_factory=list)
    outputs: List[Dict[str, str]] = field(default_factory=list)
    error: Optional[str] = None
    checked_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _signature(predictor) -> List[Dict[str, str]]:
    meta = getattr(predictor, "metadata", None) or {}
    inputs = (meta.get("signature") or {}).get("inputs") or []
    if inputs:
        return [{"name": str(c["name"]), "type": str(c.get("type", "unknown"))} for c in inputs]
    return [{"name": c, "type": "unknown"} for c in predictor.input_columns]


class ModelManager:
    """Loads the served models and follows alias moves (checked every ``check_seconds``)."""

    def __init__(self, registry: ModelRegistry, refs: Sequence[str], check_seconds: float = 2.0):
        self.registry = registry
        self.check_seconds = check_seconds
        self.models: Dict[str, ServedModel] = {}
        for ref in refs:
            name, version, alias = parse_ref(ref)
            if name in self.models:
                raise ConfigError(f"model {name!r} is served twice ({self.models[name].ref!r} "
                                  f"and {ref!r}); serve one reference per name")
            self.models[name] = ServedModel(ref=ref, name=name, alias=alias)
        if not self.models:
            raise ConfigError("no model to serve: give at least one NAME@ALIAS or NAME/VERSION")

    def _target(self, served: ServedModel) -> int:
        """The version ``served.ref`` resolves to now (reads one small file)."""
        name, version, alias = parse_ref(served.ref)
        if alias is not None:
            aliases = self.registry.aliases(name)
            if alias not in aliases:
                raise SparkmlAiaasError(f"{name} has no alias {alias!r}")
            return aliases[alias]
        if version is not None:
            return version
        versions = self.registry.versions(name)
        if not versions:
            raise SparkmlAiaasError(f"no model named {name!r}")
        return versions[-1]

    def _load(self, served: ServedModel, version: int) -> None:
        mv = self.registry.resolve(f"{served.name}/{version}")  # verifies every checksum
        predictor = self.registry.load_predictor(mv.ref)
        served.predictor = predictor
        served.version = mv.version
        served.digest = mv.digest
        served.aliases = list(mv.aliases)
        served.signature = _signature(predictor)
        served.outputs = [{"name": n, "type": t} for n, t in predictor.output_columns]
        served.error = None
        logger.info("serving %s as %s (digest %s)", served.ref, mv.ref, mv.digest[:12])

    def refresh(self, served: ServedModel, force: bool = False) -> None:
        """Reload ``served`` when its reference now points at another version."""
        now = time.monotonic()
        if not force and served.predictor is not None and \
                now - served.checked_at < self.check_seconds:
            return
        with served.lock:
            if not force and served.predictor is not None and \
                    time.monotonic() - served.checked_at < self.check_seconds:
                return  # another request just checked
            try:
                target = self._target(served)
                if force or served.predictor is None or target != served.version:
                    self._load(served, target)
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version
                served.error = f"{type(exc).__name__}: {exc}"
                logger.exception("cannot load %s", served.ref)
            served.checked_at = time.monotonic()

    def load_all(self, force: bool = False) -> None:
        for served in self.models.values():
            self.refresh(served, force=force)

    def ready(self) -> bool:
        return all(s.predictor is not None for s in self.models.values())


# --------------------------------------------------------------------------- validation
def _check_value(value: Any, expected: str) -> bool:
    if value is None:
        return True  # a null feature gives NaN outputs, as in batch scoring
    if expected in _NUMERIC or expected.startswith("decimal"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, (bool, int, float))
    if expected == "string":
        return isinstance(value, str)
    if expected.startswith("array") or expected == "vector":
        return isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return True


def validate_records(records: List[Dict[str, Any]], signature: List[Dict[str, str]]) -> None:
    """Raise HTTPException 422 naming the first record and field that do not fit."""
    for i, record in enumerate(records):
        for column in signature:
            name, expected = column["name"], column["type"]
            if name not in record:
                raise HTTPException(422, f"records[{i}]: missing field {name!r} ({expected})")
            if not _check_value(record[name], expected):
                raise HTTPException(
                    422, f"records[{i}]: field {name!r} must be {expected}, got "
                         f"{type(record[name]).__name__} {str(record[name])[:40]!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def _rows(frame: pd.DataFrame, columns: List[str]) -> List[Dict[str, Any]]:
    data = {c: frame[c].tolist() for c in columns}
    return [{c: _jsonable(data[c][i]) for c in columns} for i in range(len(frame))]


# --------------------------------------------------------------------------- metrics
class _Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sparkml_serving_requests", "HTTP requests",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("sparkml_serving_request_seconds", "request latency",
                                 ["endpoint"], registry=self.registry)
        self.errors = Counter("sparkml_serving_errors", "requests that failed inside the "
                              "server (status 5xx)", ["endpoint"], registry=self.registry)
        self.predictions = Counter("sparkml_serving_predicted_records", "records scored",
                                   ["model", "version"], registry=self.registry)


def _error(status: int, message: str, request_id: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status,
                        headers=headers)


class _Guard:
    """Pure ASGI middleware: request ids, metrics, and a 500 without a traceback."""

    def __init__(self, app, metrics: _Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - logged with traceback, never sent to the client
            logger.exception("internal error in %s %s (request_id %s)", scope.get("method"),
                             scope.get("path"), request_id)
            status["code"] = 500
            if not status["sent"]:
                await _error(500, "internal error", request_id)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, scope.get("method", ""),
                                         str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if status["code"] >= 500:
                self.metrics.errors.labels(endpoint).inc()


# --------------------------------------------------------------------------- the app
def create_app(registry_root: str, models: Sequence[str], tokens_file: str, *,
               max_body_bytes: int = 1_000_000, max_records: int = 10_000,
               alias_check_seconds: float = 2.0, registry: Optional[ModelRegistry] = None
               ) -> FastAPI:
    """A FastAPI app serving ``models`` (``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME``).

    Parameters
    ----------
    registry_root : str
        The model registry root (``registry=`` an existing :class:`ModelRegistry`
        instead, e.g. one with a signing key).
    tokens_file : str
        Bearer tokens (see :mod:`sparkml_aiaas.serving.tokens`); re-read on change.
    max_body_bytes, max_records : int
        Larger request bodies / more records are refused with 413.
    alias_check_seconds : float
        How often (at most) a request re-reads the alias a model is served by; a
        moved alias loads the new version without a restart.
    """
    registry = registry or ModelRegistry(registry_root)
    manager = ModelManager(registry, list(models), check_seconds=alias_check_seconds)
    store = TokenStore(tokens_file)
    metrics = _Metrics()
    manager.load_all()

    app = FastAPI(title="sparkml_aiaas model serving", version=__version__,
                  description="Predictions of registered models; see docs/serving.md.")
    app.state.manager = manager
    app.state.tokens = store
    app.state.metrics = metrics
    app.add_middleware(_Guard, metrics=metrics)

    def request_id(request: Request) -> str:
        return getattr(request.state, "request_id", "") or uuid.uuid4().hex[:16]

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), request_id(request),
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}", request_id(request))

    def require(scope_name: str):
        def dependency(request: Request) -> TokenRecord:
            header = request.headers.get("authorization", "")
            kind, _, token = header.partition(" ")
            record = store.verify(token.strip()) if kind.lower() == "bearer" else None
            if record is None:
                raise HTTPException(401, "missing or invalid bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            if scope_name not in record.scopes:
                raise HTTPException(403, f"token {record.name!r} lacks the {scope_name!r} scope")
            return record
        return dependency

    predict_scope = Depends(require("predict"))
    admin_scope = Depends(require("admin"))

    def served_model(name: str) -> ServedModel:
        served = manager.models.get(name)
        if served is None:
            raise HTTPException(404, f"model {name!r} is not served here")
        manager.refresh(served)
        if served.predictor is None:
            raise HTTPException(503, f"model {name!r} is not loaded: {served.error}")
        return served

    @app.get("/health", response_model=Health, tags=["ops"])
    def health():
        """Liveness: the process answers (no authentication)."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, tags=["ops"], responses=_ERRORS,
             dependencies=[predict_scope])
    def ready():
        """200 when every served model is loaded, else 503."""
        for served in manager.models.values():
            manager.refresh(served)
        body = {"status": "ready" if manager.ready() else "not ready",
                "models": {n: s.version for n, s in manager.models.items()}}
        return JSONResponse(body, status_code=200 if manager.ready() else 503)

    @app.get("/v1/models/{name}", response_model=ModelInfo, tags=["models"], responses=_ERRORS,
             dependencies=[predict_scope])
    def model_info(name: str):
        """The served version, its digest, input signature and outputs."""
        served = served_model(name)
        return {"name": served.name, "version": served.version, "ref": served.ref,
                "digest": served.digest, "signature": served.signature,
                "outputs": served.outputs, "aliases": served.aliases}

    @app.post("/v1/models/{name}/predict", response_model=PredictResponse, tags=["models"],
              responses=_ERRORS, dependencies=[predict_scope],
              openapi_extra={"requestBody": {
                  "required": True,
                  "content": {"application/json": {
                      "schema": PredictRequest.model_json_schema()}}}})
    async def predict(name: str, request: Request):
        """Score ``records`` with the served version of ``name``."""
        served = await run_in_threadpool(served_model, name)  # may load a moved alias's version
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(413, f"request body is {declared} bytes; the limit is "
                                     f"{max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPException(413, f"request body exceeds the limit of {max_body_bytes} "
                                         "bytes")
            chunks.append(chunk)
        try:
            body = PredictRequest.model_validate(json.loads(b"".join(chunks) or b"null"))
        except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError
            if isinstance(exc, ValidationError) and exc.errors():
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "body"
                raise HTTPException(422, f"{where}: {first.get('msg')}") from None
            raise HTTPException(422, f"body is not valid JSON: {exc}") from None
        records = body.records
        if len(records) > max_records:
            raise HTTPException(413, f"{len(records)} records; the limit is {max_records} per "
                                     "request")
        validate_records(records, served.signature)
        predictor, version = served.predictor, served.version

        def run():
            frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(
                {c["name"]: [] for c in served.signature})
            out = predictor.predict(frame)
            return _rows(out, [n for n, _ in predictor.output_columns])

        try:
            rows = await run_in_threadpool(run)
        except DataValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        metrics.predictions.labels(name, str(version)).inc(len(records))
        return {"predictions": rows, "model": name, "version": version}

    @app.post("/v1/admin/reload", response_model=Ready, tags=["admin"], responses=_ERRORS,
              dependencies=[admin_scope])
    def reload():
        """Re-resolve and reload every served model now (verifies checksums again)."""
        manager.load_all(force=True)
        body = {"status": "ready" if manager.ready() else "not ready",
                "models": {n: s.version for n, s in manager.models.items()}}
        return JSONResponse(body, status_code=200 if manager.ready() else 503)

    @app.get("/metrics", tags=["admin"], responses=_ERRORS, dependencies=[admin_scope],
             response_class=PlainTextResponse)
    def prometheus_metrics():
        """Prometheus text format: requests, latency, errors, records scored."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry),
                                 media_type=CONTENT_TYPE_LATEST)

    return app
