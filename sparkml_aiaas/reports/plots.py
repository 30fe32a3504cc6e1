"""PNG plots for run reports: numpy + matplotlib only (no pyspark).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, rendered by
the Agg canvas on ``savefig``), never through pyplot: nothing needs a display, so plots
render on headless drivers and cluster nodes, and importing this module leaves the
process's backend alone (a notebook that trains a model keeps its inline plots).  Every function writes one
PNG atomically and returns its path; a plot that cannot be drawn meaningfully
(one class only, empty history) is still written, with a note in place of the
curve, so a report never fails on an edge case.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from sparkml_aiaas.atomic import atomic_path

__all__ = ["loss_curve", "roc_curve_plot", "roc_one_vs_rest_plot", "pr_curve_plot",
           "confusion_matrix_plot",
           "residuals_plot", "compression_plot"]

_FIGSIZE = (6.0, 4.5)
_DPI = 100


def _subplots(nrows: int = 1, ncols: int = 1, figsize=_FIGSIZE):
    """A pyplot-free figure and its axes (no global figure registry, nothing to close)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)


def _save(fig, path: str) -> str:
    """Save ``fig`` as PNG under a temporary name and rename it into place."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=_DPI)
    return os.path.abspath(path)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _unit_square(ax, xlabel: str, ylabel: str, legend_loc: str, fontsize=None) -> None:
    """Labels, [0, 1] limits, legend and grid of a rate-against-rate plot (ROC, PR)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc=legend_loc, fontsize=fontsize)
    ax.grid(True, alpha=0.3)


def _as_1d(values, dtype=float) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(-1)


def loss_curve(history: Optional[Sequence[float]], path: str, title: str = "Training loss",
               ylabel: str = "objective") -> str:
    """Objective (or loss/metric) per iteration; an empty history writes a note."""
    values = _as_1d(history if history is not None else [])
    fig, ax = _subplots(figsize=_FIGSIZE)
    ax.set_title(title)
    finite = values[np.isfinite(values)] if values.size else values
    if finite.size == 0:
        _note(ax, "no loss history recorded for this model")
    else:
        ax.plot(np.arange(values.size), values, marker="o" if values.size <= 50 else None,
                markersize=3)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        if finite.min() > 0 and finite.max() / finite.min() > 100:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _binary_inputs(y, score):
    y = _as_1d(y)
    score = _as_1d(score)
    if y.shape != score.shape:
        raise ValueError(f"y has {y.size} values but score has {score.size}")
    keep = np.isfinite(y) & np.isfinite(score)
    y, score = y[keep], score[keep]
    classes = np.unique(y)
    if classes.size != 2 or not set(classes.tolist()) <= {0.0, 1.0}:
        return y, score, (f"curve skipped: needs labels 0 and 1 in y, found "
                          f"{sorted(classes.tolist())[:10]} ({y.size} rows)")
    return y, score, None


def roc_curve_plot(y, score, path: str, title: str = "ROC curve") -> str:
    """ROC of scores (higher = more likely 1) against 0/1 labels, with its AUC.

    With one class only in ``y`` the plot is a note instead (AUC undefined).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y, score, problem = _binary_inputs(y, score)
    fig, ax = _subplots(figsize=_FIGSIZE)
    ax.set_title(title)
    if problem:
        _note(ax, problem)
    else:
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, score):.4f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
        _unit_square(ax, "false positive rate", "true positive rate", "lower right")
    return _save(fig, path)


#: Most classes drawn as separate curves; past this, the legend would be unreadable and
#: only the macro-average is drawn (each class's AUC is still computed for it).
MAX_ROC_CURVES = 12


def one_vs_rest_roc(y, scores, labels: Optional[Sequence] = None):
    """Per-class ROC of ``scores[:, k]`` against ``y == labels[k]``.

    Returns ``(curves, skipped, rows)``: ``curves`` is a list of
    ``(label, fpr, tpr, auc)`` for the classes with both positive and negative rows,
    ``skipped`` the labels without, ``rows`` the rows used (non-finite rows dropped).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = _as_1d(y)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[0] != y.size:
        raise ValueError(f"scores must be rows × classes with {y.size} rows, "
                         f"got shape {scores.shape}")
    labels = list(labels) if labels is not None and len(labels) else list(range(scores.shape[1]))
    if len(labels) != scores.shape[1]:
        raise ValueError(f"{len(labels)} labels for {scores.shape[1]} score columns")
    keep = np.isfinite(y) & np.isfinite(scores).all(axis=1)
    y, scores = y[keep], scores[keep]
    curves, skipped = [], []
    for k, label in enumerate(labels):
        positive = (y == float(label)).astype(float)
        if positive.size == 0 or positive.min() == positive.max():
            skipped.append(label)
            continue
        fpr, tpr, _ = roc_curve(positive, scores[:, k])
        curves.append((label, fpr, tpr, float(roc_auc_score(positive, scores[:, k]))))
    return curves, skipped, int(y.size)


