"""Per-row losses of generalized linear models and their margin derivatives.

A model computes margins ``M = X @ coef + intercept`` (``n × k``; ``k = 1``
except for the multinomial family).  A loss turns margins and labels into a
per-row loss and ``dloss/dM``; :func:`loss_gradient_sums` does the rest and is
what each Spark partition runs on its block.

The family
----------
``logistic``
    Binary log-loss, labels 0/1 (MLlib ``LogisticRegression``, binomial).
``squared``
    Half squared error, real labels (MLlib ``LinearRegression``).
``hinge``
    Linear SVM hinge loss, labels 0/1 (MLlib ``LinearSVC``).
``huber``
    MLlib ``LinearRegression(loss="huber")`` / scikit-learn ``HuberRegressor``:
    joint estimation of the coefficients and a scale ``σ``, with MLlib's factor
    ½ (``½(σ + H(r/σ)·σ)`` per row).  ``σ`` travels as one *extra variable*
    (``Loss.n_extra == 1``), the parameter ``log σ``.
``multinomial``
    Softmax cross-entropy over ``k`` classes, labels ``0 … k−1``.

Parameter layout
----------------
Gradients (and Hessians) are taken with respect to the flat vector
``[coef.ravel(), intercept, extra]``: ``coef`` of shape ``(d, k)`` in C order,
then the ``k`` intercepts, then the loss's ``n_extra`` extra variables (none
except for ``huber``).  Note that ``[coef.ravel(), intercept]`` is the C-order
ravel of ``vstack([coef, intercept])``, i.e. of the ``(d+1, k)`` matrix acting
on the augmented rows ``[x, 1]``; the Hessian code relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from sparkml_aiaas.core.matrices import as_float64, gram, is_sparse, row_slice
from sparkml_aiaas.core.merge import LossGradient, merge

ArrayPair = Tuple[np.ndarray, np.ndarray]
ArrayTriple = Tuple[np.ndarray, np.ndarray, np.ndarray]

#: Values :attr:`Loss.label_domain` may take.
LABEL_DOMAINS = ("binary", "real", "class_index")


# --------------------------------------------------------------------------- logistic
def _sigmoid(m: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so no overflow for huge |m|.
    e = np.exp(-np.abs(m))
    return np.where(m >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _logistic(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Binary log-loss for labels in {0, 1}: ``log(1 + e^m) - y·m``."""
    m = margin[:, 0]
    loss = np.logaddexp(0.0, m) - y * m
    return loss, (_sigmoid(m) - y)[:, None]


def _logistic_curvature(margin: np.ndarray, y: np.ndarray, extra: np.ndarray) -> ArrayTriple:
    """``ℓ''(m) = p(1 − p)``."""
    p = _sigmoid(margin[:, 0])
    n = margin.shape[0]
    return (p * (1.0 - p))[:, None, None], np.zeros((n, 1, 0)), np.zeros((n, 0, 0))


