"""The serving app: registered models behind an authenticated FastAPI REST API.

``create_app(registry_root, ["churn@production"], tokens_file)`` serves each
model at ``/v1/models/<name>``.  Predictions are ``predictor.predict(
pandas.DataFrame(records))`` of the registry's Spark-free predictor: the same
code batch scoring runs in its pandas UDFs, so the same rows give the same
numbers.  See ``docs/serving.md`` for endpoints, scopes, limits and metrics.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sparkml_aiaas import __version__
from sparkml_aiaas.errors import DataValidationError
from sparkml_aiaas.registry import ModelRegistry
from sparkml_aiaas.serving.logs import ACCESS_LOGGER, access_line, request_target
from sparkml_aiaas.serving.limits import RateLimiter
from sparkml_aiaas.serving.metrics import Metrics
from sparkml_aiaas.serving.models import ModelManager, ServedModel
from sparkml_aiaas.serving.oip import ModelUnavailable
from sparkml_aiaas.serving.security import AuthError, Gate
from sparkml_aiaas.serving.tokens import TokenRecord, TokenStore

__all__ = ["create_app", "RateLimiter"]  # RateLimiter: where tests have always found it

logger = logging.getLogger("sparkml_aiaas.serving")
access_logger = logging.getLogger(ACCESS_LOGGER)

_NUMERIC = {"tinyint", "smallint", "int", "bigint", "float", "double"}


# --------------------------------------------------------------------------- API models
class PredictRequest(BaseModel):
    """Rows to score: one object per row, keyed by input column.

    The OpenAPI document refines ``records`` per served model (its columns and
    their JSON types); validation against the signature happens in
    :func:`validate_records`, which names the record and field at fault.
    """

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


_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 413, 422, 429, 500, 503)}


# --------------------------------------------------------------------------- validation
def _describe(value: Any) -> str:
    """A short, safe description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, list):
        return f"list of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"object with {len(value)} key(s)"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_problem(value: Any) -> Optional[str]:
    """Why the JSON number ``value`` cannot be a finite double (None when it can)."""
    try:
        as_float = float(value)
    except OverflowError:
        return "out of the range of a double"
    if not math.isfinite(as_float):
        return "not a finite number"
    return None


def _value_problem(value: Any, expected: str) -> Optional[str]:
    """Why ``value`` does not fit the Spark SQL type ``expected`` (None when it does)."""
    if value is None:
        return None  # a null feature gives NaN outputs, as in batch scoring
    numeric = expected in _NUMERIC or expected.startswith("decimal")
    if numeric or expected == "boolean":
        if isinstance(value, bool) and expected == "boolean":
            return None
        if not _is_number(value):
            return f"must be {expected}, got {_describe(value)}"
        problem = _number_problem(value)
        return f"must be {expected}, got {_describe(value)}: {problem}" if problem else None
    if expected == "string":
        return None if isinstance(value, str) else f"must be string, got {_describe(value)}"
    if expected.startswith("array") or expected == "vector":
        if not isinstance(value, list):
            return f"must be {expected} (a list of numbers), got {_describe(value)}"
        for j, item in enumerate(value):
            problem = "" if _is_number(item) else "not a number"
            problem = problem or _number_problem(item)
            if problem:
                return (f"must be {expected} (a list of numbers), but item [{j}] is "
                        f"{_describe(item)}: {problem}")
        return None
    return None


def validate_records(records: List[Dict[str, Any]], signature: List[Dict[str, str]]) -> None:
    """Raise HTTPException 422 naming the first record and field that do not fit."""
    for i, record in enumerate(records):
        for column in signature:
            name, expected = column["name"], column["type"]
            if name not in record:
                raise HTTPException(422, f"records[{i}]: missing field {name!r} ({expected})")
            problem = _value_problem(record[name], expected)
            if problem:
                raise HTTPException(422, f"records[{i}]: field {name!r} {problem}")


