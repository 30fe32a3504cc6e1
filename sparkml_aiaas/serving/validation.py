"""REST v1 request checks: a JSON body of records against the model's signature.

Every check names the record and field at fault, in one line (HTTPException 422),
and describes values briefly (never echoing a long value back).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from starlette.exceptions import HTTPException

__all__ = ["NUMERIC_TYPES", "describe", "error_path", "parse_body", "records_columns",
           "records_frame",
           "validate_records"]

#: Spark SQL types whose values are JSON numbers (and ``decimal(p,s)``).
NUMERIC_TYPES = {"tinyint", "smallint", "int", "bigint", "float", "double"}


def describe(value: Any) -> str:
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
    numeric = expected in NUMERIC_TYPES or expected.startswith("decimal")
    if numeric or expected == "boolean":
        if isinstance(value, bool) and expected == "boolean":
            return None
        if not _is_number(value):
            return f"must be {expected}, got {describe(value)}"
        problem = _number_problem(value)
        return f"must be {expected}, got {describe(value)}: {problem}" if problem else None
    if expected == "string":
        return None if isinstance(value, str) else f"must be string, got {describe(value)}"
    if expected.startswith("array") or expected == "vector":
        if not isinstance(value, list):
            return f"must be {expected} (a list of numbers), got {describe(value)}"
        for j, item in enumerate(value):
            problem = "" if _is_number(item) else "not a number"
            problem = problem or _number_problem(item)
            if problem:
                return (f"must be {expected} (a list of numbers), but item [{j}] is "
                        f"{describe(item)}: {problem}")
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
        numeric = expected in NUMERIC_TYPES or expected.startswith("decimal")
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


#: Integers up to this magnitude are exact as doubles, so a double column holding them
#: converts to the predictor's feature type (float32 included) as pandas' int64 one does.
_EXACT_INT = 2 ** 53


def records_columns(records: List[Dict[str, Any]], signature: List[Dict[str, str]]
                    ) -> Optional[Dict[str, np.ndarray]]:
    """Small requests of numeric and boolean columns as one float64 array per column, for
    the predictors' ``predict_columns`` (no pandas frame); None when the request needs
    :func:`records_frame` (larger, strings, vectors, integers past 2**53).

    Checked value by value first (:func:`validate_records`, 422 naming the field), so every
    value is a number, a boolean in a boolean column, or null (NaN, as in the frame).
    """
    if not records or len(records) * len(signature) > _VALUE_BY_VALUE_CELLS:
        return None
    if not all(c["type"] in NUMERIC_TYPES or c["type"] == "boolean" for c in signature):
        return None
    validate_records(records, signature)
    columns = {}
    for column in signature:
        name = column["name"]
        values = [record[name] for record in records]
        if any(type(v) is int and abs(v) > _EXACT_INT for v in values):
            return None
        columns[name] = np.array([np.nan if v is None else float(v) for v in values],
                                 dtype=np.float64)
    return columns


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


def error_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a path: ``("records", 0, "x")`` -> ``records[0].x``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_body(raw: bytes) -> Any:
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
