"""Delta tables through sparkml_aiaas.data.delta.

Every write is checked by reading the table back with ``deltalake`` directly,
independent of our reader.  Here the session has no delta-spark, so the
Spark + delta-rs fallback is what runs; the delta-spark branch has its own
test, skipped when Delta's classes are absent.
"""

import json
import os

import pytest

deltalake = pytest.importorskip("deltalake")
pa = pytest.importorskip("pyarrow")

from pyspark.sql import types as T  # noqa: E402

from sparkml_aiaas.data import delta as D  # noqa: E402
from sparkml_aiaas.errors import ConfigError, DataValidationError, InputNotFoundError  # noqa: E402

SCHEMA = T.StructType([
    T.StructField("id", T.LongType()),
    T.StructField("name", T.StringType()),
    T.StructField("score", T.DoubleType()),
])
ROWS_A = [(1, "a", 0.5), (2, "b", None), (3, None, 2.5)]
ROWS_B = [(4, "d", 4.0), (5, "e", 5.0)]


def _df(spark, rows):
    return spark.createDataFrame(rows, SCHEMA).coalesce(1)


def _dl_rows(uri, version=None):
    """Table content as sorted tuples, read by delta-rs alone."""
    table = pa.table(deltalake.DeltaTable(uri, version=version).to_pyarrow_table())
    return sorted(tuple(r[c] for c in SCHEMA.names) for r in table.to_pylist())


def _spark_rows(df):
    return sorted(tuple(r) for r in df.collect())


def test_create_then_read(spark, tmp_path):
    uri = str(tmp_path / "t")
    result = D.write_table(_df(spark, ROWS_A), uri)
    assert result["version"] == 0 and result["rows"] == 3 and result["engine"] == "delta-rs"
    assert result["files"] and all(os.path.exists(os.path.join(uri, f)) for f in result["files"])
    assert deltalake.DeltaTable(uri).version() == 0
    assert _dl_rows(uri) == sorted(ROWS_A, key=lambda r: r[0])
    assert _spark_rows(D.read_table(spark, uri)) == _dl_rows(uri)
    assert D.table_version(None, uri) == 0
    assert D.table_version(spark, uri) == 0


def test_append_overwrite_time_travel(spark, tmp_path):
    uri = str(tmp_path / "t")
    first = D.write_table(_df(spark, ROWS_A), uri)
    second = D.write_table(_df(spark, ROWS_B), uri, mode="append")
    assert second["version"] == 1
    assert _dl_rows(uri) == sorted(ROWS_A + ROWS_B, key=lambda r: r[0])
    assert not set(first["files"]) & set(second["files"])  # unique names per commit

    new = [(9, "z", 9.0)]
    third = D.write_table(_df(spark, new), uri, mode="overwrite")
    assert third["version"] == 2
    table = deltalake.DeltaTable(uri)
    assert _dl_rows(uri) == new
    active = {os.path.basename(p) for p in table.file_uris()}
    assert active == set(third["files"])
    # Old files are removed in the log but stay on disk until vacuum.
    log = (tmp_path / "t" / "_delta_log" / f"{2:020d}.json").read_text().splitlines()
    removed = {json.loads(line)["remove"]["path"] for line in log if '"remove"' in line}
    assert removed == set(first["files"]) | set(second["files"])
    assert all(os.path.exists(os.path.join(uri, f)) for f in removed)
    assert _spark_rows(D.read_table(spark, uri)) == new

    # Time travel: version 0 is the original rows, version 1 both sets.
    assert _spark_rows(D.read_table(spark, uri, version=0)) == _dl_rows(uri, version=0)
    assert _dl_rows(uri, version=0) == sorted(ROWS_A, key=lambda r: r[0])
    assert len(D.read_table(spark, uri, version=1).collect()) == 5
    assert D.table_version(None, uri) == 2
    with pytest.raises(InputNotFoundError, match="no version 7"):
        D.read_table(spark, uri, version=7)


