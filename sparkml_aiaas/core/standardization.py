"""The change of variables between optimizer space and the model's original scale.

As MLlib does, the optimizer works on standardized coefficients
``β_j = coef_j · s_j`` (``s`` = feature standard deviations), which conditions
the problem far better, while the data passes compute plain margins
``X @ coef + intercept`` on the raw features.  With an intercept the features
are also *virtually* centered: ``b = intercept + mean · coef``, so the data is
never rewritten.  A feature with ``s_j = 0`` (constant) keeps a zero
coefficient, as in MLlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class ParameterSpace:
    """Layout and scaling of the optimizer's variables.

    The variable vector is ``[β.ravel(), b, extra]`` with ``β`` of shape
    ``(d, k)``, ``b`` of shape ``(k,)`` (absent without an intercept) and the
    loss's ``n_extra`` own variables (huber's ``log σ``), which pass through
    unscaled.
    """

    scale: np.ndarray  # (d,) feature standard deviations
    center: np.ndarray  # (d,) feature means when centering, else zeros
    n_outputs: int
    fit_intercept: bool
    n_extra: int = 0

    @staticmethod
    def build(mean: np.ndarray, std: np.ndarray, n_outputs: int, fit_intercept: bool,
              n_extra: int = 0):
        center = mean if fit_intercept else np.zeros_like(mean)
        return ParameterSpace(np.asarray(std, float), np.asarray(center, float), n_outputs,
                              fit_intercept, n_extra)

    @property
    def n_features(self) -> int:
        return int(self.scale.shape[0])

    @property
    def n_vars(self) -> int:
        d, k = self.n_features, self.n_outputs
        return d * k + (k if self.fit_intercept else 0) + self.n_extra

    @property
    def n_raw(self) -> int:
        """Length of the data pass's gradient ``[coef.ravel(), intercept, extra]``."""
        return (self.n_features + 1) * self.n_outputs + self.n_extra

    @property
    def inv_scale(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.where(self.scale > 0, 1.0 / np.where(self.scale > 0, self.scale, 1.0), 0.0)

    def split(self, theta: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        d, k = self.n_features, self.n_outputs
        beta = theta[: d * k].reshape(d, k)
        b = theta[d * k : d * k + k] if self.fit_intercept else np.zeros(k)
        return beta, b

    def extra(self, theta: np.ndarray) -> np.ndarray:
        """The loss's own variables (the last ``n_extra`` entries)."""
        return theta[len(theta) - self.n_extra :] if self.n_extra else np.zeros(0)

    def to_model(self, theta: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Optimizer variables → ``(coef (d, k), intercept (k,))`` on the original scale."""
        beta, b = self.split(theta)
        coef = beta * self.inv_scale[:, None]
        intercept = b - self.center @ coef
        return coef, intercept

    def from_model(self, coef: np.ndarray, intercept: np.ndarray,
                   extra: Optional[np.ndarray] = None) -> np.ndarray:
        """Original-scale ``(coef, intercept, extra)`` → optimizer variables."""
        coef = np.asarray(coef, float).reshape(self.n_features, self.n_outputs)
        beta = coef * self.scale[:, None]
        parts = [beta.ravel()]
        if self.fit_intercept:
            parts.append(np.asarray(intercept, float) + self.center @ coef)
        if self.n_extra:
            parts.append(np.zeros(self.n_extra) if extra is None else np.asarray(extra, float))
        return np.concatenate(parts)

    def gradient_to_vars(self, grad: np.ndarray) -> np.ndarray:
        """Chain rule: gradient w.r.t. ``[coef.ravel(), intercept, extra]`` → the variables."""
        d, k = self.n_features, self.n_outputs
        g_coef = grad[: d * k].reshape(d, k)
        g_int = grad[d * k : d * k + k]
        g_beta = (g_coef - self.center[:, None] * g_int[None, :]) * self.inv_scale[:, None]
        parts = [g_beta.ravel()]
        if self.fit_intercept:
            parts.append(g_int)
        if self.n_extra:
            parts.append(grad[d * k + k :])
        return np.concatenate(parts)

    def jacobian(self) -> np.ndarray:
        """``d raw / d vars`` as a dense ``(n_raw, n_vars)`` matrix (for Hessians: ``JᵀHJ``)."""
        d, k, e = self.n_features, self.n_outputs, self.n_extra
        J = np.zeros((self.n_raw, self.n_vars))
        inv = self.inv_scale
        for j in range(d):
            for a in range(k):
                J[j * k + a, j * k + a] = inv[j]  # coef = β / s
                J[d * k + a, j * k + a] = -self.center[j] * inv[j]  # intercept −= mean·coef
        col = d * k
        if self.fit_intercept:
            for a in range(k):
                J[d * k + a, col + a] = 1.0
            col += k
        for f in range(e):
            J[(d + 1) * k + f, col + f] = 1.0
        return J

    def hessian_to_vars(self, hessian: np.ndarray) -> np.ndarray:
        """Hessian w.r.t. ``[coef.ravel(), intercept, extra]`` → w.r.t. the variables."""
        J = self.jacobian()
        return J.T @ hessian @ J
