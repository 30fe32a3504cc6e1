"""The run report of a training job: bounded collection of the scored rows + plots + HTML.

This module touches Spark only in :func:`collect_scored_sample` (imported lazily);
plotting and HTML are in the pyspark-free :mod:`.plots` and :mod:`.html`.

Bound: at most :data:`MAX_REPORT_ROWS` (200,000) evaluated rows are brought to the
driver for the plots, drawn with ``DataFrame.sample(fraction, seed=REPORT_SEED)``
then ``limit``; the metrics table itself is computed by Spark over every row.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("sparkml_aiaas.reports")

#: Most evaluated rows collected to the driver for the plots.
MAX_REPORT_ROWS = 200_000
#: Seed of the sample drawn when there are more rows than that.
REPORT_SEED = 7

_SCORE = "__sparkml_report_score"
_LABEL = "__sparkml_report_label"
_PRED = "__sparkml_report_pred"


def _score_vector_column(frame, column: str):
    """``column`` (a vector or array column) as ``array<double>``."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = frame.schema[column].dataType
    if isinstance(dtype, VectorUDT):
        return vector_to_array(F.col(column))
    if isinstance(dtype, T.ArrayType):
        return F.col(column).cast("array<double>")
    raise ValueError(f"score column {column!r} is {dtype.simpleString()}, "
                     "not a vector or array of per-class scores")


def _score_column(frame, column: str, index: Optional[int]):
    """``column`` as a double: element ``index`` of a vector/array column, or the value."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = frame.schema[column].dataType
    col = F.col(column)
    if isinstance(dtype, VectorUDT):
        col = vector_to_array(col)[index if index is not None else 0]
    elif isinstance(dtype, T.ArrayType):
        col = col[index if index is not None else 0]
    return col.cast("double")


def collect_scored_sample(scored, label_col: str, prediction_col: str,
                          score_col: Optional[str] = None, score_index: Optional[int] = 1,
                          rows: Optional[int] = None, max_rows: int = MAX_REPORT_ROWS,
                          seed: int = REPORT_SEED,
                          score_vector: bool = False) -> Dict[str, np.ndarray]:
    """Labels, predictions (and a score column's element ``score_index``) as numpy arrays.

    At most ``max_rows`` rows: with more (``rows``, counted if not given), a seeded
    Bernoulli sample of about ``max_rows`` rows is drawn, then cut at ``max_rows``.
    Returns ``{"y", "pred", "score" (or absent), "rows_total", "rows_sampled"}``; with
    ``score_vector=True`` the whole score vector of each row is kept instead, as
    ``"scores"`` (rows × classes; per-class probabilities for one-vs-rest curves).
    """
    from pyspark.sql import functions as F

    columns = [F.col(label_col).cast("double").alias(_LABEL),
               F.col(prediction_col).cast("double").alias(_PRED)]
    if score_col is not None:
        column = (_score_vector_column(scored, score_col) if score_vector
                  else _score_column(scored, score_col, score_index))
        columns.append(column.alias(_SCORE))
    frame = scored.select(*columns)
    total = rows if rows is not None else frame.count()
    if total > max_rows:
        # A little over the bound so the limit, not the sample's variance, sets the size.
        frame = frame.sample(False, min(1.0, 1.05 * max_rows / total), seed=seed)
    collected = frame.limit(max_rows).collect()
    out: Dict[str, Any] = {
        "y": np.array([r[0] for r in collected], dtype=float),
        "pred": np.array([r[1] for r in collected], dtype=float),
        "rows_total": int(total), "rows_sampled": len(collected),
    }
    if score_col is not None and score_vector:
        width = max((len(r[2]) for r in collected if r[2] is not None), default=0)
        scores = np.full((len(collected), width), np.nan)
        for i, r in enumerate(collected):
            if r[2] is not None:
                scores[i, :len(r[2])] = r[2]
        out["scores"] = scores
    elif score_col is not None:
        out["score"] = np.array([np.nan if r[2] is None else r[2] for r in collected],
                                dtype=float)
    return out


def loss_history(summary) -> Tuple[List[float], str]:
    """(history, y-axis label) from a training summary, or ([], "") if it has none."""
    for attr in ("objectiveHistory", "lossHistory"):
        values = getattr(summary, attr, None)
        if values:
            label = getattr(summary, "metricName", "") or (
                "objective" if attr == "objectiveHistory" else "loss")
            return [float(v) for v in values], label
    return [], ""


def write_training_report(directory: str, *, kind: str, title: str, metrics: Dict[str, float],
                          history: Sequence[float], history_label: str = "objective",
                          sample: Optional[Dict[str, Any]] = None,
                          labels: Optional[Sequence] = None, config: Any = None,
                          model_path: Optional[str] = None,
                          sections: Optional[List[Tuple[str, Any]]] = None,
                          started_at: Optional[_dt.datetime] = None) -> Tuple[str, List[str]]:
    """Write the plots for a ``kind`` of model ("binary", "multiclass", "regression")
    and ``report.html`` into ``directory``; returns (html path, png paths)."""
    from sparkml_aiaas.reports import plots
    from sparkml_aiaas.reports.html import write_report

    os.makedirs(directory, exist_ok=True)
    png = lambda name: os.path.join(directory, name)  # noqa: E731
    figures: List[Tuple[str, str]] = [
        (f"Training {history_label} per iteration",
         plots.loss_curve(history, png("loss_curve.png"), ylabel=history_label or "objective"))]
    sections = list(sections or [])
    if sample is not None:
        y, pred = sample["y"], sample["pred"]
        if kind == "binary" and "score" in sample:
            figures.append(("ROC curve", plots.roc_curve_plot(y, sample["score"],
                                                              png("roc_curve.png"))))
            figures.append(("Precision-recall curve",
                            plots.pr_curve_plot(y, sample["score"], png("pr_curve.png"))))
        if kind == "multiclass" and "scores" in sample:
            figures.append(("ROC curves, each class against the rest",
                            plots.roc_one_vs_rest_plot(y, sample["scores"], labels,
                                                       png("roc_one_vs_rest.png"))))
        if kind in ("binary", "multiclass"):
            figures.append(("Confusion matrix (rows: true, columns: predicted)",
                            plots.confusion_matrix_plot(y, pred, labels,
                                                        png("confusion_matrix.png"))))
        if kind == "regression":
            figures.append(("Residuals", plots.residuals_plot(y, pred, png("residuals.png"))))
        sections.insert(0, ("Plotted rows", {
            "rows evaluated": sample["rows_total"], "rows plotted": sample["rows_sampled"],
            "bound": f"at most {MAX_REPORT_ROWS} rows, seeded sample (seed {REPORT_SEED})"}))
    path = write_report(directory, title, metrics, figures, sections=sections, config=config,
                        model_path=model_path, started_at=started_at)
    return path, [p for _, p in figures]
