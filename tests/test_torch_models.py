"""PyTorch models on the gradient engine: the task-side math against plain torch, Spark training
against single-process torch, real data (digits), save/load/scoring paths, and bad input."""

import os
import sys
import textwrap
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

from sparkml_aiaas.core.first_order import RuleSettings, init_state
from sparkml_aiaas.core.torch_nets import (NetworkSpecError, batch_rows, block_loss_grad,
                                           build_network, epoch_order, get_vector, local_steps,
                                           output_size, set_vector, state_from_arrays,
                                           state_to_arrays)
from sparkml_aiaas.engine.torch_loop import jobs_per_epoch
from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models.trust import UntrustedCodeError

MLP = {"type": "mlp", "input_size": 6, "hidden_layers": [8], "output_size": 3}


def _toy(n=300, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.argmax(X[:, :k] + 0.3 * rng.normal(size=(n, k)), axis=1)).astype(np.float64)
    return X, y


def _frame(spark, X, y, extra=None):
    data = {"features": [row.astype(float).tolist() for row in X], "label": y.astype(float),
            "id": np.arange(len(y))}
    data.update(extra or {})
    return spark.createDataFrame(pd.DataFrame(data))


# --------------------------------------------------------------------------- core, no Spark
def test_architectures_shapes_and_deterministic_init():
    cnn8 = build_network({"type": "cnn", "input_shape": [1, 8, 8], "num_classes": 10}, seed=3)
    cnn28 = build_network({"type": "cnn", "input_shape": [1, 28, 28], "num_classes": 4}, seed=3)
    assert output_size(cnn8, [1, 8, 8]) == 10 and output_size(cnn28, [1, 28, 28]) == 4
    # LeNet-5 layers: 6 then 16 channels of 5×5, then 120 → 84 → classes.
    assert cnn8.conv1.weight.shape == (6, 1, 5, 5) and cnn8.conv2.weight.shape == (16, 6, 5, 5)
    assert cnn8.fc1.weight.shape == (120, 64) and cnn28.fc1.weight.shape == (120, 784)
    assert cnn8.fc2.weight.shape == (84, 120) and cnn8.out.weight.shape == (10, 84)
    a, b = build_network(MLP, seed=5), build_network(MLP, seed=5)
    np.testing.assert_array_equal(get_vector(a), get_vector(b))
    assert not np.array_equal(get_vector(a), get_vector(build_network(MLP, seed=6)))
    state = torch.random.get_rng_state()
    build_network(MLP, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched
    arrays = state_to_arrays(a)
    assert set(arrays) == {f"state.{k}" for k in a.state_dict()}
    assert all(v.dtype == np.float32 for v in arrays.values())
    c = build_network(MLP)
    c.load_state_dict(state_from_arrays(arrays))
    np.testing.assert_array_equal(get_vector(c), get_vector(a))
    with pytest.raises(NetworkSpecError, match="at least 4×4"):
        build_network({"type": "cnn", "input_shape": [1, 3, 3], "num_classes": 2})
    with pytest.raises(NetworkSpecError, match="cannot be imported"):
        build_network({"type": "factory", "factory": "no_such_module_xyz:make"})


def test_block_sums_equal_plain_torch_and_chunking():
    X, y = _toy(200)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=200)
    net = build_network(MLP, seed=0)
    full = block_loss_grad(net, X, y, w, task="classification", input_shape=[6])
    chunked = block_loss_grad(net, X, y, w, task="classification", input_shape=[6], chunk=37)
    net.zero_grad()
    losses = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)),
                                               torch.from_numpy(y.astype(np.int64)), reduction="none")
    (losses * torch.from_numpy(w.astype(np.float32))).sum().backward()
    reference = torch.cat([p.grad.reshape(-1) for p in net.parameters()]).numpy()
    np.testing.assert_allclose(full.grad, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.grad, full.grad, rtol=1e-5, atol=1e-6)
    assert full.count == 200 and full.weight == pytest.approx(w.sum())
    # Two halves merge to the whole (what the tree reduce does across partitions).
    a = block_loss_grad(net, X[:90], y[:90], w[:90], task="classification", input_shape=[6])
    b = block_loss_grad(net, X[90:], y[90:], w[90:], task="classification", input_shape=[6])
    np.testing.assert_allclose(a.grad + b.grad, full.grad, rtol=1e-5, atol=1e-6)


