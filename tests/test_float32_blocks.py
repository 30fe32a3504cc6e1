"""float32 training blocks: storage, float64 compute and accumulation, statistics, and fits that
match the float64 fit."""

import os
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

import sparkml_aiaas.core.losses as losses_module
from sparkml_aiaas.core.glm import fit_glm
from sparkml_aiaas.core.losses import LOSSES, get_loss, loss_gradient_sums
from sparkml_aiaas.core.stats import block_stats
from sparkml_aiaas.engine import FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine import block_files
from sparkml_aiaas.engine.blocks import BlockOptions, write_block
from sparkml_aiaas.errors import ConfigError, DataValidationError
from sparkml_aiaas.models import LinearRegression, LogisticRegression
from sparkml_aiaas.models.linear import LinearRegressionModel, LogisticRegressionModel

ALL_LOSSES = sorted(LOSSES)


def _setup(loss_name, n=2000, d=8, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    loss = get_loss(loss_name)
    k = 3 if loss_name == "multinomial" else 1
    if sparse:
        X = sp.random(n, d, density=0.2, format="csr", random_state=seed,
                      data_rvs=lambda m: rng.normal(size=m))
    else:
        X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    if loss.label_domain == "binary":
        y = (rng.uniform(size=n) < 0.4).astype(float)
    elif loss.label_domain == "class_index":
        y = rng.integers(0, k, size=n).astype(float)
    else:
        y = rng.normal(size=n) * 3.0 + 1.0
    w = rng.uniform(0.1, 3.0, size=n)
    coef = rng.normal(scale=0.4, size=(d, k))
    intercept = rng.normal(size=k)
    extra = np.array([0.5]) if loss.n_extra else None
    return loss, X, y, w, coef, intercept, extra


def _rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


# --------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_float32_sums_agree_with_float64(loss_name, sparse):
    loss, X, y, w, coef, intercept, extra = _setup(loss_name, sparse=sparse)
    X32 = X.astype(np.float32)
    hess = loss.curvature is not None
    s32 = loss_gradient_sums(loss, X32, y, w, coef, intercept, extra, with_hessian=hess)
    s64 = loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=hess)
    # Only the storage rounding (2^-24 relative) differs from the float64 block ...
    assert s32.loss == pytest.approx(s64.loss, rel=1e-6)
    assert _rel(s32.grad, s64.grad) < 1e-6
    assert s32.weight == s64.weight and s32.count == s64.count
    # ... the arithmetic is float64: exactly the float64 sums of the rounded values.
    exact = loss_gradient_sums(loss, X32.astype(np.float64), y, w, coef, intercept, extra,
                               with_hessian=hess)
    assert s32.grad.dtype == np.float64
    assert s32.loss == pytest.approx(exact.loss, rel=1e-13)
    assert _rel(s32.grad, exact.grad) < 1e-13
    if hess:
        assert s32.hessian.dtype == np.float64
        assert _rel(s32.hessian, s64.hessian) < 1e-6
        assert _rel(s32.hessian, exact.hessian) < 1e-13


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_float32_chunks_accumulate_in_float64(sparse, monkeypatch):
    """Hundreds of chunk sums merged, in float64: float32 sums would be off by far more than
    1e-12 with these large, cancelling residuals."""
    loss, X, y, w, coef, intercept, _ = _setup("squared", n=60000, d=4, sparse=sparse)
    y = y + 1e4  # large residuals with cancellation in the gradient sums
    X32 = X.astype(np.float32)
    reference = loss_gradient_sums(loss, X32.astype(np.float64), y, w, coef, intercept)
    monkeypatch.setattr(losses_module, "CHUNK_BYTES", 1 << 11)
    assert losses_module._rows_per_chunk(X32, 1) <= 512  # > 100 chunks
    chunked = loss_gradient_sums(loss, X32, y, w, coef, intercept)
    assert chunked.loss == pytest.approx(reference.loss, rel=1e-12)
    assert _rel(chunked.grad, reference.grad) < 1e-12


