"""Schema-checked ingest: every record read is either accepted (typed) or rejected (with a reason).

Why not Spark's CSV reader: in PERMISSIVE mode it pads short rows with nulls
and drops surplus fields without a trace, so a shifted row would be accepted
with wrong values.  Text sources are therefore split into records by our own
code (distributed, one Spark split per task), every field kept as a string,
and typed and validated afterwards in Spark SQL.  CSV headers are read from
the start of each file first (by the driver; on Spark Connect, in one task on
the server, where the paths are), so every task knows the column order of its
file.  Two reading modes:

line mode (default)
    ``spark.read.text`` cut at LF only, each line passed to Python as bytes:
    large files are split across tasks.  Each physical line (LF, CR LF or a
    lone CR ends one) is one record; a quote left open at the end of a line
    is reported as ``malformed_record``.  Only UTF-8 (and ASCII); a line
    whose bytes are not valid is rejected as ``invalid_encoding``.
    ``mapInArrow`` splits lines without quoting by the delimiter in Arrow's
    C++ kernels and parses the others with Python's :mod:`csv` (JSON lines:
    :mod:`json`).
whole-file mode (``multiLine=true``, or any other ``encoding``)
    ``binaryFile``: one task cuts a whole file into lines, decodes each one
    strictly and splits them into records, so quoted values may span lines.
    Like Spark's own multiLine reader, a file is not split (and must stay
    under 2 GB).

Rejection reasons, in the order they are checked (the first one found is
reported): ``invalid_encoding``, ``malformed_record``, ``too_few_fields``,
``too_many_fields``, then for each column in declared order
``unparsable:<col>``, ``out_of_range:<col>`` (a FLOAT/DOUBLE value that
overflows to infinity), ``non_finite:<col>`` (a literal NaN or infinity under
the ``reject`` policy), ``null:<col>``, ``out_of_range:<col>`` (min/max),
``not_allowed:<col>``.

Every rejected record keeps a locator: ``_source_file``, ``_line``, and the
``_byte_offset``/``_byte_length`` of its bytes in the (decompressed) file.

PII (``pii=``) is hashed or dropped in the same pass, before the typed
records are cached, and masked in the raw text of rejected records
(:mod:`sparkml_aiaas.data.deidentify`): field by field when the record was
split into exactly the file's fields, as a whole otherwise.
"""

from __future__ import annotations

import bz2
import codecs
import dataclasses
import glob
import gzip
import lzma
import os
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Optional, Sequence, Union

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkml_aiaas.data import byte_lines as _byte_lines
from sparkml_aiaas.data import checks as C
from sparkml_aiaas.data import record_batches as B
from sparkml_aiaas.data import records as R
from sparkml_aiaas.data.deidentify import Deidentify as _Deidentify
from sparkml_aiaas.data.schema import NUMERIC_TYPES, DeclaredSchema, SchemaLike, parse_schema
from sparkml_aiaas.errors import (ConfigError, DataValidationError, InputNotFoundError,
                                  expected_names, name_list)
from sparkml_aiaas.server_tasks import run_on_server
from sparkml_aiaas.spark_env import is_connect

__all__ = ["IngestResult", "ingest", "REJECTED_SCHEMA", "FORMATS"]

FORMATS = ("csv", "json", "parquet", "delta")

#: Columns of :attr:`IngestResult.rejected` (and of the quarantine files).
REJECTED_SCHEMA = T.StructType(
    [
        T.StructField("_raw", T.StringType()),
        T.StructField("_reason", T.StringType()),
        T.StructField("_source_file", T.StringType()),
        T.StructField("_line", T.LongType()),
        T.StructField("_byte_offset", T.LongType()),
        T.StructField("_byte_length", T.LongType()),
    ]
)
#: What ``non_finite`` accepts for a FLOAT/DOUBLE column, and the default.
NON_FINITE_POLICIES = ("reject", "null", "keep")
DEFAULT_NON_FINITE = "reject"

_OPTIONS_BY_FORMAT = {
    "csv": {
        "header", "delimiter", "sep", "quote", "escape", "encoding", "charset", "multiline",
        "nullvalue",
    },
    "json": {"encoding", "charset", "multiline"},
    "parquet": set(),
    "delta": {"version"},
}
_TEXT_TYPES = NUMERIC_TYPES + (
    T.StringType, T.BooleanType, T.DateType, T.TimestampType, T.TimestampNTZType,
)
#: Rejected rows per quarantine file, roughly.
_ROWS_PER_QUARANTINE_FILE = 1_000_000

