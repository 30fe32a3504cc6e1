"""Executor-side: text in, Arrow record batches out (the bodies of ``mapInArrow``).

No pyspark here.  Each output row is a record, or the one summary row
(``kind`` = :data:`SPLIT`) that ends each Spark split.  Columns (see
:func:`record_schema`):

``kind``, ``source_file``, ``block_start``, ``line_in_block``
    What the row is, and where: the split's file and byte offset, and the
    0-based physical line within the split where the record starts.
``byte_in_block``, ``byte_length``
    Where the record's bytes are: the offset from the start of the split's
    first line (line mode; whole-file mode: from the start of the file), and
    the length, without the final line break.
``raw``
    The record text as read, without its final line break; for a record
    whose bytes are invalid in the encoding, the bytes with the invalid ones
    written as ``\\xNN`` (Python's ``backslashreplace``).
``n_fields``, ``n_expected``
    CSV: fields found, and fields the file's header (or the schema) says a
    record has.  Null for JSON (an object has no field count).
``malformed``
    Why the record could not be split into fields, else null.
``bad_encoding``
    Why the record's bytes are invalid in the declared encoding, else null.
``split_lines``, ``split_records``, ``split_blank``, ``split_bytes``
    SPLIT rows only: physical lines (blank ones included), records (header
    excluded), blank lines, and bytes (line breaks included) of the split;
    the driver numbers lines and bytes and reconciles counts from these,
    without a shuffle.
``f0`` .. ``f<n-1>``
    The value of each *declared* column, as text, already taken from its
    position in the file (files may order their columns differently); null
    past the end of a short record or for a column the file lacks.

Line mode receives each line as bytes (Spark's text source cut at LF only, so
that every byte of the file is accounted for).  CR LF and lone CR line
breaks are handled here; UTF-8 is validated by Arrow for a whole batch at
once, and only a batch that fails is checked line by line.  Lines with no
quote or escape character are split in Arrow's C++ CSV reader with quoting
off (exactly a split at each delimiter); lines with quoting go through
Python's :mod:`csv` (strict, so bad quoting is reported), JSON lines through
:mod:`json`.  Whole-file mode cuts and decodes files with
:mod:`sparkml_aiaas.data.byte_lines`.  Row order in the output is not the
input's: nothing downstream depends on it (line numbers travel with the rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from sparkml_aiaas.data import byte_lines as BL
from sparkml_aiaas.data import records as R
from sparkml_aiaas.data.records import RECORD, SPLIT, TextSpec

__all__ = ["Layout", "record_schema", "split_files", "split_lines"]

_FIXED = [
    ("kind", pa.int32(), "int"),
    ("source_file", pa.string(), "string"),
    ("block_start", pa.int64(), "long"),
    ("line_in_block", pa.int64(), "long"),
    ("byte_in_block", pa.int64(), "long"),
    ("byte_length", pa.int64(), "long"),
    ("raw", pa.string(), "string"),
    ("n_fields", pa.int32(), "int"),
    ("n_expected", pa.int32(), "int"),
    ("malformed", pa.string(), "string"),
    ("bad_encoding", pa.string(), "string"),
    ("split_lines", pa.int64(), "long"),
    ("split_records", pa.int64(), "long"),
    ("split_blank", pa.int64(), "long"),
    ("split_bytes", pa.int64(), "long"),
]

#: Records per output batch in whole-file mode, so that one large file does not
#: become one huge batch.
_CHUNK_RECORDS = 10_000
_UTF8_BOM = b"\xef\xbb\xbf"


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
    ``bom_files`` (line mode) are the files that start with a UTF-8
    byte-order mark, which Spark's line reader drops: their byte offsets
    count it back.
    """

    n_columns: int
    orders: dict = field(default_factory=dict)
    widths: dict = field(default_factory=dict)
    bom_files: frozenset = frozenset()

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
        self.blank = 0
        self.bytes = 0

    @property
    def key(self) -> tuple:
        return self.source_file, self.block_start


