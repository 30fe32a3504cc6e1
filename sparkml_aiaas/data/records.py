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
from typing import Iterable, Iterator, Optional, Sequence


#: ``kind`` of an output row: a record, or the summary row that ends a split.
RECORD, SPLIT = 0, 1

_BOM = "\ufeff"

#: (start line, raw text, fields or None, why not parsable or None)
SplitRecord = tuple[int, str, Optional[list], Optional[str]]
#: (first line, line after the last, fields or None, why not parsable or None)
LineSpan = tuple[int, int, Optional[list], Optional[str]]


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


#: Most lines a quoted value is followed over, after bad quoting (or in line mode).
QUOTED_LINES_LIMIT = 10_000
#: How a line-mode error about a quote left open starts.
UNCLOSED_QUOTE = "unclosed quote"


def describe_csv_error(exc: csv.Error, multiline: bool) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        if multiline:
            return f"{UNCLOSED_QUOTE}: the quoted value runs to the end of the file"
        return f"{UNCLOSED_QUOTE}: a quoted value spanning lines needs the multiLine=true option"
    return f"bad CSV quoting ({message})"


def quoted_continuations(lines: list, opened: list, spec: TextSpec) -> tuple[dict, list, dict]:
    """Which lines continue a quoted value (line mode), and which quotes no line closes.

    ``lines`` are consecutive lines (without line breaks) and ``opened`` the
    indices of those that leave a quote open.  Read as one CSV text, the value
    opened on line ``k`` would run on to the line that closes it (or ends it
    with bad quoting): the lines after ``k`` up to that one are not records of
    their own, whatever their field count says (a line inside a quoted value
    may even have the right number of fields, with values from the wrong
    columns).  Every opened line is followed, also one inside another's value:
    where a value ends is ambiguous there, and marking too many lines is safe.

    Returns ``({line: line that opened it}, [openers never closed],
    {opener: line after its value})``; the lines after a quote that no later
    line closes are records (a stray quote).
    """
    found: dict = {}
    never_closed: list = []
    ends: dict = {}
    kwargs = spec.csv_kwargs()
    for k in sorted(opened):
        # A generator, not a slice: each reader reads only as far as its value runs.
        stop = min(len(lines), k + QUOTED_LINES_LIMIT)
        reader = csv.reader((lines[j] for j in range(k, stop)), **kwargs)
        try:
            next(reader)
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                never_closed.append(k)
                continue
        except StopIteration:
            continue
        ends[k] = k + reader.line_num
        for j in range(k + 1, ends[k]):
            found.setdefault(j, k)
    return found, never_closed, ends


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


def iter_csv_lines(lines: Sequence[str], spec: TextSpec) -> Iterator[LineSpan]:
    """Yield ``(first line, end line, fields, error)`` for each record of a whole file.

    ``lines`` are the file's physical lines with their line breaks; a record
    spans lines ``first`` to ``end - 1`` (0-based), so quoted fields may span
    lines.  After bad quoting the csv reader starts afresh on the next line,
    but the bad line may have opened a quoted value that later lines close:
    those lines are one more malformed record, never records of their own (a
    line inside a quoted value may have the right field count, with values
    from the wrong columns).
    """
    kwargs = spec.csv_kwargs()
    position = [0]  # the next line the reader takes; moved on to skip lines

    def source():
        while position[0] < len(lines):
            position[0] += 1
            yield lines[position[0] - 1]

    reader = csv.reader(source(), **kwargs)
    start = 0
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader restarts cleanly on the next line after an error.
            fields, error = None, describe_csv_error(exc, multiline=True)
        end = max(position[0], start + 1)
        yield start, end, fields, error
        if error is not None and not error.startswith(UNCLOSED_QUOTE):
            last = end - 1
            _, alone = parse_csv_line(strip_line_break(lines[last]), spec)
            if alone and alone.startswith(UNCLOSED_QUOTE):
                _, _, ends = quoted_continuations(lines, [last], spec)
                if ends.get(last, 0) > end:
                    inside = ends[last]
                    yield end, inside, None, (
                        "inside a quoted value opened on the line before (after bad quoting)"
                    )
                    position[0] = end = inside
        start = end


def iter_csv_text(text: str, spec: TextSpec) -> Iterator[SplitRecord]:
    """Yield ``(start_line, raw, fields, error)`` for each record of a whole file.

    Quoted fields may span lines.  ``start_line`` is 0-based.
    """
    lines = list(io.StringIO(text, newline=""))
    for first, end, fields, error in iter_csv_lines(lines, spec):
        yield first, strip_line_break("".join(lines[first:end])), fields, error


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def parse_json_line(line: str, spec: TextSpec) -> tuple[Optional[list], Optional[str]]:
    """Extract the declared columns of one JSON object as strings.

    A key given twice makes the record malformed: which value is meant is
    ambiguous (readers disagree), so neither is taken.
    """
    try:
        # Numbers stay as their literal text, so that casting to the declared
        # type (not Python's float) decides whether they are valid.
        obj = json.loads(
            line, parse_float=str, parse_int=str, parse_constant=str,
            object_pairs_hook=_unique_keys,
        )
    except _DuplicateKey as exc:
        key = exc.args[0]
        # Only declared names are quoted: any other key could be data (and PII).
        named = repr(key) if key in spec.names else "an undeclared key"
        return None, f"invalid JSON (duplicate key: {named})"
    except ValueError as exc:
        return None, f"invalid JSON ({exc})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"
    if not isinstance(obj, dict):
        return None, f"a JSON lines record must be an object, not {type(obj).__name__}"
    return [_json_value_as_text(obj.get(name)) for name in spec.names], None


def iter_json_lines(lines: Iterable[str], spec: TextSpec) -> Iterator[LineSpan]:
    """Yield ``(line, line + 1, fields, error)`` for each line of a JSON-lines file."""
    for index, line in enumerate(lines):
        raw = strip_line_break(line)
        if is_blank(raw):
            yield index, index + 1, [], None
        else:
            fields, error = parse_json_line(raw, spec)
            yield index, index + 1, fields, error


def _json_value_as_text(value) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    # Nested objects and arrays: kept as JSON text; they fail to cast to an
    # atomic type and are reported as unparsable.
    return json.dumps(value)


def strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


_DECOMPRESSORS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def decompress(path: str, content: bytes) -> bytes:
    """``content`` decompressed by the file's extension (``.gz``, ``.bz2``, ``.xz``)."""
    for suffix, decompress_bytes in _DECOMPRESSORS.items():
        if path.endswith(suffix):
            return decompress_bytes(content)
    return content


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
        raw = strip_line_break(line)
        if is_blank(raw):
            continue
        if not complete and truncated:
            raise Truncated()
        return parse_csv_line(raw, spec)
    if truncated:
        raise Truncated()
    return None, None
