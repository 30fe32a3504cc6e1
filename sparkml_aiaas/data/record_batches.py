"""Executor-side: text in, Arrow record batches out (the bodies of ``mapInArrow``).

No pyspark here.  Each output row is a record, or the one summary row
(``kind`` = :data:`SPLIT`) that ends each Spark split.  Columns (see
:func:`record_schema`):

``kind``, ``source_file``, ``block_start``, ``line_in_block``
    What the row is, and where: the split's file and byte offset, and the
    0-based physical line within the split where the record starts.
``raw``
    The record text as read, without its final line break.
``n_fields``, ``n_expected``
    CSV: fields found, and fields the file's header (or the schema) says a
    record has.  Null for JSON (an object has no field count).
``malformed``
    Why the record could not be split into fields, else null.
``split_lines``, ``split_records``
    SPLIT rows only: physical lines (blank ones included) and records
    (header excluded) in the split; the driver numbers lines and reconciles
    counts from these, without a shuffle.
``f0`` .. ``f<n-1>``
    The value of each *declared* column, as text, already taken from its
    position in the file (files may order their columns differently); null
    past the end of a short record or for a column the file lacks.

Line mode splits lines with no quote or escape character in Arrow's C++ CSV
reader with quoting off (exactly a split at each delimiter); lines with
quoting go through Python's :mod:`csv` (strict, so bad quoting is reported),
JSON lines through :mod:`json`.  Row order in the output is not the input's:
nothing downstream depends on it (line numbers travel with the rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from sparkml_aiaas.data import records as R
from sparkml_aiaas.data.records import RECORD, SPLIT, TextSpec

__all__ = ["Layout", "record_schema", "split_files", "split_lines"]

_FIXED = [
    ("kind", pa.int32(), "int"),
    ("source_file", pa.string(), "string"),
    ("block_start", pa.int64(), "long"),
    ("line_in_block", pa.int64(), "long"),
    ("raw", pa.string(), "string"),
    ("n_fields", pa.int32(), "int"),
    ("n_expected", pa.int32(), "int"),
    ("malformed", pa.string(), "string"),
    ("split_lines", pa.int64(), "long"),
    ("split_records", pa.int64(), "long"),
]

#: Records per output batch in whole-file mode, so that one large file does not
#: become one huge batch.
_CHUNK_RECORDS = 10_000


def value_column(i: int) -> str:
    return f"f{i}"


def record_schema(n_columns: int) -> tuple[str, pa.Schema]:
    """The output schema for ``n_columns`` declared columns, as Spark DDL and as Arrow."""
    names = [(name, arrow, ddl) for name, arrow, ddl in _FIXED] + [
        (value_column(i), pa.string(), "string") for i in range(n_columns)
    ]
    ddl = ", ".join(f"{name} {kind}" for name, _, kind in names)
    return ddl, pa.schema([(name, arrow) for name, arrow, _ in names])


@dataclass(frozen=True)
class Layout:
    """Where each declared column is in each file, and how many fields a record has.

    ``orders[file]`` gives, per declared column, its 0-based position in the
    file's records (-1: the file lacks it); ``widths[file]`` the field count.
    Files not listed (no header expected, or an empty file) use the defaults:
    the declared order and as many fields as declared columns.
    """

    n_columns: int
    orders: dict = field(default_factory=dict)
    widths: dict = field(default_factory=dict)

    @property
    def default_order(self) -> tuple:
        return tuple(range(self.n_columns))

    def order(self, source_file: str) -> tuple:
        return self.orders.get(source_file, self.default_order)

    def width(self, source_file: str) -> int:
        return self.widths.get(source_file, self.n_columns)


class _Split:
    """Running totals of one split (or file): what its SPLIT row reports."""

    def __init__(self, source_file: str, block_start: int, expects_header: bool):
        self.source_file, self.block_start = source_file, block_start
        self.header_pending = expects_header
        self.lines = 0
        self.records = 0

    @property
    def key(self) -> tuple:
        return self.source_file, self.block_start


class _Output:
    """Builds record batches of one schema."""

    def __init__(self, spec: TextSpec, layout: Layout):
        self.spec, self.layout = spec, layout
        self.schema = record_schema(layout.n_columns)[1]

    def split_row(self, split: _Split) -> pa.RecordBatch:
        row = {name: [None] for name in self.schema.names}
        row.update(
            kind=[SPLIT], source_file=[split.source_file], block_start=[split.block_start],
            split_lines=[split.lines], split_records=[split.records],
        )
        return pa.RecordBatch.from_pydict(row, schema=self.schema)

    def records(self, split: _Split, lines, raws, n_fields, values, malformed) -> pa.RecordBatch:
        """A batch of records: ``lines`` (numpy), ``raws`` (Arrow), ``values`` per declared column."""
        count = len(lines)
        is_csv = self.spec.format == "csv"
        width = self.layout.width(split.source_file) if is_csv else None
        columns = [
            pa.array(np.full(count, RECORD, dtype=np.int32)),
            pa.array([split.source_file] * count, pa.string()),
            pa.array(np.full(count, split.block_start, dtype=np.int64)),
            pa.array(lines, pa.int64()),
            raws,
            n_fields if is_csv else pa.nulls(count, pa.int32()),
            pa.array(np.full(count, width, dtype=np.int32)) if is_csv else pa.nulls(count, pa.int32()),
            malformed if malformed is not None else pa.nulls(count, pa.string()),
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.int64()),
            *values,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def python_records(self, split: _Split, lines, raws, parsed, errors) -> pa.RecordBatch:
        """Records parsed in Python: ``parsed`` holds field lists (or None when malformed)."""
        if self.spec.format == "csv":
            order = self.layout.order(split.source_file)
        else:
            order = self.layout.default_order  # JSON values arrive in declared order
        values = [
            pa.array(
                [
                    f[p] if f is not None and 0 <= p < len(f) else None
                    for f in parsed
                ],
                pa.string(),
            )
            for p in order
        ]
        n_fields = pa.array([None if f is None else len(f) for f in parsed], pa.int32())
        return self.records(
            split, np.asarray(lines, dtype=np.int64), pa.array(raws, pa.string()), n_fields,
            values, pa.array(errors, pa.string()),
        )


# -------------------------------------------------------------- line mode


def split_lines(batches: Iterator[pa.RecordBatch], spec: TextSpec, layout: Layout):
    """mapInArrow body for line mode: input columns ``value``, ``source_file``, ``block_start``.

    Rows of one Spark split arrive contiguously and in file order, so a line
    counter restarted at each new ``(file, split)`` gives the line within the
    split.  Only the split at offset 0 holds the file's header (read by the
    driver; here it is only skipped).
    """
    R._allow_large_fields()
    out = _Output(spec, layout)
    split: Optional[_Split] = None
    for batch in batches:
        values, files = batch.column(0), batch.column(1)
        starts = batch.column(2).to_numpy(zero_copy_only=False)
        file_codes = pc.dictionary_encode(files).indices.to_numpy(zero_copy_only=False)
        change = np.flatnonzero((starts[1:] != starts[:-1]) | (file_codes[1:] != file_codes[:-1]))
        bounds = [0, *(change + 1).tolist(), len(values)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo == hi:
                continue
            key = (files[lo].as_py(), int(starts[lo]))
            if split is None or key != split.key:
                if split is not None:
                    yield out.split_row(split)
                split = _Split(key[0], key[1], spec.header and key[1] == 0)
            yield from _segment_records(values.slice(lo, hi - lo), split, out)
    if split is not None:
        yield out.split_row(split)


def _segment_records(values: pa.Array, split: _Split, out: _Output):
    """Record batches for consecutive lines of one split; updates the split's totals."""
    spec = out.spec
    first_line = split.lines
    split.lines += len(values)
    if first_line == 0 and split.block_start == 0 and len(values):
        head = values[0].as_py()
        if head.startswith(R._BOM):
            values = pa.concat_arrays([pa.array([head[1:]], pa.string()), values.slice(1)])
    blank = pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))
    keep = np.flatnonzero(~blank.to_numpy(zero_copy_only=False))
    if split.header_pending and len(keep):
        split.header_pending = False
        keep = keep[1:]
    if not len(keep):
        return
    split.records += len(keep)
    lines = values if len(keep) == len(values) else pc.take(values, pa.array(keep))
    line_numbers = first_line + keep
    if spec.format != "csv":
        texts = lines.to_pylist()
        parsed, errors = [], []
        for text in texts:
            got, error = R.parse_json_line(text, spec)
            parsed.append(got)
            errors.append(error)
        yield out.python_records(split, line_numbers, texts, parsed, errors)
        return
    special = [c for c in (spec.quotechar, spec.escapechar) if c is not None]
    quoted = None
    for char in special:
        found = pc.match_substring(lines, char)
        quoted = found if quoted is None else pc.or_(quoted, found)
    quoted_mask = (
        np.zeros(len(lines), dtype=bool) if quoted is None else quoted.to_numpy(zero_copy_only=False)
    )
    if quoted_mask.any():
        slow = np.flatnonzero(quoted_mask)
        texts = pc.take(lines, pa.array(slow)).to_pylist()
        parsed, errors = R.parse_csv_lines(texts, spec)
        yield out.python_records(split, line_numbers[slow], texts, parsed, errors)
        fast = np.flatnonzero(~quoted_mask)
        if not len(fast):
            return
        lines, line_numbers = pc.take(lines, pa.array(fast)), line_numbers[fast]
    yield from _unquoted_records(lines, line_numbers, split, out)


