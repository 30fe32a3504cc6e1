"""REST v1: ``/v1/models/{name}`` (info, predict) and the operations routes
(``/health``, ``/ready``, ``/v1/admin/reload``, ``/metrics``).

Predictions are ``predictor.predict(pandas.DataFrame(records))`` of the registry's
Spark-free predictor: the code batch scoring runs in its pandas UDFs, so the same
rows give the same numbers.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sparkml_aiaas.errors import DataValidationError
from sparkml_aiaas.serving.context import ServingContext
from sparkml_aiaas.serving.oip import ModelUnavailable
from sparkml_aiaas.serving.rest import ERROR_RESPONSES, read_body, requirement, unavailable
from sparkml_aiaas.serving.oip import predict_columns
from sparkml_aiaas.serving.validation import (describe, error_path, parse_body,
                                              records_columns, records_frame)

__all__ = ["PredictRequest", "router"]


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


# --------------------------------------------------------------------------- responses
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
    return _array_values(array)


def _array_values(array: np.ndarray) -> List[Any]:
    """An output array ([N] or [N, C]) as JSON-able Python values (NaN/inf → None)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return [_jsonable(v) for v in array.tolist()]
    return array.tolist()


def _array_rows(outputs: Dict[str, np.ndarray], columns: List[str]) -> List[Dict[str, Any]]:
    """``predict_columns``' arrays as one JSON object per row, as :func:`_rows` gives them."""
    data = [_array_values(outputs[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*data)]


def _rows(frame: pd.DataFrame, columns: List[str]) -> List[Dict[str, Any]]:
    """The predictor's output frame as one JSON object per row."""
    if not len(frame):
        return []
    data = [_column_values(frame[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*data)]


# --------------------------------------------------------------------------- routes
def _readiness(context: ServingContext) -> JSONResponse:
    manager = context.manager
    body = {"status": "ready" if manager.ready() else "not ready",
            "models": {n: s.version for n, s in manager.models.items()}}
    return JSONResponse(body, status_code=200 if manager.ready() else 503)


def router(context: ServingContext) -> APIRouter:
    """The v1 and operations routes over ``context``."""
    manager, metrics = context.manager, context.metrics
    predict_scope = requirement(context.gate, "predict")
    admin_scope = requirement(context.gate, "admin")
    routes = APIRouter()

    def served_model(name: str):
        try:
            return manager.get(name)
        except ModelUnavailable as exc:
            raise unavailable(exc) from None

    @routes.get("/health", response_model=Health, tags=["ops"])
    def health():
        """Liveness: the process answers (no authentication)."""
        return {"status": "ok"}

    @routes.get("/ready", response_model=Ready, tags=["ops"], responses=ERROR_RESPONSES,
                dependencies=[predict_scope])
    def ready():
        """200 when every served model is loaded, else 503."""
        for served in manager.models.values():
            manager.refresh(served)
        return _readiness(context)

    @routes.get("/v1/models/{name}", response_model=ModelInfo, tags=["models"],
                responses=ERROR_RESPONSES, dependencies=[predict_scope])
    def model_info(name: str):
        """The served version, its digest, input signature and outputs."""
        served = served_model(name)
        return {"name": served.name, "version": served.version, "ref": served.ref,
                "digest": served.digest, "signature": served.signature,
                "outputs": served.outputs, "aliases": served.aliases}

    @routes.post("/v1/models/{name}/predict", response_model=PredictResponse, tags=["models"],
                 responses=ERROR_RESPONSES, dependencies=[predict_scope],
                 openapi_extra={"requestBody": {
                     "required": True,
                     "content": {"application/json": {
                         "schema": PredictRequest.model_json_schema()}}}})
    async def predict(name: str, request: Request):
        """Score ``records`` with the served version of ``name``."""
        served = await run_in_threadpool(served_model, name)  # may load a moved alias's version
        document = parse_body(await read_body(request, context.max_body_bytes))
        if not isinstance(document, dict):
            raise HTTPException(422, 'body must be a JSON object {"records": [...]}, got '
                                     f"{describe(document)}")
        try:
            body = PredictRequest.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            where = error_path(first.get("loc", ())) or "body"
            raise HTTPException(422, f"{where}: {first.get('msg', 'invalid request')}") from None
        records = body.records
        if len(records) > context.max_records:
            raise HTTPException(413, f"{len(records)} records; the limit is "
                                     f"{context.max_records} per request")
        predictor, version, signature = served.predictor, served.version, served.signature

        def run():
            names = [n for n, _ in predictor.output_columns]
            columns = records_columns(records, signature)
            if columns is not None:  # small numeric requests: no pandas frame
                return _array_rows(predict_columns(predictor, columns), names)
            frame = records_frame(records, signature)
            return _rows(predictor.predict(frame), names)

        try:
            rows = await run_in_threadpool(run)
        except DataValidationError as exc:
            raise HTTPException(422, str(exc)) from None
        metrics.predictions.labels(name, str(version)).inc(len(records))
        return {"predictions": rows, "model": name, "version": version}

    @routes.post("/v1/admin/reload", response_model=Ready, tags=["admin"],
                 responses=ERROR_RESPONSES, dependencies=[admin_scope])
    def reload():
        """Re-resolve and reload every served model now (verifies checksums again)."""
        manager.load_all(force=True)
        return _readiness(context)

    @routes.get("/metrics", tags=["admin"], responses=ERROR_RESPONSES,
                dependencies=[admin_scope], response_class=PlainTextResponse)
    def prometheus_metrics():
        """Prometheus text format: requests, latency, errors, records scored."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return routes
