"""Executor-side record splitting for text sources (CSV and JSON lines).

Runs on the executors (``mapInArrow`` for lines, ``mapInPandas`` for whole
files), so it imports no pyspark and keeps no state beyond one partition.  Each input row (a physical line, or a
whole file in whole-file mode) becomes one output row per *record*, with the
fields as strings; typing and validation happen afterwards in Spark SQL.

Output columns (see :data:`RECORD_SCHEMA`):

``kind``
    :data:`RECORD` for a record, or :data:`SPLIT` for the one summary row
    that ends each Spark split (in whole-file mode, each file).
``source_file``, ``block_start``
    The file and the byte offset of the Spark split the row came from.
``line_in_block``
    0-based physical line, within the split, where the record starts.
``raw``
    The record text as read, without its final line break.
``fields``
    CSV: the parsed fields in file order.  JSON: the values of the declared
    columns in declared order (absent keys are null).  (Headers are read by
    the driver, see :func:`first_record`; the splitters only skip them.)
``n_fields``
    CSV: the number of fields; JSON: null (a JSON object has no field count).
``malformed``
    Why the record (or, on a SPLIT row, the header) could not be split into
    fields, else null.
``split_lines``, ``split_records``
    On SPLIT rows only: physical lines (blank ones included) and records
    (header excluded) in the split; the driver numbers lines and reconciles
    counts from these without a shuffle.
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

import pandas as pd

RECORD, SPLIT = 0, 1

RECORD_SCHEMA = (
    "kind int, source_file string, block_start long, line_in_block long, raw string, "
    "fields array<string>, n_fields int, malformed string, split_lines long, split_records long"
)
_COLUMNS = [c.split()[0] for c in RECORD_SCHEMA.split(", ")]

#: Records per output batch in whole-file mode, so that one large file does not
#: become one huge pandas frame.
_CHUNK_RECORDS = 10_000

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


# ---------------------------------------------------------------- batches


class _RecordColumns:
    """Column-wise buffer for one output frame."""

    def __init__(self):
        self.columns: dict[str, list] = {name: [] for name in _COLUMNS}

    def __len__(self) -> int:
        return len(self.columns["kind"])

    def add_record(self, spec: TextSpec, split: "_Split", line: int, raw, fields, malformed):
        n_fields = len(fields) if fields is not None and spec.format == "csv" else None
        self._add(
            RECORD, split.source_file, split.block_start, line, raw, fields, n_fields, malformed,
            None, None,
        )

    def add_split(self, split: "_Split") -> None:
        self._add(
            SPLIT, split.source_file, split.block_start, None, None,
            split.header, None, split.header_error, split.lines, split.records,
        )

    def _add(self, *values) -> None:
        for name, value in zip(_COLUMNS, values):
            self.columns[name].append(value)

    def to_pandas(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.columns)
        # Nullable integer dtypes: a column of Nones must not become float.
        for name in ("n_fields", "line_in_block", "split_lines", "split_records"):
            frame[name] = frame[name].astype("Int64")
        return frame


class _Split:
    """Running totals of one split (or file): what its SPLIT row reports."""

    def __init__(self, source_file: str, block_start: int, expects_header: bool):
        self.source_file, self.block_start = source_file, block_start
        self.header_pending = expects_header
        self.header: Optional[list] = None
        self.header_error: Optional[str] = None
        self.lines = 0
        self.records = 0

    @property
    def key(self) -> tuple:
        return self.source_file, self.block_start

    def take_header(self, fields: Optional[list], error: Optional[str]) -> None:
        self.header, self.header_error, self.header_pending = fields, error, False


def split_files(batches: Iterator[pd.DataFrame], spec: TextSpec) -> Iterator[pd.DataFrame]:
    """mapInPandas body for whole-file mode: input columns ``path`` and ``content`` (bytes).

    Each file is decoded and split as a whole, so quoted values may span lines
    and line numbers are exact.
    """
    _allow_large_fields()
    iter_text = iter_csv_text if spec.format == "csv" else iter_json_text
    for batch in batches:
        for path, content in zip(batch["path"], batch["content"]):
            split, out = _Split(path, 0, spec.header), _RecordColumns()
            text = decode(path, content, spec.encoding)
            for start_line, raw, fields, error in iter_text(text, spec):
                if error is None and is_blank(raw):
                    continue
                if split.header_pending:
                    split.take_header(fields, error)
                    continue
                split.records += 1
                out.add_record(spec, split, start_line, raw, fields, error)
                if len(out) >= _CHUNK_RECORDS:
                    yield out.to_pandas()
                    out = _RecordColumns()
            out.add_split(split)  # line numbers need no offsets here: lines stays 0
            yield out.to_pandas()


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


# ------------------------------------------------------------- arrow lines

#: Arrow types of :data:`RECORD_SCHEMA`, in order.
_ARROW_FIELDS = [
    ("kind", "int32"), ("source_file", "string"), ("block_start", "int64"),
    ("line_in_block", "int64"), ("raw", "string"), ("fields", "list<string>"),
    ("n_fields", "int32"), ("malformed", "string"), ("split_lines", "int64"),
    ("split_records", "int64"),
]


def _arrow_schema():
    import pyarrow as pa

    types = {
        "int32": pa.int32(), "int64": pa.int64(), "string": pa.string(),
        "list<string>": pa.list_(pa.string()),
    }
    return pa.schema([(name, types[kind]) for name, kind in _ARROW_FIELDS])


def _fast_splittable(values, spec: TextSpec):
    """Mask of lines a plain split by the delimiter parses exactly as the csv module does.

    A line with no quote and no escape character has no quoting to interpret:
    its fields are the text between delimiters.  Every other line (and every
    JSON line) goes through Python's parser, which also explains failures.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if spec.format != "csv":
        return pa.array([False] * len(values), pa.bool_())
    special = [c for c in (spec.quotechar, spec.escapechar) if c is not None]
    if not special:
        return pa.array([True] * len(values), pa.bool_())
    has_special = pc.match_substring(values, special[0])
    for char in special[1:]:
        has_special = pc.or_(has_special, pc.match_substring(values, char))
    return pc.invert(has_special)


