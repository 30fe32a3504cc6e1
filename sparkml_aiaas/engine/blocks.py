"""Executor-resident training blocks, referenced by a tiny cached RDD (or DataFrame) of keys.

Iterating over a cached RDD of numpy blocks re-sends every block from the JVM
to Python and unpickles it on every pass.  Instead, one ``mapInArrow`` job
turns each partition into a block of files on the executor that computed it
(:mod:`sparkml_aiaas.engine.block_files`) and yields one small *key* row
(folder, row count, summary statistics).  The keys RDD is cached, so Spark's
locality sends each later pass's task to the executor holding the key — and
so the files — and a pass ships only the broadcast parameters in and one
gradient out.  Losing an executor loses its cached keys; lineage recomputes
them, rewriting the files on the executor that runs the recomputation.  A task
that runs where its files are not (its locality wait expired) reports the
partition as missing, and the driver recomputes just those partitions from the
source (:meth:`ResidentBlocks.rebuild_and_run`).

On Spark Connect (no RDDs) the keys are the cached ``mapInArrow`` DataFrame itself and
the same locality applies to its cached partitions; :mod:`sparkml_aiaas.engine.connect_pass`
runs the passes over it.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from dataclasses import dataclass
from functools import reduce
from typing import List, Optional, Sequence

import numpy as np

from sparkml_aiaas.columns import named_column, quoted, vector_as_array
from sparkml_aiaas.core.stats import BlockStats, merge_stats
# The task side of the build lives in block_rows (no pyspark); re-exported for callers.
from sparkml_aiaas.engine.block_rows import (BLOCK_DTYPES, BLOCK_FORMATS,  # noqa: F401
                                             GROUP_COLUMN, SPARSE_DENSITY_THRESHOLD,
                                             BlockOptions, write_block, write_grouped_blocks)
from sparkml_aiaas.errors import DataValidationError, name_list
from sparkml_aiaas.spark_env import (add_job_tag, app_id, cancel_job_tag, default_parallelism,
                                     is_connect, job_description, ship)

logger = logging.getLogger(__name__)

KEY_SCHEMA = "partition INT, path STRING, rows LONG, stats BINARY"
#: Keys of grouped blocks (one block per partition and group, see write_grouped_blocks).
GROUPED_KEY_SCHEMA = "partition INT, path STRING, rows LONG, stats BINARY, group INT"

#: Rows ``auto`` looks at, before the build, to tell dense from sparse vector data.
DENSITY_PROBE_ROWS = 256


# Spark SQL types that are safe to cast to double for training.
_NUMERIC_TYPES = ("ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType",
                  "DecimalType", "BooleanType")


@dataclass(frozen=True)
class FeatureSpec:
    """Where the features come from: one vector/array column, or a list of numeric columns."""

    vector_col: Optional[str] = None
    columns: Optional[Sequence[str]] = None

    def __post_init__(self):
        if bool(self.vector_col) == bool(self.columns):
            raise ValueError("give exactly one of vector_col or columns")

    def input_columns(self) -> List[str]:
        return list(self.columns) if self.columns else [self.vector_col]

    def feature_names(self, n_features: int) -> List[str]:
        if self.columns:
            return list(self.columns)
        return [f"{self.vector_col}[{i}]" for i in range(n_features)]


def _type_name(data_type) -> str:
    return type(data_type).__name__


def _check_numeric(df, column: str, role: str) -> None:
    if column not in df.columns:
        raise DataValidationError(
            f"{role} column {column!r} is not in the data (it has {len(df.columns)}: "
            f"{name_list(df.columns)})"
        )
    data_type = df.schema[column].dataType
    if _type_name(data_type) not in _NUMERIC_TYPES:
        raise DataValidationError(
            f"{role} column {column!r} must be numeric, but its type is {data_type.simpleString()}"
        )


def vector_size(df, column: str) -> int:
    """Size of the vectors in ``column``: from ML attributes when present, else the first row."""
    from pyspark.sql import functions as F

    field = df.schema[column]
    attrs = field.metadata.get("ml_attr", {}) if field.metadata else {}
    if "num_attrs" in attrs:
        return int(attrs["num_attrs"])
    if _type_name(field.dataType) == "VectorUDT":
        expr = F.size(vector_as_array(named_column(column)))
    else:
        expr = F.size(named_column(column))
    first = df.select(expr.alias("n")).where(named_column(column).isNotNull()).first()
    if first is None:
        raise DataValidationError(f"feature column {column!r} holds no vectors (empty or all null)")
    return int(first["n"])



def vectors_look_sparse(df, column: str, n_features: int,
                        rows: int = DENSITY_PROBE_ROWS) -> bool:
    """Whether the first ``rows`` non-null vectors of ``column`` hold under
    :data:`SPARSE_DENSITY_THRESHOLD` non-zero entries (one small job).

    Decides how a vector column is read for ``blockFormat="auto"``: Spark hands Python a
    ``VectorUDT`` either as its struct encoding (indices and values: sparse data stays
    sparse, but the JVM encodes it ~3.5x slower: 3.75 s against 1.09 s for 1M×50 here) or,
    through ``vector_to_array``, as a dense array.
    """
    column_ref = named_column(column)
    sample = [r[0] for r in df.select(column_ref).where(column_ref.isNotNull()).limit(rows)
              .collect()]
    if not sample:
        return False
    nonzeros = sum(int(v.numNonzeros()) for v in sample)
    return nonzeros < SPARSE_DENSITY_THRESHOLD * len(sample) * max(n_features, 1)


def training_frame(df, spec: FeatureSpec, label_col: str, weight_col: Optional[str] = None,
                   keep_vectors: bool = False, group_col: Optional[str] = None):
    """Select and type the training columns; raise a clear error for missing or mistyped ones.

    Returns ``(frame, n_features)`` where ``frame`` has the features as
    double columns ``f0..f{d-1}`` or one ``array<double>`` column ``features``,
    then ``label`` and ``weight`` as doubles.  With ``keep_vectors`` a
    ``VectorUDT`` column stays a vector column instead (Arrow then carries its
    struct encoding, so sparse vectors keep their indices and values).  With
    ``group_col`` an int column :data:`GROUP_COLUMN` ends the frame (grouped blocks).
    """
    from pyspark.sql import functions as F

    _check_numeric(df, label_col, "label")
    if weight_col:
        _check_numeric(df, weight_col, "weight")
    weight = named_column(weight_col).cast("double") if weight_col else F.lit(1.0)
    label = named_column(label_col).cast("double")
    if spec.columns:
        if len(set(spec.columns)) != len(spec.columns):
            raise DataValidationError(f"featuresCols lists a column twice: {list(spec.columns)}")
        for column in spec.columns:
            _check_numeric(df, column, "feature")
        # SQL strings, not Column objects: building three Column expressions per feature
        # costs a dozen py4j round trips each (a second for 50 features).
        exprs = [f"CAST({quoted(c)} AS DOUBLE) AS f{i}" for i, c in enumerate(spec.columns)]
        exprs.append(f"CAST({quoted(label_col)} AS DOUBLE) AS label")
        exprs.append(f"CAST({quoted(weight_col)} AS DOUBLE) AS weight" if weight_col
                     else "CAST(1.0 AS DOUBLE) AS weight")
        if group_col:
            exprs.append(f"CAST({quoted(group_col)} AS INT) AS {GROUP_COLUMN}")
        return df.selectExpr(*exprs), len(spec.columns)

    column = spec.vector_col
    if column not in df.columns:
        raise DataValidationError(
            f"features column {column!r} is not in the data (it has {len(df.columns)}: "
            f"{name_list(df.columns)}; set featuresCols to train on numeric columns without "
            "assembling a vector)"
        )
    data_type = df.schema[column].dataType
    if _type_name(data_type) == "VectorUDT":
        array = named_column(column) if keep_vectors else vector_as_array(named_column(column))
    elif _type_name(data_type) == "ArrayType" and _type_name(data_type.elementType) in _NUMERIC_TYPES:
        array = named_column(column).cast("array<double>")
    else:
        raise DataValidationError(
            f"features column {column!r} must be a vector or an array of numbers, but its type "
            f"is {data_type.simpleString()}"
        )
    n_features = vector_size(df, column)
    columns = [array.alias("features"), label.alias("label"), weight.alias("weight")]
    if group_col:
        columns.append(named_column(group_col).cast("int").alias(GROUP_COLUMN))
    return df.select(*columns), n_features


def _make_block_writer(fit_id: str, n_features: int, vector_input: bool,
                       options: BlockOptions = BlockOptions()):
    """The mapInArrow function that writes a partition's block and yields its key row."""

    def write_partition(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        context = TaskContext.get()
        key = write_block(fit_id, context.partitionId(), context.attemptNumber(), n_features,
                          vector_input, batches, options)
        yield pa.RecordBatch.from_pydict(
            {name: [value] for name, value in key.items()},
            schema=pa.schema([("partition", pa.int32()), ("path", pa.string()),
                              ("rows", pa.int64()), ("stats", pa.binary())]),
        )

    return write_partition


def _make_grouped_block_writer(fit_id: str, n_features: int, vector_input: bool, groups: int,
                               options: BlockOptions = BlockOptions()):
    """The mapInArrow function that writes a partition's blocks, one per group, and yields
    their keys (:data:`GROUPED_KEY_SCHEMA`), in group order."""

    def write_partition(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        context = TaskContext.get()
        keys = write_grouped_blocks(fit_id, context.partitionId(), context.attemptNumber(),
                                    n_features, vector_input, batches, groups, options)
        yield pa.RecordBatch.from_pylist(
            keys, schema=pa.schema([("partition", pa.int32()), ("path", pa.string()),
                                    ("rows", pa.int64()), ("stats", pa.binary()),
                                    ("group", pa.int32())]))

    return write_partition


#: The key a direct Parquet build task yields when the files cannot be read directly
#: (a file lacks a column): the build then takes the general path.
NO_DIRECT_PLAN_ROWS = -1

#: On Connect, up to this many files are planned inside the build's tasks (each reads every
#: footer, a few ms a file) rather than by a job of their own before it (~150 ms a fit).
PLAN_IN_TASK_MAX_FILES = 64


def _make_parquet_block_writer(fit_id: str, n_features: int, plan, source_columns,
                               spec: FeatureSpec, label_col: str, weight_col: Optional[str],
                               options: BlockOptions = BlockOptions(), paths=None,
                               num_partitions: int = 0):
    """The task function of a direct Parquet build: read this partition's row groups with
    pyarrow, shape them like :func:`training_frame`'s rows, write the block, yield its key.

    With ``plan`` None each task plans the split itself from the footers of ``paths`` (the
    same deterministic split for every task), and yields a key with ``rows`` of
    :data:`NO_DIRECT_PLAN_ROWS` when the files cannot be read directly."""

    def write_partition(index, _):
        from pyspark import TaskContext

        from sparkml_aiaas.engine.parquet_source import plan_partitions, read_partition

        slices = (plan if plan is not None
                  else plan_partitions(paths, source_columns, num_partitions))
        if slices is None:
            yield {"partition": index, "path": "", "rows": NO_DIRECT_PLAN_ROWS,
                   "stats": b""}
            return
        batches = (_frame_batch(batch, spec, label_col, weight_col)
                   for batch in read_partition(slices[index], source_columns))
        yield write_block(fit_id, index, TaskContext.get().attemptNumber(), n_features,
                          spec.vector_col is not None, batches, options)

    return write_partition


def _frame_batch(batch, spec: FeatureSpec, label_col: str, weight_col: Optional[str]):
    """A Parquet batch of the source columns → the layout of :func:`training_frame`
    (``f0..f{d-1}`` or ``features``, then ``label``, ``weight``; doubles), as Spark's
    casts would give it (nulls stay null and become NaN in numpy, caught by validation)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    double = pa.float64()
    if spec.columns:
        arrays = [pc.cast(batch.column(c), double) for c in spec.columns]
        names = [f"f{i}" for i in range(len(spec.columns))]
    else:
        arrays = [pc.cast(batch.column(spec.vector_col), pa.list_(double))]
        names = ["features"]
    arrays.append(pc.cast(batch.column(label_col), double))
    arrays.append(pc.cast(batch.column(weight_col), double) if weight_col
                  else pa.array(np.ones(batch.num_rows)))
    return pa.RecordBatch.from_arrays(arrays, names=names + ["label", "weight"])


def _direct_parquet_keys(df, spec: FeatureSpec, label_col: str, weight_col: Optional[str],
                         n_features: int, num_partitions: int, fit_id: str,
                         options: BlockOptions = BlockOptions()):
    """``(make_keys, tasks, writer)`` for a direct Parquet build when ``df`` allows one, else
    None; on Connect ``tasks`` and ``writer`` (its ``mapInArrow`` form) serve rebuilds."""
    from sparkml_aiaas.engine.parquet_source import (connect_parquet_files,
                                                     direct_parquet_files, plan_partitions)
    from sparkml_aiaas.server_tasks import run_on_server

    if spec.vector_col and _type_name(df.schema[spec.vector_col].dataType) != "ArrayType":
        return None  # VectorUDT is a Spark struct encoding: let Spark decode it
    source_columns = list(dict.fromkeys(
        spec.input_columns() + [label_col] + ([weight_col] if weight_col else [])))
    spark = df.sparkSession
    plan = None
    if is_connect(spark):
        paths = connect_parquet_files(df, source_columns)
        if paths is None:
            return None
        if len(paths) > PLAN_IN_TASK_MAX_FILES:
            # The footers are where the files are: on the server, in one task.
            plan = run_on_server(spark, plan_partitions, paths, source_columns,
                                 num_partitions)
            if plan is None:
                return None
    else:
        paths = direct_parquet_files(df, source_columns)
        plan = None if paths is None else plan_partitions(paths, source_columns, num_partitions)
        if plan is None:
            return None
    write = _make_parquet_block_writer(fit_id, n_features, plan, source_columns, spec,
                                       label_col, weight_col, options, paths=paths,
                                       num_partitions=num_partitions)
    if not is_connect(spark):
        sc = spark.sparkContext

        def make_keys():
            return sc.parallelize(range(num_partitions), num_partitions).mapPartitionsWithIndex(
                write)

        return make_keys, None, None

    def arrow_write(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        for _ in batches:  # the task's one range row
            pass
        key = next(write(TaskContext.get().partitionId(), None))
        yield pa.RecordBatch.from_pydict(
            {name: [value] for name, value in key.items()},
            schema=pa.schema([("partition", pa.int32()), ("path", pa.string()),
                              ("rows", pa.int64()), ("stats", pa.binary())]))

    tasks = spark.range(0, num_partitions, 1, num_partitions)

    def make_connect_keys():
        return tasks.mapInArrow(arrow_write, KEY_SCHEMA)

    return make_connect_keys, tasks, arrow_write


def _live_executors(sc) -> Optional[frozenset]:
    """``host:port`` of each live executor (and the driver), or None when Spark cannot say."""
    try:
        infos = sc._jsc.sc().statusTracker().getExecutorInfos()
        return frozenset(f"{info.host()}:{info.port()}" for info in infos)
    except Exception:  # pragma: no cover - a gateway without a status tracker
        return None


def partition_row_counts(frame) -> List[int]:
    """Rows in each partition of ``frame``, in partition order (one job; no column is read
    where the source allows).  On Connect trailing empty partitions are not seen."""
    from pyspark.sql import functions as F

    from sparkml_aiaas.spark_env import is_connect

    rows = (frame.select(F.spark_partition_id().alias("p")).groupBy("p").count().collect())
    counts = {int(r["p"]): int(r["count"]) for r in rows}
    n = max(counts, default=-1) + 1
    if not is_connect(frame.sparkSession):
        n = frame.rdd.getNumPartitions()
    return [counts.get(p, 0) for p in range(n)]


def _deterministic_partitions(frame, target: int):
    """``(frame in target partitions, rows each partition must hold)``: the blocks of
    :mod:`~sparkml_aiaas.engine.partitioning`: boundaries by global row index.

    The same rows in the same order → the same blocks → bit-identical sums, whatever the
    input's partitioning, session kind (classic or Connect) or application history, and
    also when lineage rebuilds a block.  One job counts each partition's rows; when the
    partitions already are the blocks (a frame split evenly, e.g. a cached
    ``createDataFrame``) nothing moves, else each row's global index goes through a hash
    shuffle whose keys land block ``b`` in partition ``b``, and since a shuffle delivers
    rows in arrival order, they are sorted back by it.
    """
    from pyspark.sql import functions as F

    from sparkml_aiaas.engine.partitioning import (aligned, block_bounds, block_of_sql,
                                                   partition_keys)

    counts = partition_row_counts(frame)
    if aligned(counts, target):
        return frame, counts
    expected = [b - a for a, b in zip(block_bounds(sum(counts), target),
                                      block_bounds(sum(counts), target)[1:])]
    total = max(sum(counts), 1)
    offsets, start = [], 0
    for count in counts:
        offsets.append(start)
        start += count
    position, key = "__sparkml_aiaas_position", "__sparkml_aiaas_block_key"
    # monotonically_increasing_id = (partition << 33) + offset in the partition.
    offset_in_partition = "(monotonically_increasing_id() & 8589934591)"
    starts = ", ".join(f"{o}L" for o in offsets) or "0L"
    index = (f"element_at(array({starts}), spark_partition_id() + 1) + "
             f"{offset_in_partition}")
    keys = ", ".join(str(k) for k in partition_keys(target))
    with_position = frame.withColumn(position, F.expr(index))
    return (with_position
            .withColumn(key, F.expr(f"element_at(array({keys}), "
                                    f"{block_of_sql(position, total, target)} + 1)"))
            .repartition(target, key).sortWithinPartitions(position)
            .drop(position, key)), expected


def _check_block_rows(rows, expected: List[int]) -> None:
    """Warn when the blocks do not hold the rows their global-index split promised."""
    got = [0] * max(len(expected), max((r["partition"] for r in rows), default=-1) + 1)
    for r in rows:
        got[r["partition"]] += int(r["rows"])
    if got != list(expected) + [0] * (len(got) - len(expected)):
        logger.warning(
            "the training input's partitioning changed between two reads of it (an "
            "uncached nondeterministic step upstream, such as repartitionByRange or a "
            "sample): its blocks hold %s rows instead of %s, so this fit may differ from "
            "another on the same rows in its last bits; cache the input for reproducible "
            "fits", got, expected)


def _cached(spark, keys):
    """``keys.cache()``; on a Connect server that refuses caching (some serverless
    offerings), one clear error: the cached keys are what sends each pass to its files."""
    try:
        return keys.cache()
    except Exception as exc:
        if not is_connect(spark):
            raise
        from sparkml_aiaas.errors import ConfigError

        raise ConfigError(
            f"this Spark Connect server refused to cache the training blocks' keys "
            f"({str(exc).splitlines()[0][:200]}): the engine needs DataFrame.cache() to send "
            "each pass to the executor holding its block; train on a cluster that allows it "
            "(Databricks: standard or dedicated access mode), see docs/connect.md") from None


class ResidentBlocks:
    """Training data as executor-resident blocks; use as a context manager.

    Attributes
    ----------
    keys : pyspark.RDD or pyspark.sql.DataFrame
        Cached key rows, one per partition (per partition and group for grouped
        blocks): an RDD on a classic session, a DataFrame on Spark Connect.
    stats : BlockStats
        Summary of all rows, merged in partition order.
    n_features : int
    feature_names : list of str
    fit_id : str
        Namespace of this fit's files on every executor.
    """

    def __init__(self, spark, make_keys, stats: BlockStats, n_features: int,
                 feature_names: List[str], fit_id: str, source: str = "spark"):
        self.spark = spark
        #: Spark Connect: the keys are a DataFrame, passes run through connect_pass.
        self.connect = is_connect(spark)
        # make_keys() → a fresh, uncached RDD whose partitions write their blocks and
        # yield their keys: cached once for the fit, recomputed for tasks away from files.
        self._make_keys = make_keys
        self.keys = _cached(spark, make_keys())
        #: "parquet" when the blocks were read straight from Parquet files, else "spark".
        self.source = source
        self.stats = stats
        #: Grouped blocks: the statistics of each group's rows (list indexed by group).
        self.group_stats: Optional[List[BlockStats]] = None
        self.n_features = n_features
        self.feature_names = feature_names
        self.fit_id = fit_id
        self.rebuilt_partitions = 0
        self._keys_built = False
        #: Tag of every job this fit starts (build, passes), so that cleanup can cancel them.
        self.job_tag = f"sparkml_aiaas-{fit_id}"
        #: The executors alive when the blocks were built (None: unknown).
        self._executors_at_build = None if self.connect else _live_executors(spark.sparkContext)
        self._num_partitions: Optional[int] = None
        #: Connect: the partitioned training frame and the build's writer (for rebuilds).
        self._rebuild_from = None

    @classmethod
    def build(cls, df, spec: FeatureSpec, label_col: str, weight_col: Optional[str] = None,
              num_partitions: int = 0, block_format: str = "auto",
              block_dtype: str = "float64", group_col: Optional[str] = None,
              groups: int = 0, _direct: bool = True) -> "ResidentBlocks":
        """Write the blocks (one Spark job) and gather their statistics.

        ``num_partitions`` of 0 means one partition per core of the cluster
        (``defaultParallelism``): one task per core per pass.  ``block_format``
        (:data:`BLOCK_FORMATS`) and ``block_dtype`` (:data:`BLOCK_DTYPES`) set how
        the blocks store the features (see :class:`BlockOptions`).

        With ``group_col`` (an int column holding ``0 … groups − 1``, e.g. a
        cross-validation fold) each partition writes one block per group, whose key
        carries ``group``; :attr:`group_stats` then summarizes each group's rows.
        """
        options = BlockOptions(block_format, block_dtype)
        spark = df.sparkSession
        connect = is_connect(spark)
        keep_vectors = options.format == "sparse" or (
            options.format == "auto" and spec.vector_col in df.columns
            and _type_name(df.schema[spec.vector_col].dataType) == "VectorUDT"
            and vectors_look_sparse(df, spec.vector_col, vector_size(df, spec.vector_col)))
        frame, n_features = training_frame(df, spec, label_col, weight_col,
                                           keep_vectors=keep_vectors, group_col=group_col)
        target = num_partitions if num_partitions > 0 else default_parallelism(spark)
        fit_id = f"{app_id(spark)}-{uuid.uuid4().hex[:12]}"
        make_keys, source, direct = None, "parquet", None
        if _direct and not group_col:  # pyarrow reads the files' columns, not a group
            direct = _direct_parquet_keys(df, spec, label_col, weight_col, n_features, target,
                                          fit_id, options)
        if direct is not None:
            make_keys, frame, writer = direct
        expected_rows = None
        if make_keys is None:
            frame, expected_rows = _deterministic_partitions(frame, target)
            vector_input = spec.vector_col is not None
            if group_col:
                writer = _make_grouped_block_writer(fit_id, n_features, vector_input, groups,
                                                    options)
                schema = GROUPED_KEY_SCHEMA
            else:
                writer = _make_block_writer(fit_id, n_features, vector_input, options)
                schema = KEY_SCHEMA

            def make_keys():
                keys = frame.mapInArrow(writer, schema)
                return keys if connect else keys.rdd

            source = "spark"
        blocks = cls(spark, make_keys, BlockStats.empty(n_features), n_features,
                     spec.feature_names(n_features), fit_id, source)
        if connect:
            blocks._rebuild_from = (frame, writer)
        try:
            add_job_tag(spark, blocks.job_tag)  # removed by cleanup()
            with job_description(spark, f"sparkml_aiaas: build training blocks ({fit_id})"):
                rows = sorted(blocks.keys.collect(),
                              key=lambda r: (r["partition"], r["group"] if group_col else 0))
            blocks._keys_built = True
        except BaseException:
            blocks.cleanup()
            raise
        if direct is not None and any(r["rows"] == NO_DIRECT_PLAN_ROWS for r in rows):
            # The tasks found a file without one of the columns: Spark reads them instead.
            blocks.cleanup()
            return cls.build(df, spec, label_col, weight_col, num_partitions, block_format,
                             block_dtype, group_col, groups, _direct=False)
        blocks._num_partitions = (max(r["partition"] for r in rows) + 1) if rows else 0
        if expected_rows is not None:
            _check_block_rows(rows, expected_rows)
        parts = [pickle.loads(r["stats"]) for r in rows]
        blocks.stats = reduce(merge_stats, parts, BlockStats.empty(n_features))
        if group_col:
            blocks.group_stats = [
                reduce(merge_stats, [p for p, r in zip(parts, rows) if r["group"] == g],
                       BlockStats.empty(n_features)) for g in range(groups)]
        return blocks

    @property
    def num_partitions(self) -> int:
        if self._num_partitions is not None:
            return self._num_partitions
        return self.keys.getNumPartitions()

    def ship(self, value, what: str = "the pass's parameters"):
        """Send ``value`` to this fit's tasks: a broadcast on a classic session, inside the
        plan on Connect (refused, with the sizes, past the server's message limit)."""
        if self.connect:
            from sparkml_aiaas.engine.connect_pass import check_plan_size

            check_plan_size(self.spark, value, what)
        return ship(self.spark, value)

    def describe(self, text: str):
        """A context naming the jobs started inside it (classic sessions' Spark UI)."""
        return job_description(self.spark, text)

    def rebuild_and_run(self, partitions: Sequence[int], partition_fn):
        """Recompute the given partitions' blocks from the source where the task runs, and run
        ``partition_fn(index, key_rows)`` on them.  Used for tasks that ran away from their files.
        """
        self.rebuilt_partitions += len(partitions)
        if self.connect:
            from sparkml_aiaas.engine import connect_pass

            frame, writer = self._rebuild_from
            return connect_pass.rebuild_and_run(frame, writer, partitions, partition_fn)
        fresh = self._make_keys()
        return self.spark.sparkContext.runJob(
            fresh.mapPartitionsWithIndex(partition_fn), lambda it: list(it), list(partitions)
        )

    def cleanup(self) -> None:
        """Cancel this fit's running jobs, delete its block files on the executors and drop
        the cached keys.

        Never raises: it runs in ``finally`` blocks, where the original error
        matters more.  Files a cleanup task could not reach (an executor lost with
        no live executor left on its machine) are removed with the executor's
        Spark local directory when the application stops.
        """
        fit_id = self.fit_id

        # Both read their input to the end: a Python worker whose task left input unread
        # is not reused, and the next fit would pay for fresh workers (re-importing torch:
        # 4.6 s instead of 1.8 s for a repeated torch fit here).
        def remove(rows):
            from sparkml_aiaas.engine.block_files import remove_fit

            for _ in rows:
                pass
            yield remove_fit(fit_id)

        def sweep(rows):
            from sparkml_aiaas.engine.block_files import remove_fit

            for _ in rows:
                pass
            yield remove_fit(fit_id, siblings=True)

        self._cancel_jobs()
        try:
            with self.describe(f"sparkml_aiaas: remove training blocks ({fit_id})"):
                # The build job failed: running the keys again would redo (and re-fail) it.
                blind = not self._keys_built
                if self._keys_built:
                    try:
                        # Locality sends each task to the executor that holds the key.
                        self._run_each_partition(self.keys, remove)
                    except Exception:  # keys lost: reach the executors blindly
                        blind = True
                # An executor lost during the fit (killed, out of memory) never removes its
                # files, and its replacement gets a new local directory beside the old one,
                # while the recomputed key may well sit on another executor: the keys' job
                # would leave the dead executor's folder behind until the application ends.
                # So after a loss, one task per core (idle executors each get one) removes
                # this fit's folders in every local directory of its machine.
                if blind or self._executors_lost():
                    n = max(self.num_partitions, default_parallelism(self.spark))
                    if self.connect:
                        tasks = self.spark.range(0, n, 1, n)
                    else:
                        tasks = self.spark.sparkContext.parallelize(range(n), n)
                    self._run_each_partition(tasks, sweep)
        except Exception as exc:  # pragma: no cover - Spark itself is failing
            logger.warning("could not remove training blocks %s: %s", fit_id, exc)
        finally:
            self.keys.unpersist()

    def _run_each_partition(self, data, fn) -> None:
        """Run ``fn(rows) -> iterator of counts`` on every partition of an RDD (classic) or a
        DataFrame (Connect, through ``mapInArrow``)."""
        if not self.connect:
            data.mapPartitions(fn).collect()
            return

        def arrow_fn(batches):
            import pyarrow as pa

            for count in fn(batches):
                yield pa.RecordBatch.from_pydict({"n": [int(count)]},
                                                 schema=pa.schema([("n", pa.int64())]))

        from sparkml_aiaas.engine.connect_pass import single_stream

        with single_stream(self.spark):
            data.mapInArrow(arrow_fn, "n LONG").collect()

    def _cancel_jobs(self) -> None:
        """Cancel this fit's jobs still running, and stop tagging new jobs with its tag.

        A no-op after a normal end.  Needed at Ctrl-C: PySpark's SIGINT handler calls
        ``cancelAllJobs`` through the py4j connection that the interrupted call (a
        pass's ``collect``) is still reading from, which fails ("reentrant call"), so
        the pass job runs on; the removal job would then wait behind its tasks for as
        long as a pass lasts (the process hangs after Ctrl-C) and delete files under
        them.  Cancelling by tag leaves other threads' jobs alone (on Connect the tag
        is the session's operation tag, interrupted the same way).
        """
        try:
            cancel_job_tag(self.spark, self.job_tag)
        except Exception as exc:  # pragma: no cover - Spark itself is failing
            logger.warning("could not cancel the jobs of %s: %s", self.fit_id, exc)

    def _executors_lost(self) -> bool:
        """Whether an executor alive at build time is gone (True when Spark cannot say;
        False on Connect, which does not list executors)."""
        if self._executors_at_build is None:
            return False
        now = _live_executors(self.spark.sparkContext)
        return now is None or bool(self._executors_at_build - now)

    def __enter__(self) -> "ResidentBlocks":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
