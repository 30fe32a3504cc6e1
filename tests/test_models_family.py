"""The wider model family on Spark: multinomial, linear SVM, huber, newton, OWL-QN —
each against a single-machine reference, and each saved, loaded and served without Spark."""

import numpy as np
import pandas as pd
import pytest
from pyspark.ml.classification import LinearSVC as SparkLinearSVC
from pyspark.ml.feature import VectorAssembler
from sklearn.linear_model import HuberRegressor
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.models import (LinearRegression, LinearSVC, LinearSVCModel, LogisticRegression,
                                  load_model, load_predictor)

N, D = 600, 4
COLS = [f"x{i}" for i in range(D)]
REG = 0.01
EXACT = dict(regParam=REG, standardization=False, tol=1e-12, maxIter=500)


def _pdf(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    pdf = pd.DataFrame(X, columns=COLS)
    margins = X @ np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [0.0, 1.0, 1.0], [0.2, 0, 0]])
    probs = np.exp(margins) / np.exp(margins).sum(axis=1, keepdims=True)
    pdf["cls"] = np.array([rng.choice(3, p=p) for p in probs], dtype=float)
    m = X @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.2
    pdf["label"] = (rng.uniform(size=N) < 1 / (1 + np.exp(-2 * m))).astype(float)
    noise = rng.standard_t(2, size=N)  # heavy tails: what huber is for
    pdf["target"] = X @ [2.0, -1.0, 0.5, 0.0] + 1.5 + 0.5 * noise
    pdf["id"] = np.arange(N)
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _pdf()


def _round_trip(model, df, tmp_path, outputs):
    """save → load → identical Spark predictions, and the Spark-free predictor agrees."""
    path = str(tmp_path / "model")
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    before = model.transform(df).orderBy("id").toPandas()
    after = loaded.transform(df).orderBy("id").toPandas()
    local = load_predictor(path).predict(before)
    for column in outputs:
        a, b, c = (np.stack(frame[column].to_numpy()) for frame in (before, after, local))
        np.testing.assert_array_equal(a, b)
        if column == "rawPrediction" and c.ndim == 1:
            c = np.column_stack([-c, c])  # the predictor's binary margin m; transform: [-m, m]
        np.testing.assert_array_equal(a, c)
    return loaded


def test_multinomial_matches_scikit_learn(df, pdf, tmp_path):
    model = LogisticRegression(featuresCols=COLS, labelCol="cls", **EXACT).fit(df)
    assert model.numClasses == 3 and model.coefficientMatrix.shape == (3, D)
    sk = SkLogisticRegression(C=1.0 / (N * REG), tol=1e-12, max_iter=10_000).fit(
        pdf[COLS].to_numpy(), pdf["cls"].to_numpy())
    np.testing.assert_allclose(model.coefficientMatrix, sk.coef_, atol=1e-4)
    centered = model.interceptVector - model.interceptVector.mean()
    np.testing.assert_allclose(centered, sk.intercept_ - sk.intercept_.mean(), atol=1e-4)
    with pytest.raises(ValueError, match="coefficientMatrix"):
        model.coefficients
    scored = model.transform(df).orderBy("id").toPandas()
    probability = np.stack(scored["probability"].to_numpy())
    np.testing.assert_allclose(probability, sk.predict_proba(pdf[COLS].to_numpy()), atol=1e-4)
    np.testing.assert_array_equal(scored["prediction"], probability.argmax(axis=1))
    _round_trip(model, df, tmp_path, ["rawPrediction", "probability", "prediction"])


def test_family_binomial_refuses_three_classes(df):
    from sparkml_aiaas.errors import DataValidationError

    with pytest.raises(DataValidationError, match="must hold 0 or 1 for a binary logistic"):
        LogisticRegression(featuresCols=COLS, labelCol="cls", family="binomial").fit(df)
    with pytest.raises(ConfigError, match="param family must be"):
        LogisticRegression(featuresCols=COLS, family="poisson").fit(df)


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_class_labels_are_refused_by_every_classifier(df, label):
    from pyspark.sql import functions as F

    from sparkml_aiaas.core.stats import single_class_message
    from sparkml_aiaas.errors import DataValidationError

    one_class = df.withColumn("label", F.lit(label))
    expected = single_class_message("label", label, N, "training")
    for estimator in (LogisticRegression(featuresCols=COLS),
                      LogisticRegression(featuresCols=COLS, family="multinomial"),
                      LinearSVC(featuresCols=COLS)):
        with pytest.raises(DataValidationError) as error:
            estimator.fit(one_class)
        assert str(error.value) == expected