def roc_one_vs_rest_plot(y, scores, labels: Optional[Sequence] = None, path: str = "",
                         title: str = "ROC, one class against the rest") -> str:
    """One ROC curve per class (its score column against "label == class"), with AUCs.

    ``scores`` is rows × classes (column ``k`` scores ``labels[k]``; by default the
    labels are 0..classes-1).  A class absent from ``y`` (or present in every row)
    has no ROC and is listed as skipped.  The title carries the macro-average AUC over
    the classes that have one; with more than :data:`MAX_ROC_CURVES` classes only the
    macro-average curve (mean TPR over a common FPR grid) is drawn.
    """
    if not path:
        raise ValueError("path is required")
    curves, skipped, rows = one_vs_rest_roc(y, scores, labels)
    fig, ax = _subplots(figsize=_FIGSIZE)
    if not curves:
        ax.set_title(title)
        _note(ax, f"curves skipped: no class has both positive and negative rows "
                  f"({rows} rows)")
        return _save(fig, path)
    macro = float(np.mean([auc for *_, auc in curves]))
    ax.set_title(f"{title}\nmacro-average AUC {macro:.4f}")
    if len(curves) <= MAX_ROC_CURVES:
        colors = matplotlib.colormaps["tab20" if len(curves) > 10 else "tab10"]
        for i, (label, fpr, tpr, auc) in enumerate(curves):
            ax.plot(fpr, tpr, color=colors(i), linewidth=1.2,
                    label=f"{_label_text(label)}: AUC {auc:.4f}")
    else:
        grid = np.linspace(0.0, 1.0, 201)
        mean_tpr = np.mean([np.interp(grid, fpr, tpr) for _, fpr, tpr, _ in curves], axis=0)
        ax.plot(grid, mean_tpr, label=f"macro-average of {len(curves)} classes")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if skipped:
        names = [_label_text(v) for v in skipped]
        ax.plot([], [], " ", label=f"skipped (one-sided): {', '.join(names[:8])}"
                                   + (" ..." if len(names) > 8 else ""))
    _unit_square(ax, "false positive rate", "true positive rate", "lower right",
                 fontsize="small")
    return _save(fig, path)


