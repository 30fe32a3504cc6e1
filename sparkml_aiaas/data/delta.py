"""Delta Lake tables: read (with time travel), append, overwrite, merge and replace-where.

Two engines, chosen per session:

delta-spark
    When the session has Delta's SQL extension configured and the class
    ``io.delta.tables.DeltaTable`` loads through the JVM, reads and writes go
    through ``format("delta")``, ``versionAsOf`` and ``DeltaTable.merge``.
fallback (Spark + delta-rs)
    Otherwise Spark writes the Parquet files into a hidden staging folder in
    the table root; they are moved into the root under a name prefix unique
    to the commit, their statistics (``numRecords``, ``minValues``,
    ``maxValues``, ``nullCount``) are computed from the Parquet footers with
    pyarrow, and they are committed to the Delta log with ``deltalake``
    (delta-rs) in one transaction.  Reads ask delta-rs for the active files
    of the requested version and hand them to ``spark.read.parquet`` with the
    table's schema.  Merge goes through delta-rs and is limited to sources of
    at most :data:`MERGE_ROW_LIMIT` rows.

Atomicity: the commit to the log is the single atomic step.  Files written
before a failed commit are not part of any version (readers never see them);
they are orphans that ``VACUUM`` removes.

:func:`replace_where` deletes the rows with ``column = value`` and writes
new ones in one transaction (delta-spark: ``replaceWhere``; fallback: the
table is partitioned by ``column``, so the rows to delete are exactly the
files of one partition, whose Remove actions are committed with the new
files' Add actions).

:func:`write_table` with the fallback writes unpartitioned tables only (only
:func:`replace_where` writes partitioned ones) and refuses tables whose
protocol needs reader features it does not implement (deletion vectors,
column mapping, ...) or writer features it cannot honour (constraints,
generated/identity columns, ...): use delta-spark for those.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Optional, Sequence

from sparkml_aiaas.errors import ConfigError, DataValidationError, InputNotFoundError
from sparkml_aiaas.server_tasks import run_where_paths_are
from sparkml_aiaas.spark_env import is_connect, require_classic

__all__ = [
    "MERGE_ROW_LIMIT",
    "FORMATS",
    "MODES",
    "delta_spark_available",
    "read_table",
    "write_table",
    "replace_where",
    "replace_predicate",
    "is_delta_table",
    "table_version",
]

#: Largest source (in rows) that ``mode="merge"`` accepts without delta-spark:
#: the fallback collects the source to the driver as an Arrow table and merges
#: it with delta-rs on the driver.  Larger upserts need delta-spark.
MERGE_ROW_LIMIT = 1_000_000

#: Formats :func:`read_table` accepts; :func:`write_table` writes ``delta`` and ``parquet``.
FORMATS = ("delta", "parquet", "orc", "json", "csv")
MODES = ("append", "overwrite", "merge")

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_TABLE_CLASS = "io.delta.tables.DeltaTable"

#: Reader table features the fallback reader handles (they do not change how
#: the Parquet files are read).
_SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
#: Writer features the fallback writer cannot honour when it adds files.
_UNSUPPORTED_WRITER_FEATURES = frozenset({
    "columnMapping", "checkConstraints", "generatedColumns", "identityColumns", "rowTracking",
    "icebergCompatV1", "icebergCompatV2", "typeWidening", "changeDataFeed",
})
#: Legacy writer versions 3-6 imply constraints / generated columns / CDF /
#: column mapping / identity columns.
_LEGACY_WRITER_FEATURES = {3: "checkConstraints", 4: "generatedColumns/changeDataFeed",
                           5: "columnMapping", 6: "identityColumns"}
#: Strings longer than this get no min/max in the stats (Delta truncates
#: them; omitting is the safe equivalent).
_MAX_STAT_STRING = 32
_STAGING_PREFIX = "_sparkml_staging-"


# --------------------------------------------------------------------- engine


def delta_spark_available(spark) -> bool:
    """True when ``spark`` has Delta's SQL extension configured and its classes load."""
    try:
        extensions = spark.conf.get("spark.sql.extensions", "") or ""
    except Exception:  # noqa: BLE001 - a session without the key
        extensions = ""
    if _DELTA_EXTENSION not in extensions:
        return False
    if is_connect(spark):
        # The extension is the server's setting and its classes load there, where this
        # client cannot look (delta-spark's Python API speaks Spark Connect).
        return True
    try:
        jvm = spark.sparkContext._jvm
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(_DELTA_TABLE_CLASS, True, loader)
        return True
    except Exception:  # noqa: BLE001 - Py4JJavaError (ClassNotFound), Spark Connect
        return False


