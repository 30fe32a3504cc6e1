"""sparkml_aiaas.core.eval_metrics gives pyspark.ml's evaluator numbers from merged partials.

Every comparison runs the real pyspark evaluator on a DataFrame holding the same
rows.  Evaluations run on a small thread pool (Spark schedules concurrent jobs)
and hypothesis examples are few, so the file stays well under a minute.
"""

from __future__ import annotations

import math
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sparkml_aiaas.core import eval_metrics as em
from sparkml_aiaas.core.eval_metrics import (
    MetricSpec, is_larger_better, merge_partials, metric_value, partial_sums, spec_of_evaluator)

LABELS = (0.0, 1.0, 2.0, 3.0)
PREDICTIONS = (0.0, 1.0, 2.0, 4.0)  # class 3 is never predicted, 4 is never a label
NUM_CLASSES = 5
# Dyadic weights: every weight sum is exact in both implementations, so a value
# like r2's (Σw − 1) cannot differ between them by summation order alone.
WEIGHTS = st.one_of(st.sampled_from([0.0, 0.25, 1.0, 2.5]),
                    st.integers(0, 256).map(lambda k: k / 64))
SCORES = st.one_of(st.sampled_from([-1.5, -0.0, 0.0, 0.25, 2.0]),  # ties, and ±0
                   st.floats(-5, 5, allow_subnormal=False))
VALUES = st.floats(-100, 100, allow_subnormal=False)
PROBABILITY = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1))


@st.composite
def cases(draw, max_rows=40):
    """Rows for all three evaluators, plus the params of the metrics."""
    n = draw(st.integers(2, max_rows))
    f64 = np.float64
    case = {
        "label": draw(arrays(f64, n, elements=st.sampled_from(LABELS))),
        "prediction": draw(arrays(f64, n, elements=st.sampled_from(PREDICTIONS))),
        "weight": draw(arrays(f64, n, elements=WEIGHTS)),
        "blabel": draw(arrays(f64, n, elements=st.sampled_from([0.0, 1.0]))),
        "score": draw(arrays(f64, n, elements=SCORES)),
        "probability": draw(arrays(f64, (n, NUM_CLASSES), elements=PROBABILITY)),
        "y": draw(arrays(f64, n, elements=VALUES)),
        "yhat": draw(arrays(f64, n, elements=VALUES)),
        "numBins": draw(st.sampled_from([0, 1000, 2, 3, 5])),
        "beta": draw(st.sampled_from([1.0, 0.5, 2.0])),
        "eps": draw(st.sampled_from([1e-15, 0.05, 0.3])),
        "throughOrigin": draw(st.booleans()),
    }
    # Two rows of positive weight and distinct labels: a regression with one row,
    # or a constant label, has SStot = 0 and a metric of ±inf or rounding noise.
    case["weight"][:2] = np.maximum(case["weight"][:2], 0.25)
    if case["y"][0] == case["y"][1]:
        case["y"][1] += 1.0
    rows = case["probability"].sum(axis=1, keepdims=True)
    case["probability"] = np.where(rows > 0, case["probability"] / np.where(rows > 0, rows, 1),
                                   1.0 / NUM_CLASSES)
    case["metricLabel"] = float(case["label"][draw(st.integers(0, n - 1))])
    return case


def _evaluators(case):
    """(evaluator, labels, task output) for every supported metric of ``case``."""
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator, MulticlassClassificationEvaluator, RegressionEvaluator)

    out = []
    for metric in em._METRICS["binary"]:
        ev = BinaryClassificationEvaluator(metricName=metric, labelCol="blabel",
                                           rawPredictionCol="raw", numBins=case["numBins"])
        out.append((ev, case["blabel"], case["score"]))
    for metric in em._METRICS["multiclass"]:
        ev = MulticlassClassificationEvaluator(
            metricName=metric, metricLabel=case["metricLabel"], beta=case["beta"],
            eps=case["eps"])
        output = (case["prediction"], case["probability"]) if metric == "logLoss" \
            else case["prediction"]
        out.append((ev, case["label"], output))
    for metric in em._METRICS["regression"]:
        ev = RegressionEvaluator(metricName=metric, labelCol="y", predictionCol="yhat",
                                 throughOrigin=case["throughOrigin"])
        out.append((ev, case["y"], case["yhat"]))
    return out