# Internal column names; declared columns travel as __sparkml_c<i> so that no
# user column name can collide with them.
_CHECK, _VALUE, _RAW, _FILE, _LINE = (
    "__sparkml_check",  # index of the first failing check (null: accepted)
    "__sparkml_value",  # the value its message quotes
    "__sparkml_raw",
    "__sparkml_source_file",
    "__sparkml_line",
)
_BYTE, _LENGTH = "__sparkml_byte_offset", "__sparkml_byte_length"
_BLOCK, _SPLIT_LINES, _SPLIT_RECORDS, _SPLIT_BLANK, _SPLIT_BYTES = (
    "__sparkml_block_start",
    "__sparkml_split_lines",
    "__sparkml_split_records",
    "__sparkml_split_blank",
    "__sparkml_split_bytes",
)
#: The check index of the one summary row per split kept in the cache (never a record).
_SPLIT_CHECK = -1
#: What ``on_schema_drift`` accepts.
DRIFT_POLICIES = ("error", "ignore_extra", "allow")


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
        Parquet, the row as JSON; masked when PII is configured),
        ``_reason`` (``"<code>: <message>"``), and its locator:
        ``_source_file``, ``_line`` (1-based line where the record starts;
        for Parquet and Delta, the 1-based row number in the file),
        ``_byte_offset`` and ``_byte_length`` (where its bytes are in the
        file, decompressed, line break excluded; null for Parquet and Delta).
    counts : dict
        ``{"read": n, "accepted": a, "rejected": r, "blank": b}`` with
        ``n == a + r``; ``b`` counts blank lines (never records; 0 for Parquet
        and Delta).
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
    pii=None,
    on_schema_drift: str = "error",
    non_finite: Union[str, Mapping[str, Optional[str]], None] = DEFAULT_NON_FINITE,
) -> IngestResult:
    """Read ``source`` against a declared schema, separating valid from malformed records.

    Parameters
    ----------
    spark : SparkSession
    source : str or list of str
        A file, a folder or a glob (any Hadoop file system URL).
    schema : DDL string, list of column mappings, StructType or DeclaredSchema
        See :func:`sparkml_aiaas.data.schema.parse_schema`.
    format : {"csv", "json", "parquet", "delta"}
        ``json`` means JSON lines: one object per line; keys not declared are
        ignored and absent keys are null.  ``parquet`` and ``delta`` (one
        table path; read with :func:`sparkml_aiaas.data.read_table`): columns
        are matched by name and converted to the declared types; ``_raw`` of
        a rejected row is the row as JSON.
    options : dict, optional
        CSV: ``header`` (default true; column names must match the declared
        ones, in any order), ``delimiter``/``sep`` (default ``,``), ``quote``
        (default ``"``; empty disables quoting), ``escape`` (default none:
        quotes inside quoted values are doubled, as in RFC 4180), ``encoding``
        (default UTF-8), ``multiLine`` (default false), ``nullValue``
        (default empty: empty fields are null).  JSON: ``encoding``.  Delta:
        ``version`` (time travel).  Names are case-insensitive; unknown
        options are an error.
    quarantine_path : str, optional
        Where rejected rows are written as Parquet (overwriting), when given.
    max_reject_fraction : float, optional
        Fail when more than this fraction of the records read is rejected.
    pii : PiiPolicy or mapping, optional
        ``{"columns": {name: "hash" | "drop"}, "key_env": VAR}`` or
        ``"key_file": PATH`` (see :class:`sparkml_aiaas.core.pii.PiiPolicy`).
        Hashed columns become strings holding HMAC-SHA-256 of the value as
        read; dropped ones leave ``accepted``; in ``rejected._raw`` the PII
        fields are masked (a record not split into exactly its file's fields,
        or with undecodable bytes, is masked whole) and reasons for PII
        columns do not quote values.
    on_schema_drift : {"error", "ignore_extra", "allow"}
        What a CSV header or Parquet schema that differs from the declared
        columns means: an error naming the columns (default); unexpected
        columns ignored; or, with ``allow``, also missing nullable columns
        read as null (a missing NOT NULL column is always an error).
    non_finite : {"reject", "null", "keep"} or mapping, default "reject"
        What a literal NaN or infinity (``NaN``, ``nan``, ``Infinity``,
        ``-inf``, ...; for Parquet, a NaN or infinite value) in a FLOAT or
        DOUBLE column does: the record is rejected (``non_finite:<col>``),
        the value becomes null (then a NOT NULL column rejects the record as
        ``null:<col>``), or it is kept.  One policy for every FLOAT/DOUBLE
        column, or ``{column: policy}`` (``"*"``: the default for the other
        columns; a None value means ``"null"``, as YAML writes it).  A number
        too large for its type (``1e400``; ``1e39`` in a FLOAT) is always
        rejected as ``out_of_range:<col>``.

    Returns
    -------
    IngestResult

    Raises
    ------
    InputNotFoundError
        ``source`` does not exist or matches no file.
    ConfigError
        Bad format, option, schema, fraction or ``non_finite`` policy.
    DataValidationError
        A CSV header or the Parquet columns do not match the schema, a
        Parquet column cannot be converted, or too many records are rejected.

    Notes
    -----
    Rejection reasons and the two CSV reading modes (line by line, or whole
    files when ``multiLine`` is set) are described in the module docstring.
    Blank lines are not records; they are counted in ``counts["blank"]``.
    ``counts["read"]`` is counted where records are split from the text (for
    Parquet, the source's row count); ``accepted`` and ``rejected`` are
    counted on the typed result, and the three must reconcile.  In line mode
    every physical line of a CSV file is a header, a record or blank:
    ``lines = headers + read + blank``.

    Caching: the typed records (declared columns plus, for rejected records
    only, the raw text, reason, file and block) are persisted and
    materialized while counting, so the source is parsed once; counting or
    writing ``accepted`` afterwards reads the cache.  Call
    :meth:`IngestResult.unpersist` when done.  Spark jobs: one that parses,
    checks, caches and counts per reason code, one small one on the cache
    for the per-split line and record counts, plus the quarantine write.
    """
    declared = parse_schema(schema)
    fmt = _check_format(format)
    _check_fraction(max_reject_fraction)
    drift = _check_drift(on_schema_drift)
    settings = _read_settings(fmt, options or {}, declared)
    if fmt in ("csv", "json"):
        _check_text_types(declared, fmt)
    deidentify = _Deidentify.from_argument(pii, declared)
    policies = non_finite_policies(non_finite, declared)
    paths = _as_paths(source)
    _check_paths_exist(spark, paths)
    if fmt in ("parquet", "delta"):
        source_frame = _read_table_source(spark, paths, fmt, settings.version)
        checked, checks, read_count, outcomes, splits = _check_parquet(
            source_frame, paths, declared, drift, deidentify, fmt, policies
        )
    else:
        checked, checks, read_count, outcomes, splits = _check_text(
            spark, paths, declared, settings, drift, deidentify, policies
        )
    try:
        return _finish(
            checked, checks, declared, read_count, outcomes, splits, settings.whole_file,
            deidentify, quarantine_path, max_reject_fraction,
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
    version: Optional[int] = None


def _check_format(fmt: str) -> str:
    normalized = str(fmt).strip().lower()
    if normalized not in FORMATS:
        raise ConfigError(f"unknown ingest format {fmt!r}; expected one of {list(FORMATS)}")
    return normalized


def _check_drift(policy: str) -> str:
    if policy not in DRIFT_POLICIES:
        raise ConfigError(
            f"on_schema_drift must be one of {list(DRIFT_POLICIES)}, not {policy!r}"
        )
    return policy


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
    if fmt in ("parquet", "delta"):
        return _ReadSettings(spec=None, version=_option_version(opts))
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


def _option_version(opts: Mapping[str, Any]) -> Optional[int]:
    version = opts.get("version")
    if version is None:
        return None
    if isinstance(version, str) and re.fullmatch(r"[0-9]{1,18}", version.strip()):
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"option version must be a non-negative integer, not {version!r}")
    return version


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
    problem = _byte_lines.unsupported_encoding(str(encoding))
    if problem:
        raise ConfigError(problem)
    return str(encoding)


