"""Mini-batch first-order training (sgd, momentum, nesterov, adam, rmsprop, adagrad).

Each iteration is one Spark job.  With ``local_steps == 1`` every task returns
the loss/gradient sums of its sampled mini-batch and the driver applies the
update rule to the global mini-batch gradient: exactly mini-batch SGD (or
Adam, ...).  With ``local_steps > 1`` (local SGD) every task takes that many
steps of the rule on its own block, starting from the broadcast variables and
rule state, and the driver averages the tasks' variables and states weighted
by the rows they used: many small steps, one job.  With ``local_steps == 0``
(one pass) every task visits its block once per job, in mini-batches of
``round(fraction · rows)`` consecutive rows of a (seed, iteration, partition)
permutation: an iteration is an epoch.

The task side is :func:`local_round`, a pure function of a block; the tests
run it on numpy chunks, the engine inside ``mapPartitions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.first_order import (RULES, RuleSettings, State, apply_update, init_state,
                                            scheduled_step)
from sparkml_aiaas.core.losses import Loss, loss_gradient_sums
from sparkml_aiaas.core.matrices import take_rows
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.core.standardization import ParameterSpace

STOCHASTIC_OPTIMIZERS = RULES


@dataclass(frozen=True)
class RoundSpec:
    """What a task needs for one local round (broadcast once per iteration)."""

    loss: Loss
    space: ParameterSpace
    penalty: ElasticNet
    rule: str
    settings: RuleSettings
    step: float
    local_steps: int
    fraction: float
    seed: int
    iteration: int


def sample_rows(n: int, fraction: float, rng: np.random.Generator) -> Optional[np.ndarray]:
    """Indices of a Bernoulli(fraction) sample of ``n`` rows (None = all rows)."""
    if fraction >= 1.0:
        return None
    return np.flatnonzero(rng.random(n) < fraction)


def block_rng(seed: int, iteration: int, partition: int, step: int = 0) -> np.random.Generator:
    """The sampling RNG of one task: a pure function of (seed, iteration, partition, step),
    so a re-run, a resumed run or a retried task samples the same rows."""
    return np.random.default_rng([seed & 0xFFFFFFFF, iteration, partition, step])


def smooth_objective(space: ParameterSpace, penalty: ElasticNet, sums) -> Tuple[float, np.ndarray]:
    """Mean loss + L2 and its gradient in optimizer space, from a block's (or the total's) sums."""
    if sums.weight <= 0:
        return 0.0, np.zeros(space.n_vars)
    mean_loss, mean_grad = sums.mean()
    return mean_loss, space.gradient_to_vars(mean_grad[: space.n_raw])


def local_round(spec: RoundSpec, X, y, w, x: np.ndarray, state: State, partition: int):
    """``local_steps`` update steps on one block: ``(x, state, rows used, loss sum)``.

    Each step samples its own mini-batch of the block (Bernoulli(fraction)).  With
    ``local_steps == 0`` the steps are one pass over the block instead: a permutation
    from (seed, iteration, partition) cut into ``ceil(1 / fraction)``-ish batches of
    ``max(1, round(fraction · rows))`` rows.  Rows used are the averaging weights.
    """
    used = 0.0
    loss_sum = 0.0
    n = X.shape[0]
    one_pass = spec.local_steps <= 0
    if one_pass:
        order = block_rng(spec.seed, spec.iteration, partition).permutation(n)
        size = n if spec.fraction >= 1.0 else max(1, int(round(spec.fraction * n)))
        steps = -(-n // size) if n else 0
    else:
        steps = spec.local_steps
    for step in range(steps):
        if one_pass:
            rows = np.sort(order[step * size:(step + 1) * size])
            rows = None if len(rows) == n else rows
        else:
            rows = sample_rows(n, spec.fraction,
                               block_rng(spec.seed, spec.iteration, partition, step))
        Xs, ys, ws = (X, y, w) if rows is None else (take_rows(X, rows), y[rows], w[rows])
        if Xs.shape[0] == 0:
            continue
        coef, intercept = spec.space.to_model(x)
        extra = spec.space.extra(x) if spec.loss.n_extra else None
        # X stays as it is (np.asarray would wrap a CSR block in an object array).
        sums = loss_gradient_sums(spec.loss, Xs, np.asarray(ys), np.asarray(ws),
                                  coef, intercept, extra)
        _, grad = smooth_objective(spec.space, spec.penalty, sums)
        grad = grad + spec.penalty.smooth(x)[1]
        x, state = apply_update(spec.rule, x, grad, state, spec.step, spec.settings,
                                l1=spec.penalty.l1)
        used += sums.weight
        loss_sum += sums.loss
    return x, state, used, loss_sum


class NoImprovement:
    """scikit-learn's stopping rule of its mini-batch MLPs, on one value per epoch (the
    training loss, or a validation loss).

    An epoch whose value is not below ``best − tol`` adds one to a count that an epoch
    below it resets; :attr:`stop` once the count reaches ``n_iter_no_change`` (scikit-learn
    stops one epoch later: when its count *exceeds* ``n_iter_no_change``).  A non-finite
    value never improves.  :meth:`update` says whether the value is the lowest so far —
    the epoch whose parameters early stopping keeps (no ``tol`` there, as scikit-learn).
    """

    def __init__(self, tol: float, n_iter_no_change: int):
        if tol < 0 or n_iter_no_change < 1:
            raise ValueError(f"need tol >= 0 and n_iter_no_change >= 1, got {tol}, "
                             f"{n_iter_no_change}")
        self.tol = float(tol)
        self.n_iter_no_change = int(n_iter_no_change)
        self.best = float("inf")
        self.best_index = -1
        self.count = 0
        self.seen = 0

    def update(self, value: float) -> bool:
        value = float(value)
        finite = bool(np.isfinite(value))
        self.count = 0 if finite and value <= self.best - self.tol else self.count + 1
        self.seen += 1
        if finite and value < self.best:
            self.best, self.best_index = value, self.seen - 1
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.count >= self.n_iter_no_change


@dataclass
class StochasticResult:
    x: np.ndarray
    n_iter: int
    n_passes: int
    converged: bool
    message: str
    history: list


def stochastic_minimize(
    round_fn: Callable[[np.ndarray, State, int, float], Tuple[np.ndarray, State, float]],
    gradient_fn: Optional[Callable[[np.ndarray, int], Tuple[float, np.ndarray]]],
    x0: np.ndarray,
    *,
    rule: str,
    step_size: float,
    settings: RuleSettings,
    penalty: ElasticNet,
    local_steps: int,
    max_iter: int,
    tol: float,
    schedule: str = "constant",
    decay: float = 0.0,
    callback=None,
    monitor=None,
    n_iter_no_change: Optional[int] = None,
) -> StochasticResult:
    """Iterate mini-batch rounds until the variables stop moving.

    ``gradient_fn(x, iteration) -> (mean loss, smooth gradient)`` of the
    iteration's global mini-batch serves ``local_steps == 1`` (the driver
    applies the rule); ``round_fn(x, state, iteration, step) -> (x, state,
    mean loss)`` serves local SGD (tasks apply it, the driver averages).
    Stops when ``‖Δx‖ < tol·max(‖x‖, 1)`` (MLlib's GradientDescent rule), when
    (with ``n_iter_no_change`` and ``tol > 0``) the iterations' objective has not
    improved on its best by more than ``tol`` for ``n_iter_no_change`` consecutive
    iterations (:class:`NoImprovement`, scikit-learn's rule: with a constant step the
    variables never stop moving, the objective stops improving), or when the
    early-stopping ``monitor`` (:class:`~sparkml_aiaas.core.early_stopping.
    EarlyStopping`, evaluated at ``x0`` and after every iteration) says so;
    ``x`` is the last iterate, the monitor holds the best one.  The step of
    iteration ``t`` (1-based) is ``scheduled_step(step_size, schedule, t − 1,
    decay)``.
    """
    settings.validate()
    x = np.array(x0, dtype=float)
    state = init_state(rule, x.size)
    history = []
    converged, message = False, "maximum number of iterations reached"
    iteration = 0
    plateau = (NoImprovement(tol, n_iter_no_change)
               if n_iter_no_change and tol > 0 else None)
    if monitor is not None:
        monitor.start(x)
    for iteration in range(1, max_iter + 1):
        step = scheduled_step(step_size, schedule, iteration - 1, decay=decay)
        if local_steps == 1 and gradient_fn is not None:
            loss, grad = gradient_fn(x, iteration)
            x_new, state = apply_update(rule, x, grad + penalty.smooth(x)[1], state, step,
                                        settings, l1=penalty.l1)
        else:
            x_new, state, loss = round_fn(x, state, iteration, step)
        objective = loss + penalty.smooth(x)[0] + penalty.l1_value(x)
        history.append(float(objective))
        if callback is not None:
            callback(iteration, float(objective))
        moved = float(np.linalg.norm(x_new - x))
        x = x_new
        if not np.all(np.isfinite(x)):
            raise ValueError(
                f"optimizer {rule!r} diverged at iteration {iteration} (non-finite variables); "
                "lower stepSize")
        stop_early = monitor is not None and monitor.update(iteration, x)
        if moved < tol * max(float(np.linalg.norm(x)), 1.0):
            converged, message = True, f"step norm {moved:.3g} < tol·max(‖x‖, 1)"
            break
        if plateau is not None:
            plateau.update(objective)
            if plateau.stop:
                converged = True
                message = (f"objective did not improve by more than tol={tol:g} for "
                           f"{plateau.n_iter_no_change} consecutive iterations")
                break
        if stop_early:
            message = monitor.message
            break
    return StochasticResult(x, iteration, iteration, converged, message, history)


RoundSums = Tuple[np.ndarray, State, float, float]


def round_sums(x: np.ndarray, state: State, used: float, loss_sum: float) -> RoundSums:
    """A task's round as sums weighted by the rows it used (so tasks merge by addition)."""
    weighted = {k: (v if k == "t" else v * used) for k, v in state.items()}
    return x * used, weighted, used, loss_sum


def merge_rounds(a: RoundSums, b: RoundSums) -> RoundSums:
    state = {k: (np.maximum(v, b[1][k]) if k == "t" else v + b[1][k]) for k, v in a[1].items()}
    return a[0] + b[0], state, a[2] + b[2], a[3] + b[3]


def average_rounds(total: RoundSums) -> Tuple[np.ndarray, State, float]:
    """Merged task sums → ``(x, state, mean loss)``: the local-SGD average."""
    x_sum, state_sum, used, loss_sum = total
    if used <= 0:
        raise ValueError("no rows were sampled in this round: raise miniBatchFraction")
    averaged: Dict[str, np.ndarray] = {}
    for key, value in state_sum.items():
        averaged[key] = value if key == "t" else value / used
    return x_sum / used, averaged, loss_sum / used
