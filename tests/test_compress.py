"""Model compression: int8 quantization bounds, pruning sparsity, sparse storage, byte ratios
and accuracy on the digits CNN and an MLP, the compressed artifact through load_predictor,
the registry and Spark scoring, the CLI, and bad input."""

import json
import os

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from sparkml_aiaas.compress import codec  # noqa: E402
from sparkml_aiaas.compress.api import METHODS, compress_model  # noqa: E402
from sparkml_aiaas.errors import ConfigError, ModelFormatError  # noqa: E402
from sparkml_aiaas.models.artifact import read_artifact, write_artifact  # noqa: E402

CNN_SPEC = {"type": "cnn", "input_shape": [1, 8, 8], "num_classes": 10}
MLP_SPEC = {"type": "mlp", "input_size": 64, "hidden_layers": [128, 64], "output_size": 10}
TORCH_MODEL_CLASS = "sparkml_aiaas.models.torch.TorchClassificationModel"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine torch's spinning OpenMP threads make
    these tiny networks train 10-20x slower than one thread does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def _accuracy(module, X, y, shape) -> float:
    module.eval()
    with torch.no_grad():
        return float((module(torch.from_numpy(X.reshape(shape))).argmax(1).numpy() == y).mean())


@pytest.fixture(scope="module")
def trained(digits):
    """The digits CNN (LeNet-5, torch_nets' "cnn") and an MLP, trained single-process."""
    from sparkml_aiaas.core.torch_nets import build_network

    Xtr, Xte, ytr, yte = digits
    nets = {}
    for name, spec, shape, epochs, lr, batch in (("cnn", CNN_SPEC, (-1, 1, 8, 8), 12, 1e-2, 128),
                                                 ("mlp", MLP_SPEC, (-1, 64), 12, 5e-3, 32)):
        module = build_network(spec, seed=0)
        codec.fine_tune(module, Xtr.reshape(shape), ytr, epochs=epochs, lr=lr, batch_size=batch)
        module.eval()
        nets[name] = (spec, shape, module, _accuracy(module, Xte, yte, shape))
    return nets


@pytest.fixture(scope="module")
def dense_models(trained):
    """Each trained net wrapped as a TorchClassificationModel (reading a ``features`` array
    column), as a user would bring an already-trained network."""
    from sparkml_aiaas.models.torch import TorchClassificationModel

    return {name: TorchClassificationModel.from_module(spec, module, featuresCol="features",
                                                       inputShape=list(shape[1:]))
            for name, (spec, shape, module, _) in trained.items()}


@pytest.fixture(scope="module")
def dense_artifacts(dense_models, tmp_path_factory):
    """Each model saved by its own writer: dense float32 ``state.*`` arrays, undeflated."""
    root = tmp_path_factory.mktemp("dense")
    paths = {}
    for name, model in dense_models.items():
        paths[name] = str(root / name)
        model.write().save(paths[name])
    return paths


def _frame(X, y) -> pd.DataFrame:
    return pd.DataFrame({"features": list(X.astype(np.float64)), "label": y.astype(np.float64)})


# --------------------------------------------------------------------------- quantization

def test_int8_error_is_at_most_half_a_step_per_element():
    rng = np.random.default_rng(0)
    for shape in ((7, 5), (16, 3, 5, 5), (4, 1, 3)):
        w = (rng.standard_normal(shape) * rng.uniform(0.01, 3, size=(shape[0],) + (1,) *
                                                         (len(shape) - 1))).astype(np.float32)
        w[1] = 0.0  # an all-zero channel: scale 0, exact zeros back
        q, scale = codec.quantize_per_channel(w)
        assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (shape[0],)
        assert q.min() >= -127 and q.max() <= 127
        deq = codec.dequantize_per_channel(q, scale)
        bound = scale.reshape((-1,) + (1,) * (len(shape) - 1)) / 2
        assert np.all(np.abs(w - deq) <= bound * (1 + 1e-5) + 1e-12)
        assert scale[1] == 0 and np.all(deq[1] == 0)
        # the largest |w| of each nonzero channel uses the full range
        peak = np.abs(q.reshape(shape[0], -1)).max(axis=1)
        assert np.all(peak[scale > 0] == 127)


