"""Scoring on Spark Connect: score() writes the classic session's rows, once per run (the
sink's commit and the scoring state on the server), model files travel inside the plan
and load once per worker, spark_udf predicts as on classic, and a registry reference
scores end to end through the CLI with --remote.  One Connect server for the run
(``connect`` in conftest); classic references come from module fixtures."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.scoring import STATE_FILE, read_scores, score, spark_udf

COLS = ["x0", "x1", "x2"]
N = 600


def _pdf():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, len(COLS)))
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["label"] = ((X[:, 0] * X[:, 1] + X[:, 2] + 0.3 * rng.normal(size=N)) > 0).astype(float)
    pdf["id"] = np.arange(N)
    pdf["day"] = np.where(pdf["id"] % 2 == 0, "2026-11-21", "2026-11-22")
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _pdf()


@pytest.fixture(scope="module")
def input_path(pdf, tmp_path_factory):
    path = tmp_path_factory.mktemp("connect-score-input") / "data"
    path.mkdir()
    pdf.iloc[: N // 2].to_parquet(path / "part-0.parquet")
    pdf.iloc[N // 2:].to_parquet(path / "part-1.parquet")
    return str(path)


@pytest.fixture(scope="module")
def models(spark, pdf, tmp_path_factory):
    """A linear model (scored as SQL) and a scikit-learn boosted ensemble (mapInArrow)."""
    from sklearn.ensemble import GradientBoostingClassifier

    from sparkml_aiaas.models import LogisticRegression, wrap_model

    root = tmp_path_factory.mktemp("connect-score-models")
    lr = LogisticRegression(featuresCols=COLS, numPartitions=2, regParam=0.01).fit(
        spark.createDataFrame(pdf))
    gbt = wrap_model(GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)
                     .fit(pdf[COLS], pdf["label"].astype(int)), featuresCols=COLS)
    paths = {"lr": str(root / "lr"), "gbt": str(root / "gbt")}
    lr.write().save(paths["lr"])
    gbt.write().save(paths["gbt"])
    return paths


def _rows(session, out):
    frame = read_scores(session, out).drop("scored_at").toPandas()
    return frame.sort_values("id", ignore_index=True)[sorted(frame.columns)]


def _udf_outputs(session, model_path, input_path):
    udf = spark_udf(session, model_path)
    return (session.read.parquet(input_path).select("id", udf().alias("p"))
            .select("id", "p.probability", "p.prediction").toPandas()
            .sort_values("id", ignore_index=True))


@pytest.fixture(scope="module")
def classic(spark, models, input_path, tmp_path_factory):
    """What the classic session writes and predicts, per model."""
    results = {}
    for name, path in models.items():
        out = str(tmp_path_factory.mktemp(f"classic-{name}") / "scored")
        report = score(spark, path, input_path, out, partition_by=["day"])
        results[name] = dict(run_id=report.run_id, rows=_rows(spark, out),
                             udf=_udf_outputs(spark, path, input_path))
    return results


def _assert_same_rows(got, want):
    assert list(got.columns) == list(want.columns)
    for column in got.columns:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if a.dtype == object and len(a) and isinstance(a[0], (list, np.ndarray)):
            np.testing.assert_array_equal(np.stack(a), np.stack(b), err_msg=column)
        else:
            np.testing.assert_array_equal(a, b, err_msg=column)


def _entries(out):
    return sorted(os.listdir(out))


def test_connect_score_writes_the_classic_rows(classic, models, input_path, connect, tmp_path):
    """The linear model (scored as SQL on the server): the classic run id and rows."""
    out = str(tmp_path / "scored")
    report = score(connect, models["lr"], input_path, out, partition_by=["day"])
    # The same files give the same run id (the listing's sizes and times are Hadoop's).
    assert report.run_id == classic["lr"]["run_id"]
    assert report.rows_in == report.rows_out == N
    _assert_same_rows(_rows(connect, out), classic["lr"]["rows"])


def test_connect_rerun_replaces_the_run(classic, models, input_path, connect, tmp_path):
    """The boosted model (Python workers, files inside the plan): the classic rows, and the
    same run again replaces its rows, never doubles them."""
    from sparkml_aiaas.errors import SparkmlAiaasError

    out = str(tmp_path / "scored")
    first = score(connect, models["gbt"], input_path, out, partition_by=["day"])
    assert first.run_id == classic["gbt"]["run_id"] and first.rows_out == N
    _assert_same_rows(_rows(connect, out), classic["gbt"]["rows"])
    again = score(connect, models["gbt"], input_path, out, partition_by=["day"])
    assert again.run_id == first.run_id
    _assert_same_rows(_rows(connect, out), classic["gbt"]["rows"])  # replaced, not doubled
    assert _entries(out) == [STATE_FILE, f"run_id={first.run_id}"]  # nothing hidden left
    state = json.loads(open(os.path.join(out, STATE_FILE)).read())
    assert state["last_run_id"] == first.run_id and state["runs"][first.run_id]["rows"] == N
    with pytest.raises(SparkmlAiaasError, match="already has output"):
        score(connect, models["gbt"], input_path, out, mode="error")


def test_connect_failed_write_leaves_nothing_and_rerun_scores_once(models, input_path,
                                                                   connect, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("1")
    flag_path = str(flag)

    def maybe_fail(batches):  # nested: pickled by value (the server cannot import tests)
        for batch in batches:
            if 450 in batch.column("id").to_pylist() and os.path.exists(flag_path):
                raise RuntimeError("boom on row 450")
            yield batch

    frame = connect.read.parquet(input_path)
    frame = frame.mapInArrow(maybe_fail, frame.schema)
    out = tmp_path / "scored"
    with pytest.raises(Exception, match="boom"):
        score(connect, models["lr"], frame, str(out), run_id="r1")
    assert not out.exists() or _entries(out) == []  # the staging folder went too
    flag.unlink()
    report = score(connect, models["lr"], frame, str(out), run_id="r1")
    assert report.rows_out == N
    ids = read_scores(connect, str(out)).groupBy("id").count()
    assert ids.count() == N and ids.where("count != 1").count() == 0
    assert _entries(out) == [STATE_FILE, "run_id=r1"]


def test_connect_incremental_scores_only_new_files(models, pdf, connect, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pdf.iloc[:200].to_parquet(src / "a.parquet")
    out = str(tmp_path / "scored")
    first = score(connect, models["lr"], str(src), out, incremental=True)
    assert first.rows_out == 200
    assert score(connect, models["lr"], str(src), out, incremental=True).skipped
    pdf.iloc[200:350].to_parquet(src / "b.parquet")
    second = score(connect, models["lr"], str(src), out, incremental=True)
    assert second.rows_out == 150 and second.run_id != first.run_id
    assert read_scores(connect, out).select("id").distinct().count() == 350


def test_connect_relative_output_is_refused(models, input_path, connect):
    from sparkml_aiaas.errors import ConfigError

    with pytest.raises(ConfigError, match="absolute path or a URI"):
        score(connect, models["lr"], input_path, "relative/scored")


@pytest.mark.parametrize("name", ["lr", "gbt"])
def test_connect_spark_udf_predicts_as_on_classic(classic, models, input_path, connect, name):
    got = _udf_outputs(connect, models[name], input_path)
    _assert_same_rows(got, classic[name]["udf"])


def test_connect_model_loads_once_per_worker(models, connect):
    """Six tasks get the model's files inside the plan; each Python worker loads the
    predictor at most once (the cache is keyed by the files' digest)."""
    import pyarrow as pa

    from sparkml_aiaas.scoring.model_cache import broadcast_files
    from sparkml_aiaas.scoring.resolve import resolve_model

    resolved = resolve_model(models["gbt"])
    files = broadcast_files(connect, resolved.digest, resolved.files)
    digest, allowlist = resolved.digest, resolved.allowlist

    def task(batches):
        from sparkml_aiaas.scoring import model_cache

        for _ in batches:
            pass
        before = model_cache.cache_info()["loads"]
        model_cache.get_predictor(digest, files, allowlist)
        loaded = model_cache.cache_info()["loads"] - before
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "loaded": [loaded]})

    rows = connect.range(0, 6, 1, 6).mapInArrow(task, "pid LONG, loaded LONG").collect()
    pids = {r["pid"] for r in rows}
    assert len(rows) == 6 and len(pids) < 6
    assert sum(r["loaded"] for r in rows) <= len(pids)


