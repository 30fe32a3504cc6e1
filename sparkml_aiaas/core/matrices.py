"""Row operations on a block's feature matrix, dense (numpy) or CSR (``scipy.sparse``).

A block's ``X`` is a row-major numpy array (possibly a read-only memory map)
or a ``scipy.sparse.csr_matrix`` built over memory-mapped ``data``,
``indices`` and ``indptr``; either may hold float32 or float64 values.  The
kernels (:mod:`sparkml_aiaas.core.losses`, :mod:`sparkml_aiaas.core.stats`,
:mod:`sparkml_aiaas.core.stochastic`) go through these helpers so that one
code path serves every layout: slicing, fancy row indexing, scaling rows and
upcasting to float64 never densify a sparse block.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import scipy.sparse as sp

Matrix = Union[np.ndarray, sp.spmatrix]


def is_sparse(X) -> bool:
    return sp.issparse(X)


def row_slice(X: Matrix, start: int, stop: int) -> Matrix:
    """Rows ``start:stop``: a view for dense ``X``; for CSR, a matrix over slices of its
    arrays (no copy of the values or column indices)."""
    if not is_sparse(X):
        return X[start:stop]
    if X.format != "csr":
        return X[start:stop]
    indptr = X.indptr[start:stop + 1]
    lo, hi = int(indptr[0]), int(indptr[-1])
    # The constructor would copy: its format check "prunes" (copies) any array that is a view
    # of one over twice its size, i.e. every chunk.  The slices are a valid CSR as they are.
    chunk = sp.csr_matrix((stop - start, X.shape[1]), dtype=X.dtype)
    chunk.data, chunk.indices = X.data[lo:hi], X.indices[lo:hi]
    chunk.indptr = (indptr - lo).astype(X.indices.dtype, copy=False)
    return chunk


def take_rows(X: Matrix, rows: np.ndarray) -> Matrix:
    """``X[rows]`` for integer row indices (a copy), dense or sparse."""
    if is_sparse(X):
        return X[rows]
    return np.asarray(X)[rows]


def as_float64(X: Matrix) -> Matrix:
    """``X`` with float64 values: unchanged when it already is, else an upcast copy."""
    if X.dtype == np.float64:
        return X
    if is_sparse(X):
        return X.astype(np.float64)
    return np.asarray(X, dtype=np.float64)


def scale_rows(X: Matrix, c: np.ndarray) -> Matrix:
    """``diag(c) @ X``: each row times its entry of ``c`` (sparse stays sparse)."""
    if is_sparse(X):
        X = X.tocsr()
        return sp.csr_matrix((X.data * np.repeat(c, np.diff(X.indptr)), X.indices, X.indptr),
                             shape=X.shape)
    return X * c[:, None]


def gram(X: Matrix, c: np.ndarray) -> np.ndarray:
    """``Xᵀ diag(c) X`` as a dense ``(d, d)`` array."""
    if is_sparse(X):
        product = X.T @ scale_rows(X, c)
        return product.toarray() if is_sparse(product) else np.asarray(product)
    return X.T @ (X * c[:, None])