def _unquoted_records(lines: pa.Array, line_numbers: np.ndarray, split: _Split, out: _Output):
    """Lines without quoting: Arrow's CSV reader with quoting off splits them at each delimiter.

    Lines whose field count is not the file's go to the invalid-row handler
    and are split in Python (still exactly at each delimiter).
    """
    spec = out.spec
    width = out.layout.width(split.source_file)
    names = [f"c{i}" for i in range(width)]
    wrong_count: list = []  # 0-based indices into ``lines``

    def on_invalid_row(row) -> str:
        wrong_count.append(row.number - 1)
        return "skip"

    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
    table = pa_csv.read_csv(
        pa.BufferReader(text[0].as_buffer()),
        read_options=pa_csv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 30),
        parse_options=pa_csv.ParseOptions(
            delimiter=spec.delimiter, quote_char=False, escape_char=False,
            newlines_in_values=False, ignore_empty_lines=False, invalid_row_handler=on_invalid_row,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=False, quoted_strings_can_be_null=False,
        ),
    )
    order = out.layout.order(split.source_file)
    if wrong_count:
        bad = np.asarray(wrong_count, dtype=np.int64)
        texts = pc.take(lines, pa.array(bad)).to_pylist()
        parsed = [t.split(spec.delimiter) for t in texts]
        yield out.python_records(split, line_numbers[bad], texts, parsed, [None] * len(texts))
        good = np.setdiff1d(np.arange(len(lines)), bad, assume_unique=True)
        lines, line_numbers = pc.take(lines, pa.array(good)), line_numbers[good]
    if not len(lines):
        return
    if table.num_rows != len(lines):  # the reader and we disagree on what a line is: a bug
        raise RuntimeError(
            f"CSV fast path read {table.num_rows} rows from {len(lines)} lines of "
            f"{split.source_file}"
        )
    null_column = pa.nulls(len(lines), pa.string())
    values = [
        table.column(p).combine_chunks() if p >= 0 else null_column for p in order
    ]
    n_fields = pa.array(np.full(len(lines), width, dtype=np.int32))
    yield out.records(split, line_numbers, lines, n_fields, values, None)