def test_newton_equals_lbfgs_in_far_fewer_passes(df):
    lbfgs = LogisticRegression(featuresCols=COLS, **EXACT).fit(df)
    newton = LogisticRegression(featuresCols=COLS, optimizer="newton", **EXACT).fit(df)
    np.testing.assert_allclose(newton.coefficients, lbfgs.coefficients, atol=1e-7)
    assert newton.intercept == pytest.approx(lbfgs.intercept, abs=1e-7)
    assert newton.summary.numPasses < lbfgs.summary.numPasses
    assert newton.summary.numPasses <= 12


def test_owlqn_l1_matches_proximal_gradient_descent(df):
    params = dict(featuresCols=COLS, regParam=0.05, elasticNetParam=1.0, standardization=False,
                  tol=1e-13, maxIter=5000)
    owlqn = LogisticRegression(optimizer="lbfgs", **params).fit(df)
    proximal = LogisticRegression(optimizer="gd", **params).fit(df)
    np.testing.assert_allclose(owlqn.coefficients, proximal.coefficients, atol=1e-5)
    assert (owlqn.coefficients == 0).any()  # the L1 penalty zeroes the useless feature
    np.testing.assert_array_equal(owlqn.coefficients == 0, proximal.coefficients == 0)
    assert owlqn.summary.numPasses < proximal.summary.numPasses


def _hinge_objective(X, y, coef, intercept, reg):
    signed = 2 * y - 1
    return float(np.mean(np.maximum(0.0, 1 - signed * (X @ coef + intercept)))
                 + 0.5 * reg * coef @ coef)


def test_linear_svc_matches_pyspark_ml_objective(df, pdf, tmp_path):
    ours = LinearSVC(featuresCols=COLS, regParam=REG, standardization=False, tol=1e-12,
                     maxIter=1000).fit(df)
    assembled = VectorAssembler(inputCols=COLS, outputCol="features").transform(df)
    theirs = SparkLinearSVC(regParam=REG, standardization=False, tol=1e-12,
                            maxIter=1000).fit(assembled)
    X, y = pdf[COLS].to_numpy(), pdf["label"].to_numpy()
    ours_value = _hinge_objective(X, y, ours.coefficients, ours.intercept, REG)
    theirs_value = _hinge_objective(X, y, theirs.coefficients.toArray(), theirs.intercept, REG)
    assert ours_value <= theirs_value * (1 + 1e-6)
    assert ours_value == pytest.approx(theirs_value, rel=1e-6)
    scored = ours.transform(df).orderBy("id").toPandas()
    margin = np.stack(scored["rawPrediction"].to_numpy())[:, 1]  # MLlib's [-m, m]
    np.testing.assert_array_equal(scored["prediction"], (margin > 0.0))
    loaded = _round_trip(ours, df, tmp_path, ["rawPrediction", "prediction"])
    assert isinstance(loaded, LinearSVCModel)
    with pytest.raises(ConfigError, match="'newton' does not support the hinge loss"):
        LinearSVC(featuresCols=COLS, optimizer="newton").fit(df)


def test_huber_matches_scikit_learn(df, pdf, tmp_path):
    model = LinearRegression(featuresCols=COLS, labelCol="target", loss="huber", **EXACT).fit(df)
    # MLlib: ½·mean(σ + H(r/σ)σ) + ½·reg‖w‖²; sklearn: Σ(σ + H(r/σ)σ) + α‖w‖² = 2n × MLlib's
    # when α = n·reg.
    sk = HuberRegressor(epsilon=1.35, alpha=N * REG, tol=1e-12, max_iter=10_000).fit(
        pdf[COLS].to_numpy(), pdf["target"].to_numpy())
    np.testing.assert_allclose(model.coefficients, sk.coef_, atol=1e-4)
    assert model.intercept == pytest.approx(sk.intercept_, abs=1e-4)
    assert model.scale == pytest.approx(sk.scale_, rel=1e-4)
    loaded = _round_trip(model, df, tmp_path, ["prediction"])
    assert loaded.scale == model.scale
    with pytest.raises(ConfigError, match="param epsilon must be > 1"):
        LinearRegression(featuresCols=COLS, labelCol="target", loss="huber", epsilon=0.5).fit(df)
    with pytest.raises(ConfigError, match="param loss must be"):
        LinearRegression(featuresCols=COLS, labelCol="target", loss="absolute").fit(df)
