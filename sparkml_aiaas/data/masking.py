"""Masking PII inside the raw text of rejected records (no pyspark: runs in Python workers).

A rejected record is kept as it was read, for people to see why it failed.
When PII columns are configured, the raw text is rewritten first: the PII
fields are parsed out of it and replaced (hashed with the same key as the
accepted rows, or ``[redacted]`` for dropped columns), the rest stays as read.
A record that cannot be split into fields (bad quoting, invalid JSON) cannot
be masked field by field: its text is replaced as a whole by
:data:`UNSPLITTABLE` (plus its keyed hash when a key is configured, so equal
records can still be matched).  That loses the text of such records, which
is the price of never writing PII.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Mapping, Optional

from sparkml_aiaas.core.pii import keyed_hash

__all__ = ["REDACTED", "UNSPLITTABLE", "mask_csv_record", "mask_json_record"]

REDACTED = "[redacted]"
UNSPLITTABLE = "[redacted: a record that could not be split into fields may hold PII]"


def _replacement(value: Optional[str], action: str, key: Optional[bytes]) -> Optional[str]:
    if value is None or value == "":
        return value  # an empty field says nothing
    return keyed_hash(value, key) if action == "hash" else REDACTED


def _unsplittable(raw: str, key: Optional[bytes]) -> str:
    return UNSPLITTABLE if key is None else f"{UNSPLITTABLE} hmac-sha256:{keyed_hash(raw, key)}"


def mask_csv_record(
    raw: str, csv_kwargs: Mapping, positions: Mapping[int, str], key: Optional[bytes]
) -> str:
    """``raw`` with the fields at ``positions`` (0-based, file order) hashed or redacted."""
    try:
        rows = list(csv.reader(io.StringIO(raw, newline=""), **csv_kwargs))
    except csv.Error:
        return _unsplittable(raw, key)
    if len(rows) != 1:
        return _unsplittable(raw, key)
    fields = [
        _replacement(value, positions[i], key) if i in positions else value
        for i, value in enumerate(rows[0])
    ]
    out = io.StringIO()
    writer_kwargs = dict(csv_kwargs)
    writer_kwargs.pop("strict", None)
    csv.writer(out, lineterminator="\n", **writer_kwargs).writerow(fields)
    return out.getvalue()[:-1]


def mask_json_record(raw: str, columns: Mapping[str, str], key: Optional[bytes]) -> str:
    """``raw`` (a JSON object) with the PII keys' values hashed or redacted."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return _unsplittable(raw, key)
    if not isinstance(obj, dict):
        return _unsplittable(raw, key)
    for name, action in columns.items():
        if name in obj and obj[name] is not None:
            value = obj[name]
            text = value if isinstance(value, str) else json.dumps(value)
            obj[name] = _replacement(text, action, key)
    return json.dumps(obj, ensure_ascii=False)