def test_local_round_on_float32_block():
    from sparkml_aiaas.core.first_order import RuleSettings, init_state
    from sparkml_aiaas.core.regularizers import elastic_net
    from sparkml_aiaas.core.standardization import ParameterSpace
    from sparkml_aiaas.core.stochastic import RoundSpec, local_round

    loss, X, y, w, _, _, _ = _setup("logistic", n=800, d=6)
    stats = block_stats(X, y, w)
    space = ParameterSpace.build(stats.mean, stats.std(), 1, True)
    spec = RoundSpec(loss=loss, space=space, penalty=elastic_net(space, 0.01, 0.0, True),
                     rule="sgd", settings=RuleSettings(), step=0.1, local_steps=3, fraction=0.5,
                     seed=1, iteration=1)
    x0, state = np.zeros(space.n_vars), init_state("sgd", space.n_vars)
    x32 = local_round(spec, X.astype(np.float32), y, w, x0, state, 0)[0]
    x64 = local_round(spec, X, y, w, x0, state, 0)[0]
    assert x32.dtype == np.float64
    np.testing.assert_allclose(x32, x64, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- statistics
def test_block_stats_of_float32_values_are_float64():
    _, X, y, w, _, _, _ = _setup("squared", n=3000, d=5)
    X32 = X.astype(np.float32)
    s32, exact = block_stats(X32, y, w), block_stats(X32.astype(np.float64), y, w)
    assert s32.mean.dtype == np.float64 and s32.m2.dtype == np.float64
    np.testing.assert_allclose(s32.mean, exact.mean, rtol=1e-12)
    np.testing.assert_allclose(s32.m2, exact.m2, rtol=1e-12)
    np.testing.assert_allclose(s32.std(), block_stats(X, y, w).std(), rtol=1e-6)


# --------------------------------------------------------------------------- block files
@pytest.fixture
def local_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    return tmp_path


def _marker(path):
    with open(os.path.join(path, block_files.COMPLETE_MARKER)) as f:
        return f.read().split()


def test_float32_dense_block_round_trip(local_dirs):
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(9, 3)), rng.normal(size=9), rng.uniform(size=9)
    writer = block_files.BlockWriter("fit-f", 0, 0, 3, dtype=np.float32)
    writer.append(X[:5], y[:5], w[:5])
    writer.append(X[5:], y[5:], w[5:])
    path = writer.close()
    assert _marker(path) == ["9", "3", "<f4", "dense"]
    assert os.path.getsize(os.path.join(path, "X.bin")) == 9 * 3 * 4  # half of float64
    Xb, yb, wb = block_files.open_block(path)
    assert Xb.dtype == np.float32 and Xb.shape == (9, 3)
    np.testing.assert_array_equal(Xb, X.astype(np.float32))
    assert yb.dtype == np.float64 and wb.dtype == np.float64  # labels and weights not rounded
    np.testing.assert_array_equal(yb, y)
    np.testing.assert_array_equal(wb, w)
    empty = block_files.BlockWriter("fit-f", 1, 0, 3, dtype=np.float32).close()
    assert block_files.open_block(empty)[0].dtype == np.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        block_files.BlockWriter("fit-f", 2, 0, 3, dtype=np.float16)


def test_float32_csr_block_round_trip(local_dirs):
    rng = np.random.default_rng(1)
    X = sp.random(30, 7, density=0.3, format="csr", random_state=1)
    y, w = rng.normal(size=30), rng.uniform(size=30)
    writer = block_files.BlockWriter("fit-f", 0, 0, 7, dtype="float32", layout="csr")
    writer.append(X, y, w)
    path = writer.close()
    assert _marker(path) == ["30", "7", "<f4", "csr", str(X.nnz)]
    assert os.path.getsize(os.path.join(path, "data.bin")) == X.nnz * 4
    Xb, yb, wb = block_files.open_block(path)
    assert sp.issparse(Xb) and Xb.dtype == np.float32
    np.testing.assert_array_equal(Xb.toarray(), X.toarray().astype(np.float32))
    np.testing.assert_array_equal(yb, y)