def test_local_steps_are_torch_sgd_on_the_epoch_order():
    X, y = _toy(120)
    w = np.ones(120)
    order = epoch_order(120, seed=4, epoch=2, partition=1)
    assert sorted(order) == list(range(120))
    np.testing.assert_array_equal(order, epoch_order(120, 4, 2, 1))
    net = build_network(MLP, seed=0)
    x0 = get_vector(net)
    x, state, used, _ = local_steps(net, X, y, w, x0, init_state("sgd", x0.size),
                                    task="classification", input_shape=[6], rule="sgd",
                                    settings=RuleSettings(), step=0.1, steps=3, batch_size=50,
                                    order=order, position=100)
    assert used == 150 and int(state["t"]) == 3
    ref = build_network(MLP, seed=0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for s in range(3):
        rows = batch_rows(order, 100 + 50 * s, 50)  # wraps around the block's end
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(torch.from_numpy(X[rows])),
                                          torch.from_numpy(y[rows].astype(np.int64))).backward()
        opt.step()
    np.testing.assert_allclose(x, get_vector(ref), atol=1e-6)
    assert jobs_per_epoch(200_000, 2, 256, 131) == 3 and jobs_per_epoch(10, 2, 0, 1) == 1


# --------------------------------------------------------------------------- Spark training
def _single_process(X, y, spec, seed, optimizer, lr, steps):
    """Full-batch training in one process with torch's own optimizer."""
    net = build_network(spec, seed=seed)
    opt = TORCH_RULES[optimizer](net.parameters(), lr)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(X)),
                                          torch.from_numpy(y.astype(np.int64))).backward()
        opt.step()
    return get_vector(net)


TORCH_RULES = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr, alpha=0.99, eps=1e-8),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr, eps=1e-8),
}


@pytest.mark.parametrize("rule", sorted(TORCH_RULES))
def test_engine_rules_on_the_flat_vector_equal_torch_optimizers(rule):
    """The driver's step (core.first_order on the flattened parameters, fed the block sums)
    is torch's optimizer: every rule, five full-batch steps."""
    from sparkml_aiaas.core.first_order import apply_update

    X, y = _toy(200)
    lr = 0.01
    net = build_network(MLP, seed=3)
    x, state = get_vector(net), init_state(rule, sum(p.numel() for p in net.parameters()))
    for _ in range(5):
        set_vector(net, x)
        _, grad = block_loss_grad(net, X, y, np.ones(200), task="classification",
                                  input_shape=[6]).mean()
        x, state = apply_update(rule, x, grad, state, lr, RuleSettings())
    assert np.abs(x - _single_process(X, y, MLP, 3, rule, lr, 5)).max() < 1e-5


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("sgd", 0.5)])
def test_full_batch_spark_equals_single_process_torch(spark, optimizer, lr):
    from sparkml_aiaas.models import TorchClassifier

    X, y = _toy(300)
    # Raw features (the default standardizes them inside the model) and full batch: each
    # job is one exact step, as single-process torch.
    model = TorchClassifier(hiddenLayers=[8], numClasses=3, optimizer=optimizer, stepSize=lr,
                            batchSize=0, maxEpochs=5, seed=11, numPartitions=2,
                            standardization=False).fit(_frame(spark, X, y))
    assert model.summary.numJobs == 5 and model.summary.numPartitions == 2
    reference = _single_process(X, y, MLP, 11, optimizer, lr, 5)
    assert np.abs(get_vector(model.network()) - reference).max() < 1e-5
    assert model.summary.lossHistory[-1] < model.summary.lossHistory[0]