def _deltalake():
    try:
        import deltalake
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "Delta tables need either delta-spark configured on the session or the "
            "'deltalake' package (pip install 'sparkml_aiaas[delta]')"
        ) from None
    return deltalake


def _local(uri: str) -> str:
    """A local path for file URIs and plain paths; other URIs unchanged."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if uri.startswith("file:"):
        return uri[len("file:"):]
    if "://" in uri:
        return uri
    return os.path.abspath(uri)


def _open_delta(uri: str, version: Optional[int] = None):
    deltalake = _deltalake()
    from deltalake.exceptions import TableNotFoundError

    try:
        return deltalake.DeltaTable(_local(uri), version=version)
    except TableNotFoundError:
        raise InputNotFoundError(f"no Delta table at {uri!r}") from None
    except Exception as exc:  # noqa: BLE001 - delta-rs reports a missing version generically
        if version is not None:
            raise InputNotFoundError(
                f"Delta table {uri!r} has no version {version}: {str(exc).splitlines()[0]}"
            ) from None
        raise


def _is_delta_table(uri: str) -> bool:
    return _deltalake().DeltaTable.is_deltatable(_local(uri))


def _check_readable(dt, uri: str) -> None:
    """Refuse tables whose reader protocol the fallback does not implement."""
    proto = dt.protocol()
    config = dt.metadata().configuration or {}
    if proto.min_reader_version == 2 or (config.get("delta.columnMapping.mode") or "none") != "none":
        raise DataValidationError(
            f"Delta table {uri!r} uses the reader feature 'columnMapping', which the Spark+delta-rs "
            "fallback does not implement; read it with delta-spark (io.delta:delta-spark on the "
            "session with spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension)"
        )
    if proto.min_reader_version > 3:
        raise DataValidationError(
            f"Delta table {uri!r} needs reader version {proto.min_reader_version}; the fallback "
            "reads versions 1-3: use delta-spark"
        )
    unsupported = sorted(set(proto.reader_features or ()) - _SUPPORTED_READER_FEATURES)
    if unsupported:
        raise DataValidationError(
            f"Delta table {uri!r} uses reader feature(s) {unsupported} (e.g. deletionVectors, "
            "columnMapping), which the Spark+delta-rs fallback does not implement; read it "
            "with delta-spark"
        )


def _check_writable(dt, uri: str, partition_columns: Sequence[str] = ()) -> None:
    """Refuse what the fallback cannot write; ``partition_columns`` are the ones
    the write expects the table to have (none for :func:`write_table`)."""
    _check_readable(dt, uri)
    proto = dt.protocol()
    unsupported = sorted(set(proto.writer_features or ()) & _UNSUPPORTED_WRITER_FEATURES)
    if proto.writer_features is None and proto.min_writer_version in _LEGACY_WRITER_FEATURES:
        unsupported.append(_LEGACY_WRITER_FEATURES[proto.min_writer_version])
    config = dt.metadata().configuration or {}
    if any(key.startswith("delta.constraints.") for key in config):
        unsupported.append("checkConstraints")
    if unsupported:
        raise DataValidationError(
            f"Delta table {uri!r} uses writer feature(s) {sorted(set(unsupported))} that the "
            "Spark+delta-rs fallback cannot honour; write it with delta-spark"
        )
    existing = list(dt.metadata().partition_columns or [])
    if existing and not partition_columns:
        raise DataValidationError(
            f"Delta table {uri!r} is partitioned by {existing}; the "
            "Spark+delta-rs fallback writes unpartitioned tables only: use delta-spark"
        )
    if existing != list(partition_columns):
        raise DataValidationError(
            f"Delta table {uri!r} is partitioned by {existing}, not by {list(partition_columns)} "
            "as this write needs: write to a new table (or rewrite this one with delta-spark)"
        )


def _spark_schema(dt):
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(pa.schema(dt.schema().to_arrow()))


# ----------------------------------------------------------------------- read


def read_table(spark, uri: str, format: str = "delta", version: Optional[int] = None):
    """Read the table at ``uri`` as a DataFrame.

    Parameters
    ----------
    format : str
        ``delta`` (default) or any of :data:`FORMATS` (read with Spark as is).
    version : int, optional
        Delta only: the table version to read (time travel); latest when omitted.
    """
    fmt = _check_format(format, FORMATS)
    if version is not None:
        if fmt != "delta":
            raise ConfigError(f"version= applies to Delta tables only, not format {fmt!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(f"version must be a non-negative integer, not {version!r}")
    if fmt != "delta":
        return _read_plain(spark, uri, fmt)
    if delta_spark_available(spark):
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(uri)
    return _read_fallback(spark, uri, version)


def _read_plain(spark, uri: str, fmt: str):
    from pyspark.errors import AnalysisException

    try:
        return spark.read.format(fmt).load(uri)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise InputNotFoundError(f"input path {uri!r} does not exist") from None
        raise


def _read_fallback(spark, uri: str, version: Optional[int]):
    # delta-rs reads the log where the table's paths are: here, or on a Connect server.
    schema, partition_columns, groups = run_where_paths_are(spark, _fallback_files, uri,
                                                            version)
    if not groups:
        return spark.createDataFrame([], schema)
    if not partition_columns:
        return spark.read.schema(schema).parquet(*groups[()])
    return _read_partitioned(spark, schema, partition_columns, groups)


def _fallback_files(uri: str, version: Optional[int]):
    """``(Spark schema, partition columns, {partition values: data file paths})`` of the
    table's active files at ``version`` (the key is ``()`` when unpartitioned)."""
    dt = _open_delta(uri, version)
    _check_readable(dt, uri)
    partition_columns = list(dt.metadata().partition_columns or [])
    if not partition_columns:
        files = dt.file_uris()
        return _spark_schema(dt), partition_columns, {(): files} if files else {}
    return _spark_schema(dt), partition_columns, _partition_groups(dt, uri, partition_columns)


