"""Parity with pyspark.ml itself: the same data and params give the same model.

Every case fits one of our linear models and the pyspark.ml estimator it stands for on the
same rows (features on very different scales, a regression label whose standard deviation
is far from 1, non-uniform weights) at a tight tolerance, then compares coefficients,
intercepts (and huber's scale) and the ``prediction`` column of ``transform``.

The factors are family × penalty × standardization × fitIntercept × weights, restricted to
what MLlib supports (LinearSVC and huber take no L1 there; ours do, see docs/linear.md).
CI runs a pairwise-covering subset: every pair of factor levels that some supported case
holds is held by at least one case run (:func:`test_ci_cases_cover_every_pair`).  The full
cartesian matrix (128 cases; ``-s`` prints each case's differences and the worst)::

    SPARKML_AIAAS_PARITY=full pytest -s tests/test_mllib_parity.py
"""

from __future__ import annotations

import itertools
import os
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression

FACTORS: Dict[str, Tuple] = {
    "family": ("binomial", "multinomial", "squaredError", "huber", "svc"),
    "penalty": ("none", "l2", "l1", "elasticnet"),
    "standardization": (True, False),
    "fitIntercept": (True, False),
    "weights": (False, True),
}
#: Penalties MLlib takes per family (LinearSVC: L2 only; huber: "only supports L2").
MLLIB_PENALTIES = {"svc": ("none", "l2"), "huber": ("none", "l2")}
#: regParam per family: large enough that the penalty shapes every model.
REG_PARAM = {"binomial": 0.05, "multinomial": 0.05, "squaredError": 1.0, "huber": 0.1,
             "svc": 0.05}
ELASTIC_NET = {"none": 0.0, "l2": 0.0, "l1": 1.0, "elasticnet": 0.5}

RTOL = 1e-4  # relative, on coefficients, intercepts and regression predictions
#: Absolute floor, relative to the largest reference value: near-zero coefficients.
ATOL_FRACTION = 1e-6
TOL, MAX_ITER = 1e-12, 10_000
#: The hinge is not differentiable: both L-BFGS runs stall at a kink near the minimum
#: (MLlib's OWL-QN resets its history again and again), so more iterations buy nothing.
SVC_TOL, SVC_MAX_ITER = 1e-9, 100
N, D = 300, 4
COLS = [f"x{j}" for j in range(D)]
FULL = os.environ.get("SPARKML_AIAAS_PARITY", "").lower() == "full"


def supported(case: Dict) -> bool:
    return case["penalty"] in MLLIB_PENALTIES.get(case["family"], FACTORS["penalty"])


def all_cases() -> List[Dict]:
    names = list(FACTORS)
    cases = [dict(zip(names, values)) for values in itertools.product(*FACTORS.values())]
    return [case for case in cases if supported(case)]


def _pairs(case: Dict) -> set:
    items = sorted(case.items())
    return {(a, b) for a, b in itertools.combinations(items, 2)}


def pairwise_cases() -> List[Dict]:
    """A small deterministic subset of :func:`all_cases` holding every pair they hold.

    Greedy: repeatedly take the first case covering the most pairs not yet covered.
    """
    candidates = all_cases()
    uncovered = set().union(*(_pairs(case) for case in candidates))
    chosen = []
    while uncovered:
        best = max(candidates, key=lambda case: len(_pairs(case) & uncovered))
        chosen.append(best)
        uncovered -= _pairs(best)
    return chosen


def case_id(case: Dict) -> str:
    return "-".join([case["family"], case["penalty"],
                     "std" if case["standardization"] else "raw",
                     "icpt" if case["fitIntercept"] else "noicpt",
                     "w" if case["weights"] else "unw"])


CASES = all_cases() if FULL else pairwise_cases()


def test_ci_cases_cover_every_pair():
    every = set().union(*(_pairs(case) for case in all_cases()))
    ci = set().union(*(_pairs(case) for case in pairwise_cases()))
    assert ci == every
    assert len(pairwise_cases()) < len(all_cases()) / 4
    assert all(supported(case) for case in pairwise_cases())
    # Combinations MLlib does not fit are not pairs to cover (its LinearSVC has no L1).
    assert (("family", "svc"), ("penalty", "l1")) not in every