def non_finite_policies(
    non_finite: Union[str, Mapping[str, Optional[str]], None], declared: DeclaredSchema
) -> dict:
    """``{column: policy}`` for every FLOAT/DOUBLE column, from ``ingest(non_finite=...)``."""
    floating = [f for f in declared.struct.fields if isinstance(f.dataType, C.FLOATING_TYPES)]
    if non_finite is None:
        non_finite = DEFAULT_NON_FINITE
    if isinstance(non_finite, str):
        policy = _non_finite_policy(non_finite, "non_finite")
        return {f.name: policy for f in floating}
    if not isinstance(non_finite, Mapping):
        raise ConfigError(
            f"non_finite must be one of {list(NON_FINITE_POLICIES)} or a mapping of column to "
            f"policy, not {non_finite!r}"
        )
    given = {str(k): _non_finite_policy(v, f"non_finite[{k!r}]") for k, v in non_finite.items()}
    default = given.pop("*", DEFAULT_NON_FINITE)
    unknown = [name for name in given if name not in declared.names]
    if unknown:
        raise ConfigError(f"non_finite names columns {unknown} that are not declared")
    others = [
        f"{name} ({declared.struct[name].dataType.simpleString().upper()})"
        for name in given
        if name not in {f.name for f in floating}
    ]
    if others:
        raise ConfigError(f"non_finite applies to FLOAT and DOUBLE columns only, not {others}")
    return {f.name: given.get(f.name, default) for f in floating}


def _non_finite_policy(value: Optional[str], where: str) -> str:
    if value is None:
        return "null"  # YAML's null
    policy = value.strip().lower() if isinstance(value, str) else value
    if policy not in NON_FINITE_POLICIES:
        raise ConfigError(f"{where} must be one of {list(NON_FINITE_POLICIES)}, not {value!r}")
    return policy


def _is_utf8(encoding: str) -> bool:
    """Encodings line mode reads (a UTF-8 byte-order mark is dropped either way)."""
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig", "ascii")


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


def _check_paths_exist(spark, paths: Sequence[str]) -> None:
    """Local paths checked where they are read: on a Connect session they name the
    server's files, so the check runs there (one small task), not on the client's disk.
    Relative paths are left to Spark there: the server resolves them against its own
    working folder, which its Python workers do not share."""
    if not is_connect(spark):
        _check_local_paths_exist(paths)
        return
    absolute = [p for p in paths if os.path.isabs(_local_path(p) or "")]
    if absolute:
        run_on_server(spark, _check_local_paths_exist, absolute)


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
        return _analyzed(read())
    except AnalysisException as exc:
        condition = _error_condition(exc)
        if condition == "PATH_NOT_FOUND" or "PATH_NOT_FOUND" in str(exc):
            raise InputNotFoundError(f"input path does not exist: {_first_line(exc)}") from None
        if condition == "UNABLE_TO_INFER_SCHEMA":
            raise InputNotFoundError(f"no data files found at {', '.join(paths)}") from None
        raise


