"""Driver-side optimizers over an objective evaluated by full passes over the data.

Each optimizer takes ``fun(theta) -> (value, gradient)`` for the smooth part
of the objective (mean data loss plus the L2 penalty); each call is one pass
over the data.  An L1 penalty, when present, is handled by the optimizer
itself (proximal steps), never differentiated.

Names are shared across the package: ``"gd"`` (full-batch proximal gradient
descent), ``"lbfgs"`` (our own L-BFGS, OWL-QN with L1) and ``"newton"``.

``gd`` chooses its step with one of :data:`STEP_RULES` (see
:func:`gradient_descent`): ``"backtracking"``, ``"barzilai_borwein"`` or
``"schedule"``.  Every optimizer accepts an early-stopping ``monitor``
(:class:`sparkml_aiaas.core.early_stopping.EarlyStopping`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.early_stopping import EarlyStopping
from sparkml_aiaas.core.first_order import SCHEDULES, scheduled_step
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.core.solver_state import ArrayState

Objective = Callable[[np.ndarray], Tuple[float, np.ndarray]]
HessianObjective = Callable[[np.ndarray], Tuple[float, np.ndarray, np.ndarray]]
#: Called after each iteration with (iteration, objective value).
IterationCallback = Callable[[int, float], None]

#: Full-batch optimizers: every iteration makes one or more passes over all rows.
OPTIMIZERS = ("gd", "lbfgs", "newton")

#: How ``gd`` chooses its step (see :func:`gradient_descent`).
STEP_RULES = ("backtracking", "barzilai_borwein", "schedule")

#: Safeguard clamp of the Barzilai–Borwein step ``s·s / s·y``.
BB_STEP_MIN, BB_STEP_MAX = 1e-10, 1e10


@dataclass
class OptimizeResult:
    """What an optimizer returns.

    Attributes
    ----------
    x : ndarray
        Final variables.
    fun : float
        Final objective, L1 penalty included.
    n_iter : int
        Iterations taken.
    n_passes : int
        Objective evaluations, i.e. passes over the data.
    converged : bool
        Whether ``tol`` stopped the run (rather than ``max_iter``).
    history : list of float
        Objective at the start and after every iteration.
    """

    x: np.ndarray
    fun: float
    n_iter: int
    n_passes: int
    converged: bool
    message: str
    history: List[float] = field(default_factory=list)


def relative_change(old: float, new: float) -> float:
    """``|old − new| / max(|old|, |new|, 1)``: the ``tol`` test of every optimizer."""
    return abs(old - new) / max(abs(old), abs(new), 1.0)


@dataclass(eq=False)
class GDState(ArrayState):
    """Everything a proximal gradient-descent iteration reads; exactly restorable.

    ``step`` is the step the next iteration tries first: with ``backtracking``
    the last accepted step; with ``barzilai_borwein`` the (clamped) BB step
    ``s·s / s·y`` of the last accepted move (``s = x⁺ − x``, ``y = ∇f(x⁺) −
    ∇f(x)``, smooth part only), computed when the move is accepted, so the
    whole BB memory is this one float; with ``schedule`` the step the last
    iteration used (the next one is a function of ``iteration``).  ``g`` is
    the gradient of the smooth part at ``x``; ``total`` adds the L1 penalty.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    total: float
    step: float
    iteration: int = 0
    n_evals: int = 0
    step_failures: int = 0

    _FLOATS = ("f", "total", "step")
    _INTS = ("iteration", "n_evals", "step_failures")
    _NDIM = {"x": 1, "g": 1}


def gd_start(fun: Objective, x0: np.ndarray, step_size: float,
             penalty: Optional[ElasticNet] = None) -> GDState:
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x = np.array(x0, dtype=float)
    f, g = fun(x)
    l1 = penalty.l1_value(x) if penalty is not None and penalty.has_l1 else 0.0
    return GDState(x=x, f=float(f), g=np.asarray(g, float), total=float(f) + l1,
                   step=float(step_size), iteration=0, n_evals=1, step_failures=0)


