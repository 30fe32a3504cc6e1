"""Training on Spark Connect: the same data, seed and partitioning give the classic path's
model bit for bit (every linear family and optimizer, early stopping, checkpoints,
fitMultiple, tuning, Pipeline), and the engine's Connect plumbing (plan payloads, tags,
cleanup, rebuilds) behaves.  One Connect server for the run (``connect`` in conftest)."""

import glob
import os

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.engine.tree_reduce import merge_tree_ordered

N_ROWS = 1500
FEATURES = [f"x{i}" for i in range(5)]

# (name, estimator class, params): each one fitted on both kinds of session.
CASES = [
    ("binomial-lbfgs", "LogisticRegression", dict(maxIter=30, regParam=0.01)),
    ("binomial-owlqn", "LogisticRegression", dict(maxIter=30, regParam=0.02,
                                                  elasticNetParam=0.5)),
    ("binomial-newton-weighted", "LogisticRegression", dict(maxIter=10, optimizer="newton",
                                                            regParam=0.01, weightCol="w")),
    ("multinomial", "LogisticRegression", dict(maxIter=20, labelCol="cls",
                                               family="multinomial")),
    ("regression-lbfgs", "LinearRegression", dict(maxIter=30, labelCol="target",
                                                  regParam=0.1)),
    ("svc", "LinearSVC", dict(maxIter=30, regParam=0.01)),
    ("minibatch-adam", "LogisticRegression", dict(maxIter=8, optimizer="adam",
                                                  miniBatchFraction=0.5, seed=7, tol=0.0)),
    ("local-sgd", "LogisticRegression", dict(maxIter=4, optimizer="sgd", localSteps=3,
                                             miniBatchFraction=0.25, seed=3, tol=0.0)),
    ("early-stopping", "LogisticRegression", dict(maxIter=25, validationIndicatorCol="val",
                                                  patience=3)),
]


def _pdf():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N_ROWS, len(FEATURES)))
    score = X @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + rng.normal(scale=0.8, size=N_ROWS)
    pdf = pd.DataFrame(X, columns=FEATURES)
    pdf["label"] = (score > 0).astype(float)
    pdf["cls"] = np.digitize(score, [-1.0, 1.0]).astype(float)
    pdf["target"] = score
    pdf["w"] = rng.uniform(0.5, 2.0, size=N_ROWS)
    pdf["val"] = rng.uniform(size=N_ROWS) < 0.2
    return pdf


@pytest.fixture(scope="module")
def data_path(spark, tmp_path_factory):
    """The rows as three Parquet files that both servers read (same files → same splits)."""
    path = str(tmp_path_factory.mktemp("connect-data") / "rows.parquet")
    spark.createDataFrame(_pdf()).coalesce(1).repartition(3).write.parquet(path)
    return path


def _read(session, path):
    # A filter keeps both sessions on Spark's reader: the classic session would otherwise
    # read a bare Parquet scan straight into the blocks (the direct path, which Connect
    # does not have), with other block boundaries.
    return session.read.parquet(path).where("w > 0")


def _estimator(name, params):
    from sparkml_aiaas import models

    return getattr(models, name)(featuresCols=FEATURES, numPartitions=3, **params)


def _fitted(model):
    return (np.asarray(model.coefficientMatrix), np.asarray(model.interceptVector),
            np.asarray(model.summary.objectiveHistory))


@pytest.fixture(scope="module")
def classic_fits(spark, data_path):
    df = _read(spark, data_path)
    return {name: _fitted(_estimator(cls, params).fit(df)) for name, cls, params in CASES}


@pytest.mark.parametrize("name,cls,params", CASES, ids=[c[0] for c in CASES])
def test_connect_fit_is_bit_identical_to_classic(connect, data_path, classic_fits, name, cls,
                                                 params):
    model = _estimator(cls, params).fit(_read(connect, data_path))
    coef, intercept, history = _fitted(model)
    want_coef, want_intercept, want_history = classic_fits[name]
    np.testing.assert_array_equal(coef, want_coef)
    np.testing.assert_array_equal(intercept, want_intercept)
    np.testing.assert_array_equal(history, want_history)


