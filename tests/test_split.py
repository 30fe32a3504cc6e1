"""Deterministic key-hash splits: stable, disjoint, complete, roughly proportional."""

from functools import reduce

import pytest
from pyspark.sql import functions as F

from sparkml_aiaas.data import split_by_key
from sparkml_aiaas.errors import ConfigError, DataValidationError

FRACTIONS = {"train": 0.7, "valid": 0.2, "test": 0.1}
N_ROWS = 10_000


@pytest.fixture(scope="module")
def rows(spark):
    # Several rows per key, so that "a key stays in one part" is tested too.
    return spark.range(N_ROWS).select(F.col("id"), (F.col("id") % 5000).alias("key"))


def assignment(parts):
    """{id: part name} in one Spark job."""
    labelled = [df.select("id", F.lit(name).alias("part")) for name, df in parts.items()]
    collected = reduce(lambda a, b: a.unionByName(b), labelled).collect()
    result = {r.id: r.part for r in collected}
    assert len(result) == len(collected), "a row landed in two parts"
    return result


def test_split_is_complete_disjoint_and_proportional(rows):
    parts = split_by_key(rows, "key", FRACTIONS, seed=7)
    assert list(parts) == ["train", "valid", "test"]
    first = assignment(parts)
    assert len(first) == N_ROWS
    for name, fraction in FRACTIONS.items():
        share = sum(1 for part in first.values() if part == name) / N_ROWS
        assert share == pytest.approx(fraction, abs=0.02), name
    # Rows sharing a key share a part (ids i and i + 5000 have the same key).
    assert all(first[i] == first[i + 5000] for i in range(5000))


def test_split_is_stable_across_runs_and_repartitioning(rows):
    first = assignment(split_by_key(rows, "key", FRACTIONS, seed=7))
    again = assignment(split_by_key(rows, "key", FRACTIONS, seed=7))
    shuffled = rows.repartition(7, "id").sortWithinPartitions(F.rand(3))
    repartitioned = assignment(split_by_key(shuffled, "key", FRACTIONS, seed=7))
    assert first == again == repartitioned
    other_seed = assignment(split_by_key(rows, "key", FRACTIONS, seed=8))
    assert other_seed != first


def test_split_string_keys_with_odd_column_name(spark):
    rows = [(i, f"user-{i % 10}") for i in range(200)]
    df = spark.createDataFrame(rows, "id long, `user id` string")
    parts = split_by_key(df, "user id", {"a": 0.5, "b": 0.5})
    users = parts["a"].select(F.lit("a").alias("part"), "`user id`").unionByName(
        parts["b"].select(F.lit("b").alias("part"), "`user id`")
    )
    by_part = {"a": set(), "b": set()}
    for row in users.collect():
        by_part[row.part].add(row["user id"])
    assert by_part["a"].isdisjoint(by_part["b"])
    assert by_part["a"] | by_part["b"] == {f"user-{i}" for i in range(10)}


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.7, "test": 0.2}, r"must sum to 1, not 0\.9"),
        ({"train": 0.8, "test": 0.3}, r"must sum to 1, not 1\.1"),
        ({"train": 1.2, "test": -0.2}, r"fraction for 'test' must be positive"),
        ({"train": 1.0, "test": 0.0}, r"fraction for 'test' must be positive"),
        ({"train": "0.5", "test": 0.5}, r"fraction for 'train' must be a number"),
        ({"train": float("nan"), "test": 0.5}, r"fraction for 'train' must be a number"),
        ({}, r"non-empty mapping"),
        ([0.5, 0.5], r"non-empty mapping"),
    ],
)
def test_bad_fractions_raise_config_error(rows, fractions, message):
    with pytest.raises(ConfigError, match=message):
        split_by_key(rows, "key", fractions)


def test_fractions_within_tolerance_are_accepted(rows):
    parts = split_by_key(rows, "key", {"a": 0.1, "b": 0.2, "c": 0.7 + 1e-12})
    assert list(parts) == ["a", "b", "c"]


def test_missing_key_column_raises_data_validation_error(rows):
    message = r"split key column 'patient' not found; columns are \['id', 'key'\]"
    with pytest.raises(DataValidationError, match=message):
        split_by_key(rows, "patient", FRACTIONS)