def _column_batch(X, y):
    arrays = [pa.array(X[:, j]) for j in range(X.shape[1])]
    arrays += [pa.array(y), pa.array(np.ones(len(y)))]
    names = [f"f{j}" for j in range(X.shape[1])] + ["label", "weight"]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def test_write_block_stats_are_of_the_stored_values(local_dirs):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(50, 3)) * 1e3, (rng.uniform(size=50) < 0.5).astype(float)
    key = write_block("fit-f", 0, 0, 3, False, [_column_batch(X, y)],
                      BlockOptions("auto", "float32"))
    stats = pickle.loads(key["stats"])
    stored = block_stats(X.astype(np.float32), y, np.ones(50))
    np.testing.assert_array_equal(stats.mean, stored.mean)
    np.testing.assert_array_equal(stats.m2, stored.m2)
    Xb, _, _ = block_files.open_block(key["path"])
    assert Xb.dtype == np.float32 and not sp.issparse(Xb)
    # a value beyond float32's range is infinite once stored: validation must see it
    X[4, 1] = 1e39
    key = write_block("fit-f", 1, 0, 3, False, [_column_batch(X, y)],
                      BlockOptions("dense", "float32"))
    np.testing.assert_array_equal(pickle.loads(key["stats"]).nonfinite_features, [0, 1, 0])
    key = write_block("fit-f", 2, 0, 3, False, [_column_batch(X, y)],
                      BlockOptions("dense", "float64"))
    np.testing.assert_array_equal(pickle.loads(key["stats"]).nonfinite_features, [0, 0, 0])


# --------------------------------------------------------------------------- params
def test_block_dtype_param_values_are_checked():
    assert LogisticRegression().getBlockDtype() == "float64"
    with pytest.raises(ConfigError, match=r"param blockDtype must be one of \['float64', "
                                          r"'float32'\], got 'float16'"):
        LinearRegression(blockDtype="float16").validate_params()
    with pytest.raises(ValueError, match=r"param blockDtype must be one of"):
        BlockOptions("auto", "double")


def test_block_dtype_from_yaml_config():
    from sparkml_aiaas.config import TrainJobConfig, load_config
    from sparkml_aiaas.pipeline import build_estimator

    train_yaml = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "conf", "train.yaml")
    config = load_config(TrainJobConfig, train_yaml,
                         ["model.params.block_dtype=float32", "model.params.block_format=dense"])
    params = config.model.spark_params()
    assert params["blockDtype"] == "float32" and params["blockFormat"] == "dense"
    estimator = build_estimator(config.model)
    assert estimator.getBlockDtype() == "float32" and estimator.getBlockFormat() == "dense"
    estimator.validate_params()
    bad = load_config(TrainJobConfig, train_yaml, ["model.params.block_dtype=half"])
    with pytest.raises(ConfigError, match=r"blockDtype must be one of \['float64', 'float32'\]"):
        build_estimator(bad.model).validate_params()


# --------------------------------------------------------------------------- Spark fits
N, D = 1500, 5
COLS = [f"x{i}" for i in range(D)]
EXACT = dict(regParam=0.01, tol=1e-12, maxIter=200, numPartitions=3)


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)) * [1.0, 2.0, 0.5, 1.5, 3.0] + [0.0, 1.0, -2.0, 0.5, 4.0]
    margin = X @ [0.8, -0.5, 1.2, 0.0, 0.3] - 1.0
    frame = pd.DataFrame(X, columns=COLS)
    frame["label"] = (rng.uniform(size=N) < 1.0 / (1.0 + np.exp(-margin))).astype(float)
    frame["target"] = margin + 0.5 * rng.normal(size=N)
    return frame


@pytest.fixture(scope="module")
def lr32(df):
    return LogisticRegression(featuresCols=COLS, blockDtype="float32", **EXACT).fit(df)


@pytest.fixture(scope="module")
def lr64(df):
    return LogisticRegression(featuresCols=COLS, **EXACT).fit(df)


def test_blocks_store_float32(df):
    with ResidentBlocks.build(df, FeatureSpec(columns=COLS), "label", num_partitions=3,
                              block_dtype="float32") as blocks:
        rows = blocks.keys.collect()
        assert sum(r["rows"] for r in rows) == N
        for row in rows:  # local mode: the executor's files are on this machine
            assert _marker(row["path"])[2:] == ["<f4", "dense"]
            assert os.path.getsize(os.path.join(row["path"], "X.bin")) == row["rows"] * D * 4


def test_float32_fit_matches_float64_fit(lr32, lr64):
    assert lr32.summary.converged and lr64.summary.converged
    np.testing.assert_allclose(lr32.coefficients, lr64.coefficients, rtol=0, atol=1e-4)
    assert lr32.intercept == pytest.approx(lr64.intercept, abs=1e-4)