@pytest.fixture(scope="module")
def classic_predictions(spark, data_path):
    df = _read(spark, data_path)
    model = _estimator("LogisticRegression", dict(maxIter=20)).fit(df)
    out = model.transform(df).select("probability", "prediction").toPandas()
    return model, out


def test_connect_transform_and_save_load(connect, data_path, classic_predictions, tmp_path):
    from sparkml_aiaas.models import LogisticRegressionModel

    classic_model, want = classic_predictions
    df = _read(connect, data_path)
    model = _estimator("LogisticRegression", dict(maxIter=20)).fit(df)
    got = model.transform(df).select("probability", "prediction").toPandas()
    np.testing.assert_array_equal(np.stack(got["probability"].map(lambda v: v.toArray())),
                                  np.stack(want["probability"].map(lambda v: v.toArray())))
    np.testing.assert_array_equal(got["prediction"], want["prediction"])
    path = str(tmp_path / "model")
    model.write().save(path)
    loaded = LogisticRegressionModel.load(path)
    again = loaded.transform(df).select("probability").toPandas()
    np.testing.assert_array_equal(np.stack(again["probability"].map(lambda v: v.toArray())),
                                  np.stack(got["probability"].map(lambda v: v.toArray())))


def test_connect_killed_fit_resumes_from_its_checkpoint(connect, data_path, classic_fits,
                                                        tmp_path, monkeypatch):
    """Ctrl-C in the middle of a Connect fit (its jobs interrupted by tag, its blocks
    removed); the re-run resumes from the checkpoint the client wrote and ends with the
    classic model."""
    from sparkml_aiaas.engine import loop

    df = _read(connect, data_path)
    ckpt = str(tmp_path / "ckpt")
    params = dict(maxIter=30, regParam=0.01, checkpointDir=ckpt, checkpointInterval=2)
    original_call = loop.DistributedDataPass.__call__
    passes = {"n": 0}

    def dying_call(self, *args, **kwargs):
        passes["n"] += 1
        if passes["n"] == 6:
            raise KeyboardInterrupt("killed")
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(loop.DistributedDataPass, "__call__", dying_call)
    with pytest.raises(KeyboardInterrupt):
        _estimator("LogisticRegression", params).fit(df)
    monkeypatch.setattr(loop.DistributedDataPass, "__call__", original_call)
    assert len(os.listdir(ckpt)) == 1
    assert not any(t.startswith("sparkml_aiaas-") for t in connect.getTags())

    resumed = _estimator("LogisticRegression", params).fit(df)
    np.testing.assert_array_equal(_fitted(resumed)[0], classic_fits["binomial-lbfgs"][0])
    assert os.listdir(ckpt) == []


@pytest.fixture(scope="module")
def classic_tuning(spark, data_path):
    return _tune(spark, data_path)


def _tune(session, path):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import ParamGridBuilder

    from sparkml_aiaas.tuning import CrossValidator

    lr = _estimator("LogisticRegression", dict(maxIter=15))
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 0.05, 0.5]).build()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, numFolds=3, seed=5,
                        evaluator=BinaryClassificationEvaluator())
    model = cv.fit(_read(session, path))
    return list(model.avgMetrics), np.asarray(model.bestModel.coefficientMatrix)