def barzilai_borwein_step(s: np.ndarray, y: np.ndarray, fallback: float) -> float:
    """BB1 step ``s·s / s·y`` clamped to ``[BB_STEP_MIN, BB_STEP_MAX]``.

    ``fallback`` (the step just accepted) is returned when ``s·y ≤ 0`` or is
    not finite: no positive curvature was seen along ``s`` (``s = 0`` at the
    optimum, or a non-smooth loss such as the hinge).
    """
    sy = float(np.dot(s, y))
    if not (sy > 0.0 and np.isfinite(sy)):
        return float(fallback)
    return float(min(max(float(np.dot(s, s)) / sy, BB_STEP_MIN), BB_STEP_MAX))


def gd_iterate(fun: Objective, state: GDState,
               penalty: Optional[ElasticNet] = None, *, step_rule: str = "backtracking",
               base_step: float = 1.0, schedule: str = "constant",
               decay: float = 0.0) -> GDState:
    """One proximal gradient step chosen by ``step_rule`` (see :func:`gradient_descent`).

    ``backtracking`` and ``barzilai_borwein`` try ``state.step`` and halve it
    (one more pass each) until it decreases enough; ``schedule`` takes
    ``scheduled_step(base_step, schedule, state.iteration, decay)`` without a
    test (one pass) and raises ``ValueError`` when the objective is no longer
    finite.
    """
    has_l1 = penalty is not None and penalty.has_l1
    x, f, g, step = state.x, state.f, state.g, state.step
    if step_rule == "schedule":
        step = float(scheduled_step(base_step, schedule, state.iteration, decay))
        x_new = penalty.prox(x - step * g, step) if penalty is not None else x - step * g
        f_new, g_new = fun(x_new)
        total = float(f_new) + (penalty.l1_value(x_new) if has_l1 else 0.0)
        if not (np.isfinite(total) and np.all(np.isfinite(g_new))):
            raise ValueError(
                f"gd with stepRule 'schedule' diverged at iteration {state.iteration + 1} "
                f"(step {step:g}, objective {total}); lower stepSize or use a decaying "
                "stepSchedule")
        return GDState(x=x_new, f=float(f_new), g=np.asarray(g_new, float), total=total,
                       step=step, iteration=state.iteration + 1,
                       n_evals=state.n_evals + 1, step_failures=state.step_failures)
    if step_rule not in ("backtracking", "barzilai_borwein"):
        raise ValueError(f"unknown step rule {step_rule!r}; expected one of {list(STEP_RULES)}")
    evals = 0
    while step >= 1e-20:
        x_new = penalty.prox(x - step * g, step) if penalty is not None else x - step * g
        delta = x_new - x
        f_new, g_new = fun(x_new)
        evals += 1
        bound = f + float(np.dot(g, delta)) + float(np.dot(delta, delta)) / (2.0 * step)
        if f_new <= bound + 1e-12 * max(1.0, abs(f)):
            total = float(f_new) + (penalty.l1_value(x_new) if has_l1 else 0.0)
            g_new = np.asarray(g_new, float)
            next_step = (barzilai_borwein_step(delta, g_new - g, step)
                         if step_rule == "barzilai_borwein" else step)
            return GDState(x=x_new, f=float(f_new), g=g_new, total=total,
                           step=next_step, iteration=state.iteration + 1,
                           n_evals=state.n_evals + evals, step_failures=state.step_failures)
        step *= 0.5
    return GDState(x=x, f=f, g=g, total=state.total, step=state.step, iteration=state.iteration,
                   n_evals=state.n_evals + evals, step_failures=state.step_failures + 1)