# --------------------------------------------------------------------------- data
def _pdf(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(N, D))
    X = Z * [0.5, 3.0, 20.0, 1.0] + [1.0, -2.0, 5.0, 0.0]  # scales 40× apart, offsets
    pdf = pd.DataFrame(X, columns=COLS)
    pdf["id"] = np.arange(N)
    pdf["w"] = rng.uniform(0.2, 3.0, size=N)
    # Regression label with std ≈ 16 and a few gross outliers (what huber is for).
    y = 10.0 * (Z @ [1.0, -0.6, 0.3, 0.05]) + 4.0 + 3.0 * rng.standard_t(3, size=N)
    y[:12] += rng.normal(scale=60.0, size=12)
    pdf["target"] = y
    margin = Z @ [1.2, -0.8, 0.5, 0.1] + 0.3
    pdf["label"] = (rng.uniform(size=N) < 1.0 / (1.0 + np.exp(-margin))).astype(float)
    margins = Z @ np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [0.0, 0.8, 0.8], [0.2, 0, -0.2]])
    probs = np.exp(margins) / np.exp(margins).sum(axis=1, keepdims=True)
    pdf["cls"] = np.array([rng.choice(3, p=p) for p in probs], dtype=float)
    return pdf


@pytest.fixture(scope="module")
def pdf():
    return _pdf()


@pytest.fixture(scope="module")
def vdf(spark, pdf):
    """The rows with a ``features`` vector column, cached, shared by both libraries."""
    from pyspark.ml.feature import VectorAssembler

    frame = VectorAssembler(inputCols=COLS, outputCol="features").transform(
        spark.createDataFrame(pdf)).cache()
    frame.count()
    yield frame
    frame.unpersist()


# --------------------------------------------------------------------------- estimators
def _params(case: Dict) -> Dict:
    reg = REG_PARAM[case["family"]] if case["penalty"] != "none" else 0.0
    svc = case["family"] == "svc"
    params = dict(regParam=reg, standardization=case["standardization"],
                  fitIntercept=case["fitIntercept"], tol=SVC_TOL if svc else TOL,
                  maxIter=SVC_MAX_ITER if svc else MAX_ITER)
    if case["family"] != "svc":
        params["elasticNetParam"] = ELASTIC_NET[case["penalty"]]
    if case["weights"]:
        params["weightCol"] = "w"
    return params


def estimators(case: Dict):
    """``(ours, pyspark.ml's)`` for ``case``, same params."""
    from pyspark.ml import classification as smc
    from pyspark.ml import regression as smr

    family, params = case["family"], _params(case)
    if family in ("binomial", "multinomial"):
        label = "label" if family == "binomial" else "cls"
        common = dict(labelCol=label, family=family, **params)
        return LogisticRegression(**common), smc.LogisticRegression(**common)
    if family == "svc":
        return LinearSVC(labelCol="label", **params), smc.LinearSVC(labelCol="label", **params)
    common = dict(labelCol="target", loss=family, **params)
    return LinearRegression(**common), smr.LinearRegression(**common)


def _numbers(model) -> Dict[str, np.ndarray]:
    """Coefficients ``(k, d)``, intercepts ``(k,)`` and huber's scale of either library."""
    if hasattr(model, "coefficientMatrix"):  # ours, and pyspark.ml's LogisticRegressionModel
        matrix, intercepts = model.coefficientMatrix, model.interceptVector
        if hasattr(matrix, "toArray"):
            matrix, intercepts = matrix.toArray(), intercepts.toArray()
    else:  # pyspark.ml's LinearRegressionModel and LinearSVCModel
        matrix, intercepts = model.coefficients.toArray()[None, :], [model.intercept]
    out = {"coefficients": np.asarray(matrix, float), "intercepts": np.asarray(intercepts, float)}
    if hasattr(model, "scale"):
        out["scale"] = np.array([float(model.scale)])
    return out


def relative_differences(ours: Dict, theirs: Dict) -> Dict[str, float]:
    """Worst ``|ours − theirs| / max(|theirs|, floor)`` per array; the floor is
    ``ATOL_FRACTION/RTOL`` of the array's largest reference magnitude (and at least that
    fraction of 1), so exact zeros of L1 compare absolutely."""
    worst = {}
    for name, ref in theirs.items():
        got = ours[name]
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        floor = ATOL_FRACTION / RTOL * max(1.0, float(np.abs(ref).max()))
        worst[name] = float((np.abs(got - ref) / np.maximum(np.abs(ref), floor)).max())
    return worst


def _predictions(model, frame) -> np.ndarray:
    return model.transform(frame).orderBy("id").select("prediction").toPandas()[
        "prediction"].to_numpy(dtype=float)


def _margins(numbers: Dict, X: np.ndarray) -> np.ndarray:
    return X @ numbers["coefficients"].T + numbers["intercepts"]


def _class_gap(margins: np.ndarray) -> np.ndarray:
    """How far each row is from the decision boundary, in margin units."""
    if margins.shape[1] == 1:
        return np.abs(margins[:, 0])
    top = np.sort(margins, axis=1)
    return top[:, -1] - top[:, -2]


