"""Elastic-net penalty ``regParam · (α‖w‖₁ + (1−α)/2 ‖w‖²)`` in optimizer space.

(For least squares the L2 part is further divided by the label's standard deviation,
``l2_scale``, as MLlib does.)

The penalty is on the coefficients, never the intercept.  With
``standardization=True`` it applies to the standardized coefficients (MLlib's
default); with ``False`` to the original-scale ones, which in optimizer space
means per-variable weights ``1/s_j²`` (L2) and ``1/s_j`` (L1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from sparkml_aiaas.core.standardization import ParameterSpace


@dataclass(frozen=True)
class ElasticNet:
    """Per-variable penalty weights: ``½ Σ l2ᵢ θᵢ² + Σ l1ᵢ |θᵢ|``."""

    l2: np.ndarray
    l1: np.ndarray

    @property
    def has_l1(self) -> bool:
        return bool(np.any(self.l1 > 0))

    def smooth(self, theta: np.ndarray) -> Tuple[float, np.ndarray]:
        """Value and gradient of the L2 part."""
        weighted = self.l2 * theta
        return 0.5 * float(np.dot(weighted, theta)), weighted

    def l1_value(self, theta: np.ndarray) -> float:
        return float(np.dot(self.l1, np.abs(theta)))

    def prox(self, theta: np.ndarray, step: float) -> np.ndarray:
        """Proximal operator of the L1 part: soft thresholding by ``step · l1``."""
        if not self.has_l1:
            return theta
        threshold = step * self.l1
        return np.sign(theta) * np.maximum(np.abs(theta) - threshold, 0.0)


def elastic_net(
    space: ParameterSpace, reg_param: float, elastic_net_param: float, standardization: bool,
    *, l2_scale: float = 1.0,
) -> ElasticNet:
    """The penalty in ``space``'s variables.

    ``l2_scale`` multiplies the L2 part only: MLlib's least squares divide it by the
    label's standard deviation (see :mod:`sparkml_aiaas.core.objective`).
    """
    d, k = space.n_features, space.n_outputs
    l2_reg = reg_param * (1.0 - elastic_net_param) * l2_scale
    l1_reg = reg_param * elastic_net_param
    if standardization:
        l2_per_feature = np.full(d, l2_reg)
        l1_per_feature = np.full(d, l1_reg)
    else:
        inv = space.inv_scale
        l2_per_feature = l2_reg * inv * inv
        l1_per_feature = l1_reg * inv
    # A constant feature's variable is pinned at zero; it carries no penalty.
    pinned = space.scale <= 0
    l2_per_feature = np.where(pinned, 0.0, l2_per_feature)
    l1_per_feature = np.where(pinned, 0.0, l1_per_feature)
    l2 = np.zeros(space.n_vars)
    l1 = np.zeros(space.n_vars)
    l2[: d * k] = np.repeat(l2_per_feature, k)
    l1[: d * k] = np.repeat(l1_per_feature, k)
    return ElasticNet(l2, l1)
