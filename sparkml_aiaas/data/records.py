"""Splitting text into records and fields (CSV and JSON lines); no pyspark.

Used on the executors by :mod:`sparkml_aiaas.data.record_batches` and on the
driver to read headers (:func:`first_record`).  Fields are kept as strings;
typing and validation happen afterwards in Spark SQL.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
from dataclasses import dataclass
from typing import Iterator, Optional


#: ``kind`` of an output row: a record, or the summary row that ends a split.
RECORD, SPLIT = 0, 1

_BOM = "\ufeff"

#: (start line, raw text, fields or None, why not parsable or None)
SplitRecord = tuple[int, str, Optional[list], Optional[str]]


def _allow_large_fields() -> None:
    # A quoted field may legitimately be large (free text); the csv module's
    # 128 KiB default would turn such a record into a parse error.  Set in the
    # worker only, not at import, so the driver's csv module is left alone.
    csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class TextSpec:
    """How to split text into records; pickled to the executors.

    Attributes
    ----------
    format : {"csv", "json"}
    header : bool
        Whether the first non-blank record of each file is a header (CSV only).
    delimiter, quotechar, escapechar : str or None
        CSV dialect; ``quotechar=None`` disables quoting.
    encoding : str
        Used in whole-file mode (line mode reads UTF-8 through Spark).
    names : tuple of str
        Declared column names (JSON lines: which keys to extract).
    """

    format: str
    header: bool = False
    delimiter: str = ","
    quotechar: Optional[str] = '"'
    escapechar: Optional[str] = None
    encoding: str = "utf-8"
    names: tuple = ()

    def csv_kwargs(self) -> dict:
        # strict=True turns unbalanced quoting into an error we can report,
        # where the lenient default would silently glue text together.
        kwargs = {"delimiter": self.delimiter, "strict": True, "doublequote": True}
        if self.quotechar is None:
            kwargs["quoting"] = csv.QUOTE_NONE
        else:
            kwargs["quotechar"] = self.quotechar
        if self.escapechar is not None:
            kwargs["escapechar"] = self.escapechar
        return kwargs


# ------------------------------------------------------------------ parsing


def is_blank(raw: str) -> bool:
    """Blank and whitespace-only lines are not records (Spark's CSV reader agrees)."""
    return not raw.strip()


def describe_csv_error(exc: csv.Error, multiline: bool) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        if multiline:
            return "unclosed quote: the quoted value runs to the end of the file"
        return "unclosed quote: a quoted value spanning lines needs the multiLine=true option"
    return f"bad CSV quoting ({message})"


def parse_csv_line(line: str, spec: TextSpec) -> tuple[Optional[list], Optional[str]]:
    """Split one line into fields; returns ``(fields, None)`` or ``(None, why)``."""
    # A reader per line: a shared reader would read on into the next line when
    # a quote is left open, which line mode must report instead.
    try:
        rows = list(csv.reader([line], **spec.csv_kwargs()))
    except csv.Error as exc:
        return None, describe_csv_error(exc, multiline=False)
    return (rows[0] if rows else []), None


def parse_csv_lines(lines: list, spec: TextSpec) -> tuple[list, list]:
    """:func:`parse_csv_line` of every line, with one reader for the whole list.

    Returns ``(fields per line, error per line)``.  A shared reader is three
    times faster than a reader per line, but reads on into the next line when
    a quote is left open; a record that spans lines is therefore detected
    (the reader's line counter moved by more than one) and each of its lines
    is parsed again on its own, which reports the open quote.
    """
    fields: list = [None] * len(lines)
    errors: list = [None] * len(lines)
    kwargs = spec.csv_kwargs()
    start = 0
    while start < len(lines):
        reader = csv.reader(iter(lines[start:]) if start else iter(lines), **kwargs)
        done = 0  # lines consumed by this reader so far
        try:
            for row in reader:
                if reader.line_num - done == 1:
                    fields[start + done] = row
                else:
                    for i in range(start + done, start + reader.line_num):
                        fields[i], errors[i] = parse_csv_line(lines[i], spec)
                done = reader.line_num
            break
        except csv.Error:
            # Parse the failing stretch line by line, then start a fresh reader after it.
            for i in range(start + done, start + max(reader.line_num, done + 1)):
                fields[i], errors[i] = parse_csv_line(lines[i], spec)
            start += max(reader.line_num, done + 1)
    return fields, errors


def iter_csv_text(text: str, spec: TextSpec) -> Iterator[SplitRecord]:
    """Yield ``(start_line, raw, fields, error)`` for each record of a whole file.

    Quoted fields may span lines.  ``start_line`` is 0-based.
    """
    consumed: list[str] = []

    def lines():
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), **spec.csv_kwargs())
    start = 0
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader restarts cleanly on the next line after an error.
            fields, error = None, describe_csv_error(exc, multiline=True)
        raw = _strip_line_break("".join(consumed))
        consumed.clear()
        yield start, raw, fields, error
        start = reader.line_num


