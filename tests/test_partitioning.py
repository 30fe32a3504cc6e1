"""Block boundaries by global row index (engine/partitioning.py): Spark's hash reproduced
in Python, and the same rows giving the same blocks whatever the input partitioning."""

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkml_aiaas.engine.partitioning import (aligned, block_bounds, block_of_sql,
                                               partition_keys, spark_hash_int)


def test_hash_matches_spark(spark):
    values = [0, 1, -1, 7, 42, 2**31 - 1, -2**31, 123456789]
    rows = spark.createDataFrame([(v,) for v in values], "v INT").selectExpr("v", "hash(v) AS h")
    assert {r["v"]: r["h"] for r in rows.collect()} == {v: spark_hash_int(v) for v in values}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_keys_land_in_their_partition(spark, n):
    keys = partition_keys(n)
    frame = spark.createDataFrame([(k,) for k in keys], "k INT").repartition(n, "k")
    placed = frame.selectExpr("k", "spark_partition_id() AS p").collect()
    assert {r["k"]: r["p"] for r in placed} == {k: b for b, k in enumerate(keys)}


@given(total=st.integers(1, 10_000), n=st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_block_formula_matches_bounds(total, n):
    bounds = block_bounds(total, n)
    for i in {0, total - 1, total // 2, bounds[min(1, n)] - 1, bounds[n // 2]}:
        if 0 <= i < total:
            block = eval(block_of_sql("i", total, n).replace("CAST(", "(").replace(" AS INT)", ")")
                         .replace(" DIV ", " // ").replace("LEAST", "min").replace("GREATEST", "max"),
                         {"i": i})
            assert bounds[block] <= i < bounds[block + 1]


def test_aligned():
    assert aligned([3, 3, 4], 3) and aligned([5], 1)
    assert not aligned([4, 3, 3], 3) and not aligned([5, 5], 3) and not aligned([0, 10], 2)


def test_same_rows_on_any_input_partitioning_give_the_same_blocks(spark):
    """1, 2 and 7 input partitions (coalesced or shuffled before) → the same blocks, in the
    same order, bit for bit."""
    from sparkml_aiaas.engine.block_files import open_block
    from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks

    rng = np.random.default_rng(3)
    pdf = pd.DataFrame(rng.normal(size=(1001, 3)), columns=["a", "b", "c"])
    pdf["label"] = (pdf.a > 0).astype(float)
    base = spark.createDataFrame(pdf).coalesce(1).cache()
    seen = []
    for parts in (1, 2, 7):
        # A range shuffle by row order keeps the rows' order while changing partitions;
        # cached, since its sampled boundaries change from one execution to the next.
        df = base if parts == 1 else (
            base.withColumn("_i", F.monotonically_increasing_id())
            .repartitionByRange(parts, "_i").sortWithinPartitions("_i").drop("_i").cache())
        with ResidentBlocks.build(df, FeatureSpec(columns=["a", "b", "c"]), "label",
                                  num_partitions=3) as blocks:
            rows = sorted(blocks.keys.collect(), key=lambda r: r["partition"])
            seen.append([[np.array(a) for a in open_block(r["path"])] for r in rows])
    for other in seen[1:]:
        for block, want in zip(other, seen[0]):
            for got, expected in zip(block, want):
                np.testing.assert_array_equal(got, expected)
    assert [len(b[1]) for b in seen[0]] == [333, 334, 334]
    base.unpersist()