# --------------------------------------------------------------------------- pruning

@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_unstructured_pruning_reaches_the_sparsity_of_every_layer(sparsity):
    from sparkml_aiaas.core.torch_nets import build_network

    for spec in (CNN_SPEC, MLP_SPEC):
        module = build_network(spec, seed=1)
        names = codec.prune_module(module, sparsity)
        assert names == codec.compressible_weights(module)
        codec.remove_pruning(module)
        for name, layer in module.named_modules():
            if isinstance(layer, codec.COMPRESSIBLE_LAYERS):
                n = layer.weight.numel()
                assert int((layer.weight == 0).sum()) == round(sparsity * n), name
                assert not hasattr(layer, "weight_mask")  # prune.remove made it permanent
        assert codec.weight_sparsity(module) == pytest.approx(sparsity, abs=1e-3)


def test_structured_pruning_zeroes_whole_output_channels_except_the_output_layer():
    from sparkml_aiaas.core.torch_nets import build_network

    sparsity = 0.5
    module = build_network(CNN_SPEC, seed=2)
    names = codec.prune_module(module, sparsity, structured=True)
    codec.remove_pruning(module)
    assert names == codec.compressible_weights(module)[:-1]
    for name, layer in module.named_modules():
        if not isinstance(layer, codec.COMPRESSIBLE_LAYERS):
            continue
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        dead = (rows == 0).all(dim=1)
        if f"{name}.weight" in names:
            assert int(dead.sum()) == round(sparsity * rows.shape[0]), name
            # channels are either all zero or untouched
            assert int((rows[~dead] == 0).sum()) == 0
        else:
            assert int(dead.sum()) == 0  # the 10 class outputs are kept
    # channel granularity: within half a channel of the target on each pruned layer
    assert codec.weight_sparsity(module, names) == pytest.approx(sparsity, abs=0.05)
    with pytest.raises(ConfigError, match="at least two Linear/Conv layers"):
        codec.prune_module(torch.nn.Sequential(torch.nn.Linear(4, 3)), 0.5, structured=True)


def test_fine_tuning_keeps_pruned_weights_at_zero(digits):
    from sparkml_aiaas.core.torch_nets import build_network

    Xtr, _, ytr, _ = digits
    module = build_network(MLP_SPEC, seed=3)
    codec.prune_module(module, 0.7)
    masks = {name: layer.weight_mask.clone() for name, layer in module.named_modules()
             if isinstance(layer, codec.COMPRESSIBLE_LAYERS)}
    losses = codec.fine_tune(module, Xtr, ytr, epochs=3, lr=5e-3)
    assert losses[-1] < losses[0]
    codec.remove_pruning(module)
    for name, layer in module.named_modules():
        if name in masks:
            assert torch.all(layer.weight[masks[name] == 0] == 0)
    assert codec.weight_sparsity(module) == pytest.approx(0.7, abs=1e-3)


# --------------------------------------------------------------------------- storage