def _analyzed(frame: DataFrame) -> DataFrame:
    """``frame``, its plan analyzed now: a Connect DataFrame is analyzed lazily, so a
    missing path or a bad expression would otherwise fail later, outside the ``try``
    meant for it (a classic DataFrame was analyzed when it was built)."""
    if is_connect(frame.sparkSession):
        frame.schema  # noqa: B018 - the analysis is the point
    return frame


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
    blank: int
    bytes: int


def _check_text(
    spark, paths, declared: DeclaredSchema, settings: _ReadSettings, drift, pii, policies
):
    source = _read_source(spark, paths, settings)
    spec = settings.spec
    # Line mode needs every file's first bytes (Spark's line reader drops a
    # byte-order mark, which byte offsets must count); headers need more.
    needs_start = spec.header or not settings.whole_file
    starts = _read_file_starts(spark, source.inputFiles(), settings) if needs_start else []
    headers = [s[:3] for s in starts if s[1] is not None or s[2] is not None]
    layout = _field_layout(declared, headers, spec, drift)
    if not settings.whole_file:
        layout = dataclasses.replace(layout, bom_files=frozenset(s[0] for s in starts if s[3]))
    records = _split_records(source, settings, layout)
    checked, checks = _check_text_records(records, declared, layout, settings, pii, policies)
    checked = checked.persist()
    try:
        # One job parses, checks and caches every record; the rest read the cache.
        outcomes = _count_outcomes(checked, checks)
        splits = _split_summaries(checked)
    except BaseException:
        checked.unpersist()
        raise
    return checked, checks, sum(s.records for s in splits), outcomes, splits


def _read_source(spark, paths, settings: _ReadSettings) -> DataFrame:
    if settings.whole_file:
        return _reading(lambda: spark.read.format("binaryFile").load(paths), paths)
    # Cut at LF only, so every byte is accounted for and offsets are exact;
    # record_batches handles CR LF and lone CR.
    return _reading(lambda: spark.read.text(paths, lineSep="\n"), paths)


def _split_records(source: DataFrame, settings: _ReadSettings, layout: B.Layout) -> DataFrame:
    schema = B.record_schema(layout.n_columns)[0]
    if settings.whole_file:
        body = partial(B.split_files, spec=settings.spec, layout=layout)
        # The file as a URI, as the layout's keys and line mode's source_file name it:
        # binaryFile's own path column is decoded ('a b.csv', not 'a%20b.csv'), and a
        # file the layout does not know would be split (and masked) by declared order.
        path = F.col("_metadata.file_path").alias("path")
        return source.select(path, "content").mapInArrow(body, schema)
    lines = source.select(
        # As bytes: Spark does not check UTF-8, Python does, per line.
        F.col("value").cast("binary").alias("value"),
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block_start"),
    )
    return lines.mapInArrow(partial(B.split_lines, spec=settings.spec, layout=layout), schema)


def _split_summaries(checked: DataFrame) -> list[_SplitSummary]:
    """Lines, records, blank lines and bytes per Spark split (the SPLIT row each split ends with)."""
    rows = (
        checked.where(f"{_CHECK} = {_SPLIT_CHECK}")
        .select(_FILE, _BLOCK, _SPLIT_LINES, _SPLIT_RECORDS, _SPLIT_BLANK, _SPLIT_BYTES)
        .collect()
    )
    return [_SplitSummary(*row) for row in rows]


# ---- headers: read from the start of each file, where the files are (driver or server)


#: Bytes read from the start of a file to find its header: a first try, and the most.
_HEADER_BYTES = (64 << 10, 4 << 20)
_UTF8_BOM = b"\xef\xbb\xbf"
#: Files whose headers are read at the same time (object stores answer slowly, in parallel).
_HEADER_THREADS = 16


def _normalized_uri(uri: str) -> str:
    # DataFrame.inputFiles() says file:///x where _metadata.file_path says file:/x.
    return re.sub(r"^file://(?=/)", "file:", uri)


def _read_file_starts(spark, files, settings: _ReadSettings) -> list[tuple]:
    """``(file, header fields or None, why it is malformed or None, starts with a UTF-8 BOM)``.

    Read before any Spark job that splits records, so that every task knows
    where each declared column is in its file (a file split into several tasks
    has its header in the first one only), and whether Spark's line reader
    dropped a byte-order mark from its first line.  Without a header, only the
    first bytes are read.  An empty file has no header, and no records.

    Classic sessions read on the driver (Hadoop's FileSystem for non-local
    URIs).  On Spark Connect the paths name the server's files, not the
    client's: every file start is read there, in one task.
    """
    files = list(files)
    if is_connect(spark):
        return run_on_server(spark, _file_starts, files, settings, _server_file_start)
    return _file_starts(files, settings, partial(_file_start, spark))


