"""Limited-memory BFGS with a strong-Wolfe line search, and OWL-QN for L1 penalties.

Written for objectives whose every evaluation is one distributed pass over the
data: the solver runs one iteration at a time on the driver
(:func:`lbfgs_iterate`), keeps *everything* the next iteration needs in an
:class:`LBFGSState`, and that state round-trips exactly through
``np.savez``/``np.load`` (:meth:`LBFGSState.to_arrays` /
:meth:`LBFGSState.from_arrays`).  A job killed after iteration ``k`` and
resumed from its checkpoint therefore ends with bit-identical coefficients.

Nothing here is random and nothing depends on wall-clock time, so two runs
from the same state make the same evaluations in the same order.

Objective
---------
``fun(x) -> (f, g)`` returns the value and gradient of the *smooth* part
(mean loss plus any L2 term).  An L1 term ``Σ l1ᵢ |xᵢ|`` with per-variable
weights ``l1ᵢ >= 0`` (``0`` for the intercept) is never differentiated: with
it, the iteration is OWL-QN (Andrew & Gao, 2007, "Scalable training of
L1-regularized log-linear models").

Convergence
-----------
Judged by the caller (e.g. relative change of ``state.total``).  An iteration
that cannot decrease the objective returns the state unchanged except for
``step_failures`` (incremented) and ``n_evals``; callers stop on that.  At a
point whose (pseudo-)gradient is exactly zero no evaluation is made and only
``iteration`` is incremented, so a relative-change test sees zero change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple

import numpy as np

from sparkml_aiaas.core.solver_state import ArrayState

Objective = Callable[[np.ndarray], Tuple[float, np.ndarray]]

#: Sufficient-decrease (Armijo) constant.
C1 = 1e-4
#: Curvature constant of the strong Wolfe conditions.
C2 = 0.9
#: Evaluations one line search may spend before giving up (scipy's L-BFGS-B uses 20).
MAX_LINE_SEARCH_EVALS = 20
#: A pair (s, y) is kept only if ``sᵀy > CURVATURE_EPS·‖s‖‖y‖``.
CURVATURE_EPS = 1e-10
#: Relative rounding noise tolerated in a sufficient-decrease test (see :func:`_noise`).
NOISE = 10 * np.finfo(float).eps


# --------------------------------------------------------------------------- state
@dataclass(eq=False)
class LBFGSState(ArrayState):
    """Everything an L-BFGS/OWL-QN iteration reads; exactly restorable.

    Attributes
    ----------
    x : ndarray, shape (n,)
        Current variables.
    f : float
        Smooth objective at ``x``.
    g : ndarray, shape (n,)
        Smooth gradient at ``x``.
    total : float
        ``f + Σ l1ᵢ |xᵢ|`` (equals ``f`` without L1).
    s, y : ndarray, shape (m_used, n)
        Last ``m_used`` steps ``x_{k+1} − x_k`` and smooth-gradient changes,
        oldest first.
    iteration : int
        Iterations done (failed ones excluded).
    n_evals : int
        Objective evaluations (data passes) so far, the first one included.
    step_failures : int
        Iterations whose line search found no decrease.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    total: float
    s: np.ndarray
    y: np.ndarray
    iteration: int = 0
    n_evals: int = 0
    step_failures: int = 0

    _FLOATS = ("f", "total")
    _INTS = ("iteration", "n_evals", "step_failures")
    _NDIM = {"x": 1, "g": 1, "s": 2, "y": 2}

    def _check_shapes(self) -> None:
        n = self.x.shape[0]
        if self.g.shape != (n,):
            raise ValueError(f"LBFGSState.g has shape {self.g.shape}, expected ({n},)")
        if self.s.shape != self.y.shape or self.s.shape[1:] != (n,):
            raise ValueError(f"LBFGSState.s and .y must both have shape (m, {n}), "
                             f"got {self.s.shape} and {self.y.shape}")


# --------------------------------------------------------------------------- helpers
def _evaluate(fun: Objective, x: np.ndarray) -> Tuple[float, np.ndarray]:
    """One pass: ``(f, g)`` as a Python float and a private float64 copy."""
    f, g = fun(x)
    g = np.array(g, dtype=np.float64)
    if g.shape != x.shape:
        raise ValueError(f"the objective returned a gradient of shape {g.shape} "
                         f"for variables of shape {x.shape}")
    return float(f), g


def _finite(f: float, g: np.ndarray) -> bool:
    return bool(np.isfinite(f) and np.all(np.isfinite(g)))