def test_connect_cross_validator_matches_classic(connect, data_path, classic_tuning):
    metrics, coef = _tune(connect, data_path)
    want_metrics, want_coef = classic_tuning
    np.testing.assert_allclose(metrics, want_metrics, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(coef, want_coef)


def test_connect_fit_multiple_and_pipeline(connect, data_path, classic_fits):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    df = _read(connect, data_path)
    lr = _estimator("LogisticRegression", dict(maxIter=30))
    maps = [{lr.regParam: 0.01}, {lr.regParam: 0.02, lr.elasticNetParam: 0.5}]
    models = dict(lr.fitMultiple(df, maps))
    np.testing.assert_array_equal(_fitted(models[0])[0], classic_fits["binomial-lbfgs"][0])
    np.testing.assert_array_equal(_fitted(models[1])[0], classic_fits["binomial-owlqn"][0])

    from sparkml_aiaas.models import LogisticRegression

    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=FEATURES, outputCol="features"),
        LogisticRegression(maxIter=10, numPartitions=3)])
    fitted = pipeline.fit(df)
    out = fitted.transform(df).select("prediction").toPandas()
    assert len(out) == N_ROWS and set(out["prediction"]) <= {0.0, 1.0}


def test_connect_blocks_are_removed_and_tags_cleared(connect, data_path):
    """Cleanup runs on the server's executors (its local dirs hold no block folder after the
    fit), and the fit's operation tag is gone from the session."""
    from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks

    df = _read(connect, data_path)
    with ResidentBlocks.build(df, FeatureSpec(columns=FEATURES), "label",
                              num_partitions=3) as blocks:
        assert blocks.connect and blocks.num_partitions == 3
        assert blocks.stats.count == N_ROWS
        assert blocks.job_tag in connect.getTags()
        paths = [r["path"] for r in blocks.keys.collect()]
        assert all(os.path.isdir(p) for p in paths)  # the server runs on this machine
    assert not any(os.path.exists(p) for p in paths)
    assert blocks.job_tag not in connect.getTags()


def test_connect_rebuilds_a_block_that_is_gone(connect, data_path):
    """A task that finds no files where it runs reports its partition; the pass rewrites it
    from the source and the sums equal a pass over intact blocks."""
    import shutil

    from sparkml_aiaas.core.losses import get_loss
    from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks
    from sparkml_aiaas.engine.loop import DistributedDataPass

    df = _read(connect, data_path)
    coef, intercept = np.full((5, 1), 0.1), np.zeros(1)
    with ResidentBlocks.build(df, FeatureSpec(columns=FEATURES), "label",
                              num_partitions=3) as blocks:
        data_pass = DistributedDataPass(blocks, get_loss("logistic"))
        intact = data_pass(coef, intercept)
        shutil.rmtree(sorted(r["path"] for r in blocks.keys.collect())[1])
        again = data_pass(coef, intercept)
        assert blocks.rebuilt_partitions == 1
    assert again.count == intact.count == N_ROWS
    np.testing.assert_allclose(again.grad, intact.grad, rtol=1e-12)


def test_connect_plan_payload_limit_is_a_clear_error(connect):
    from sparkml_aiaas.engine.connect_pass import check_plan_size

    check_plan_size(connect, np.zeros(1000), "small")
    with pytest.raises(ValueError, match="Spark Connect plan can carry"):
        check_plan_size(connect, np.zeros(17 * 2**20), "the network's parameters")


@pytest.mark.parametrize("n,depth", [(1, 2), (3, 2), (7, 2), (16, 2), (40, 3), (9, 1)])
def test_merge_tree_ordered_groups_like_the_rdd_tree_reduce(spark, n, depth):
    """The client-side merge of Connect passes groups and orders exactly as the classic
    tree reduce: string concatenation (not commutative) shows any difference."""
    from sparkml_aiaas.engine.tree_reduce import tree_reduce_ordered

    def concat(a, b):
        return f"({a}+{b})"

    rdd = spark.sparkContext.parallelize(range(n), n).mapPartitionsWithIndex(
        lambda i, _: [(i, str(i))])
    pairs = [(i, str(i)) for i in reversed(range(n))]
    assert merge_tree_ordered(pairs, concat, depth, n) == tree_reduce_ordered(rdd, concat, depth)


