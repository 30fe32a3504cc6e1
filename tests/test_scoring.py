"""Batch scoring: score(), spark_udf, sinks, idempotent runs, incremental input, streaming."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.errors import DataValidationError
from sparkml_aiaas.models import LogisticRegression
from sparkml_aiaas.models.predictor import load_predictor
from sparkml_aiaas.scoring import STATE_FILE, read_scores, score, spark_udf

COLS = ["x0", "x1", "x2"]
N = 600


def _pdf(n=N, seed=0, start=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(COLS)))
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["label"] = ((X @ [1.0, -1.0, 0.5] + 0.3 * rng.normal(size=n)) > 0).astype(float)
    pdf["id"] = np.arange(start, start + n)
    pdf["day"] = np.where(pdf["id"] % 2 == 0, "2026-11-21", "2026-11-22")
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _pdf()


@pytest.fixture(scope="module")
def model(df):
    return LogisticRegression(featuresCols=COLS, numPartitions=2, regParam=0.01).fit(df)


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
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


def _probs(frame):
    return np.stack(frame["probability"].to_numpy())


def test_scores_equal_transform_and_predictor(spark, model, model_path, input_path, tmp_path):
    out = str(tmp_path / "scored")
    report = score(spark, model_path, input_path, out, batch_size=64)
    assert report.rows_in == report.rows_out == N
    assert report.summary_line().startswith(f"scored rows_in={N} rows_out={N}")
    got = read_scores(spark, out).orderBy("id").toPandas()
    assert set(got.columns) >= {"id", "label", "day", *COLS, "prediction", "probability",
                                "model_name", "model_version", "scored_at", "run_id"}
    assert (got["run_id"] == report.run_id).all() and len(report.run_id) == 16
    assert got["model_name"].iloc[0] == "lr"
    frame = spark.read.parquet(input_path).orderBy("id")
    expected = model.transform(frame).toPandas()
    np.testing.assert_array_equal(_probs(got), _probs(expected))
    np.testing.assert_array_equal(got["prediction"], expected["prediction"])
    direct = load_predictor(model_path).predict(frame.toPandas())
    np.testing.assert_array_equal(_probs(got), np.stack(direct["probability"]))
    # The Arrow batch size is set for the query only.
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "10000"


def test_schema_mismatch_writes_nothing(spark, model_path, input_path, tmp_path):
    out = tmp_path / "scored"
    bad = spark.read.parquet(input_path).drop("x1")
    # Cause first, then where, then the whole signature.
    with pytest.raises(DataValidationError, match=r"^missing column 'x1' \(double\) in the input "
                       r"\(the model's signature: expected \d+ columns: .*x1"):
        score(spark, model_path, bad, str(out))
    mistyped = spark.read.parquet(input_path).withColumn("x2", __import__(
        "pyspark.sql.functions", fromlist=["lit"]).lit("a"))
    with pytest.raises(DataValidationError, match="column 'x2' is string"):
        score(spark, model_path, mistyped, str(out))
    assert not out.exists()


def test_rerun_replaces_the_run(spark, model_path, input_path, tmp_path):
    out = str(tmp_path / "scored")
    first = score(spark, model_path, input_path, out, partition_by=["day"])
    before = read_scores(spark, out).drop("scored_at").orderBy("id").toPandas()
    second = score(spark, model_path, input_path, out, partition_by=["day"])
    assert second.run_id == first.run_id  # derived from model digest + input snapshot
    after = read_scores(spark, out).drop("scored_at").orderBy("id").toPandas()
    assert len(after) == N
    pd.testing.assert_frame_equal(before[sorted(before.columns)], after[sorted(after.columns)])
    assert sorted(os.listdir(out)) == [STATE_FILE, f"run_id={first.run_id}"]
    assert sorted(os.listdir(os.path.join(out, f"run_id={first.run_id}")))[:2] == \
        ["day=2026-11-21", "day=2026-11-22"]
    # An explicit run id is another partition.
    score(spark, model_path, input_path, out, run_id="2026-11-22", partition_by=["day"])
    runs = read_scores(spark, out).groupBy("run_id").count().collect()
    assert {r["run_id"]: r["count"] for r in runs} == {first.run_id: N, "2026-11-22": N}


def test_incremental_scores_only_new_files(spark, model_path, pdf, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pdf.iloc[:200].to_parquet(src / "a.parquet")
    out = str(tmp_path / "scored")
    first = score(spark, model_path, str(src), out, incremental=True)
    assert first.rows_out == 200
    again = score(spark, model_path, str(src), out, incremental=True)
    assert again.skipped and again.rows_out == 0
    pdf.iloc[200:350].to_parquet(src / "b.parquet")
    second = score(spark, model_path, str(src), out, incremental=True)
    assert second.rows_in == second.rows_out == 150 and second.run_id != first.run_id
    scored = read_scores(spark, out)
    assert scored.count() == 350 and scored.select("id").distinct().count() == 350
    state = json.loads(open(os.path.join(out, STATE_FILE)).read())
    assert len(state["files"]) == 2 and set(state["runs"]) == {first.run_id, second.run_id}


def test_failure_mid_write_leaves_nothing_and_rerun_scores_once(spark, model_path, input_path,
                                                                 tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("1")
    flag_path = str(flag)

    def maybe_fail(batches):  # a step before scoring that fails on one row
        for batch in batches:
            if 450 in batch.column("id").to_pylist() and os.path.exists(flag_path):
                raise RuntimeError("boom on row 450")
            yield batch

    frame = spark.read.parquet(input_path)
    frame = frame.mapInArrow(maybe_fail, frame.schema)
    out = tmp_path / "scored"
    with pytest.raises(Exception, match="boom"):
        score(spark, model_path, frame, str(out), run_id="r1")
    visible = [p for p in os.listdir(out) if not p.startswith((".", "_"))] if out.exists() else []
    assert visible == [] and not (out / STATE_FILE).exists()
    flag.unlink()
    report = score(spark, model_path, frame, str(out), run_id="r1")
    assert report.rows_out == N
    ids = read_scores(spark, str(out)).groupBy("id").count()
    assert ids.count() == N and ids.where("count != 1").count() == 0
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_delta_sink_round_trip_and_rerun(spark, model_path, input_path, tmp_path):
    from sparkml_aiaas.data.delta import read_table

    out = str(tmp_path / "delta")
    first = score(spark, model_path, input_path, out, format="delta")
    table = read_table(spark, out, format="delta")
    assert table.count() == N and first.rows_out == N
    assert table.select("run_id").distinct().first()[0] == first.run_id
    again = score(spark, model_path, input_path, out, format="delta")
    # A re-run replaces the run's rows in one new commit (see test_scoring_delta.py).
    assert not again.skipped and again.run_id == first.run_id and again.rows_out == N
    assert again.delta_version == first.delta_version + 1
    assert read_table(spark, out, format="delta").count() == N


def test_spark_udf_calling_conventions(spark, model_path, input_path):
    from pyspark.sql import functions as F

    frame = spark.read.parquet(input_path).orderBy("id")
    model_udf = spark_udf(spark, model_path)
    expected = load_predictor(model_path).predict(frame.toPandas())
    by_cols = frame.withColumn("p", model_udf(*COLS)).select("id", "p.*").toPandas()
    by_struct = frame.withColumn("p", model_udf(F.struct(*COLS))).select("p.*").toPandas()
    by_default = frame.withColumn("p", model_udf()).select("p.prediction").toPandas()
    np.testing.assert_array_equal(_probs(by_cols), np.stack(expected["probability"]))
    np.testing.assert_array_equal(_probs(by_struct), np.stack(expected["probability"]))
    np.testing.assert_array_equal(by_default["prediction"], expected["prediction"])


def test_foreach_batch_streaming(spark, model_path, input_path, tmp_path):
    schema = spark.read.parquet(input_path).schema
    out = str(tmp_path / "scored")
    reports = []

    def each(batch, batch_id):
        reports.append(score(spark, model_path, batch, out, run_id=f"batch-{batch_id}"))

    query = (spark.readStream.schema(schema).parquet(input_path).writeStream
             .foreachBatch(each).option("checkpointLocation", str(tmp_path / "ckpt"))
             .trigger(availableNow=True).start())
    query.awaitTermination(120)
    assert query.exception() is None
    assert sum(r.rows_out for r in reports) == N
    assert read_scores(spark, out).select("id").distinct().count() == N


def test_cli_summary_line(spark, model_path, input_path, tmp_path, capsys):
    from sparkml_aiaas.cli import main

    config = tmp_path / "score.yaml"
    config.write_text(f"""