def _partition_groups(dt, uri: str, partition_columns: Sequence[str]) -> dict[tuple, list[str]]:
    from urllib.parse import unquote

    import pyarrow as pa

    base = _local(uri).rstrip("/")
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    groups: dict[tuple, list[str]] = {}
    for add in adds:
        key = tuple(add.get(f"partition.{c}") for c in partition_columns)
        # Add paths are URIs relative to the root: decode them (Spark writes ':'
        # in a partition value as '%3A' on disk, which the log holds as '%253A').
        groups.setdefault(key, []).append(f"{base}/{unquote(add['path'])}")
    return groups


def _read_partitioned(spark, schema, partition_columns: Sequence[str],
                      groups: dict[tuple, list[str]]):
    """Files grouped by partition values; each group gets its values as literal columns."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_schema = T.StructType([f for f in schema.fields if f.name not in partition_columns])
    types = {f.name: f.dataType for f in schema.fields}
    frames = []
    for values, paths in groups.items():
        frame = spark.read.schema(data_schema).parquet(*paths)
        for name, value in zip(partition_columns, values):
            frame = frame.withColumn(name, F.lit(value).cast(types[name]))
        frames.append(frame.select(*schema.names))
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


# ---------------------------------------------------------------------- write


def write_table(df, uri: str, format: str = "delta", mode: str = "append",
                keys: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Write ``df`` to the table at ``uri``; returns what was committed.

    Parameters
    ----------
    format : {"delta", "parquet"}
    mode : {"append", "overwrite", "merge"}
        ``merge`` (Delta only) upserts on ``keys``: rows whose keys match a
        table row replace it, the others are inserted.  Without delta-spark the
        source may have at most :data:`MERGE_ROW_LIMIT` rows.
    keys : sequence of str
        Merge keys; required for (and only for) ``mode="merge"``.

    Returns
    -------
    dict
        ``version`` (the committed table version; None for Parquet), ``files``
        (paths of the data files added, relative to the table root), ``rows``
        (rows written: for merge, the source rows), ``engine``
        (``delta-spark``, ``delta-rs`` or ``spark``).

    The DataFrame's columns must match the table's (names and types, in any
    order); there is no schema evolution.
    """
    fmt = _check_format(format, ("delta", "parquet"))
    if mode not in MODES:
        raise ConfigError(f"unknown write mode {mode!r}; expected one of {list(MODES)}")
    if mode == "merge":
        if fmt != "delta":
            raise ConfigError(f"mode 'merge' needs format 'delta', not {fmt!r}")
        keys = _check_keys(keys)
    elif keys:
        raise ConfigError(f"keys are used by mode 'merge' only, not mode {mode!r}")
    spark = df.sparkSession
    if fmt == "parquet":
        _require_classic_writer(spark)
        return _write_parquet(df, uri, mode)
    if delta_spark_available(spark):
        return _write_delta_spark(df, uri, mode, keys)
    _require_classic_writer(spark)
    return _write_fallback(df, uri, mode, keys)