def test_decode_state_round_trips_every_format(trained):
    from sparkml_aiaas.core.torch_nets import build_network

    spec, _, module, _ = trained["cnn"]
    names = codec.compressible_weights(module)
    dense = {k: v.clone() for k, v in module.state_dict().items()}
    meta = {"predictor": {"weights": "dense"}}
    decoded = codec.decode_state(meta, {f"state.{k}": v.numpy() for k, v in dense.items()})
    assert all(torch.equal(decoded[k], dense[k]) for k in dense)

    pruned = build_network(spec)
    pruned.load_state_dict(dense)
    codec.prune_module(pruned, 0.6)
    codec.remove_pruning(pruned)
    sparse_state = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    for fmt, source in (("int8", dense), ("sparse", sparse_state), ("sparse-int8", sparse_state)):
        encoding, arrays = codec.encode_state(source, names, fmt)
        assert not any(k.startswith("state.") for k in arrays)
        out = codec.decode_state({"predictor": {"weights": fmt, "encoding": encoding}}, arrays)
        assert list(out) == list(source)  # state-dict order kept
        for key, value in source.items():
            got = out[key]
            assert got.dtype == torch.float32 and got.shape == value.shape
            w = value.numpy()
            if key not in names:
                assert np.array_equal(got.numpy(), w), key  # biases stay float32, exact
            elif fmt == "sparse":
                assert np.array_equal(got.numpy(), w), key  # lossless
            else:
                _, scale = codec.quantize_per_channel(w)
                bound = scale.reshape((-1,) + (1,) * (w.ndim - 1)) / 2
                assert np.all(np.abs(got.numpy() - w) <= bound * (1 + 1e-5) + 1e-12), key
                assert np.all(got.numpy()[w == 0] == 0), key  # pruned zeros stay zero


def test_sparse_positions_use_the_smaller_of_bitmask_and_indices():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 200)).astype(np.float32)
    half = np.where(rng.random(w.shape) < 0.5, 0, w).astype(np.float32)
    tiny = np.where(rng.random(w.shape) < 0.99, 0, w).astype(np.float32)
    state = {"a.weight": torch.from_numpy(half), "b.weight": torch.from_numpy(tiny),
             "b.bias": torch.zeros(64)}
    encoding, arrays = codec.encode_state(state, ["a.weight", "b.weight"], "sparse")
    entries = {e["name"]: e for e in encoding["tensors"]}
    # 50% dense: bitmask (1600 bytes) < indices (4·6400); 1% dense: indices (4·~128) < 1600
    assert "bitmask" in entries["a.weight"] and "indices" not in entries["a.weight"]
    assert "indices" in entries["b.weight"] and "bitmask" not in entries["b.weight"]
    assert arrays["enc.bitmask"].size == (half.size + 7) // 8
    assert arrays["enc.indices"].dtype == np.int32
    out = codec.decode_state({"predictor": {"weights": "sparse", "encoding": encoding}}, arrays)
    assert np.array_equal(out["a.weight"].numpy(), half)
    assert np.array_equal(out["b.weight"].numpy(), tiny)


def test_decode_state_refuses_damaged_encodings(trained):
    _, _, module, _ = trained["mlp"]
    names = codec.compressible_weights(module)
    encoding, arrays = codec.encode_state(module.state_dict(), names, "int8")
    meta = {"predictor": {"weights": "int8", "encoding": encoding}}
    with pytest.raises(ModelFormatError, match="unknown torch weights format 'int4'"):
        codec.decode_state({"predictor": {"weights": "int4", "encoding": encoding}}, arrays)
    with pytest.raises(ModelFormatError, match="need array 'enc.int8'"):
        codec.decode_state(meta, {k: v for k, v in arrays.items() if k != "enc.int8"})
    with pytest.raises(ModelFormatError, match="outside 'enc.int8'"):
        codec.decode_state(meta, dict(arrays, **{"enc.int8": arrays["enc.int8"][:10]}))
    with pytest.raises(ModelFormatError, match="must be 1-D int8"):
        codec.decode_state(meta, dict(arrays, **{"enc.int8": arrays["enc.int8"].astype(
            np.int64)}))
    with pytest.raises(ModelFormatError, match="encoding'] is missing"):
        codec.decode_state({"predictor": {"weights": "int8"}}, arrays)


# --------------------------------------------------------------------------- the targets