def _file_starts(files: list, settings: _ReadSettings, start_of) -> list[tuple]:
    """:func:`_read_file_starts` with ``start_of(uri, limit)`` reading a file's first bytes."""
    def read_one(uri: str):
        if not settings.spec.header:
            start = start_of(uri, len(_UTF8_BOM))
            return _normalized_uri(uri), None, None, start.startswith(_UTF8_BOM)
        for limit in _HEADER_BYTES:
            start = start_of(uri, limit)
            try:
                header, error = R.first_record(
                    start, settings.spec, settings.whole_file, truncated=len(start) >= limit
                )
            except R.Truncated:
                continue
            return _normalized_uri(uri), header, error, start.startswith(_UTF8_BOM)
        return _normalized_uri(uri), None, (
            f"the header is longer than {_HEADER_BYTES[-1] >> 20} MiB (or never ends)"
        ), start.startswith(_UTF8_BOM)

    if len(files) > 1:
        with ThreadPoolExecutor(min(_HEADER_THREADS, len(files))) as pool:
            return list(pool.map(read_one, files))
    return [read_one(uri) for uri in files]


def _file_start(spark, uri: str, limit: int) -> bytes:
    """Up to ``limit`` decompressed bytes from the start of a file (local or Hadoop)."""
    local = _local_path(uri)
    if local is not None:
        return _local_file_start(uri, local, limit)
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(conf).open(path)
    try:
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(path)
        reader = codec.createInputStream(stream) if codec is not None else stream
        buffer = spark.sparkContext._gateway.new_array(jvm.byte, limit)
        count = jvm.org.apache.commons.io.IOUtils.read(reader, buffer)
        return bytes(jvm.java.util.Arrays.copyOf(buffer, count))
    finally:
        stream.close()


#: Decompressors by file extension (the codecs Hadoop picks by extension for the same files).
_LOCAL_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: Hadoop object-store schemes and the names pyarrow knows them by.
_ARROW_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def _local_file_start(uri: str, local: str, limit: int) -> bytes:
    local = urllib.parse.unquote(local) if uri.startswith("file:") else local
    opener = _LOCAL_OPENERS.get(os.path.splitext(local)[1], open)
    with opener(local, "rb") as handle:
        return handle.read(limit)


def _server_file_start(uri: str, limit: int) -> bytes:
    """:func:`_file_start` in a Spark Connect server's Python worker, which has no JVM:
    local and FUSE paths (``/Volumes``, ``dbfs:`` as ``/dbfs``) directly, object stores
    through ``pyarrow.fs`` with the executor's credentials."""
    local = _local_path(uri)
    if local is None and uri.startswith("dbfs:"):
        local = "/dbfs/" + re.sub(r"^dbfs:/*", "", uri)
    if local is not None:
        return _local_file_start(uri, local, limit)
    from pyarrow import fs as pafs

    scheme, rest = uri.split(":", 1)
    try:
        filesystem, inner = pafs.FileSystem.from_uri(
            _ARROW_SCHEMES.get(scheme.lower(), scheme) + ":" + rest)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors vary by scheme
        raise ConfigError(f"cannot open {uri!r} on the Spark Connect server: pyarrow has no "
                          f"file system for it ({exc}); use a path its executors see (e.g. a "
                          "/Volumes/... or /dbfs/... FUSE path)") from None
    with filesystem.open_input_stream(inner, compression="detect") as handle:
        return handle.read(limit)


def _field_layout(declared: DeclaredSchema, headers, spec: R.TextSpec, drift: str) -> B.Layout:
    """Where each declared column is in each file (see :class:`record_batches.Layout`)."""
    names = declared.names
    layout = B.Layout(n_columns=len(names))
    if not spec.header:
        return layout
    problems = []
    for source_file, header, error in headers:
        if error is not None:
            problems.append(f"malformed header in {source_file} ({error})")
            continue
        header = [name.strip() for name in header]
        mismatch = _header_mismatch(header, declared, drift)
        if mismatch:
            problems.append(f"{mismatch} in the header of {source_file}")
            continue
        layout.orders[source_file] = tuple(header.index(n) if n in header else -1 for n in names)
        layout.widths[source_file] = len(header)
    if problems:
        # Cause first (the columns, per file), then the declared schema, shortened.
        more = f" (+{len(problems) - 5} more files)" if len(problems) > 5 else ""
        policy = "" if drift != "error" else "; on_schema_drift='error'"
        raise DataValidationError(
            "; ".join(problems[:5]) + more + f" ({expected_names(names)}{policy})")
    return layout


def _header_mismatch(header: list[str], declared: DeclaredSchema, drift: str) -> Optional[str]:
    names = declared.names
    duplicates = sorted({h for h in header if header.count(h) > 1})
    missing = [n for n in names if n not in header]
    if drift == "allow":
        # Missing nullable columns read as null; a missing NOT NULL column is still an error.
        missing = [n for n in missing if not declared.struct[n].nullable]
    unexpected = [h for h in header if h not in names] if drift == "error" else []
    parts = []
    if missing:
        parts.append(f"missing columns {missing}" + (" (NOT NULL)" if drift == "allow" else ""))
    if unexpected:
        parts.append(f"unexpected columns {unexpected}")
    if duplicates:
        parts.append(f"duplicate columns {duplicates}")
    return " and ".join(parts) or None