@dataclass
class _Where:
    """Where records are: 0-based line in the split, byte offset and byte length (numpy)."""

    lines: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    def take(self, index: np.ndarray) -> "_Where":
        return _Where(self.lines[index], self.starts[index], self.lengths[index])


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
            split_blank=[split.blank], split_bytes=[split.bytes],
        )
        return pa.RecordBatch.from_pydict(row, schema=self.schema)

    def records(
        self, split: _Split, where: _Where, raws, n_fields, values, malformed, bad_encoding=None
    ) -> pa.RecordBatch:
        """A batch of records: ``raws`` (Arrow), ``values`` per declared column."""
        count = len(where.lines)
        is_csv = self.spec.format == "csv"
        width = self.layout.width(split.source_file) if is_csv else None
        columns = [
            pa.array(np.full(count, RECORD, dtype=np.int32)),
            pa.array([split.source_file] * count, pa.string()),
            pa.array(np.full(count, split.block_start, dtype=np.int64)),
            pa.array(where.lines, pa.int64()),
            pa.array(where.starts, pa.int64()),
            pa.array(where.lengths, pa.int64()),
            raws,
            n_fields if is_csv else pa.nulls(count, pa.int32()),
            pa.array(np.full(count, width, dtype=np.int32)) if is_csv else pa.nulls(count, pa.int32()),
            malformed if malformed is not None else pa.nulls(count, pa.string()),
            bad_encoding if bad_encoding is not None else pa.nulls(count, pa.string()),
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.int64()),
            *values,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def python_records(
        self, split: _Split, where: _Where, raws, parsed, errors, bad_encoding=None
    ) -> pa.RecordBatch:
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
            split, where, pa.array(raws, pa.string()), n_fields, values,
            pa.array(errors, pa.string()),
            None if bad_encoding is None else pa.array(bad_encoding, pa.string()),
        )

    def undecodable_records(self, split: _Split, where: _Where, raws, messages) -> pa.RecordBatch:
        """Records whose bytes are invalid in the encoding: no fields, only the escaped bytes."""
        none = [None] * len(raws)
        return self.python_records(split, where, raws, none, none, bad_encoding=messages)


def undecodable_message(raw: bytes, codec_name: str, declared: str) -> str:
    """Why a record's bytes are rejected; says where, never what (the bytes may be PII)."""
    offset = BL.first_invalid_offset(raw, codec_name)
    return (
        f"bytes not valid {declared} (first undecodable byte at offset {offset} of the record; "
        "_raw shows undecodable bytes as \\xNN)"
    )


# -------------------------------------------------------------- line mode


def split_lines(batches: Iterator[pa.RecordBatch], spec: TextSpec, layout: Layout):
    """mapInArrow body for line mode: columns ``value`` (bytes), ``source_file``, ``block_start``.

    Rows of one Spark split arrive contiguously and in file order, so a line
    counter restarted at each new ``(file, split)`` gives the line within the
    split, and a byte counter the offset from the split's first line.  Only
    the split at offset 0 holds the file's header (read by the driver; here
    it is only skipped).  Lines from a quote still open at the end of an
    Arrow batch are held back and read with the next batch of the split (up
    to :data:`_HELD_LINES`), so that the lines inside a quoted value are
    recognised whatever the batch boundaries.
    """
    R._allow_large_fields()
    out = _Output(spec, layout)
    encoding = "ascii" if BL.codec_for(spec.encoding).name == "ascii" else "utf-8"
    split: Optional[_Split] = None
    held: Optional[_Held] = None
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
                    yield from _flush(held, split, out, encoding)
                    held = None
                    yield out.split_row(split)
                split = _Split(key[0], key[1], spec.header and key[1] == 0)
                if key[1] == 0 and key[0] in layout.bom_files:
                    split.bytes = len(_UTF8_BOM)  # dropped by Hadoop's line reader
            lines, line_starts = _spark_lines(values.slice(lo, hi - lo), split)
            if held is not None:
                lines = pa.concat_arrays([held.lines, lines])
                line_starts = np.concatenate([held.starts, line_starts])
            held = yield from _segment_records(lines, line_starts, split, out, encoding, True)
    if split is not None:
        yield from _flush(held, split, out, encoding)
        yield out.split_row(split)