model_path: {model_path}
model_name: churn
input: {{path: {input_path}, format: parquet}}
output: {{path: {tmp_path / 'scored'}, partition_by: [day]}}
batch_size: 128
""")
    status = main(["score", "--config", str(config)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    lines = [line for line in out.splitlines() if line.startswith("scored ")]
    assert len(lines) == 1 and f"rows_in={N} rows_out={N}" in lines[0] and "rows_per_s=" in lines[0]
    assert read_scores(spark, str(tmp_path / "scored")).select("model_name").first()[0] == "churn"
    # A bad input exits non-zero.
    status = main(["score", "--config", str(config), "--set", "model_path=/nonexistent"])
    assert status != 0


def _summary_fields(line):
    head, *pairs = line.split(" ")
    assert head == "scored"
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_prints_one_summary_timed_from_the_ingest(spark, model_path, pdf, tmp_path,
                                                      capsys, monkeypatch, quiet):
    """One summary line (no second ``scored ...`` from the library with another timing), and
    its seconds cover the ingest: a slow read shows in seconds and rows_per_s."""
    import time

    from sparkml_aiaas import pipeline
    from sparkml_aiaas.cli import main

    csv = tmp_path / "input.csv"
    pdf.to_csv(csv, index=False)
    config = tmp_path / "score.yaml"
    config.write_text(f"""