def pr_curve_plot(y, score, path: str, title: str = "Precision-recall curve") -> str:
    """Precision against recall of scores for 0/1 labels, with average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, score, problem = _binary_inputs(y, score)
    fig, ax = _subplots(figsize=_FIGSIZE)
    ax.set_title(title)
    if problem:
        _note(ax, problem)
    else:
        precision, recall, _ = precision_recall_curve(y, score)
        ax.step(recall, precision, where="post",
                label=f"average precision {average_precision_score(y, score):.4f}")
        ax.axhline(y.mean(), linestyle="--", color="grey", linewidth=1,
                   label=f"positive rate {y.mean():.3f}")
        _unit_square(ax, "recall", "precision", "lower left")
    return _save(fig, path)


def confusion_matrix_plot(y, pred, labels: Optional[Sequence] = None, path: str = "",
                          title: str = "Confusion matrix") -> str:
    """Counts of (true label, predicted label); ``labels`` fixes the order (default: seen)."""
    from sklearn.metrics import confusion_matrix

    if not path:
        raise ValueError("path is required")
    y = np.asarray(y).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if labels is None or len(labels) == 0:
        labels = np.unique(np.concatenate([y, pred])) if y.size or pred.size else np.array([])
    labels = list(labels)
    fig, ax = _subplots(figsize=_FIGSIZE)
    ax.set_title(title)
    if not labels or y.size == 0:
        _note(ax, "no rows to tabulate")
        return _save(fig, path)
    matrix = confusion_matrix(y, pred, labels=labels)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    names = [_label_text(v) for v in labels]
    ax.set_xticks(range(len(labels)), names, rotation=45 if len(labels) > 6 else 0)
    ax.set_yticks(range(len(labels)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > threshold else "black")
    return _save(fig, path)


def _label_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def residuals_plot(y, pred, path: str, title: str = "Residuals") -> str:
    """Residual (y - prediction) against prediction, and the residuals' histogram."""
    y = _as_1d(y)
    pred = _as_1d(pred)
    if y.shape != pred.shape:
        raise ValueError(f"y has {y.size} values but pred has {pred.size}")
    keep = np.isfinite(y) & np.isfinite(pred)
    y, pred = y[keep], pred[keep]
    fig, (left, right) = _subplots(1, 2, figsize=(10.0, 4.5))
    fig.suptitle(title)
    if y.size == 0:
        _note(left, "no rows")
        _note(right, "no rows")
        return _save(fig, path)
    residual = y - pred
    left.scatter(pred, residual, s=6, alpha=0.5)
    left.axhline(0.0, color="grey", linewidth=1)
    left.set_xlabel("prediction")
    left.set_ylabel("residual (y - prediction)")
    left.grid(True, alpha=0.3)
    right.hist(residual, bins=min(50, max(5, int(np.sqrt(residual.size)))))
    right.set_xlabel("residual")
    right.set_ylabel("rows")
    return _save(fig, path)


def compression_plot(reports, path: str, title: str = "Compression: size and accuracy") -> str:
    """Bytes and the eval metric before/after, for one or more ``CompressionReport`` s.

    Each report (or dict with the same field names) contributes a ``method`` group:
    weight bytes before and after (left) and ``metric_before``/``metric_after`` (right,
    a note when no eval data was given).
    """
    items: List = list(reports) if isinstance(reports, (list, tuple)) else [reports]

    def get(item, name, default=None):
        return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)

    fig, (left, right) = _subplots(1, 2, figsize=(10.0, 4.5))
    fig.suptitle(title)
    if not items:
        _note(left, "no compression reports")
        _note(right, "no compression reports")
        return _save(fig, path)
    names = [str(get(r, "method", f"#{i}")) for i, r in enumerate(items)]
    x = np.arange(len(items))
    width = 0.38
    before = [float(get(r, "bytes_before", 0) or 0) for r in items]
    after = [float(get(r, "bytes_after", 0) or 0) for r in items]
    left.bar(x - width / 2, before, width, label="before")
    left.bar(x + width / 2, after, width, label="after")
    left.set_xticks(x, names)
    left.set_ylabel("weight bytes")
    left.legend()
    metric = next((get(r, "metric") for r in items if get(r, "metric")), None)
    m_before = [get(r, "metric_before") for r in items]
    m_after = [get(r, "metric_after") for r in items]
    if metric is None or all(v is None for v in m_before + m_after):
        _note(right, "no eval data: accuracy not measured")
    else:
        right.bar(x - width / 2, [np.nan if v is None else v for v in m_before], width,
                  label="before")
        right.bar(x + width / 2, [np.nan if v is None else v for v in m_after], width,
                  label="after")
        right.set_xticks(x, names)
        right.set_ylabel(str(metric))
        right.legend()
    return _save(fig, path)
