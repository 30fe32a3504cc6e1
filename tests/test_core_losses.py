"""Losses, the gradient merge and the block statistics: pure numpy, no Spark."""

from functools import reduce

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from sparkml_aiaas.core.losses import LOSSES, get_loss, loss_gradient_sums
from sparkml_aiaas.core.merge import LossGradient, merge
from sparkml_aiaas.core.stats import MAX_TRACKED_LABELS, BlockStats, block_stats, merge_stats


def _data(loss_name, n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    if LOSSES[loss_name].label_domain == "binary":
        y = (rng.uniform(size=n) < 0.4).astype(float)
    else:
        y = X @ rng.normal(size=d) + rng.normal(size=n)
    w = rng.uniform(0.1, 3.0, size=n)
    return X, y, w


# The two original k=1 losses without extra variables; hinge, huber and multinomial (other
# label domains, an extra variable, k > 1) are covered in test_core_losses_family.py.
BASIC_LOSSES = ["logistic", "squared"]


def _chunks(n, sizes):
    """Split range(n) into consecutive slices of the given sizes (last one takes the rest)."""
    bounds = np.cumsum([0, *sizes, n - sum(sizes)])
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss_name", BASIC_LOSSES)
def test_gradient_matches_finite_differences(loss_name):
    loss = LOSSES[loss_name]
    X, y, w = _data(loss_name, n=80, d=4, seed=1)
    rng = np.random.default_rng(2)
    d = X.shape[1]

    def value(params):
        return loss_gradient_sums(loss, X, y, w, params[:d].reshape(d, 1), params[d:]).loss

    for _ in range(3):
        params = rng.normal(scale=0.7, size=d + 1)
        sums = loss_gradient_sums(loss, X, y, w, params[:d].reshape(d, 1), params[d:])
        numeric = approx_fprime(params, value, 1e-6)
        # central differences for a tighter check
        h = 1e-5
        central = np.array([
            (value(params + h * e) - value(params - h * e)) / (2 * h) for e in np.eye(d + 1)
        ])
        scale = max(1.0, np.abs(sums.grad).max())
        np.testing.assert_allclose(sums.grad, central, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(sums.grad, numeric, rtol=0, atol=1e-3 * scale)
        assert sums.weight == pytest.approx(w.sum())
        assert sums.count == X.shape[0]
        assert sums.grad.shape == (d + 1,)


def test_logistic_loss_values_and_extreme_margins():
    loss = LOSSES["logistic"]
    margin = np.array([[-1000.0], [-2.0], [0.0], [3.0], [1000.0]])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    row_loss, dmargin = loss.evaluate(margin, y)
    assert np.all(np.isfinite(row_loss)) and np.all(np.isfinite(dmargin))
    expected = np.log1p(np.exp(-np.where(y == 1, 1, -1) * margin[:, 0].clip(-50, 50)))
    np.testing.assert_allclose(row_loss[1:4], expected[1:4], rtol=1e-12)
    # huge wrong-side margins: loss ≈ |m|, gradient = ±1 exactly
    assert row_loss[0] == pytest.approx(1000.0)
    assert row_loss[4] == pytest.approx(1000.0)
    sigmoid = 1.0 / (1.0 + np.exp(-margin[:, 0].clip(-50, 50)))
    np.testing.assert_allclose(dmargin[:, 0], sigmoid - y, atol=1e-15)
    assert dmargin[0, 0] == -1.0 and dmargin[4, 0] == 1.0


def test_squared_loss_values():
    loss = LOSSES["squared"]
    margin = np.array([[1.0], [-2.0], [0.5]])
    y = np.array([0.0, 1.0, 0.5])
    row_loss, dmargin = loss.evaluate(margin, y)
    np.testing.assert_array_equal(row_loss, [0.5, 4.5, 0.0])
    np.testing.assert_array_equal(dmargin[:, 0], [1.0, -3.0, 0.0])


@pytest.mark.parametrize("loss_name", BASIC_LOSSES)
def test_loss_sums_match_explicit_formula(loss_name):
    loss = LOSSES[loss_name]
    X, y, w = _data(loss_name, n=50, d=3, seed=3)
    coef = np.array([[0.3], [-0.2], [0.1]])
    intercept = np.array([0.25])
    m = X @ coef[:, 0] + intercept[0]
    if loss_name == "logistic":
        per_row = np.log1p(np.exp(m)) - y * m
    else:
        per_row = 0.5 * (m - y) ** 2
    sums = loss_gradient_sums(loss, X, y, w, coef, intercept)
    assert sums.loss == pytest.approx(np.dot(w, per_row), rel=1e-12)
    mean_loss, mean_grad = sums.mean()
    assert mean_loss == pytest.approx(np.dot(w, per_row) / w.sum(), rel=1e-12)
    np.testing.assert_allclose(mean_grad, sums.grad / w.sum(), rtol=1e-15)


def test_empty_block_gives_zero_sums():
    loss = LOSSES["logistic"]
    sums = loss_gradient_sums(loss, np.empty((0, 3)), np.empty(0), np.empty(0),
                              np.ones((3, 1)), np.ones(1))
    assert sums.loss == 0.0 and sums.weight == 0.0 and sums.count == 0
    np.testing.assert_array_equal(sums.grad, np.zeros(4))


def test_get_loss_unknown_name():
    assert get_loss("squared") is LOSSES["squared"]
    with pytest.raises(ValueError, match="unknown loss 'no_such_loss'"):
        get_loss("no_such_loss")


# --------------------------------------------------------------------------- merge
@pytest.mark.parametrize("loss_name", BASIC_LOSSES)
@pytest.mark.parametrize("sizes", [[1], [17, 0, 40], [99, 1, 0, 50, 3]])
def test_merge_over_chunks_equals_whole_array(loss_name, sizes):
    loss = LOSSES[loss_name]
    X, y, w = _data(loss_name, n=200, d=4, seed=4)
    coef = np.array([[0.2], [-0.1], [0.05], [0.3]])
    intercept = np.array([-0.4])
    whole = loss_gradient_sums(loss, X, y, w, coef, intercept)
    parts = [loss_gradient_sums(loss, X[s], y[s], w[s], coef, intercept)
             for s in _chunks(len(y), sizes)]
    merged = reduce(merge, parts)
    assert merged.count == whole.count == 200
    assert merged.weight == pytest.approx(whole.weight, rel=1e-13)
    assert merged.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(merged.grad, whole.grad, rtol=1e-11, atol=1e-11)
    # the zero element is an identity
    with_zero = reduce(merge, parts, LossGradient.zero(5))
    assert with_zero.loss == merged.loss and with_zero.count == merged.count
    np.testing.assert_array_equal(with_zero.grad, merged.grad)


def test_merge_is_associative():
    rng = np.random.default_rng(5)
    a, b, c = (LossGradient(float(rng.normal()), rng.normal(size=6), float(rng.uniform(1, 5)),
                            int(rng.integers(1, 100))) for _ in range(3))
    left = merge(merge(a, b), c)
    right = merge(a, merge(b, c))
    assert left.count == right.count == a.count + b.count + c.count
    assert left.loss == pytest.approx(right.loss, rel=1e-14)
    assert left.weight == pytest.approx(right.weight, rel=1e-14)
    np.testing.assert_allclose(left.grad, right.grad, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(left.grad, a.grad + b.grad + c.grad, rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------------- stats
def _weighted_moments(X, w):
    mean = np.average(X, axis=0, weights=w)
    var = np.array([np.cov(X[:, j], aweights=w) for j in range(X.shape[1])])  # reliability
    return mean, var


@pytest.mark.parametrize("sizes", [[0], [1, 1], [13, 50, 0, 7], [100]])
def test_merged_stats_match_numpy_weighted_moments(sizes):
    X, y, w = _data("squared", n=180, d=4, seed=6)
    parts = [block_stats(X[s], y[s], w[s]) for s in _chunks(len(y), sizes)]
    stats = reduce(merge_stats, parts, BlockStats.empty(4))
    mean, var = _weighted_moments(X, w)
    assert stats.count == 180
    assert stats.weight_sum == pytest.approx(w.sum(), rel=1e-13)
    assert stats.weight_sq_sum == pytest.approx(np.dot(w, w), rel=1e-13)
    assert stats.label_sum == pytest.approx(np.dot(w, y), rel=1e-12)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.variance(), var, rtol=1e-11)
    np.testing.assert_allclose(stats.std(), np.sqrt(var), rtol=1e-11)
    assert stats.label_min == y.min() and stats.label_max == y.max()


def test_unit_weights_give_sample_variance():
    X, y, _ = _data("squared", n=60, d=3, seed=7)
    w = np.ones(60)
    stats = merge_stats(block_stats(X[:25], y[:25], w[:25]), block_stats(X[25:], y[25:], w[25:]))
    np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.variance(), X.var(axis=0, ddof=1), rtol=1e-12)


def test_constant_feature_and_single_row_have_zero_variance():
    X = np.column_stack([np.full(10, 3.0), np.arange(10.0)])
    stats = block_stats(X, np.zeros(10), np.ones(10))
    assert stats.variance()[0] == pytest.approx(0.0, abs=1e-24)
    one = block_stats(np.array([[1.0, 2.0]]), np.array([1.0]), np.array([1.0]))
    np.testing.assert_array_equal(one.variance(), [0.0, 0.0])
    np.testing.assert_array_equal(BlockStats.empty(2).variance(), [0.0, 0.0])


def test_nonfinite_values_are_counted_and_left_out_of_moments():
    X, y, w = _data("squared", n=120, d=3, seed=8)
    X[[3, 10, 50], 1] = [np.nan, np.inf, -np.inf]
    X[70, 2] = np.nan
    y[[5, 90]] = [np.nan, np.inf]
    w[[7]] = np.nan
    w[[20, 21]] = -1.0
    parts = [block_stats(X[s], y[s], w[s], bad_vector_rows=2) for s in _chunks(120, [40, 40])]
    stats = reduce(merge_stats, parts)
    np.testing.assert_array_equal(stats.nonfinite_features, [0, 3, 1])
    assert stats.nonfinite_labels == 2
    assert stats.nonfinite_weights == 1
    assert stats.negative_weights == 2
    assert stats.bad_vector_rows == 6
    assert stats.count == 120
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y) & np.isfinite(w)
    Xo, wo = X[ok], w[ok]  # still holds the negative weights: validation rejects them later
    mean = (wo @ Xo) / wo.sum()
    var = (wo @ (Xo - mean) ** 2) / (wo.sum() - np.dot(wo, wo) / wo.sum())
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.weight_sum, w[ok].sum(), rtol=1e-13)
    np.testing.assert_allclose(stats.variance(), var, rtol=1e-10)
    assert np.isfinite(stats.label_min) and np.isfinite(stats.label_max)


