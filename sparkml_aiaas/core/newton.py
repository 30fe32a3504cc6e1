"""Damped Newton method on a smooth objective, one exactly-restorable iteration at a time.

For models with few variables (a GLM with up to a few thousand features) the
dense Hessian is summed in the same data pass as the loss and the gradient,
and Newton converges quadratically: near the optimum the unit step is
accepted, so an iteration costs one pass and a handful of iterations suffice.

``fun_hess(x) -> (f, g, H)`` is that pass.  The Hessian at the current point
is part of :class:`NewtonState`, so the next iteration needs no extra pass and
a resumed job continues bit-identically.  ``fun(x) -> (f, g)``, when given,
is used for the backtracking trials after a rejected unit step (cheaper: no
Hessian); the next iteration then recomputes ``H`` at the accepted point.

No L1 penalty: ``|x|`` has no Hessian.  Use optimizer ``'lbfgs'`` (OWL-QN)
or ``'gd'`` (proximal gradient) for those.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from sparkml_aiaas.core.lbfgs import C1, MAX_LINE_SEARCH_EVALS, _noise, _quadratic_min
from sparkml_aiaas.core.solver_state import ArrayState

HessianObjective = Callable[[np.ndarray], Tuple[float, np.ndarray, np.ndarray]]
Objective = Callable[[np.ndarray], Tuple[float, np.ndarray]]

#: First ridge tried on a Hessian that does not factor, relative to its largest diagonal.
RIDGE_START = 1e-10
#: Ridge growth factor between attempts, and the number of attempts.
RIDGE_GROWTH, RIDGE_TRIES = 10.0, 30


@dataclass(eq=False)
class NewtonState(ArrayState):
    """Everything a Newton iteration reads; exactly restorable.

    Attributes
    ----------
    x : ndarray, shape (n,)
    f : float
        Objective at ``x``.
    g : ndarray, shape (n,)
        Gradient at ``x``.
    H : ndarray, shape (n, n), or (0, 0)
        Hessian at ``x`` from the same pass; ``(0, 0)`` when the accepted
        point came from the cheaper ``fun`` (the next iteration computes it).
    total : float
        Objective at ``x`` (equals ``f``: there is no L1 term).
    iteration, n_evals, step_failures : int
        As in :class:`~sparkml_aiaas.core.lbfgs.LBFGSState`.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    H: np.ndarray
    total: float
    iteration: int = 0
    n_evals: int = 0
    step_failures: int = 0

    _FLOATS = ("f", "total")
    _INTS = ("iteration", "n_evals", "step_failures")
    _NDIM = {"x": 1, "g": 1, "H": 2}

    def _check_shapes(self) -> None:
        n = self.x.shape[0]
        if self.g.shape != (n,):
            raise ValueError(f"NewtonState.g has shape {self.g.shape}, expected ({n},)")
        if self.H.shape not in ((n, n), (0, 0)):
            raise ValueError(f"NewtonState.H has shape {self.H.shape}, "
                             f"expected ({n}, {n}) or (0, 0)")


# --------------------------------------------------------------------------- helpers
def _reject_l1(l1) -> None:
    if l1 is not None and np.any(np.asarray(l1) != 0):
        raise ValueError(
            "the Newton optimizer does not support an L1 penalty (|x| has no Hessian); "
            "use optimizer 'lbfgs' (OWL-QN) or 'gd' (proximal gradient descent)"
        )


