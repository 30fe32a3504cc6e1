"""Open Inference Protocol tensors between protobuf (``grpc_inference.proto``) and numpy.

Only the wire format lives here: which ``InferTensorContents`` field carries which
datatype, the raw little-endian layout of ``raw_input_contents`` /
``raw_output_contents`` (a BYTES element is a 4-byte little-endian length, then its
bytes), and the count of raw entries.  What a model accepts (names, datatypes, shapes,
casts) is :mod:`sparkml_aiaas.serving.oip`'s job, shared with REST v2.

Numeric raw contents are read with ``np.frombuffer`` (no copy, no Python loop); typed
``contents`` fields go through one ``np.asarray``.  Errors are
:class:`~sparkml_aiaas.serving.oip.InferenceError` (INVALID_ARGUMENT) naming the tensor.
"""

from __future__ import annotations

import struct
from typing import List, Optional

import numpy as np

from sparkml_aiaas.serving.oip import InferenceError, Tensor
from sparkml_aiaas.serving.proto import grpc_inference_pb2 as pb

#: Datatype -> numpy dtype of its raw (little-endian) encoding.
RAW_DTYPES = {
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}

#: Datatype -> the InferTensorContents field that carries it (FP16 has none).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}

_LENGTH = struct.Struct("<I")


# --------------------------------------------------------------------------- requests
def decode_request(request: pb.ModelInferRequest) -> List[Tensor]:
    """The request's input tensors, from ``raw_input_contents`` or each input's ``contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(f"raw_input_contents has {len(raw)} entries for "
                             f"{len(request.inputs)} inputs; send one per input, in order")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        if raw:
            if tensor.HasField("contents"):
                raise InferenceError(f"input {name!r}: data in both contents and "
                                     "raw_input_contents; send one")
            data = decode_raw(name, datatype, raw[index])
        else:
            data = decode_contents(name, datatype, tensor.contents)
        tensors.append(Tensor(name=name, datatype=datatype, shape=list(tensor.shape),
                              data=data))
    return tensors


def decode_raw(name: str, datatype: str, raw: bytes) -> np.ndarray:
    """One input's raw bytes as a flat array of its datatype."""
    if datatype == "BYTES":
        return np.array(_split_bytes(name, raw), dtype=object)
    dtype = RAW_DTYPES.get(datatype)
    if dtype is None:
        raise InferenceError(f"input {name!r}: unknown datatype {datatype!r}")
    if len(raw) % dtype.itemsize:
        raise InferenceError(f"input {name!r}: {len(raw)} raw bytes is not a whole number "
                             f"of {datatype} elements ({dtype.itemsize} bytes each)")
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.size and octets.max() > 1:
            raise InferenceError(f"input {name!r}: a raw BOOL element is a byte 0 or 1")
        return octets.view(np.bool_)
    return np.frombuffer(raw, dtype=dtype)


def _split_bytes(name: str, raw: bytes) -> List[str]:
    """BYTES elements (each a 4-byte little-endian length, then the bytes) as text."""
    items, offset, end = [], 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InferenceError(f"input {name!r}: raw BYTES end inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise InferenceError(f"input {name!r}: a raw BYTES element of {length} bytes "
                                 "runs past the end of the data")
        items.append(_text(name, raw[offset:offset + length]))
        offset += length
    return items


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InferenceError(f"input {name!r}: a BYTES element is not UTF-8 text") from None


def decode_contents(name: str, datatype: str, contents: pb.InferTensorContents) -> np.ndarray:
    """One input's typed ``contents`` as a flat array of its datatype."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        known = datatype in RAW_DTYPES
        raise InferenceError(f"input {name!r}: " + (
            f"{datatype} has no contents field; send it in raw_input_contents" if known
            else f"unknown datatype {datatype!r}"))
    for other in set(CONTENTS_FIELDS.values()) - {field}:
        if len(getattr(contents, other)):
            raise InferenceError(f"input {name!r}: {datatype} data goes in contents.{field}, "
                                 f"not contents.{other}")
    values = getattr(contents, field)
    if datatype == "BYTES":
        return np.array([_text(name, v) for v in values], dtype=object)
    dtype = RAW_DTYPES[datatype]
    wide = np.asarray(values, dtype=np.result_type(dtype, np.int32) if dtype.kind in "iu"
                      else dtype)
    if wide.dtype != dtype:  # INT8/INT16/UINT8/UINT16 travel in 32-bit fields
        limits = np.iinfo(dtype)
        if wide.size and (wide.min() < limits.min or wide.max() > limits.max):
            raise InferenceError(f"input {name!r}: a value is out of the range of {datatype}")
        wide = wide.astype(dtype)
    return wide


# --------------------------------------------------------------------------- responses
def requested_outputs(request: pb.ModelInferRequest) -> Optional[List[str]]:
    """The output names the client asked for (None: all of the model's)."""
    return [output.name for output in request.outputs] or None


def encode_response(request: pb.ModelInferRequest, model_version: str,
                    tensors: List[Tensor]) -> pb.ModelInferResponse:
    """The response, with raw outputs when the request sent raw inputs, else typed contents."""
    response = pb.ModelInferResponse(model_name=request.model_name,
                                     model_version=model_version, id=request.id)
    raw = bool(request.raw_input_contents)
    for tensor in tensors:
        output = response.outputs.add(name=tensor.name, datatype=tensor.datatype,
                                      shape=[int(d) for d in tensor.shape])
        if raw:
            response.raw_output_contents.append(encode_raw(tensor.datatype, tensor.data))
        else:
            _fill_contents(output.contents, tensor.datatype, tensor.data)
    return response


def encode_raw(datatype: str, data: np.ndarray) -> bytes:
    """``data`` (any shape, row-major) in the raw layout of ``datatype``."""
    flat = np.asarray(data).reshape(-1)
    if datatype == "BYTES":
        parts = []
        for item in flat:
            value = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    return np.ascontiguousarray(flat, dtype=RAW_DTYPES[datatype]).tobytes()


def _fill_contents(contents: pb.InferTensorContents, datatype: str, data: np.ndarray) -> None:
    flat = np.asarray(data).reshape(-1)
    field = getattr(contents, CONTENTS_FIELDS[datatype])
    if datatype == "BYTES":
        field.extend(item if isinstance(item, bytes) else str(item).encode("utf-8")
                     for item in flat)
    else:
        field.extend(flat.astype(RAW_DTYPES[datatype], copy=False).tolist())