@pytest.fixture(scope="module")
def compressed(dense_artifacts, digits, tmp_path_factory):
    """int8 and prune+int8 (unstructured 50%) copies of each dense artifact, via the API,
    evaluated on the digits test split."""
    _, Xte, _, yte = digits
    test = _frame(Xte, yte)
    root = tmp_path_factory.mktemp("compressed")
    out = {}
    for name, path in dense_artifacts.items():
        for method in ("int8", "prune+int8"):
            target = str(root / f"{name}-{method}")
            out[name, method] = (target, compress_model(path, target, method=method,
                                                        eval_data=test))
    return out


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_int8_shrinks_the_artifact_3_5x_and_keeps_accuracy(name, trained, digits,
                                                           dense_artifacts, compressed):
    from sparkml_aiaas.core.torch_nets import build_network

    _, Xte, _, yte = digits
    spec, shape, _, dense_accuracy = trained[name]
    for method, min_ratio in (("int8", 3.5), ("prune+int8", 5.0)):
        path, report = compressed[name, method]
        dense_bytes = os.path.getsize(os.path.join(dense_artifacts[name], "arrays.npz"))
        small_bytes = os.path.getsize(os.path.join(path, "arrays.npz"))
        assert report.bytes_before == dense_bytes and report.bytes_after == small_bytes
        assert dense_bytes / small_bytes >= min_ratio, (name, method, dense_bytes, small_bytes)
        metadata, arrays = read_artifact(path)
        assert metadata["predictor"]["weights"] == METHODS[method]
        assert metadata["compression"]["ratio"] == pytest.approx(dense_bytes / small_bytes,
                                                                 rel=1e-3)
        assert metadata["class"] == TORCH_MODEL_CLASS
        module = build_network(spec)
        module.load_state_dict(codec.decode_state(metadata, arrays))
        accuracy = _accuracy(module, Xte, yte, shape)
        # the report's accuracy is the predictors' (load_predictor path) on the same split
        assert report.metric == "accuracy" and report.eval_rows == len(yte)
        assert report.metric_before == pytest.approx(dense_accuracy)
        assert report.metric_after == pytest.approx(accuracy)
        assert report.throughput_before > 0 and report.throughput_after > 0
        if method == "int8":
            assert accuracy >= dense_accuracy - 0.01, (name, dense_accuracy, accuracy)
        else:  # 50% pruning without fine-tuning: a few points at most on digits
            assert accuracy >= dense_accuracy - 0.05, (name, dense_accuracy, accuracy)
    assert dense_accuracy > 0.94


