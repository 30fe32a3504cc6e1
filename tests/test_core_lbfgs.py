"""Our L-BFGS / OWL-QN (core.lbfgs) and damped Newton (core.newton): pure numpy, no Spark.

References are scipy's L-BFGS-B (smooth problems; a split-variable bound-
constrained form for L1) and scikit-learn's saga (L1 logistic regression).
Checkpoint tests save a state mid-run through ``np.savez`` and require the
resumed run to end bit-identical to an uninterrupted one.
"""

import io
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize, rosen, rosen_der, rosen_hess

from sparkml_aiaas.core.lbfgs import (
    LBFGSState,
    l1_weights,
    lbfgs_iterate,
    lbfgs_start,
    pseudo_gradient,
    two_loop,
)
from sparkml_aiaas.core.newton import (
    NewtonState,
    newton_direction,
    newton_iterate,
    newton_start,
)


# --------------------------------------------------------------------------- problems
def quadratic(seed=0, d=20):
    """``½xᵀAx − bᵀx`` with eigenvalues of A in [1, 100]; returns (fun, fun_hess, x*)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    A = Q @ np.diag(np.logspace(0, 2, d)) @ Q.T
    b = rng.normal(size=d)

    def fun(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b

    def fun_hess(x):
        return (*fun(x), A)

    return fun, fun_hess, np.linalg.solve(A, b)


def logistic(seed=0, n=500, d=10, lam=1e-2):
    """Mean log-loss on standardized data + ``lam/2‖w‖²`` (intercept, last, unpenalized).

    Returns (fun, fun_hess, X, y) with X the standardized features (no ones column).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    true = rng.normal(size=d)
    true[::3] = 0.0  # features without signal, so that L1 zeroes some
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(X @ true + 0.5)))).astype(float)
    Xa = np.hstack([X, np.ones((n, 1))])
    l2 = np.r_[np.full(d, lam), 0.0]

    def fun(theta):
        m = Xa @ theta
        p = 1.0 / (1.0 + np.exp(-m))
        value = np.mean(np.logaddexp(0.0, m) - y * m) + 0.5 * np.sum(l2 * theta * theta)
        return value, Xa.T @ (p - y) / n + l2 * theta

    def fun_hess(theta):
        value, grad = fun(theta)
        p = 1.0 / (1.0 + np.exp(-(Xa @ theta)))
        return value, grad, (Xa.T * (p * (1.0 - p))) @ Xa / n + np.diag(l2)

    return fun, fun_hess, X, y


def least_squares(seed=0, n=300, d=8):
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.normal(size=(n, d)), np.ones((n, 1))])
    y = X @ rng.normal(size=d + 1) + 0.3 * rng.normal(size=n)

    def fun(theta):
        r = X @ theta - y
        return 0.5 * r @ r / n, X.T @ r / n

    def fun_hess(theta):
        return (*fun(theta), X.T @ X / n)

    return fun, fun_hess, np.linalg.lstsq(X, y, rcond=None)[0]


def rosenbrock():
    return (lambda x: (rosen(x), rosen_der(x))), (lambda x: (rosen(x), rosen_der(x), rosen_hess(x)))


PROBLEMS = {
    "quadratic": lambda: (quadratic()[0], np.zeros(20)),
    "logistic": lambda: (logistic()[0], np.zeros(11)),
    "rosenbrock": lambda: (rosenbrock()[0], np.array([-1.2, 1.0])),
}


# --------------------------------------------------------------------------- drivers
def max_pseudo_gradient(state, l1=None):
    return float(np.max(np.abs(pseudo_gradient(state.x, state.g, l1_weights(l1, state.x.size)))))


def drive_lbfgs(fun, state, *, l1=None, memory=10, gtol=1e-9, until=None, max_iter=1000):
    """Iterate until the (pseudo-)gradient is below ``gtol`` (scipy's pgtol test),
    a line-search failure, or iteration ``until``."""
    while state.iteration < (until if until is not None else max_iter):
        if max_pseudo_gradient(state, l1) <= gtol:
            break
        new = lbfgs_iterate(fun, state, memory=memory, l1=l1)
        if new.step_failures > state.step_failures:
            break
        state = new
    return state