def test_connect_model_past_the_plan_limit_is_one_clear_error(connect, monkeypatch):
    from sparkml_aiaas.engine import connect_pass
    from sparkml_aiaas.errors import ModelFormatError
    from sparkml_aiaas.scoring.model_cache import broadcast_files

    monkeypatch.setattr(connect_pass, "message_limit", lambda spark: 5 * 2**20)
    with pytest.raises(ModelFormatError) as err:
        broadcast_files(connect, "d" * 64, {"model.bin": b"\0" * (2 * 2**20)})
    message = str(err.value)
    assert "\n" not in message and "classic Spark session" in message
    assert "maxInboundMessageSize" in message and "train" not in message


def test_connect_registry_and_cli_score_with_remote(classic, models, input_path, connect,
                                                    connect_server, tmp_path, capsys):
    from sparkml_aiaas.cli import main
    from sparkml_aiaas.registry import ModelRegistry

    root = str(tmp_path / "registry")
    registry = ModelRegistry(root)
    version = registry.register(models["gbt"], "churn")
    registry.set_alias("churn", "production", version)
    assert registry.resolve("churn@production").version == version
    assert list(registry.load_predictor("churn@production").input_columns) == COLS
    loaded = registry.load("churn@production").transform(connect.read.parquet(input_path))
    assert loaded.where("prediction IS NOT NULL").count() == N
    out = tmp_path / "scored"
    config = tmp_path / "score.yaml"
    config.write_text(f"""
input: {{path: {input_path}, format: parquet}}
output: {{path: {out}, partition_by: [day]}}
batch_size: 128
""")
    status = main(["score", "--config", str(config), "--model", "churn@production",
                   "--registry", root, "--remote", connect_server.url])
    printed, err = capsys.readouterr()
    assert status == 0, printed + err
    assert f"rows_in={N} rows_out={N}" in printed
    got = _rows(connect, str(out))
    assert set(got["model_name"]) == {"churn"} and set(got["model_version"]) == {str(version)}
    want = classic["gbt"]["rows"]
    np.testing.assert_array_equal(np.stack(got["probability"]), np.stack(want["probability"]))
    np.testing.assert_array_equal(got["id"], want["id"])


