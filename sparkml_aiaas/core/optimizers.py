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

from sparkml_aiaas.core.regularizers import ElasticNet

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


class _CountingObjective:
    def __init__(self, fun: Objective):
        self.fun = fun
        self.calls = 0

    def __call__(self, theta: np.ndarray) -> Tuple[float, np.ndarray]:
        self.calls += 1
        value, grad = self.fun(theta)
        return float(value), np.asarray(grad, dtype=float)


def gradient_descent(
    fun: Objective,
    x0: np.ndarray,
    *,
    step_size: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    penalty: Optional[ElasticNet] = None,
    callback: Optional[IterationCallback] = None,
) -> OptimizeResult:
    """Full-batch proximal gradient descent.

    ``step_size`` is the first step tried; a step that fails the sufficient-
    decrease test ``f(x⁺) ≤ f(x) + g·Δ + ‖Δ‖²/(2·step)`` is halved and retried
    (each retry is one more pass), so a too-large step cannot diverge.  An
    accepted step is kept for the next iteration.
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    objective = _CountingObjective(fun)
    l1 = penalty.l1_value if penalty is not None and penalty.has_l1 else (lambda _: 0.0)
    prox = penalty.prox if penalty is not None else (lambda t, _s: t)

    x = np.array(x0, dtype=float)
    f, g = objective(x)
    total = f + l1(x)
    history = [total]
    step = float(step_size)
    converged, message = False, "maximum number of iterations reached"
    it = 0
    for it in range(1, max_iter + 1):
        while True:
            x_new = prox(x - step * g, step)
            delta = x_new - x
            f_new, g_new = objective(x_new)
            bound = f + float(np.dot(g, delta)) + float(np.dot(delta, delta)) / (2.0 * step)
            if f_new <= bound + 1e-12 * max(1.0, abs(f)):
                break
            step *= 0.5
            if step < 1e-20:
                return OptimizeResult(x, total, it - 1, objective.calls, False,
                                      "step size underflow: no decrease found", history)
        total_new = f_new + l1(x_new)
        change = relative_change(total, total_new)
        x, f, g, total = x_new, f_new, g_new, total_new
        history.append(total)
        if callback is not None:
            callback(it, total)
        if change < tol:
            converged, message = True, f"relative objective change {change:.3g} < tol {tol:g}"
            break
    return OptimizeResult(x, total, it, objective.calls, converged, message, history)


def _iterate_until_converged(start, iterate, *, max_iter: int, tol: float,
                             callback: Optional[IterationCallback]) -> OptimizeResult:
    """The shared outer loop of the stateful solvers (L-BFGS/OWL-QN, Newton).

    Stops when the relative change of the total objective falls below ``tol``,
    after ``max_iter`` iterations, or when a line search finds no decrease
    (which, at the optimum's rounding floor, also means converged).
    """
    state = start()
    history = [float(state.total)]
    converged, message = False, "maximum number of iterations reached"
    for _ in range(max_iter):
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
) -> OptimizeResult:
    """Limited-memory BFGS (strong-Wolfe line search); OWL-QN when ``l1`` has positive weights.

    Our own implementation (:mod:`sparkml_aiaas.core.lbfgs`), whose whole state
    saves and restores exactly, unlike scipy's; tested against scipy.
    """
    from sparkml_aiaas.core.lbfgs import lbfgs_iterate, lbfgs_start

    return _iterate_until_converged(
        lambda: lbfgs_start(fun, x0, l1=l1),
        lambda state: lbfgs_iterate(fun, state, memory=memory, l1=l1),
        max_iter=max_iter, tol=tol, callback=callback,
    )


def newton(
    fun_hess: HessianObjective,
    x0: np.ndarray,
    *,
    fun: Optional[Objective] = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    callback: Optional[IterationCallback] = None,
) -> OptimizeResult:
    """Damped Newton: the Hessian comes from the same pass as the gradient (few features)."""
    from sparkml_aiaas.core.newton import newton_iterate, newton_start

    return _iterate_until_converged(
        lambda: newton_start(fun_hess, x0),
        lambda state: newton_iterate(fun_hess, state, fun=fun),
        max_iter=max_iter, tol=tol, callback=callback,
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
) -> OptimizeResult:
    """Dispatch on the optimizer name shared by every model of the package.

    ``fun`` (and ``fun_hess`` for ``newton``) evaluate the smooth part: mean
    loss plus the L2 penalty.  The L1 part of ``penalty`` is handled by the
    optimizer: proximal steps (``gd``) or OWL-QN (``lbfgs``).
    """
    l1 = penalty.l1 if penalty.has_l1 else None
    if name == "gd":
        return gradient_descent(fun, x0, step_size=step_size, max_iter=max_iter, tol=tol,
                                penalty=penalty, callback=callback)
    if name == "lbfgs":
        return lbfgs(fun, x0, max_iter=max_iter, tol=tol, l1=l1, callback=callback)
    if name == "newton":
        if l1 is not None:
            raise ValueError(
                "optimizer 'newton' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); use optimizer='lbfgs' (OWL-QN) or 'gd' (proximal)"
            )
        if fun_hess is None:
            raise ValueError("optimizer 'newton' needs a Hessian pass (fun_hess)")
        return newton(fun_hess, x0, fun=fun, max_iter=max_iter, tol=tol, callback=callback)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