# --------------------------------------------------------------------------- squared
def _squared(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Half squared error ``(m - y)² / 2``, MLlib's least-squares loss."""
    r = margin[:, 0] - y
    return 0.5 * r * r, r[:, None]


def _squared_curvature(margin: np.ndarray, y: np.ndarray, extra: np.ndarray) -> ArrayTriple:
    """``ℓ''(m) = 1``."""
    n = margin.shape[0]
    return np.ones((n, 1, 1)), np.zeros((n, 1, 0)), np.zeros((n, 0, 0))


# --------------------------------------------------------------------------- hinge
def _hinge(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Hinge loss ``max(0, 1 − y±·m)`` with ``y± = 2y − 1`` for labels in {0, 1}.

    The returned derivative is the subgradient MLlib's ``HingeAggregator``
    uses: ``−y±`` where ``1 − y±·m > 0`` and ``0`` elsewhere (including the
    kink itself, where any value in ``[−y±, 0]`` would do).
    """
    signed = 2.0 * y - 1.0
    slack = 1.0 - signed * margin[:, 0]
    active = slack > 0.0
    return np.where(active, slack, 0.0), np.where(active, -signed, 0.0)[:, None]


# --------------------------------------------------------------------------- huber
def _huber(margin: np.ndarray, y: np.ndarray, extra: np.ndarray, *, epsilon: float) -> ArrayTriple:
    """MLlib's Huber loss with a jointly estimated scale ``σ = exp(extra[0])``.

    Per row, with ``r = y − m``, MLlib's ``HuberAggregator``::

        ℓ = ½(σ + H_ε(r/σ)·σ) = ½(σ + r²/σ)              if |r| ≤ εσ
                              = ½(σ + 2ε|r| − ε²σ)        otherwise

    (scikit-learn's ``HuberRegressor`` sums the same without the ½).
    Returns the loss, ``dℓ/dm`` and ``dℓ/d(log σ) = σ·dℓ/dσ``.
    """
    sigma = float(np.exp(extra[0]))
    r = y - margin[:, 0]
    abs_r = np.abs(r)
    # The same "outlier" test as MLlib's and scikit-learn's (|r| > εσ) so the split agrees.
    inner = abs_r <= epsilon * sigma
    loss = np.where(
        inner, 0.5 * (sigma + r * r / sigma),
        0.5 * (sigma + 2.0 * epsilon * abs_r - epsilon**2 * sigma),
    )
    dmargin = np.where(inner, -r / sigma, -epsilon * np.sign(r))
    # dℓ/dσ = ½(1 − r²/σ²) (inner) or ½(1 − ε²) (outer); times σ for the log σ variable.
    dlog_sigma = np.where(inner, 0.5 * (sigma - r * r / sigma), 0.5 * sigma * (1.0 - epsilon**2))
    return loss, dmargin[:, None], dlog_sigma[:, None]


def _huber_curvature(
    margin: np.ndarray, y: np.ndarray, extra: np.ndarray, *, epsilon: float
) -> ArrayTriple:
    """Second derivatives in ``(m, s = log σ)``.

    Inner rows: ``ℓ_mm = 1/σ``, ``ℓ_ms = r/σ``, ``ℓ_ss = ½(σ + r²/σ)``;
    outer rows: ``ℓ_mm = ℓ_ms = 0``, ``ℓ_ss = ½σ(1 − ε²)`` — negative for
    ``ε > 1``, so away from the optimum the full Hessian can be indefinite in
    the ``log σ`` direction (the objective is jointly convex in ``(w, σ)`` but
    not in ``(w, log σ)``).
    """
    sigma = float(np.exp(extra[0]))
    r = y - margin[:, 0]
    inner = np.abs(r) <= epsilon * sigma
    h_mm = np.where(inner, 1.0 / sigma, 0.0)
    h_ms = np.where(inner, r / sigma, 0.0)
    h_ss = np.where(inner, 0.5 * (sigma + r * r / sigma), 0.5 * sigma * (1.0 - epsilon**2))
    return h_mm[:, None, None], h_ms[:, None, None], h_ss[:, None, None]


# --------------------------------------------------------------------------- multinomial
def _class_indices(y: np.ndarray, k: int) -> np.ndarray:
    """Labels as integer class indices, refusing anything a fancy index would misread."""
    idx = y.astype(np.int64)
    # A negative index would silently wrap around and a fractional one truncate, so check
    # here too (validate_training_stats gives users the friendly message beforehand).
    if y.size and (idx.min() < 0 or idx.max() >= k or np.any(idx != y)):
        bad = np.unique(y[(idx < 0) | (idx >= k) | (idx != y)])[:5]
        shown = ", ".join(f"{v:g}" for v in bad)
        raise ValueError(f"multinomial labels must be class indices 0..{k - 1}; found {shown}")
    return idx


def _softmax(margin: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax and log-sum-exp, shifted by the row maximum so nothing overflows."""
    top = margin.max(axis=1, keepdims=True)
    e = np.exp(margin - top)
    total = e.sum(axis=1, keepdims=True)
    return e / total, (top + np.log(total))[:, 0]


def _multinomial(margin: np.ndarray, y: np.ndarray) -> ArrayPair:
    """Softmax cross-entropy ``logsumexp(m) − m_y``; ``dℓ/dm = softmax(m) − onehot(y)``."""
    n, k = margin.shape
    idx = _class_indices(y, k)
    prob, lse = _softmax(margin)
    rows = np.arange(n)
    loss = lse - margin[rows, idx]
    grad = prob
    grad[rows, idx] -= 1.0
    return loss, grad


def _multinomial_curvature(margin: np.ndarray, y: np.ndarray, extra: np.ndarray) -> ArrayTriple:
    """``d²ℓ/dm² = diag(p) − p pᵀ`` per row (independent of the label)."""
    n, k = margin.shape
    prob, _ = _softmax(margin)
    h = -prob[:, :, None] * prob[:, None, :]
    h[:, np.arange(k), np.arange(k)] += prob
    return h, np.zeros((n, k, 0)), np.zeros((n, 0, 0))


# --------------------------------------------------------------------------- Loss
@dataclass(frozen=True)
class Loss:
    """A per-row loss of the margins ``M = X @ coef + intercept`` (``n × k``).

    Attributes
    ----------
    name : str
    evaluate : callable
        Without extra variables (``n_extra == 0``):
        ``evaluate(margin (n×k), y (n,)) -> (loss (n,), dloss/dmargin (n×k))``.
        With extra variables:
        ``evaluate(margin, y, extra (n_extra,))
        -> (loss, dloss/dmargin, dloss/dextra (n×n_extra))``.
        :meth:`derivatives` calls either form uniformly.
    label_domain : str
        The labels the loss accepts: ``"binary"`` (0/1), ``"real"`` (any
        finite value) or ``"class_index"`` (0, 1, …, k−1);
        :func:`sparkml_aiaas.core.glm.validate_training_stats` checks it.
    n_extra : int
        Number of loss-owned scalar variables optimized along with the
        coefficients, appended after the intercepts in the parameter vector
        (``huber``: 1, the log of its scale ``σ``).
    extra_init : tuple of float
        A starting point for those variables (``huber``: ``log σ = 0``, i.e.
        ``σ = 1`` as scikit-learn and MLlib start).
    curvature : callable or None
        ``curvature(margin, y, extra) -> (d²ℓ/dm² (n×k×k), d²ℓ/dm dextra
        (n×k×n_extra), d²ℓ/dextra² (n×n_extra×n_extra))`` for
        :func:`hessian_sums`; ``None`` when Newton's method cannot use the loss.
    no_hessian_reason : str
        Why ``curvature`` is ``None`` (used in the error message).
    """

    name: str
    evaluate: Callable[..., tuple]
    label_domain: str
    n_extra: int = 0
    extra_init: Tuple[float, ...] = ()
    curvature: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray], ArrayTriple]] = None
    no_hessian_reason: str = ""

    def __post_init__(self):
        if self.label_domain not in LABEL_DOMAINS:
            raise ValueError(
                f"label_domain must be one of {LABEL_DOMAINS}, got {self.label_domain!r}"
            )
        if len(self.extra_init) != self.n_extra:
            raise ValueError(
                f"extra_init must hold {self.n_extra} values, got {len(self.extra_init)}"
            )

    def n_params(self, n_features: int, n_outputs: int = 1) -> int:
        """Length of ``[coef.ravel(), intercept, extra]`` (the gradient's length)."""
        return n_features * n_outputs + n_outputs + self.n_extra

    def check_extra(self, extra: Optional[np.ndarray]) -> np.ndarray:
        """``extra`` as a float array of length ``n_extra``; missing or wrong-sized is an error."""
        if extra is None:
            if self.n_extra:
                raise ValueError(
                    f"the {self.name} loss needs {self.n_extra} extra variable(s) after the "
                    f"intercept (see Loss.n_extra); none were given"
                )
            return np.zeros(0)
        extra = np.asarray(extra, dtype=float).reshape(-1)
        if extra.shape[0] != self.n_extra:
            raise ValueError(
                f"the {self.name} loss takes {self.n_extra} extra variable(s), got {extra.shape[0]}"
            )
        return extra

    def derivatives(
        self, margin: np.ndarray, y: np.ndarray, extra: Optional[np.ndarray] = None
    ) -> ArrayTriple:
        """``(loss (n,), dloss/dmargin (n×k), dloss/dextra (n×n_extra))`` for either form."""
        extra = self.check_extra(extra)
        if self.n_extra:
            return self.evaluate(margin, y, extra)
        row_loss, dmargin = self.evaluate(margin, y)
        return row_loss, dmargin, np.zeros((margin.shape[0], 0))


