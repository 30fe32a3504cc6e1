"""Atomic Parquet output: the result appears complete or not at all.

Spark writes into a hidden staging folder beside the target; only after the
write job has committed is the staging folder renamed onto the target (the
old output, if any, is moved aside first and deleted after).  Renames go
through Hadoop's FileSystem API, so this holds on local disks and HDFS, where
a directory rename is atomic.  On object stores (S3, GCS, ABFS without
hierarchical namespace) a rename is a copy: use a Delta sink there.

On Spark Connect (no JVM here, and the paths are the server's) the same steps run on
the server: :mod:`~sparkml_aiaas.scoring.server_fs` does them in one task after the
write, over ``os`` for local and FUSE paths and ``pyarrow.fs`` for URIs.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Optional, Sequence

from sparkml_aiaas.errors import SparkmlAiaasError
from sparkml_aiaas.spark_env import is_connect


def _hadoop_fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, hadoop_path, jvm


def _replace_with(fs, staging, target, aside, aside_error: str, into_error: str) -> None:
    """Rename ``staging`` onto ``target``; an existing target is moved to ``aside`` first
    (so each rename stays atomic) and deleted after, or put back if the swap fails."""
    if fs.exists(target):
        if not fs.rename(target, aside):
            raise SparkmlAiaasError(aside_error)
        if not fs.rename(staging, target):
            fs.rename(aside, target)
            raise SparkmlAiaasError(into_error)
        fs.delete(aside, True)
    elif not fs.rename(staging, target):
        raise SparkmlAiaasError(into_error)


def write_parquet_atomically(df, path: str, mode: str = "overwrite",
                             partition_by: Optional[Sequence[str]] = None) -> str:
    """Write ``df`` as Parquet at ``path`` atomically; returns the absolute path (a plain
    path for the local filesystem, else the fully qualified URI).

    Parameters
    ----------
    mode : {"overwrite", "error"}
        ``error`` refuses an existing target before any work is done.
    """
    spark = df.sparkSession
    if mode not in ("overwrite", "error"):
        raise SparkmlAiaasError(f"output mode must be 'overwrite' or 'error', got {mode!r}")
    if is_connect(spark):
        return _write_atomically_on_server(df, path, mode, partition_by)
    fs, target, jvm = _hadoop_fs(spark, path)
    target = fs.makeQualified(target)
    if mode == "error" and fs.exists(target):
        raise SparkmlAiaasError(f"output {path!r} already exists (mode 'error')")
    parent = target.getParent()
    token = uuid.uuid4().hex[:12]
    staging = jvm.org.apache.hadoop.fs.Path(parent, f".{target.getName()}.staging-{token}")
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(staging.toString())
        fs.mkdirs(parent)
        _replace_with(fs, staging, target,
                      jvm.org.apache.hadoop.fs.Path(parent, f".{target.getName()}.old-{token}"),
                      f"could not move the previous output {path!r} aside",
                      f"could not move the new output into {path!r}")
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)
    written = target.toString()
    return written[len("file:"):] if written.startswith("file:") else written


RUN_PARTITION = "run_id"


def run_partition_path(output: str, run_id: str) -> str:
    return output.rstrip("/") + f"/{RUN_PARTITION}={run_id}"


def write_run_partition(df, output: str, run_id: str,
                        partition_by: Optional[Sequence[str]] = None,
                        mode: str = "overwrite") -> str:
    """Write one run's rows as the partition ``<output>/run_id=<run_id>/``, atomically.

    The rows are written (optionally partitioned further, e.g. by a date column)
    into a hidden staging folder inside ``output`` (Spark's readers skip names
    starting with ``.``), then renamed onto the run's partition: a previous
    output of the same run is moved aside first and deleted after.  Readers of
    ``output`` see each run complete or not at all, and re-running a run
    replaces its rows instead of duplicating them.  ``df`` must not hold a
    ``run_id`` column (the folder name carries it).

    Returns the run partition's path.
    """
    if RUN_PARTITION in df.columns:
        raise SparkmlAiaasError("drop the run_id column: the partition folder carries it")
    spark = df.sparkSession
    if mode not in ("overwrite", "error"):
        raise SparkmlAiaasError(f"output mode must be 'overwrite' or 'error', got {mode!r}")
    if is_connect(spark):
        return _write_run_on_server(df, output, run_id, partition_by, mode)
    fs, root, jvm = _hadoop_fs(spark, output)
    root = fs.makeQualified(root)
    Path = jvm.org.apache.hadoop.fs.Path
    name = f"{RUN_PARTITION}={run_id}"
    target = Path(root, name)
    if mode == "error" and fs.exists(target):
        raise SparkmlAiaasError(f"run {run_id!r} already has output in {output!r} (mode 'error')")
    token = uuid.uuid4().hex[:12]
    staging = Path(root, f".staging-{name}-{token}")
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(staging.toString())
        fs.delete(Path(staging, "_SUCCESS"), False)
        _replace_with(fs, staging, target, Path(root, f".old-{name}-{token}"),
                      f"could not move run {run_id!r}'s previous output aside",
                      f"could not move run {run_id!r}'s output into place")
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)
    _sweep_leftovers(fs, root, name)
    written = target.toString()
    return written[len("file:"):] if written.startswith("file:") else written


def _write_then_commit(df, staging: str, partition_by, commit_args) -> None:
    """Spark Connect: write ``df`` into ``staging``, then swap it into place in one server
    task (:func:`~sparkml_aiaas.scoring.server_fs.commit`); a failed write's staging
    folder is removed on the server."""
    from sparkml_aiaas.scoring import server_fs
    from sparkml_aiaas.server_tasks import run_on_server

    spark = df.sparkSession
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(staging)
    except BaseException:
        # Best effort: the original error matters more, and the next commit of a run
        # sweeps what a failed attempt left.
        with contextlib.suppress(Exception):
            run_on_server(spark, server_fs.delete, staging)
        raise
    run_on_server(spark, server_fs.commit, staging, *commit_args)


def _write_atomically_on_server(df, path: str, mode: str, partition_by) -> str:
    """:func:`write_parquet_atomically` on Spark Connect (same steps, on the server)."""
    from sparkml_aiaas.scoring import server_fs
    from sparkml_aiaas.server_tasks import run_on_server

    target = server_fs.checked_path(path)
    if mode == "error" and run_on_server(df.sparkSession, server_fs.exists, target):
        raise SparkmlAiaasError(f"output {path!r} already exists (mode 'error')")
    parent, name = target.rsplit("/", 1)
    token = uuid.uuid4().hex[:12]
    _write_then_commit(df, f"{parent}/.{name}.staging-{token}", partition_by, (
        target, f"{parent}/.{name}.old-{token}",
        f"could not move the previous output {path!r} aside",
        f"could not move the new output into {path!r}"))
    return server_fs.plain_path(target)


def _write_run_on_server(df, output: str, run_id: str, partition_by, mode: str) -> str:
    """:func:`write_run_partition` on Spark Connect (same steps, on the server)."""
    from sparkml_aiaas.scoring import server_fs
    from sparkml_aiaas.server_tasks import run_on_server

    root = server_fs.checked_path(output)
    name = f"{RUN_PARTITION}={run_id}"
    target = f"{root}/{name}"
    if mode == "error" and run_on_server(df.sparkSession, server_fs.exists, target):
        raise SparkmlAiaasError(f"run {run_id!r} already has output in {output!r} (mode 'error')")
    token = uuid.uuid4().hex[:12]
    _write_then_commit(df, f"{root}/.staging-{name}-{token}", partition_by, (
        target, f"{root}/.old-{name}-{token}",
        f"could not move run {run_id!r}'s previous output aside",
        f"could not move run {run_id!r}'s output into place",
        [f".staging-{name}-", f".old-{name}-"]))
    return server_fs.plain_path(target)


def write_run_delta(df, output: str, run_id: str,
                    partition_by: Optional[Sequence[str]] = None,
                    mode: str = "overwrite") -> dict:
    """Replace run ``run_id``'s rows of the Delta table ``output`` by ``df``'s rows,
    in one Delta transaction (:func:`sparkml_aiaas.data.delta.replace_where`).

    The table is partitioned by ``run_id`` and then by ``partition_by``: it is
    created so by the first run, and an existing table must be partitioned the
    same way.  ``df`` holds the ``run_id`` column, with ``run_id`` on every row.
    A first run adds its rows; a re-run removes the run's previous files and
    adds the new ones in the same commit, so readers see the old output or the
    new one, never both or neither, and the previous output stays readable by
    time travel (``read_table(..., version=report.delta_version - 1)``).
    ``mode="error"`` refuses a run that already has rows in the table.

    Returns what :func:`~sparkml_aiaas.data.delta.replace_where` returns.
    """
    from sparkml_aiaas.data.delta import replace_where

    if mode not in ("overwrite", "error"):
        raise SparkmlAiaasError(f"output mode must be 'overwrite' or 'error', got {mode!r}")
    if RUN_PARTITION not in df.columns:
        raise SparkmlAiaasError("the rows to write need the run_id column")
    if mode == "error" and _delta_run_exists(df.sparkSession, output, run_id):
        raise SparkmlAiaasError(
            f"run {run_id!r} is already in the Delta table {output!r} (mode 'error')")
    return replace_where(df, output, RUN_PARTITION, run_id, partition_by=partition_by)


def _delta_run_exists(spark, output: str, run_id: str) -> bool:
    from pyspark.sql import functions as F

    from sparkml_aiaas.data.delta import is_delta_table, read_table

    if not is_delta_table(spark, output):
        return False
    table = read_table(spark, output, format="delta")
    return bool(table.where(F.col(RUN_PARTITION) == run_id).limit(1).count())


def _sweep_leftovers(fs, root, name: str) -> None:
    """Remove what killed attempts of this same run left (hidden ``.staging-<run>-*`` and
    ``.old-<run>-*`` folders): this attempt committed, so they can only be dead weight."""
    for status in fs.listStatus(root):
        entry = status.getPath().getName()
        if entry.startswith((f".staging-{name}-", f".old-{name}-")):
            fs.delete(status.getPath(), True)


def read_scores(spark, output: str):
    """Read a scoring output folder (all runs) with ``run_id`` as a string column.

    Partition type inference is turned off for this read, so run ids such as
    ``2026-11-22`` or ``0123`` stay strings.
    """
    key = "spark.sql.sources.partitionColumnTypeInference.enabled"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "false")
    try:
        frame = spark.read.parquet(output)
        frame.schema  # resolve the schema (and partition types) while the setting holds
        return frame
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