# --------------------------------------------------------- whole-file mode


def split_files(batches: Iterator[pa.RecordBatch], spec: TextSpec, layout: Layout):
    """mapInArrow body for whole-file mode: input columns ``path`` and ``content`` (bytes).

    Each file is decoded and split as a whole, so quoted values may span lines
    and line numbers are exact.
    """
    R._allow_large_fields()
    out = _Output(spec, layout)
    iter_text = R.iter_csv_text if spec.format == "csv" else R.iter_json_text
    for batch in batches:
        paths, contents = batch.column(0), batch.column(1)
        for i in range(batch.num_rows):
            path = paths[i].as_py()
            split = _Split(path, 0, spec.header)
            text = R.decode(path, contents[i].as_py(), spec.encoding)
            chunk: tuple = ([], [], [], [])
            for start_line, raw, fields, error in iter_text(text, spec):
                if error is None and R.is_blank(raw):
                    continue
                if split.header_pending:
                    split.header_pending = False  # read by the driver
                    continue
                split.records += 1
                for column, value in zip(chunk, (start_line, raw, fields, error)):
                    column.append(value)
                if len(chunk[0]) >= _CHUNK_RECORDS:
                    yield out.python_records(split, *chunk)
                    chunk = ([], [], [], [])
            if chunk[0]:
                yield out.python_records(split, *chunk)
            yield out.split_row(split)  # line numbers need no offsets here: lines stays 0