def huber_loss(epsilon: float = 1.35) -> Loss:
    """The Huber loss of MLlib's ``LinearRegression(loss="huber")`` with robustness ``epsilon``.

    The objective MLlib minimizes is ``½·mean_w[σ + H_ε(rᵢ/σ)·σ] + ½·reg·‖w‖²``
    over the coefficients *and* the scale ``σ > 0``; this loss is the first term
    per row.  scikit-learn's ``HuberRegressor`` minimizes
    ``Σᵢ wᵢ[σ + H_ε(rᵢ/σ)·σ] + α‖w‖²``, which is ``2·Σw`` times MLlib's, so
    ``α = Σw·reg`` (``n·reg`` unweighted; with ``standardization=False``).
    MLlib keeps ``σ`` positive with an L-BFGS-B bound and scikit-learn with an
    L-BFGS-B bound too; here the extra variable is ``s = log σ`` instead, so
    the plain unconstrained optimizers (L-BFGS, OWL-QN, gradient descent) can
    run on it unchanged.  The fitted scale is ``exp(s)``.  ``s`` is not
    penalized and not standardized.

    Parameters
    ----------
    epsilon : float, default 1.35
        Residuals beyond ``epsilon·σ`` are treated linearly; must be > 1 as
        in MLlib (1.35 gives 95% efficiency on normal noise).
    """
    epsilon = float(epsilon)
    if not epsilon > 1.0:
        raise ValueError(f"huber epsilon must be > 1.0, got {epsilon!r}")
    # functools.partial keeps the Loss picklable for Spark tasks (a closure would not be).
    return Loss(
        "huber",
        partial(_huber, epsilon=epsilon),
        "real",
        n_extra=1,
        extra_init=(0.0,),
        curvature=partial(_huber_curvature, epsilon=epsilon),
    )