def _frame(spark, case):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    columns = ["label", "prediction", "weight", "blabel", "score", "y", "yhat"]
    rows = [tuple(float(case[c][i]) for c in columns) + (case["probability"][i].tolist(),)
            for i in range(case["label"].size)]
    schema = ", ".join(f"{c} double" for c in columns) + ", p array<double>"
    # One input partition: MLlib's map-side combine then merges -0.0 into 0.0
    # as the module does (several partitions may keep them apart).
    frame = spark.createDataFrame(rows, schema).coalesce(1).select(
        "*", array_to_vector(F.array(-F.col("score"), F.col("score"))).alias("raw"),
        array_to_vector("p").alias("probability"))
    return frame.cache()


def _evaluate_all(frame, evaluators):
    """Spark's values (or the exception) for each evaluator, on a thread pool."""
    def run(ev):
        try:
            return ev.evaluate(frame)
        except Exception as error:  # noqa: BLE001 - compared with ours below
            return error

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, evaluators))


def _close(actual, expected, tol=0.0):
    """Equal to 1e-12 relative (or ``tol`` absolute); NaN equals NaN, inf equals inf."""
    if math.isnan(expected) or math.isinf(expected):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    return abs(actual - expected) <= max(1e-12 * abs(expected), 1e-14, tol)


def _var_tolerance(y, yhat, w):
    # MLlib computes SSreg = Σw·ŷ² + ȳ²·Σw − 2·ȳ·mean(ŷ)·Σw, which cancels: its
    # rounding is relative to those terms, not to the (stable) result here.
    keep = w > 0
    y, yhat, w = y[keep], yhat[keep], w[keep]
    mean_y = np.sum(w * y) / np.sum(w)
    return 1e-12 * (np.sum(w * yhat ** 2) / np.sum(w) + mean_y ** 2
                    + 2 * abs(mean_y * np.sum(w * yhat) / np.sum(w)))


def _ours(spec, y, w, output, restarts=None):
    partial = partial_sums(spec, y, w, output)
    if restarts is not None:
        return em._binary_value(spec, partial, restarts)
    return metric_value(spec, partial)


def _check_case(spark, case):
    frame = _frame(spark, case)
    try:
        jobs = []
        for ev, y, output in _evaluators(case):
            for weighted in (False, True):
                e = ev.copy().setWeightCol("weight") if weighted else ev.copy()
                w = case["weight"] if weighted else np.ones_like(y)
                jobs.append((e, y, w, output))
        results = _evaluate_all(frame, [job[0] for job in jobs])
    finally:
        frame.unpersist()
    for (ev, y, w, output), expected in zip(jobs, results):
        spec = spec_of_evaluator(ev)
        assert spec is not None, ev
        label = f"{spec} weighted={ev.isSet('weightCol')}"
        if isinstance(expected, Exception):
            # Only a by-label metric of a label without rows may fail (in both).
            assert spec.metric in em._BY_LABEL, (label, expected)
            with pytest.raises(ValueError):
                _ours(spec, y, w, output)
            continue
        ours = _ours(spec, y, w, output)
        if spec.kind == "binary":
            distinct = np.unique(output + 0.0).size
            bins = spec.param("numBins")
            if bins and distinct // bins >= 2:
                # Down-sampling restarts its chunks at the one partition boundary
                # of MLlib's sorted RDD (default parallelism 2): some boundary
                # reproduces Spark exactly.
                candidates = [_ours(spec, y, w, output, (b,)) for b in range(distinct + 1)]
                assert any(_close(c, expected) for c in candidates), (label, expected, ours)
                continue
        tol = _var_tolerance(y, output, w) if spec.metric == "var" else 0.0
        assert _close(ours, expected, tol), (label, ours, expected)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_every_metric_equals_the_evaluator(spark, case):
    _check_case(spark, case)


def test_edge_cases_equal_the_evaluator(spark):
    """Fixed rows with every corner at once: zero weights on a whole class (NaN
    recall in MLlib), an unpredicted class, a prediction that is no label,
    probabilities of exactly 0 and 1, tied and ±0 scores."""
    case = {
        "label": np.array([0, 0, 1, 1, 2, 3, 3, 0, 2, 1], float),
        "prediction": np.array([0, 1, 1, 4, 2, 0, 2, 0, 4, 1], float),
        "weight": np.array([1, 2, 0, 1, 0.5, 0, 0, 3, 1, 1], float),
        "blabel": np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 0], float),
        "score": np.array([0.5, 0.5, -0.0, 0.0, 2, -1, 0.5, 0.0, -1, 3]),
        "probability": np.eye(NUM_CLASSES)[[0, 1, 1, 4, 2, 0, 2, 0, 4, 1]],
        "y": np.arange(10.0), "yhat": np.arange(10.0)[::-1] * 0.5,
        "numBins": 0, "beta": 0.5, "eps": 1e-15, "throughOrigin": False, "metricLabel": 3.0,
    }
    _check_case(spark, case)