def _require_classic_writer(spark) -> None:
    """The Spark + delta-rs writer moves and lists the files Spark wrote through the
    driver's Hadoop FileSystem, which a Connect client does not have."""
    require_classic(spark, "writing tables without delta-spark (the Spark + delta-rs "
                    "writer, Parquet appends)", "configure delta-spark on the Connect server "
                    "(spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension)")


def _check_format(fmt: str, allowed: Sequence[str]) -> str:
    if not isinstance(fmt, str) or fmt.lower() not in allowed:
        raise ConfigError(f"unknown table format {fmt!r}; expected one of {list(allowed)}")
    return fmt.lower()


def _check_keys(keys) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"mode 'merge' needs keys: a non-empty list of column names, not {keys!r}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"merge keys repeat a column: {list(keys)}")
    return list(keys)


def _check_columns(df_schema, table_schema, uri: str, keys: Optional[Sequence[str]] = None) -> None:
    if keys:
        for where, schema in (("DataFrame", df_schema), ("table", table_schema)):
            missing = [k for k in keys if k not in schema.names]
            if missing:
                raise DataValidationError(
                    f"merge key(s) {missing} not in the {where} columns {schema.names} ({uri!r})"
                )
    # simpleString leaves nullability (also of nested fields) out of the comparison.
    ours = {f.name: f.dataType.simpleString() for f in df_schema.fields}
    theirs = {f.name: f.dataType.simpleString() for f in table_schema.fields}
    problems = []
    extra = [n for n in ours if n not in theirs]
    missing = [n for n in theirs if n not in ours]
    if extra:
        problems.append(f"columns not in the table: {extra}")
    if missing:
        problems.append(f"table columns missing from the DataFrame: {missing}")
    changed = [f"{n} ({ours[n]} vs table {theirs[n]})"
               for n in ours if n in theirs and ours[n] != theirs[n]]
    if changed:
        problems.append(f"columns of another type: {changed}")
    if problems:
        raise DataValidationError(
            f"DataFrame schema does not match Delta table {uri!r} (no schema evolution): "
            + "; ".join(problems)
        )


def _hadoop_fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, fs.makeQualified(hadoop_path), jvm


def _write_parquet(df, uri: str, mode: str) -> dict[str, Any]:
    """Plain Parquet: overwrite is atomic (see scoring.sink); append adds files."""
    from sparkml_aiaas.scoring.sink import write_parquet_atomically

    if mode == "overwrite":
        write_parquet_atomically(df, uri, mode="overwrite")
        fs, root, _ = _hadoop_fs(df.sparkSession, uri)
        names = sorted(s.getPath().getName() for s in fs.listStatus(root)
                       if s.getPath().getName().endswith(".parquet"))
        rows = sum(_parquet_rows(_child(uri, n)) for n in names)
        return {"version": None, "files": names, "rows": rows, "engine": "spark"}
    staged = _stage_files(df, uri)
    return {"version": None, "files": [s["path"] for s in staged],
            "rows": sum(s["rows"] for s in staged), "engine": "spark"}


