"""Driver-side optimizers over an objective evaluated by full passes over the data.

Each optimizer takes ``fun(theta) -> (value, gradient)`` for the smooth part
of the objective (mean data loss plus the L2 penalty); each call is one pass
over the data.  An L1 penalty, when present, is handled by the optimizer
itself (proximal steps), never differentiated.

Names are shared across the package: ``"gd"`` (full-batch proximal gradient
descent), ``"lbfgs"`` (our own L-BFGS, OWL-QN with L1) and ``"newton"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.regularizers import ElasticNet
from sparkml_aiaas.core.solver_state import ArrayState

Objective = Callable[[np.ndarray], Tuple[float, np.ndarray]]
HessianObjective = Callable[[np.ndarray], Tuple[float, np.ndarray, np.ndarray]]
#: Called after each iteration with (iteration, objective value).
IterationCallback = Callable[[int, float], None]

#: Full-batch optimizers: every iteration makes one or more passes over all rows.
OPTIMIZERS = ("gd", "lbfgs", "newton")


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
    """Everything a proximal gradient-descent iteration reads; exactly restorable."""

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


def gd_iterate(fun: Objective, state: GDState,
               penalty: Optional[ElasticNet] = None) -> GDState:
    """One proximal step; the step is halved (one more pass each) until it decreases enough."""
    has_l1 = penalty is not None and penalty.has_l1
    x, f, g, step = state.x, state.f, state.g, state.step
    evals = 0
    while step >= 1e-20:
        x_new = penalty.prox(x - step * g, step) if penalty is not None else x - step * g
        delta = x_new - x
        f_new, g_new = fun(x_new)
        evals += 1
        bound = f + float(np.dot(g, delta)) + float(np.dot(delta, delta)) / (2.0 * step)
        if f_new <= bound + 1e-12 * max(1.0, abs(f)):
            total = float(f_new) + (penalty.l1_value(x_new) if has_l1 else 0.0)
            return GDState(x=x_new, f=float(f_new), g=np.asarray(g_new, float), total=total,
                           step=step, iteration=state.iteration + 1,
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
) -> OptimizeResult:
    """Full-batch proximal gradient descent.

    ``step_size`` is the first step tried; a step that fails the sufficient-
    decrease test ``f(x⁺) ≤ f(x) + g·Δ + ‖Δ‖²/(2·step)`` is halved and retried
    (each retry is one more pass), so a too-large step cannot diverge.  An
    accepted step is kept for the next iteration.
    """
    return _iterate_until_converged(
        "gd", GDState,
        lambda: gd_start(fun, x0, step_size, penalty),
        lambda state: gd_iterate(fun, state, penalty),
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint,
    )


def _iterate_until_converged(method: str, state_class, start, iterate, *, max_iter: int,
                             tol: float, callback: Optional[IterationCallback],
                             checkpoint: Optional[FileCheckpoint] = None) -> OptimizeResult:
    """The shared outer loop of the stateful solvers (gd, L-BFGS/OWL-QN, Newton).

    Stops when the relative change of the total objective falls below ``tol``,
    after ``max_iter`` iterations, or when a line search finds no decrease
    (which, at the optimum's rounding floor, also means converged).  With a
    ``checkpoint``, a saved state of the same method is resumed, the state is
    saved every ``checkpoint.interval`` iterations, and the file is removed
    once the run ends.
    """
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and str(saved.get("method", "")) == method:
        state = state_class.from_arrays(saved)
        history = [float(v) for v in saved["history"]]
    else:
        state = start()
        history = [float(state.total)]
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
        if change < tol:
            converged, message = True, f"relative objective change {change:.3g} < tol {tol:g}"
            break
        if checkpoint is not None and checkpoint.due(int(state.iteration)):
            checkpoint.save({**state.to_arrays(), "history": np.asarray(history),
                             "method": np.asarray(method)})
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
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint,
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
) -> OptimizeResult:
    """Damped Newton: the Hessian comes from the same pass as the gradient (few features)."""
    from sparkml_aiaas.core.newton import NewtonState, newton_iterate, newton_start

    return _iterate_until_converged(
        "newton", NewtonState,
        lambda: newton_start(fun_hess, x0),
        lambda state: newton_iterate(fun_hess, state, fun=fun),
        max_iter=max_iter, tol=tol, callback=callback, checkpoint=checkpoint,
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
) -> OptimizeResult:
    """Dispatch on the optimizer name shared by every model of the package.

    ``fun`` (and ``fun_hess`` for ``newton``) evaluate the smooth part: mean
    loss plus the L2 penalty.  The L1 part of ``penalty`` is handled by the
    optimizer: proximal steps (``gd``) or OWL-QN (``lbfgs``).
    """
    l1 = penalty.l1 if penalty.has_l1 else None
    if name == "gd":
        return gradient_descent(fun, x0, step_size=step_size, max_iter=max_iter, tol=tol,
                                penalty=penalty, callback=callback, checkpoint=checkpoint)
    if name == "lbfgs":
        return lbfgs(fun, x0, max_iter=max_iter, tol=tol, l1=l1, callback=callback,
                     checkpoint=checkpoint)
    if name == "newton":
        if l1 is not None:
            raise ValueError(
                "optimizer 'newton' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); use optimizer='lbfgs' (OWL-QN) or 'gd' (proximal)"
            )
        if fun_hess is None:
            raise ValueError("optimizer 'newton' needs a Hessian pass (fun_hess)")
        return newton(fun_hess, x0, fun=fun, max_iter=max_iter, tol=tol, callback=callback,
                      checkpoint=checkpoint)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