def test_merge_upserts(spark, tmp_path):
    uri = str(tmp_path / "t")
    D.write_table(_df(spark, ROWS_A), uri)
    source = _df(spark, [(2, "B", 20.0), (3, "C", None), (7, "g", 7.0)])
    result = D.write_table(source, uri, mode="merge", keys=["id"])
    assert result["version"] == 1 and result["rows"] == 3
    assert _dl_rows(uri) == [(1, "a", 0.5), (2, "B", 20.0), (3, "C", None), (7, "g", 7.0)]
    assert _spark_rows(D.read_table(spark, uri)) == _dl_rows(uri)


def test_merge_creates_missing_table_and_checks_keys(spark, tmp_path):
    uri = str(tmp_path / "t")
    assert D.write_table(_df(spark, ROWS_B), uri, mode="merge", keys=["id"])["version"] == 0
    assert _dl_rows(uri) == ROWS_B
    with pytest.raises(DataValidationError, match=r"merge key\(s\) \['nope'\] not in the DataFrame"):
        D.write_table(_df(spark, ROWS_B), uri, mode="merge", keys=["nope"])
    with pytest.raises(DataValidationError, match="several rows"):
        D.write_table(_df(spark, ROWS_B + [(4, "x", 1.0)]), uri, mode="merge", keys=["id"])
    with pytest.raises(ConfigError, match="needs keys"):
        D.write_table(_df(spark, ROWS_B), uri, mode="merge")
    assert deltalake.DeltaTable(uri).version() == 0


def test_merge_over_limit_names_delta_spark(spark, tmp_path, monkeypatch):
    uri = str(tmp_path / "t")
    D.write_table(_df(spark, ROWS_A), uri)
    monkeypatch.setattr(D, "MERGE_ROW_LIMIT", 2)
    with pytest.raises(DataValidationError, match="MERGE_ROW_LIMIT=2.*delta-spark"):
        D.write_table(_df(spark, ROWS_B + [(6, "f", 6.0)]), uri, mode="merge", keys=["id"])