#: Most lines held back while a quote opened near the end of a batch is still
#: open; past it the quote is taken for a stray one.
_HELD_LINES = R.QUOTED_LINES_LIMIT


@dataclass
class _Held:
    lines: pa.Array
    starts: np.ndarray


def _flush(held: Optional[_Held], split: _Split, out: _Output, encoding: str):
    if held is not None:
        yield from _segment_records(held.lines, held.starts, split, out, encoding, False)


def _spark_lines(values: pa.Array, split: _Split) -> tuple[pa.Array, np.ndarray]:
    """Spark's lines as physical lines and their byte offsets in the split; counts the bytes."""
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    # Spark cut the lines at LF, so each is followed by exactly one byte (but maybe the last).
    steps = lengths + 1
    starts = split.bytes + np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64)
    split.bytes += int(steps.sum())
    return _physical_lines(values, starts)


def _physical_lines(values: pa.Array, starts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Spark's lines (cut at LF) as physical lines: CR LF and lone CR end lines too."""
    if not pc.any(pc.match_substring(values, "\r")).as_py():
        return values, starts
    trimmed = pc.if_else(pc.ends_with(values, "\r"), pc.binary_slice(values, 0, -1), values)
    if not pc.any(pc.match_substring(trimmed, "\r")).as_py():
        return trimmed, starts
    # A CR inside a line (files with CR-only line breaks): rare, cut in Python.
    pieces, piece_starts = [], []
    for value, start in zip(trimmed.to_pylist(), starts.tolist()):
        for part in value.split(b"\r"):
            pieces.append(part)
            piece_starts.append(start)
            start += len(part) + 1
    return pa.array(pieces, pa.binary()), np.asarray(piece_starts, dtype=np.int64)


def _decoded(values: pa.Array, encoding: str) -> tuple[pa.Array, Optional[np.ndarray]]:
    """The lines as an Arrow string array, and which are undecodable (None: all decode).

    Arrow validates UTF-8 for the whole batch in C++; only a batch that fails
    is checked line by line in Python.  ASCII also refuses bytes above 0x7F.
    An undecodable line's text has U+FFFD for its bad bytes: it keeps its
    quotes (which tell where quoted values end) and is never blank; the
    record itself is rebuilt from the bytes.
    """
    texts = values.view(pa.string())
    bad = None
    try:
        texts.validate(full=True)
    except pa.ArrowInvalid:
        raws = values.to_pylist()
        bad = np.array([not _decodes(raw, "utf-8") for raw in raws], dtype=bool)
        texts = pa.array([raw.decode("utf-8", errors="replace") for raw in raws], pa.string())
    if encoding == "ascii":
        non_ascii = ~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
        bad = non_ascii if bad is None else bad | non_ascii
    if bad is None or not bad.any():
        return texts, None
    return texts, bad


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _segment_records(
    values: pa.Array, starts: np.ndarray, split: _Split, out: _Output, encoding: str,
    may_hold: bool,
):
    """Record batches for consecutive physical lines of one split; updates the split's totals.

    Each kept line is emitted once, by the first of: undecodable bytes,
    inside a quoted value opened on an earlier line, quoting (Python's csv),
    the Arrow fast path.  With ``may_hold``, lines from a quote that is still
    open at the end are not read but returned (a :class:`_Held`), to be read
    with the next lines of the split; otherwise returns None.
    """
    spec = out.spec
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    texts, bad = _decoded(values, encoding)
    blank = (lengths == 0) | pc.utf8_is_space(texts).to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(~blank)
    header = bool(split.header_pending and len(keep))
    if header:
        keep = keep[1:]
    lines = texts if len(keep) == len(texts) else pc.take(texts, pa.array(keep))
    quoted_mask = parsed = errors = None
    continued: dict = {}
    if spec.format == "csv" and len(keep):
        quoted = None
        for char in (c for c in (spec.quotechar, spec.escapechar) if c is not None):
            found = pc.match_substring(lines, char)
            quoted = found if quoted is None else pc.or_(quoted, found)
        if quoted is not None and pc.any(quoted).as_py():
            quoted_mask = quoted.to_numpy(zero_copy_only=False)
            slow = np.flatnonzero(quoted_mask)
            parsed, errors = R.parse_csv_lines(pc.take(lines, pa.array(slow)).to_pylist(), spec)
            opened = [int(slow[j]) for j, e in enumerate(errors)
                      if e and e.startswith(R.UNCLOSED_QUOTE)]
            if opened:
                # Undecodable lines take part: their quotes may close a value.
                continued, still_open, ends = R.quoted_continuations(
                    lines.to_pylist(), opened, spec
                )
                held_from = _held_from(still_open, ends, len(lines)) if may_hold else None
                if held_from is not None:
                    cut = int(keep[held_from])
                    held = _Held(values.slice(cut), starts[cut:])
                    if cut:
                        yield from _segment_records(
                            values.slice(0, cut), starts[:cut], split, out, encoding, False
                        )
                    return held
    # From here on the lines are read: count them.
    first_line = split.lines
    split.lines += len(values)
    split.blank += int(blank.sum())
    if header:
        split.header_pending = False
    if not len(keep):
        return None
    split.records += len(keep)
    where = _Where(first_line + np.arange(len(values), dtype=np.int64), starts, lengths).take(keep)
    done = np.zeros(len(keep), dtype=bool) if bad is None else bad[keep]
    if done.any():
        undecodable = np.flatnonzero(done)
        raws = [values[int(keep[i])].as_py() for i in undecodable]
        yield out.undecodable_records(
            split, where.take(undecodable),
            [BL.escaped(raw, encoding) for raw in raws],
            [undecodable_message(raw, encoding, spec.encoding) for raw in raws],
        )
    if spec.format != "csv":
        todo = np.flatnonzero(~done)
        if len(todo):
            texts_py = pc.take(lines, pa.array(todo)).to_pylist()
            parsed, errors = [], []
            for text in texts_py:
                got, error = R.parse_json_line(text, spec)
                parsed.append(got)
                errors.append(error)
            yield out.python_records(split, where.take(todo), texts_py, parsed, errors)
        return None
    if quoted_mask is not None:
        slow = np.flatnonzero(quoted_mask)
        for j, i in enumerate(slow.tolist()):
            if i in continued:
                parsed[j], errors[j] = None, _continuation_message(i - continued[i])
        todo = ~done[slow]
        if todo.any():
            texts_py = pc.take(lines, pa.array(slow[todo])).to_pylist()
            yield out.python_records(
                split, where.take(slow[todo]), texts_py,
                [f for f, t in zip(parsed, todo) if t], [e for e, t in zip(errors, todo) if t],
            )
        done[slow] = True
        if continued:
            inside = np.flatnonzero(~done & np.isin(np.arange(len(lines)), list(continued)))
            if len(inside):
                texts_py = pc.take(lines, pa.array(inside)).to_pylist()
                messages = [_continuation_message(int(i) - continued[int(i)]) for i in inside]
                yield out.python_records(
                    split, where.take(inside), texts_py, [None] * len(inside), messages
                )
                done[inside] = True
    if done.any():
        fast = np.flatnonzero(~done)
        if not len(fast):
            return None
        lines, where = pc.take(lines, pa.array(fast)), where.take(fast)
    yield from _unquoted_records(lines, where, split, out)
    return None


def _held_from(still_open: list, ends: dict, n_lines: int) -> Optional[int]:
    """The first line to hold back: a quote still open at the end, and any value spanning it."""
    held = next((k for k in still_open if n_lines - k <= _HELD_LINES), None)
    if held is None:
        return None
    moved = True
    while moved:  # a value opened earlier that runs past the cut is held back too
        moved = False
        for k, end in ends.items():
            if k < held < end:
                held, moved = k, True
    return held if n_lines - held <= _HELD_LINES else None


def _continuation_message(lines_above: int) -> str:
    return (
        f"inside a quoted value opened {lines_above} line(s) above (a quoted value spanning "
        "lines needs the multiLine=true option)"
    )


def _unquoted_records(lines: pa.Array, where: _Where, split: _Split, out: _Output):
    """Lines without quoting: Arrow's CSV reader with quoting off splits them at each delimiter.

    Lines whose field count is not the file's go to the invalid-row handler
    and are split in Python (still exactly at each delimiter).
    """
    spec = out.spec
    # Arrow's reader drops a byte-order mark at the start of its input: leading lines
    # that start with U+FEFF are split in Python instead, so no character is lost.
    leading = pc.starts_with(lines, "\ufeff").to_numpy(zero_copy_only=False)
    marked = int(np.argmin(leading)) if not leading.all() else len(leading)
    if marked:
        texts = lines.slice(0, marked).to_pylist()
        parsed = [t.split(spec.delimiter) for t in texts]
        head = np.arange(marked)
        yield out.python_records(split, where.take(head), texts, parsed, [None] * marked)
        if marked == len(lines):
            return
        lines, where = lines.slice(marked), where.take(np.arange(marked, len(leading)))
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
        yield out.python_records(split, where.take(bad), texts, parsed, [None] * len(texts))
        good = np.setdiff1d(np.arange(len(lines)), bad, assume_unique=True)
        lines, where = pc.take(lines, pa.array(good)), where.take(good)
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
    yield out.records(split, where, lines, n_fields, values, None)


# --------------------------------------------------------- whole-file mode


class _Chunk:
    """Records of one file collected for the next output batch."""

    def __init__(self):
        self.lines, self.starts, self.lengths = [], [], []
        self.raws, self.fields, self.errors, self.bad = [], [], [], []

    def add(self, line, start, length, raw, fields, error, bad) -> None:
        self.lines.append(line)
        self.starts.append(start)
        self.lengths.append(length)
        self.raws.append(raw)
        self.fields.append(fields)
        self.errors.append(error)
        self.bad.append(bad)

    def __len__(self) -> int:
        return len(self.lines)

    def batch(self, out: _Output, split: _Split) -> pa.RecordBatch:
        columns = (self.lines, self.starts, self.lengths)
        where = _Where(*(np.asarray(v, dtype=np.int64) for v in columns))
        return out.python_records(split, where, self.raws, self.fields, self.errors, self.bad)


def split_files(batches: Iterator[pa.RecordBatch], spec: TextSpec, layout: Layout):
    """mapInArrow body for whole-file mode: input columns ``path`` and ``content`` (bytes).

    Each file is cut into lines and decoded line by line (see
    :mod:`~sparkml_aiaas.data.byte_lines`), then split into records, so
    quoted values may span lines and line numbers and byte offsets are exact.
    """
    R._allow_large_fields()
    out = _Output(spec, layout)
    iter_records = R.iter_csv_lines if spec.format == "csv" else R.iter_json_lines
    for batch in batches:
        paths, contents = batch.column(0), batch.column(1)
        for i in range(batch.num_rows):
            path = paths[i].as_py()
            split = _Split(path, 0, spec.header)
            lines = BL.split_lines(R.decompress(path, contents[i].as_py()), spec.encoding)
            split.lines, split.bytes = len(lines), len(lines.content)
            chunk = _Chunk()
            for first, end, fields, error in iter_records(lines.texts, spec):
                decodes = bool(lines.valid[first:end].all())
                raw = R.strip_line_break("".join(lines.texts[first:end]))
                if decodes and error is None and R.is_blank(raw):
                    split.blank += end - first
                    continue
                if split.header_pending:
                    split.header_pending = False  # read by the driver
                    continue
                split.records += 1
                start = int(lines.starts[first])
                length = int(lines.ends[end - 1]) - start
                bad = None
                if not decodes:
                    raw_bytes = lines.raw_bytes(first, end - 1)
                    raw = BL.escaped(raw_bytes, lines.codec.name)
                    fields, error = None, None
                    bad = undecodable_message(raw_bytes, lines.codec.name, spec.encoding)
                chunk.add(first, start, length, raw, fields, error, bad)
                if len(chunk) >= _CHUNK_RECORDS:
                    yield chunk.batch(out, split)
                    chunk = _Chunk()
            if len(chunk):
                yield chunk.batch(out, split)
            yield out.split_row(split)  # line numbers need no offsets here: one split per file