def _child(uri: str, name: str) -> str:
    return f"{_local(uri).rstrip('/')}/{name}"


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    fs, inner = _arrow_fs(path)
    with fs.open_input_file(inner) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _arrow_fs(path: str):
    from pyarrow import fs as pafs

    if "://" not in path:
        return pafs.LocalFileSystem(), path
    return pafs.FileSystem.from_uri(path)


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _stage_files(df, uri: str, partition_by: Optional[Sequence[str]] = None
                 ) -> list[dict[str, Any]]:
    """Spark writes ``df`` as Parquet into a hidden staging folder in the table
    root; the files move into the root as ``<token>-<spark name>`` (with
    ``partition_by``: into Spark's ``<col>=<value>/...`` folders under the root).
    Returns one dict per file: path (relative to the root, not URI-encoded),
    size, modification time, rows, stats JSON, partition values (strings, None
    for null)."""
    from urllib.parse import unquote

    spark = df.sparkSession
    token = uuid.uuid4().hex[:16]
    fs, root, jvm = _hadoop_fs(spark, _local(uri) if "://" not in uri else uri)
    Path = jvm.org.apache.hadoop.fs.Path
    staging = Path(root, _STAGING_PREFIX + token)
    moved = []
    try:
        writer = df.write.mode("error")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(staging.toString())
        listing, found = fs.listFiles(staging, True), []
        while listing.hasNext():
            found.append(listing.next().getPath())
        depth = fs.makeQualified(staging).depth()
        for path in found:
            name = path.getName()
            if not name.endswith(".parquet") or name.startswith(("_", ".")):
                continue
            folders, parent = [], path.getParent()
            while parent.depth() > depth:  # the partition folders, innermost first
                folders.insert(0, parent.getName())
                parent = parent.getParent()
            target_dir = Path(root, "/".join(folders)) if folders else root
            target = Path(target_dir, f"{token}-{name}")
            if folders:
                fs.mkdirs(target_dir)
            if not fs.rename(path, target):
                raise DataValidationError(f"could not move written file {name!r} into {uri!r}")
            values = {}
            for folder in folders:  # Spark escapes special characters as %XX
                key, _, value = folder.partition("=")
                values[unquote(key)] = None if value == _HIVE_NULL else unquote(value)
            moved.append((target, "/".join(folders + [target.getName()]), values))
    except BaseException:
        for target, _, _ in moved:  # never committed: remove rather than leave orphans
            fs.delete(target, False)
        raise
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)
    staged = []
    for target, relative, values in moved:
        status = fs.getFileStatus(target)
        rows, stats = _file_stats(_child(uri, relative))
        staged.append({
            "path": relative,
            "size": int(status.getLen()),
            "modification_time": int(status.getModificationTime()),
            "rows": rows,
            "stats": stats,
            "partition_values": values,
        })
    return staged


def _unstage(spark, uri: str, staged: list[dict[str, Any]]) -> None:
    """Delete staged files that will not be committed."""
    fs, root, jvm = _hadoop_fs(spark, _local(uri) if "://" not in uri else uri)
    for s in staged:
        fs.delete(jvm.org.apache.hadoop.fs.Path(root, s["path"]), False)