def test_dense_weights_are_written_deflated_with_no_code(compressed):
    path, _ = compressed["cnn", "int8"]
    import zipfile

    with zipfile.ZipFile(os.path.join(path, "arrays.npz")) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert sorted(zf.namelist()) == ["enc.float32.npy", "enc.int8.npy", "enc.scales.npy"]
    with open(os.path.join(path, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["predictor"]["encoding"]["version"] == codec.ENCODING_VERSION
    assert meta["compression"]["method"] == "int8"


def test_prune_then_fine_tune_recovers_accuracy(digits, dense_artifacts, trained, tmp_path):
    from sparkml_aiaas.core.torch_nets import build_network

    Xtr, Xte, ytr, yte = digits
    spec, shape, _, dense_accuracy = trained["mlp"]
    target = str(tmp_path / "mlp-pruned-tuned")
    report = compress_model(dense_artifacts["mlp"], target, method="prune", sparsity=0.8,
                            fine_tune={"data": _frame(Xtr, ytr), "epochs": 3, "lr": 2e-3},
                            label_col="label")
    assert report.fine_tune_epochs == 3 and len(report.fine_tune_losses) == 3
    assert report.achieved_sparsity == pytest.approx(0.8, abs=1e-3)
    metadata, arrays = read_artifact(target)
    assert metadata["predictor"]["weights"] == "sparse"
    module = build_network(spec)
    module.load_state_dict(codec.decode_state(metadata, arrays))
    accuracy = _accuracy(module, Xte, yte, shape)
    assert report.ratio > 2.5  # 20% of the float32 weights + a 1-bit mask, deflated
    assert accuracy >= dense_accuracy - 0.02


# --------------------------------------------------------------------------- bad input

def test_bad_input_gives_clear_errors(dense_artifacts, tmp_path):
    source = dense_artifacts["mlp"]
    with pytest.raises(ConfigError, match="unknown compression method 'int4'"):
        compress_model(source, str(tmp_path / "a"), method="int4")
    for bad in (1.0, -0.1, 1.5, "half"):
        with pytest.raises(ConfigError, match="sparsity must be"):
            compress_model(source, str(tmp_path / "b"), method="prune", sparsity=bad)
    with pytest.raises(ConfigError, match="structured and fine_tune apply to pruning"):
        compress_model(source, str(tmp_path / "c"), method="int8", structured=True)
    linear = str(tmp_path / "linear")
    write_artifact(linear, {"class": "sparkml_aiaas.models.linear.LogisticRegressionModel",
                            "predictor": {"family": "linear", "kind": "binary_logistic",
                                          "feature_cols": ["a"]}},
                   {"coefficients": np.ones(1), "intercept": np.zeros(1)})
    with pytest.raises(ModelFormatError, match="'linear' model; only torch models"):
        compress_model(linear, str(tmp_path / "d"))
    with pytest.raises(ModelFormatError, match="no model at"):
        compress_model(str(tmp_path / "missing"), str(tmp_path / "e"))
    with pytest.raises(ConfigError, match="already exists"):
        compress_model(source, linear)
    int8 = str(tmp_path / "int8")
    compress_model(source, int8)
    with pytest.raises(ModelFormatError, match="already compressed"):
        compress_model(int8, str(tmp_path / "f"))
    assert not any(os.path.exists(tmp_path / n) for n in "abcdef")


def test_a_fitted_model_object_compresses_like_its_saved_directory(dense_models,
                                                                    dense_artifacts, tmp_path):
    from_object = compress_model(dense_models["mlp"], str(tmp_path / "from-object"))
    from_path = compress_model(dense_artifacts["mlp"], str(tmp_path / "from-path"))
    assert from_object.source.startswith("<fitted TorchClassificationModel")
    assert from_object.bytes_before == from_path.bytes_before
    assert from_object.bytes_after == from_path.bytes_after
    a = read_artifact(str(tmp_path / "from-object"))[1]
    b = read_artifact(str(tmp_path / "from-path"))[1]
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- integration

def test_compressed_model_loads_registers_and_scores_like_any_other(
        spark, compressed, dense_artifacts, dense_models, digits, tmp_path):
    from sparkml_aiaas.models import load_predictor
    from sparkml_aiaas.models.torch import TorchClassificationModel
    from sparkml_aiaas.registry.core import ModelRegistry
    from sparkml_aiaas.scoring import score

    _, Xte, _, yte = digits
    test = _frame(Xte, yte)
    path, _ = compressed["cnn", "int8"]
    dense = load_predictor(dense_artifacts["cnn"]).predict(test)
    predictor = load_predictor(path)
    assert predictor.metadata["predictor"]["weights"] == "int8"
    small = predictor.predict(test)
    assert list(small.columns) == ["rawPrediction", "probability", "prediction"]
    p_dense, p_small = np.stack(dense["probability"]), np.stack(small["probability"])
    # int8 moves probabilities a little (most near 0 or 1 do not move at all)
    assert np.abs(p_dense - p_small).mean() < 0.002
    assert np.abs(p_dense - p_small).max() < 0.15
    assert np.mean(dense["prediction"] == small["prediction"]) >= 0.99

    # The pyspark.ml reader decodes it too (same class as the dense model).
    model = TorchClassificationModel.load(path)
    assert type(model) is type(dense_models["cnn"])
    np.testing.assert_allclose(np.stack(model.predictor().predict(test)["probability"]),
                               p_small, rtol=0, atol=1e-6)

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(path, "digits_cnn_int8", metrics={"accuracy": float(
        np.mean(small["prediction"] == yte))})
    via_registry = registry.load_predictor(f"digits_cnn_int8/{version}").predict(test)
    np.testing.assert_array_equal(np.stack(via_registry["probability"]), p_small)

    rows = [(i, [float(v) for v in x], float(t)) for i, (x, t) in enumerate(zip(Xte, yte))]
    # one partition: one Python worker imports torch (the machine running tests is small)
    frame = spark.createDataFrame(rows, "id INT, features ARRAY<DOUBLE>, label DOUBLE").coalesce(1)
    report = score(spark, "digits_cnn_int8", frame, str(tmp_path / "scored"),
                   registry=str(tmp_path / "registry"))
    assert report.rows_out == len(yte)
    scored = spark.read.parquet(str(tmp_path / "scored")).orderBy("id").toPandas()
    np.testing.assert_allclose(np.stack(scored["probability"]), p_small, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), small["prediction"].to_numpy())


# --------------------------------------------------------------------------- CLI

def test_cli_compress_prints_the_report_and_a_summary(dense_artifacts, digits, tmp_path, capsys):
    from sparkml_aiaas.cli import EXIT_USER_ERROR, main

    _, Xte, _, yte = digits
    eval_path = str(tmp_path / "digits_test.parquet")
    _frame(Xte, yte).to_parquet(eval_path)
    out = str(tmp_path / "cnn-cli")
    status = main(["compress", "--model", dense_artifacts["cnn"], "--out", out,
                   "--method", "prune+int8", "--sparsity", "0.6", "--structured",
                   "--eval-data", eval_path, "--label-col", "label"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    summary = [line for line in printed.splitlines() if line.startswith("compressed ")]
    assert len(summary) == 1 and "weights=sparse-int8" in summary[0]
    assert "accuracy=" in summary[0] and f"output={out}" in summary[0]
    assert "requested 0.600 structured" in printed and "rows/s" in printed
    meta = json.loads(open(os.path.join(out, "metadata.json")).read())
    assert meta["compression"]["structured"] is True
    assert meta["compression"]["eval_rows"] == len(yte)

    for args, message in (
            (["--method", "int4"], "unknown compression method 'int4'"),
            (["--method", "prune", "--sparsity", "1"], "sparsity must be in [0, 1)"),
            (["--eval-data", str(tmp_path / "nope.parquet")], "nope.parquet' does not exist")):
        status = main(["compress", "--model", dense_artifacts["mlp"],
                       "--out", str(tmp_path / "bad"), *args])
        err = capsys.readouterr().err
        assert status == EXIT_USER_ERROR and err.startswith("error: ") and message in err, err
    assert not os.path.exists(tmp_path / "bad")


def test_binary_classifiers_report_auc_and_regressors_rmse(digits, tmp_path):
    """The metric follows the task: AUC for a binary classifier, RMSE for a regressor (here
    on numeric feature columns rather than an array column)."""
    from sparkml_aiaas.core.torch_nets import build_network
    from sparkml_aiaas.models.torch import TorchClassificationModel, TorchRegressionModel

    Xtr, Xte, ytr, yte = digits
    cols = [f"p{i}" for i in range(64)]
    test = pd.DataFrame(Xte.astype(np.float64), columns=cols)
    cases = (("binary", TorchClassificationModel, (ytr >= 5).astype(np.int64),
              (yte >= 5).astype(float), 2, "auc"),
             ("regression", TorchRegressionModel, ytr.astype(np.float32) / 9, yte / 9, 1, "rmse"))
    for name, cls, y_train, y_test, outputs, metric in cases:
        spec = {"type": "mlp", "input_size": 64, "hidden_layers": [32], "output_size": outputs}
        module = build_network(spec, seed=4)
        codec.fine_tune(module, Xtr, y_train, epochs=8, lr=1e-2, batch_size=64,
                        task="classification" if outputs == 2 else "regression")
        path = str(tmp_path / name)
        cls.from_module(spec, module, featuresCols=cols).write().save(path)
        report = compress_model(path, path + "-int8", eval_data=test.assign(label=y_test))
        assert report.metric == metric
        if metric == "auc":
            assert report.metric_before > 0.95
            assert report.metric_after == pytest.approx(report.metric_before, abs=0.01)
        else:
            assert report.metric_before < 0.25
            assert report.metric_after == pytest.approx(report.metric_before, abs=0.01)
        assert report.ratio > 3.0
