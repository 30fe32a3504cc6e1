"""The Open Inference Protocol (KServe v2) core, shared by REST v2 and gRPC.

Protocol-neutral: the REST routes and the gRPC servicer decode their JSON or
protobuf into :class:`Tensor` objects, call :func:`decode_inputs` and :func:`infer`,
and encode the tensors back.  The tabular mapping:

- one input tensor per input column of the model's signature, named after it,
  shape ``[N]`` (``[N, k]`` for a vector/array column), datatype from the column's
  Spark SQL type (:data:`DATATYPES`);
- one output tensor per output column of the predictor: ``prediction`` ``[N]``
  FP64, ``probability`` (and other array outputs) ``[N, C]`` FP64, the others by
  their Spark SQL type.

Predictions are ``predictor.predict_columns(columns)`` (no pandas frame) when the
predictor has it, else ``predictor.predict(pandas.DataFrame(columns))``: the same
numbers as batch scoring either way.  This module imports no web framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sparkml_aiaas import __version__

__all__ = ["DATATYPES", "InferenceError", "ModelUnavailable", "RequestTooLarge", "Tensor",
           "check_rows", "check_version", "column_datatype", "decode_inputs", "infer",
           "model_metadata", "predict_columns", "server_metadata"]

#: Spark SQL scalar type -> OIP datatype.  Array and vector columns are FP64 ``[N, k]``;
#: ``decimal(p,s)`` is FP64; a type the signature does not record is taken as FP64.
DATATYPES = {"double": "FP64", "float": "FP32", "tinyint": "INT64", "smallint": "INT64",
             "int": "INT64", "bigint": "INT64", "boolean": "BOOL", "string": "BYTES"}

#: OIP datatype -> numpy dtype of the arrays that carry it.
NUMPY_TYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16,
               "UINT32": np.uint32, "UINT64": np.uint64, "INT8": np.int8,
               "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
               "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}

#: Datatypes a numeric column accepts besides its own (cast, refusing lossy casts).
_NUMERIC = frozenset(NUMPY_TYPES) - {"BOOL", "BYTES"}
#: Integers a float64 holds exactly.
_EXACT_IN_FP64 = 2 ** 53


class InferenceError(Exception):
    """A request that does not fit the model (REST 422, gRPC INVALID_ARGUMENT); one line."""


class ModelUnavailable(Exception):
    """No model to answer: ``status`` 404 (not served, or another version) or 503 (not
    loaded).  REST sends the status; gRPC NOT_FOUND or UNAVAILABLE."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RequestTooLarge(Exception):
    """More rows than the server takes in one request (REST 413, gRPC RESOURCE_EXHAUSTED)."""


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: List[int]
    data: np.ndarray  # flat or shaped; decode_inputs reshapes it to ``shape``


# --------------------------------------------------------------------------- metadata
def _is_vector(spark_type: str) -> bool:
    return spark_type.startswith("array") or spark_type == "vector"


def column_datatype(spark_type: str) -> str:
    """The OIP datatype of a column of Spark SQL type ``spark_type``."""
    if _is_vector(spark_type):
        return "FP64"
    return DATATYPES.get(spark_type, "FP64")


def _vector_width(served) -> int:
    """The feature count of a model reading one vector column (-1 when unknown)."""
    width = getattr(served.predictor, "n_features", None)
    return int(width) if isinstance(width, (int, np.integer)) and len(served.signature) == 1 \
        else -1


def _input_shape(served, spark_type: str) -> List[int]:
    return [-1, _vector_width(served)] if _is_vector(spark_type) else [-1]


def _output_shape(served, spark_type: str) -> List[int]:
    if not _is_vector(spark_type):
        return [-1]
    # A registry bundle's classes are its model's (after the preprocessor).
    model = getattr(served.predictor, "model", served.predictor)
    classes = getattr(model, "n_classes", None)
    return [-1, int(classes)] if isinstance(classes, (int, np.integer)) and classes > 0 \
        else [-1, -1]


def _family(predictor) -> str:
    meta = getattr(predictor, "metadata", None) or {}
    for section in (meta.get("predictor"), (meta.get("model") or {}).get("predictor")):
        if isinstance(section, dict) and isinstance(section.get("family"), str):
            return section["family"]
    return "unknown"


def server_metadata() -> Dict[str, Any]:
    return {"name": "sparkml_aiaas", "version": __version__, "extensions": []}


def model_metadata(served) -> Dict[str, Any]:
    """The OIP model metadata: exactly the signature's inputs and the predictor's outputs."""
    return {
        "name": served.name,
        "versions": [str(served.version)],
        "platform": f"sparkml_aiaas_{_family(served.predictor)}",
        "inputs": [{"name": c["name"], "datatype": column_datatype(c["type"]),
                    "shape": _input_shape(served, c["type"])} for c in served.signature],
        "outputs": [{"name": c["name"], "datatype": column_datatype(c["type"]),
                     "shape": _output_shape(served, c["type"])} for c in served.outputs],
    }