def test_label_values_tracked_and_merged():
    X = np.zeros((6, 1))
    a = block_stats(X[:3], np.array([0.0, 1.0, 1.0]), np.ones(3))
    b = block_stats(X[3:], np.array([1.0, 2.5, np.nan]), np.ones(3))
    merged = merge_stats(a, b)
    np.testing.assert_array_equal(a.label_values, [0.0, 1.0])
    np.testing.assert_array_equal(merged.label_values, [0.0, 1.0, 2.5])
    assert merged.non_integer_labels == 1
    assert merged.label_min == 0.0 and merged.label_max == 2.5
    assert merged.nonfinite_labels == 1
    # an empty block leaves them unchanged
    again = merge_stats(merged, BlockStats.empty(1))
    np.testing.assert_array_equal(again.label_values, [0.0, 1.0, 2.5])


def test_label_values_give_up_past_the_limit():
    many = np.arange(MAX_TRACKED_LABELS + 1, dtype=float)
    X = np.zeros((many.size, 1))
    assert block_stats(X, many, np.ones(many.size)).label_values is None
    # each half fits, the union does not
    half = many.size // 2 + 1
    a = block_stats(X[:half], many[:half], np.ones(half))
    b = block_stats(X[half:], many[half:], np.ones(many.size - half))
    assert a.label_values is not None and b.label_values is not None
    assert merge_stats(a, b).label_values is None
    # once lost, stays lost
    assert merge_stats(merge_stats(a, b), a).label_values is None


def test_merge_stats_with_zero_weight_side():
    X, y, w = _data("squared", n=30, d=2, seed=9)
    full = block_stats(X, y, w)
    zero = block_stats(X[:5], y[:5], np.zeros(5))
    merged = merge_stats(zero, full)
    np.testing.assert_allclose(merged.mean, full.mean, rtol=1e-15)
    np.testing.assert_allclose(merged.m2, full.m2, rtol=1e-15)
    assert merged.count == 35
    assert merge_stats(full, zero).weight_sum == full.weight_sum