def _check_text_records(
    records: DataFrame,
    declared: DeclaredSchema,
    layout: B.Layout,
    settings: _ReadSettings,
    pii,
    policies: Mapping[str, str],
) -> DataFrame:
    fields = declared.struct.fields
    null_value = C.sql_string(settings.null_value)
    line = "line_in_block + 1" if settings.whole_file else "line_in_block"
    texts = records.selectExpr(
        "kind",
        f"raw AS {_RAW}",
        f"source_file AS {_FILE}",
        f"block_start AS {_BLOCK}",
        f"{line} AS {_LINE}",
        f"byte_in_block AS {_BYTE}",
        f"byte_length AS {_LENGTH}",
        f"split_lines AS {_SPLIT_LINES}",
        f"split_records AS {_SPLIT_RECORDS}",
        f"split_blank AS {_SPLIT_BLANK}",
        f"split_bytes AS {_SPLIT_BYTES}",
        "n_fields",
        "n_expected",
        "malformed",
        "bad_encoding",
        *[
            # The null token (empty by default) is a missing value.
            f"CASE WHEN {B.value_column(i)} != {null_value} THEN {B.value_column(i)} END"
            f" AS {_text_col(i)}"
            for i in range(len(fields))
        ],
    )
    casts = [
        f"{C.cast_to(_text_col(i), f.dataType)} AS {_typed_col(i)}" for i, f in enumerate(fields)
    ]
    typed = texts.selectExpr("*", *casts)
    checks = [
        C.Check("bad_encoding IS NOT NULL", "invalid_encoding", value="bad_encoding",
                truncate=False),
        C.Check("malformed IS NOT NULL", "malformed_record", value="malformed", truncate=False),
    ]
    if settings.spec.format == "csv":
        checks += C.field_count_checks("n_fields", "n_expected")
    masker = None if pii is None else pii.raw_masker(settings.spec, layout, declared)
    checks += _all_value_checks(declared, pii, policies)
    return _with_outcome(typed, declared, checks, pii, masker, policies, text_source=True), checks


def _all_value_checks(
    declared: DeclaredSchema, pii=None, policies: Mapping[str, str] = {}, text_columns=None
) -> list[C.Check]:
    """Per-column checks on each value as read (__sparkml_s<i>) and typed (__sparkml_c<i>).

    ``text_columns``: which values were read as text (all of them for CSV and
    JSON; for Parquet, the columns stored as strings).
    """
    checks: list[C.Check] = []
    for i, f in enumerate(declared.struct.fields):
        redact = pii is not None and f.name in pii.policy.columns
        checks += C.value_checks(
            f, declared.constraints_for(f.name), _text_col(i), _typed_col(i), redact=redact,
            non_finite=policies.get(f.name, DEFAULT_NON_FINITE),
            source_is_text=True if text_columns is None else f.name in text_columns,
        )
    return checks


def _with_outcome(
    typed: DataFrame,
    declared: DeclaredSchema,
    checks: list[C.Check],
    pii,
    masker,
    policies: Mapping[str, str],
    text_source: bool,
) -> DataFrame:
    """Keep the typed columns, and the reason/raw/locator of rejected records only.

    PII is replaced here, before the cache: hashed columns hold the keyed hash
    of the value as read, dropped ones null, and the raw text of rejected
    records is masked.  Nothing with the original values is persisted.
    """
    split_row = f"kind = {R.SPLIT}" if text_source else "false"
    with_check = typed.selectExpr("*", f"{C.first_check(checks)} AS {_CHECK}")
    rejected = F.expr(f"NOT ({split_row}) AND {_CHECK} IS NOT NULL")
    typed_columns = []
    for i, f in enumerate(declared.struct.fields):
        action = None if pii is None else pii.policy.columns.get(f.name)
        if action == "hash":
            typed_columns.append(pii.hash_column(F.col(_text_col(i))).alias(_typed_col(i)))
        elif action == "drop":
            typed_columns.append(F.lit(None).cast("string").alias(_typed_col(i)))
        elif policies.get(f.name) == "null":
            finite = f"CASE WHEN NOT {C.non_finite_sql(_typed_col(i))} THEN {_typed_col(i)} END"
            typed_columns.append(F.expr(finite).alias(_typed_col(i)))
        else:
            typed_columns.append(F.col(_typed_col(i)))
    raw = F.when(rejected, F.col(_RAW))
    if masker is not None:
        raw = masker(raw, F.col(_FILE), F.expr(C.code_sql(checks, _CHECK)))
    extra = []
    if text_source:
        extra = [
            F.when(rejected | F.expr(split_row), F.col(_BLOCK)).alias(_BLOCK),
            F.col(_SPLIT_LINES),
            F.col(_SPLIT_RECORDS),
            F.col(_SPLIT_BLANK),
            F.col(_SPLIT_BYTES),
        ]
    return with_check.select(
        *typed_columns,
        F.expr(f"CASE WHEN {split_row} THEN {_SPLIT_CHECK} ELSE {_CHECK} END").alias(_CHECK),
        F.when(rejected, F.expr(C.check_value(checks, _CHECK))).alias(_VALUE),
        # Accepted records keep no raw text: the cache stays close to the typed size.
        raw.alias(_RAW),
        F.when(rejected | F.expr(split_row), F.col(_FILE)).alias(_FILE),
        F.when(rejected, F.col(_LINE)).cast("bigint").alias(_LINE),
        F.when(rejected, F.col(_BYTE)).cast("bigint").alias(_BYTE),
        F.when(rejected, F.col(_LENGTH)).cast("bigint").alias(_LENGTH),
        *extra,
    )