def drive_newton(fun_hess, state, *, fun=None, gtol=1e-10, until=None, max_iter=50):
    while state.iteration < (until if until is not None else max_iter):
        if np.max(np.abs(state.g)) <= gtol:
            break
        new = newton_iterate(fun_hess, state, fun=fun)
        if new.step_failures > state.step_failures:
            break
        state = new
    return state


def scipy_lbfgsb(fun, x0, gtol=1e-9, **kwargs):
    options = {"gtol": gtol, "ftol": 0.0, "maxiter": 5000, "maxfun": 20000, "maxcor": 10}
    return minimize(fun, x0, jac=True, method="L-BFGS-B", options=options, **kwargs)


def through_npz(state):
    """What a killed job sees: the state written by np.savez and read back."""
    buffer = io.BytesIO()
    np.savez(buffer, **state.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        return type(state).from_arrays(saved)


def split_l1_reference(fun, l1):
    """min f(w) + Σ l1ᵢ|wᵢ| as a smooth bound-constrained problem in (w⁺, w⁻) ≥ 0."""
    n = l1.size

    def split(z):
        f, g = fun(z[:n] - z[n:])
        return f + l1 @ (z[:n] + z[n:]), np.r_[g + l1, -g + l1]

    result = scipy_lbfgsb(split, np.zeros(2 * n), gtol=1e-13, bounds=[(0.0, None)] * (2 * n))
    # L-BFGS-B projects onto the bounds, so variables at 0 are exactly 0.
    return result.x[:n] - result.x[n:]


def sklearn_l1_logistic(X, y, lam):
    """scikit-learn's saga on mean log-loss + lam‖w‖₁ (C = 1/(n·lam), intercept unpenalized)."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the `penalty` argument is deprecated in recent versions
        try:
            model = LogisticRegression(C=1.0 / (len(y) * lam), l1_ratio=1.0, solver="saga",
                                       tol=1e-12, max_iter=100_000, random_state=0)
            model.fit(X, y)
        except (TypeError, ValueError):  # older scikit-learn: l1_ratio needs penalty="elasticnet"
            model = LogisticRegression(penalty="l1", C=1.0 / (len(y) * lam), solver="saga",
                                       tol=1e-12, max_iter=100_000, random_state=0)
            model.fit(X, y)
    return np.r_[model.coef_[0], model.intercept_]


def wrong_gradient(fun):
    """The gradient with its sign flipped: every 'descent' direction goes uphill."""
    def bad(x):
        f, g = fun(x)
        return f, -g
    return bad


# --------------------------------------------------------------------------- state round trip
def test_lbfgs_state_round_trips_exactly():
    fun = logistic()[0]
    start = lbfgs_start(fun, np.zeros(11))
    assert start.s.shape == (0, 11) and start.y.shape == (0, 11) and start.n_evals == 1
    later = drive_lbfgs(fun, start, until=4)
    for state in (start, later):
        arrays = state.to_arrays()
        assert all(isinstance(v, np.ndarray) for v in arrays.values())
        assert arrays["f"].shape == () and arrays["f"].dtype == np.float64
        assert arrays["iteration"].shape == () and arrays["iteration"].dtype == np.int64
        assert LBFGSState.from_arrays(arrays) == state
        restored = through_npz(state)
        assert restored == state
        assert isinstance(restored.f, float) and isinstance(restored.iteration, int)
        assert restored.f == state.f and restored.total == state.total
        assert np.array_equal(restored.s, state.s) and restored.s.shape == state.s.shape
    assert later.s.shape == (4, 11)
    assert later != start


def test_state_equality_is_bitwise():
    state = lbfgs_start(logistic()[0], np.zeros(11))
    nudged = LBFGSState.from_arrays(state.to_arrays())
    nudged.x[0] = np.nextafter(nudged.x[0], 1.0)
    assert nudged != state
    negative_zero = LBFGSState.from_arrays(state.to_arrays())
    negative_zero.x[0] = -0.0
    assert negative_zero != state


def test_from_arrays_rejects_bad_checkpoints():
    arrays = lbfgs_start(logistic()[0], np.zeros(11)).to_arrays()
    with pytest.raises(ValueError, match="'y'"):
        LBFGSState.from_arrays({k: v for k, v in arrays.items() if k != "y"})
    with pytest.raises(ValueError, match="shape"):
        LBFGSState.from_arrays({**arrays, "g": np.zeros(5)})
    with pytest.raises(ValueError, match="0-d"):
        LBFGSState.from_arrays({**arrays, "f": np.zeros(2)})
    with pytest.raises(ValueError, match="integer"):
        LBFGSState.from_arrays({**arrays, "iteration": np.array(1.5)})


def test_newton_state_round_trips_exactly():
    fun, fun_hess, _, _ = logistic()
    state = drive_newton(fun_hess, newton_start(fun_hess, np.zeros(11)), until=2)
    assert state.H.shape == (11, 11)
    assert through_npz(state) == state
    no_hessian = NewtonState.from_arrays({**state.to_arrays(), "H": np.zeros((0, 0))})
    assert through_npz(no_hessian) == no_hessian


# --------------------------------------------------------------------------- L-BFGS vs scipy
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_lbfgs_matches_scipy(name):
    fun, x0 = PROBLEMS[name]()
    ours = drive_lbfgs(fun, lbfgs_start(fun, x0))
    ref = scipy_lbfgsb(fun, x0)
    assert max_pseudo_gradient(ours) <= 1e-9
    np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=1e-6)
    assert abs(ours.f - ref.fun) <= 1e-10
    assert ours.total == ours.f and ours.step_failures == 0
    if name == "rosenbrock":  # non-convex: the line search works harder, allow more
        np.testing.assert_allclose(ours.x, [1.0, 1.0], rtol=0, atol=1e-6)
        assert ours.n_evals <= 2 * ref.nfev + 10
    else:
        assert ours.n_evals <= 1.5 * ref.nfev + 5, (ours.n_evals, ref.nfev)
    # Mostly one pass per iteration.
    assert ours.n_evals <= 1.5 * ours.iteration + 5


def test_lbfgs_quadratic_reaches_exact_minimizer():
    fun, _, exact = quadratic(seed=1)
    state = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(20)))
    np.testing.assert_allclose(state.x, exact, rtol=0, atol=1e-8)


def test_lbfgs_memory_is_bounded_and_trimmed():
    fun = logistic()[0]
    state = lbfgs_start(fun, np.zeros(11))
    while state.iteration < 8:
        state = lbfgs_iterate(fun, state, memory=3)
        assert state.s.shape[0] <= 3 and state.s.shape == state.y.shape
    assert state.s.shape[0] == 3
    # A smaller memory than the stored one keeps the newest pairs only.
    smaller = lbfgs_iterate(fun, state, memory=2)
    assert smaller.s.shape[0] == 2
    assert np.array_equal(smaller.s[0], state.s[-1])


def test_lbfgs_survives_non_finite_values_along_the_line():
    # Overflow far from the start (as an exp in a loss might): the search must back off.
    base, _, exact = quadratic(seed=2)

    def fun(x):
        if np.max(np.abs(x)) > 2.0 * np.max(np.abs(exact)):
            return np.inf, np.full_like(x, np.nan)
        return base(x)

    state = lbfgs_start(fun, np.zeros(20))
    state = lbfgs_iterate(fun, state)
    state = lbfgs_iterate(fun, state)
    state = drive_lbfgs(fun, state)
    np.testing.assert_allclose(state.x, exact, rtol=0, atol=1e-8)


def test_two_loop_equals_dense_bfgs_inverse_update():
    # The two-loop recursion is the product with the BFGS inverse Hessian built
    # from H₀ = γI by the pairs, oldest first; it satisfies the newest secant equation.
    rng = np.random.default_rng(3)
    A = np.diag(np.linspace(1.0, 10.0, 6))
    s = rng.normal(size=(4, 6))
    y = s @ A
    gamma = s[-1] @ y[-1] / (y[-1] @ y[-1])
    H = gamma * np.eye(6)
    for si, yi in zip(s, y):
        rho = 1.0 / (yi @ si)
        V = np.eye(6) - rho * np.outer(yi, si)
        H = V.T @ H @ V + rho * np.outer(si, si)
    g = rng.normal(size=6)
    np.testing.assert_allclose(two_loop(g, s, y), -H @ g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(-two_loop(y[-1], s, y), s[-1], rtol=1e-12)
    np.testing.assert_array_equal(two_loop(g, s[:0], y[:0]), -g)


# --------------------------------------------------------------------------- OWL-QN
def test_owlqn_soft_thresholding_closed_form():
    # ½‖x − c‖² + λ‖x‖₁ is minimized by soft(c, λ): exact zeros for |cᵢ| ≤ λ.
    c = np.array([3.0, -0.5, 0.2, -2.0, 0.6])
    fun = lambda x: (0.5 * np.sum((x - c) ** 2), x - c)  # noqa: E731
    state = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(5), l1=0.6), l1=0.6, gtol=1e-12)
    np.testing.assert_allclose(state.x, [2.4, 0.0, 0.0, -1.4, 0.0], rtol=0, atol=1e-12)
    assert state.x[1] == 0.0 and state.x[2] == 0.0 and state.x[4] == 0.0
    assert state.total == pytest.approx(state.f + 0.6 * np.sum(np.abs(state.x)), rel=1e-15)


@pytest.mark.parametrize("seed,lam,with_saga", [(0, 0.01, False), (0, 0.03, True),
                                                (1, 0.03, True), (2, 0.1, False)])
def test_owlqn_logistic_matches_references(seed, lam, with_saga):
    fun, _, X, y = logistic(seed, lam=0.0)
    l1 = np.r_[np.full(X.shape[1], lam), 0.0]  # the intercept is not penalized
    ours = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(11), l1=l1), l1=l1, gtol=1e-10)
    assert max_pseudo_gradient(ours, l1) <= 1e-10 and ours.step_failures == 0
    ref = split_l1_reference(fun, l1)
    zeros = ref == 0.0
    assert 0 < zeros.sum() < 10 and np.min(np.abs(ref[~zeros])) > 1e-3  # not borderline
    np.testing.assert_allclose(ours.x, ref, rtol=0, atol=1e-5)
    assert np.array_equal(ours.x == 0.0, zeros)  # exact zeros, the same ones
    if with_saga:  # slow-ish for small lam: only where it converges quickly
        saga = sklearn_l1_logistic(X, y, lam)
        np.testing.assert_allclose(ours.x, saga, rtol=0, atol=1e-5)
        assert np.array_equal(ours.x == 0.0, saga == 0.0)
    assert ours.total == pytest.approx(ours.f + l1 @ np.abs(ours.x), rel=1e-15)
    # About one pass per iteration, as for the smooth problem.
    assert ours.n_evals <= 1.5 * ours.iteration + 5


def test_zero_l1_is_plain_lbfgs():
    fun = logistic()[0]
    plain = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(11)))
    zero = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(11), l1=np.zeros(11)), l1=np.zeros(11))
    assert zero == plain


def test_l1_weights_validation():
    assert l1_weights(None, 3) is None and l1_weights(0.0, 3) is None
    np.testing.assert_array_equal(l1_weights(0.5, 3), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        l1_weights([0.1, -0.1, 0.0], 3)
    with pytest.raises(ValueError):
        l1_weights([0.1, 0.1], 3)


def test_pseudo_gradient():
    x = np.array([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    g = np.array([0.5, 0.5, -2.0, 2.0, 0.5, 0.5])
    l1 = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(pseudo_gradient(x, g, l1), [1.5, -0.5, -1.0, 1.0, 0.0, 0.5])


# --------------------------------------------------------------------------- Newton
def test_newton_logistic_matches_scipy_in_few_iterations():
    fun, fun_hess, _, _ = logistic()
    state = drive_newton(fun_hess, newton_start(fun_hess, np.zeros(11)))
    ref = scipy_lbfgsb(fun, np.zeros(11), gtol=1e-12)
    assert np.max(np.abs(state.g)) <= 1e-10
    assert state.iteration <= 10 and state.step_failures == 0
    assert state.n_evals <= state.iteration + 2  # unit steps: one pass per iteration
    np.testing.assert_allclose(state.x, ref.x, rtol=0, atol=1e-6)
    assert abs(state.f - ref.fun) <= 1e-10 and state.total == state.f


def test_newton_least_squares_is_one_step():
    fun, fun_hess, exact = least_squares()
    state = newton_iterate(fun_hess, newton_start(fun_hess, np.zeros(9)))
    assert state.iteration == 1 and state.n_evals == 2
    np.testing.assert_allclose(state.x, exact, rtol=0, atol=1e-10)
    ref = scipy_lbfgsb(fun, np.zeros(9), gtol=1e-12)
    assert abs(state.f - ref.fun) <= 1e-10
    # At the optimum an iteration does not fail on rounding noise.
    again = newton_iterate(fun_hess, state)
    assert again.step_failures == 0 and abs(again.f - state.f) <= 1e-15


def test_newton_backtracks_with_cheap_fun_and_handles_indefinite_hessian():
    # Rosenbrock from (0, 1): the Hessian there is indefinite (needs the ridge),
    # and unit steps are often rejected (backtracking through the cheap ``fun``).
    fun, fun_hess = rosenbrock()
    calls = {"hess": 0, "fun": 0}

    def counted_hess(x):
        calls["hess"] += 1
        return fun_hess(x)

    def counted_fun(x):
        calls["fun"] += 1
        return fun(x)

    assert np.any(np.linalg.eigvalsh(fun_hess(np.array([0.0, 1.0]))[2]) < 0)
    state = drive_newton(counted_hess, newton_start(counted_hess, np.array([0.0, 1.0])),
                         fun=counted_fun)
    np.testing.assert_allclose(state.x, [1.0, 1.0], rtol=0, atol=1e-8)
    assert calls["fun"] > 0 and state.n_evals == calls["hess"] + calls["fun"]


def test_newton_direction_is_descent_even_when_hessian_is_not_positive_definite():
    g = np.array([1.0, -2.0, 0.5])
    for H in (np.diag([2.0, -1.0, 3.0]), np.zeros((3, 3)), np.diag([1.0, 0.0, 1.0])):
        d = newton_direction(g, H)
        assert np.all(np.isfinite(d)) and g @ d < 0
    np.testing.assert_allclose(newton_direction(g, np.diag([2.0, 4.0, 1.0])), [-0.5, 0.5, -0.5])
    with pytest.raises(ValueError, match="not finite"):
        newton_direction(g, np.full((3, 3), np.nan))


def test_newton_rejects_l1():
    _, fun_hess, _, _ = logistic()
    with pytest.raises(ValueError, match="'lbfgs' \\(OWL-QN\\) or 'gd'"):
        newton_start(fun_hess, np.zeros(11), l1=np.r_[np.full(10, 0.1), 0.0])
    state = newton_start(fun_hess, np.zeros(11), l1=np.zeros(11))  # zero weights are fine
    with pytest.raises(ValueError, match="L1"):
        newton_iterate(fun_hess, state, l1=0.1)


# --------------------------------------------------------------------------- checkpoint/resume
def _resume_is_bit_identical(start, step, finish, at=5):
    """Run ``finish`` uninterrupted, and again interrupted after ``step`` (which
    stops at iteration ``at``) with a save/load in between: the two final
    states must be equal bit for bit.  Returns (final, halfway)."""
    uninterrupted = finish(start)
    halfway = step(start)
    assert halfway.iteration == at and uninterrupted.iteration > at
    resumed = finish(through_npz(halfway))
    assert resumed == uninterrupted
    assert np.array_equal(resumed.x, uninterrupted.x)
    return uninterrupted, halfway


@pytest.mark.parametrize("name", ["logistic", "rosenbrock"])
def test_lbfgs_resume_is_bit_identical(name):
    fun, x0 = PROBLEMS[name]()
    _resume_is_bit_identical(lbfgs_start(fun, x0),
                             lambda s: drive_lbfgs(fun, s, until=5),
                             lambda s: drive_lbfgs(fun, s, gtol=1e-12))


def test_owlqn_resume_is_bit_identical():
    fun = logistic(lam=0.0)[0]
    l1 = np.r_[np.full(10, 0.03), 0.0]
    final, _ = _resume_is_bit_identical(lbfgs_start(fun, np.zeros(11), l1=l1),
                                     lambda s: drive_lbfgs(fun, s, l1=l1, until=5),
                                     lambda s: drive_lbfgs(fun, s, l1=l1, gtol=1e-12))
    assert np.any(final.x == 0.0)


@pytest.mark.parametrize("cheap", [False, True])
def test_newton_resume_is_bit_identical(cheap):
    # Rosenbrock backtracks at iteration 2, so with ``cheap`` the state saved
    # there has no Hessian and the resumed run must recompute it the same way.
    fun, fun_hess = rosenbrock()
    extra = {"fun": fun} if cheap else {}
    at = 2 if cheap else 5
    _, halfway = _resume_is_bit_identical(
        newton_start(fun_hess, np.array([-1.2, 1.0])),
        lambda s: drive_newton(fun_hess, s, until=at, **extra),
        lambda s: drive_newton(fun_hess, s, gtol=1e-12, **extra), at=at)
    assert halfway.H.shape == ((0, 0) if cheap else (2, 2))


# --------------------------------------------------------------------------- failure paths
def _assert_failed(before, after, max_evals):
    assert after.step_failures == before.step_failures + 1
    assert before.n_evals < after.n_evals <= before.n_evals + max_evals
    for name in ("x", "g", "s", "y", "H"):
        if hasattr(before, name):
            assert np.array_equal(getattr(after, name), getattr(before, name))
    assert after.f == before.f and after.total == before.total
    assert after.iteration == before.iteration


def test_lbfgs_line_search_failure_returns_state_unchanged():
    fun = logistic()[0]
    bad = wrong_gradient(fun)
    start = lbfgs_start(bad, np.zeros(11))
    saved = start.to_arrays()
    failed = lbfgs_iterate(bad, start)
    _assert_failed(start, failed, 20)
    assert LBFGSState.from_arrays(saved) == start  # the input state was not modified
    # With a memory, the iteration is retried from steepest descent before failing.
    good = drive_lbfgs(fun, lbfgs_start(fun, np.zeros(11)), until=3)
    bad_state = LBFGSState.from_arrays({**good.to_arrays(), "g": -good.g})
    _assert_failed(bad_state, lbfgs_iterate(bad, bad_state), 40)


def test_owlqn_line_search_failure_returns_state_unchanged():
    bad = wrong_gradient(logistic(lam=0.0)[0])
    l1 = np.r_[np.full(10, 0.03), 0.0]
    start = lbfgs_start(bad, np.zeros(11), l1=l1)
    _assert_failed(start, lbfgs_iterate(bad, start, l1=l1), 20)


def test_newton_line_search_failure_returns_state_unchanged():
    _, fun_hess, _, _ = logistic()

    def bad(x):
        f, g, H = fun_hess(x)
        return f, -g, H

    start = newton_start(bad, np.zeros(11))
    _assert_failed(start, newton_iterate(bad, start), 20)


def test_zero_gradient_is_a_no_op_iteration():
    fun = lambda x: (float(np.sum((x - 1.0) ** 2)), 2.0 * (x - 1.0))  # noqa: E731
    state = lbfgs_start(fun, np.ones(3))
    after = lbfgs_iterate(fun, state)
    assert after.iteration == 1 and after.n_evals == 1 and after.step_failures == 0
    assert np.array_equal(after.x, state.x)
    hess = lambda x: (*fun(x), 2.0 * np.eye(3))  # noqa: E731
    newton = newton_iterate(hess, newton_start(hess, np.ones(3)))
    assert newton.iteration == 1 and newton.n_evals == 1


def test_argument_checks():
    fun = logistic()[0]
    with pytest.raises(ValueError, match="memory"):
        lbfgs_iterate(fun, lbfgs_start(fun, np.zeros(11)), memory=0)
    with pytest.raises(ValueError, match="not finite"):
        lbfgs_start(lambda x: (np.nan, x), np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        lbfgs_start(lambda x: (0.0, np.zeros(2)), np.zeros(3))
