"""Blocks read straight from Parquet files equal blocks built through Spark."""

import os

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkml_aiaas.engine import FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine.parquet_source import (
    RowGroupSlice,
    direct_parquet_files,
    plan_partitions,
    read_partition,
)
from sparkml_aiaas.models import LinearRegression, LogisticRegression

COLS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def parquet_data(spark, tmp_path_factory):
    """600 rows in 3 files of several row groups; int, float and double features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("parquet_source") / "data"
    folder.mkdir()
    frames = []
    for i, rows in enumerate([250, 50, 300]):
        X = rng.standard_normal((rows, 3))
        y = (X @ [1.0, -2.0, 0.5] + 0.3 * rng.standard_normal(rows) > 0).astype(np.int32)
        table = pa.table({
            "a": pa.array(np.round(X[:, 0] * 10).astype(np.int64)),
            "b": pa.array(X[:, 1].astype(np.float32)),
            "c": pa.array(X[:, 2]),
            "label": pa.array(y),
            "w": pa.array(rng.uniform(0.5, 2.0, rows)),
            "id": pa.array(np.arange(rows) + 1000 * i),
        })
        pq.write_table(table, str(folder / f"part-{i}.parquet"), row_group_size=64)
        frames.append(table)
    return str(folder), pa.concat_tables(frames)


def test_direct_read_applies_only_to_plain_column_selections(spark, parquet_data):
    path, _ = parquet_data
    df = spark.read.parquet(path)
    files = direct_parquet_files(df.select(*COLS, "label"), COLS + ["label"])
    assert files is not None and len(files) == 3
    assert all(os.path.isfile(f) for f in files)
    # Anything that changes rows or values takes the general path.
    assert direct_parquet_files(df.filter("a > 0"), COLS) is None
    assert direct_parquet_files(df.withColumn("a", F.col("a") * 2), COLS) is None
    assert direct_parquet_files(df.cache(), COLS) is None
    df.unpersist()
    assert direct_parquet_files(spark.range(10).toDF("a"), ["a"]) is None


def test_plan_splits_rows_evenly_and_reads_them_in_order(parquet_data):
    path, table = parquet_data
    files = sorted(os.path.join(path, f) for f in os.listdir(path))
    for partitions in (1, 2, 3, 7):
        plan = plan_partitions(files, COLS, partitions)
        sizes = [sum(s.stop - s.start for s in part) for part in plan]
        assert sum(sizes) == 600 and max(sizes) - min(sizes) <= 1
        read = [b.column("c").to_numpy() for part in plan for b in read_partition(part, ["c"], 50)]
        np.testing.assert_array_equal(np.concatenate(read), table.column("c").to_numpy())
    assert plan_partitions(files, ["a", "missing"], 2) is None
    piece = RowGroupSlice(files[0], 1, 10, 20)
    (batch,) = list(read_partition([piece], ["a"]))
    np.testing.assert_array_equal(batch.column("a").to_numpy(),
                                  table.column("a").to_numpy()[64 + 10:64 + 20])


@pytest.mark.parametrize("partitions", [2, 3])
def test_blocks_from_parquet_equal_blocks_through_spark(spark, parquet_data, partitions):
    path, _ = parquet_data
    df = spark.read.parquet(path)
    through_spark = df.filter(F.col("w") > -1)  # keeps every row, but is not a plain scan
    with ResidentBlocks.build(df, FeatureSpec(columns=COLS), "label", "w",
                              num_partitions=partitions) as direct, \
            ResidentBlocks.build(through_spark, FeatureSpec(columns=COLS), "label", "w",
                                 num_partitions=partitions) as general:
        assert (direct.source, general.source) == ("parquet", "spark")
        for field in ("count", "weight_sum", "label_sum"):
            assert getattr(direct.stats, field) == pytest.approx(getattr(general.stats, field),
                                                                 rel=1e-12)
        np.testing.assert_allclose(direct.stats.mean, general.stats.mean, rtol=1e-12)
        np.testing.assert_allclose(direct.stats.m2, general.stats.m2, rtol=1e-10)


def test_fit_from_parquet_equals_fit_through_spark(spark, parquet_data):
    path, table = parquet_data
    df = spark.read.parquet(path)
    through_spark = df.filter(F.col("w") > -1)
    params = dict(featuresCols=COLS, weightCol="w", regParam=0.01, tol=1e-12, maxIter=200)
    direct = LogisticRegression(**params).fit(df)
    general = LogisticRegression(**params).fit(through_spark)
    np.testing.assert_allclose(direct.coefficients, general.coefficients, rtol=1e-9, atol=1e-12)
    assert direct.intercept == pytest.approx(general.intercept, rel=1e-9)
    # Regression on an array column read straight from Parquet too.
    arrays = spark.read.parquet(path).select(F.array("a", "b", "c").alias("x"), "c", "w")
    regression = LinearRegression(featuresCol="x", labelCol="c", tol=1e-12, maxIter=100).fit(arrays)
    np.testing.assert_allclose(regression.coefficients, [0, 0, 1], atol=1e-6)


def test_nulls_in_parquet_are_reported_like_spark_reports_them(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkml_aiaas.errors import DataValidationError

    pq.write_table(pa.table({"a": pa.array([1.0, None, 3.0, 4.0]), "label": [0, 1, 0, 1]}),
                   str(tmp_path / "nulls.parquet"))
    df = spark.read.parquet(str(tmp_path / "nulls.parquet"))
    with pytest.raises(DataValidationError, match="'a'.*1 row"):
        LogisticRegression(featuresCols=["a"]).fit(df)
