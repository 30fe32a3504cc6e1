"""Fitting a generalized linear model from a data-pass function (driver side, no Spark).

The engine hands :func:`fit_glm` a ``data_pass(coef, intercept) ->
LossGradient`` that sums loss and gradient over every row (on Spark: one
broadcast → mapPartitions → treeReduce pass).  Everything else — validation,
standardization, the penalty, the optimizer — happens here, so a test can run
the very same code with ``data_pass`` summing over numpy chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from sparkml_aiaas.core.losses import Loss
from sparkml_aiaas.core.merge import LossGradient
from sparkml_aiaas.core.optimizers import IterationCallback, OptimizeResult, minimize_objective
from sparkml_aiaas.core.regularizers import elastic_net
from sparkml_aiaas.core.standardization import ParameterSpace
from sparkml_aiaas.core.stats import BlockStats
from sparkml_aiaas.errors import DataValidationError

DataPass = Callable[[np.ndarray, np.ndarray], LossGradient]


@dataclass
class GLMFit:
    """Result of :func:`fit_glm`: original-scale coefficients and the optimizer's record."""

    coef: np.ndarray  # (d, k)
    intercept: np.ndarray  # (k,)
    result: OptimizeResult


def _describe_columns(counts: np.ndarray, names: Sequence[str], limit: int = 5) -> str:
    bad = [(names[i], int(c)) for i, c in enumerate(counts) if c]
    shown = ", ".join(f"{name!r} ({c} rows)" for name, c in bad[:limit])
    more = f" and {len(bad) - limit} more columns" if len(bad) > limit else ""
    return shown + more


def validate_training_stats(
    stats: BlockStats,
    loss: Loss,
    feature_names: Sequence[str],
    label_col: str,
    weight_col: Optional[str] = None,
) -> None:
    """Raise :class:`DataValidationError` naming the first problem found in the data."""
    problems: List[str] = []
    if stats.count == 0:
        raise DataValidationError("the training data is empty: there are no rows to fit on")
    if stats.bad_vector_rows:
        problems.append(
            f"{stats.bad_vector_rows} rows have a null feature vector or one whose size is not "
            f"{len(feature_names)} (the size of the first vector)"
        )
    if stats.nonfinite_features.any():
        problems.append(
            "features contain NaN, infinity or null in "
            + _describe_columns(stats.nonfinite_features, feature_names)
        )
    if stats.nonfinite_labels:
        problems.append(
            f"label column {label_col!r} contains NaN, infinity or null in "
            f"{stats.nonfinite_labels} rows"
        )
    if stats.nonfinite_weights:
        problems.append(
            f"weight column {weight_col!r} contains NaN, infinity or null in "
            f"{stats.nonfinite_weights} rows"
        )
    if stats.negative_weights:
        problems.append(f"weight column {weight_col!r} has {stats.negative_weights} negative values")
    if loss.label_domain == "binary" and stats.label_values is not None:
        outside = [v for v in stats.label_values.tolist() if v not in (0.0, 1.0)]
        if outside:
            shown = ", ".join(f"{v:g}" for v in outside[:5])
            problems.append(
                f"label column {label_col!r} must hold 0 or 1 for a binary {loss.name} model; "
                f"found {shown}"
            )
    elif loss.label_domain == "binary" and stats.label_values is None:
        problems.append(
            f"label column {label_col!r} must hold 0 or 1 for a binary {loss.name} model; "
            f"found more than 64 distinct values (range {stats.label_min:g} to {stats.label_max:g})"
        )
    if problems:
        raise DataValidationError("invalid training data: " + "; ".join(problems))
    if stats.weight_sum <= 0:
        raise DataValidationError(
            f"the weights in column {weight_col!r} sum to zero: there is nothing to fit"
        )


def initial_intercept(loss: Loss, stats: BlockStats) -> np.ndarray:
    """A good starting intercept: log-odds of the label mean (logistic), or the mean (squared)."""
    mean = stats.label_sum / stats.weight_sum
    if loss.name == "logistic":
        p = min(max(mean, 1e-12), 1.0 - 1e-12)
        return np.array([np.log(p / (1.0 - p))])
    if loss.name == "squared":
        return np.array([mean])
    return np.zeros(1)


def fit_glm(
    data_pass: DataPass,
    stats: BlockStats,
    *,
    loss: Loss,
    fit_intercept: bool = True,
    standardization: bool = True,
    reg_param: float = 0.0,
    elastic_net_param: float = 0.0,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    tol: float = 1e-6,
    step_size: float = 1.0,
    callback: Optional[IterationCallback] = None,
) -> GLMFit:
    """Minimize ``mean loss + reg_param·(α‖w‖₁ + (1−α)/2‖w‖²)`` with the named optimizer.

    Parameters
    ----------
    data_pass : callable
        ``(coef (d, k), intercept (k,)) -> LossGradient`` summed over all rows.
    stats : BlockStats
        Summary of the same rows (validated beforehand with
        :func:`validate_training_stats`).

    Returns
    -------
    GLMFit
    """
    n_outputs = 1
    space = ParameterSpace.build(stats.mean, stats.std(), n_outputs, fit_intercept)
    penalty = elastic_net(space, reg_param, elastic_net_param, standardization)

    def objective(theta: np.ndarray):
        coef, intercept = space.to_model(theta)
        sums = data_pass(coef, intercept)
        mean_loss, mean_grad = sums.mean()
        value_l2, grad_l2 = penalty.smooth(theta)
        return mean_loss + value_l2, space.gradient_to_vars(mean_grad) + grad_l2

    coef0 = np.zeros((space.n_features, n_outputs))
    intercept0 = initial_intercept(loss, stats) if fit_intercept else np.zeros(n_outputs)
    theta0 = space.from_model(coef0, intercept0)
    result = minimize_objective(
        optimizer, objective, theta0, penalty=penalty, max_iter=max_iter, tol=tol,
        step_size=step_size, callback=callback,
    )
    coef, intercept = space.to_model(result.x)
    return GLMFit(coef, intercept, result)
