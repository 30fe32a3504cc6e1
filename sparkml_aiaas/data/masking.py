"""Masking PII inside the raw text of rejected records (no pyspark: runs in Python workers).

A rejected record is kept as it was read, for people to see why it failed.
When PII columns are configured, the raw text is rewritten first, and how
depends on whether the record was mapped to the columns with certainty:

- a CSV record split into exactly its file's number of fields, or a JSON
  object with only declared keys: its PII fields are parsed out and replaced
  (hashed with the same key as the accepted rows, or ``[redacted]`` for
  dropped columns), the rest stays as read;
- any other record (too few or too many fields, bad quoting, invalid JSON,
  undeclared JSON keys, bytes invalid in the encoding): nobody can say which
  of its fields is the PII (an extra field shifts every field after it), so
  it is replaced as a whole by :data:`WHOLE_RECORD` plus its keyed hash (when
  a key is configured, so equal records can still be matched).  Its text is
  not lost: the quarantine row's locator (file, byte offset and length) finds
  it in the source, for whoever may read the source.

What cannot be detected: a record with the right field count whose PII sits
in a non-PII column (shifted by a missing field and an extra one, or simply
typed into the wrong column) is masked field by field, so that PII stays.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Collection, Mapping, Optional

from sparkml_aiaas.core.pii import keyed_hash

__all__ = [
    "REDACTED",
    "UNCERTAIN_CODES",
    "WHOLE_RECORD",
    "mask_csv_record",
    "mask_json_record",
    "mask_whole",
]

REDACTED = "[redacted]"
WHOLE_RECORD = (
    "[redacted: record not mapped to columns with certainty; "
    "locate it with _source_file, _byte_offset, _byte_length]"
)
#: Reason codes of records that were not mapped to columns with certainty.
UNCERTAIN_CODES = frozenset(
    {"invalid_encoding", "malformed_record", "too_few_fields", "too_many_fields"}
)


def _replacement(value: Optional[str], action: str, key: Optional[bytes]) -> Optional[str]:
    if value is None or value == "":
        return value  # an empty field says nothing
    return keyed_hash(value, key) if action == "hash" else REDACTED


def mask_whole(raw: str, key: Optional[bytes]) -> str:
    """The marker that replaces a whole record, with its keyed hash when there is a key."""
    return WHOLE_RECORD if key is None else f"{WHOLE_RECORD} hmac-sha256:{keyed_hash(raw, key)}"


def mask_csv_record(
    raw: str,
    csv_kwargs: Mapping,
    positions: Mapping[int, str],
    key: Optional[bytes],
    width: Optional[int] = None,
) -> str:
    """``raw`` with the fields at ``positions`` (0-based, file order) hashed or redacted.

    Masked whole unless it splits into exactly one record of ``width`` fields
    (any number when ``width`` is None).
    """
    try:
        rows = list(csv.reader(io.StringIO(raw, newline=""), **csv_kwargs))
    except csv.Error:
        return mask_whole(raw, key)
    if len(rows) != 1 or (width is not None and len(rows[0]) != width):
        return mask_whole(raw, key)
    fields = [
        _replacement(value, positions[i], key) if i in positions else value
        for i, value in enumerate(rows[0])
    ]
    out = io.StringIO()
    writer_kwargs = dict(csv_kwargs)
    writer_kwargs.pop("strict", None)
    try:
        csv.writer(out, lineterminator="\n", **writer_kwargs).writerow(fields)
    except csv.Error:  # e.g. no quoting and no escape character for a value that needs one
        return mask_whole(raw, key)
    return out.getvalue()[:-1]


def mask_json_record(
    raw: str,
    columns: Mapping[str, str],
    key: Optional[bytes],
    names: Optional[Collection[str]] = None,
) -> str:
    """``raw`` (a JSON object) with the PII keys' values hashed or redacted, the rest as read.

    Masked whole unless it is exactly one object whose keys are all in
    ``names`` (any keys when ``names`` is None), each given once.  A string
    value is hashed as its decoded text, any other value as its JSON text (as
    the accepted rows hash them).
    """
    members = _members(raw)
    if members is None:
        return mask_whole(raw, key)
    keys = [name for name, _, _, _ in members]
    if len(set(keys)) != len(keys) or (names is not None and not set(keys) <= set(names)):
        return mask_whole(raw, key)
    pieces, last = [], 0
    for name, value, start, end in members:
        action = columns.get(name)
        if action is None or value is None:
            continue
        text = value if isinstance(value, str) else raw[start:end]
        pieces += [raw[last:start], json.dumps(_replacement(text, action, key), ensure_ascii=False)]
        last = end
    pieces.append(raw[last:])
    return "".join(pieces)


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module skips it


def _members(raw: str) -> Optional[list]:
    """``[(key, value, value start, value end)]`` of the one JSON object ``raw`` holds, or None."""
    try:
        i = _SPACE.match(raw, 0).end()
        if raw[i:i + 1] != "{":
            return None
        i = _SPACE.match(raw, i + 1).end()
        members: list = []
        if raw[i:i + 1] == "}":
            i += 1
        else:
            while True:
                if raw[i:i + 1] != '"':
                    return None
                name, i = json.decoder.scanstring(raw, i + 1)
                i = _SPACE.match(raw, i).end()
                if raw[i:i + 1] != ":":
                    return None
                start = _SPACE.match(raw, i + 1).end()
                value, i = _DECODER.raw_decode(raw, start)
                members.append((name, value, start, i))
                i = _SPACE.match(raw, i).end()
                if raw[i:i + 1] == ",":
                    i = _SPACE.match(raw, i + 1).end()
                    continue
                if raw[i:i + 1] != "}":
                    return None
                i += 1
                break
    except (ValueError, RecursionError):
        return None
    return members if _SPACE.match(raw, i).end() == len(raw) else None


def mask_record(
    raw: Optional[str],
    code: Optional[str],
    mask_fields,
    key: Optional[bytes],
) -> Optional[str]:
    """Mask whole for an uncertain ``code``, else with ``mask_fields(raw)``; None stays None."""
    if raw is None:
        return None
    if code in UNCERTAIN_CODES:
        return mask_whole(raw, key)
    return mask_fields(raw)
