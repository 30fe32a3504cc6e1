"""pyspark.ml's evaluator metrics from mergeable partial sums.

A cross-validator that scores k folds × m models would call pyspark's
``Evaluator.evaluate`` k·m times, and every call is at least one Spark job (the
binary one runs several: sort sampling, count, collect, area).  Every metric of
the three standard evaluators is, however, a function of small sums over the
rows: per distinct score the weighted positives and negatives (binary), the
weighted confusion counts (multiclass), a few weighted moments (regression).
This module computes those sums per data block (:func:`partial_sums`, plain
numpy, run inside the tasks), merges them on the driver (:func:`merge_partials`)
and turns them into the number the evaluator would have returned
(:func:`metric_value`), so that all held-out metrics come out of one job.

The definitions follow Spark 4.2's MLlib (``mllib.evaluation.*Metrics`` behind
``ml.evaluation.*Evaluator``), including its corner cases: NaN where MLlib
divides 0 by 0, precision 0 for a class never predicted, zero-weight rows that
still count as distinct scores / confusion keys.  Where MLlib's answer depends
on how its job happened to be partitioned (binary down-sampling with
``numBins``, and -0.0 vs 0.0 scores) the single-partition answer is given; see
:func:`metric_value`.

The module imports numpy only, so it can run in any Python worker.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

_EVALUATOR_KINDS = {
    "BinaryClassificationEvaluator": "binary",
    "MulticlassClassificationEvaluator": "multiclass",
    "RegressionEvaluator": "regression",
}
_BY_LABEL = ("truePositiveRateByLabel", "falsePositiveRateByLabel", "precisionByLabel",
             "recallByLabel", "fMeasureByLabel")
_METRICS = {
    "binary": ("areaUnderROC", "areaUnderPR"),
    "multiclass": ("f1", "accuracy", "weightedPrecision", "weightedRecall",
                   "weightedTruePositiveRate", "weightedFalsePositiveRate", "weightedFMeasure",
                   *_BY_LABEL, "hammingLoss", "logLoss"),
    "regression": ("rmse", "mse", "r2", "mae", "var"),
}
_SMALLER_BETTER = {"weightedFalsePositiveRate", "falsePositiveRateByLabel", "logLoss",
                   "hammingLoss", "rmse", "mse", "mae"}


class MetricSpec(NamedTuple):
    """One evaluator metric: what the tasks compute and how the driver finishes it.

    Attributes
    ----------
    kind : str
        ``"binary"``, ``"multiclass"`` or ``"regression"``.
    metric : str
        The evaluator's ``metricName``.
    params : tuple
        Sorted ``(name, value)`` pairs of the evaluator params the metric reads
        (``numBins``, ``metricLabel``, ``beta``, ``eps``, ``throughOrigin``).
    """

    kind: str
    metric: str
    params: tuple = ()

    def param(self, name, default=None):
        """The value of param ``name``, or ``default`` when the spec has none."""
        return dict(self.params).get(name, default)

    @property
    def needs(self) -> str:
        """What a task computes per row: ``"score"`` (rawPrediction[1]),
        ``"prediction"`` or ``"prediction+probability"`` (logLoss)."""
        if self.kind == "binary":
            return "score"
        if self.kind == "multiclass" and self.metric == "logLoss":
            return "prediction+probability"
        return "prediction"


def _check(spec: MetricSpec) -> MetricSpec:
    """Raise ValueError unless Spark's evaluator would accept ``spec``."""
    if spec.metric not in _METRICS.get(spec.kind, ()):
        raise ValueError(f"unsupported metric {spec.kind!r}/{spec.metric!r}")
    bins = spec.param("numBins", 1000)
    eps = spec.param("eps", 1e-15)
    # Mirrors the JVM param validators, which pyspark only applies at evaluate().
    if spec.kind == "binary" and not (int(bins) == bins and bins >= 0):
        raise ValueError(f"numBins must be an integer >= 0, got {bins!r}")
    if spec.param("beta", 1.0) <= 0:
        raise ValueError(f"beta must be > 0, got {spec.param('beta')!r}")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    if spec.param("metricLabel", 0.0) < 0:
        raise ValueError(f"metricLabel must be >= 0, got {spec.param('metricLabel')!r}")
    return spec