def test_float32_linear_regression_matches_float64_core_fit(df, pdf):
    model = LinearRegression(featuresCols=COLS, labelCol="target", blockDtype="float32",
                             **EXACT).fit(df)
    X, y, w = pdf[COLS].to_numpy(), pdf["target"].to_numpy(), np.ones(N)
    loss = LOSSES["squared"]

    def data_pass(coef, intercept, extra=None, with_hessian=False):
        return loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=with_hessian)

    ref = fit_glm(data_pass, block_stats(X, y, w), loss=loss, reg_param=0.01, tol=1e-12,
                  max_iter=200)
    np.testing.assert_allclose(model.coefficients, ref.coef[:, 0], rtol=0, atol=1e-4)
    assert model.intercept == pytest.approx(ref.intercept[0], abs=1e-4)


def test_float32_sparse_vectors_fit(spark):
    """float32 and CSR together: the fit equals scikit-learn's on the float64 sparse matrix."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    rng = np.random.default_rng(3)
    n, d = 800, 60
    X = sp.random(n, d, density=0.08, format="csr", random_state=3,
                  data_rvs=lambda m: rng.normal(size=m))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ rng.normal(size=d))))).astype(float)
    rows = [(Vectors.sparse(d, X[i].indices, X[i].data), float(y[i])) for i in range(n)]
    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    frame = spark.createDataFrame(spark.sparkContext.parallelize(rows, 2), schema)
    model = LogisticRegression(blockDtype="float32", regParam=0.02, standardization=False,
                               tol=1e-12, maxIter=200, numPartitions=2).fit(frame)
    sk = SkLogisticRegression(C=1.0 / (n * 0.02), tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(model.coefficients, sk.coef_[0], rtol=0, atol=1e-4)
    assert model.intercept == pytest.approx(sk.intercept_[0], abs=1e-4)


def test_float32_overflow_is_a_validation_error(spark):
    frame = spark.createDataFrame(pd.DataFrame({"a": [1.0, 2e39, 0.5, 3.0],
                                                "label": [0.0, 1.0, 0.0, 1.0]}))
    with pytest.raises(DataValidationError, match="'a' \\(1 rows\\)"):
        LogisticRegression(featuresCols=["a"], blockDtype="float32", numPartitions=1).fit(frame)


# --------------------------------------------------------------------------- persistence
def test_save_load_identical_predictions(lr32, lr64, df, tmp_path):
    cols = ["rawPrediction", "probability", "prediction"]
    for name, model in (("f32", lr32), ("f64", lr64)):
        path = str(tmp_path / name)
        model.write().save(path)
        loaded = LogisticRegressionModel.load(path)
        assert loaded.getBlockDtype() == model.getBlockDtype()
        np.testing.assert_array_equal(loaded.coefficients, model.coefficients)
        before = model.transform(df).select(*cols).toPandas()
        after = loaded.transform(df).select(*cols).toPandas()
        np.testing.assert_array_equal(before["rawPrediction"], after["rawPrediction"])
        np.testing.assert_array_equal(before["prediction"], after["prediction"])
    assert LogisticRegressionModel.load(str(tmp_path / "f32")).getBlockDtype() == "float32"
    estimator = LinearRegression(featuresCols=COLS, blockDtype="float32", blockFormat="sparse")
    estimator.save(str(tmp_path / "estimator"))
    loaded = LinearRegression.load(str(tmp_path / "estimator"))
    assert (loaded.getBlockDtype(), loaded.getBlockFormat()) == ("float32", "sparse")
    assert LinearRegressionModel().getBlockDtype() == "float64"


# --------------------------------------------------------------------------- cleanup
def test_no_block_files_left_after_float32_fit(df, monkeypatch):
    seen = []
    original = ResidentBlocks.cleanup

    def spy(self):
        paths = [row["path"] for row in self.keys.collect()] if self._keys_built else []
        seen.append((paths, [os.path.isdir(p) for p in paths]))
        original(self)

    monkeypatch.setattr(ResidentBlocks, "cleanup", spy)
    LogisticRegression(featuresCols=COLS, blockDtype="float32", maxIter=3,
                       numPartitions=3).fit(df)
    assert len(seen) == 1
    paths, existed = seen[0]
    assert len(paths) == 3 and all(existed)
    assert not any(os.path.exists(p) for p in paths)
    assert not os.path.exists(os.path.dirname(paths[0]))