model_path: {model_path}
model_name: churn
input:
  path: {csv}
  format: csv
  options: {{header: true}}
  schema:
    - {{name: x0, type: double}}
    - {{name: x1, type: double}}
    - {{name: x2, type: double}}
    - {{name: label, type: double}}
    - {{name: id, type: long}}
    - {{name: day, type: string}}
  quarantine_path: {tmp_path / 'quarantine'}
output: {{path: {tmp_path / 'scored'}}}
""")
    read = pipeline.read_input_with_source

    def slow_read(*args, **kwargs):
        time.sleep(1.5)  # a slow ingest: part of the run the summary times
        return read(*args, **kwargs)

    monkeypatch.setattr(pipeline, "read_input_with_source", slow_read)
    status = main(["score", "--config", str(config), *(["--quiet"] if quiet else [])])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    lines = out.splitlines()
    summaries = [line for line in lines if line.startswith("scored ")]
    assert len(summaries) == 1, out
    # Nothing else looks like a summary (the library used to log its own, timed differently).
    others = [line for line in lines if line not in summaries]
    assert not [line for line in others if "rows_per_s=" in line or "seconds=" in line], out
    if quiet:
        assert lines == summaries, out
    fields = _summary_fields(summaries[0])
    assert list(fields) == ["rows_in", "rows_out", "rejected", "seconds", "rows_per_s",
                            "output", "run_id"]
    assert (fields["rows_in"], fields["rows_out"], fields["rejected"]) == (str(N), str(N), "0")
    seconds = float(fields["seconds"])
    assert seconds >= 1.5  # the ingest is inside the timing
    rate = float(fields["rows_per_s"].replace(",", ""))
    assert abs(rate - N / seconds) <= max(1.0, 0.06 * N / seconds)  # seconds is rounded
    assert fields["output"] == str(tmp_path / "scored" / f"run_id={fields['run_id']}")
    assert read_scores(spark, str(tmp_path / "scored")).count() == N


def test_registry_reference(spark, model_path, input_path, tmp_path):
    pytest.importorskip("sparkml_aiaas.registry")
    from sparkml_aiaas.registry import ModelRegistry

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(model_path, "churn")
    registry.set_alias("churn", "production", version)
    out = str(tmp_path / "scored")
    report = score(spark, "churn@production", input_path, out,
                   registry=str(tmp_path / "registry"))
    assert (report.model_name, report.model_version, report.rows_out) == ("churn", str(version), N)
    lineage = read_scores(spark, out).select("model_name", "model_version").distinct().collect()
    assert [tuple(r) for r in lineage] == [("churn", str(version))]
    # The same files as the plain path: same predictions.
    plain = score(spark, model_path, input_path, str(tmp_path / "plain"))
    a = read_scores(spark, out).orderBy("id").toPandas()
    b = read_scores(spark, str(tmp_path / "plain")).orderBy("id").toPandas()
    np.testing.assert_array_equal(_probs(a), _probs(b))
    assert plain.model_digest == report.model_digest
    model_udf = spark_udf(spark, "churn/1", registry=str(tmp_path / "registry"))
    got = spark.read.parquet(input_path).orderBy("id").select(model_udf().alias("p")) \
        .select("p.probability").toPandas()
    np.testing.assert_array_equal(_probs(got), _probs(b))


def test_incremental_delta_input_scores_only_added_files(spark, model_path, pdf, tmp_path):
    from sparkml_aiaas.data.delta import write_table

    table = str(tmp_path / "table")
    write_table(spark.createDataFrame(pdf.iloc[:100]), table, format="delta", mode="append")
    out = str(tmp_path / "scored")
    first = score(spark, model_path, table, out, input_format="delta", incremental=True)
    assert first.rows_out == 100
    write_table(spark.createDataFrame(pdf.iloc[100:160]), table, format="delta", mode="append")
    second = score(spark, model_path, table, out, input_format="delta", incremental=True)
    assert second.rows_out == 60 and second.delta_version == 1
    assert score(spark, model_path, table, out, input_format="delta", incremental=True).skipped
    assert read_scores(spark, out).select("id").distinct().count() == 160


_KILLED_RUN = r"""
import os, sys, time
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.scoring import score

