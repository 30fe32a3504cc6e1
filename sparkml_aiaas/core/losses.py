"""Per-row losses of generalized linear models and their margin derivatives.

A model computes margins ``M = X @ coef + intercept`` (``n × k``; ``k = 1``
except for the multinomial family).  A loss turns margins and labels into a
per-row loss and ``dloss/dM``; :func:`loss_gradient_sums` does the rest and is
what each Spark partition runs on its block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

from sparkml_aiaas.core.merge import LossGradient

ArrayPair = Tuple[np.ndarray, np.ndarray]


def _logistic(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Binary log-loss for labels in {0, 1}: ``log(1 + e^m) - y·m``."""
    m = margin[:, 0]
    loss = np.logaddexp(0.0, m) - y * m
    # sigmoid without overflow: exp of a non-positive number only.
    e = np.exp(-np.abs(m))
    prob = np.where(m >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return loss, (prob - y)[:, None]


def _squared(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Half squared error ``(m - y)² / 2``, MLlib's least-squares loss."""
    r = margin[:, 0] - y
    return 0.5 * r * r, r[:, None]


@dataclass(frozen=True)
class Loss:
    """A per-row loss: ``evaluate(margin (n×k), y (n,)) -> (loss (n,), dloss/dmargin (n×k))``."""

    name: str
    evaluate: Callable[[np.ndarray, np.ndarray], ArrayPair]
    #: labels the loss accepts: "binary" (0/1) or "real".
    label_domain: str


LOSSES: Dict[str, Loss] = {
    "logistic": Loss("logistic", _logistic, "binary"),
    "squared": Loss("squared", _squared, "real"),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None


def loss_gradient_sums(
    loss: Loss,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
) -> LossGradient:
    """Weighted loss and gradient *sums* over one block of rows.

    Parameters
    ----------
    loss : Loss
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    w : ndarray of shape (n,)
        Non-negative row weights.
    coef : ndarray of shape (d, k)
    intercept : ndarray of shape (k,)

    Returns
    -------
    LossGradient
        ``loss = Σ wᵢ lossᵢ``, ``grad`` = gradient of that sum with respect to
        ``(coef, intercept)`` flattened as ``[coef.ravel(), intercept]``,
        ``weight = Σ wᵢ`` and ``count = n``.  Dividing by ``weight`` gives
        the weighted mean loss and its gradient.
    """
    d, k = coef.shape
    if X.shape[0] == 0:
        return LossGradient.zero(d * k + k)
    margin = X @ coef
    margin += intercept
    row_loss, dmargin = loss.evaluate(margin, y)
    dmargin *= w[:, None]
    grad_coef = X.T @ dmargin
    grad = np.concatenate([grad_coef.ravel(), dmargin.sum(axis=0)])
    return LossGradient(float(np.dot(w, row_loss)), grad, float(w.sum()), int(X.shape[0]))
