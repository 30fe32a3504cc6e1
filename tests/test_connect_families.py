"""The other model families on Spark Connect: torch trains there bit-identical to classic
(fit, transform, save/load, the plan-size limit of its parameters), scikit-learn's sample
path gives the classic model, and XGBoost — whose xgboost.spark 3.x trainer needs RDD
barrier mode — refuses to fit there with one clear error while its models still score.
One Connect server for the run (``connect`` in conftest); classic references come from
module-scoped fixtures."""

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.errors import ConfigError

N_ROWS = 900
FEATURES = [f"x{i}" for i in range(6)]


def _pdf():
    rng = np.random.default_rng(5)
    # Rounded to 0.1: XGBoost's histogram cuts are then exact (see test_xgboost_models).
    X = np.round(rng.normal(size=(N_ROWS, len(FEATURES))), 1)
    score = X @ np.array([1.5, -2.0, 0.5, 0.0, 1.0, -0.5]) + rng.normal(scale=0.7, size=N_ROWS)
    pdf = pd.DataFrame(X, columns=FEATURES)
    pdf["label"] = (score > 0).astype(float)
    pdf["cls"] = np.digitize(score, [-1.0, 1.0]).astype(float)
    pdf["target"] = score
    pdf["id"] = np.arange(N_ROWS)
    return pdf


@pytest.fixture(scope="module")
def data_path(spark, tmp_path_factory):
    """The rows as three Parquet files both sessions read (same files → same splits)."""
    path = str(tmp_path_factory.mktemp("connect-families") / "rows.parquet")
    spark.createDataFrame(_pdf()).coalesce(1).repartition(3).write.parquet(path)
    return path


def _read(session, path):
    # A filter keeps both sessions on Spark's reader (the classic direct Parquet path,
    # which Connect does not have, cuts other blocks).
    return session.read.parquet(path).where("id >= 0")


def _outputs(model, df, columns):
    """``columns`` of ``model.transform(df)`` as float arrays, in ``id`` order."""
    got = model.transform(df).toPandas().sort_values("id")
    return {c: np.stack(got[c].map(lambda v: np.asarray(v.toArray() if hasattr(v, "toArray")
                                                          else v, float)))
            if got[c].dtype == object else got[c].to_numpy(np.float64) for c in columns}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------------------------------ torch
# (name, estimator class, params): the engine's three torch jobs — local rounds (localSteps
# 0, the default), exact gradient steps over mini-batches, and held-out evaluation with
# early stopping (the regressor's default validationFraction 0.1).
TORCH_CASES = [
    ("classifier-local-rounds", "TorchClassifier",
     dict(labelCol="cls", hiddenLayers=[8], batchSize=32, maxEpochs=2, tol=0.0)),
    ("classifier-exact-steps", "TorchClassifier",
     dict(labelCol="cls", hiddenLayers=[8], batchSize=150, localSteps=1, maxEpochs=2,
          tol=0.0, optimizer="sgd", stepSize=0.1)),
    ("regressor-early-stopping", "TorchRegressor",
     dict(labelCol="target", hiddenLayers=[8], batchSize=64, maxEpochs=6, tol=0.5,
          nIterNoChange=2)),
]
TORCH_OUT = {"TorchClassifier": ["rawPrediction", "probability", "prediction"],
             "TorchRegressor": ["prediction"]}


def _torch(cls, params):
    from sparkml_aiaas import models

    return getattr(models, cls)(featuresCols=FEATURES, numPartitions=3, seed=3, **params)


def _torch_fitted(model):
    s = model.summary
    return ({k: np.asarray(v) for k, v in model._state.items()},
            (s.lossHistory, s.validationLossHistory, s.epochs, s.bestEpoch, s.numJobs))


@pytest.fixture(scope="module")
def classic_torch(spark, data_path):
    df = _read(spark, data_path)
    fits = {}
    for name, cls, params in TORCH_CASES:
        model = _torch(cls, params).fit(df)
        fits[name] = (_torch_fitted(model), _outputs(model, df, TORCH_OUT[cls] + ["id"]))
    return fits


