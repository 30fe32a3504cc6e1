"""REST v2: the Open Inference Protocol (KServe v2) HTTP/JSON API.

Thin: JSON in, :class:`~sparkml_aiaas.serving.oip.Tensor` objects to :mod:`.oip`,
tensors back out as JSON (orjson; NaN as null).  Tensor data is JSON: numbers,
booleans (BOOL) or strings (BYTES), flat in row-major order or as nested rows;
Triton's binary tensor extension is not supported (``extensions`` is empty).
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sparkml_aiaas.errors import DataValidationError
from sparkml_aiaas.serving import oip
from sparkml_aiaas.serving.context import ServingContext
from sparkml_aiaas.serving.rest import (
    ERROR_RESPONSES,
    ORJSONResponse,
    read_body,
    requirement,
    unavailable,
)
from sparkml_aiaas.serving.validation import describe

__all__ = ["InferRequest", "InferResponse", "router"]

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP32", "FP64", "BYTES"]


# --------------------------------------------------------------------------- API models
class RequestInput(BaseModel):
    name: str = Field(..., description="an input column of the model")
    shape: List[int] = Field(..., description="[N] for a scalar column, [N, k] for a vector")
    datatype: Datatype
    parameters: Optional[Dict[str, Any]] = None
    data: List[Any] = Field(..., description="N (or N×k) values, flat in row-major order or "
                                             "nested rows; null in a float tensor is a "
                                             "missing value")


class RequestOutput(BaseModel):
    name: str = Field(..., description="an output column of the model")
    parameters: Optional[Dict[str, Any]] = None


class InferRequest(BaseModel):
    id: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    inputs: List[RequestInput] = Field(..., description="one tensor per input column")
    outputs: Optional[List[RequestOutput]] = Field(
        None, description="the outputs to return (default: every output column)")


class ResponseOutput(BaseModel):
    name: str
    shape: List[int]
    datatype: Datatype
    data: List[Any] = Field(..., description="flat, row-major; NaN is null")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: Optional[str] = None
    outputs: List[ResponseOutput]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: List[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: List[int] = Field(..., description="-1 for a size that varies (N, or unknown)")


class ModelMetadata(BaseModel):
    name: str
    versions: List[str]
    platform: str
    inputs: List[TensorMetadata]
    outputs: List[TensorMetadata]


class Live(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


# --------------------------------------------------------------------------- JSON tensors
#: The JSON value types each datatype's data may hold (null: a missing float value).
_JSON_TYPES = {"BOOL": {bool}, "BYTES": {str}, "FP32": {float, int, type(None)},
               "FP64": {float, int, type(None)}}
_WORDS = {"BOOL": "booleans", "BYTES": "strings", "FP32": "numbers or null",
          "FP64": "numbers or null"}


def _field(item: Dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = item.get(key)
    if not isinstance(value, kind):
        raise HTTPException(422, f"{where}.{key} must be a {kind.__name__}, got "
                                 f"{describe(value)}")
    return value


def _parameters(item: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The optional ``parameters`` object of a request, input or output (422 if not one)."""
    value = item.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPException(422, f"{where}.parameters must be an object, got "
                                 f"{describe(value)}")
    return value


def _flat(data: List[Any], where: str) -> List[Any]:
    """``data`` in row-major order: a flat list as is, a list of rows concatenated."""
    if data and type(data[0]) is list:
        flat: List[Any] = []
        for row in data:
            if type(row) is not list:
                raise HTTPException(422, f"{where}: data mixes rows (lists) and values")
            flat.extend(row)
        return flat
    return data


def _tensor(item: Any, where: str) -> oip.Tensor:
    """One input tensor of a JSON infer request, its data as a numpy array."""
    if not isinstance(item, dict):
        raise HTTPException(422, f"{where} must be an object, got {describe(item)}")
    name = _field(item, "name", str, where)
    datatype = _field(item, "datatype", str, where)
    shape = _field(item, "shape", list, where)
    data = _field(item, "data", list, where)
    where = f"input {name[:80]!r}"
    if "binary_data_size" in _parameters(item, where):
        raise HTTPException(422, f"{where}: binary tensor data is not supported; send the "
                                 "data as JSON (tritonclient: binary_data=False)")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise HTTPException(422, f"{where}: shape must list non-negative integers, got "
                                 f"{str(shape)[:80]}")
    if datatype not in oip.NUMPY_TYPES:
        raise HTTPException(422, f"{where}: unsupported datatype {datatype[:20]!r}")
    values = _flat(data, where)
    allowed = _JSON_TYPES.get(datatype, {int})
    found = set(map(type, values))
    if not found <= allowed:
        bad = next(v for v in values if type(v) not in allowed)
        words = _WORDS.get(datatype, "integers")
        raise HTTPException(422, f"{where}: {datatype} data must be {words}, got "
                                 f"{describe(bad)}")
    try:
        array = np.array(values, dtype=oip.NUMPY_TYPES[datatype])
    except OverflowError:
        raise HTTPException(422, f"{where}: a value is out of the range of {datatype}") \
            from None
    return oip.Tensor(name, datatype, shape, array)