def spec_of_evaluator(evaluator) -> Optional[MetricSpec]:
    """The :class:`MetricSpec` of a stock pyspark.ml evaluator, or None.

    None for anything this module cannot reproduce: other evaluator classes,
    subclasses (they may override ``evaluate``), unknown metric names and
    param values Spark would reject (the caller then runs the evaluator, which
    raises Spark's own error).
    """
    cls = type(evaluator)
    kind = _EVALUATOR_KINDS.get(cls.__name__)
    if kind is None or cls.__module__ != "pyspark.ml.evaluation":
        return None
    metric = evaluator.getOrDefault("metricName")
    get = evaluator.getOrDefault
    params: dict = {}
    try:
        if kind == "binary":
            params["numBins"] = int(get("numBins"))
        elif kind == "multiclass":
            if metric in _BY_LABEL:
                params["metricLabel"] = float(get("metricLabel"))
            if metric in ("fMeasureByLabel", "weightedFMeasure"):
                params["beta"] = float(get("beta"))
            if metric == "logLoss":
                params["eps"] = float(get("eps"))
        elif metric == "r2":
            params["throughOrigin"] = bool(get("throughOrigin"))
        return _check(MetricSpec(kind, metric, tuple(sorted(params.items()))))
    except (ValueError, TypeError):
        return None


def is_larger_better(spec: MetricSpec) -> bool:
    """The evaluator's ``isLargerBetter()`` for this metric."""
    return _check(spec).metric not in _SMALLER_BETTER


def _sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    # float64 even for no rows (bincount of nothing is int64).
    return np.bincount(index, weights=values, minlength=size).astype(np.float64, copy=False)


def _binary_reduce(scores, pos, neg) -> dict:
    # MLlib's combineByKey merges -0.0 into 0.0 within a partition but not
    # always across partitions (its result then depends on the row layout);
    # np.unique merges them, like a single-partition run, and "+ 0.0" makes the
    # kept key +0.0.  NaN scores are one score, sorted above +inf, as in MLlib.
    keys, inverse = np.unique(scores + 0.0, return_inverse=True)
    return {"score": keys, "pos": _sum_by(inverse, pos, keys.size),
            "neg": _sum_by(inverse, neg, keys.size)}


