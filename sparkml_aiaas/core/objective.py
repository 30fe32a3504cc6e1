"""pyspark.ml's objective, family by family: the scales that define it and its label rules.

MLlib fits every linear family on standardized features, and least squares on a
standardized label too, then reports coefficients on the original scale.  What it
reaches is the minimum of one objective on the original scale; :func:`objective_scales`
gives the two numbers that pin that objective down here, so that :func:`fit_glm
<sparkml_aiaas.core.glm.fit_glm>` reaches the same minimum with any optimizer:

=====================  ==========================================  =====================
family                 standard deviation of the features (the     multiplier of the
                       penalty's "standardized coefficients")      L2 part
=====================  ==========================================  =====================
logistic, multinomial  unbiased (MLlib's ``Summarizer``)           1
hinge (LinearSVC)      unbiased                                    1
huber                  unbiased                                    1
squared, d ≤ 4096      population (``WeightedLeastSquares``, the   ``1/σ_y``, population
                       solver ``"auto"`` picks)
squared, d > 4096      unbiased (the L-BFGS path ``"auto"`` picks  ``1/σ_y``, unbiased
                       beyond 4096 features)
=====================  ==========================================  =====================

"Unbiased" is the weighted variance over ``Σw − Σw²/Σw`` (reliability weights),
"population" over ``Σw``.

Where ``1/σ_y`` comes from: MLlib's least squares minimize, on the label scaled by its
standard deviation ``σ_y``, ``½ mean_w(x̃·β − ỹ)² + λ/σ_y·(α‖β‖₁ + (1−α)/2‖β‖²)``
(``effectiveRegParam = regParam/σ_y``) with ``ỹ = y/σ_y`` (centered with an intercept)
and report ``coef = σ_y·β/s``.  Substituting ``β = s·coef/σ_y`` and multiplying by
``σ_y²`` (which moves no minimum) gives, on the original scale,

    ½ mean_w(x·coef + b − y)² + λα‖s·coef‖₁ + λ(1−α)/(2σ_y)·‖s·coef‖²

so the L1 part is unchanged and only the L2 part is divided by ``σ_y`` (``s`` = 1 with
``standardization=False``).  Huber does not scale its label (``effectiveRegParam =
regParam``) and keeps its own factor ½ on the loss (:func:`sparkml_aiaas.core.losses.huber_loss`).

A label without spread cannot be scaled; :func:`constant_label` gives what MLlib returns
then (for squared error and huber alike, it checks before choosing the loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from sparkml_aiaas.core.stats import BlockStats
from sparkml_aiaas.errors import DataValidationError

#: Up to this many features MLlib's ``LinearRegression(solver="auto")`` solves least squares
#: with ``WeightedLeastSquares`` (population standard deviations); beyond, with L-BFGS.
NORMAL_SOLVER_MAX_FEATURES = 4096

#: Losses of ``LinearRegression``: MLlib checks the label's spread for both.
_REAL_LABEL_LOSSES = ("squared", "huber")


@dataclass(frozen=True)
class ObjectiveScales:
    """``feature_std`` defines the standardized coefficients ``s·coef`` the penalty applies to
    (and the optimizer's variables); ``l2_scale`` multiplies the L2 part of the penalty."""

    feature_std: np.ndarray
    l2_scale: float = 1.0


def objective_scales(loss_name: str, stats: BlockStats) -> ObjectiveScales:
    """The scales of MLlib's objective for ``loss_name`` on rows summarized by ``stats``."""
    if loss_name != "squared":
        return ObjectiveScales(stats.std())
    population = stats.n_features <= NORMAL_SOLVER_MAX_FEATURES
    label_std = stats.label_std(population)
    if label_std <= 0:
        # MLlib's rule for a constant label it still fits (no intercept, regParam = 0, see
        # constant_label): scale by |mean| instead; with regParam = 0 it changes nothing.
        label_std = abs(stats.label_mean) or 1.0
    return ObjectiveScales(stats.std(population), 1.0 / label_std)


@dataclass(frozen=True)
class ConstantLabel:
    """The model MLlib returns, untrained, for a label without spread."""

    intercept: float
    message: str


def constant_label(loss_name: str, stats: BlockStats, fit_intercept: bool,
                   reg_param: float) -> Optional[ConstantLabel]:
    """What MLlib's ``LinearRegression`` does when the label has no spread, or None.

    With an intercept, or a label that is all zeros: zero coefficients and the label's
    mean as intercept (0 without intercept), no training (huber's scale stays 1).
    Without an intercept and a non-zero constant label, MLlib fits as usual but refuses
    ``regParam > 0``; so does this (:class:`DataValidationError`).  Classifier losses:
    None (their one-class data is refused by validation).
    """
    if loss_name not in _REAL_LABEL_LOSSES or stats.weight_sum <= 0:
        return None
    if not (stats.label_min == stats.label_max or stats.label_m2 <= 0.0):
        return None
    value = stats.label_min if stats.label_min == stats.label_max else stats.label_mean
    if fit_intercept or value == 0.0:
        what = ("the coefficients and the intercept are all zero" if value == 0.0 else
                "the coefficients are zero and the intercept is the label's mean")
        return ConstantLabel(
            value if fit_intercept else 0.0,
            f"the label is constant ({value:g}): {what}, as in pyspark.ml; no training needed")
    if reg_param > 0:
        raise DataValidationError(
            f"the label is constant ({value:g}) and fitIntercept is false: such a fit cannot be "
            "regularized (pyspark.ml refuses it too); set regParam=0 or fitIntercept=true")
    return None


def identified(loss_name: str, coef: np.ndarray, intercept: np.ndarray, fit_intercept: bool,
               reg_param: float) -> Tuple[np.ndarray, np.ndarray]:
    """MLlib's choice among equivalent multinomial models.

    Adding a constant to every class's margin changes no probability, so MLlib centers
    the intercepts across classes, and, without any penalty (``regParam = 0``), each
    feature's coefficients across classes too.  (With an L2 part the minimum is already
    centered; with pure L1 MLlib keeps what its optimizer found, and so does this.)
    Other losses: unchanged.
    """
    if loss_name != "multinomial":
        return coef, intercept
    if fit_intercept:
        intercept = intercept - intercept.mean()
    if reg_param == 0.0:
        coef = coef - coef.mean(axis=1, keepdims=True)
    return coef, intercept
