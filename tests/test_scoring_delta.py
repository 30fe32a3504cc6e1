"""Batch scoring into a Delta table: a run replaces its own rows in one transaction.

The session has no delta-spark here, so the Spark + delta-rs fallback of
``sparkml_aiaas.data.delta.replace_where`` is what runs.  Tables are checked
with ``deltalake`` directly (log, partition columns, history) as well as with
our reader.
"""

import os
import time

import numpy as np
import pandas as pd
import pytest

deltalake = pytest.importorskip("deltalake")
pa = pytest.importorskip("pyarrow")

from pyspark.sql import functions as F  # noqa: E402

from sparkml_aiaas.data import delta as D  # noqa: E402
from sparkml_aiaas.errors import ConfigError, DataValidationError, SparkmlAiaasError  # noqa: E402
from sparkml_aiaas.models import LogisticRegression  # noqa: E402
from sparkml_aiaas.scoring import score  # noqa: E402

COLS = ["x0", "x1", "x2"]
N = 300


def _pdf(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(COLS)))
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["label"] = ((X @ [1.0, -1.0, 0.5] + 0.3 * rng.normal(size=n)) > 0).astype(float)
    pdf["id"] = np.arange(n)
    pdf["day"] = np.where(pdf["id"] % 2 == 0, "2026-11-21", "2026-11-22")
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _pdf()


@pytest.fixture(scope="module")
def model_path(df, tmp_path_factory):
    model = LogisticRegression(featuresCols=COLS, numPartitions=2, regParam=0.01).fit(df)
    path = str(tmp_path_factory.mktemp("models") / "lr")
    model.write().save(path)
    return path


