"""The extended loss family (hinge, huber, multinomial), Hessians and class-index labels.

Pure numpy/scipy/scikit-learn: no Spark.  The scikit-learn comparisons pin
down that our objectives are MLlib's (mean loss + ½·reg·‖w‖², intercept not
penalized) through the usual ``C``/``alpha`` ↔ ``regParam`` mappings.
"""

import warnings
from functools import reduce

import numpy as np
import pytest
from scipy.optimize import minimize

from sparkml_aiaas.core.glm import validate_training_stats
from sparkml_aiaas.core.losses import (
    LOSSES, Loss, get_loss, hessian_sums, huber_loss, loss_gradient_sums,
)
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.errors import DataValidationError

K_MULTI = 3


# --------------------------------------------------------------------------- data and helpers
def _data(loss_name, n=120, d=4, seed=0):
    """Features, labels of the loss's domain, random positive weights, and k."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    domain = LOSSES[loss_name].label_domain
    k = K_MULTI if domain == "class_index" else 1
    if domain == "binary":
        y = (rng.uniform(size=n) < 0.45).astype(float)
    elif domain == "class_index":
        y = rng.integers(0, k, size=n).astype(float)
    else:
        y = X @ rng.normal(size=d) + rng.normal(size=n)
    w = rng.uniform(0.1, 3.0, size=n)
    return X, y, w, k


def _unpack(loss, theta, d, k):
    coef = theta[: d * k].reshape(d, k)
    intercept = theta[d * k : d * k + k]
    extra = theta[d * k + k :] if loss.n_extra else None
    return coef, intercept, extra


def _random_params(loss, X, y, d, k, rng):
    theta = rng.normal(scale=0.3, size=loss.n_params(d, k))
    if loss.name == "huber":
        # A scale where both the quadratic and the linear pieces have rows.
        coef, intercept, _ = _unpack(loss, theta, d, k)
        resid = np.abs(y - (X @ coef[:, 0] + intercept[0]))
        theta[-1] = np.log(np.median(resid) / 1.35)
    return theta


def _sums(loss, X, y, w, theta, k, **kw):
    return loss_gradient_sums(loss, X, y, w, *_unpack(loss, theta, X.shape[1], k), **kw)


def _central_jacobian(fun, theta, h):
    cols = [(fun(theta + h * e) - fun(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    return np.array(cols).T


def _chunks(n, sizes):
    bounds = np.cumsum([0, *sizes, n - sum(sizes)])
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _fit_ours(loss, X, y, w, reg, k=1):
    """Minimize MLlib's objective mean_w(loss) + ½·reg·‖coef‖² with scipy's L-BFGS."""
    d = X.shape[1]

    def objective(theta):
        sums = _sums(loss, X, y, w, theta, k)
        value, grad = sums.mean()
        coef = theta[: d * k]
        grad = grad.copy()
        grad[: d * k] += reg * coef
        return value + 0.5 * reg * coef @ coef, grad

    theta0 = np.concatenate([np.zeros(d * k + k), np.asarray(loss.extra_init, float)])
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                      options=dict(maxiter=10_000, ftol=1e-15, gtol=1e-11, maxcor=30))
    return result


NEWTON_LOSSES = ["logistic", "squared", "huber", "multinomial"]


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_gradient_matches_finite_differences(loss_name):
    loss = LOSSES[loss_name]
    X, y, w, k = _data(loss_name, n=90, d=4, seed=1)
    d = X.shape[1]
    rng = np.random.default_rng(2)
    for _ in range(3):
        theta = _random_params(loss, X, y, d, k, rng)
        sums = _sums(loss, X, y, w, theta, k)
        assert sums.grad.shape == (loss.n_params(d, k),)
        assert sums.weight == pytest.approx(w.sum()) and sums.count == X.shape[0]
        assert sums.hessian is None
        numeric = _central_jacobian(
            lambda t: np.array([_sums(loss, X, y, w, t, k).loss]), theta, 1e-6)[0]
        scale = max(1.0, np.abs(sums.grad).max())
        np.testing.assert_allclose(sums.grad, numeric, rtol=0, atol=1e-6 * scale)


def test_huber_scale_gradient_both_regimes():
    """d/d(log σ) at scales where every row is an inlier, every row an outlier, and a mix."""
    loss = LOSSES["huber"]
    X, y, w, _ = _data("huber", n=60, d=3, seed=3)
    coef, intercept = np.array([[0.2], [-0.1], [0.3]]), np.array([0.1])
    resid = np.abs(y - (X @ coef[:, 0] + intercept[0]))
    for sigma in (resid.max() * 2, resid.min() / 3, np.median(resid)):
        s = np.log(sigma)
        g = loss_gradient_sums(loss, X, y, w, coef, intercept, [s]).grad[-1]
        h = 1e-6
        num = (loss_gradient_sums(loss, X, y, w, coef, intercept, [s + h]).loss
               - loss_gradient_sums(loss, X, y, w, coef, intercept, [s - h]).loss) / (2 * h)
        assert g == pytest.approx(num, rel=1e-6, abs=1e-6)


# --------------------------------------------------------------------------- loss values
def test_hinge_values_and_subgradient():
    loss = LOSSES["hinge"]
    margin = np.array([[2.0], [0.5], [-0.5], [1.0], [-3.0], [-1.0]])
    y = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    row_loss, dmargin = loss.evaluate(margin, y)
    # y± = 2y − 1; max(0, 1 − y±·m); subgradient −y± only strictly inside the margin.
    np.testing.assert_array_equal(row_loss, [0.0, 0.5, 0.5, 0.0, 4.0, 0.0])
    np.testing.assert_array_equal(dmargin[:, 0], [0.0, -1.0, 1.0, 0.0, -1.0, 0.0])


def test_huber_values_match_explicit_formula():
    eps = 1.35
    loss = huber_loss(eps)
    sigma = 0.8
    margin = np.array([[0.0], [1.0], [-2.0], [0.3]])
    y = np.array([0.5, -3.0, 2.0, 0.3])
    row_loss, dmargin, dextra = loss.evaluate(margin, y, np.array([np.log(sigma)]))
    r = y - margin[:, 0]
    z = r / sigma
    huber = np.where(np.abs(z) <= eps, z * z, 2 * eps * np.abs(z) - eps * eps)
    # MLlib's HuberAggregator: ½(σ + H(r/σ)·σ) per row.
    np.testing.assert_allclose(row_loss, 0.5 * (sigma + huber * sigma), rtol=1e-14)
    assert dmargin.shape == (4, 1) and dextra.shape == (4, 1)


def test_multinomial_values_stable_and_softmax_gradient():
    loss = LOSSES["multinomial"]
    margin = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3], [-800.0, -800.0, -801.0]])
    y = np.array([2.0, 1.0, 0.0])
    row_loss, dmargin = loss.evaluate(margin.copy(), y)
    assert np.all(np.isfinite(row_loss)) and np.all(np.isfinite(dmargin))
    assert row_loss[0] == pytest.approx(2000.0)
    p = np.exp(margin[1] - margin[1].max())
    p /= p.sum()
    assert row_loss[1] == pytest.approx(-np.log(p[1]), rel=1e-14)
    np.testing.assert_allclose(dmargin[1], p - [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(dmargin.sum(axis=1), 0.0, atol=1e-12)  # softmax − onehot sums to 0
    assert row_loss[2] == pytest.approx(np.log(2 + np.exp(-1.0)), rel=1e-12)


def test_multinomial_rejects_bad_class_indices():
    loss = LOSSES["multinomial"]
    margin = np.zeros((3, 3))
    for bad in (-1.0, 3.0, 1.5):
        with pytest.raises(ValueError, match="class indices 0..2"):
            loss.evaluate(margin.copy(), np.array([0.0, bad, 1.0]))


def test_extra_variables_are_required_exactly():
    X, y, w, _ = _data("huber", n=10, d=2)
    coef, b = np.zeros((2, 1)), np.zeros(1)
    with pytest.raises(ValueError, match="huber loss needs 1 extra"):
        loss_gradient_sums(LOSSES["huber"], X, y, w, coef, b)
    with pytest.raises(ValueError, match="takes 0 extra"):
        loss_gradient_sums(LOSSES["squared"], X, y, w, coef, b, [0.0])
    with pytest.raises(ValueError, match="takes 1 extra"):
        loss_gradient_sums(LOSSES["huber"], X, y, w, coef, b, [0.0, 1.0])
    empty = loss_gradient_sums(LOSSES["huber"], X[:0], y[:0], w[:0], coef, b, [0.0])
    np.testing.assert_array_equal(empty.grad, np.zeros(4))


def test_loss_registry_and_options():
    assert {"hinge", "huber", "multinomial"} <= set(LOSSES)
    assert [LOSSES[n].label_domain for n in ("hinge", "huber", "multinomial")] == [
        "binary", "real", "class_index"]
    assert LOSSES["huber"].n_extra == 1 and LOSSES["huber"].extra_init == (0.0,)
    assert LOSSES["huber"].n_params(4) == 6 and LOSSES["multinomial"].n_params(4, 3) == 15
    wide = get_loss("huber", epsilon=2.0)
    row_loss, _, _ = wide.evaluate(np.zeros((1, 1)), np.array([1.8]), np.zeros(1))
    assert row_loss[0] == pytest.approx(0.5 * (1.0 + 1.8**2))  # quadratic at ε = 2
    with pytest.raises(ValueError, match="must be > 1.0"):
        huber_loss(1.0)
    with pytest.raises(ValueError, match="takes no options"):
        get_loss("squared", epsilon=2.0)
    with pytest.raises(ValueError, match="label_domain"):
        Loss("bad", LOSSES["squared"].evaluate, "ordinal")


# --------------------------------------------------------------------------- Hessians
@pytest.mark.parametrize("loss_name", NEWTON_LOSSES)
def test_hessian_matches_finite_differences_of_gradient(loss_name):
    loss = LOSSES[loss_name]
    X, y, w, k = _data(loss_name, n=80, d=3, seed=4)
    d = X.shape[1]
    rng = np.random.default_rng(5)
    for _ in range(2):
        theta = _random_params(loss, X, y, d, k, rng)
        H = hessian_sums(loss, X, y, w, *_unpack(loss, theta, d, k))
        p = loss.n_params(d, k)
        assert H.shape == (p, p)
        np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * max(1.0, np.abs(H).max()))
        numeric = _central_jacobian(lambda t: _sums(loss, X, y, w, t, k).grad, theta, 1e-6)
        scale = max(1.0, np.abs(H).max())
        np.testing.assert_allclose(H, numeric, rtol=0, atol=1e-5 * scale)
        # the flag gives the same matrix alongside the gradient
        sums = _sums(loss, X, y, w, theta, k, with_hessian=True)
        np.testing.assert_array_equal(sums.hessian, H)
        np.testing.assert_array_equal(sums.grad, _sums(loss, X, y, w, theta, k).grad)


@pytest.mark.parametrize("loss_name", ["logistic", "squared"])
def test_k1_hessian_is_weighted_outer_product(loss_name):
    loss = LOSSES[loss_name]
    X, y, w, _ = _data(loss_name, n=40, d=3, seed=6)
    coef, b = np.array([[0.3], [-0.2], [0.1]]), np.array([0.4])
    m = X @ coef[:, 0] + b[0]
    p = 1 / (1 + np.exp(-m))
    second = p * (1 - p) if loss_name == "logistic" else np.ones_like(m)
    Xa = np.column_stack([X, np.ones(len(y))])
    expected = Xa.T @ (Xa * (w * second)[:, None])
    np.testing.assert_allclose(hessian_sums(loss, X, y, w, coef, b), expected, rtol=1e-12)


def test_hinge_has_no_hessian():
    X, y, w, _ = _data("hinge", n=10, d=2)
    coef, b = np.zeros((2, 1)), np.zeros(1)
    with pytest.raises(ValueError, match="Newton's method does not support the hinge loss"):
        hessian_sums(LOSSES["hinge"], X, y, w, coef, b)
    with pytest.raises(ValueError, match="does not support the hinge"):
        loss_gradient_sums(LOSSES["hinge"], X, y, w, coef, b, with_hessian=True)
    with pytest.raises(ValueError, match="does not support the hinge"):
        hessian_sums(LOSSES["hinge"], X[:0], y[:0], w[:0], coef, b)


def test_huber_hessian_psd_coefficient_block_and_stationary_point():
    loss = LOSSES["huber"]
    X, y, w, _ = _data("huber", n=150, d=3, seed=7)
    y[:10] += 20.0  # outliers
    fit = _fit_ours(loss, X, y, w, reg=0.0)
    coef, b, extra = _unpack(loss, fit.x, 3, 1)
    H = hessian_sums(loss, X, y, w, coef, b, extra)
    assert np.linalg.eigvalsh(H[:-1, :-1]).min() >= -1e-10
    # At the optimum the reparameterization term vanishes: the full Hessian is PSD too.
    assert np.linalg.eigvalsh(H).min() >= -1e-6 * np.abs(H).max()


# --------------------------------------------------------------------------- merge
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("sizes", [[1], [17, 0, 40], [99, 1, 0, 50, 3]])
def test_merge_over_chunks_equals_whole_array(loss_name, sizes):
    loss = LOSSES[loss_name]
    X, y, w, k = _data(loss_name, n=200, d=3, seed=8)
    theta = _random_params(loss, X, y, 3, k, np.random.default_rng(9))
    with_h = loss.curvature is not None
    whole = _sums(loss, X, y, w, theta, k, with_hessian=with_h)
    parts = [_sums(loss, X[s], y[s], w[s], theta, k, with_hessian=with_h)
             for s in _chunks(len(y), sizes)]
    merged = reduce(merge, parts, LossGradient.zero(loss.n_params(3, k), with_hessian=with_h))
    assert merged.count == 200
    assert merged.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(merged.grad, whole.grad, rtol=1e-11, atol=1e-11)
    if with_h:
        np.testing.assert_allclose(merged.hessian, whole.hessian, rtol=1e-11, atol=1e-10)
        np.testing.assert_allclose(merged.mean_hessian(), whole.hessian / w.sum(),
                                   rtol=1e-11, atol=1e-12)
    else:
        assert merged.hessian is None


def test_merge_with_hessians_is_associative():
    rng = np.random.default_rng(10)

    def random_sums():
        h = rng.normal(size=(4, 4))
        return LossGradient(float(rng.normal()), rng.normal(size=4), float(rng.uniform(1, 5)),
                            int(rng.integers(1, 100)), h + h.T)

    a, b, c = random_sums(), random_sums(), random_sums()
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    np.testing.assert_allclose(left.hessian, right.hessian, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(left.hessian, a.hessian + b.hessian + c.hessian,
                               rtol=1e-14, atol=1e-14)
    assert left.count == right.count and left.loss == pytest.approx(right.loss, rel=1e-14)
    # An empty side without a Hessian (e.g. the plain zero element) is an identity...
    for empty in (LossGradient.zero(4), LossGradient.zero(4, with_hessian=True)):
        np.testing.assert_array_equal(merge(empty, a).hessian, a.hessian)
        np.testing.assert_array_equal(merge(a, empty).hessian, a.hessian)
    # ...but rows without a Hessian next to rows with one are an error, in either order.
    plain = LossGradient(1.0, np.ones(4), 2.0, 3)
    for x, y in ((a, plain), (plain, a)):
        with pytest.raises(ValueError, match="3 rows have no Hessian"):
            merge(x, y)


def test_loss_gradient_stays_backward_compatible():
    old = LossGradient(1.0, np.ones(3), 2.0, 5)
    assert old.hessian is None and len(old) == 5
    assert old.loss == 1.0 and old.count == 5 and old[3] == 5
    merged = merge(old, LossGradient(0.5, np.ones(3), 1.0, 1))
    assert merged.hessian is None and merged.count == 6
    assert LossGradient.zero(3).hessian is None
    with pytest.raises(ValueError, match="no Hessian"):
        old.mean_hessian()


# --------------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("weighted", [False, True])
def test_huber_matches_sklearn_huber_regressor(weighted):
    from sklearn.linear_model import HuberRegressor

    rng = np.random.default_rng(11)
    n, d = 200, 4
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 + rng.normal(scale=0.5, size=n)
    y[:15] += rng.normal(scale=8.0, size=15)  # outliers
    w = rng.uniform(0.5, 2.0, size=n) if weighted else np.ones(n)
    reg = 0.05
    fit = _fit_ours(LOSSES["huber"], X, y, w, reg)
    assert fit.success, fit.message
    # MLlib: ½·mean_w(σ + H(rᵢ/σ)σ) + ½·reg‖w‖²; sklearn: Σ wᵢ(σ + H(rᵢ/σ)σ) + α‖w‖², which
    # is 2Σw times MLlib's when α = Σw·reg (n·reg unweighted).
    ref = HuberRegressor(epsilon=1.35, alpha=w.sum() * reg, tol=1e-12, max_iter=10_000)
    ref.fit(X, y, sample_weight=w)
    coef, b, extra = _unpack(LOSSES["huber"], fit.x, d, 1)
    np.testing.assert_allclose(coef[:, 0], ref.coef_, atol=1e-4)
    assert b[0] == pytest.approx(ref.intercept_, abs=1e-4)
    assert np.exp(extra[0]) == pytest.approx(ref.scale_, abs=1e-4)


def test_multinomial_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(12)
    n, d, k = 240, 4, K_MULTI
    X = rng.normal(size=(n, d))
    logits = X @ rng.normal(size=(d, k)) + rng.normal(size=k)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in prob], dtype=float)
    w = rng.uniform(0.5, 2.0, size=n)
    reg = 0.05
    fit = _fit_ours(LOSSES["multinomial"], X, y, w, reg, k=k)
    assert fit.success, fit.message
    # sklearn: ½‖W‖² + C Σ wᵢℓᵢ over all k columns (also over-parameterized), so C = 1/(Σw·reg).
    ref = LogisticRegression(C=1.0 / (w.sum() * reg), tol=1e-12, max_iter=10_000)
    ref.fit(X, y, sample_weight=w)
    coef, b, _ = _unpack(LOSSES["multinomial"], fit.x, d, k)
    np.testing.assert_allclose(coef, ref.coef_.T, atol=1e-4)
    # The penalty pins the coefficient columns (they sum to zero); the unpenalized
    # intercepts are only defined up to a common shift, so compare them centered.
    np.testing.assert_allclose(coef.sum(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-4)
    margin = X @ coef + b
    ours = np.exp(margin - margin.max(axis=1, keepdims=True))
    ours /= ours.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref.predict_proba(X), atol=1e-5)


def _svm_data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X @ np.array([1.5, -2.0, 1.0]) + 0.3 + 0.3 * rng.normal(size=n) > 0).astype(float)
    return X, y


def test_hinge_minimum_matches_independent_qp():
    """L-BFGS on our hinge sums reaches the optimum of the same objective solved as a QP."""
    X, y = _svm_data(100, seed=13)
    n, d = X.shape
    w = np.ones(n)
    reg = 0.01
    ours = _fit_ours(LOSSES["hinge"], X, y, w, reg)
    # Written independently: min (1/n)Σξ + ½·reg‖v‖²  s.t.  ξ ≥ 1 − y±(Xv + b),  ξ ≥ 0.
    signed = 2 * y - 1
    A = np.hstack([signed[:, None] * X, signed[:, None], np.eye(n)])

    def qp_value(z):
        v = z[:d]
        return z[d + 1 :].sum() / n + 0.5 * reg * v @ v

    def qp_grad(z):
        g = np.full_like(z, 1.0 / n)
        g[:d] = reg * z[:d]
        g[d] = 0.0
        return g

    qp = minimize(qp_value, np.zeros(d + 1 + n), jac=qp_grad, method="SLSQP",
                  constraints=[dict(type="ineq", fun=lambda z: A @ z - 1.0, jac=lambda z: A)],
                  bounds=[(None, None)] * (d + 1) + [(0.0, None)] * n,
                  options=dict(maxiter=1000, ftol=1e-14))
    assert qp.success, qp.message
    # Our value is a true objective value, so it cannot beat the QP optimum by more than
    # the QP's own tolerance; L-BFGS on the kinked objective gets within 1e-4 of it.
    assert ours.fun >= qp.fun - 1e-8
    assert ours.fun - qp.fun <= 1e-4 * max(1.0, abs(qp.fun))
    direct = np.mean(np.maximum(0, 1 - signed * (X @ ours.x[:d] + ours.x[d]))) \
        + 0.5 * reg * ours.x[:d] @ ours.x[:d]
    assert direct == pytest.approx(ours.fun, rel=1e-12)


def test_hinge_predictions_agree_with_sklearn_linear_svc():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    X, y = _svm_data(300, seed=14)
    n = len(y)
    reg = 0.01
    ours = _fit_ours(LOSSES["hinge"], X, y, np.ones(n), reg)
    # liblinear: ½‖v‖² + C Σ hinge, i.e. C = 1/(n·reg); it penalizes the intercept too
    # (weakly with a large intercept_scaling), hence predictions rather than coefficients.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = LinearSVC(loss="hinge", C=1.0 / (n * reg), dual=True, intercept_scaling=100.0,
                        tol=1e-8, max_iter=100_000).fit(X, y)
    agree = np.mean((X @ ours.x[:3] + ours.x[3] > 0) == (ref.predict(X) == 1.0))
    assert agree >= 0.98


# --------------------------------------------------------------------------- validation
NAMES = ["a", "b"]


def _stats(y, blocks=1):
    y = np.asarray(y, float)
    X = np.zeros((len(y), 2))
    w = np.ones(len(y))
    parts = [block_stats(X[s], y[s], w[s]) for s in np.array_split(np.arange(len(y)), blocks)]
    return reduce(merge_stats, parts)


def test_class_index_labels_accepted():
    multi = LOSSES["multinomial"]
    validate_training_stats(_stats([0, 1, 2, 2, 0]), multi, NAMES, "label")
    validate_training_stats(_stats([0, 1, 2, 2, 0]), multi, NAMES, "label", num_classes=3)
    validate_training_stats(_stats(np.arange(100) % 80), multi, NAMES, "label")  # > 64 distinct
    validate_training_stats(_stats(np.arange(100) % 80), multi, NAMES, "label", num_classes=80)


@pytest.mark.parametrize("labels, num_classes, pattern", [
    ([0, 1, -1, 2], None, r"'cls' must hold non-negative integer class indices.*found -1$"),
    ([0, 1.5, 2, 2.5], None, r"'cls' must hold non-negative integer.*found 1\.5, 2\.5$"),
    ([0, 1, 2, 3, 7], 3,
     r"'cls' must hold class indices 0 to 2 for a multinomial model; found 3, 7$"),
    ([-2, 0.5, 4, 1], 4, r"class indices 0 to 3.*found -2, 0\.5, 4$"),
])
def test_class_index_labels_rejected_with_values(labels, num_classes, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        validate_training_stats(_stats(labels, blocks=2), LOSSES["multinomial"], NAMES, "cls",
                                num_classes=num_classes)


def test_class_index_labels_rejected_past_tracking_limit():
    many = np.arange(100.0)
    many[3] = 2.5
    many[7] = -4.0
    with pytest.raises(DataValidationError,
                       match=r"'y' must hold class indices 0 to 9.*found 1 rows with non-integer "
                             r"values, negative values \(minimum -4\), values up to 99"):
        validate_training_stats(_stats(many, blocks=3), LOSSES["multinomial"], NAMES, "y",
                                num_classes=10)


def test_other_domains_unchanged_by_class_index_checks():
    validate_training_stats(_stats([0, 1, 1]), LOSSES["hinge"], NAMES, "label")
    validate_training_stats(_stats([-3.5, 2.0]), LOSSES["huber"], NAMES, "label")
    with pytest.raises(DataValidationError,
                       match="must hold 0 or 1 for a binary hinge model; found 2"):
        validate_training_stats(_stats([0, 1, 2]), LOSSES["hinge"], NAMES, "label")


@pytest.mark.parametrize("name", ["logistic", "squared", "huber", "multinomial", "hinge"])
def test_chunked_pass_equals_one_sweep(name, monkeypatch):
    """A block goes through in cache-sized chunks; the sums must not depend on it."""
    import sparkml_aiaas.core.losses as losses

    rng = np.random.default_rng(11)
    n, d = 1000, 3
    k = 3 if name == "multinomial" else 1
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k if k > 1 else 2, size=n).astype(float)
    if name in ("squared", "huber"):
        y = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    coef, intercept = rng.normal(size=(d, k)), rng.normal(size=k)
    loss = losses.get_loss(name)
    extra = np.array([0.3]) if loss.n_extra else None
    hessian = loss.curvature is not None
    whole = losses.loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=hessian)
    monkeypatch.setattr(losses, "CHUNK_BYTES", 1024)  # 256-row chunks: 4 of them
    assert losses.chunk_rows(d) == 256
    chunked = losses.loss_gradient_sums(loss, X, y, w, coef, intercept, extra,
                                        with_hessian=hessian)
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(chunked.grad, whole.grad, rtol=1e-10, atol=1e-10)
    assert chunked.weight == pytest.approx(whole.weight) and chunked.count == n
    if hessian:
        np.testing.assert_allclose(chunked.hessian, whole.hessian, rtol=1e-10, atol=1e-10)