def parse_json_line(line: str, spec: TextSpec) -> tuple[Optional[list], Optional[str]]:
    """Extract the declared columns of one JSON object as strings."""
    try:
        # Numbers stay as their literal text, so that casting to the declared
        # type (not Python's float) decides whether they are valid.
        obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=str)
    except ValueError as exc:
        return None, f"invalid JSON ({exc})"
    if not isinstance(obj, dict):
        return None, f"a JSON lines record must be an object, not {type(obj).__name__}"
    return [_json_value_as_text(obj.get(name)) for name in spec.names], None


def iter_json_text(text: str, spec: TextSpec) -> Iterator[SplitRecord]:
    """Yield ``(start_line, raw, fields, error)`` for each line of a whole JSON-lines file."""
    for index, line in enumerate(io.StringIO(text, newline="")):
        raw = _strip_line_break(line)
        if is_blank(raw):
            yield index, raw, [], None
        else:
            fields, error = parse_json_line(raw, spec)
            yield index, raw, fields, error


def _json_value_as_text(value) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    # Nested objects and arrays: kept as JSON text; they fail to cast to an
    # atomic type and are reported as unparsable.
    return json.dumps(value)


def _strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


_DECOMPRESSORS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def decode(path: str, content: bytes, encoding: str) -> str:
    """Decompress by file extension, decode, and drop a leading byte-order mark.

    Undecodable bytes become U+FFFD, as in Spark's own text reader; in a typed
    column they then fail to parse and the record is rejected.
    """
    for suffix, decompress in _DECOMPRESSORS.items():
        if path.endswith(suffix):
            content = decompress(content)
            break
    codec = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    text = bytes(content).decode(codec, errors="replace")
    return text[1:] if text.startswith(_BOM) else text


class Truncated(Exception):
    """The bytes read end inside the first record: read more of the file."""


def first_record(
    start: bytes, spec: TextSpec, whole_file: bool, truncated: bool = False
) -> tuple[Optional[list], Optional[str]]:
    """The header: the first non-blank record in ``start`` (the first bytes of a file).

    Returns ``(fields, None)``, ``(None, why it is malformed)``, or
    ``(None, None)`` for a file with no records.  ``truncated`` says that
    ``start`` is not the whole file: a first record that may continue past
    its end raises :class:`Truncated`.
    """
    encoding = spec.encoding if whole_file else "utf-8"
    codec = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    # An incremental decoder: the last character may be cut in half by the byte limit.
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(start, final=not truncated)
    if text.startswith(_BOM):
        text = text[1:]
    if whole_file:
        records = iter_csv_text(text, spec)
        for start_line, raw, fields, error in records:
            if error is None and is_blank(raw):
                continue
            # Complete only if something follows it (or the text is the whole file).
            if truncated and next(records, None) is None:
                raise Truncated()
            return fields, error
        if truncated:
            raise Truncated()
        return None, None
    for line in io.StringIO(text, newline=""):
        complete = line.endswith(("\n", "\r"))
        raw = _strip_line_break(line)
        if is_blank(raw):
            continue
        if not complete and truncated:
            raise Truncated()
        return parse_csv_line(raw, spec)
    if truncated:
        raise Truncated()
    return None, None