def test_add_action_stats(spark, tmp_path):
    uri = str(tmp_path / "t")
    D.write_table(_df(spark, ROWS_A), uri)
    adds = pa.table(deltalake.DeltaTable(uri).get_add_actions(flatten=True)).to_pylist()
    assert len(adds) == 1
    add = adds[0]
    assert add["num_records"] == 3
    assert (add["min.id"], add["max.id"]) == (1, 3)
    assert (add["min.name"], add["max.name"]) == ("a", "b")
    assert (add["null_count.id"], add["null_count.name"], add["null_count.score"]) == (0, 1, 1)
    assert add.get("min.score") is None  # floating point: no min/max, by design
    log = (tmp_path / "t" / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
    stats = json.loads(next(json.loads(l)["add"]["stats"] for l in log if '"add"' in l))
    assert stats == {"numRecords": 3, "minValues": {"id": 1, "name": "a"},
                     "maxValues": {"id": 3, "name": "b"},
                     "nullCount": {"id": 0, "name": 1, "score": 1}}
    assert add["size_bytes"] == os.path.getsize(os.path.join(uri, add["path"]))


def test_empty_table_reads_with_schema(spark, tmp_path):
    uri = str(tmp_path / "t")
    deltalake.DeltaTable.create(uri, pa.schema([("id", pa.int64()), ("name", pa.string())]))
    df = D.read_table(spark, uri)
    assert df.count() == 0
    assert [(f.name, f.dataType) for f in df.schema.fields] == [
        ("id", T.LongType()), ("name", T.StringType())]


@pytest.mark.parametrize("config, feature", [
    ({"delta.enableDeletionVectors": "true"}, "deletionVectors"),
    ({"delta.columnMapping.mode": "name"}, "columnMapping"),
])
def test_unsupported_reader_features_refused(spark, tmp_path, config, feature):
    uri = str(tmp_path / "t")
    deltalake.DeltaTable.create(uri, pa.schema([("id", pa.int64())]), configuration=config)
    with pytest.raises(DataValidationError, match=f"{feature}.*delta-spark"):
        D.read_table(spark, uri)
    with pytest.raises(DataValidationError, match=f"{feature}.*delta-spark"):
        D.write_table(spark.range(2), uri, mode="append")


def test_schema_mismatch_is_refused(spark, tmp_path):
    uri = str(tmp_path / "t")
    D.write_table(_df(spark, ROWS_A), uri)
    other = spark.createDataFrame([(1, "a")], "id string, extra string")
    with pytest.raises(DataValidationError) as info:
        D.write_table(other, uri, mode="append")
    message = str(info.value)
    assert "no schema evolution" in message and "['extra']" in message
    assert "['name', 'score']" in message and "id (string vs table bigint)" in message
    # Same columns in another order are fine.
    D.write_table(_df(spark, ROWS_B).select("score", "id", "name"), uri, mode="append")
    assert _dl_rows(uri) == sorted(ROWS_A + ROWS_B, key=lambda r: r[0])
    assert not [p for p in os.listdir(uri) if p.startswith("_sparkml_staging")]


def test_bad_arguments(spark, tmp_path):
    uri = str(tmp_path / "t")
    df = _df(spark, ROWS_A)
    with pytest.raises(ConfigError, match="unknown write mode 'upsert'"):
        D.write_table(df, uri, mode="upsert")
    with pytest.raises(ConfigError, match="unknown table format 'avro'"):
        D.write_table(df, uri, format="avro")
    with pytest.raises(ConfigError, match="keys are used by mode 'merge' only"):
        D.write_table(df, uri, keys=["id"])
    with pytest.raises(ConfigError, match="needs format 'delta'"):
        D.write_table(df, uri, format="parquet", mode="merge", keys=["id"])
    with pytest.raises(ConfigError, match="Delta tables only"):
        D.read_table(spark, uri, format="parquet", version=0)
    with pytest.raises(InputNotFoundError, match="no Delta table"):
        D.read_table(spark, uri)
    with pytest.raises(InputNotFoundError, match="no Delta table"):
        D.table_version(None, uri)
    assert not os.path.exists(os.path.join(uri, "_delta_log"))


def test_parquet_format(spark, tmp_path):
    uri = str(tmp_path / "p")
    first = D.write_table(_df(spark, ROWS_A), uri, format="parquet", mode="overwrite")
    assert first["version"] is None and first["rows"] == 3
    second = D.write_table(_df(spark, ROWS_B), uri, format="parquet", mode="append")
    assert second["rows"] == 2
    assert _spark_rows(D.read_table(spark, uri, format="parquet")) == sorted(
        ROWS_A + ROWS_B, key=lambda r: r[0])


def test_delta_spark_branch(spark, tmp_path):
    if not D.delta_spark_available(spark):
        pytest.skip("delta-spark classes absent: the session has no "
                    "io.delta.sql.DeltaSparkSessionExtension / io.delta.tables.DeltaTable "
                    "(its JARs are not installed), so only the delta-rs fallback can run here")
    uri = str(tmp_path / "t")
    assert D.write_table(_df(spark, ROWS_A), uri)["version"] == 0
    assert D.write_table(_df(spark, ROWS_B), uri, mode="append")["engine"] == "delta-spark"
    merged = D.write_table(_df(spark, [(1, "A", 1.0), (8, "h", 8.0)]), uri, mode="merge",
                           keys=["id"])
    assert merged["version"] == 2
    assert _dl_rows(uri) == sorted(
        [(1, "A", 1.0)] + ROWS_A[1:] + ROWS_B + [(8, "h", 8.0)], key=lambda r: r[0])
    assert _spark_rows(D.read_table(spark, uri, version=0)) == sorted(ROWS_A, key=lambda r: r[0])
    assert D.table_version(spark, uri) == 2


def test_delta_spark_detection_without_extension(spark):
    assert "io.delta.sql.DeltaSparkSessionExtension" not in spark.conf.get(
        "spark.sql.extensions", "")
    assert D.delta_spark_available(spark) is False


def test_failed_commit_leaves_invisible_orphans(spark, tmp_path, monkeypatch):
    uri = str(tmp_path / "t")
    D.write_table(_df(spark, ROWS_A), uri)

    def failing_commit(self, *args, **kwargs):
        raise RuntimeError("commit lost")

    monkeypatch.setattr(deltalake.DeltaTable, "create_write_transaction", failing_commit)
    with pytest.raises(RuntimeError, match="commit lost"):
        D.write_table(_df(spark, ROWS_B), uri, mode="append")
    monkeypatch.undo()
    table = deltalake.DeltaTable(uri)
    assert table.version() == 0 and _dl_rows(uri) == sorted(ROWS_A, key=lambda r: r[0])
    active = {os.path.basename(p) for p in table.file_uris()}
    on_disk = {p for p in os.listdir(uri) if p.endswith(".parquet") and not p.startswith(".")}
    assert len(on_disk - active) == 1  # the orphan, left for vacuum
    assert _spark_rows(D.read_table(spark, uri)) == sorted(ROWS_A, key=lambda r: r[0])


def test_partitioned_table_is_read_not_written(spark, tmp_path):
    uri = str(tmp_path / "t")
    data = pa.table({"id": [1, 2, 3], "part": ["x", "y", "x"]})
    deltalake.write_deltalake(uri, data, partition_by=["part"])
    df = D.read_table(spark, uri)
    assert df.columns == ["id", "part"]
    assert _spark_rows(df) == [(1, "x"), (2, "y"), (3, "x")]
    with pytest.raises(DataValidationError, match=r"partitioned by \['part'\].*delta-spark"):
        D.write_table(spark.createDataFrame([(4, "z")], "id long, part string"), uri)


def test_first_merge_refuses_duplicate_keys(spark, tmp_path):
    uri = str(tmp_path / "t")
    with pytest.raises(DataValidationError, match="several rows"):
        D.write_table(_df(spark, ROWS_B + [(5, "x", 1.0)]), uri, mode="merge", keys=["id"])
    assert not os.path.exists(os.path.join(uri, "_delta_log"))


def test_nullability(spark, tmp_path):
    # Our tables get nullable columns (as delta-spark's DataFrame writes do).
    uri = str(tmp_path / "t")
    D.write_table(spark.range(3), uri)
    assert pa.schema(deltalake.DeltaTable(uri).schema().to_arrow()).field("id").nullable
    # A table created elsewhere with a NOT NULL column refuses nulls in it.
    strict = str(tmp_path / "strict")
    deltalake.DeltaTable.create(strict, pa.schema([pa.field("id", pa.int64(), nullable=False),
                                                   pa.field("name", pa.string())]))
    ok = spark.createDataFrame([(1, "a")], "id long, name string")
    assert D.write_table(ok, strict)["version"] == 1
    bad = spark.createDataFrame([(None, "b"), (2, None)], "id long, name string")
    with pytest.raises(DataValidationError, match=r"NOT NULL column\(s\).*'id': 1"):
        D.write_table(bad, strict)
    assert _dl_rows_cols(strict) == [(1, "a")]


def _dl_rows_cols(uri):
    table = pa.table(deltalake.DeltaTable(uri).to_pyarrow_table())
    return sorted(tuple(r.values()) for r in table.to_pylist())


def test_file_stats_across_row_groups(tmp_path):
    """Footer stats (no Spark): bounds over several row groups, an all-null row
    group, dates as ISO strings, long strings and floats without min/max."""
    import datetime

    import pyarrow.parquet as pq

    path = str(tmp_path / "f.parquet")
    table = pa.table({
        "n": pa.array([5, 3, None, None, 9], pa.int32()),
        "d": pa.array([datetime.date(2024, 1, 2), None, datetime.date(2023, 5, 6), None, None]),
        "s": ["b", "a", "x" * 40, "c", None],
        "f": [1.0, float("nan"), 2.0, None, 3.0],
    })
    pq.write_table(table, path, row_group_size=2)
    rows, stats = D._file_stats(path)
    assert rows == 5
    assert json.loads(stats) == {
        "numRecords": 5,
        "minValues": {"n": 3, "d": "2023-05-06"},
        "maxValues": {"n": 9, "d": "2024-01-02"},
        "nullCount": {"n": 2, "d": 3, "s": 1, "f": 1},
    }
