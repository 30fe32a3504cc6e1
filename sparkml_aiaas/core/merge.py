"""The associative combine of partial (loss, gradient, weight, count[, Hessian]) sums."""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, TypeVar

import numpy as np


class LossGradient(NamedTuple):
    """Sums over a set of rows; merging two disjoint sets adds them.

    ``hessian`` is the summed Hessian when the pass computed one (Newton's
    method), else ``None``; it is last and defaulted so that the four-field
    constructor calls keep working.
    """

    loss: float
    grad: np.ndarray
    weight: float
    count: int
    hessian: Optional[np.ndarray] = None

    @staticmethod
    def zero(n_params: int, with_hessian: bool = False) -> "LossGradient":
        hessian = np.zeros((n_params, n_params)) if with_hessian else None
        return LossGradient(0.0, np.zeros(n_params), 0.0, 0, hessian)

    def mean(self):
        """Weighted mean loss and gradient (a zero weight is the caller's error)."""
        return self.loss / self.weight, self.grad / self.weight

    def mean_hessian(self) -> np.ndarray:
        """Weighted mean Hessian; an error when the sums carry none."""
        if self.hessian is None:
            raise ValueError("these sums carry no Hessian: compute them with with_hessian=True")
        return self.hessian / self.weight


def _merge_hessians(a: LossGradient, b: LossGradient) -> Optional[np.ndarray]:
    if a.hessian is not None and b.hessian is not None:
        return a.hessian + b.hessian
    if a.hessian is None and b.hessian is None:
        return None
    # Mixed: only a side without rows may lack the Hessian (e.g. an empty partition's
    # zero sums); otherwise rows would silently drop out of the Newton system.
    with_h, without = (a, b) if a.hessian is not None else (b, a)
    if without.count == 0 and without.weight == 0:
        return with_h.hessian
    raise ValueError(
        f"cannot merge sums with and without a Hessian: {without.count} rows have no Hessian"
    )


def merge(a: LossGradient, b: LossGradient) -> LossGradient:
    """Add two partial sums.  Associative; the engine applies it in partition order."""
    return LossGradient(
        a.loss + b.loss, a.grad + b.grad, a.weight + b.weight, a.count + b.count,
        _merge_hessians(a, b),
    )


T = TypeVar("T")


def merge_present(combine: Callable[[T, T], T]) -> Callable[[List[Optional[T]], List[Optional[T]]],
                                                            List[Optional[T]]]:
    """Element-wise ``combine`` of two lists where either side may hold None (no rows yet):
    the merge of per-model partials when a model sees only some blocks (held-out folds)."""

    def merge_lists(a: List[Optional[T]], b: List[Optional[T]]) -> List[Optional[T]]:
        return [y if x is None else x if y is None else combine(x, y) for x, y in zip(a, b)]

    return merge_lists