@pytest.fixture(scope="module")
def input_path(pdf, tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "data"
    path.mkdir()
    pdf.iloc[: N // 2].to_parquet(path / "part-0.parquet")
    pdf.iloc[N // 2:].to_parquet(path / "part-1.parquet")
    return str(path)


def _read(spark, out, version=None):
    """The table (at ``version``) as pandas, sorted, probability as a tuple."""
    frame = D.read_table(spark, out, format="delta", version=version) \
        .withColumn("probability", F.col("probability").cast("string")).toPandas()
    return frame.sort_values(["run_id", "id"]).reset_index(drop=True)


def _same_apart_from_scored_at(a, b):
    cols = sorted(c for c in a.columns if c != "scored_at")
    pd.testing.assert_frame_equal(a[cols], b[cols])


def _files(uri, version=None):
    return set(deltalake.DeltaTable(uri, version=version).file_uris())


def _visible_parquet(uri):
    """The Parquet files on disk under the table root (outside hidden folders):
    active files, files removed by a later version, and orphans of failed commits."""
    found = []
    for folder, dirs, files in os.walk(uri):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        found += [os.path.join(folder, f) for f in files if f.endswith(".parquet")]
    return set(found)


def test_first_run_then_rerun_replaces_in_one_commit(spark, model_path, input_path, tmp_path):
    out = str(tmp_path / "delta")
    first = score(spark, model_path, input_path, out, format="delta")
    assert first.rows_in == first.rows_out == N and not first.skipped
    assert first.delta_version == 0
    table = deltalake.DeltaTable(out)
    assert table.metadata().partition_columns == ["run_id"]
    assert all(f"/run_id={first.run_id}/" in p for p in table.file_uris())
    before = _read(spark, out)
    assert len(before) == N and set(before["run_id"]) == {first.run_id}

    time.sleep(1.1)  # scored_at has second resolution: make the re-run's differ
    again = score(spark, model_path, input_path, out, format="delta")
    assert again.run_id == first.run_id and not again.skipped
    assert again.rows_in == again.rows_out == N
    assert again.delta_version == first.delta_version + 1  # exactly one commit
    after = _read(spark, out)
    assert len(after) == N and after["id"].is_unique
    _same_apart_from_scored_at(before, after)
    assert (after["scored_at"] > before["scored_at"]).all()

    table = deltalake.DeltaTable(out)
    assert table.version() == 1
    history = table.history()
    assert [h["version"] for h in history] == [1, 0]
    # The commit removed every file of the first run and added the new ones.
    assert _files(out, 0).isdisjoint(_files(out, 1))
    # Time travel: the previous version still reads the first run's rows.
    old = _read(spark, out, version=0)
    pd.testing.assert_frame_equal(old, before)
    # And delta-rs alone agrees with our reader.
    assert deltalake.DeltaTable(out).to_pyarrow_table().num_rows == N


def test_runs_coexist_and_rerun_leaves_others_untouched(spark, model_path, input_path,
                                                         tmp_path):
    out = str(tmp_path / "delta")
    a = score(spark, model_path, input_path, out, format="delta", run_id="run-a")
    b = score(spark, model_path, input_path, out, format="delta", run_id="run-b")
    assert (a.delta_version, b.delta_version) == (0, 1)
    both = _read(spark, out)
    assert len(both) == 2 * N
    assert both.groupby("run_id").size().to_dict() == {"run-a": N, "run-b": N}
    b_files = {p for p in _files(out) if "/run_id=run-b/" in p}

    again = score(spark, model_path, input_path, out, format="delta", run_id="run-a")
    assert again.delta_version == 2 and again.rows_out == N
    after = _read(spark, out)
    assert len(after) == 2 * N
    # run-b: same files, same rows (scored_at included).
    assert {p for p in _files(out) if "/run_id=run-b/" in p} == b_files
    pd.testing.assert_frame_equal(after[after.run_id == "run-b"].reset_index(drop=True),
                                  both[both.run_id == "run-b"].reset_index(drop=True))
    _same_apart_from_scored_at(after[after.run_id == "run-a"].reset_index(drop=True),
                               both[both.run_id == "run-a"].reset_index(drop=True))


def test_partition_by_a_date_column(spark, model_path, input_path, tmp_path):
    out = str(tmp_path / "delta")
    frame = spark.read.parquet(input_path).withColumn("day", F.to_date("day"))
    first = score(spark, model_path, frame, out, format="delta", run_id="r1",
                  partition_by=["day"])
    assert first.rows_out == N
    table = deltalake.DeltaTable(out)
    assert table.metadata().partition_columns == ["run_id", "day"]
    assert sorted(os.listdir(os.path.join(out, "run_id=r1"))) == \
        ["day=2026-11-21", "day=2026-11-22"]
    adds = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert {str(a["partition.day"]) for a in adds} == {"2026-11-21", "2026-11-22"}
    got = D.read_table(spark, out)
    assert got.schema["day"].dataType.simpleString() == "date"
    counts = {str(r["day"]): r["count"] for r in got.groupBy("day").count().collect()}
    assert counts == {"2026-11-21": N // 2, "2026-11-22": N // 2}
    # Re-run and a second run, same layout.
    score(spark, model_path, frame, out, format="delta", run_id="r1", partition_by=["day"])
    score(spark, model_path, frame, out, format="delta", run_id="r2", partition_by=["day"])
    got = D.read_table(spark, out)
    assert got.count() == 2 * N and got.select("run_id", "id").distinct().count() == 2 * N
    assert deltalake.DeltaTable(out).to_pyarrow_table().num_rows == 2 * N
    # Another partitioning of the same table is refused before anything is written.
    with pytest.raises(DataValidationError, match=r"partitioned by \['run_id', 'day'\]"):
        score(spark, model_path, frame, out, format="delta", run_id="r3")
    with pytest.raises(DataValidationError, match="not in the input"):
        score(spark, model_path, frame, out, format="delta", partition_by=["nope"])
    assert deltalake.DeltaTable(out).version() == 2


def test_failed_commit_keeps_the_previous_version(spark, model_path, input_path, tmp_path,
                                                  monkeypatch):
    out = str(tmp_path / "delta")
    score(spark, model_path, input_path, out, format="delta", run_id="r1")
    before = _read(spark, out)

    def failing_commit(self, *args, **kwargs):
        raise RuntimeError("commit lost")

    monkeypatch.setattr(deltalake.DeltaTable, "create_write_transaction", failing_commit)
    with pytest.raises(RuntimeError, match="commit lost"):
        score(spark, model_path, input_path, out, format="delta", run_id="r1")
    monkeypatch.undo()
    assert deltalake.DeltaTable(out).version() == 0
    after = _read(spark, out)
    pd.testing.assert_frame_equal(after, before)  # old rows, no duplicates
    # The new files are orphans (in no version) until VACUUM.
    assert len(_visible_parquet(out) - _files(out)) >= 1
    assert not [p for p in os.listdir(out) if p.startswith(D._STAGING_PREFIX)]
    # A later re-run commits normally.
    report = score(spark, model_path, input_path, out, format="delta", run_id="r1")
    assert report.delta_version == 1 and len(_read(spark, out)) == N


def test_failure_in_the_spark_job_keeps_the_previous_version(spark, model_path, input_path,
                                                             tmp_path):
    out = str(tmp_path / "delta")
    score(spark, model_path, input_path, out, format="delta", run_id="r1")
    before = _read(spark, out)

    def fail(batches):
        for batch in batches:
            if 250 in batch.column("id").to_pylist():
                raise RuntimeError("boom on row 250")
            yield batch

    frame = spark.read.parquet(input_path)
    frame = frame.mapInArrow(fail, frame.schema)
    with pytest.raises(Exception, match="boom"):
        score(spark, model_path, frame, out, format="delta", run_id="r1")
    assert deltalake.DeltaTable(out).version() == 0
    pd.testing.assert_frame_equal(_read(spark, out), before)
    assert _visible_parquet(out) == _files(out)  # moved files are deleted on failure
    assert not [p for p in os.listdir(out) if p.startswith(D._STAGING_PREFIX)]


def test_mode_error_refuses_an_existing_run(spark, model_path, input_path, tmp_path):
    out = str(tmp_path / "delta")
    score(spark, model_path, input_path, out, format="delta", run_id="r1", mode="error")
    with pytest.raises(SparkmlAiaasError, match="already in the Delta table"):
        score(spark, model_path, input_path, out, format="delta", run_id="r1", mode="error")
    assert deltalake.DeltaTable(out).version() == 0
    report = score(spark, model_path, input_path, out, format="delta", run_id="r2",
                   mode="error")
    assert report.delta_version == 1


# ----------------------------------------------------------- replace_where directly


def _frame(spark, rows):
    return spark.createDataFrame(rows, "id long, run_id string, day date").coalesce(1)


def test_replace_where_quotes_values_and_checks_rows(spark, tmp_path):
    import datetime as dt

    uri = str(tmp_path / "t")
    odd = "it's a:b/c\\d %x"
    d1 = dt.date(2026, 11, 21)
    first = D.replace_where(_frame(spark, [(1, odd, d1), (2, odd, None)]), uri, "run_id", odd,
                            partition_by=["day"])
    assert first["version"] == 0 and first["rows"] == 2 and first["removed_files"] == 0
    D.replace_where(_frame(spark, [(9, "other", d1)]), uri, "run_id", "other", ["day"])
    second = D.replace_where(_frame(spark, [(3, odd, d1)]), uri, "run_id", odd, ["day"])
    assert second["version"] == 2 and second["removed_files"] == 2
    rows = sorted(tuple(r) for r in D.read_table(spark, uri).collect())
    assert rows == [(3, odd, d1), (9, "other", d1)]
    dl = deltalake.DeltaTable(uri).to_pyarrow_table().to_pylist()
    assert sorted((r["id"], r["run_id"]) for r in dl) == [(3, odd), (9, "other")]
    # Rows of another value are refused, and nothing is committed or left behind.
    on_disk = _visible_parquet(uri)
    with pytest.raises(DataValidationError, match="other run_id values"):
        D.replace_where(_frame(spark, [(4, odd, d1), (5, "x", d1)]), uri, "run_id", odd, ["day"])
    assert deltalake.DeltaTable(uri).version() == 2
    assert _visible_parquet(uri) == on_disk
    # The predicate delta-spark gets matches exactly the value.
    predicate = D.replace_predicate("run_id", odd)
    assert predicate == "`run_id` = 'it\\'s a:b/c\\\\d %x'"
    assert D.read_table(spark, uri).where(predicate).count() == 1


def test_replace_where_refusals(spark, tmp_path):
    uri = str(tmp_path / "t")
    D.write_table(_frame(spark, [(1, "a", None)]), uri)  # unpartitioned
    with pytest.raises(DataValidationError, match=r"partitioned by \[\], not by \['run_id'\]"):
        D.replace_where(_frame(spark, [(1, "a", None)]), uri, "run_id", "a")
    for value in ("", None, True, 1.5):
        with pytest.raises(ConfigError, match="value must be"):
            D.replace_where(_frame(spark, [(1, "a", None)]), str(tmp_path / "u"), "run_id", value)
    with pytest.raises(DataValidationError, match="not in the DataFrame"):
        D.replace_where(_frame(spark, [(1, "a", None)]), str(tmp_path / "u"), "nope", "a")
    floats = spark.createDataFrame([(1, "a", 0.5)], "id long, run_id string, f double")
    with pytest.raises(ConfigError, match="delta-spark"):
        D.replace_where(floats, str(tmp_path / "u"), "run_id", "a", partition_by=["f"])
    assert not os.path.exists(tmp_path / "u")