def check_version(served, version: Optional[str]) -> None:
    """Nothing when ``version`` is the served one ("" or None mean it); else 404."""
    if version is None or version == "" or version == str(served.version):
        return
    raise ModelUnavailable(404, f"model {served.name!r} version {str(version)[:40]!r} is not "
                                f"served here (serving version {served.version})")


def check_rows(tensors: Sequence[Tensor], max_rows: int) -> None:
    """RequestTooLarge when a tensor declares more than ``max_rows`` rows (checked before
    any data is decoded)."""
    for tensor in tensors:
        if tensor.shape and isinstance(tensor.shape[0], int) and tensor.shape[0] > max_rows:
            raise RequestTooLarge(f"input {tensor.name!r} has {tensor.shape[0]} rows; the "
                                  f"limit is {max_rows} per request")


# --------------------------------------------------------------------------- inputs
def _column_dtype(spark_type: str):
    """The numpy dtype a column's values are handed to the predictor in."""
    return NUMPY_TYPES[column_datatype(spark_type)]


def _cast(tensor: Tensor, values: np.ndarray, column: str, spark_type: str) -> np.ndarray:
    """``values`` (of ``tensor.datatype``) as the column's dtype; InferenceError when the
    datatype does not fit the column or a value would change."""
    expected = column_datatype(spark_type)
    if tensor.datatype == expected:
        return values
    where = f"input {tensor.name!r}"
    if expected in ("BOOL", "BYTES") or tensor.datatype not in _NUMERIC:
        raise InferenceError(f"{where}: datatype {tensor.datatype} does not fit column "
                             f"{column!r} ({spark_type}); send {expected}")
    target = NUMPY_TYPES[expected]
    if values.dtype.kind in "iu":
        if expected in ("FP64", "FP32"):
            limit = _EXACT_IN_FP64 if expected == "FP64" else 2 ** 24
            if values.size and np.abs(values.astype(np.float64)).max() > limit:
                raise InferenceError(f"{where}: an integer beyond ±{limit} does not fit "
                                     f"{expected} exactly; send {expected}")
        elif values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
            raise InferenceError(f"{where}: a value is beyond the range of INT64")
        return values.astype(target)
    # float data into an integer or narrower float column
    finite = values[~np.isnan(values)]
    if expected == "INT64":
        if finite.size and (np.any(finite != np.round(finite)) or
                            np.abs(finite).max() > _EXACT_IN_FP64):
            raise InferenceError(f"{where}: column {column!r} ({spark_type}) takes whole "
                                 f"numbers (up to ±2^53 as {tensor.datatype}); send INT64")
        # A null (NaN) in an integer column stays a float NaN, as in batch scoring.
        return values.astype(np.float64) if finite.size < values.size else values.astype(target)
    narrowed = values.astype(target)  # FP64 -> FP32
    if np.any(narrowed[~np.isnan(values)].astype(values.dtype) != finite):
        raise InferenceError(f"{where}: a value does not fit FP32 exactly; send FP32")
    return narrowed


