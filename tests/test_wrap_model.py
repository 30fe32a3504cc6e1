"""wrap_model: one call wraps an already-trained scikit-learn, XGBoost or torch model."""

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.models import load_predictor, wrap_model

COLS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    y = (X @ [1.0, -2.0, 0.5] > 0).astype(int)
    return X, y, pd.DataFrame(X, columns=COLS)


def _roundtrip(model, frame, tmp_path):
    path = str(tmp_path / "wrapped")
    model.write().save(path)
    return load_predictor(path).predict(frame)


def test_sklearn_classifier_and_regressor(data, tmp_path):
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y, frame = data
    clf = LogisticRegression().fit(X, y)
    got = _roundtrip(wrap_model(clf, featuresCols=COLS), frame, tmp_path / "c")
    np.testing.assert_allclose(np.stack(got["probability"]), clf.predict_proba(X), atol=1e-12)
    reg = Ridge().fit(X, X @ [1.0, 2.0, 3.0])
    got = _roundtrip(wrap_model(reg, featuresCols=COLS), frame, tmp_path / "r")
    np.testing.assert_allclose(got["prediction"], reg.predict(X), atol=1e-12)


def test_xgboost_booster_and_sklearn_api(data, tmp_path):
    import xgboost

    X, y, frame = data
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2},
                            xgboost.DMatrix(X, label=y), num_boost_round=5)
    got = _roundtrip(wrap_model(booster, featuresCols=COLS), frame, tmp_path / "b")
    np.testing.assert_allclose(np.stack(got["probability"])[:, 1],
                               booster.predict(xgboost.DMatrix(X)), rtol=1e-6)
    reg = xgboost.XGBRegressor(n_estimators=5, max_depth=2).fit(X, X[:, 0])
    got = _roundtrip(wrap_model(reg, featuresCols=COLS), frame, tmp_path / "x")
    np.testing.assert_allclose(got["prediction"], reg.predict(X), rtol=1e-6)


def test_torch_network(data, tmp_path):
    import torch

    from sparkml_aiaas.core.torch_nets import build_network

    X, _, frame = data
    spec = {"type": "mlp", "input_size": 3, "hidden_layers": [8], "output_size": 2}
    torch.manual_seed(0)
    net = build_network(spec)
    got = _roundtrip(wrap_model(net, architecture=spec, featuresCols=COLS, numClasses=2), frame,
                     tmp_path / "t")
    with torch.no_grad():
        expected = torch.softmax(net(torch.tensor(X, dtype=torch.float32)), dim=1).numpy()
    np.testing.assert_allclose(np.stack(got["probability"]), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="needs architecture="):
        wrap_model(net, featuresCols=COLS, numClasses=2)


def test_anything_else_is_refused():
    with pytest.raises(ConfigError, match="cannot wrap a builtins.dict"):
        wrap_model({"weights": [1, 2]}, featuresCols=COLS)