#: Up to this many values a request is checked value by value (cheaper than pandas dtypes).
_VALUE_BY_VALUE_CELLS = 256


def _proven_columns(frame: pd.DataFrame, signature: List[Dict[str, str]]) -> set:
    """Names of the signature columns whose dtype in ``frame`` (built by
    ``DataFrame.from_records``) proves every value fits: JSON numbers in a numeric or
    boolean column, JSON booleans in a boolean one.  The rest are checked value by value."""
    dtypes = frame.dtypes
    proven, floats = set(), []
    for column in signature:
        name, expected = column["name"], column["type"]
        kind = dtypes[name].kind
        numeric = expected in _NUMERIC or expected.startswith("decimal")
        if (numeric or expected == "boolean") and kind in "iu":
            proven.add(name)  # JSON integers that fit int64
        elif (numeric or expected == "boolean") and kind == "f":
            floats.append(name)  # finite unless a JSON number overflowed to inf; NaN = null
        elif expected == "boolean" and kind == "b":
            proven.add(name)
    if floats:
        infinite = np.isinf(frame[floats].to_numpy()).any(axis=0)
        proven.update(name for name, bad in zip(floats, infinite) if not bad)
    return proven


def records_frame(records: List[Dict[str, Any]], signature: List[Dict[str, str]]
                  ) -> pd.DataFrame:
    """``records`` as a pandas DataFrame for the predictor, checked against ``signature``.

    Small requests are checked value by value (:func:`validate_records`, which raises
    422 naming the first record and field at fault); in larger ones, columns whose
    dtype already proves every value fits (numbers in a numeric column) skip that
    check, which costs more than the dtype test from about a few hundred values on.
    """
    if not records:
        return pd.DataFrame({c["name"]: [] for c in signature})
    if len(records) * len(signature) <= _VALUE_BY_VALUE_CELLS:
        validate_records(records, signature)
        return pd.DataFrame.from_records(records)
    names = {c["name"] for c in signature}
    if not all(names <= record.keys() for record in records):
        validate_records(records, signature)  # names the first missing field
    try:
        frame = pd.DataFrame.from_records(records)
    except (OverflowError, TypeError, ValueError):
        validate_records(records, signature)  # e.g. an integer no double can hold
        raise
    proven = _proven_columns(frame, signature)
    if len(proven) < len(signature):
        validate_records(records, [c for c in signature if c["name"] not in proven])
    return frame