def split_lines_arrow(batches, spec: TextSpec):
    """mapInArrow body for line mode: input ``value``, ``source_file``, ``block_start``.

    Output as :data:`RECORD_SCHEMA`, built column-wise with Arrow: lines
    without quoting are split by the delimiter in C++ (``split_pattern``),
    the rest are parsed one by one with the csv module (JSON lines: all of
    them with the json module).  The raw text is passed through untouched.
    Headers are read by the driver, so here the header line is only skipped.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    _allow_large_fields()
    schema = _arrow_schema()
    parse_line = parse_csv_line if spec.format == "csv" else parse_json_line
    split: Optional[_Split] = None
    for batch in batches:
        values = batch.column(0)
        files = batch.column(1)
        starts = batch.column(2).to_numpy(zero_copy_only=False)
        file_codes = pc.dictionary_encode(files).indices.to_numpy(zero_copy_only=False)
        change = np.flatnonzero((starts[1:] != starts[:-1]) | (file_codes[1:] != file_codes[:-1]))
        bounds = [0, *(change + 1).tolist(), len(values)]
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo == hi:
                continue
            key = (files[lo].as_py(), int(starts[lo]))
            if split is None or key != split.key:
                if split is not None:
                    out.append(_split_batch(split, schema))
                split = _Split(key[0], key[1], spec.header and key[1] == 0)
            records = _split_segment(values.slice(lo, hi - lo), split, spec, parse_line, np, pa, pc)
            if records is not None:
                out.append(records.cast(schema) if records.schema != schema else records)
        for piece in out:
            yield piece
    if split is not None:
        yield _split_batch(split, schema)


def _split_segment(values, split: "_Split", spec: TextSpec, parse_line, np, pa, pc):
    """The RECORD rows of consecutive lines of one split; updates the split's totals."""
    n = len(values)
    first_line = split.lines
    split.lines += n
    if first_line == 0 and split.block_start == 0 and n and values[0].as_py().startswith(_BOM):
        values = pa.concat_arrays([pa.array([values[0].as_py()[1:]]), values.slice(1)])
    blank = pc.or_(pc.equal(pc.utf8_length(values), 0), pc.utf8_is_space(values))
    keep = np.flatnonzero(~blank.to_numpy(zero_copy_only=False))
    if split.header_pending and len(keep):
        split.header_pending = False  # the driver parsed it; here it is only skipped
        keep = keep[1:]
    if not len(keep):
        return None
    split.records += len(keep)
    lines = pc.take(values, pa.array(keep))
    fast = _fast_splittable(lines, spec).to_numpy(zero_copy_only=False)
    fields = pc.split_pattern(lines, spec.delimiter) if spec.format == "csv" else None
    malformed = pa.nulls(len(lines), pa.string())
    slow = np.flatnonzero(~fast)
    if len(slow):
        parsed, errors = [], []
        for text in pc.take(lines, pa.array(slow)).to_pylist():
            got, error = parse_line(text, spec)
            parsed.append(got)
            errors.append(error)
        slow_fields = pa.array(parsed, pa.list_(pa.string()))
        if fields is None:
            fields, malformed = slow_fields, pa.array(errors, pa.string())
        else:
            # Scatter the slow rows back into place: take from [fast ++ slow].
            order = np.arange(len(lines))
            order[slow] = len(lines) + np.arange(len(slow))
            fields = pc.take(pa.concat_arrays([fields, slow_fields]), pa.array(order))
            all_errors = [None] * len(lines)
            for i, error in zip(slow.tolist(), errors):
                all_errors[i] = error
            malformed = pa.array(all_errors, pa.string())
    count = len(lines)
    n_fields = (
        pc.cast(pc.list_value_length(fields), pa.int32())
        if spec.format == "csv"
        else pa.nulls(count, pa.int32())
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.full(count, RECORD, dtype=np.int32)),
            pa.array([split.source_file] * count, pa.string()),
            pa.array(np.full(count, split.block_start, dtype=np.int64)),
            pa.array(first_line + keep, pa.int64()),
            lines,
            fields,
            n_fields,
            malformed,
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.int64()),
        ],
        names=[name for name, _ in _ARROW_FIELDS],
    )