def _noise(f0: float) -> float:
    """Slack for rounding in ``f``: near the optimum, a step that changes ``f`` by
    a few ulps either way is not a failure (it is convergence)."""
    return NOISE * abs(f0)


def l1_weights(l1, n: int) -> Optional[np.ndarray]:
    """Validate per-variable L1 weights; ``None`` when there is no L1 term.

    Parameters
    ----------
    l1 : None, float or array_like of shape (n,)
        Non-negative weights (a scalar applies to every variable).
    n : int
        Number of variables.

    Returns
    -------
    ndarray of shape (n,) or None
        ``None`` if ``l1`` is ``None`` or all zeros, so that the smooth
        L-BFGS path (with its Wolfe line search) is used.
    """
    if l1 is None:
        return None
    weights = np.broadcast_to(np.asarray(l1, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("L1 weights must be finite and >= 0")
    return weights if np.any(weights > 0) else None


def l1_value(l1: Optional[np.ndarray], x: np.ndarray) -> float:
    """``Σ l1ᵢ |xᵢ|`` (0 when ``l1`` is ``None``)."""
    return 0.0 if l1 is None else float(np.dot(l1, np.abs(x)))


def pseudo_gradient(x: np.ndarray, g: np.ndarray, l1: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-norm subgradient of ``f + Σ l1ᵢ|xᵢ|`` (Andrew & Gao's pseudo-gradient).

    Away from zero it is ``g ± l1``; at ``xᵢ = 0`` it is the one-sided
    derivative that allows a decrease, or 0 when neither side does (then
    ``xᵢ = 0`` is optimal for that coordinate).  ``‖pseudo_gradient‖ = 0``
    characterizes a minimizer of the convex composite objective.
    """
    if l1 is None:
        return g.copy()
    right = g + l1  # derivative when moving up from 0
    left = g - l1  # derivative when moving down from 0
    at_zero = np.where(right < 0, right, np.where(left > 0, left, 0.0))
    return np.where(x > 0, right, np.where(x < 0, left, at_zero))


def two_loop(grad: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Quasi-Newton direction ``−H·grad`` by the L-BFGS two-loop recursion.

    Parameters
    ----------
    grad : ndarray, shape (n,)
    s, y : ndarray, shape (m, n)
        Curvature pairs, oldest first; every ``sᵢᵀyᵢ > 0``.

    Returns
    -------
    ndarray, shape (n,)
        ``−grad`` when ``m == 0``; otherwise ``−H grad`` with the initial
        Hessian approximation ``γI``, ``γ = sᵀy / yᵀy`` of the newest pair.
    """
    q = grad.copy()
    m = s.shape[0]
    if m == 0:
        return -q
    rho = np.array([1.0 / np.dot(y[i], s[i]) for i in range(m)])
    alpha = np.empty(m)
    for i in range(m - 1, -1, -1):
        alpha[i] = rho[i] * np.dot(s[i], q)
        q -= alpha[i] * y[i]
    gamma = np.dot(s[-1], y[-1]) / np.dot(y[-1], y[-1])
    r = gamma * q
    for i in range(m):
        beta = rho[i] * np.dot(y[i], r)
        r += (alpha[i] - beta) * s[i]
    return -r


def _push_pair(s: np.ndarray, y: np.ndarray, s_new: np.ndarray, y_new: np.ndarray,
               memory: int) -> Tuple[np.ndarray, np.ndarray]:
    """Append a pair, dropping the oldest beyond ``memory``; skip it if its curvature
    ``sᵀy`` is not safely positive (the update would lose positive definiteness)."""
    sy = float(np.dot(s_new, y_new))
    if not sy > CURVATURE_EPS * np.linalg.norm(s_new) * np.linalg.norm(y_new):
        return s, y
    first = max(s.shape[0] - (memory - 1), 0)
    return (np.vstack([s[first:], s_new[None, :]]),
            np.vstack([y[first:], y_new[None, :]]))


def _first_step(grad: np.ndarray) -> float:
    """Initial step along an unscaled ``−grad``: at most a unit move of ``x``."""
    return min(1.0, 1.0 / float(np.linalg.norm(grad)))


# --------------------------------------------------------------------------- interpolation
def _cubic_min(a0: float, f0: float, d0: float, a1: float, f1: float, d1: float
               ) -> Optional[float]:
    """Minimizer of the cubic matching ``f`` and ``f'`` at ``a0`` and ``a1``
    (Nocedal & Wright eq. 3.59), or ``None`` if it has none."""
    if a0 == a1:
        return None
    t1 = d0 + d1 - 3.0 * (f0 - f1) / (a0 - a1)
    disc = t1 * t1 - d0 * d1
    if not np.isfinite(disc) or disc < 0:
        return None
    t2 = np.copysign(np.sqrt(disc), a1 - a0)
    denom = d1 - d0 + 2.0 * t2
    if denom == 0:
        return None
    a = a1 - (a1 - a0) * (d1 + t2 - t1) / denom
    return float(a) if np.isfinite(a) else None


def _quadratic_min(a0: float, f0: float, d0: float, a1: float, f1: float) -> Optional[float]:
    """Minimizer of the parabola matching ``f(a0)``, ``f'(a0)`` and ``f(a1)``, or ``None``."""
    w = a1 - a0
    curvature = f1 - f0 - d0 * w
    if not np.isfinite(curvature) or curvature <= 0:
        return None
    a = a0 - d0 * w * w / (2.0 * curvature)
    return float(a) if np.isfinite(a) else None


def _secant(a0: float, d0: float, a1: float, d1: float) -> Optional[float]:
    """Zero of the line through ``(a0, f'(a0))`` and ``(a1, f'(a1))``, or ``None``."""
    if d0 == d1 or not np.isfinite(d0) or not np.isfinite(d1):
        return None
    return float(a0 - d0 * (a1 - a0) / (d1 - d0))


def _clamp(a: Optional[float], lo: float, hi: float, default: float) -> float:
    if a is None:
        return default
    return min(max(a, lo), hi)


# --------------------------------------------------------------------------- line searches
@dataclass
class _Point:
    """One evaluated trial point of a line search."""

    step: float
    x: np.ndarray
    f: float
    g: np.ndarray
    dphi: float  # directional derivative g·d (smooth search only)
    total: float


class _WolfeSearch:
    """Strong-Wolfe line search: bracketing then zoom (Nocedal & Wright Alg. 3.5/3.6).

    Trial steps come from safeguarded cubic interpolation (quadratic or
    bisection when the cubic is unusable).  A trial with a non-finite value
    or gradient counts as "too long".  If the evaluation budget runs out, the
    best trial satisfying sufficient decrease is accepted (the curvature
    pair is then checked by the caller); only when there is none does the
    search fail.
    """

    def __init__(self, fun: Objective, x: np.ndarray, f0: float, g0: np.ndarray,
                 d: np.ndarray, max_evals: int = MAX_LINE_SEARCH_EVALS):
        self.fun, self.x, self.d = fun, x, d
        self.f0 = f0
        self.dphi0 = float(np.dot(g0, d))
        self.slack = _noise(f0)
        self.max_evals = max_evals
        self.evals = 0
        self.origin = _Point(0.0, x, f0, g0, self.dphi0, f0)

    def _trial(self, step: float) -> _Point:
        self.evals += 1
        x = self.x + step * self.d
        f, g = _evaluate(self.fun, x)
        dphi = float(np.dot(g, self.d)) if _finite(f, g) else np.nan
        return _Point(step, x, f, g, dphi, f)

    def _sufficient(self, p: _Point) -> bool:
        return (np.isfinite(p.dphi)
                and p.f <= self.f0 + C1 * p.step * self.dphi0 + self.slack)

    def _curvature(self, p: _Point) -> bool:
        return abs(p.dphi) <= -C2 * self.dphi0

    def run(self, step: float) -> Optional[_Point]:
        """Search from ``step``; the accepted point, or ``None`` on failure."""
        prev = self.origin
        while self.evals < self.max_evals:
            cur = self._trial(step)
            if not self._sufficient(cur) or (prev.step > 0 and cur.f >= prev.f):
                return self._zoom(prev, cur)
            if self._curvature(cur):
                return cur
            if cur.dphi >= 0:
                return self._zoom(cur, prev)
            step = self._extrapolate(prev, cur)
            prev = cur
        return prev if prev.step > 0 else None

    @staticmethod
    def _extrapolate(prev: _Point, cur: _Point) -> float:
        """Next, longer trial: cubic step kept within [1.1, 4] widths beyond ``cur``
        (the range More–Thuente use), so the bracket grows geometrically."""
        width = cur.step - prev.step
        lo, hi = cur.step + 1.1 * width, cur.step + 4.0 * width
        guess = _cubic_min(prev.step, prev.f, prev.dphi, cur.step, cur.f, cur.dphi)
        if guess is not None and guess <= cur.step:
            guess = None  # the cubic's minimizer lies behind us: just extrapolate
        return _clamp(guess, lo, hi, hi)

    def _interpolate(self, lo: _Point, hi: _Point) -> float:
        """Trial inside the bracket, at least 10 % of its width from either end."""
        a, b = sorted((lo.step, hi.step))
        margin = 0.1 * (b - a)
        mid = 0.5 * (lo.step + hi.step)
        if not np.isfinite(hi.dphi):
            return mid  # no usable value at hi (overflow): bisect
        if abs(hi.f - lo.f) <= self.slack:
            # Values differ by rounding only (near the optimum): they carry no
            # information, the derivatives still do.  Secant on φ' (Hager–Zhang).
            guess = _secant(lo.step, lo.dphi, hi.step, hi.dphi)
        else:
            guess = _cubic_min(lo.step, lo.f, lo.dphi, hi.step, hi.f, hi.dphi)
        if guess is None or not a + margin <= guess <= b - margin:
            guess = _quadratic_min(lo.step, lo.f, lo.dphi, hi.step, hi.f)
        if guess is None or not a + margin <= guess <= b - margin:
            guess = mid
        return guess

    def _zoom(self, lo: _Point, hi: _Point) -> Optional[_Point]:
        """``lo`` satisfies sufficient decrease (or is the origin) and has the lowest
        value seen; the bracket [lo, hi] contains strong-Wolfe steps."""
        while self.evals < self.max_evals:
            if abs(hi.step - lo.step) <= 1e-14 * max(lo.step, hi.step):
                break  # bracket collapsed to rounding
            p = self._trial(self._interpolate(lo, hi))
            if self._sufficient(p) and self._curvature(p):
                # A strong-Wolfe point, even if rounding puts its value above
                # lo's: accept it rather than shrink the bracket around noise.
                return p
            if not self._sufficient(p) or p.f >= lo.f:
                hi = p
                continue
            if p.dphi * (hi.step - lo.step) >= 0:
                hi = lo
            lo = p
        return lo if lo.step > 0 else None


def _owlqn_search(fun: Objective, x: np.ndarray, total0: float, pg: np.ndarray,
                  d: np.ndarray, l1: np.ndarray, step: float,
                  max_evals: int = MAX_LINE_SEARCH_EVALS) -> Tuple[Optional[_Point], int]:
    """Backtracking along ``d`` with projection onto the orthant of ``x``.

    Penalized coordinates may not change sign within one step (they stop at
    zero instead), which keeps the objective smooth along the path; the
    orthant of a zero coordinate is the one ``−pg`` points into.
    Unpenalized coordinates (``l1ᵢ = 0``) move freely.  Sufficient decrease
    is Armijo on the total objective with the pseudo-gradient:
    ``F(x⁺) ≤ F(x) + c1·pgᵀ(x⁺ − x)``.  Backtracking uses the minimizer of a
    parabola, kept within [0.1, 0.5] of the previous step.

    Returns
    -------
    (point or None, evaluations spent)
    """
    orthant = np.where(x != 0, np.sign(x), -np.sign(pg))
    penalized = l1 > 0
    slack = _noise(total0)
    slope = float(np.dot(pg, d))
    for k in range(max_evals):
        trial = x + step * d
        trial = np.where(penalized & (np.sign(trial) != orthant), 0.0, trial)
        f, g = _evaluate(fun, trial)
        total = f + l1_value(l1, trial)
        if (_finite(total, g)
                and total <= total0 + C1 * float(np.dot(pg, trial - x)) + slack):
            return _Point(step, trial, f, g, np.nan, total), k + 1
        guess = _quadratic_min(0.0, total0, slope, step, total) if np.isfinite(total) else None
        step = _clamp(guess, 0.1 * step, 0.5 * step, 0.5 * step)
    return None, max_evals


# --------------------------------------------------------------------------- directions
def _smooth_direction(g: np.ndarray, s: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, float]:
    """Direction and initial step for the smooth (Wolfe) iteration."""
    if s.shape[0]:
        d = two_loop(g, s, y)
        slope = float(np.dot(g, d))
        if np.isfinite(slope) and slope < 0:
            return d, 1.0
    # No curvature yet, or rounding made the quasi-Newton direction useless.
    return -g, _first_step(g)


def _owlqn_direction(pg: np.ndarray, s: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, float]:
    """Quasi-Newton direction on the pseudo-gradient, constrained to agree in sign
    with ``−pg`` coordinate-wise (so it is a descent direction of the total)."""
    if s.shape[0]:
        d = two_loop(pg, s, y)
        d = np.where(d * pg < 0, d, 0.0)
        if np.any(d):
            return d, 1.0
    return -pg, _first_step(pg)


# --------------------------------------------------------------------------- public API
def lbfgs_start(fun: Objective, x0, l1=None) -> LBFGSState:
    """Evaluate the starting point (one pass) and return the initial state.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, g)`` of the smooth part of the objective.
    x0 : array_like, shape (n,)
    l1 : None, float or array_like of shape (n,), optional
        Per-variable L1 weights, used for ``total``.  Pass the same ``l1`` to
        every :func:`lbfgs_iterate`.

    Raises
    ------
    ValueError
        If the objective or its gradient is not finite at ``x0``.
    """
    x = np.array(x0, dtype=np.float64).ravel()
    weights = l1_weights(l1, x.size)
    f, g = _evaluate(fun, x)
    if not _finite(f, g):
        raise ValueError("the objective or its gradient is not finite at the starting point")
    empty = np.zeros((0, x.size))
    return LBFGSState(x=x, f=f, g=g, total=f + l1_value(weights, x), s=empty, y=empty.copy(),
                      iteration=0, n_evals=1, step_failures=0)


def lbfgs_iterate(fun: Objective, state: LBFGSState, *, memory: int = 10,
                  l1=None) -> LBFGSState:
    """One L-BFGS iteration, or one OWL-QN iteration when ``l1`` has a positive weight.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, g)`` of the smooth part; each call is one pass.
    state : LBFGSState
        Not modified.
    memory : int, default 10
        Curvature pairs kept.
    l1 : None, float or array_like of shape (n,), optional
        Per-variable L1 weights ``>= 0`` (0 for unpenalized variables).

    Returns
    -------
    LBFGSState
        The next state.  If no decrease was found, ``state`` with
        ``step_failures`` incremented (and ``n_evals`` counting the passes
        spent trying).  If the (pseudo-)gradient is exactly zero, ``state``
        with ``iteration`` incremented and no pass made.

    Notes
    -----
    Usually one pass per iteration: the unit quasi-Newton step is accepted
    near the solution.  When a line search fails with a non-empty memory, the
    memory is dropped and the iteration retried from steepest descent (as
    scipy's L-BFGS-B does) before a failure is reported.
    """
    if memory < 1:
        raise ValueError(f"memory must be >= 1, got {memory}")
    weights = l1_weights(l1, state.x.size)
    grad = pseudo_gradient(state.x, state.g, weights)
    if not np.any(grad):
        return replace(state, iteration=state.iteration + 1)
    # Keep the newest pairs only: ``memory`` may be lower than when they were stored.
    first = max(state.s.shape[0] - memory, 0)
    s, y = state.s[first:], state.y[first:]

    point, evals = _search(fun, state, weights, grad, s, y)
    if point is None and s.shape[0]:
        # A stale memory can give a poor direction: restart from steepest descent.
        s, y = s[:0], y[:0]
        point, more = _search(fun, state, weights, grad, s, y)
        evals += more
    if point is None:
        return replace(state, n_evals=state.n_evals + evals,
                       step_failures=state.step_failures + 1)

    s, y = _push_pair(s, y, point.x - state.x, point.g - state.g, memory)
    return LBFGSState(x=point.x, f=point.f, g=point.g, total=point.total, s=s, y=y,
                      iteration=state.iteration + 1, n_evals=state.n_evals + evals,
                      step_failures=state.step_failures)


def _search(fun: Objective, state: LBFGSState, l1: Optional[np.ndarray], grad: np.ndarray,
            s: np.ndarray, y: np.ndarray) -> Tuple[Optional[_Point], int]:
    """Direction and line search of one iteration: ``(point or None, evaluations)``."""
    if l1 is None:
        d, step = _smooth_direction(grad, s, y)
        search = _WolfeSearch(fun, state.x, state.f, state.g, d)
        return search.run(step), search.evals
    d, step = _owlqn_direction(grad, s, y)
    # Recomputed rather than read from state.total, so a caller changing l1
    # between iterations still gets a consistent sufficient-decrease test.
    total0 = state.f + l1_value(l1, state.x)
    return _owlqn_search(fun, state.x, total0, grad, d, l1, step)