def _where(loc: Sequence[Any]) -> str:
    """A pydantic error location as a path: ``("records", 0, "x")`` -> ``records[0].x``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _parse_body(raw: bytes) -> Any:
    """The JSON document ``raw``; HTTPException 422 saying what is wrong with it."""
    if not raw.strip():
        raise HTTPException(422, 'body is empty; send a JSON object {"records": [...]}')

    def constant(name: str):
        raise ValueError(f"{name} is not valid JSON (send null for a missing value)")

    try:
        return json.loads(raw, parse_constant=constant)
    except RecursionError:
        raise HTTPException(422, "body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise HTTPException(422, f"body is not valid JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def _column_values(values: pd.Series) -> List[Any]:
    """A predictor output column as JSON-able Python values (NaN/inf → None)."""
    if values.dtype != object:
        array = values.to_numpy()
    else:  # vectors per row (probability, rawPrediction): one 2-D array when they stack
        try:
            array = np.stack(values.to_numpy()).astype(np.float64)
        except (TypeError, ValueError):
            return [_jsonable(v) for v in values.tolist()]
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return [_jsonable(v) for v in array.tolist()]
    return array.tolist()


def _rows(frame: pd.DataFrame, columns: List[str]) -> List[Dict[str, Any]]:
    """The predictor's output frame as one JSON object per row."""
    if not len(frame):
        return []
    data = [_column_values(frame[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*data)]


# --------------------------------------------------------------------------- OpenAPI
def _value_schema(expected: str) -> Dict[str, Any]:
    """The JSON Schema of the values :func:`_value_problem` accepts for a Spark SQL type."""
    if expected in _NUMERIC or expected.startswith("decimal"):
        accepted: Dict[str, Any] = {"type": "number"}
    elif expected == "boolean":
        accepted = {"anyOf": [{"type": "boolean"}, {"type": "number"}]}
    elif expected == "string":
        accepted = {"type": "string"}
    elif expected.startswith("array") or expected == "vector":
        accepted = {"type": "array", "items": {"type": "number"}}
    else:
        return {"description": f"{expected} (not checked)"}
    return {"anyOf": [accepted, {"type": "null"}],
            "description": f"{expected}; null gives NaN outputs"}


def _example_value(expected: str) -> Any:
    if expected == "string":
        return "a"
    if expected == "boolean":
        return True
    if expected.startswith("array") or expected == "vector":
        return [0.0]
    return 0.0


def _describe_models(base: Dict[str, Any], manager: "ModelManager",
                     max_records: int) -> Dict[str, Any]:
    """``base`` (FastAPI's OpenAPI document) with the served models filled in.

    The ``name`` path parameter lists the served names, and the predict body's
    (``PredictRequest``) records are the loaded models' signatures (columns, JSON
    types, required; ``Record_<name>`` components), at most ``max_records``,
    so a client, a generated SDK or a fuzzer knows what a valid request is.
    Rebuilt on every call: an alias moved to a version with other columns shows.
    """
    schema = copy.deepcopy(base)
    names = sorted(manager.models)
    for path in ("/v1/models/{name}", "/v1/models/{name}/predict"):
        for operation in schema.get("paths", {}).get(path, {}).values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "name":
                    parameter["schema"] = {"type": "string", "enum": names, "title": "Name"}
                    parameter["description"] = "a model served here"
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    records, examples = [], []
    for name in names:
        served = manager.models[name]
        if not served.signature:
            continue  # not loaded: its columns are unknown
        key = "Record_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        components[key] = {
            "type": "object", "title": f"{name} record",
            "description": f"one row for {name} (version {served.version}); other fields "
                           "are ignored",
            "properties": {c["name"]: _value_schema(c["type"]) for c in served.signature},
            "required": [c["name"] for c in served.signature],
            "additionalProperties": True}
        records.append({"$ref": f"#/components/schemas/{key}"})
        examples.append([{c["name"]: _example_value(c["type"]) for c in served.signature}])
    request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    items: Dict[str, Any] = {"type": "object", "additionalProperties": True}
    if records:
        items = records[0] if len(records) == 1 else {"anyOf": records}
    request["properties"]["records"].update(items=items, maxItems=max_records)
    if examples:  # a valid body for each loaded model (vectors' lengths are not declared)
        request["properties"]["records"]["examples"] = examples
    predict = schema.get("paths", {}).get("/v1/models/{name}/predict", {}).get("post")
    if predict is not None:
        predict["requestBody"]["content"]["application/json"]["schema"] = request
    return schema


# --------------------------------------------------------------------------- metrics
def _error(status: int, message: str, request_id: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status,
                        headers=headers)


