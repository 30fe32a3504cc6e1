"""Schema-checked ingest: every record read is either accepted (typed) or rejected (with a reason).

Why not Spark's CSV reader: in PERMISSIVE mode it pads short rows with nulls
and drops surplus fields without a trace, so a shifted row would be accepted
with wrong values.  Text sources are therefore split into records by Python's
:mod:`csv` / :mod:`json` inside ``mapInPandas`` (distributed, one Spark split
per task), every field kept as a string, and typed and validated afterwards
in Spark SQL.  Two reading modes:

line mode (default)
    ``spark.read.text``: large files are split across tasks.  Each physical
    line is one record; a quote left open at the end of a line is reported as
    ``malformed_record``.  Only UTF-8 (and ASCII).
whole-file mode (``multiLine=true``, or any other ``encoding``)
    ``binaryFile``: one task decodes and splits a whole file, so quoted values
    may span lines.  Like Spark's own multiLine reader, a file is not split
    (and must stay under 2 GB).

Rejection reasons, in the order they are checked (the first one found is
reported): ``malformed_record``, ``too_few_fields``, ``too_many_fields``, then
for each column in declared order ``unparsable:<col>``, ``null:<col>``,
``out_of_range:<col>``, ``not_allowed:<col>``.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import os
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Optional, Sequence, Union

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkml_aiaas.data import checks as C
from sparkml_aiaas.data import records as R
from sparkml_aiaas.data.schema import NUMERIC_TYPES, DeclaredSchema, SchemaLike, parse_schema
from sparkml_aiaas.errors import ConfigError, DataValidationError, InputNotFoundError

__all__ = ["IngestResult", "ingest", "REJECTED_SCHEMA", "FORMATS"]

FORMATS = ("csv", "json", "parquet")

#: Columns of :attr:`IngestResult.rejected` (and of the quarantine files).
REJECTED_SCHEMA = T.StructType(
    [
        T.StructField("_raw", T.StringType()),
        T.StructField("_reason", T.StringType()),
        T.StructField("_source_file", T.StringType()),
        T.StructField("_line", T.LongType()),
    ]
)

_OPTIONS_BY_FORMAT = {
    "csv": {
        "header", "delimiter", "sep", "quote", "escape", "encoding", "charset", "multiline",
        "nullvalue",
    },
    "json": {"encoding", "charset", "multiline"},
    "parquet": set(),
}
_TEXT_TYPES = NUMERIC_TYPES + (
    T.StringType, T.BooleanType, T.DateType, T.TimestampType, T.TimestampNTZType,
)
#: Rejected rows per quarantine file, roughly.
_ROWS_PER_QUARANTINE_FILE = 1_000_000

# Internal column names; declared columns travel as __sparkml_c<i> so that no
# user column name can collide with them.
_CODE, _REASON, _RAW, _FILE, _LINE, _PROBLEM = (
    "__sparkml_code",
    "__sparkml_reason",
    "__sparkml_raw",
    "__sparkml_source_file",
    "__sparkml_line",
    "__sparkml_problem",
)


def _typed_col(i: int) -> str:
    return f"__sparkml_c{i}"


def _text_col(i: int) -> str:
    return f"__sparkml_s{i}"


@dataclass
class IngestResult:
    """What :func:`ingest` read.

    Attributes
    ----------
    accepted : DataFrame
        The valid records, with exactly the declared columns, types and (for
        NOT NULL columns) non-nullable fields.
    rejected : DataFrame
        One row per rejected record: ``_raw`` (the record as read; for
        Parquet, the row as JSON), ``_reason`` (``"<code>: <message>"``),
        ``_source_file`` and ``_line`` (1-based line where the record starts;
        null for Parquet).
    counts : dict
        ``{"read": n, "accepted": a, "rejected": r}`` with ``n == a + r``.
    reasons : dict
        Rejected records per reason code, most frequent first.
    cached : DataFrame
        The persisted frame both ``accepted`` and ``rejected`` are read from;
        release it with :meth:`unpersist` when done.
    """

    accepted: DataFrame
    rejected: DataFrame
    counts: dict
    reasons: dict = field(default_factory=dict)
    cached: Optional[DataFrame] = field(default=None, repr=False)

    def unpersist(self, blocking: bool = False) -> None:
        """Drop the cached records; ``accepted`` and ``rejected`` then recompute from the source."""
        if self.cached is not None:
            self.cached.unpersist(blocking)


def ingest(
    spark,
    source: Union[str, Sequence[str]],
    schema: SchemaLike,
    format: str = "csv",
    options: Optional[Mapping[str, Any]] = None,
    quarantine_path: Optional[str] = None,
    max_reject_fraction: Optional[float] = None,
) -> IngestResult:
    """Read ``source`` against a declared schema, separating valid from malformed records.

    Parameters
    ----------
    spark : SparkSession
    source : str or list of str
        A file, a folder or a glob (any Hadoop file system URL).
    schema : DDL string, list of column mappings, StructType or DeclaredSchema
        See :func:`sparkml_aiaas.data.schema.parse_schema`.
    format : {"csv", "json", "parquet"}
        ``json`` means JSON lines: one object per line; keys not declared are
        ignored and absent keys are null.  ``parquet``: declared columns must
        exist (others are ignored) and are converted to the declared types.
    options : dict, optional
        CSV: ``header`` (default true; column names must match the declared
        ones, in any order), ``delimiter``/``sep`` (default ``,``), ``quote``
        (default ``"``; empty disables quoting), ``escape`` (default none:
        quotes inside quoted values are doubled, as in RFC 4180), ``encoding``
        (default UTF-8), ``multiLine`` (default false), ``nullValue``
        (default empty: empty fields are null).  JSON: ``encoding``.  Names
        are case-insensitive; unknown options are an error.
    quarantine_path : str, optional
        Where rejected rows are written as Parquet (overwriting), when given.
    max_reject_fraction : float, optional
        Fail when more than this fraction of the records read is rejected.

    Returns
    -------
    IngestResult

    Raises
    ------
    InputNotFoundError
        ``source`` does not exist or matches no file.
    ConfigError
        Bad format, option, schema or fraction.
    DataValidationError
        A CSV header or the Parquet columns do not match the schema, a
        Parquet column cannot be converted, or too many records are rejected.

    Notes
    -----
    Rejection reasons and the two CSV reading modes (line by line, or whole
    files when ``multiLine`` is set) are described in the module docstring.
    Blank lines are not records.  ``counts["read"]`` is counted where records
    are split from the text (for Parquet, the source's row count);
    ``accepted`` and ``rejected`` are counted on the typed result, and the
    three must reconcile.

    Caching: the typed records (declared columns plus, for rejected records
    only, the raw text, reason, file and line) are persisted and
    materialized while counting, so the source is parsed once; counting or
    writing ``accepted`` afterwards reads the cache.  Call
    :meth:`IngestResult.unpersist` when done.  For text sources the split
    records are also cached briefly (to read the headers and count records
    and lines) and released before returning.  Spark jobs: two small
    driver-side summaries (per split, and per reason code), plus the
    quarantine write.
    """
    declared = parse_schema(schema)
    fmt = _check_format(format)
    _check_fraction(max_reject_fraction)
    settings = _read_settings(fmt, options or {}, declared)
    if fmt != "parquet":
        _check_text_types(declared, fmt)
    paths = _as_paths(source)
    _check_local_paths_exist(paths)
    if fmt == "parquet":
        checked, read_count, outcomes = _check_parquet(spark, paths, declared)
    else:
        checked, read_count, outcomes = _check_text(spark, paths, declared, settings)
    try:
        return _finish(
            checked, declared, read_count, outcomes, quarantine_path, max_reject_fraction
        )
    except BaseException:
        checked.unpersist()
        raise


# ----------------------------------------------------------------- options


@dataclass(frozen=True)
class _ReadSettings:
    spec: Optional[R.TextSpec]
    whole_file: bool = False
    null_value: str = ""


def _check_format(fmt: str) -> str:
    normalized = str(fmt).strip().lower()
    if normalized not in FORMATS:
        raise ConfigError(f"unknown ingest format {fmt!r}; expected one of {list(FORMATS)}")
    return normalized


def _check_fraction(fraction: Optional[float]) -> None:
    if fraction is None:
        return
    is_number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not is_number or not 0 <= fraction <= 1:
        raise ConfigError(f"max_reject_fraction must be a number between 0 and 1, not {fraction!r}")


def _read_settings(fmt: str, options: Mapping[str, Any], declared: DeclaredSchema) -> _ReadSettings:
    opts = {str(k).lower(): v for k, v in options.items()}
    unknown = sorted(set(opts) - _OPTIONS_BY_FORMAT[fmt])
    if unknown:
        supported = sorted(_OPTIONS_BY_FORMAT[fmt]) or "none"
        raise ConfigError(f"unsupported {fmt} option(s) {unknown}; supported: {supported}")
    if fmt == "parquet":
        return _ReadSettings(spec=None)
    encoding = _option_encoding(opts)
    multiline = _option_bool(opts, "multiline", False)
    if fmt == "json":
        if multiline:
            raise ConfigError(
                "format 'json' reads JSON lines (one object per line); "
                "multiLine JSON is not supported"
            )
        spec = R.TextSpec(format="json", encoding=encoding, names=tuple(declared.names))
        return _ReadSettings(spec=spec, whole_file=not _is_utf8(encoding))
    spec = R.TextSpec(
        format="csv",
        header=_option_bool(opts, "header", True),
        delimiter=_option_char(opts, ("delimiter", "sep"), ",", allow_empty=False),
        quotechar=_option_char(opts, ("quote",), '"', allow_empty=True),
        escapechar=_option_char(opts, ("escape",), None, allow_empty=False),
        encoding=encoding,
        names=tuple(declared.names),
    )
    if spec.escapechar is not None and spec.escapechar == spec.quotechar:
        # A doubled quote is already understood; the csv module wants no escapechar for it.
        spec = dataclasses.replace(spec, escapechar=None)
    if spec.delimiter == spec.quotechar:
        raise ConfigError(f"CSV delimiter and quote are both {spec.delimiter!r}")
    null_value = opts.get("nullvalue", "")
    if not isinstance(null_value, str):
        raise ConfigError(f"CSV option nullValue must be a string, not {null_value!r}")
    whole_file = multiline or not _is_utf8(encoding)
    return _ReadSettings(spec=spec, whole_file=whole_file, null_value=null_value)


def _option_bool(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    value = opts.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"option {key} must be true or false, not {value!r}")


def _option_char(
    opts: Mapping[str, Any], keys: tuple, default: Optional[str], allow_empty: bool
) -> Optional[str]:
    present = [k for k in keys if k in opts]
    if len(present) > 1:
        raise ConfigError(f"options {present} are aliases; give only one")
    if not present:
        return default
    key, value = present[0], opts[present[0]]
    if not isinstance(value, str):
        raise ConfigError(f"CSV option {key} must be a string, not {value!r}")
    # Configs often spell a tab as the two characters backslash-t.
    value = {"\\t": "\t"}.get(value, value)
    if value == "" and allow_empty:
        return None
    if len(value) != 1 or value in "\r\n":
        raise ConfigError(
            f"CSV option {key} must be a single character other than a line break, not {value!r}"
        )
    return value


def _option_encoding(opts: Mapping[str, Any]) -> str:
    if "encoding" in opts and "charset" in opts:
        raise ConfigError("options encoding and charset are aliases; give only one")
    encoding = opts.get("encoding", opts.get("charset", "utf-8"))
    try:
        codecs.lookup(str(encoding))
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    return str(encoding)


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "ascii")


def _check_text_types(declared: DeclaredSchema, fmt: str) -> None:
    for f in declared.struct.fields:
        if not isinstance(f.dataType, _TEXT_TYPES):
            raise ConfigError(
                f"column {f.name!r} has type {f.dataType.simpleString()}, "
                f"which {fmt} ingest cannot parse"
            )


# ------------------------------------------------------------------- paths


_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _as_paths(source: Union[str, Sequence[str]]) -> list[str]:
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not paths or not all(isinstance(p, (str, os.PathLike)) and str(p) for p in paths):
        raise ConfigError(f"source must be a path or a list of paths, not {source!r}")
    return [os.fspath(p) for p in paths]


def _local_path(path: str) -> Optional[str]:
    """The local file system path of ``path``, or None when it is on another file system."""
    if path.startswith("file:"):
        return re.sub(r"^file:(//)?", "", path)
    if _SCHEME_RE.match(path) and not re.match(r"^[A-Za-z]:[\\/]", path):
        return None
    return path


def _check_local_paths_exist(paths: Sequence[str]) -> None:
    # Checked here for a clear message (Spark logs a stack trace first);
    # remote paths are left to Spark and translated by _reading().
    for path in paths:
        local = _local_path(path)
        if local is None or "{" in local:
            continue  # not local, or a Hadoop {a,b} pattern Python's glob does not know
        if any(ch in local for ch in "*?["):
            if not glob.glob(local):
                raise InputNotFoundError(f"input path {path!r} matches no files")
        elif not os.path.exists(local):
            raise InputNotFoundError(f"input path {path!r} does not exist")


def _reading(read, paths: Sequence[str]) -> DataFrame:
    """Run a Spark read, turning Spark's missing-path errors into InputNotFoundError."""
    try:
        return read()
    except AnalysisException as exc:
        condition = _error_condition(exc)
        if condition == "PATH_NOT_FOUND" or "PATH_NOT_FOUND" in str(exc):
            raise InputNotFoundError(f"input path does not exist: {_first_line(exc)}") from None
        if condition == "UNABLE_TO_INFER_SCHEMA":
            raise InputNotFoundError(f"no data files found at {', '.join(paths)}") from None
        raise


def _error_condition(exc: Exception) -> Optional[str]:
    for getter in ("getCondition", "getErrorClass"):
        if hasattr(exc, getter):
            try:
                return getattr(exc, getter)()
            except Exception:  # noqa: BLE001 - older pyspark raise on missing classes
                return None
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ------------------------------------------------------------ text sources


@dataclass(frozen=True)
class _SplitSummary:
    source_file: str
    block_start: int
    lines: int
    records: int
    header: Optional[list]
    header_error: Optional[str]


def _check_text(spark, paths, declared: DeclaredSchema, settings: _ReadSettings):
    records = _read_records(spark, paths, settings).persist()
    checked = None
    try:
        splits = _summarize_splits(records)  # materializes ``records``
        positions = _field_positions(declared, splits, settings.spec)
        located = _with_line_numbers(records, splits, settings.whole_file)
        checked = _check_text_records(located, declared, positions, settings).persist()
        outcomes = _count_outcomes(checked)  # materializes ``checked`` from ``records``
    except BaseException:
        if checked is not None:
            checked.unpersist()
        raise
    finally:
        # ``checked`` is materialized (or abandoned): the split records are no longer needed.
        records.unpersist()
    return checked, sum(s.records for s in splits), outcomes


def _read_records(spark, paths, settings: _ReadSettings) -> DataFrame:
    spec = settings.spec
    if settings.whole_file:
        files = _reading(lambda: spark.read.format("binaryFile").load(paths), paths)
        files = files.select("path", "content")
        return files.mapInPandas(partial(R.split_files, spec=spec), R.RECORD_SCHEMA)
    lines = _reading(lambda: spark.read.text(paths), paths)
    lines = lines.select(
        "value",
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block_start"),
    )
    return lines.mapInPandas(partial(R.split_lines, spec=spec), R.RECORD_SCHEMA)


def _summarize_splits(records: DataFrame) -> list[_SplitSummary]:
    """The one summary row per Spark split: lines, records and the file's header (no shuffle)."""
    rows = (
        records.where(F.col("kind") == R.SPLIT)
        .select("source_file", "block_start", "split_lines", "split_records", "fields", "malformed")
        .collect()
    )
    return [_SplitSummary(*row) for row in rows]


def _field_positions(declared: DeclaredSchema, splits, spec: R.TextSpec) -> dict[tuple, list[str]]:
    """Map each field order found to the files using it: ``{positions: [files]}``.

    Without a header (or for JSON, whose values arrive in declared order) the
    only order is the declared one.
    """
    names = declared.names
    if not spec.header:
        return {tuple(range(len(names))): []}
    orders: dict[tuple, list[str]] = {}
    problems = []
    for split in splits:
        if split.block_start != 0 or (split.header is None and split.header_error is None):
            continue  # not the first split of its file, or an empty file
        if split.header_error is not None:
            problems.append(f"{split.source_file}: header is malformed ({split.header_error})")
            continue
        header = [name.strip() for name in split.header]
        mismatch = _header_mismatch(header, names)
        if mismatch:
            problems.append(f"{split.source_file}: {mismatch}")
            continue
        orders.setdefault(tuple(header.index(name) for name in names), []).append(split.source_file)
    if problems:
        more = f"; and {len(problems) - 5} more files" if len(problems) > 5 else ""
        shown = "; ".join(problems[:5]) + more
        raise DataValidationError(f"CSV header does not match the declared schema {names}: {shown}")
    return orders or {tuple(range(len(names))): []}


def _header_mismatch(header: list[str], names: list[str]) -> Optional[str]:
    duplicates = sorted({h for h in header if header.count(h) > 1})
    missing = [n for n in names if n not in header]
    unexpected = [h for h in header if h not in names]
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if unexpected:
        parts.append(f"unexpected columns {unexpected}")
    if duplicates:
        parts.append(f"duplicate columns {duplicates}")
    return ", ".join(parts) or None


def _with_line_numbers(records: DataFrame, splits, whole_file: bool) -> DataFrame:
    """Add ``line`` (1-based, in the file) from the line within the split.

    A split's first line number is the count of physical lines in the
    earlier splits of the same file, known from the split summary.
    """
    if whole_file or all(s.block_start == 0 for s in splits):
        return records.withColumn("line", F.col("line_in_block") + 1)
    offset_frame = records.sparkSession.createDataFrame(
        _line_offsets(splits), "source_file string, block_start long, line_offset long"
    )
    return (
        records.join(F.broadcast(offset_frame), ["source_file", "block_start"], "left")
        .withColumn("line", F.col("line_in_block") + F.coalesce("line_offset", F.lit(0)) + 1)
        .drop("line_offset")
    )


def _line_offsets(splits) -> list[tuple[str, int, int]]:
    # One row per split even if a file was listed twice, so the join cannot multiply records.
    lines_by_split = {(s.source_file, s.block_start): s.lines for s in splits}
    offsets, lines_before = [], {}
    for source_file, block_start in sorted(lines_by_split):
        offset = lines_before.get(source_file, 0)
        offsets.append((source_file, block_start, offset))
        lines_before[source_file] = offset + lines_by_split[(source_file, block_start)]
    return offsets


def _field_text(i: int, orders: dict[tuple, list[str]]) -> str:
    """SQL for the string value of declared column ``i``, taken from the ``fields`` array."""
    if len(orders) == 1:
        position = str(next(iter(orders))[i])
    else:
        branches = " ".join(
            f"WHEN source_file IN ({', '.join(C.sql_string(f) for f in files)}) THEN {order[i]}"
            for order, files in orders.items()
        )
        position = f"CASE {branches} END"
    # get() yields null past the end of a short row instead of failing.
    return f"get(fields, {position})"


def _check_text_records(
    located: DataFrame, declared: DeclaredSchema, orders, settings: _ReadSettings
) -> DataFrame:
    fields = declared.struct.fields
    null_value = C.sql_string(settings.null_value)
    texts = located.where(f"kind = {R.RECORD}").selectExpr(
        f"raw AS {_RAW}",
        f"source_file AS {_FILE}",
        f"line AS {_LINE}",
        "n_fields",
        "malformed",
        *[
            # The null token (empty by default) is a missing value.
            f"CASE WHEN {_field_text(i, orders)} != {null_value} THEN {_field_text(i, orders)} END"
            f" AS {_text_col(i)}"
            for i in range(len(fields))
        ],
    )
    casts = [
        f"{C.cast_to(_text_col(i), f.dataType)} AS {_typed_col(i)}" for i, f in enumerate(fields)
    ]
    typed = texts.selectExpr("*", *casts)
    checks = [("malformed IS NOT NULL", C.problem("malformed_record", "malformed"))]
    if settings.spec.format == "csv":
        checks += C.field_count_checks("n_fields", len(fields))
    return _with_outcome(typed, declared, checks + _all_value_checks(declared))


def _all_value_checks(declared: DeclaredSchema) -> list[C.Check]:
    """Per-column checks on each value as read (__sparkml_s<i>) and typed (__sparkml_c<i>)."""
    checks: list[C.Check] = []
    for i, f in enumerate(declared.struct.fields):
        checks += C.value_checks(f, declared.constraints_for(f.name), _text_col(i), _typed_col(i))
    return checks


def _with_outcome(typed: DataFrame, declared: DeclaredSchema, checks: list[C.Check]) -> DataFrame:
    """Keep the typed columns, and the reason/raw/file/line of rejected records only."""
    with_problem = typed.selectExpr("*", f"{C.first_problem(checks)} AS {_PROBLEM}")
    rejected = f"{_PROBLEM} IS NOT NULL"
    return with_problem.selectExpr(
        *[_typed_col(i) for i in range(len(declared.struct.fields))],
        f"{_PROBLEM}.code AS {_CODE}",
        f"concat({_PROBLEM}.code, ': ', {_PROBLEM}.message) AS {_REASON}",
        # Accepted records keep no raw text: the cache stays close to the typed size.
        f"CASE WHEN {rejected} THEN {_RAW} END AS {_RAW}",
        f"CASE WHEN {rejected} THEN {_FILE} END AS {_FILE}",
        f"CAST(CASE WHEN {rejected} THEN {_LINE} END AS BIGINT) AS {_LINE}",
    )


def _count_outcomes(checked: DataFrame) -> dict[Optional[str], int]:
    """Records per reason code (None: accepted), in one job."""
    return {r[_CODE]: r["count"] for r in checked.groupBy(_CODE).count().collect()}


# --------------------------------------------------------- parquet sources


def _check_parquet(spark, paths, declared: DeclaredSchema):
    source = _reading(lambda: spark.read.parquet(*paths), paths)
    available = set(source.columns)
    missing = [n for n in declared.names if n not in available]
    if missing:
        raise DataValidationError(
            f"Parquet data at {', '.join(paths)} lacks declared columns {missing}; "
            f"it has {sorted(available)}"
        )
    fields = declared.struct.fields
    quoted = [C.quote_identifier(f.name) for f in fields]
    originals = source.selectExpr(
        f"to_json(struct({', '.join(quoted)})) AS {_RAW}",
        f"_metadata.file_path AS {_FILE}",
        f"CAST(NULL AS BIGINT) AS {_LINE}",
        *[f"{q} AS {_text_col(i)}" for i, q in enumerate(quoted)],
    )
    source_types = [source.schema[f.name].dataType for f in fields]
    casts = [
        f"{_parquet_cast(_text_col(i), source_type, f.dataType)} AS {_typed_col(i)}"
        for i, (f, source_type) in enumerate(zip(fields, source_types))
    ]
    try:
        typed = originals.selectExpr("*", *casts)
    except AnalysisException as exc:
        raise DataValidationError(_conversion_message(source, declared, exc)) from None
    checked = _with_outcome(typed, declared, _all_value_checks(declared)).persist()
    try:
        # A Parquet count reads only file footers; it is the independent side of the reconciliation.
        read_count = source.count()
        outcomes = _count_outcomes(checked)
    except BaseException:
        checked.unpersist()
        raise
    return checked, read_count, outcomes


def _parquet_cast(column_sql: str, source_type: T.DataType, data_type: T.DataType) -> str:
    return column_sql if source_type == data_type else C.cast_to(column_sql, data_type)


def _conversion_message(source: DataFrame, declared: DeclaredSchema, exc: Exception) -> str:
    differing = [
        f"{f.name} ({source.schema[f.name].dataType.simpleString()} -> {f.dataType.simpleString()})"
        for f in declared.struct.fields
        if source.schema[f.name].dataType != f.dataType
    ]
    return (
        f"Parquet columns cannot be converted to the declared types: {', '.join(differing)} "
        f"({_first_line(exc)})"
    )


# --------------------------------------------------------------- finishing


def _finish(
    checked, declared, read_count, outcomes, quarantine_path, max_reject_fraction
) -> IngestResult:
    accepted_count = outcomes.get(None, 0)
    by_code = [(code, n) for code, n in outcomes.items() if code is not None]
    reasons = dict(sorted(by_code, key=lambda code_n: (-code_n[1], code_n[0])))
    rejected_count = sum(reasons.values())
    counts = {"read": read_count, "accepted": accepted_count, "rejected": rejected_count}
    if read_count != accepted_count + rejected_count:
        raise DataValidationError(
            f"ingest does not reconcile: read {read_count} records but accepted {accepted_count} "
            f"+ rejected {rejected_count}; did the input change while it was being read?"
        )
    result = IngestResult(
        accepted=_accepted_frame(checked, declared),
        rejected=_rejected_frame(checked),
        counts=counts,
        reasons=reasons,
        cached=checked,
    )
    if quarantine_path is not None:
        files = rejected_count // _ROWS_PER_QUARANTINE_FILE + 1
        result.rejected.coalesce(files).write.mode("overwrite").parquet(quarantine_path)
    _check_reject_fraction(counts, reasons, max_reject_fraction, quarantine_path)
    return result


def _accepted_frame(checked: DataFrame, declared: DeclaredSchema) -> DataFrame:
    return checked.where(f"{_CODE} IS NULL").selectExpr(
        *[_declared_column(i, f) for i, f in enumerate(declared.struct.fields)]
    )


def _declared_column(i: int, f: T.StructField) -> str:
    placeholder = None if f.nullable else C.non_null_placeholder(f.dataType)
    # Never null in accepted rows; the coalesce lets the schema say nullable=false as declared.
    value = _typed_col(i) if placeholder is None else f"coalesce({_typed_col(i)}, {placeholder})"
    return f"{value} AS {C.quote_identifier(f.name)}"


def _rejected_frame(checked: DataFrame) -> DataFrame:
    return checked.where(f"{_CODE} IS NOT NULL").selectExpr(
        f"{_RAW} AS _raw", f"{_REASON} AS _reason", f"{_FILE} AS _source_file", f"{_LINE} AS _line"
    )


def _check_reject_fraction(counts, reasons, max_reject_fraction, quarantine_path) -> None:
    if max_reject_fraction is None or counts["read"] == 0:
        return
    fraction = counts["rejected"] / counts["read"]
    if fraction <= max_reject_fraction:
        return
    top = ", ".join(f"{code} ({n})" for code, n in list(reasons.items())[:3])
    where = f"; rejected rows written to {quarantine_path}" if quarantine_path else ""
    raise DataValidationError(
        f"rejected {counts['rejected']} of {counts['read']} records ({fraction:.2%}), more than "
        f"max_reject_fraction={max_reject_fraction}; accepted {counts['accepted']}; "
        f"top reasons: {top}{where}"
    )
