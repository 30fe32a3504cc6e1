"""Fitted scikit-learn trees checked before they predict.

skops rebuilds a fitted estimator from the types it is allowed to (see
:mod:`sparkml_aiaas.models.sklearn_predictor`), but the *values* it restores are the file's:
a decision tree's node array is handed to Cython code that follows child indices without
bounds checks, so an edited ``model.skops`` (its sha256 in metadata.json rewritten too)
with a child index past the end reads foreign memory or crashes the process, and one with
a cycle never returns.  :func:`check_fitted` walks a loaded estimator and refuses
(:class:`ModelFormatError`), before any prediction:

* a ``sklearn.tree._tree.Tree`` (decision trees, random forests, extra trees, gradient
  boosting) whose children are not ``-1`` in pairs or other nodes, whose nodes are not a
  tree from the root, or whose splits read a feature it does not have;
* a histogram gradient boosting predictor likewise, and any categorical split or bin
  mapper in one (their bitsets are written from file values in Cython).

Other Cython-backed estimators (libsvm's SVC/SVR, the neighbors' KD/ball trees, ...) are not
checked structure by structure: load those only from sources you trust (a signed registry).
No pyspark import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkml_aiaas.errors import ModelFormatError

__all__ = ["check_fitted"]

#: How deep the walk goes through estimators, lists and dicts (Pipelines, ensembles).
MAX_DEPTH = 12


def _check_nodes(left: np.ndarray, right: np.ndarray, leaf: np.ndarray, feature: np.ndarray,
                 n_features: int, what: str) -> None:
    n = left.shape[0]
    if n < 1:
        raise ModelFormatError(f"{what} has no nodes")
    internal = ~leaf
    for children in (left[internal], right[internal]):
        if children.size and (children.min() < 1 or children.max() >= n):
            raise ModelFormatError(f"{what}: a child index is outside [1, {n})")
    features = feature[internal]
    if features.size and (features.min() < 0 or features.max() >= n_features):
        raise ModelFormatError(f"{what}: a split reads a feature outside [0, {n_features})")
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:
        frontier = frontier[internal[frontier]]
        children = np.concatenate([left[frontier], right[frontier]]).astype(np.int64)
        if children.size and (seen[children].any() or np.unique(children).size != children.size):
            raise ModelFormatError(f"{what}: a node is reached twice (a cycle or a shared "
                                   "subtree)")
        seen[children] = True
        frontier = children


def _check_tree(tree, what: str) -> None:
    state = tree.__getstate__()
    nodes = state["nodes"]
    if int(state["node_count"]) != nodes.shape[0] or state["values"].shape[0] != nodes.shape[0]:
        raise ModelFormatError(f"{what}: node_count, nodes and values disagree")
    left, right = nodes["left_child"], nodes["right_child"]
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise ModelFormatError(f"{what}: a node has one child")
    _check_nodes(left, right, leaf, nodes["feature"], int(tree.n_features), what)


def _check_hist_predictor(predictor, n_features: int, what: str) -> None:
    nodes = predictor.nodes
    if nodes.ndim != 1 or nodes.dtype.names is None or "is_leaf" not in nodes.dtype.names:
        raise ModelFormatError(f"{what}: malformed node array")
    if nodes["is_categorical"].any():
        raise ModelFormatError(f"{what}: categorical splits cannot be verified and are not "
                               "loaded")
    leaf = nodes["is_leaf"] != 0
    _check_nodes(nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf,
                 nodes["feature_idx"], n_features, what)


def check_fitted(estimator: Any) -> None:
    """Refuse a loaded estimator holding a tree that is not one (see the module doc)."""
    from sklearn.tree._tree import Tree

    try:
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    except ImportError:  # pragma: no cover - a scikit-learn without it
        TreePredictor = ()

    seen = set()

    def walk(obj: Any, depth: int, where: str) -> None:
        if depth > MAX_DEPTH or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_tree(obj, f"the tree at {where}")
        elif TreePredictor and isinstance(obj, TreePredictor):
            # Checked with their model (which knows the feature count); anywhere else, refused.
            raise ModelFormatError(f"{where} is a histogram tree outside its model")
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                walk(item, depth + 1, f"{where}[{i}]")
        elif isinstance(obj, dict):
            for key, item in obj.items():
                walk(item, depth + 1, f"{where}[{key!r}]")
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            for i, item in enumerate(obj.ravel()):
                walk(item, depth + 1, f"{where}[{i}]")
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn."):
            if hasattr(obj, "_predictors"):
                _check_hist_gradient_boosting(obj, where)
            for key, item in vars(obj).items():
                walk(item, depth + 1, f"{where}.{key}")

    def _check_hist_gradient_boosting(model, where: str) -> None:
        n_features = getattr(model, "n_features_in_", None)
        if not isinstance(n_features, (int, np.integer)) or n_features < 1:
            raise ModelFormatError(f"{where}: n_features_in_ is missing or malformed")
        mapper = getattr(model, "_bin_mapper", None)
        categorical = getattr(mapper, "is_categorical_", None)
        if categorical is not None and np.asarray(categorical).any():
            raise ModelFormatError(f"{where}: categorical features cannot be verified and are "
                                   "not loaded")
        for i, iteration in enumerate(getattr(model, "_predictors", None) or []):
            for j, predictor in enumerate(iteration or []):
                if not isinstance(predictor, TreePredictor):
                    raise ModelFormatError(f"{where}._predictors[{i}][{j}] is not a tree")
                _check_hist_predictor(predictor, int(n_features),
                                      f"the tree at {where}._predictors[{i}][{j}]")
                seen.add(id(predictor))

    try:
        walk(estimator, 0, "estimator")
    except ModelFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ModelFormatError(f"the estimator's trees cannot be checked: {exc}") from None