def _split_batch(split: "_Split", schema):
    import pyarrow as pa

    row = {
        "kind": [SPLIT], "source_file": [split.source_file], "block_start": [split.block_start],
        "line_in_block": [None], "raw": [None], "fields": [None], "n_fields": [None],
        "malformed": [None], "split_lines": [split.lines], "split_records": [split.records],
    }
    return pa.RecordBatch.from_pydict(row, schema=schema)


def first_record(start: bytes, spec: TextSpec, whole_file: bool) -> tuple[Optional[list], Optional[str]]:
    """The header: the first non-blank record in ``start`` (the first bytes of a file).

    Returns ``(fields, None)``, ``(None, why it is malformed)``, or
    ``(None, None)`` for a file with no records.  ``start`` may end mid-file;
    a header longer than it is reported as malformed.
    """
    encoding = spec.encoding if whole_file else "utf-8"
    codec = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    # An incremental decoder: the last character may be cut in half by the byte limit.
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(start, final=False)
    if text.startswith(_BOM):
        text = text[1:]
    if whole_file:
        for _, raw, fields, error in iter_csv_text(text, spec):
            if error is None and is_blank(raw):
                continue
            return fields, error
        return None, None
    for line in io.StringIO(text, newline=""):
        complete = line.endswith(("\n", "\r"))
        raw = _strip_line_break(line)
        if is_blank(raw):
            continue
        if not complete and len(start) >= 1 << 20:
            return None, "the first line is longer than 1 MiB"
        return parse_csv_line(raw, spec)
    return None, None