def _evaluate_hess(fun_hess: HessianObjective, x: np.ndarray
                   ) -> Tuple[float, np.ndarray, np.ndarray]:
    f, g, H = fun_hess(x)
    n = x.shape[0]
    g = np.array(g, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    if g.shape != (n,) or H.shape != (n, n):
        raise ValueError(f"fun_hess returned gradient {g.shape} and Hessian {H.shape} "
                         f"for {n} variables")
    return float(f), g, H


def _evaluate(fun: Objective, x: np.ndarray) -> Tuple[float, np.ndarray]:
    f, g = fun(x)
    g = np.array(g, dtype=np.float64)
    if g.shape != x.shape:
        raise ValueError(f"fun returned a gradient of shape {g.shape} for {x.shape[0]} variables")
    return float(f), g


def _acceptable(f: float, g: np.ndarray, H: Optional[np.ndarray], bound: float) -> bool:
    finite = np.isfinite(f) and np.all(np.isfinite(g)) and (H is None or np.all(np.isfinite(H)))
    return bool(finite and f <= bound)


def newton_direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Solve ``(H + τI) d = −g`` by Cholesky, with the smallest ridge ``τ`` that factors.

    ``τ = 0`` first; if ``H`` is not positive definite, ``τ`` starts at
    ``1e-10·max|diag H|`` and grows ×10 until the factorization succeeds.  A
    positive-definite system makes ``d`` a descent direction.

    Raises
    ------
    ValueError
        If ``H`` is not finite, or no ridge up to ``1e20·max|diag H|`` helps.
    """
    if not np.all(np.isfinite(H)):
        raise ValueError("the Hessian is not finite")
    H = 0.5 * (H + H.T)  # summed in floating point, H may be asymmetric by rounding
    scale = float(np.max(np.abs(np.diag(H)))) if H.size else 1.0
    scale = scale if scale > 0 else 1.0
    ridge = 0.0
    for _ in range(RIDGE_TRIES + 1):
        try:
            factor = cho_factor(H + ridge * np.eye(H.shape[0]), lower=True, check_finite=False)
            return -cho_solve(factor, g, check_finite=False)
        except LinAlgError:
            ridge = RIDGE_START * scale if ridge == 0.0 else ridge * RIDGE_GROWTH
    raise ValueError("the Hessian could not be made positive definite with a ridge")


# --------------------------------------------------------------------------- public API
def newton_start(fun_hess: HessianObjective, x0, *, l1=None) -> NewtonState:
    """Evaluate ``f``, ``g`` and ``H`` at ``x0`` (one pass) and return the initial state.

    Parameters
    ----------
    fun_hess : callable
        ``fun_hess(x) -> (f, g, H)`` of the smooth objective, one pass.
    x0 : array_like, shape (n,)
    l1 : optional
        Accepted only so a dispatcher can pass it: any positive weight raises.

    Raises
    ------
    ValueError
        With an L1 penalty, or if the objective is not finite at ``x0``.
    """
    _reject_l1(l1)
    x = np.array(x0, dtype=np.float64).ravel()
    f, g, H = _evaluate_hess(fun_hess, x)
    if not _acceptable(f, g, H, np.inf):
        raise ValueError("the objective, gradient or Hessian is not finite at the starting point")
    return NewtonState(x=x, f=f, g=g, H=H, total=f, iteration=0, n_evals=1, step_failures=0)


def newton_iterate(fun_hess: HessianObjective, state: NewtonState, *,
                   fun: Optional[Objective] = None, l1=None) -> NewtonState:
    """One damped Newton iteration: Cholesky step, backtracking Armijo from step 1.

    Parameters
    ----------
    fun_hess : callable
        ``fun_hess(x) -> (f, g, H)``, one pass.  Used for the unit-step trial
        (so an accepted unit step brings the next Hessian for free) and for
        every trial when ``fun`` is ``None``.
    state : NewtonState
        Not modified.
    fun : callable, optional
        ``fun(x) -> (f, g)``, a cheaper pass for the backtracking trials.
    l1 : optional
        Any positive weight raises ``ValueError``.

    Returns
    -------
    NewtonState
        The next state; on failure to decrease, ``state`` with
        ``step_failures`` incremented and ``n_evals`` counting the passes
        spent; at an exactly zero gradient, ``state`` with ``iteration``
        incremented and no pass made.
    """
    _reject_l1(l1)
    x, f, g, H = state.x, state.f, state.g, state.H
    evals = 0
    if H.size == 0 and x.size:
        # The accepted point came from ``fun``: this pass recomputes f, g and H there.
        f, g, H = _evaluate_hess(fun_hess, x)
        evals += 1
    if not np.any(g):
        return replace(state, iteration=state.iteration + 1, n_evals=state.n_evals + evals)

    d = newton_direction(g, H)
    slope = float(np.dot(g, d))
    slack = _noise(f)
    step = 1.0
    for k in range(MAX_LINE_SEARCH_EVALS):
        trial = x + step * d
        if k == 0 or fun is None:
            f_new, g_new, H_new = _evaluate_hess(fun_hess, trial)
        else:
            (f_new, g_new), H_new = _evaluate(fun, trial), np.zeros((0, 0))
        evals += 1
        if _acceptable(f_new, g_new, H_new, f + C1 * step * slope + slack):
            return NewtonState(x=trial, f=f_new, g=g_new, H=H_new, total=f_new,
                               iteration=state.iteration + 1, n_evals=state.n_evals + evals,
                               step_failures=state.step_failures)
        guess = _quadratic_min(0.0, f, slope, step, f_new) if np.isfinite(f_new) else None
        step = min(max(guess, 0.1 * step), 0.5 * step) if guess is not None else 0.5 * step
    return replace(state, n_evals=state.n_evals + evals, step_failures=state.step_failures + 1)