def hinge_objective(numbers: Dict, pdf: pd.DataFrame, case: Dict) -> float:
    """MLlib's LinearSVC objective: ``mean_w max(0, 1 − y±·m) + regParam/2·‖s·coef‖²``."""
    X, y = pdf[COLS].to_numpy(), 2.0 * pdf["label"].to_numpy() - 1.0
    w = pdf["w"].to_numpy() if case["weights"] else np.ones(len(y))
    coef = numbers["coefficients"][0]
    margins = X @ coef + numbers["intercepts"][0]
    s = np.ones(D)
    if case["standardization"]:
        mean = w @ X / w.sum()
        s = np.sqrt(w @ (X - mean) ** 2 / (w.sum() - w @ w / w.sum()))  # unbiased, as MLlib
    reg = REG_PARAM["svc"] if case["penalty"] != "none" else 0.0
    return float(w @ np.maximum(0.0, 1.0 - y * margins) / w.sum()
                 + 0.5 * reg * np.sum((s * coef) ** 2))


def limits(case: Dict) -> Dict[str, float]:
    """The largest difference accepted per compared quantity."""
    if case["family"] == "svc":
        # The hinge is not differentiable and neither library's L-BFGS reaches its minimum
        # exactly: each stalls at a kink near it (an exact QP solve of one case here put
        # MLlib's coefficients 1.5 % and ours 7 % from the minimizer), and the objective is
        # flat there, so coefficients differ by up to ~10 % while the objective agrees to
        # ~5e-5 either way (a penalty off by a factor 2 moves it by ~1e-2).  What is
        # compared is the objective; coefficients are reported, not limited.
        return {"objective": 1e-4, "coefficients": np.inf, "intercepts": np.inf,
                "misclassified": 0}
    return {"coefficients": RTOL, "intercepts": RTOL, "scale": RTOL, "prediction": RTOL,
            "misclassified": 0}


def run_case(case: Dict, frame, pdf) -> Dict[str, float]:
    """Fit both libraries on ``frame``; the differences found, by quantity.

    ``coefficients``/``intercepts``/``scale``: worst relative difference; ``prediction``
    (regression): worst difference of the ``prediction`` columns relative to their range;
    ``misclassified`` (classifiers): rows whose ``prediction`` columns disagree although
    they lie farther from the boundary than the two models' margins differ anywhere;
    ``objective`` (svc): relative difference of MLlib's objective at the two models.
    """
    ours_estimator, theirs_estimator = estimators(case)
    ours_model = ours_estimator.fit(frame)
    theirs_model = theirs_estimator.fit(frame)
    ours, theirs = _numbers(ours_model), _numbers(theirs_model)
    found = relative_differences(ours, theirs)
    if case["family"] == "svc":
        ours_value, theirs_value = (hinge_objective(n, pdf, case) for n in (ours, theirs))
        found["objective"] = abs(ours_value - theirs_value) / theirs_value
        found["ours_lower"] = int(ours_value < theirs_value)  # reported only
    got, expected = _predictions(ours_model, frame), _predictions(theirs_model, frame)
    X = pdf.sort_values("id")[COLS].to_numpy()
    if case["family"] in ("squaredError", "huber"):
        # Relative to the predictions' range: a prediction near zero is a sum of large
        # terms that cancel, each carrying the coefficients' relative error.
        found["prediction"] = float(np.abs(got - expected).max() / np.abs(expected).max())
    else:
        ours_margins, theirs_margins = _margins(ours, X), _margins(theirs, X)
        band = 2.0 * float(np.abs(ours_margins - theirs_margins).max())
        clear = _class_gap(theirs_margins) > band
        found["misclassified"] = int(np.sum(got[clear] != expected[clear]))
    return found


RESULTS: List[Tuple[str, Dict[str, float]]] = []


@pytest.fixture(scope="module", autouse=True)
def _summary():
    """Print the worst differences of the cases run (``-s`` shows them)."""
    yield
    if RESULTS:
        strict = [(name, found) for name, found in RESULTS if not name.startswith("svc")]
        for group, rows in (("strict", strict), ("all", RESULTS)):
            if rows:
                name, found = max(rows, key=lambda item: max(
                    v for k, v in item[1].items() if k not in ("misclassified", "ours_lower")))
                print(f"\nmllib parity ({group}): {len(rows)} cases; worst {name}: {found}")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_same_model_as_pyspark_ml(case, vdf, pdf):
    found = run_case(case, vdf, pdf)
    RESULTS.append((case_id(case), found))
    print(f"\n{case_id(case)}: {found}")
    allowed = limits(case)
    over = {name: value for name, value in found.items() if value > allowed.get(name, np.inf)}
    assert not over, f"{case_id(case)}: {found} (limits {allowed})"