def _count_outcomes(checked: DataFrame, checks: list) -> dict[Optional[str], int]:
    """Records per reason code (None: accepted), in one job."""
    counts: dict = {}
    for row in checked.groupBy(_CHECK).count().collect():
        index = row[_CHECK]
        if index == _SPLIT_CHECK:
            continue
        code = None if index is None else checks[index].code
        counts[code] = counts.get(code, 0) + row["count"]
    return counts


# --------------------------------------------------------- parquet sources


def _read_table_source(spark, paths, fmt: str, version: Optional[int]) -> DataFrame:
    if fmt == "parquet":
        return _reading(lambda: spark.read.parquet(*paths), paths)
    from sparkml_aiaas.data.delta import read_table

    if len(paths) != 1:
        raise ConfigError(f"a Delta source is one table path, not {paths!r}")
    return read_table(spark, paths[0], version=version)


def _check_parquet(
    source: DataFrame, paths, declared: DeclaredSchema, drift: str, pii, fmt, policies
):
    """Check a Parquet or Delta source: columns by name, converted to the declared types."""
    kind = "Parquet" if fmt == "parquet" else "Delta"
    available = set(source.columns)
    missing = [n for n in declared.names if n not in available]
    if drift == "allow":
        missing = [n for n in missing if not declared.struct[n].nullable]
    unexpected = sorted(available - set(declared.names)) if drift == "error" else []
    if missing or unexpected:
        parts = [f"missing columns {missing}"] if missing else []
        if unexpected:
            parts.append(f"unexpected columns {unexpected}")
        raise DataValidationError(
            f"{' and '.join(parts)} in {kind} data at {', '.join(paths)} "
            f"({expected_names(declared.names)}; on_schema_drift={drift!r}; it has "
            f"{len(available)}: {name_list(sorted(available))})"
        )
    fields = declared.struct.fields
    present = [f for f in fields if f.name in available]
    quoted = [C.quote_identifier(f.name) for f in present]
    values = [
        f"{C.quote_identifier(f.name)} AS {_text_col(i)}"
        if f.name in available
        else f"CAST(NULL AS {f.dataType.simpleString()}) AS {_text_col(i)}"
        for i, f in enumerate(fields)
    ]
    locator = [
        f"to_json(struct({', '.join(quoted)})) AS {_RAW}",
        f"_metadata.file_path AS {_FILE}",
        f"CAST(NULL AS BIGINT) AS {_BYTE}",
        f"CAST(NULL AS BIGINT) AS {_LENGTH}",
    ]
    try:
        # The row's 1-based number in its Parquet file locates it (there are no lines).
        originals = _analyzed(
            source.selectExpr(*locator, f"_metadata.row_index + 1 AS {_LINE}", *values))
    except AnalysisException:  # a reader without row indexes (e.g. Delta with deletion vectors)
        originals = source.selectExpr(*locator, f"CAST(NULL AS BIGINT) AS {_LINE}", *values)
    source_types = [
        source.schema[f.name].dataType if f.name in available else f.dataType for f in fields
    ]
    casts = [
        f"{_parquet_cast(_text_col(i), source_type, f.dataType)} AS {_typed_col(i)}"
        for i, (f, source_type) in enumerate(zip(fields, source_types))
    ]
    try:
        typed = _analyzed(originals.selectExpr("*", *casts))
    except AnalysisException as exc:
        raise DataValidationError(_conversion_message(source, declared, exc)) from None
    masker = None if pii is None else pii.json_masker(declared.names)
    text_columns = {
        f.name for f, source_type in zip(fields, source_types)
        if isinstance(source_type, T.StringType)
    }
    checks = _all_value_checks(declared, pii, policies, text_columns)
    checked = _with_outcome(
        typed, declared, checks, pii, masker, policies, text_source=False
    ).persist()
    try:
        # A Parquet count reads only file footers; it is the independent side of the reconciliation.
        read_count = source.count()
        outcomes = _count_outcomes(checked, checks)
    except BaseException:
        checked.unpersist()
        raise
    return checked, checks, read_count, outcomes, None


def _parquet_cast(column_sql: str, source_type: T.DataType, data_type: T.DataType) -> str:
    return column_sql if source_type == data_type else C.cast_to(column_sql, data_type)


def _conversion_message(source: DataFrame, declared: DeclaredSchema, exc: Exception) -> str:
    differing = [
        f"{f.name} ({source.schema[f.name].dataType.simpleString()} -> {f.dataType.simpleString()})"
        for f in declared.struct.fields
        if f.name in source.columns and source.schema[f.name].dataType != f.dataType
    ]
    return (
        f"Parquet columns cannot be converted to the declared types: {', '.join(differing)} "
        f"({_first_line(exc)})"
    )


# --------------------------------------------------------------- finishing