def test_run_on_server_returns_results_and_raises_errors(connect, tmp_path):
    from sparkml_aiaas.server_tasks import run_on_server

    def _read_head(path, limit):  # nested: pickled by value, as the server cannot import tests
        with open(path, "rb") as f:
            return f.read(limit)

    target = tmp_path / "x.csv"
    target.write_bytes(b"a,b\n1,2\n")
    assert run_on_server(connect, _read_head, str(target), 3) == b"a,b"
    with pytest.raises(FileNotFoundError, match="nope"):
        run_on_server(connect, _read_head, str(tmp_path / "nope"), 3)


@pytest.fixture(scope="module")
def classic_direct_fit(spark, data_path):
    model = _estimator("LogisticRegression", dict(maxIter=20)).fit(spark.read.parquet(data_path))
    assert model.summary.blockSource == "parquet"
    return _fitted(model)


def test_connect_reads_plain_parquet_directly_like_classic(connect, data_path,
                                                           classic_direct_fit):
    """A bare Parquet scan is read by pyarrow inside the build tasks on Connect too (footers
    read on the server), giving the classic direct build's model bit for bit; a filtered one
    goes through Spark."""
    from sparkml_aiaas.engine.parquet_source import connect_parquet_files

    df = connect.read.parquet(data_path)
    assert connect_parquet_files(df.select("x0", "label"), ["x0", "label"])
    assert connect_parquet_files(df.where("w > 0"), ["x0"]) is None
    assert connect_parquet_files(df.selectExpr("x0 * 2 AS x0"), ["x0"]) is None
    model = _estimator("LogisticRegression", dict(maxIter=20)).fit(df)
    assert model.summary.blockSource == "parquet"
    for got, want in zip(_fitted(model), classic_direct_fit):
        np.testing.assert_array_equal(got, want)



def test_connect_direct_parquet_falls_back_when_a_file_lacks_a_column(spark, connect, tmp_path,
                                                                      monkeypatch):
    """The build tasks plan the split from the footers themselves; when a file lacks one of
    the columns (a declared schema hides it from Spark) they write nothing and the fit takes
    Spark's reader, as the classic session decides on its driver: the same outcome on both."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "uneven.parquet"
    folder.mkdir()
    pdf = _pdf()[FEATURES + ["label"]]
    pq.write_table(pa.Table.from_pandas(pdf.iloc[:300], preserve_index=False),
                   folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(pdf.iloc[300:].drop(columns=["x4"]),
                                        preserve_index=False), folder / "part-1.parquet")
    schema = ", ".join(f"{c} DOUBLE" for c in FEATURES + ["label"])
    estimator = _estimator("LogisticRegression", dict(maxIter=20))
    outcomes = []
    for session in (spark, connect):
        if session is spark:  # pyspark's functions pick the classic kind from the environment
            monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED")
        else:
            monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        try:
            model = estimator.fit(session.read.schema(schema).parquet(str(folder)))
            outcomes.append((model.summary.blockSource, _fitted(model)))
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append((type(exc).__name__, str(exc).splitlines()[0]))
    (classic_kind, classic), (remote_kind, remote) = outcomes
    assert classic_kind == remote_kind != "parquet"
    if classic_kind == "spark":
        for got, want in zip(remote, classic):
            np.testing.assert_array_equal(got, want)
    else:
        assert remote == classic


def test_parquet_writer_planning_in_task_reports_files_it_cannot_read(tmp_path):
    """The in-task planner's answer for a file without a column: no block, a marker key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkml_aiaas.engine.blocks import (NO_DIRECT_PLAN_ROWS, FeatureSpec,
                                             _make_parquet_block_writer)

    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x0": [1.0, 2.0], "label": [0.0, 1.0]}), path)
    write = _make_parquet_block_writer("fit", 2, None, ["x0", "x1", "label"],
                                       FeatureSpec(columns=["x0", "x1"]), "label", None,
                                       paths=[path], num_partitions=1)
    assert list(write(0, None)) == [{"partition": 0, "path": "", "rows": NO_DIRECT_PLAN_ROWS,
                                     "stats": b""}]