def gradient_descent(
    fun: Objective,
    x0: np.ndarray,
    *,
    step_size: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    penalty: Optional[ElasticNet] = None,
    callback: Optional[IterationCallback] = None,
    checkpoint: Optional[FileCheckpoint] = None,
    step_rule: str = "backtracking",
    schedule: str = "constant",
    decay: float = 0.0,
    monitor: Optional[EarlyStopping] = None,
) -> OptimizeResult:
    """Full-batch proximal gradient descent, ``x⁺ = prox(x − step·∇f(x), step)``.

    ``step_rule`` chooses the step:

    ``"backtracking"`` (default)
        ``step_size`` is the first step tried; a step that fails the
        sufficient-decrease test ``f(x⁺) ≤ f(x) + g·Δ + ‖Δ‖²/(2·step)`` is
        halved and retried (each retry is one more pass), so a too-large step
        cannot diverge.  An accepted step is kept for the next iteration.
    ``"barzilai_borwein"``
        "Dynamic" gradient descent: the first iteration tries ``step_size``,
        every later one the Barzilai–Borwein step ``s·s / s·y`` (BB1, clamped
        to ``[1e-10, 1e10]``) of the previous move, ``s = x⁺ − x`` and ``y =
        ∇f(x⁺) − ∇f(x)`` with ``f`` the smooth part (so with L1 it is the
        proximal BB method).  The same sufficient-decrease test and halving
        protect it, so it cannot diverge either; on ill-conditioned problems
        it needs far fewer passes than ``backtracking``.
    ``"schedule"``
        No line search, one pass per iteration: the step of iteration ``t``
        (0-based) is ``scheduled_step(step_size, schedule, t, decay)``
        (:func:`sparkml_aiaas.core.first_order.scheduled_step`; ``schedule``
        one of ``constant``, ``inverse_time``, ``step_decay``).  The objective
        may increase; a non-finite one raises ``ValueError``.

    Every rule's state is a :class:`GDState`, saved exactly by ``checkpoint``
    (checkpoints of one rule are never resumed by another).
    """
    if step_rule not in STEP_RULES:
        raise ValueError(f"unknown step rule {step_rule!r}; expected one of {list(STEP_RULES)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown step schedule {schedule!r}; expected one of {list(SCHEDULES)}")
    # The backtracking name stays "gd": checkpoints written before step rules existed resume.
    method = "gd" if step_rule == "backtracking" else f"gd-{step_rule}"
    return _iterate_until_converged(
        method, GDState,
        lambda: gd_start(fun, x0, step_size, penalty),
        lambda state: gd_iterate(fun, state, penalty, step_rule=step_rule, base_step=step_size,
                                 schedule=schedule, decay=decay),
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint, monitor=monitor,
    )


def _iterate_until_converged(method: str, state_class, start, iterate, *, max_iter: int,
                             tol: float, callback: Optional[IterationCallback],
                             checkpoint: Optional[FileCheckpoint] = None,
                             monitor: Optional[EarlyStopping] = None) -> OptimizeResult:
    """The shared outer loop of the stateful solvers (gd, L-BFGS/OWL-QN, Newton).

    Stops when the relative change of the total objective falls below ``tol``,
    after ``max_iter`` iterations, when a line search finds no decrease
    (which, at the optimum's rounding floor, also means converged), or when
    the early-stopping ``monitor`` (evaluated at the start and after every
    iteration) says so.  With a ``checkpoint``, a saved state of the same
    method is resumed, the state is saved every ``checkpoint.interval``
    iterations — with the monitor's state, when there is one, so that a
    resumed run has the same validation history and best iteration — and the
    file is removed once the run ends.  The result's ``x`` is the last
    iterate; the monitor holds the best one.
    """
    saved = checkpoint.load() if checkpoint is not None else None
    if (saved is not None and str(saved.get("method", "")) == method
            and (monitor is None) == (not EarlyStopping.in_checkpoint(saved))):
        state = state_class.from_arrays(saved)
        history = [float(v) for v in saved["history"]]
        if monitor is not None:
            monitor.restore(saved)
    else:
        state = start()
        history = [float(state.total)]
        if monitor is not None:
            monitor.start(state.x)
    converged, message = False, "maximum number of iterations reached"
    while state.iteration < max_iter:
        new = iterate(state)
        if new.step_failures > state.step_failures:
            state = new
            converged = True
            message = "no further decrease found along the search direction"
            break
        change = relative_change(state.total, new.total)
        state = new
        history.append(float(state.total))
        if callback is not None:
            callback(int(state.iteration), float(state.total))
        stop_early = monitor is not None and monitor.update(int(state.iteration), state.x)
        if change < tol:
            converged, message = True, f"relative objective change {change:.3g} < tol {tol:g}"
            break
        if stop_early:
            message = monitor.message
            break
        if checkpoint is not None and checkpoint.due(int(state.iteration)):
            checkpoint.save({**state.to_arrays(), "history": np.asarray(history),
                             "method": np.asarray(method),
                             **(monitor.to_arrays() if monitor is not None else {})})
    if checkpoint is not None:
        checkpoint.clear()
    return OptimizeResult(np.asarray(state.x), float(state.total), int(state.iteration),
                          int(state.n_evals), converged, message, history)