@pytest.mark.parametrize("name,cls,params", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_connect_torch_fit_transform_save_load_are_bit_identical_to_classic(
        connect, data_path, classic_torch, tmp_path, name, cls, params):
    df = _read(connect, data_path)
    model = _torch(cls, params).fit(df)
    (want_state, want_summary), want_out = classic_torch[name]
    state, summary = _torch_fitted(model)
    assert state.keys() == want_state.keys()
    for key in state:
        np.testing.assert_array_equal(state[key], want_state[key], err_msg=key)
    assert summary == want_summary
    _assert_same(_outputs(model, df, TORCH_OUT[cls] + ["id"]), want_out)
    # Save/load on Connect: the artifact is written by this process, no Spark job.
    path = str(tmp_path / "torch")
    model.write().save(path)
    loaded = type(model).load(path)
    assert loaded.summary == model.summary
    _assert_same(_outputs(loaded, df, TORCH_OUT[cls] + ["id"]), want_out)


def test_connect_torch_network_of_megabytes_trains_and_one_past_the_limit_is_refused(
        connect, data_path):
    """The parameters travel inside each job's plan: 4.3 MB of them (532k parameters, plus
    Adam's two state vectors in a local round) train; 151 MB (18.9M) are past the real limit
    (the client's gRPC send limit and the server's spark.connect.grpc.maxInboundMessageSize,
    128 MiB each by default, on the zstd-compressed plan: measured 138 MiB for these) and
    are refused before any job is sent, with the sizes and the fix."""
    from sparkml_aiaas.models import TorchRegressor

    df = _read(connect, data_path)
    big = TorchRegressor(featuresCols=FEATURES, labelCol="target", hiddenLayers=[1024, 512],
                         batchSize=100, maxEpochs=1, validationFraction=0.0, numPartitions=3)
    model = big.fit(df)
    assert model.summary.numParameters == 532_481 and model.summary.epochs == 1
    too_big = TorchRegressor(featuresCols=FEATURES, labelCol="target", hiddenLayers=[4608, 4096],
                             batchSize=0, localSteps=1, maxEpochs=1, validationFraction=0.0,
                             numPartitions=3)
    with pytest.raises(ConfigError, match=r"the network's parameters is 144\.\d MiB pickled, "
                                          r"more than the 124\.0 MiB a Spark Connect plan"):
        too_big.fit(df)


# ------------------------------------------------------------------------------ scikit-learn
SK_OUT = ["rawPrediction", "probability", "prediction"]


def _sklearn(session, path):
    """A forest fitted on a 60 % seeded sample (Bernoulli per partition: the same files give
    the same sample on both sessions) and its transform of every row."""
    from sklearn.ensemble import RandomForestClassifier

    from sparkml_aiaas.models import SklearnClassifier

    df = _read(session, path)
    model = SklearnClassifier(estimator=RandomForestClassifier(n_estimators=10, max_depth=5),
                              featuresCols=FEATURES, labelCol="cls", sampleFraction=0.6,
                              seed=1).fit(df)
    return model, _outputs(model, df, SK_OUT + ["id"])


@pytest.fixture(scope="module")
def classic_sklearn(spark, data_path):
    return _sklearn(spark, data_path)


def test_connect_sklearn_sample_fit_and_transform_equal_classic(connect, data_path,
                                                                classic_sklearn):
    model, outputs = _sklearn(connect, data_path)
    want_model, want_outputs = classic_sklearn
    assert 0 < model.summary.numSampleRows < N_ROWS
    assert model.summary.numSampleRows == want_model.summary.numSampleRows
    X = _pdf()[FEATURES].to_numpy()
    np.testing.assert_array_equal(model._estimator.predict_proba(X),
                                  want_model._estimator.predict_proba(X))
    _assert_same(outputs, want_outputs)


# ----------------------------------------------------------------------------------- XGBoost
@pytest.fixture(scope="module")
def classic_xgboost(spark, data_path):
    """A booster trained by xgboost.spark on the classic session (numWorkers 0: the free slots,
    at most the partitions), and its transform."""
    from sparkml_aiaas.models.xgboost import XGBoostClassifier

    df = _read(spark, data_path)
    model = XGBoostClassifier(featuresCols=FEATURES, maxDepth=3, numRound=5).fit(df)
    assert model.summary.numWorkers == 2  # local[2]: 2 free slots, 3 partitions
    return model, _outputs(model, df, SK_OUT + ["id"])


@pytest.mark.parametrize("name", ["XGBoostClassifier", "XGBoostRegressor",
                                  "RandomForestClassifier", "RandomForestRegressor"])
def test_connect_xgboost_fit_is_one_clear_error(connect, data_path, name):
    """xgboost.spark 3.x trains in an RDD barrier stage, which Connect cannot run: one
    ConfigError before any job, saying what to do; the barrier checks refuse the same way
    (not an AttributeError on sparkContext)."""
    from sparkml_aiaas.engine.barrier import check_barrier_preconditions, free_task_slots
    from sparkml_aiaas.models import xgboost as xgb

    label = "label" if name.endswith("Classifier") else "target"
    estimator = getattr(xgb, name)(featuresCols=FEATURES, labelCol=label)
    with pytest.raises(ConfigError) as info:
        estimator.fit(_read(connect, data_path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}.fit (distributed XGBoost: xgboost.spark trains in a "
                              "barrier-mode stage) needs a classic Spark session")
    assert "from_booster" in message and "classic cluster" in message
    for check in (free_task_slots, lambda s: check_barrier_preconditions(s, 2)):
        with pytest.raises(ConfigError, match="barrier-mode Spark job .* not Spark Connect"):
            check(connect)


def test_connect_xgboost_models_transform(connect, data_path, classic_xgboost, tmp_path):
    """Scoring needs no barrier: a model trained on a classic cluster (saved, loaded here)
    and one trained on this machine and wrapped with from_booster transform on Connect."""
    import xgboost

    from sparkml_aiaas.models.xgboost import XGBoostClassificationModel

    classic_model, want = classic_xgboost
    path = str(tmp_path / "xgb")
    classic_model.write().save(path)
    df = _read(connect, data_path)
    _assert_same(_outputs(XGBoostClassificationModel.load(path), df, SK_OUT + ["id"]), want)

    rows = df.select(*FEATURES, "label").toPandas()  # the single-machine path: collect, fit
    local = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(rows[FEATURES], rows["label"])
    wrapped = XGBoostClassificationModel.from_booster(local, featuresCols=FEATURES)
    got = _outputs(wrapped, df, ["probability", "id"])
    expected = local.predict_proba(_pdf()[FEATURES])[:, 1]
    np.testing.assert_allclose(got["probability"][:, 1], expected, rtol=1e-6)