LOSSES: Dict[str, Loss] = {
    "logistic": Loss("logistic", _logistic, "binary", curvature=_logistic_curvature),
    "squared": Loss("squared", _squared, "real", curvature=_squared_curvature),
    "hinge": Loss(
        "hinge", _hinge, "binary",
        no_hessian_reason=(
            "the hinge loss is piecewise linear: its second derivative is zero almost everywhere, "
            "so Newton's method has no curvature to use; use an L-BFGS/OWL-QN optimizer as "
            "MLlib's LinearSVC does"
        ),
    ),
    "huber": huber_loss(1.35),
    "multinomial": Loss(
        "multinomial", _multinomial, "class_index", curvature=_multinomial_curvature
    ),
}

# Losses that take options, by name (get_loss(name, **options) builds them).
_LOSS_FACTORIES: Dict[str, Callable[..., Loss]] = {"huber": huber_loss}


def get_loss(name: str, **options) -> Loss:
    """The loss registered as ``name``; ``options`` (e.g. huber's ``epsilon``) build a variant."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    if not options:
        return LOSSES[name]
    if name not in _LOSS_FACTORIES:
        raise ValueError(f"the {name} loss takes no options, got {sorted(options)}")
    return _LOSS_FACTORIES[name](**options)


# --------------------------------------------------------------------------- block sums
def loss_gradient_sums(
    loss: Loss,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    extra: Optional[np.ndarray] = None,
    *,
    with_hessian: bool = False,
) -> LossGradient:
    """Weighted loss and gradient *sums* over one block of rows.

    Parameters
    ----------
    loss : Loss
    X : ndarray or scipy.sparse.csr_matrix of shape (n, d)
        float64 or float32 values; a float32 chunk is upcast before any
        arithmetic, and a CSR block is never densified.
    y : ndarray of shape (n,)
    w : ndarray of shape (n,)
        Non-negative row weights.
    coef : ndarray of shape (d, k)
    intercept : ndarray of shape (k,)
    extra : ndarray of shape (loss.n_extra,), optional
        The loss's extra variables (``huber``: ``[log σ]``); required exactly
        when ``loss.n_extra > 0``.
    with_hessian : bool, default False
        Also return the Hessian of the weighted loss sum (see
        :func:`hessian_sums`) in the result's ``hessian`` field.

    Returns
    -------
    LossGradient
        ``loss = Σ wᵢ lossᵢ``, ``grad`` = gradient of that sum with respect to
        ``[coef.ravel(), intercept, extra]``, ``weight = Σ wᵢ``, ``count = n``
        and ``hessian`` (``None`` unless asked for).  Dividing by ``weight``
        gives the weighted mean loss and its derivatives.
    """
    d, k = coef.shape
    extra = loss.check_extra(extra)
    n = X.shape[0]
    if n == 0:
        return LossGradient.zero(loss.n_params(d, k), with_hessian=with_hessian)
    # Rows go through in cache-sized chunks: the second product (Xᵀr) then reads the
    # chunk from cache instead of sweeping the whole block from memory a second time,
    # which halves the memory traffic of a pass.
    # A CSR block goes through the same chunks (zero-copy row slices), and a float32 block
    # is upcast a chunk at a time: the kernels compute in float64 and the chunk sums merge
    # in float64, so storage precision is the only difference from a float64 block.
    rows = _rows_per_chunk(X, k)
    total = None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        part = _chunk_sums(loss, as_float64(row_slice(X, start, stop)), y[start:stop],
                           w[start:stop], coef, intercept, extra, with_hessian)
        total = part if total is None else merge(total, part)
    return total



class SumsRequest(NamedTuple):
    """One model's share of a batched pass: the arguments of :func:`loss_gradient_sums`."""

    loss: Loss
    coef: np.ndarray
    intercept: np.ndarray
    extra: Optional[np.ndarray] = None
    with_hessian: bool = False


