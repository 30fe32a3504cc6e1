"""Executor-resident training blocks, referenced by a tiny cached RDD of keys.

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
"""

from __future__ import annotations

import logging
import pickle
import uuid
from dataclasses import dataclass
from functools import reduce
from typing import List, Optional, Sequence

import numpy as np

from sparkml_aiaas.columns import named_column, vector_as_array
from sparkml_aiaas.core.stats import BlockStats, block_stats, merge_stats
from sparkml_aiaas.errors import DataValidationError

logger = logging.getLogger(__name__)

KEY_SCHEMA = "partition INT, path STRING, rows LONG, stats BINARY"

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
            f"{role} column {column!r} is not in the data; available columns: {df.columns}"
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


def training_frame(df, spec: FeatureSpec, label_col: str, weight_col: Optional[str] = None):
    """Select and type the training columns; raise a clear error for missing or mistyped ones.

    Returns ``(frame, n_features)`` where ``frame`` has the features as
    double columns ``f0..f{d-1}`` or one ``array<double>`` column ``features``,
    then ``label`` and ``weight`` as doubles.
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
        features = [named_column(c).cast("double").alias(f"f{i}")
                    for i, c in enumerate(spec.columns)]
        return df.select(*features, label.alias("label"), weight.alias("weight")), len(spec.columns)

    column = spec.vector_col
    if column not in df.columns:
        raise DataValidationError(
            f"features column {column!r} is not in the data; available columns: {df.columns} "
            "(set featuresCols to train on numeric columns without assembling a vector)"
        )
    data_type = df.schema[column].dataType
    if _type_name(data_type) == "VectorUDT":
        array = vector_as_array(named_column(column))
    elif _type_name(data_type) == "ArrayType" and _type_name(data_type.elementType) in _NUMERIC_TYPES:
        array = named_column(column).cast("array<double>")
    else:
        raise DataValidationError(
            f"features column {column!r} must be a vector or an array of numbers, but its type "
            f"is {data_type.simpleString()}"
        )
    n_features = vector_size(df, column)
    frame = df.select(array.alias("features"), label.alias("label"), weight.alias("weight"))
    return frame, n_features


def _transpose(columns: np.ndarray, rows_per_block: int = 4096) -> np.ndarray:
    """Row-major copy of ``columns.T``, a cache-sized band of rows at a time."""
    d, n = columns.shape
    X = np.empty((n, d), dtype=columns.dtype)
    for start in range(0, n, rows_per_block):
        X[start:start + rows_per_block] = columns[:, start:start + rows_per_block].T
    return X


def _arrow_batch_to_numpy(batch, n_features: int, vector_input: bool):
    """One Arrow batch of a training frame → ``(X, y, w, bad_vector_rows)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    y = batch.column(batch.num_columns - 2).to_numpy(zero_copy_only=False).astype(np.float64)
    w = batch.column(batch.num_columns - 1).to_numpy(zero_copy_only=False).astype(np.float64)
    if not vector_input:
        # Columns land contiguously in a (d, n) array, then one cache-blocked transpose:
        # writing each column straight into a row-major X strides through memory.
        columns = np.empty((n_features, n), dtype=np.float64)
        for j in range(n_features):
            columns[j] = batch.column(j).to_numpy(zero_copy_only=False)
        return _transpose(columns), y, w, 0
    vectors = batch.column(0)
    lengths = pc.fill_null(pc.list_value_length(vectors), -1).to_numpy(zero_copy_only=False)
    good = lengths == n_features
    bad = int(n - good.sum())
    if bad:
        vectors = vectors.filter(pa.array(good))
        y, w = y[good], w[good]
    values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values.reshape(-1, n_features), y, w, bad


