"""The associative combine of partial (loss, gradient, weight, count) sums."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LossGradient(NamedTuple):
    """Sums over a set of rows; merging two disjoint sets adds them."""

    loss: float
    grad: np.ndarray
    weight: float
    count: int

    @staticmethod
    def zero(n_params: int) -> "LossGradient":
        return LossGradient(0.0, np.zeros(n_params), 0.0, 0)

    def mean(self):
        """Weighted mean loss and gradient (a zero weight is the caller's error)."""
        return self.loss / self.weight, self.grad / self.weight


def merge(a: LossGradient, b: LossGradient) -> LossGradient:
    """Add two partial sums.  Associative; the engine applies it in partition order."""
    return LossGradient(a.loss + b.loss, a.grad + b.grad, a.weight + b.weight, a.count + b.count)