def loss_gradient_sums_many(requests: Sequence[SumsRequest], X, y: np.ndarray,
                            w: np.ndarray) -> List[LossGradient]:
    """:func:`loss_gradient_sums` of every request over the same block, bit for bit.

    Each cache-sized chunk of rows is read (and, for a float32 block, upcast) once and
    serves every request whose chunk size is the same, instead of each request sweeping
    the whole block from memory.  Per request, the chunks, the kernel and the order of
    the merges are exactly those of :func:`loss_gradient_sums`, so the sums are identical
    to calling it once per request (``fitMultiple`` relies on that).
    """
    n = X.shape[0]
    results: List[Optional[LossGradient]] = [None] * len(requests)
    by_chunk_size: Dict[int, list] = {}
    for index, request in enumerate(requests):
        d, k = request.coef.shape
        extra = request.loss.check_extra(request.extra)
        if n == 0:
            results[index] = LossGradient.zero(request.loss.n_params(d, k),
                                               with_hessian=request.with_hessian)
            continue
        # The chunk size depends on k for a CSR block: group requests that chunk alike.
        by_chunk_size.setdefault(_rows_per_chunk(X, k), []).append((index, request, extra))
    for rows, members in by_chunk_size.items():
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            chunk = as_float64(row_slice(X, start, stop))
            for index, request, extra in members:
                part = _chunk_sums(request.loss, chunk, y[start:stop], w[start:stop],
                                   request.coef, request.intercept, extra,
                                   request.with_hessian)
                total = results[index]
                results[index] = part if total is None else merge(total, part)
    return results


#: Bytes of feature data per chunk of rows: comfortably inside a core's L2/L3 share.
CHUNK_BYTES = 1 << 21