def lbfgs(
    fun: Objective,
    x0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    memory: int = 10,
    l1: Optional[np.ndarray] = None,
    callback: Optional[IterationCallback] = None,
    checkpoint: Optional[FileCheckpoint] = None,
    monitor: Optional[EarlyStopping] = None,
) -> OptimizeResult:
    """Limited-memory BFGS (strong-Wolfe line search); OWL-QN when ``l1`` has positive weights.

    Our own implementation (:mod:`sparkml_aiaas.core.lbfgs`), whose whole state
    saves and restores exactly, unlike scipy's; tested against scipy.
    """
    from sparkml_aiaas.core.lbfgs import LBFGSState, lbfgs_iterate, lbfgs_start

    return _iterate_until_converged(
        "lbfgs", LBFGSState,
        lambda: lbfgs_start(fun, x0, l1=l1),
        lambda state: lbfgs_iterate(fun, state, memory=memory, l1=l1),
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint, monitor=monitor,
    )


def newton(
    fun_hess: HessianObjective,
    x0: np.ndarray,
    *,
    fun: Optional[Objective] = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    callback: Optional[IterationCallback] = None,
    checkpoint: Optional[FileCheckpoint] = None,
    monitor: Optional[EarlyStopping] = None,
) -> OptimizeResult:
    """Damped Newton: the Hessian comes from the same pass as the gradient (few features)."""
    from sparkml_aiaas.core.newton import NewtonState, newton_iterate, newton_start

    return _iterate_until_converged(
        "newton", NewtonState,
        lambda: newton_start(fun_hess, x0),
        lambda state: newton_iterate(fun_hess, state, fun=fun),
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint, monitor=monitor,
    )


def minimize_objective(
    name: str,
    fun: Objective,
    x0: np.ndarray,
    *,
    penalty: ElasticNet,
    max_iter: int,
    tol: float,
    step_size: float = 1.0,
    fun_hess: Optional[HessianObjective] = None,
    callback: Optional[IterationCallback] = None,
    checkpoint: Optional[FileCheckpoint] = None,
    step_rule: str = "backtracking",
    step_schedule: str = "constant",
    step_decay: float = 0.0,
    monitor: Optional[EarlyStopping] = None,
) -> OptimizeResult:
    """Dispatch on the optimizer name shared by every model of the package.

    ``fun`` (and ``fun_hess`` for ``newton``) evaluate the smooth part: mean
    loss plus the L2 penalty.  The L1 part of ``penalty`` is handled by the
    optimizer: proximal steps (``gd``) or OWL-QN (``lbfgs``).  Only ``gd``
    reads ``step_size``, ``step_rule``, ``step_schedule`` and ``step_decay``
    (see :func:`gradient_descent`); every optimizer accepts the
    early-stopping ``monitor``.
    """
    l1 = penalty.l1 if penalty.has_l1 else None
    if name == "gd":
        return gradient_descent(fun, x0, step_size=step_size, max_iter=max_iter, tol=tol,
                                penalty=penalty, callback=callback, checkpoint=checkpoint,
                                step_rule=step_rule, schedule=step_schedule, decay=step_decay,
                                monitor=monitor)
    if name == "lbfgs":
        return lbfgs(fun, x0, max_iter=max_iter, tol=tol, l1=l1, callback=callback,
                     checkpoint=checkpoint, monitor=monitor)
    if name == "newton":
        if l1 is not None:
            raise ValueError(
                "optimizer 'newton' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); use optimizer='lbfgs' (OWL-QN) or 'gd' (proximal)"
            )
        if fun_hess is None:
            raise ValueError("optimizer 'newton' needs a Hessian pass (fun_hess)")
        return newton(fun_hess, x0, fun=fun, max_iter=max_iter, tol=tol, callback=callback,
                      checkpoint=checkpoint, monitor=monitor)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