def _pairs_reduce(label, prediction, weight) -> dict:
    # Scala's Tuple2 keys compare with ==: -0.0 == 0.0, as in np.unique.
    labels, li = np.unique(label, return_inverse=True)
    preds, pi = np.unique(prediction, return_inverse=True)
    codes, ci = np.unique(li.astype(np.int64) * preds.size + pi, return_inverse=True)
    return {"label": labels[codes // preds.size], "prediction": preds[codes % preds.size],
            "weight": _sum_by(ci, weight, codes.size)}


def partial_sums(spec: MetricSpec, y, w, output):
    """Mergeable sums of one block of rows.

    Parameters
    ----------
    spec : MetricSpec
    y, w : array_like of float
        Labels and non-negative instance weights.
    output : array_like or tuple
        Per :attr:`MetricSpec.needs`: the scores, the predictions, or a tuple
        ``(predictions, probabilities)`` with probabilities of shape ``(n, C)``.

    Returns
    -------
    dict
        Picklable numpy arrays and floats; combine with :func:`merge_partials`.
    """
    _check(spec)
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.asarray(w, dtype=np.float64).ravel()
    if spec.kind == "binary":
        positive = y > 0.5  # MLlib's BinaryLabelCounter: label > 0.5 is a positive
        scores = np.asarray(output, dtype=np.float64).ravel()
        return _binary_reduce(scores, np.where(positive, w, 0.0), np.where(positive, 0.0, w))
    if spec.metric == "logLoss":
        prediction, probability = output
        if y.size == 0:
            return {"loss": 0.0, "weight": 0.0}
        probability = np.asarray(probability, dtype=np.float64).reshape(y.size, -1)
        if np.any((y != np.floor(y)) | (y < 0) | (y >= probability.shape[1])):
            raise ValueError("logLoss needs integer labels in [0, number of probabilities)")
        p = probability[np.arange(y.size), y.astype(np.int64)]
        eps = spec.param("eps", 1e-15)
        with np.errstate(divide="ignore", invalid="ignore"):
            # MLlib clips with branches (NaN p stays NaN) and uses log1p for 1 - eps.
            loss = np.where(p < eps, -np.log(eps),
                            np.where(p > 1 - eps, -np.log1p(-eps), -np.log(p)))
        return {"loss": float(np.sum(loss * w)), "weight": float(np.sum(w))}
    prediction = np.asarray(output, dtype=np.float64).ravel()
    if spec.kind == "multiclass":
        return _pairs_reduce(y, prediction, w)
    # Regression: Spark's summarizer skips zero-weight rows entirely.
    keep = w > 0
    y, prediction, w = y[keep], prediction[keep], w[keep]
    total = float(np.sum(w))
    if total == 0:
        return {"w": 0.0, "w2": 0.0, "sse": 0.0, "sae": 0.0, "syy": 0.0,
                "mean_y": 0.0, "m2_y": 0.0, "mean_p": 0.0, "m2_p": 0.0}
    err = y - prediction
    mean_y = float(np.sum(w * y) / total)
    mean_p = float(np.sum(w * prediction) / total)
    # Centred second moments (two-pass, then Chan's merge) stay exact where
    # raw Σwx² - (Σwx)²/Σw would cancel.
    return {"w": total, "w2": float(np.sum(w * w)), "sse": float(np.sum(w * err * err)),
            "sae": float(np.sum(w * np.abs(err))), "syy": float(np.sum(w * y * y)),
            "mean_y": mean_y, "m2_y": float(np.sum(w * (y - mean_y) ** 2)),
            "mean_p": mean_p, "m2_p": float(np.sum(w * (prediction - mean_p) ** 2))}


def merge_partials(spec: MetricSpec, a, b):
    """Combine the partials of two disjoint row sets (associative; None is empty)."""
    if a is None:
        return b
    if b is None:
        return a
    if spec.kind == "binary":
        return _binary_reduce(*(np.concatenate([a[k], b[k]]) for k in ("score", "pos", "neg")))
    if spec.metric == "logLoss":
        return {"loss": a["loss"] + b["loss"], "weight": a["weight"] + b["weight"]}
    if spec.kind == "multiclass":
        return _pairs_reduce(*(np.concatenate([a[k], b[k]])
                               for k in ("label", "prediction", "weight")))
    if a["w"] == 0:
        return b
    if b["w"] == 0:
        return a
    total = a["w"] + b["w"]
    out = {k: a[k] + b[k] for k in ("w2", "sse", "sae", "syy")}
    out["w"] = total
    for v in ("y", "p"):
        delta = b["mean_" + v] - a["mean_" + v]
        out["mean_" + v] = a["mean_" + v] + delta * b["w"] / total
        out["m2_" + v] = a["m2_" + v] + b["m2_" + v] + delta * delta * a["w"] * b["w"] / total
    return out


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    # MLlib's AreaUnderCurve: Σ (x2 - x1) (y2 + y1) / 2 over consecutive points.
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _binned_counts(pos, neg, num_bins: int, restarts=()):
    """Per-point counts of MLlib's curve, in descending score order.

    ``restarts`` are positions (in the descending order) where MLlib's sorted
    RDD starts a new partition and its chunking restarts; the public API uses
    none (global chunks), tests pass them to reproduce a Spark run exactly.
    """
    pos, neg = pos[::-1], neg[::-1]
    grouping = pos.size // num_bins if num_bins > 0 else 0
    if grouping < 2:  # MLlib: too few distinct scores for down-sampling to help
        return pos, neg
    edges = sorted({0, *(int(r) for r in restarts if 0 < r < pos.size)})
    starts = np.concatenate([np.arange(lo, hi, grouping) for lo, hi in
                             zip(edges, edges[1:] + [pos.size])])
    return np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)