def chunk_rows(n_features: int, itemsize: int = 8) -> int:
    """Rows per chunk of a pass (at least 256)."""
    return max(256, CHUNK_BYTES // max(1, n_features * itemsize))


def _rows_per_chunk(X, n_outputs: int) -> int:
    """Rows per chunk of ``X``, sized by the float64 working copy of a chunk: dense rows of
    ``d`` doubles, or a CSR row's stored entries (double value + column index) and margins."""
    if not is_sparse(X):
        return chunk_rows(X.shape[1], 8)
    entries_per_row = X.nnz / max(1, X.shape[0])
    per_row = entries_per_row * (8 + X.indices.dtype.itemsize) + 8 * n_outputs
    return max(256, int(CHUNK_BYTES // max(1.0, per_row)))


def _chunk_sums(loss: Loss, X, y, w, coef, intercept, extra, with_hessian: bool) -> LossGradient:
    margin = X @ coef
    margin += intercept
    row_loss, dmargin, dextra = loss.derivatives(margin, y, extra)
    dmargin *= w[:, None]
    parts = [(X.T @ dmargin).ravel(), dmargin.sum(axis=0)]
    if loss.n_extra:
        parts.append(w @ dextra)
    hessian = _hessian_from_margin(loss, X, y, w, margin, extra) if with_hessian else None
    return LossGradient(
        float(np.dot(w, row_loss)), np.concatenate(parts), float(w.sum()), int(X.shape[0]), hessian
    )


def hessian_sums(
    loss: Loss,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    extra: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Hessian of ``Σ wᵢ lossᵢ`` over one block, for Newton's method.

    With ``x̃ᵢ = [xᵢ, 1]`` and ``k = 1`` this is ``Σ wᵢ ℓ''(mᵢ) x̃ᵢ x̃ᵢᵀ``; in
    general it is the Hessian with respect to ``[coef.ravel(), intercept,
    extra]``, of size ``loss.n_params(d, k)`` squared, and it merges across
    blocks by addition.

    Notes
    -----
    * ``multinomial``: ``Σ wᵢ (diag(pᵢ) − pᵢpᵢᵀ) ⊗ x̃ᵢx̃ᵢᵀ``.  It is singular
      (adding the same vector to every class column does not change the
      loss); only the L2 penalty makes the Newton system solvable.
    * ``huber``: the last row/column is ``log σ``.  The ``[:-1, :-1]`` block
      (coefficients and intercept at fixed σ) is positive semidefinite, but
      the full matrix can be indefinite away from the optimum, since outlier
      rows contribute ``σ(1 − ε²) < 0`` to the ``log σ`` diagonal; a Newton
      solver must damp or fall back.  (At a stationary point it is PSD.)
    * ``hinge`` has no usable Hessian: this raises :class:`ValueError`.

    Returns
    -------
    ndarray of shape (P, P) with ``P = loss.n_params(d, k)``
    """
    _require_curvature(loss)
    return loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=True).hessian


def _require_curvature(loss: Loss) -> None:
    if loss.curvature is None:
        raise ValueError(
            f"Newton's method does not support the {loss.name} loss: "
            f"{loss.no_hessian_reason or 'it has no Hessian'}"
        )


def _hessian_from_margin(
    loss: Loss, X: np.ndarray, y: np.ndarray, w: np.ndarray, margin: np.ndarray, extra: np.ndarray
) -> np.ndarray:
    _require_curvature(loss)
    n, d = X.shape
    k = margin.shape[1]
    e = loss.n_extra
    h_mm, h_me, h_ee = loss.curvature(margin, y, extra)
    h_mm = h_mm * w[:, None, None]
    # Laid out as (d+1, k, d+1, k): parameter (j, a) is coef[j, a], or intercept[a] for j = d.
    block = np.empty((d + 1, k, d + 1, k))
    for a in range(k):
        for b in range(a, k):
            c = h_mm[:, a, b]
            # x̃ᵀ diag(c) x̃ by blocks, without materializing the augmented X.
            xc = X.T @ c
            sub = np.empty((d + 1, d + 1))
            sub[:d, :d] = gram(X, c)  # Xᵀ diag(c) X; a CSR X stays sparse
            sub[:d, d] = xc
            sub[d, :d] = xc
            sub[d, d] = c.sum()
            block[:, a, :, b] = sub
            if b != a:
                block[:, b, :, a] = sub
    n_lin = (d + 1) * k
    H = np.empty((n_lin + e, n_lin + e))
    H[:n_lin, :n_lin] = block.reshape(n_lin, n_lin)
    if e:
        h_me = h_me * w[:, None, None]
        # cross[(j, a), f] = Σᵢ x̃ᵢⱼ h_me[i, a, f]
        x_h = np.asarray(X.T @ h_me.reshape(n, k * e)).reshape(d, k, e)  # dense or CSR X
        cross = np.concatenate([x_h, h_me.sum(axis=0)[None]], axis=0)
        cross = cross.reshape(n_lin, e)
        H[:n_lin, n_lin:] = cross
        H[n_lin:, :n_lin] = cross.T
        H[n_lin:, n_lin:] = np.einsum("i,ief->ef", w, h_ee)
    return H