@pytest.fixture(scope="module")
def digits(spark):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, data.target.astype(float), test_size=0.2,
                                          stratify=data.target, random_state=0)
    return _frame(spark, Xtr, ytr).cache(), _frame(spark, Xte, yte).cache()


@pytest.fixture(scope="module")
def digits_model(digits):
    from sparkml_aiaas.models import TorchClassifier

    train, _ = digits
    # 1437 rows, 2 partitions, 32 rows × 23 local steps: one Spark job per epoch.
    return TorchClassifier(architecture="cnn", inputShape=[1, 8, 8], numClasses=10,
                           optimizer="adam", stepSize=0.01, batchSize=32, localSteps=23,
                           maxEpochs=10, seed=1).fit(train)


def test_digits_cnn_reaches_95_percent(digits, digits_model):
    _, test = digits
    assert digits_model.summary.jobsPerEpoch == 1 and digits_model.summary.numJobs == 10
    out = digits_model.transform(test).select("label", "prediction", "probability").toPandas()
    accuracy = float((out["prediction"] == out["label"]).mean())
    assert accuracy >= 0.95, accuracy
    probs = np.stack(out["probability"].to_numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_cnn_28x28_trains_on_synthetic_images(spark):
    from sparkml_aiaas.models import TorchClassifier

    rng = np.random.default_rng(0)
    n = 240
    labels = rng.integers(0, 4, size=n)
    images = rng.normal(scale=0.3, size=(n, 28, 28)).astype(np.float32)
    for i, c in enumerate(labels):  # a bright 10×10 square in the class's quadrant
        r, q = divmod(int(c), 2)
        images[i, 14 * r + 2:14 * r + 12, 14 * q + 2:14 * q + 12] += 1.0
    frame = _frame(spark, images.reshape(n, -1), labels.astype(float))
    model = TorchClassifier(architecture="cnn", inputShape=[1, 28, 28], numClasses=4,
                            stepSize=0.003, batchSize=30, localSteps=4, maxEpochs=3,
                            seed=0).fit(frame)
    history = model.summary.lossHistory
    assert history[-1] < history[0]
    out = model.transform(frame).select("label", "prediction").toPandas()
    assert (out["prediction"] == out["label"]).mean() > 0.5  # chance is 0.25


def test_mlp_regressor_fits_a_function_in_a_saved_pipeline(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    from sparkml_aiaas.models import TorchRegressor, load_predictor
    from sparkml_aiaas.preprocessing import Preprocessor

    rng = np.random.default_rng(2)
    X = rng.uniform(-2, 2, size=(600, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    pdf = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": y, "id": np.arange(600)})
    frame = spark.createDataFrame(pdf)
    # The preprocessor's output is a VectorUDT column; 300 rows per partition, 20 rows × 15
    # local steps: one Spark job per epoch.
    model = Pipeline(stages=[
        Preprocessor(numericCols=["a", "b"], scaling="standard"),
        TorchRegressor(featuresCol="features", labelCol="y", hiddenLayers=[32, 32],
                       stepSize=0.02, batchSize=20, localSteps=15, maxEpochs=10, seed=0,
                       validationFraction=0.0),
    ]).fit(frame)
    assert model.stages[-1].summary.numJobs == 10
    pred = model.transform(frame).orderBy("id").toPandas()["prediction"].to_numpy()
    r2 = 1 - np.mean((pred - y) ** 2) / np.var(y)
    assert r2 > 0.9, r2
    path = str(tmp_path / "pipeline")
    model.write().save(path)
    again = PipelineModel.load(path).transform(frame).orderBy("id").toPandas()["prediction"]
    local = load_predictor(path).predict(pdf[["a", "b"]])["prediction"]
    np.testing.assert_array_equal(again.to_numpy(), pred)
    np.testing.assert_array_equal(local.to_numpy(), pred)


# --------------------------------------------------------------------------- save, load, score
def test_save_load_identical_in_spark_and_spark_free(digits, digits_model, tmp_path):
    from sparkml_aiaas.models import TorchClassificationModel, load_predictor

    _, test = digits
    path = str(tmp_path / "cnn")
    digits_model.write().save(path)
    loaded = TorchClassificationModel.load(path)
    cols = ["rawPrediction", "probability", "prediction"]
    before = digits_model.transform(test).orderBy("id").select(*cols).toPandas()
    after = loaded.transform(test).orderBy("id").select(*cols).toPandas()
    predictor = load_predictor(path)
    direct = predictor.predict(test.orderBy("id").toPandas())
    for col in cols:
        a = np.stack(before[col].to_numpy()) if col != "prediction" else before[col].to_numpy()
        b = np.stack(after[col].to_numpy()) if col != "prediction" else after[col].to_numpy()
        c = np.stack(direct[col].to_numpy()) if col != "prediction" else direct[col].to_numpy()
        np.testing.assert_array_equal(a, b, err_msg=col)
        np.testing.assert_array_equal(a, c, err_msg=col)
    meta = predictor.metadata["predictor"]
    assert meta["family"] == "torch" and meta["weights"] == "dense"
    assert meta["architecture"] == {"type": "cnn", "input_shape": [1, 8, 8], "num_classes": 10}
    with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as arrays:
        # The weights, and the input standardization the network was trained behind.
        assert {k for k in arrays.files if not k.startswith("state.")} == {
            "scaling.input_mean", "scaling.input_scale", "scaling.target"}
    assert meta["scaling"] == "standard"
    assert loaded.getNumClasses() == 10 and loaded.summary.numJobs == 10
    # A weights format nobody can decode is a clear error naming it, not a guess.
    bad = dict(predictor.metadata, predictor=dict(meta, weights="int8-mystery"))
    with pytest.raises(ModelFormatError, match="int8-mystery"):
        type(predictor).from_artifact(bad, {})


def test_registry_and_batch_scoring_equal_transform(spark, digits, digits_model, tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.scoring import score
    from sparkml_aiaas.scoring.sink import read_scores

    _, test = digits
    registry = ModelRegistry(str(tmp_path / "registry"))
    registry.register(digits_model, "digits")
    source = str(tmp_path / "input")
    test.write.parquet(source)
    out = str(tmp_path / "scored")
    score(spark, "digits", source, out, registry=str(tmp_path / "registry"), batch_size=100)
    got = read_scores(spark, out).orderBy("id").toPandas()
    expected = digits_model.transform(spark.read.parquet(source)).orderBy("id").toPandas()
    np.testing.assert_array_equal(np.stack(got["probability"].to_numpy()),
                                  np.stack(expected["probability"].to_numpy()))
    np.testing.assert_array_equal(got["prediction"], expected["prediction"])


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors(spark):
    from sparkml_aiaas.models import TorchClassifier

    X, y = _toy(40, d=64, k=3)
    good = dict(architecture="cnn", inputShape=[1, 8, 8], numClasses=3, maxEpochs=1, batchSize=0)
    with pytest.raises(DataValidationError, match=r"63 values per row, but inputShape \[1, 8, 8\]"):
        TorchClassifier(**good).fit(_frame(spark, X[:, :63], y))
    Xn = X.copy()
    Xn[3, 5] = np.nan
    Xn[7, 9] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'features' contain 2 NaN"):
        TorchClassifier(**good).fit(_frame(spark, Xn, y))
    y_bad = y.copy()
    y_bad[0] = 7
    with pytest.raises(DataValidationError, match=r"holds the label 7, but numClasses is 3"):
        TorchClassifier(**good).fit(_frame(spark, X, y_bad))
    with pytest.raises(ConfigError, match="numClasses must be >= 2"):
        TorchClassifier(**dict(good, numClasses=1)).fit(_frame(spark, X, y))
    with pytest.raises(ConfigError, match="inputShape"):
        TorchClassifier(architecture="cnn", numClasses=3).fit(_frame(spark, X, y))
    with pytest.raises(ConfigError, match="optimizer"):
        TorchClassifier(optimizer="lbfgs").fit(_frame(spark, X, y))


def test_predictor_refuses_wrong_image_size(digits_model):
    predictor = digits_model.predictor()
    frame = pd.DataFrame({"features": [np.zeros(63), np.zeros(64)]})
    with pytest.raises(DataValidationError, match=r"arrays of 64 values .*found sizes \[63, 64\]"):
        predictor.predict(frame)
    out = predictor.predict(pd.DataFrame({"features": [np.full(64, np.nan), np.zeros(64)]}))
    assert np.isnan(out["prediction"][0]) and not np.isnan(out["prediction"][1])


# --------------------------------------------------------------------------- user networks
FACTORY_SOURCE = textwrap.dedent('''
    import torch

    def make_net(width=16, classes=3):
        return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(),
                                   torch.nn.Linear(width, classes))
''')


def test_user_factory_trains_and_round_trips(spark, tmp_path):
    from sparkml_aiaas.models import TorchClassificationModel, TorchClassifier, load_predictor

    name = f"user_nets_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{name}.py"
    source.write_text(FACTORY_SOURCE)
    # The user's module reaches the executors the usual Spark way.
    spark.sparkContext.addPyFile(str(source))
    sys.path.insert(0, str(tmp_path))
    try:
        X, y = _toy(300)
        frame = _frame(spark, X, y)
        model = TorchClassifier(architecture=f"{name}:make_net", factoryKwargs={"width": 12},
                                numClasses=3, stepSize=0.01, batchSize=50, localSteps=3,
                                maxEpochs=8, seed=0).fit(frame)
        assert model.network()[0].weight.shape == (12, 6)
        out = model.transform(frame).select("label", "prediction").toPandas()
        assert (out["prediction"] == out["label"]).mean() > 0.7
        path = str(tmp_path / "factory_model")
        model.write().save(path)
        # A saved model naming a factory loads only when the loading side trusts it.
        with pytest.raises(UntrustedCodeError, match=f"{name}:make_net"):
            load_predictor(path)
        trust = [f"{name}:make_net"]
        direct = load_predictor(path, trusted_factories=trust).predict(
            frame.orderBy("id").toPandas())
        loaded = TorchClassificationModel.load(path, trusted_factories=[f"{name}:*"])
        spark_out = loaded.transform(frame).orderBy("id").toPandas()
        np.testing.assert_array_equal(direct["prediction"], spark_out["prediction"])
        with pytest.raises(ConfigError, match="does not fit"):
            TorchClassificationModel.from_module(f"{name}:make_net", model.state_dict(),
                                                 featuresCol="features", inputShape=[6])
    finally:
        sys.path.remove(str(tmp_path))


def test_wrap_already_trained_network(spark, tmp_path):
    from sparkml_aiaas.models import TorchClassificationModel, TorchRegressionModel, load_predictor

    X, y = _toy(50)
    trained = build_network(MLP, seed=9)
    model = TorchClassificationModel.from_module(MLP, trained.state_dict(),
                                                 featuresCol="features")
    frame = _frame(spark, X, y)
    out = model.transform(frame).orderBy("id").toPandas()
    with torch.inference_mode():
        expected = trained(torch.from_numpy(X)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    path = str(tmp_path / "wrapped")
    model.write().save(path)
    np.testing.assert_array_equal(load_predictor(path).predict(frame.orderBy("id").toPandas())
                                  ["prediction"], out["prediction"])
    reg_spec = {"type": "mlp", "input_size": 2, "hidden_layers": [4], "output_size": 1}
    reg = TorchRegressionModel.from_module(reg_spec, build_network(reg_spec, seed=0),
                                           featuresCols=["a", "b"])
    pdf = pd.DataFrame({"a": [0.5, -1.0], "b": [2.0, 0.0]})
    assert reg.predictor().predict(pdf)["prediction"].shape == (2,)
    with pytest.raises(ConfigError, match="must output 1 value"):
        TorchRegressionModel.from_module(MLP, trained, featuresCol="features")