def _binary_value(spec: MetricSpec, partial, restarts=()) -> float:
    if partial["pos"].size == 0:
        raise ValueError("areaUnder* of no rows is undefined (MLlib fails on the empty curve)")
    pos, neg = _binned_counts(partial["pos"], partial["neg"], spec.param("numBins", 1000),
                              restarts)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    positives, negatives = tp[-1], fp[-1]
    recall = tp / positives if positives > 0 else np.zeros_like(tp)
    if spec.metric == "areaUnderROC":
        fpr = fp / negatives if negatives > 0 else np.zeros_like(fp)
        return _trapezoid(np.concatenate([[0.0], fpr, [1.0]]),
                          np.concatenate([[0.0], recall, [1.0]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp == 0, 1.0, tp / (tp + fp))
    # MLlib prepends (0, precision of the first point), not (0, 1).
    return _trapezoid(np.concatenate([[0.0], recall]),
                      np.concatenate([precision[:1], precision]))


def _multiclass_value(spec: MetricSpec, partial) -> float:
    label, prediction, weight = partial["label"], partial["prediction"], partial["weight"]
    hit = label == prediction
    # MLlib's `labels` (the classes averaged over) are the distinct labels only,
    # zero-weight rows included; predicted values that are no label add false
    # positives but no class.
    classes, index = np.unique(label, return_inverse=True)
    count = _sum_by(index, weight, classes.size)
    tp = _sum_by(index, np.where(hit, weight, 0.0), classes.size)
    pred_index = np.searchsorted(classes, prediction)
    known = (pred_index < classes.size) & (classes[np.minimum(pred_index, classes.size - 1)]
                                           == prediction)
    fp = _sum_by(pred_index[known & ~hit], weight[known & ~hit], classes.size)
    total = np.sum(count)
    metric = spec.metric
    if metric == "accuracy":
        return float(np.sum(tp) / total)
    if metric == "hammingLoss":
        return float(np.sum(weight[~hit]) / np.sum(weight))
    beta2 = spec.param("beta", 1.0) ** 2
    precision = np.where(tp + fp == 0, 0.0, tp / (tp + fp))  # no predictions: precision 0
    recall = tp / count
    p_plus_r = precision + recall
    f_measure = np.where(p_plus_r == 0, 0.0,
                         (1 + beta2) * precision * recall / (beta2 * precision + recall))
    fpr = fp / (total - count)
    per_class = {"weightedPrecision": precision, "weightedRecall": recall,
                 "weightedTruePositiveRate": recall, "weightedFalsePositiveRate": fpr,
                 "weightedFMeasure": f_measure, "f1": f_measure,
                 "precisionByLabel": precision, "recallByLabel": recall,
                 "truePositiveRateByLabel": recall, "falsePositiveRateByLabel": fpr,
                 "fMeasureByLabel": f_measure}[metric]
    if metric in _BY_LABEL:
        at = np.flatnonzero(classes == spec.param("metricLabel"))
        if at.size == 0:  # MLlib: NoSuchElementException from tpByClass(label)
            raise ValueError(f"metricLabel {spec.param('metricLabel')} is not a label "
                             "of the evaluated rows")
        return float(per_class[at[0]])
    return float(np.sum(per_class * count / total))


def _regression_value(spec: MetricSpec, partial) -> float:
    total = partial["w"]
    if total == 0:
        raise ValueError("regression metrics of no positive-weight rows are undefined")
    w = np.float64(total)  # numpy division: x/0 gives inf/NaN as on the JVM
    metric = spec.metric
    if metric in ("mse", "rmse"):
        mse = partial["sse"] / w
        return float(np.sqrt(mse) if metric == "rmse" else mse)
    if metric == "mae":
        return float(partial["sae"] / w)
    if metric == "var":
        # SSreg = Σ w (prediction − mean label)², divided by the weight sum.
        ss_reg = partial["m2_p"] + w * (partial["mean_p"] - partial["mean_y"]) ** 2
        return float(ss_reg / w)
    if spec.param("throughOrigin", False):
        return float(1 - partial["sse"] / np.float64(partial["syy"]))
    # SStot = unbiased weighted variance × (Σw − 1), as MLlib computes it: equal to
    # Σ w (y − ȳ)² only for unit weights.
    denominator = w - partial["w2"] / w
    variance = max(partial["m2_y"] / denominator, 0.0) if denominator > 0 else 0.0
    return float(1 - partial["sse"] / (np.float64(variance) * (w - 1)))


def metric_value(spec: MetricSpec, partial) -> float:
    """The number the evaluator returns for the rows summarized in ``partial``.

    Parameters
    ----------
    spec : MetricSpec
    partial : dict
        Output of :func:`partial_sums` / :func:`merge_partials`.

    Returns
    -------
    float
        NaN or ±inf where MLlib divides by zero (e.g. recall of a class whose
        rows all have weight 0); ValueError where MLlib fails (no rows, a
        ``metricLabel`` that is no label).

    Notes
    -----
    For ``numBins > 0`` with at least ``2 × numBins`` distinct scores, MLlib
    down-samples the binary curves into chunks of ``distinct // numBins``
    consecutive scores (a chunk's point is its lowest score's), but restarts
    the chunks at every partition boundary of its sorted RDD, which its range
    partitioner places from a sample.  That cannot be reproduced, so the chunks
    here run over all scores (MLlib's single-partition result).  Both curves
    are chord approximations of the exact one through chunks of at most the
    same size: the ROC areas differ by at most the largest false-positive share
    of any chunk (a few 1e-6 in practice with the default 1000 bins).
    """
    _check(spec)
    if partial is None:
        raise ValueError(f"no rows to compute {spec.metric} of")
    with np.errstate(divide="ignore", invalid="ignore"):
        if spec.kind == "binary":
            return _binary_value(spec, partial)
        if spec.metric == "logLoss":
            return float(partial["loss"] / np.float64(partial["weight"]))
        if spec.kind == "multiclass":
            return _multiclass_value(spec, partial)
        return _regression_value(spec, partial)
