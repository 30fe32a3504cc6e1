"""Fitting a generalized linear model from a data-pass function (driver side, no Spark).

The engine hands :func:`fit_glm` a ``data_pass(coef, intercept) ->
LossGradient`` that sums loss and gradient over every row (on Spark: one
broadcast → mapPartitions → treeReduce pass).  Everything else — validation,
standardization, the penalty, the optimizer — happens here, so a test can run
the very same code with ``data_pass`` summing over numpy chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence

import numpy as np

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.early_stopping import EarlyStopping
from sparkml_aiaas.core.first_order import DEFAULT_STEPS, RuleSettings
from sparkml_aiaas.core.losses import Loss
from sparkml_aiaas.core.stochastic import (STOCHASTIC_OPTIMIZERS, RoundSpec, smooth_objective,
                                           stochastic_minimize)
from sparkml_aiaas.core.merge import LossGradient
from sparkml_aiaas.core.objective import constant_label, identified, objective_scales
from sparkml_aiaas.core.optimizers import (IterationCallback, OptimizeResult,
                                           minimize_objective)
from sparkml_aiaas.core.regularizers import elastic_net
from sparkml_aiaas.core.standardization import ParameterSpace
from sparkml_aiaas.core.stats import BlockStats, single_class_message
from sparkml_aiaas.errors import DataValidationError

logger = logging.getLogger("sparkml_aiaas.train")

#: ``data_pass(coef, intercept, extra, with_hessian) -> LossGradient`` over all rows.
DataPass = Callable[..., LossGradient]


@dataclass
class GLMFit:
    """Result of :func:`fit_glm`: original-scale coefficients and the optimizer's record.

    With early stopping (``validation_pass``), ``coef``/``intercept``/``extra``
    and ``result.x``/``result.fun`` are those of the best validation iteration
    ``best_iteration``; ``result.n_iter`` counts the iterations actually run;
    ``validation_history[i]`` is the validation loss after ``i`` iterations.
    Without it, ``validation_history`` is empty and ``best_iteration`` None.
    """

    coef: np.ndarray  # (d, k)
    intercept: np.ndarray  # (k,)
    result: OptimizeResult
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the loss's own variables
    validation_history: List[float] = field(default_factory=list)
    best_iteration: Optional[int] = None
    stopped_early: bool = False


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
    *,
    num_classes: Optional[int] = None,
    role: str = "training",
) -> None:
    """Raise :class:`DataValidationError` naming every problem found in the data.

    Parameters
    ----------
    stats : BlockStats
        Merged summary of the training rows.
    loss : Loss
        Its ``label_domain`` decides which labels are allowed.
    feature_names, label_col, weight_col
        Names used in the messages.
    num_classes : int, optional
        For a ``"class_index"`` loss, the number of classes the model will
        have; labels must then be below it.  Without it any non-negative
        integer is accepted (the class count is inferred as max label + 1,
        as MLlib does).
    role : str
        What the rows are for, as the messages say it: ``"training"`` or
        ``"validation"`` (early stopping's held-out rows).  Training rows of a
        classifier loss (binary or class-index labels) must hold at least two
        classes; held-out rows may hold one.
    """
    problems: List[str] = []
    if stats.count == 0:
        raise DataValidationError(f"the {role} data is empty: there are no rows to "
                                  + ("fit on" if role == "training" else "evaluate on"))
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
    if loss.label_domain == "class_index":
        problems.extend(_class_index_problems(stats, loss, label_col, num_classes))
    if problems:
        raise DataValidationError(f"invalid {role} data: " + "; ".join(problems))
    if stats.weight_sum <= 0:
        raise DataValidationError(
            f"the weights in column {weight_col!r} sum to zero: there is nothing to fit"
        )
    if (role == "training" and loss.label_domain in ("binary", "class_index")
            and stats.label_values is not None and stats.label_values.size == 1):
        raise DataValidationError(single_class_message(
            label_col, float(stats.label_values[0]), stats.count, role))


def _class_index_problems(
    stats: BlockStats, loss: Loss, label_col: str, num_classes: Optional[int]
) -> List[str]:
    """Labels of a class-index loss must be integers in ``0 … num_classes − 1``."""
    expected = (
        f"class indices 0 to {num_classes - 1}" if num_classes is not None
        else "non-negative integer class indices (0, 1, 2, ...)"
    )
    head = f"label column {label_col!r} must hold {expected} for a {loss.name} model; found "
    if stats.label_values is not None:
        # Few distinct labels: name the offending values themselves.
        values = stats.label_values
        bad = (values < 0) | (values != np.round(values))
        if num_classes is not None:
            bad |= values >= num_classes
        if bad.any():
            shown = ", ".join(f"{v:g}" for v in values[bad][:5].tolist())
            more = f" and {int(bad.sum()) - 5} more values" if bad.sum() > 5 else ""
            return [head + shown + more]
        return []
    # More than 64 distinct labels: only counts and the range survive the summary.
    found = []
    if stats.non_integer_labels:
        found.append(f"{stats.non_integer_labels} rows with non-integer values")
    if stats.label_min < 0:
        found.append(f"negative values (minimum {stats.label_min:g})")
    if num_classes is not None and stats.label_max >= num_classes:
        found.append(f"values up to {stats.label_max:g}")
    return [head + ", ".join(found)] if found else []


def initial_intercept(loss: Loss, stats: BlockStats, n_outputs: int = 1) -> np.ndarray:
    """A good starting intercept: log-odds of the label mean (logistic), or the mean (squared,
    huber); zeros otherwise (hinge, multinomial)."""
    mean = stats.label_sum / stats.weight_sum
    if loss.name == "logistic":
        p = min(max(mean, 1e-12), 1.0 - 1e-12)
        return np.array([np.log(p / (1.0 - p))])
    if loss.name in ("squared", "huber"):
        return np.array([mean])
    return np.zeros(n_outputs)


def fit_fingerprint(stats: BlockStats, settings: dict) -> str:
    """A key naming one fit: the same data summary and settings give the same key.

    Used to find a killed fit's checkpoint when it is re-run with the same arguments.
    """
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for value in (stats.count, stats.weight_sum, stats.label_sum, stats.label_m2):
        digest.update(np.float64(value).tobytes())
    digest.update(np.ascontiguousarray(stats.mean, np.float64).tobytes())
    digest.update(np.ascontiguousarray(stats.m2, np.float64).tobytes())
    return digest.hexdigest()[:24]


def fit_glm(
    data_pass: DataPass,
    stats: BlockStats,
    *,
    loss: Loss,
    n_outputs: int = 1,
    fit_intercept: bool = True,
    standardization: bool = True,
    reg_param: float = 0.0,
    elastic_net_param: float = 0.0,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    tol: float = 1e-6,
    step_size: float = 1.0,
    callback: Optional[IterationCallback] = None,
    checkpoint: Optional[FileCheckpoint] = None,
    stochastic: Optional["StochasticSettings"] = None,
    local_rounds: Optional[Callable] = None,
    step_rule: str = "backtracking",
    step_schedule: str = "constant",
    step_decay: float = 0.0,
    validation_pass: Optional[DataPass] = None,
    patience: int = 5,
) -> GLMFit:
    """Minimize pyspark.ml's objective for ``loss`` with the named optimizer.

    That is ``mean_w loss + reg_param·(α‖s·w‖₁ + (1−α)/2·c·‖s·w‖²)`` with ``s`` the
    features' standard deviations (1 without ``standardization``) and ``c`` = 1, except
    for least squares, where MLlib scales the label: ``c = 1/σ_y`` and ``s`` are
    population standard deviations (see :mod:`sparkml_aiaas.core.objective`).  A label
    without spread (squared, huber) gets MLlib's untrained answer; multinomial models
    are centered as MLlib centers them.

    Parameters
    ----------
    data_pass : callable
        ``data_pass(coef (d, k), intercept (k,), extra=None, with_hessian=False)
        -> LossGradient`` summed over all rows; ``extra`` carries the loss's own
        variables (huber's ``log σ``), ``with_hessian`` asks for the Hessian
        (``newton``).
    stats : BlockStats
        Summary of the same rows (validated beforehand with
        :func:`validate_training_stats`).
    n_outputs : int
        ``k``: 1, or the number of classes for the multinomial loss.
    checkpoint : FileCheckpoint, optional
        Resume from / save the optimizer state (see :mod:`sparkml_aiaas.core.checkpoint`).
    stochastic : StochasticSettings, optional
        Mini-batch settings of the first-order optimizers (sgd, momentum, ...).
    local_rounds : callable, optional
        ``local_rounds(spec, x, state) -> (x, state, mean loss)``: local SGD on the blocks,
        needed when ``stochastic.local_steps > 1``.
    step_rule, step_schedule, step_decay
        How ``optimizer="gd"`` chooses its step (``"backtracking"``,
        ``"barzilai_borwein"`` or ``"schedule"``; the schedule serves
        ``"schedule"``), see :func:`sparkml_aiaas.core.optimizers.gradient_descent`.
        Other optimizers ignore them; the mini-batch ones take their schedule
        from ``stochastic.schedule``/``stochastic.decay``.
    validation_pass : DataPass, optional
        Early stopping: a ``data_pass`` over held-out rows (never used to
        train).  Its weighted mean loss (no penalty) is evaluated at the start
        and after every iteration; the fit stops once ``patience`` consecutive
        iterations have not improved on the best, and returns the best
        iteration's variables.  Works with every optimizer and with
        ``checkpoint`` (the validation history and best variables are saved).
    patience : int
        Consecutive non-improving iterations tolerated (>= 1).

    Returns
    -------
    GLMFit
        Original-scale ``coef (d, k)``, ``intercept (k,)``, the loss's ``extra``
        variables and the optimizer's record (and early stopping's).
    """
    scales = objective_scales(loss.name, stats)
    space = ParameterSpace.build(stats.mean, scales.feature_std, n_outputs, fit_intercept,
                                 loss.n_extra)
    constant = constant_label(loss.name, stats, fit_intercept, reg_param)
    if constant is not None:
        logger.warning("%s", constant.message)
        coef = np.zeros((space.n_features, n_outputs))
        intercept = np.full(n_outputs, constant.intercept)
        extra = np.zeros(loss.n_extra)  # huber's log σ = 0: scale 1, as MLlib reports
        x = space.from_model(coef, intercept, extra)
        return GLMFit(coef, intercept, OptimizeResult(x, 0.0, 0, 0, True, constant.message, [0.0]),
                      extra)
    penalty = elastic_net(space, reg_param, elastic_net_param, standardization,
                          l2_scale=scales.l2_scale)
    n_raw = space.n_raw

    def pass_at(theta: np.ndarray, with_hessian: bool):
        coef, intercept = space.to_model(theta)
        extra = space.extra(theta) if loss.n_extra else None
        sums = data_pass(coef, intercept, extra, with_hessian)
        if sums.weight <= 0:
            raise DataValidationError("the training data has no rows with positive weight")
        mean_loss, mean_grad = sums.mean()
        value_l2, grad_l2 = penalty.smooth(theta)
        grad = space.gradient_to_vars(mean_grad[:n_raw]) + grad_l2
        return mean_loss + value_l2, grad, sums

    def objective(theta: np.ndarray):
        value, grad, _ = pass_at(theta, False)
        return value, grad

    def objective_with_hessian(theta: np.ndarray):
        value, grad, sums = pass_at(theta, True)
        hessian = space.hessian_to_vars(sums.hessian / sums.weight) + np.diag(penalty.l2)
        return value, grad, hessian

    monitor = None
    if validation_pass is not None:
        def validation_loss(theta: np.ndarray) -> float:
            coef, intercept = space.to_model(theta)
            extra = space.extra(theta) if loss.n_extra else None
            sums = validation_pass(coef, intercept, extra, False)
            if sums.weight <= 0:
                raise DataValidationError(
                    "the validation data has no rows with positive weight")
            return float(sums.mean()[0])

        monitor = EarlyStopping(validation_loss, patience)

    coef0 = np.zeros((space.n_features, n_outputs))
    intercept0 = initial_intercept(loss, stats, n_outputs) if fit_intercept else np.zeros(n_outputs)
    theta0 = space.from_model(coef0, intercept0, np.asarray(loss.extra_init, float))
    if optimizer in STOCHASTIC_OPTIMIZERS:
        result = _fit_stochastic(data_pass, local_rounds, theta0, space, penalty, loss,
                                 optimizer, stochastic or StochasticSettings(), step_size,
                                 max_iter, tol, callback, monitor)
    else:
        result = minimize_objective(
            optimizer, objective, theta0, penalty=penalty, max_iter=max_iter, tol=tol,
            step_size=step_size, callback=callback,
            fun_hess=objective_with_hessian if optimizer == "newton" else None,
            checkpoint=checkpoint, step_rule=step_rule, step_schedule=step_schedule,
            step_decay=step_decay, monitor=monitor,
        )

    def model_at(x: np.ndarray):
        coef, intercept = space.to_model(x)
        return identified(loss.name, coef, intercept, fit_intercept, reg_param)

    if monitor is None:
        coef, intercept = model_at(result.x)
        return GLMFit(coef, intercept, result, space.extra(result.x))
    best = monitor.best_iteration
    # history[i] is the objective after i iterations (both optimizer families).
    fun = result.history[best] if best < len(result.history) else result.fun
    result = replace(result, x=monitor.best_x, fun=float(fun))
    coef, intercept = model_at(result.x)
    return GLMFit(coef, intercept, result, space.extra(result.x),
                  validation_history=monitor.history, best_iteration=best,
                  stopped_early=monitor.stopped_early)


@dataclass(frozen=True)
class StochasticSettings:
    """Mini-batch settings: sampled fraction per step, local steps per job (0 = one pass over
    each block per job when ``mini_batch_fraction < 1``, exact steps otherwise), rule
    constants, and ``n_iter_no_change`` of the stopping rule on sampled mini-batches (None, or
    ``mini_batch_fraction`` 1: the step-norm test only)."""

    mini_batch_fraction: float = 1.0
    local_steps: int = 1
    seed: int = 0
    rule: RuleSettings = RuleSettings()
    schedule: str = "constant"
    decay: float = 0.0
    n_iter_no_change: Optional[int] = None
    #: True when the user left ``stepSize`` unset: the rule's own step
    #: (:data:`~sparkml_aiaas.core.first_order.DEFAULT_STEPS`) replaces it.
    default_step: bool = False


def _fit_stochastic(data_pass, local_rounds, theta0, space, penalty, loss, optimizer,
                    settings: StochasticSettings, step_size, max_iter, tol, callback,
                    monitor=None):
    fraction, seed = settings.mini_batch_fraction, settings.seed
    if settings.default_step:
        step_size = DEFAULT_STEPS.get(optimizer, step_size)
    local_steps = settings.local_steps
    if local_steps <= 0 and fraction >= 1.0:
        local_steps = 1  # one pass of the whole block: the exact full-batch step

    def gradient_fn(theta, iteration):
        coef, intercept = space.to_model(theta)
        extra = space.extra(theta) if loss.n_extra else None
        sums = data_pass(coef, intercept, extra, False, sample=(fraction, seed, iteration))
        if sums.weight <= 0:
            raise DataValidationError(
                f"mini-batch {iteration} sampled no rows: raise miniBatchFraction ({fraction})")
        return smooth_objective(space, penalty, sums)

    def round_fn(theta, state, iteration, step):
        if local_rounds is None:
            raise ValueError("localSteps > 1 needs the engine's local rounds")
        spec = RoundSpec(loss, space, penalty, optimizer, settings.rule, step,
                         local_steps, fraction, seed, iteration)
        return local_rounds(spec, theta, state)

    result = stochastic_minimize(
        round_fn, gradient_fn, theta0, rule=optimizer, step_size=step_size,
        settings=settings.rule, penalty=penalty, local_steps=local_steps,
        max_iter=max_iter, tol=tol, schedule=settings.schedule, decay=settings.decay,
        callback=callback, monitor=monitor,
        # Full batch the objective is exact and MLlib's step-norm test applies; an adaptive
        # rule's early oscillation must not read as a plateau there.
        n_iter_no_change=settings.n_iter_no_change if fraction < 1.0 else None,
    )
    final = result.history[-1] if result.history else float("nan")
    return OptimizeResult(result.x, final, result.n_iter, result.n_passes, result.converged,
                          result.message, result.history)
