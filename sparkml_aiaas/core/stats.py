"""Mergeable summaries of a training block: validation counts and feature moments.

One pass builds the blocks and these summaries together; the driver merges
them in partition order, validates the data (non-finite values, label domain,
weights) before any training step, and derives the standardization scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from sparkml_aiaas.core.matrices import is_sparse


@dataclass
class BlockStats:
    """Summary of rows ``(X, y, w)``; :func:`merge_stats` combines two disjoint sets."""

    count: int
    weight_sum: float
    weight_sq_sum: float
    label_sum: float  # Σ w y over rows with finite values
    mean: np.ndarray  # weighted feature means, shape (d,)
    m2: np.ndarray  # Σ w (x - mean)², shape (d,)
    nonfinite_features: np.ndarray  # rows with NaN/inf per feature, shape (d,)
    nonfinite_labels: int = 0
    nonfinite_weights: int = 0
    negative_weights: int = 0
    bad_vector_rows: int = 0  # null vectors or vectors of the wrong size
    label_min: float = np.inf
    label_max: float = -np.inf
    non_integer_labels: int = 0
    #: Sorted distinct label values while there are few of them (None once > 64).
    label_values: Optional[np.ndarray] = field(default_factory=lambda: np.empty(0))
    #: ``Σ w (y − ȳ)²`` over the same rows as ``label_sum`` (the label's spread, for the
    #: label scaling of MLlib's least squares).
    label_m2: float = 0.0

    @staticmethod
    def empty(n_features: int) -> "BlockStats":
        return BlockStats(
            0, 0.0, 0.0, 0.0, np.zeros(n_features), np.zeros(n_features), np.zeros(n_features, np.int64)
        )

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def _denominator(self, population: bool) -> float:
        """``Σw`` (population) or ``Σw − Σw²/Σw`` (unbiased, reliability weights)."""
        if not self.weight_sum:
            return 0.0
        if population:
            return self.weight_sum
        return self.weight_sum - self.weight_sq_sum / self.weight_sum

    def variance(self, population: bool = False) -> np.ndarray:
        """Weighted feature variances: unbiased (reliability weights) as MLlib's Summarizer,
        or with ``population=True`` divided by ``Σw`` as MLlib's ``WeightedLeastSquares``."""
        denom = self._denominator(population)
        if denom <= 0:
            return np.zeros_like(self.m2)
        return np.maximum(self.m2 / denom, 0.0)

    def std(self, population: bool = False) -> np.ndarray:
        return np.sqrt(self.variance(population))

    @property
    def label_mean(self) -> float:
        """Weighted mean of the label (0 without weight)."""
        return self.label_sum / self.weight_sum if self.weight_sum else 0.0

    def label_std(self, population: bool = False) -> float:
        """Weighted standard deviation of the label: unbiased, or over ``Σw`` (population)."""
        denom = self._denominator(population)
        return float(np.sqrt(max(self.label_m2 / denom, 0.0))) if denom > 0 else 0.0


MAX_TRACKED_LABELS = 64
_ROWS_PER_BAND = 4096


def block_stats(X: np.ndarray, y: np.ndarray, w: np.ndarray, bad_vector_rows: int = 0) -> BlockStats:
    """Summarize one block.  Non-finite entries are counted, and left out of the moments.

    ``X`` is a dense array or a ``scipy.sparse`` matrix (summarized from its stored
    entries, never densified); float32 values are summarized in float64.
    """
    n, d = X.shape
    if is_sparse(X):
        X = X.tocsr()
    stats = BlockStats.empty(d)
    stats.bad_vector_rows = int(bad_vector_rows)
    if n == 0:
        return stats
    # A column sum is finite exactly when the column is (barring overflow, which the
    # exact per-element check below then settles): one cheap pass for clean data.
    with np.errstate(over="ignore", invalid="ignore"):
        clean_x = bool(np.isfinite(X.sum(axis=0)).all())
    if clean_x:
        finite_rows_x = None
    elif is_sparse(X):
        finite_rows_x = _csr_nonfinite(X, stats)
    else:
        finite_x = np.isfinite(X)
        stats.nonfinite_features = (~finite_x).sum(axis=0).astype(np.int64)
        finite_rows_x = finite_x.all(axis=1)
    finite_y = np.isfinite(y)
    finite_w = np.isfinite(w)
    stats.nonfinite_labels = int((~finite_y).sum())
    stats.nonfinite_weights = int((~finite_w).sum())
    stats.negative_weights = int((w[finite_w] < 0).sum())
    yf = y[finite_y]
    if yf.size:
        stats.label_min = float(yf.min())
        stats.label_max = float(yf.max())
        stats.non_integer_labels = int((yf != np.round(yf)).sum())
        values = np.unique(yf)
        stats.label_values = values if values.size <= MAX_TRACKED_LABELS else None

    rows_ok = finite_y & finite_w
    if finite_rows_x is not None:
        rows_ok &= finite_rows_x
    if not rows_ok.all():
        X, y, w = X[rows_ok], y[rows_ok], w[rows_ok]
    stats.count = int(n)
    wsum = float(w.sum())
    stats.weight_sum = wsum
    stats.weight_sq_sum = float(np.dot(w, w))
    stats.label_sum = float(np.dot(w, y))
    if wsum > 0:
        centered_y = y - stats.label_sum / wsum
        stats.label_m2 = float(np.dot(w, centered_y * centered_y))
    if wsum > 0 and is_sparse(X):
        stats.mean, stats.m2 = _csr_moments(X, w, wsum)
    elif wsum > 0:
        mean = (w @ X) / wsum
        m2 = np.zeros(d)
        # Centred squares a band of rows at a time: no temporaries the size of X.
        for start in range(0, X.shape[0], _ROWS_PER_BAND):
            centered = X[start:start + _ROWS_PER_BAND] - mean
            m2 += w[start:start + _ROWS_PER_BAND] @ (centered * centered)
        stats.mean = mean
        stats.m2 = m2
    return stats