model_path, input_path, out, marker = sys.argv[1:5]
spark = get_spark("killed-score", master="local[1]", conf={"spark.ui.enabled": "false"})
frame = spark.read.parquet(input_path)

def slow(batches):  # stands for a long scoring job: the process is killed while tasks run
    for batch in batches:
        open(marker, "w").close()
        time.sleep(60)
        yield batch

score(spark, model_path, frame.mapInArrow(slow, frame.schema), out, run_id="r1")
"""


def test_killed_scoring_process_leaves_nothing_visible_and_rerun_scores_once(
        spark, model_path, input_path, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN)
    out, marker = tmp_path / "scored", tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, str(script), model_path, input_path, str(out),
                             str(marker)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the scoring process never started writing"
    finally:
        # SIGKILL the driver, its JVM and Python workers: no cleanup code runs.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    visible = [p for p in os.listdir(out) if not p.startswith((".", "_"))] if out.exists() else []
    assert visible == [] and not (out / STATE_FILE).exists()
    report = score(spark, model_path, input_path, str(out), run_id="r1")
    assert report.rows_out == N
    ids = read_scores(spark, str(out)).groupBy("id").count()
    assert ids.count() == N and ids.where("count != 1").count() == 0
    # The killed attempt's hidden staging folder is swept by the run that committed.
    assert not [p for p in os.listdir(out) if p.startswith(".staging")]
