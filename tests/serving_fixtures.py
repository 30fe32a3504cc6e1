"""Served models of every family, made without Spark, and a real HTTP server in a thread.

For the serving tests of every protocol: ``build_registry(root)`` registers one model per
family (seconds, no Spark session); ``make_tokens(path)`` writes the tokens they use;
``predictor_outputs`` is what ``load_predictor`` answers, the reference every protocol is
compared with by ``assert_same_bits``; ``running(app)`` serves an app with uvicorn on a
free 127.0.0.1 port (clients such as tritonclient need a real socket, not an ASGI
transport).
"""

import contextlib
import datetime as dt
import threading
import time

import numpy as np
import pandas as pd

from sparkml_aiaas.registry import ModelRegistry

COLS = ["x0", "x1", "x2"]
#: The raw columns of the "pre" bundle: numbers, a bigint and a string category.
PRE_COLS = COLS + ["n", "color"]
WIDTH = 4  # features of the vector-input multinomial model
#: Served name -> the reference the server is started with.
MODELS = {"bc": "bc@production", "mn": "mn/1", "reg": "reg/1", "svc": "svc/1",
          "sk": "sk/1", "xg": "xg/1", "torch": "torch/1", "pre": "pre/1"}


def frame(rows=12, seed=7) -> pd.DataFrame:
    """Input rows for every model: x0..x2, n (int64), color (str), features (vectors)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    data = pd.DataFrame(X, columns=COLS)
    data["n"] = rng.integers(0, 5, size=rows).astype(np.int64)
    data["color"] = np.where(X[:, 0] > 0, "red", "blue")
    data["features"] = list(rng.normal(size=(rows, WIDTH)))
    return data


def _linear(cls, coefficients, intercept, columns, **params):
    model = cls(coefficients=np.asarray(coefficients, dtype=np.float64), intercept=intercept,
                signature={"inputs": [{"name": name, "type": kind} for name, kind in columns]})
    return model._set(**params)


def build_registry(root: str) -> ModelRegistry:
    """One model per family in a registry at ``root`` (names: :data:`MODELS`)."""
    import torch
    import xgboost
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    from sparkml_aiaas.core.preprocessing import fit_from_pandas
    from sparkml_aiaas.core.torch_nets import build_network
    from sparkml_aiaas.models import (
        LinearRegressionModel,
        LinearSVCModel,
        LogisticRegressionModel,
        wrap_model,
    )
    from sparkml_aiaas.preprocessing import Preprocessor
    from sparkml_aiaas.preprocessing.stages import PreprocessorModel

    registry = ModelRegistry(root)
    doubles = [(c, "double") for c in COLS]
    registry.register(_linear(LogisticRegressionModel, [1.0, -2.0, 0.5], 0.25, doubles,
                              featuresCols=COLS), "bc")
    registry.set_alias("bc", "production", 1)
    registry.register(_linear(LogisticRegressionModel, np.arange(12.0).reshape(4, 3) / 7,
                              [0.1, -0.2, 0.3], [("features", "vector")],
                              featuresCol="features"), "mn")
    registry.register(_linear(LinearRegressionModel, [0.5, 1.5, -1.0], 2.0, doubles,
                              featuresCols=COLS), "reg")
    registry.register(_linear(LinearSVCModel, [1.0, 1.0, -3.0], -0.5, doubles,
                              featuresCols=COLS), "svc")

    train = frame(200, seed=1)
    X, y = train[COLS].to_numpy(), (train["x0"] - 2 * train["x1"] > 0).astype(int).to_numpy()
    registry.register(wrap_model(SkLogisticRegression().fit(X, y), featuresCols=COLS), "sk")
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2},
                            xgboost.DMatrix(X, label=y), num_boost_round=4)
    registry.register(wrap_model(booster, featuresCols=COLS), "xg")
    spec = {"type": "mlp", "input_size": 3, "hidden_layers": [8], "output_size": 2}
    torch.manual_seed(0)
    registry.register(wrap_model(build_network(spec), architecture=spec, featuresCols=COLS,
                                 numClasses=2), "torch")

    stage = Preprocessor(numericCols=COLS + ["n"], categoricalCols=["color"],
                         outputCol="features")
    fitted = fit_from_pandas(train[PRE_COLS], stage.spec())
    types = {"n": "bigint", "color": "string"}
    preprocessor = PreprocessorModel(fitted=fitted, signature={"inputs": [
        {"name": c, "type": types.get(c, "double")} for c in PRE_COLS]})
    preprocessor._set(numericCols=COLS + ["n"], categoricalCols=["color"],
                      outputCol="features")
    width = fitted.num_features
    model = _linear(LogisticRegressionModel, np.linspace(-1, 1, width), 0.1,
                    [("features", "vector")], featuresCol="features")
    registry.register(model, "pre", preprocessor=preprocessor)
    return registry


def make_tokens(path: str) -> dict:
    """Tokens in a store at ``path``: ``predict`` (scope predict), ``admin_only`` (scope
    admin), ``expired`` (predict, expired in 2020) and ``limited`` (predict, for rate
    limits)."""
    from sparkml_aiaas.serving.tokens import create_token

    return {"predict": create_token(path, "client", ["predict"]),
            "admin_only": create_token(path, "ops", ["admin"]),
            "expired": create_token(path, "old", ["predict"], expires_in_days=1,
                                    now=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)),
            "limited": create_token(path, "limited", ["predict"])}


def predictor_outputs(registry_root: str, ref: str, rows: pd.DataFrame) -> dict:
    """``load_predictor(ref)``'s outputs for ``rows`` as arrays (vector columns stacked to
    ``[N, k]``), keyed by output column, in the predictor's order."""
    predictor = ModelRegistry(registry_root).load_predictor(ref)
    out = predictor.predict(rows[predictor.input_columns].reset_index(drop=True))
    return {column: (np.stack([np.asarray(v, dtype=np.float64) for v in out[column]])
                     if out[column].dtype == object else out[column].to_numpy())
            for column, _ in predictor.output_columns}


def assert_same_bits(got, expected) -> None:
    """Same shape, dtype and bytes; NaN in the same places (its sign bit means nothing)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got, expected)
    if got.dtype.kind == "f":
        missing = np.isnan(expected)
        assert (np.isnan(got) == missing).all(), (got, expected)
        got, expected = got[~missing], expected[~missing]
    assert got.tobytes() == expected.tobytes(), (got, expected)


def free_port() -> int:
    from sparkml_aiaas.cluster import free_port as _free_port

    return _free_port()


@contextlib.contextmanager
def running(app):
    """``app`` served by uvicorn on 127.0.0.1 in a thread; yields ``"127.0.0.1:port"``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