def _make_block_writer(fit_id: str, n_features: int, vector_input: bool):
    """The mapInArrow function that writes a partition's block and yields its key row."""

    def write_partition(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        from sparkml_aiaas.engine.block_files import BlockWriter

        context = TaskContext.get()
        partition = context.partitionId()
        writer = BlockWriter(fit_id, partition, context.attemptNumber(), n_features)
        stats = BlockStats.empty(n_features)
        try:
            for batch in batches:
                X, y, w, bad = _arrow_batch_to_numpy(batch, n_features, vector_input)
                stats = merge_stats(stats, block_stats(X, y, w, bad))
                writer.append(X, y, w)
            path = writer.close()
        except BaseException:
            writer.abort()
            raise
        yield pa.RecordBatch.from_pydict(
            {
                "partition": [partition],
                "path": [path],
                "rows": [writer.rows],
                "stats": [pickle.dumps(stats, protocol=pickle.HIGHEST_PROTOCOL)],
            },
            schema=pa.schema([("partition", pa.int32()), ("path", pa.string()),
                              ("rows", pa.int64()), ("stats", pa.binary())]),
        )

    return write_partition


class ResidentBlocks:
    """Training data as executor-resident blocks; use as a context manager.

    Attributes
    ----------
    keys : pyspark.RDD
        Cached RDD of key rows, one per partition.
    stats : BlockStats
        Summary of all rows, merged in partition order.
    n_features : int
    feature_names : list of str
    fit_id : str
        Namespace of this fit's files on every executor.
    """

    def __init__(self, spark, frame, keys, stats: BlockStats, n_features: int,
                 feature_names: List[str], fit_id: str, writer):
        self.spark = spark
        self._frame = frame
        self._writer = writer
        self.keys = keys
        self.stats = stats
        self.n_features = n_features
        self.feature_names = feature_names
        self.fit_id = fit_id
        self.rebuilt_partitions = 0
        self._keys_built = False

    @classmethod
    def build(cls, df, spec: FeatureSpec, label_col: str, weight_col: Optional[str] = None,
              num_partitions: int = 0) -> "ResidentBlocks":
        """Write the blocks (one Spark job) and gather their statistics.

        ``num_partitions`` of 0 means one partition per core of the cluster
        (``defaultParallelism``): one task per core per pass.
        """
        spark = df.sparkSession
        sc = spark.sparkContext
        frame, n_features = training_frame(df, spec, label_col, weight_col)
        target = num_partitions if num_partitions > 0 else max(sc.defaultParallelism, 1)
        if frame.rdd.getNumPartitions() != target:
            frame = frame.repartition(target)
        fit_id = f"{sc.applicationId}-{uuid.uuid4().hex[:12]}"
        writer = _make_block_writer(fit_id, n_features, spec.vector_col is not None)
        keys = frame.mapInArrow(writer, KEY_SCHEMA).rdd.cache()
        blocks = cls(spark, frame, keys, BlockStats.empty(n_features), n_features,
                     spec.feature_names(n_features), fit_id, writer)
        try:
            sc.setJobDescription(f"sparkml_aiaas: build training blocks ({fit_id})")
            rows = sorted(keys.collect(), key=lambda r: r["partition"])
            blocks._keys_built = True
        except BaseException:
            blocks.cleanup()
            raise
        finally:
            sc.setJobDescription(None)
        parts = [pickle.loads(r["stats"]) for r in rows]
        blocks.stats = reduce(merge_stats, parts, BlockStats.empty(n_features))
        return blocks

    @property
    def num_partitions(self) -> int:
        return self.keys.getNumPartitions()

    def rebuild_and_run(self, partitions: Sequence[int], partition_fn):
        """Recompute the given partitions' blocks from the source where the task runs, and run
        ``partition_fn(index, key_rows)`` on them.  Used for tasks that ran away from their files.
        """
        fresh = self._frame.mapInArrow(self._writer, KEY_SCHEMA).rdd
        self.rebuilt_partitions += len(partitions)
        return self.spark.sparkContext.runJob(
            fresh.mapPartitionsWithIndex(partition_fn), lambda it: list(it), list(partitions)
        )

    def cleanup(self) -> None:
        """Delete this fit's block files on the executors and drop the cached keys.

        Never raises: it runs in ``finally`` blocks, where the original error
        matters more.  Files a cleanup task could not reach are removed with
        the executor's Spark local directory when the application stops.
        """
        fit_id = self.fit_id

        def remove(_):
            from sparkml_aiaas.engine.block_files import remove_fit

            yield remove_fit(fit_id)

        sc = self.spark.sparkContext
        sc.setJobDescription(f"sparkml_aiaas: remove training blocks ({fit_id})")
        try:
            if not self._keys_built:
                # The build job failed: running the keys again would redo (and re-fail) it.
                raise RuntimeError("training blocks were never fully built")
            # Locality sends each task to the executor that holds the key.
            self.keys.mapPartitions(remove).collect()
        except Exception:  # keys lost or never built: reach executors blindly
            try:
                n = max(self.num_partitions, sc.defaultParallelism)
                sc.parallelize(range(n), n).mapPartitions(remove).collect()
            except Exception as exc:  # pragma: no cover - Spark itself is failing
                logger.warning("could not remove training blocks %s: %s", fit_id, exc)
        finally:
            sc.setJobDescription(None)
            self.keys.unpersist()

    def __enter__(self) -> "ResidentBlocks":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