def parse_infer_request(raw: bytes) -> Tuple[Optional[str], List[oip.Tensor],
                                             Optional[List[str]]]:
    """``(id, input tensors, requested output names)`` of a JSON infer request body."""
    if not raw.strip():
        raise HTTPException(422, 'body is empty; send a JSON object {"inputs": [...]}')
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HTTPException(422, 'body must be a JSON object {"inputs": [...]}, got '
                                 f"{describe(document)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise HTTPException(422, f"id must be a string, got {describe(request_id)}")
    _parameters(document, "body")
    inputs = _field(document, "inputs", list, "body")
    tensors = [_tensor(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
    outputs = document.get("outputs")
    if outputs is None:
        return request_id, tensors, None
    if not isinstance(outputs, list):
        raise HTTPException(422, f"outputs must be a list, got {describe(outputs)}")
    names = []
    for i, item in enumerate(outputs):
        if not isinstance(item, dict):
            raise HTTPException(422, f"outputs[{i}] must be an object, got {describe(item)}")
        _parameters(item, f"outputs[{i}]")
        names.append(_field(item, "name", str, f"outputs[{i}]"))
    return request_id, tensors, names


def _json_output(tensor: oip.Tensor) -> Dict[str, Any]:
    data = tensor.data.reshape(-1)
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
            "data": data.tolist() if data.dtype == object else np.ascontiguousarray(data)}


async def _json_body(request: Request, max_body_bytes: int) -> bytes:
    """The body of a JSON infer request (422 for Triton's binary tensor extension)."""
    if "inference-header-content-length" in request.headers:
        raise HTTPException(422, "binary tensor data is not supported; send the data as JSON "
                                 "(tritonclient: binary_data=False)")
    return await read_body(request, max_body_bytes)


# --------------------------------------------------------------------------- routes
def router(context: ServingContext) -> APIRouter:
    """The ``/v2`` routes over ``context``."""
    manager, metrics = context.manager, context.metrics
    predict_scope = requirement(context.gate, "predict")
    routes = APIRouter(tags=["v2"], responses=ERROR_RESPONSES)

    def served_model(name: str, version: Optional[str]):
        try:
            served = manager.get(name)
            oip.check_version(served, version)
        except oip.ModelUnavailable as exc:
            raise unavailable(exc) from None
        return served

    @routes.get("/v2/health/live", response_model=Live)
    def server_live():
        """Liveness (no authentication)."""
        return {"live": True}

    @routes.get("/v2/health/ready", response_model=ServerReady)
    def server_ready():
        """200 when every served model is loaded, else 503 (no authentication)."""
        if not manager.probe():
            missing = sorted(n for n, s in manager.models.items() if s.predictor is None)
            raise HTTPException(503, f"not ready: model(s) {missing} not loaded")
        return {"ready": True}

    @routes.get("/v2", response_model=ServerMetadata, dependencies=[predict_scope])
    def server_metadata():
        """The server's name, version and protocol extensions."""
        return oip.server_metadata()

    @routes.get("/v2/models/{name}", response_model=ModelMetadata,
                dependencies=[predict_scope])
    def model_metadata(name: str):
        """The model's version, platform, input and output tensors."""
        return oip.model_metadata(served_model(name, None))

    @routes.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata,
                dependencies=[predict_scope])
    def model_version_metadata(name: str, version: str):
        """Metadata of ``version``: 404 unless it is the version served."""
        return oip.model_metadata(served_model(name, version))

    @routes.get("/v2/models/{name}/ready", response_model=ModelReady,
                dependencies=[predict_scope])
    def model_ready(name: str):
        """200 when the model is loaded, 503 when not, 404 when not served."""
        return {"name": served_model(name, None).name, "ready": True}

    @routes.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReady,
                dependencies=[predict_scope])
    def model_version_ready(name: str, version: str):
        """200 when ``version`` is the one loaded."""
        return {"name": served_model(name, version).name, "ready": True}

    def run_inference(name: str, version: Optional[str], raw: bytes) -> Dict[str, Any]:
        served = served_model(name, version)
        request_id, tensors, requested = parse_infer_request(raw)
        try:
            oip.check_rows(tensors, context.max_records)
            columns = oip.decode_inputs(served, tensors)
            outputs = oip.infer(served, columns, requested)
        except oip.RequestTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except (oip.InferenceError, DataValidationError) as exc:
            raise HTTPException(422, str(exc)) from None
        rows = len(next(iter(columns.values()))) if columns else 0
        metrics.predictions.labels(served.name, str(served.version)).inc(rows)
        body = {"model_name": served.name, "model_version": str(served.version),
                "outputs": [_json_output(t) for t in outputs]}
        if request_id is not None:
            body["id"] = request_id
        return body

    # The schema itself is added to the document's components by .openapi.
    infer_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/InferRequest"}}}}}

    @routes.post("/v2/models/{name}/infer", response_model=InferResponse,
                 dependencies=[predict_scope], openapi_extra=infer_body)
    async def model_infer(name: str, request: Request):
        """Predictions of the served version of ``name``."""
        raw = await _json_body(request, context.max_body_bytes)
        return ORJSONResponse(await run_in_threadpool(run_inference, name, None, raw))

    @routes.post("/v2/models/{name}/versions/{version}/infer", response_model=InferResponse,
                 dependencies=[predict_scope], openapi_extra=infer_body)
    async def model_version_infer(name: str, version: str, request: Request):
        """Predictions of ``version`` of ``name``: 404 unless it is the version served."""
        raw = await _json_body(request, context.max_body_bytes)
        return ORJSONResponse(await run_in_threadpool(run_inference, name, version, raw))

    return routes
