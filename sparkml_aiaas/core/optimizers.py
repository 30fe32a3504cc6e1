"""Driver-side optimizers over an objective evaluated by full passes over the data.

Each optimizer takes ``fun(theta) -> (value, gradient)`` for the smooth part
of the objective (mean data loss plus the L2 penalty); each call is one pass
over the data.  An L1 penalty, when present, is handled by the optimizer
itself (proximal steps), never differentiated.

Names are shared across the package: ``"gd"`` (full-batch proximal gradient
descent) and ``"lbfgs"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.regularizers import ElasticNet

Objective = Callable[[np.ndarray], Tuple[float, np.ndarray]]
#: Called after each iteration with (iteration, objective value).
IterationCallback = Callable[[int, float], None]

OPTIMIZERS = ("gd", "lbfgs")


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


def lbfgs(
    fun: Objective,
    x0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    memory: int = 10,
    callback: Optional[IterationCallback] = None,
) -> OptimizeResult:
    """Limited-memory BFGS on the smooth objective (scipy's L-BFGS-B kernel).

    Stops when the relative objective change falls below ``tol`` or after
    ``max_iter`` iterations.  L1 penalties need OWL-QN, which this optimizer
    does not do: use ``gd`` (proximal) for them.
    """
    from scipy.optimize import minimize

    objective = _CountingObjective(fun)
    x0 = np.array(x0, dtype=float)
    f0, g0 = objective(x0)
    history = [f0]
    if max_iter == 0:
        # scipy would still take one iteration with maxiter=0.
        return OptimizeResult(x0, f0, 0, objective.calls, False,
                              "maximum number of iterations reached", history)
    # scipy evaluates x0 first: answer that from the pass just made.
    first = [(x0.copy(), f0, g0)]

    def evaluate(theta: np.ndarray) -> Tuple[float, np.ndarray]:
        if first:
            x_first, f_first, g_first = first.pop()
            if np.array_equal(theta, x_first):
                return f_first, g_first.copy()
        return objective(theta)

    def on_iteration(intermediate_result):
        history.append(float(intermediate_result.fun))
        if callback is not None:
            callback(len(history) - 1, float(intermediate_result.fun))

    result = minimize(
        evaluate,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=on_iteration,
        # gtol is kept tiny so that ``tol`` (scipy's ftol: the same relative
        # objective change as every other optimizer here) decides.
        options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-12, "maxcor": memory},
    )
    message = str(result.message)
    converged = bool(result.success)
    return OptimizeResult(
        np.asarray(result.x), float(result.fun), int(result.nit), objective.calls, converged,
        message, history,
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
    callback: Optional[IterationCallback] = None,
) -> OptimizeResult:
    """Dispatch on the optimizer name shared by every model of the package."""
    if name == "gd":
        return gradient_descent(fun, x0, step_size=step_size, max_iter=max_iter, tol=tol,
                                penalty=penalty, callback=callback)
    if name == "lbfgs":
        if penalty.has_l1:
            raise ValueError(
                "optimizer 'lbfgs' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); use optimizer='gd', which applies L1 through a proximal step"
            )
        return lbfgs(fun, x0, max_iter=max_iter, tol=tol, callback=callback)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