def _csr_nonfinite(X, stats: BlockStats) -> np.ndarray:
    """Count a CSR block's non-finite entries per column into ``stats``; returns the mask of
    rows whose stored entries are all finite (implicit zeros always are)."""
    n, d = X.shape
    bad = ~np.isfinite(X.data)
    stats.nonfinite_features = np.bincount(X.indices[bad], minlength=d).astype(np.int64)
    rows = np.repeat(np.arange(n), np.diff(X.indptr))[bad]
    finite_rows = np.ones(n, dtype=bool)
    finite_rows[rows] = False
    return finite_rows


def _csr_moments(X, w: np.ndarray, wsum: float):
    """Weighted mean and ``M2 = Σ w (x − mean)²`` per column of a CSR block, from its stored
    entries only: an implicit zero of row ``i`` contributes ``wᵢ·mean²``, so
    ``M2 = Σ_stored w (x − mean)² + mean²·(W − Σ_stored w)``.  Every term is non-negative,
    so, unlike ``Σ w x² − W·mean²``, nothing cancels (a constant column gets M2 = 0, not
    rounding noise that standardization would divide by)."""
    d = X.shape[1]
    w_entry = np.repeat(w, np.diff(X.indptr))
    values = np.asarray(X.data, dtype=np.float64)
    mean = np.bincount(X.indices, weights=w_entry * values, minlength=d) / wsum
    centered = values - mean[X.indices]
    m2 = np.bincount(X.indices, weights=w_entry * centered * centered, minlength=d)
    w_stored = np.bincount(X.indices, weights=w_entry, minlength=d)
    # Weight of the rows where the column is an implicit zero; exactly 0 when every row
    # stores it (W − Σ_stored w would leave rounding there).
    full = np.bincount(X.indices, minlength=d) == X.shape[0]
    w_implicit = np.where(full, 0.0, np.maximum(wsum - w_stored, 0.0))
    m2 += mean * mean * w_implicit
    return mean, m2


def merge_stats(a: BlockStats, b: BlockStats) -> BlockStats:
    """Combine summaries of disjoint row sets (Chan et al.'s parallel variance)."""
    wsum = a.weight_sum + b.weight_sum
    if a.weight_sum == 0:
        mean, m2, label_m2 = b.mean, b.m2, b.label_m2
    elif b.weight_sum == 0:
        mean, m2, label_m2 = a.mean, a.m2, a.label_m2
    else:
        share = a.weight_sum * b.weight_sum / wsum
        delta = b.mean - a.mean
        mean = a.mean + delta * (b.weight_sum / wsum)
        m2 = a.m2 + b.m2 + delta * delta * share
        label_delta = b.label_sum / b.weight_sum - a.label_sum / a.weight_sum
        label_m2 = a.label_m2 + b.label_m2 + label_delta * label_delta * share
    if a.label_values is None or b.label_values is None:
        labels = None
    else:
        labels = np.union1d(a.label_values, b.label_values)
        if labels.size > MAX_TRACKED_LABELS:
            labels = None
    return BlockStats(
        count=a.count + b.count,
        weight_sum=wsum,
        weight_sq_sum=a.weight_sq_sum + b.weight_sq_sum,
        label_sum=a.label_sum + b.label_sum,
        mean=mean,
        m2=m2,
        nonfinite_features=a.nonfinite_features + b.nonfinite_features,
        nonfinite_labels=a.nonfinite_labels + b.nonfinite_labels,
        nonfinite_weights=a.nonfinite_weights + b.nonfinite_weights,
        negative_weights=a.negative_weights + b.negative_weights,
        bad_vector_rows=a.bad_vector_rows + b.bad_vector_rows,
        label_min=min(a.label_min, b.label_min),
        label_max=max(a.label_max, b.label_max),
        non_integer_labels=a.non_integer_labels + b.non_integer_labels,
        label_values=labels,
        label_m2=label_m2,
    )


def single_class_message(label_col: str, label: float, rows: int, role: str = "training") -> str:
    """The one error every classifier family raises when its labels hold a single class.

    MLlib's logistic regression "trains" such data to an infinite intercept with a warning and
    its LinearSVC refuses some of it; we refuse it everywhere, before any training step, because
    a model that can only ever predict one class is a bug upstream (a filter, a split) and never
    what the user meant.
    """
    return (f"label column {label_col!r} holds a single class ({label:g}) in all {rows} {role} "
            "rows: a classifier needs at least two classes (check the filter or split that made "
            "these rows)")