class _Guard:
    """Pure ASGI middleware: request ids, metrics, and a 500 without a traceback."""

    def __init__(self, app, metrics: Metrics):
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
                             request_target(scope), request_id)
            status["code"] = 500
            if not status["sent"]:
                await _error(500, "internal error", request_id)(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, scope.get("method", ""),
                                         str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            if status["code"] >= 500:
                self.metrics.errors.labels(endpoint).inc()
            # uvicorn's access log is off under `serve` (it would log query strings).
            access_logger.info("%s", access_line(scope, status["code"], elapsed, request_id))


# --------------------------------------------------------------------------- the app
def create_app(registry_root: str, models: Sequence[str], tokens_file: str, *,
               max_body_bytes: int = 1_000_000, max_records: int = 10_000,
               alias_check_seconds: float = 2.0, registry: Optional[ModelRegistry] = None,
               rate_limit: Optional[float] = None,
               clock: Callable[[], float] = time.monotonic,
               trusted_factories=None) -> FastAPI:
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
        Larger request bodies / more records are refused with 413.
    alias_check_seconds : float
        How often (at most) a request re-reads the alias a model is served by; a
        moved alias loads the new version without a restart.
    rate_limit : float, optional
        Requests per second allowed per token (a token bucket with bursts of
        ``rate_limit``; see :class:`RateLimiter`); more get 429 with
        ``Retry-After``.  None (default): no limit.
    clock : callable
        Monotonic seconds for the rate limiter (tests inject a fake clock).
    trusted_factories : list of str, optional
        Torch network factories (``"pkg.module:function"`` or ``"pkg.module:*"``) the
        served models may name, plus ``SPARKML_AIAAS_TRUSTED_FACTORIES``; a model naming
        any other is refused (before import) like a corrupt one.
    """
    registry = registry or ModelRegistry(registry_root)
    manager = ModelManager(registry, list(models), check_seconds=alias_check_seconds,
                           trusted_factories=trusted_factories)
    store = TokenStore(tokens_file)
    metrics = Metrics()
    # One gate for every protocol (REST here, gRPC via grpc_server.attach_grpc): the same
    # per-token rate limits and per-address failed-authentication throttle.
    gate = Gate(store, rate_limit, clock=clock, metrics=metrics)
    manager.load_all()

    app = FastAPI(title="sparkml_aiaas model serving", version=__version__,
                  description="Predictions of registered models; see docs/serving.md.")
    app.state.manager = manager
    app.state.tokens = store
    app.state.metrics = metrics
    app.state.gate = gate
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
        where = _where(first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}", request_id(request))

    bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                        description="a token from `sparkml-aiaas tokens create`")

    def require(scope_name: str):
        def dependency(request: Request,
                       credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)
                       ) -> TokenRecord:
            token = credentials.credentials.strip() if credentials is not None else ""
            client = request.client.host if request.client is not None else ""
            try:
                return gate.authorize(token, scope_name, client)
            except AuthError as exc:
                status, headers = {"unauthenticated": (401, {"WWW-Authenticate": "Bearer"}),
                                   "permission_denied": (403, None)}.get(exc.kind, (429, None))
                if exc.retry_after is not None:
                    headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
                raise HTTPException(status, exc.message, headers=headers) from None
        return dependency

    predict_scope = Depends(require("predict"))
    admin_scope = Depends(require("admin"))

    def served_model(name: str) -> ServedModel:
        try:
            return manager.get(name)
        except ModelUnavailable as exc:
            raise HTTPException(exc.status, exc.message) from None

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
        # ASCII digits only ("²".isdigit() is True; int() of 5000 digits raises).
        if declared is not None and re.fullmatch(r"[0-9]{1,30}", declared) and \
                int(declared) > max_body_bytes:
            raise HTTPException(413, f"request body is {int(declared)} bytes; the limit is "
                                     f"{max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPException(413, f"request body exceeds the limit of {max_body_bytes} "
                                         "bytes")
            chunks.append(chunk)
        document = _parse_body(b"".join(chunks))
        if not isinstance(document, dict):
            raise HTTPException(422, 'body must be a JSON object {"records": [...]}, got '
                                     f"{_describe(document)}")
        try:
            body = PredictRequest.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            where = _where(first.get("loc", ())) or "body"
            raise HTTPException(422, f"{where}: {first.get('msg', 'invalid request')}") from None
        records = body.records
        if len(records) > max_records:
            raise HTTPException(413, f"{len(records)} records; the limit is {max_records} per "
                                     "request")
        predictor, version, signature = served.predictor, served.version, served.signature

        def run():
            frame = records_frame(records, signature)
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

    fastapi_openapi = app.openapi  # FastAPI's generator (caches the route-derived document)
    app.openapi = lambda: _describe_models(fastapi_openapi(), manager, max_records)
    return app