def _file_stats(path: str) -> tuple[int, str]:
    """(rows, Delta stats JSON) of one Parquet file from its footer.

    ``nullCount`` covers every top-level primitive column; ``minValues`` /
    ``maxValues`` only integer, string (at most 32 characters) and date
    columns, whose Parquet statistics mean the same as Delta's.  Floating
    point columns get no min/max (NaN handling differs between writers), nor
    do decimals, timestamps and nested columns: stats are optional per column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, inner = _arrow_fs(path)
    with fs.open_input_file(inner) as handle:
        meta = pq.ParquetFile(handle).metadata
        arrow_schema = pq.ParquetFile(handle).schema_arrow
    columns = {}
    for i in range(meta.num_columns):
        column_path = meta.schema.column(i).path
        if "." not in column_path:
            columns[column_path] = i
    mins, maxs, nulls = {}, {}, {}
    for name, index in columns.items():
        arrow_type = arrow_schema.field(name).type
        with_minmax = (pa.types.is_integer(arrow_type) or pa.types.is_string(arrow_type)
                       or pa.types.is_large_string(arrow_type) or pa.types.is_date32(arrow_type))
        null_count, lo, hi, minmax_ok = 0, None, None, with_minmax
        for rg in range(meta.num_row_groups):
            col = meta.row_group(rg).column(index)
            st = col.statistics
            if st is None or not st.has_null_count:
                null_count = None
                minmax_ok = False
                break
            null_count += st.null_count
            if not minmax_ok:
                continue
            if col.num_values - st.null_count == 0:
                continue  # all null in this row group: no bound to take
            if not st.has_min_max:
                minmax_ok = False
                continue
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
        if null_count is not None:
            nulls[name] = null_count
        if minmax_ok and lo is not None:
            if isinstance(lo, str) and (len(lo) > _MAX_STAT_STRING or len(hi) > _MAX_STAT_STRING):
                continue
            mins[name] = lo.isoformat() if hasattr(lo, "isoformat") else lo
            maxs[name] = hi.isoformat() if hasattr(hi, "isoformat") else hi
    stats = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return meta.num_rows, json.dumps(stats)


def _write_fallback(df, uri: str, mode: str, keys: Optional[list[str]]) -> dict[str, Any]:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    deltalake = _deltalake()
    from deltalake.transaction import AddAction, create_table_with_add_actions

    exists = _is_delta_table(uri)
    dt = _open_delta(uri) if exists else None
    if dt is not None:
        _check_writable(dt, uri)
        table_schema = _spark_schema(dt)
        _check_columns(df.schema, table_schema, uri, keys)
        # Columns in the table's order so that the files match its schema.
        df = df.select(*table_schema.names)
        _check_not_null(df, table_schema, uri)
    elif keys:
        _check_columns(df.schema, df.schema, uri, keys)
        _check_unique_keys_spark(df, keys, uri)
    if mode == "merge" and dt is not None:
        return _merge_fallback(df, uri, dt, keys)

    staged = _stage_files(df, uri)
    adds = [AddAction(s["path"], s["size"], {}, s["modification_time"], True, s["stats"])
            for s in staged]
    if dt is None:
        # First write (any mode, merge included: nothing to match yet) creates
        # the table.  Columns are nullable, as delta-spark makes them for a
        # DataFrame write.
        arrow_schema = to_arrow_schema(df.schema, timezone="UTC")
        arrow_schema = pa.schema([f.with_nullable(True) for f in arrow_schema])
        create_table_with_add_actions(_local(uri), deltalake.Schema.from_arrow(arrow_schema),
                                      adds, mode="error")
    else:
        dt.create_write_transaction(adds, "overwrite" if mode == "overwrite" else "append",
                                    dt.schema())
    version = _open_delta(uri).version()
    return {"version": version, "files": [s["path"] for s in staged],
            "rows": sum(s["rows"] for s in staged), "engine": "delta-rs"}


# ------------------------------------------------------------- replace-where


#: Partition column types the fallback writes: their Spark folder values are
#: the Delta partition value strings.
_PARTITION_TYPES = ("string", "tinyint", "smallint", "int", "bigint", "date", "boolean")


def replace_where(df, uri: str, column: str, value, partition_by: Optional[Sequence[str]] = None
                  ) -> dict[str, Any]:
    """Replace the rows of the Delta table at ``uri`` where ``column = value`` by
    ``df``'s rows, in one transaction (readers see the old rows or the new ones,
    never both, never neither); creates the table if there is none.

    The table is partitioned by ``[column, *partition_by]`` (created so; an
    existing table must be), so the rows replaced are exactly the files of one
    ``column`` partition.  Every row of ``df`` must have ``column = value``
    (else nothing is committed and :class:`DataValidationError` is raised),
    and its columns must match the table's (names and types, any order).

    Parameters
    ----------
    column : str
        The column that identifies the rows to replace (e.g. ``run_id``).
    value : str or int
        Its value (a non-empty string, or an integer).
    partition_by : sequence of str, optional
        Further partition columns, after ``column`` (e.g. a date column).

    Returns
    -------
    dict
        As :func:`write_table` (``version``, ``files``, ``rows`` written,
        ``engine``) plus ``removed_files``: how many data files the commit
        removed (0 when ``value`` had no rows).

    Engines: delta-spark writes with ``mode("overwrite")`` and the
    ``replaceWhere`` option.  The fallback stages the Parquet files with Spark
    (partitioned) and commits their Add actions with Remove actions for the
    active files of partition ``column=value`` through delta-rs (an overwrite
    with a partition filter); partition columns must then be of a type in
    :data:`_PARTITION_TYPES`.  Nothing is collected to the driver.
    """
    if not isinstance(column, str) or not column:
        raise ConfigError(f"column must be a column name, not {column!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ConfigError(f"value must be a non-empty string or an integer, not {value!r}")
    if isinstance(partition_by, str):
        partition_by = [partition_by]
    partition_columns = [column, *(partition_by or [])]
    if not all(isinstance(c, str) and c for c in partition_columns) \
            or len(set(partition_columns)) != len(partition_columns):
        raise ConfigError(f"partition columns must be distinct column names: {partition_columns}")
    missing = [c for c in partition_columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"partition column(s) {missing} not in the DataFrame columns {df.columns}")
    if len(partition_columns) == len(df.columns):
        raise DataValidationError("a Delta table needs a column that is not a partition column")
    if delta_spark_available(df.sparkSession):
        return _replace_delta_spark(df, uri, column, value, partition_columns)
    _require_classic_writer(df.sparkSession)
    return _replace_fallback(df, uri, column, value, partition_columns)


def _sql_literal(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replace_predicate(column: str, value) -> str:
    """The Spark SQL predicate ``column = value`` (name and value quoted)."""
    return f"`{column.replace('`', '``')}` = {_sql_literal(value)}"


def _replace_delta_spark(df, uri: str, column: str, value,
                         partition_columns: list[str]) -> dict[str, Any]:
    from delta.tables import DeltaTable

    spark = df.sparkSession
    if DeltaTable.isDeltaTable(spark, uri):
        table = DeltaTable.forPath(spark, uri)
        _check_columns(df.schema, table.toDF().schema, uri)
        existing = list(table.detail().first()["partitionColumns"] or [])
        if existing != partition_columns:
            raise DataValidationError(
                f"Delta table {uri!r} is partitioned by {existing}, not by {partition_columns} "
                "as this write needs: write to a new table"
            )
    # replaceWhere checks that every written row matches the predicate (delta-spark
    # fails the write otherwise) and removes the matching rows in the same commit.
    (df.write.format("delta").mode("overwrite")
       .option("replaceWhere", replace_predicate(column, value))
       .partitionBy(*partition_columns)
       .save(uri))
    return _delta_spark_result(spark, uri, "numOutputRows")


def _replace_fallback(df, uri: str, column: str, value,
                      partition_columns: list[str]) -> dict[str, Any]:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    deltalake = _deltalake()
    from deltalake.transaction import AddAction, create_table_with_add_actions

    wrong = [f"{f.name} ({f.dataType.simpleString()})" for f in df.schema.fields
             if f.name in partition_columns and f.dataType.simpleString() not in _PARTITION_TYPES]
    if wrong:
        raise ConfigError(
            f"the Spark+delta-rs fallback partitions by columns of type {list(_PARTITION_TYPES)} "
            f"only, not {wrong}: use delta-spark, or cast the column(s)"
        )
    dt = _open_delta(uri) if _is_delta_table(uri) else None
    if dt is not None:
        _check_writable(dt, uri, partition_columns)
        table_schema = _spark_schema(dt)
        _check_columns(df.schema, table_schema, uri)
        df = df.select(*table_schema.names)
        _check_not_null(df, table_schema, uri)
    expected = str(value)
    staged = _stage_files(df, uri, partition_columns)
    stray = sorted({str(s["partition_values"].get(column)) for s in staged} - {expected})
    if stray:
        _unstage(df.sparkSession, uri, staged)
        raise DataValidationError(
            f"rows written to replace {column} = {value!r} in {uri!r} have other {column} "
            f"values: {stray[:5]}; nothing was committed"
        )
    adds = [AddAction(s["path"], s["size"], s["partition_values"], s["modification_time"],
                      True, s["stats"]) for s in staged]
    removed = 0
    if dt is None:
        arrow_schema = to_arrow_schema(df.schema, timezone="UTC")
        arrow_schema = pa.schema([f.with_nullable(True) for f in arrow_schema])
        create_table_with_add_actions(_local(uri), deltalake.Schema.from_arrow(arrow_schema),
                                      adds, mode="error", partition_by=partition_columns)
    else:
        current = pa.table(dt.get_add_actions(flatten=True))
        if current.num_rows:
            removed = current.column(f"partition.{column}").to_pylist().count(
                value if isinstance(value, str) else int(value))
        # Overwrite with a partition filter: delta-rs adds Remove actions for the active
        # files of partition column=value to this commit, beside the new files' Adds.
        dt.create_write_transaction(adds, "overwrite", dt.schema(),
                                    partition_by=partition_columns,
                                    partition_filters=[(column, "=", expected)])
    version = _open_delta(uri).version()
    return {"version": version, "files": [s["path"] for s in staged],
            "rows": sum(s["rows"] for s in staged), "engine": "delta-rs",
            "removed_files": removed}


def _check_not_null(df, table_schema, uri: str) -> None:
    """Nulls in a column the table declares NOT NULL are refused (one Spark pass,
    only for tables that have such columns)."""
    from pyspark.sql import functions as F

    required = [f.name for f in table_schema.fields if not f.nullable]
    if not required:
        return
    counts = df.select([F.count(F.when(F.col(f"`{n}`").isNull(), 1)).alias(n)
                        for n in required]).first()
    bad = {n: counts[n] for n in required if counts[n]}
    if bad:
        raise DataValidationError(
            f"null values in NOT NULL column(s) of Delta table {uri!r}: {bad} (column: null rows)"
        )


def _check_unique_keys_spark(df, keys: list[str], uri: str) -> None:
    dup = df.groupBy(*[f"`{k}`" for k in keys]).count().where("count > 1").limit(1).collect()
    if dup:
        example = {k: dup[0][k] for k in keys}
        raise DataValidationError(
            f"merge source has keys on several rows (e.g. {example}); each key of {keys} "
            f"must appear once to merge into {uri!r}"
        )


def _merge_fallback(df, uri: str, dt, keys: list[str]) -> dict[str, Any]:
    rows = df.limit(MERGE_ROW_LIMIT + 1).count()
    if rows > MERGE_ROW_LIMIT:
        raise DataValidationError(
            f"merge source has more than MERGE_ROW_LIMIT={MERGE_ROW_LIMIT:,} rows; the "
            "Spark+delta-rs fallback merges on the driver: use delta-spark (configure "
            "io.delta:delta-spark with spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension)"
        )
    source = df.toArrow()
    _check_unique_keys(source, keys, uri)
    before = _active_paths(dt)
    predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    (dt.merge(source=source, predicate=predicate, source_alias="s", target_alias="t")
       .when_matched_update_all()
       .when_not_matched_insert_all()
       .execute())
    after = _open_delta(uri)
    return {"version": after.version(), "files": sorted(_active_paths(after) - before),
            "rows": source.num_rows, "engine": "delta-rs"}


def _active_paths(dt) -> set[str]:
    import pyarrow as pa

    return set(pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist())


def _check_unique_keys(source, keys: list[str], uri: str) -> None:
    import pyarrow.compute as pc

    grouped = source.group_by(keys).aggregate([([], "count_all")])
    dup = grouped.filter(pc.greater(grouped.column("count_all"), 1))
    if dup.num_rows:
        example = {k: dup.column(k)[0].as_py() for k in keys}
        raise DataValidationError(
            f"merge source has {dup.num_rows} key(s) on several rows (e.g. {example}); "
            f"each key of {keys} must appear once to merge into {uri!r}"
        )


# ----------------------------------------------------------------- delta-spark


def _write_delta_spark(df, uri: str, mode: str, keys: Optional[list[str]]) -> dict[str, Any]:
    from delta.tables import DeltaTable

    spark = df.sparkSession
    exists = DeltaTable.isDeltaTable(spark, uri)
    if exists:
        _check_columns(df.schema, DeltaTable.forPath(spark, uri).toDF().schema, uri, keys)
    elif keys:
        _check_columns(df.schema, df.schema, uri, keys)
        _check_unique_keys_spark(df, keys, uri)
    if mode == "merge" and exists:
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        (DeltaTable.forPath(spark, uri).alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute())
        row_metric = "numSourceRows"
    else:
        df.write.format("delta").mode("overwrite" if mode == "overwrite" else "append").save(uri)
        row_metric = "numOutputRows"
    return _delta_spark_result(spark, uri, row_metric)


def _delta_spark_result(spark, uri: str, row_metric: str) -> dict[str, Any]:
    """What the table's last commit did (version, added files, rows, removed files)."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, uri).history(1).collect()[0]
    metrics = last["operationMetrics"] or {}
    version = int(last["version"])
    log = f"{uri.rstrip('/')}/_delta_log/{version:020d}.json"
    files = [r["path"] for r in spark.read.json(log).where("add IS NOT NULL")
             .select("add.path").collect()] if "add" in spark.read.json(log).columns else []
    return {"version": version, "files": sorted(files), "rows": int(metrics.get(row_metric, 0)),
            "engine": "delta-spark", "removed_files": int(metrics.get("numRemovedFiles", 0))}


# --------------------------------------------------------------------- version


def is_delta_table(spark_or_none, uri: str) -> bool:
    """True when there is a Delta table at ``uri`` (delta-spark when configured on
    ``spark_or_none``, else delta-rs)."""
    if spark_or_none is not None and delta_spark_available(spark_or_none):
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(spark_or_none, uri))
    return run_where_paths_are(spark_or_none, _is_delta_table, uri)


def table_version(spark_or_none, uri: str) -> int:
    """The current version of the Delta table at ``uri`` (to record what was read).

    Uses delta-spark when ``spark_or_none`` is a session with Delta configured,
    else delta-rs (no Spark needed)."""
    if spark_or_none is not None and delta_spark_available(spark_or_none):
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark_or_none, uri):
            raise InputNotFoundError(f"no Delta table at {uri!r}")
        return int(DeltaTable.forPath(spark_or_none, uri).history(1).collect()[0]["version"])
    return run_where_paths_are(spark_or_none, _latest_version, uri)


def _latest_version(uri: str) -> int:
    return int(_open_delta(uri).version())