def _finish(
    checked, checks, declared, read_count, outcomes, splits, whole_file, pii, quarantine_path,
    max_reject_fraction,
) -> IngestResult:
    accepted_count = outcomes.get(None, 0)
    by_code = [(code, n) for code, n in outcomes.items() if code is not None]
    reasons = dict(sorted(by_code, key=lambda code_n: (-code_n[1], code_n[0])))
    rejected_count = sum(reasons.values())
    blank_count = 0 if splits is None else sum(s.blank for s in splits)
    counts = {
        "read": read_count, "accepted": accepted_count, "rejected": rejected_count,
        "blank": blank_count,
    }
    if read_count != accepted_count + rejected_count:
        raise DataValidationError(
            f"ingest does not reconcile: read {read_count} records but accepted {accepted_count} "
            f"+ rejected {rejected_count}; did the input change while it was being read?"
        )
    result = IngestResult(
        accepted=_accepted_frame(checked, declared, pii),
        rejected=_rejected_frame(checked, checks, splits, whole_file),
        counts=counts,
        reasons=reasons,
        cached=checked,
    )
    if quarantine_path is not None:
        files = rejected_count // _ROWS_PER_QUARANTINE_FILE + 1
        result.rejected.coalesce(files).write.mode("overwrite").parquet(quarantine_path)
    where = f"; rejected rows written to {quarantine_path}" if quarantine_path else ""
    check_reject_fraction(counts, reasons, max_reject_fraction, where)
    return result


def _accepted_frame(checked: DataFrame, declared: DeclaredSchema, pii) -> DataFrame:
    dropped = set() if pii is None else set(pii.policy.dropped)
    hashed = set() if pii is None else set(pii.policy.hashed)
    return checked.where(f"{_CHECK} IS NULL").selectExpr(
        *[
            _declared_column(i, f, hashed)
            for i, f in enumerate(declared.struct.fields)
            if f.name not in dropped
        ]
    )


def _declared_column(i: int, f: T.StructField, hashed=()) -> str:
    data_type = T.StringType() if f.name in hashed else f.dataType
    placeholder = None if f.nullable else C.non_null_placeholder(data_type)
    # Never null in accepted rows; the coalesce lets the schema say nullable=false as declared.
    value = _typed_col(i) if placeholder is None else f"coalesce({_typed_col(i)}, {placeholder})"
    return f"{value} AS {C.quote_identifier(f.name)}"


def _rejected_frame(checked: DataFrame, checks: list, splits, whole_file: bool) -> DataFrame:
    rejected = checked.where(f"{_CHECK} IS NOT NULL AND {_CHECK} != {_SPLIT_CHECK}")
    line, byte = _LINE, _BYTE
    if splits is not None and not whole_file:
        # Lines and bytes were counted within each split; a split starts where
        # the earlier splits of its file ended (Hadoop's line reader gives each
        # line to the split it starts in).
        if all(s.block_start == 0 for s in splits):
            line = f"{_LINE} + 1"
        else:
            offsets = checked.sparkSession.createDataFrame(
                _split_offsets(splits),
                f"{_FILE} string, {_BLOCK} long, __sparkml_lines_before long, "
                "__sparkml_bytes_before long",
            )
            rejected = rejected.join(F.broadcast(offsets), [_FILE, _BLOCK], "left")
            line = f"{_LINE} + coalesce(__sparkml_lines_before, 0) + 1"
            byte = f"{_BYTE} + coalesce(__sparkml_bytes_before, 0)"
    return rejected.selectExpr(
        f"{_RAW} AS _raw",
        # Messages are written here, for rejected records only (see checks.py); nullif
        # keeps the column nullable, as REJECTED_SCHEMA says.
        f"CAST(nullif({C.reason_sql(checks, _CHECK, _VALUE)}, NULL) AS STRING) AS _reason",
        f"{_FILE} AS _source_file",
        f"CAST({line} AS BIGINT) AS _line",
        f"CAST({byte} AS BIGINT) AS _byte_offset",
        f"{_LENGTH} AS _byte_length",
    )


def _split_offsets(splits) -> list[tuple[str, int, int, int]]:
    """``(file, split start, lines before the split, bytes before its first line)``."""
    # One row per split even if a file was listed twice, so the join cannot multiply records.
    by_split = {(s.source_file, s.block_start): (s.lines, s.bytes) for s in splits}
    offsets, before = [], {}
    for source_file, block_start in sorted(by_split):
        lines, size = before.get(source_file, (0, 0))
        offsets.append((source_file, block_start, lines, size))
        split_lines, split_bytes = by_split[(source_file, block_start)]
        before[source_file] = (lines + split_lines, size + split_bytes)
    return offsets


def check_reject_fraction(counts, reasons, max_reject_fraction, where: str = "") -> None:
    """Raise when more than ``max_reject_fraction`` of the records read were rejected.

    The message gives the counts and the top three reasons, then ``where``
    (e.g. where the rejected rows went).
    """
    if max_reject_fraction is None or counts["read"] == 0:
        return
    fraction = counts["rejected"] / counts["read"]
    if fraction <= max_reject_fraction:
        return
    top = ", ".join(f"{code} ({n})" for code, n in list(reasons.items())[:3])
    raise DataValidationError(
        f"rejected {counts['rejected']} of {counts['read']} records ({fraction:.2%}), more than "
        f"max_reject_fraction={max_reject_fraction}; accepted {counts['accepted']}; "
        f"top reasons: {top}{where}"
    )