def test_connect_hadoop_registry_root_is_one_clear_error(connect):
    from sparkml_aiaas.errors import ConfigError
    from sparkml_aiaas.registry import ModelRegistry

    with pytest.raises(ConfigError, match="not Spark Connect; use a FUSE or NFS mount") as err:
        ModelRegistry("hdfs://namenode:8020/registry")
    assert "\n" not in str(err.value)


def test_connect_write_parquet_atomically(connect, tmp_path):
    from sparkml_aiaas.errors import SparkmlAiaasError
    from sparkml_aiaas.scoring import write_parquet_atomically

    target = str(tmp_path / "out")
    assert write_parquet_atomically(connect.range(5), target) == target
    assert write_parquet_atomically(connect.range(7), target) == target
    assert connect.read.parquet(target).count() == 7
    assert [e for e in os.listdir(tmp_path) if e.startswith(".")] == []
    with pytest.raises(SparkmlAiaasError, match="already exists"):
        write_parquet_atomically(connect.range(1), target, mode="error")


@pytest.mark.parametrize("as_uri", [False, True], ids=["os", "pyarrow-fs"])
def test_server_commit_swaps_and_sweeps(tmp_path, monkeypatch, as_uri):
    """The commit task's steps (no Spark): local paths through os, URIs through pyarrow.fs
    (here file:// URIs forced down the URI branch)."""
    from sparkml_aiaas.errors import SparkmlAiaasError
    from sparkml_aiaas.scoring import server_fs

    if as_uri:
        monkeypatch.setattr(server_fs, "is_local", lambda path: False)
    root = ("file://" if as_uri else "") + str(tmp_path)
    target = f"{root}/run_id=r"

    def staged(token, text):
        folder = tmp_path / f".staging-run_id=r-{token}"
        folder.mkdir()
        (folder / "part-0").write_text(text)
        (folder / "_SUCCESS").write_text("")
        return f"{root}/{folder.name}"

    (tmp_path / ".old-run_id=r-dead").mkdir()  # a killed attempt's leftover
    for token, text in (("a", "first"), ("b", "second")):
        server_fs.commit(staged(token, text), target, f"{root}/.old-run_id=r-{token}",
                         "aside failed", "into failed", [".staging-run_id=r-", ".old-run_id=r-"])
    assert sorted(os.listdir(tmp_path)) == ["run_id=r"]
    assert os.listdir(tmp_path / "run_id=r") == ["part-0"]
    assert (tmp_path / "run_id=r" / "part-0").read_text() == "second"
    with pytest.raises(SparkmlAiaasError, match="into failed"):
        server_fs.commit(f"{root}/missing", f"{root}/other", f"{root}/.old-x", "aside failed",
                         "into failed")
    assert server_fs.exists(target) and not server_fs.exists(f"{root}/other")


def test_connect_delta_output_is_one_clear_error_and_csv_scores_through_ingest(
        models, connect, tmp_path):
    """Delta output (delta-rs commits on the driver) is refused in one line; CSV input goes
    through ingest, on the server, and is scored."""
    from sparkml_aiaas.config import ScoreJobConfig
    from sparkml_aiaas.errors import ConfigError
    from sparkml_aiaas.pipeline import run_scoring

    csv = tmp_path / "x.csv"
    csv.write_text("x0,x1,x2\n0.1,0.2,0.3\n-1,2,0.5\nnot-a-number,1,1\n")
    with pytest.raises(ConfigError, match="Delta output for score.* not Spark Connect"):
        score(connect, models["lr"], str(csv), str(tmp_path / "d"), format="delta",
              input_format="csv")
    config = ScoreJobConfig.model_validate({
        "model_path": models["lr"], "output": {"path": str(tmp_path / "o")},
        "input": {"path": str(csv), "format": "csv", "options": {"header": True},
                  "quarantine_path": str(tmp_path / "q"),
                  "schema": "x0 double, x1 double, x2 double"}})
    report = run_scoring(connect, config)
    assert (report.rows_in, report.rows_out) == (3, 2)