def decode_inputs(served, tensors: Sequence[Tensor]) -> Dict[str, np.ndarray]:
    """The model's input columns (signature order) from ``tensors``: exactly one tensor
    per column, shapes ``[N]`` / ``[N, k]`` with one N; InferenceError naming the tensor."""
    columns = {c["name"]: c["type"] for c in served.signature}
    by_name: Dict[str, Tensor] = {}
    for tensor in tensors:
        if tensor.name not in columns:
            raise InferenceError(f"unknown input {str(tensor.name)[:80]!r}; the model's inputs "
                                 f"are {list(columns)}")
        if tensor.name in by_name:
            raise InferenceError(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    missing = [name for name in columns if name not in by_name]
    if missing:
        raise InferenceError(f"missing input(s) {missing}; the model's inputs are "
                             f"{list(columns)}")
    decoded: Dict[str, np.ndarray] = {}
    rows: Optional[Tuple[int, str]] = None
    for name, spark_type in columns.items():
        tensor = by_name[name]
        values = _shaped(served, tensor, spark_type)
        if rows is not None and values.shape[0] != rows[0]:
            raise InferenceError(f"input {name!r} has {values.shape[0]} rows but input "
                                 f"{rows[1]!r} has {rows[0]}; every input needs the same N")
        rows = rows or (values.shape[0], name)
        decoded[name] = _cast(tensor, values, name, spark_type)
    return decoded


def _shaped(served, tensor: Tensor, spark_type: str) -> np.ndarray:
    """``tensor.data`` reshaped to its declared shape, which must suit the column.

    Costs a few µs per tensor: a single-record request has one tensor per column, so the
    checks below avoid numpy calls on tiny arrays (``np.prod``, ``np.isinf(...).any()``)
    where Python's own are several times cheaper; every check stays.
    """
    if tensor.datatype not in NUMPY_TYPES:
        raise InferenceError(f"input {tensor.name!r}: unsupported datatype "
                             f"{str(tensor.datatype)[:20]!r}")
    shape = tensor.shape
    for d in shape:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise InferenceError(f"input {tensor.name!r}: shape {shape} must list "
                                 "non-negative integers")
    if _is_vector(spark_type):
        width = _vector_width(served)
        if len(shape) != 2 or (width >= 0 and shape[1] != width):
            raise InferenceError(f"input {tensor.name!r}: shape {list(shape)} does not fit "
                                 f"column {tensor.name!r} ({spark_type}); send "
                                 f"[N, {width if width >= 0 else 'k'}]")
    elif len(shape) != 1:
        raise InferenceError(f"input {tensor.name!r}: shape {list(shape)} does not fit "
                             f"column {tensor.name!r} ({spark_type}); send [N]")
    data = np.asarray(tensor.data)
    expected_size = math.prod(int(d) for d in shape)  # Python ints: no overflow
    if data.size != expected_size:
        raise InferenceError(f"input {tensor.name!r}: {data.size} value(s) for shape "
                             f"{list(shape)} ({expected_size} expected)")
    if data.shape != tuple(shape):
        try:
            data = data.reshape(shape)
        except ValueError:  # e.g. [0, 2**62]: no data, but no array that shape either
            raise InferenceError(f"input {tensor.name!r}: shape {list(shape)} is too "
                                 "large") from None
    if data.dtype.kind == "f":
        if _has_inf(data):
            raise InferenceError(f"input {tensor.name!r}: a value is not a finite number")
        if data.ndim == 2 and np.isnan(data).any():
            raise InferenceError(f"input {tensor.name!r}: a vector holds a null/NaN; "
                                 "vectors must be complete")
    return data


def _has_inf(data: np.ndarray) -> bool:
    """Whether a float array holds ±inf (NaN is a null, and allowed)."""
    if data.size <= 8:
        return any(map(math.isinf, data.ravel().tolist()))
    return bool(np.isinf(data).any())


# --------------------------------------------------------------------------- outputs
def _output_array(values: Any) -> np.ndarray:
    """A predictor output column as one array: a column of per-row vectors stacks to 2-D."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    array = np.asarray(values)
    if array.dtype == object and array.size and isinstance(array.flat[0], (list, np.ndarray)):
        return np.stack([np.asarray(v, dtype=np.float64) for v in array])
    return array


def predict_columns(predictor, columns: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``predictor.predict_columns(columns)``, or the same through a pandas frame for a
    predictor without it (2-D columns become one vector per row)."""
    fast = getattr(predictor, "predict_columns", None)
    if fast is not None:
        return fast(columns)
    import pandas as pd

    frame = pd.DataFrame({name: list(values) if values.ndim == 2 else values
                          for name, values in columns.items()})
    out = predictor.predict(frame)
    return {name: _output_array(out[name]) for name, _ in predictor.output_columns}


def _encode(name: str, spark_type: str, values: np.ndarray) -> Tensor:
    values = np.asarray(values)
    if values.ndim == 2 or _is_vector(spark_type):
        array = values.astype(np.float64, copy=False)
        if array.ndim == 1:  # no rows: the width is unknown
            array = array.reshape(len(array), 0)
        return Tensor(name, "FP64", list(array.shape), array)
    datatype = column_datatype(spark_type)
    if datatype == "BYTES":
        array = values.astype(object)
    else:
        array = values.astype(NUMPY_TYPES[datatype], copy=False)
    return Tensor(name, datatype, [int(array.shape[0])], array)


def infer(served, columns: Mapping[str, np.ndarray],
          requested: Optional[Sequence[str]] = None) -> List[Tensor]:
    """The output tensors of ``served`` for ``columns`` (from :func:`decode_inputs`), in
    the predictor's output order, or only the ``requested`` ones in the order asked."""
    outputs = [(c["name"], c["type"]) for c in served.outputs]
    types = dict(outputs)
    if requested:
        unknown = [name for name in requested if name not in types]
        if unknown:
            raise InferenceError(f"unknown output(s) {[str(u)[:80] for u in unknown]}; the "
                                 f"model's outputs are {list(types)}")
        if len(set(requested)) != len(requested):
            raise InferenceError("an output is requested twice")
        outputs = [(name, types[name]) for name in requested]
    predicted = predict_columns(served.predictor, columns)
    return [_encode(name, spark_type, predicted[name]) for name, spark_type in outputs]