def test_absent_metric_label_fails_like_spark(spark):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    frame = spark.createDataFrame([(0.0, 0.0), (1.0, 0.0)], "label double, prediction double")
    ev = MulticlassClassificationEvaluator(metricName="precisionByLabel", metricLabel=2.0)
    with pytest.raises(Exception):
        ev.evaluate(frame)
    with pytest.raises(ValueError, match="metricLabel"):
        _ours(spec_of_evaluator(ev), np.array([0.0, 1.0]), np.ones(2), np.zeros(2))


def test_log_loss_clips_like_mllib(spark):
    """Every true-class probability 0 or 1: the loss is all clipping, where
    MLlib's -log1p(-eps) and a naive -log(1 - eps) differ by 10% (eps=1e-15)."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.functions import array_to_vector

    label = np.array([0.0, 1.0, 2.0, 1.0])
    probability = np.eye(3)[[0, 1, 2, 1]]
    probability[3] = [0.0, 0.0, 1.0]  # true class at 0
    frame = spark.createDataFrame(
        [(float(y), p.tolist(), float(w)) for y, p, w in zip(label, probability, [1, 2, 0.5, 0])],
        "label double, p array<double>, w double")
    frame = frame.select("label", array_to_vector("p").alias("probability"), "w",
                         frame.label.alias("prediction")).cache()
    try:
        evaluators = [MulticlassClassificationEvaluator(metricName="logLoss", eps=eps,
                                                        weightCol="w")
                      for eps in (1e-15, 0.3)]
        expected = _evaluate_all(frame, evaluators)
    finally:
        frame.unpersist()
    for ev, spark_value in zip(evaluators, expected):
        ours = _ours(spec_of_evaluator(ev), label, np.array([1, 2, 0.5, 0]),
                     (label, probability))
        # Purely relative: the clipped loss is ~1e-15, below _close's absolute floor.
        assert math.isclose(ours, spark_value, rel_tol=1e-12), (ev.getEps(), ours, spark_value)


def test_down_sampling_is_within_tolerance_of_spark(spark):
    """Down-sampling over several partitions: the one documented deviation.

    MLlib cuts the descending distinct scores into chunks of g = distinct //
    numBins, restarting at each partition boundary of its sorted RDD (placed by
    a sampling range partitioner); here the chunks run over all scores.  Either
    way every chunk is at most g consecutive scores and is replaced by a chord
    of the exact (numBins=0) curve.  For the ROC (monotone in both axes) a chord
    moves the area by at most half its box, Δfpr·Δtpr/2, and summed over chunks
    by at most half the widest chunk's Δfpr; the two results are then within
    the largest false-positive share of any g consecutive scores (~3.4e-3
    here, asserted below).  The PR curve has no such clean bound (precision is
    not monotone) but the same chunk-width argument gives the same order:
    2e-3 is stated for it.  Observed differences are a few 1e-6.
    """
    import pandas as pd
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    rng = np.random.default_rng(7)
    n = 20000
    score = np.round(rng.normal(size=n), 4)  # ~15000 distinct scores, with ties
    label = (rng.random(n) < 1 / (1 + np.exp(-2 * score))).astype(float)
    weight = rng.integers(0, 9, n) / 4
    frame = spark.createDataFrame(pd.DataFrame({"label": label, "score": score, "w": weight}))
    frame = frame.repartition(4).select(
        "*", array_to_vector(F.array(-F.col("score"), F.col("score"))).alias("raw")).cache()
    try:
        evaluators = [BinaryClassificationEvaluator(metricName=m, rawPredictionCol="raw",
                                                    weightCol="w")  # numBins 1000
                      for m in ("areaUnderROC", "areaUnderPR")]
        expected = _evaluate_all(frame, evaluators)
    finally:
        frame.unpersist()
    for ev, spark_value in zip(evaluators, expected):
        spec = spec_of_evaluator(ev)
        partial = partial_sums(spec, label, weight, score)
        grouping = partial["neg"].size // spec.param("numBins")
        assert grouping >= 2  # down-sampling is on
        cumulative = np.concatenate([[0.0], np.cumsum(partial["neg"])])
        widest = np.max(cumulative[grouping:] - cumulative[:-grouping]) / cumulative[-1]
        bound = widest if spec.metric == "areaUnderROC" else 2e-3
        ours = metric_value(spec, partial)
        assert abs(ours - spark_value) <= bound, (spec.metric, ours, spark_value, bound)


def _split_and_merge(spec, case, y, output, parts, order):
    """Partials of random row parts merged in a random tree order."""
    w = case["weight"]
    pieces = []
    for k in range(parts):
        rows = order[k::parts]
        out = tuple(o[rows] for o in output) if isinstance(output, tuple) else output[rows]
        pieces.append(pickle.loads(pickle.dumps(partial_sums(spec, y[rows], w[rows], out))))
    pieces.append(None)  # an empty block merges as the identity
    rng = np.random.default_rng(int(order[0]) + parts)
    while len(pieces) > 1:
        i, j = rng.choice(len(pieces), 2, replace=False)
        a, b = pieces[i], pieces[j]
        pieces = [p for k, p in enumerate(pieces) if k not in (i, j)]
        pieces.append(merge_partials(spec, a, b))
    return metric_value(spec, pieces[0])


@settings(max_examples=40, deadline=None)
@given(case=cases(max_rows=60), parts=st.integers(1, 6), data=st.data())
def test_merged_parts_equal_the_whole(case, parts, data):
    order = np.asarray(data.draw(st.permutations(range(case["label"].size))))
    for ev, y, output in _evaluators(case):
        spec = spec_of_evaluator(ev)
        try:
            whole = metric_value(spec, partial_sums(spec, y, case["weight"], output))
        except ValueError:
            with pytest.raises(ValueError):
                _split_and_merge(spec, case, y, output, parts, order)
            continue
        merged = _split_and_merge(spec, case, y, output, parts, order)
        assert _close(merged, whole), (spec, merged, whole)


def test_spec_of_evaluator_and_larger_better(spark):
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator, ClusteringEvaluator, Evaluator,
        MulticlassClassificationEvaluator, RegressionEvaluator)

    classes = {"binary": BinaryClassificationEvaluator,
               "multiclass": MulticlassClassificationEvaluator,
               "regression": RegressionEvaluator}
    for kind, metrics in em._METRICS.items():
        for metric in metrics:
            ev = classes[kind](metricName=metric)
            spec = spec_of_evaluator(ev)
            assert (spec.kind, spec.metric) == (kind, metric)
            assert list(spec.params) == sorted(spec.params)
            assert is_larger_better(spec) == ev.isLargerBetter(), metric
    assert spec_of_evaluator(BinaryClassificationEvaluator()).params == (("numBins", 1000),)
    assert spec_of_evaluator(MulticlassClassificationEvaluator(
        metricName="fMeasureByLabel", metricLabel=2.0, beta=0.5)).params == (
        ("beta", 0.5), ("metricLabel", 2.0))
    assert spec_of_evaluator(RegressionEvaluator(metricName="r2", throughOrigin=True)).params \
        == (("throughOrigin", True),)
    assert spec_of_evaluator(RegressionEvaluator()).needs == "prediction"
    assert spec_of_evaluator(MulticlassClassificationEvaluator(metricName="logLoss")).needs \
        == "prediction+probability"
    assert spec_of_evaluator(BinaryClassificationEvaluator()).needs == "score"

    class Custom(Evaluator):
        def _evaluate(self, dataset):
            return 0.0

    # A subclass with the stock name, defined in this (user) module.
    Subclass = type("RegressionEvaluator", (RegressionEvaluator,), {})
    assert Subclass.__module__ != "pyspark.ml.evaluation"

    unsupported = [
        Custom(), Subclass(), ClusteringEvaluator(), object(), None,
        classes["regression"](metricName="mape"),
        classes["binary"](metricName="areaUnderCurve"),
        classes["binary"](numBins=-1),  # Spark rejects these when evaluating
        classes["multiclass"](metricName="logLoss", eps=0.7),
        classes["multiclass"](metricName="weightedFMeasure", beta=0.0),
    ]
    for ev in unsupported:
        assert spec_of_evaluator(ev) is None, ev


@pytest.mark.parametrize("spec", [MetricSpec("binary", "f1"), MetricSpec("clustering", "x"),
                                  MetricSpec("binary", "areaUnderROC", (("numBins", -2),))])
def test_unsupported_specs_raise_value_error(spec):
    with pytest.raises(ValueError):
        partial_sums(spec, [1.0], [1.0], [0.5])
    with pytest.raises(ValueError):
        metric_value(spec, {})
    with pytest.raises(ValueError):
        is_larger_better(spec)
