"""A saved XGBoost booster checked in Python before XGBoost's C++ parser sees it.

XGBoost parses UBJ model bytes in C++ and trusts what it reads: a truncated or bit-flipped
file makes ``Booster.load_model`` read past its buffer, and a well-formed model whose trees
point at nodes or features that do not exist crashes (or silently reads foreign memory) at
predict time.  The file's sha256 in metadata.json only detects corruption -- whoever edits
the directory rewrites it -- so every booster is decoded here first, strictly, and its
structure checked: :func:`check_booster_bytes` raises :class:`ModelFormatError` unless

* the bytes are exactly one UBJ value of the forms XGBoost writes (objects, counted or typed
  arrays, strings, numbers; every length inside the buffer, nothing after the value), nested
  at most :data:`MAX_DEPTH` deep;
* the learner is ``gbtree``, ``dart`` or ``gblinear`` with one target, numeric features only
  (no categorical splits or encoders), the tree count agrees across ``num_trees``,
  ``trees``, ``tree_info``, ``iteration_indptr`` (and dart's ``weight_drop``), each
  ``tree_info`` is an output group that exists;
* every tree is a tree: all per-node arrays have ``num_nodes`` entries, children are ``-1``
  in pairs or point at other nodes, no node is reached twice from the root, parents agree,
  every split reads a feature below ``num_feature``.

Only then are the original bytes handed to XGBoost.  Pure numpy, no xgboost import.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from sparkml_aiaas.errors import ModelFormatError

__all__ = ["check_booster_bytes", "decode_ubj", "MAX_DEPTH"]

MAX_DEPTH = 32
#: Bounds on counts an edited model may declare (far above any real model).
MAX_FEATURES = 2 ** 31 - 1
MAX_CLASSES = 2 ** 16

_INTS = {b"i": (1, ">i1"), b"U": (1, ">u1"), b"I": (2, ">i2"), b"l": (4, ">i4"), b"L": (8, ">i8")}
_FLOATS = {b"d": (4, ">f4"), b"D": (8, ">f8")}
_NUMBERS = {**_INTS, **_FLOATS}
_ROOT_PARENT = (2 ** 31 - 1, -1)


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelFormatError(f"UBJ booster ends early (needs {n} bytes at offset "
                                   f"{self.pos} of {len(self.data)})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def marker(self) -> bytes:
        return bytes(self.take(1))

    def peek(self) -> bytes:
        return bytes(self.data[self.pos:self.pos + 1])

    def number(self, marker: bytes):
        size, dtype = _NUMBERS[marker]
        value = np.frombuffer(self.take(size), dtype=dtype)[0]
        return int(value) if marker in _INTS else float(value)

    def count(self) -> int:
        marker = self.marker()
        if marker not in _INTS:
            raise ModelFormatError(f"UBJ booster: a length at offset {self.pos - 1} has marker "
                                   f"{marker!r}, not an integer")
        value = self.number(marker)
        if value < 0:
            raise ModelFormatError(f"UBJ booster: negative length {value} at offset {self.pos}")
        return value

    def text(self, n: int) -> str:
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError("UBJ booster: a string is not UTF-8") from None


def _value(reader: _Reader, depth: int, marker: bytes = None) -> Any:  # noqa: C901
    if depth > MAX_DEPTH:
        raise ModelFormatError(f"UBJ booster nests deeper than {MAX_DEPTH} levels")
    marker = reader.marker() if marker is None else marker
    if marker == b"Z":
        return None
    if marker in (b"T", b"F"):
        return marker == b"T"
    if marker in _NUMBERS:
        return reader.number(marker)
    if marker == b"S":
        return reader.text(reader.count())
    if marker == b"[":
        return _array(reader, depth)
    if marker == b"{":
        out: Dict[str, Any] = {}
        while reader.peek() != b"}":
            if not reader.peek():
                raise ModelFormatError("UBJ booster: an object is not closed")
            key = reader.text(reader.count())
            if key in out:
                raise ModelFormatError(f"UBJ booster: key {key!r} appears twice in one object")
            out[key] = _value(reader, depth + 1)
        reader.take(1)
        return out
    raise ModelFormatError(f"UBJ booster: unexpected marker {marker!r} at offset {reader.pos - 1}")


def _array(reader: _Reader, depth: int):
    if reader.peek() == b"$":  # typed: raw big-endian numbers
        reader.take(1)
        kind = reader.marker()
        if kind not in _NUMBERS or reader.marker() != b"#":
            raise ModelFormatError(f"UBJ booster: unsupported typed array of {kind!r}")
        n = reader.count()
        size, dtype = _NUMBERS[kind]
        if n > (len(reader.data) - reader.pos) // size:
            raise ModelFormatError(f"UBJ booster: an array of {n} values runs past the end")
        return np.frombuffer(reader.take(n * size), dtype=dtype).astype(dtype[1:])
    if reader.peek() == b"#":  # counted: each element with its own marker
        reader.take(1)
        n = reader.count()
        if n > len(reader.data) - reader.pos:
            raise ModelFormatError(f"UBJ booster: an array of {n} values runs past the end")
        return [_value(reader, depth + 1) for _ in range(n)]
    items: List[Any] = []
    while reader.peek() != b"]":
        if not reader.peek():
            raise ModelFormatError("UBJ booster: an array is not closed")
        items.append(_value(reader, depth + 1))
    reader.take(1)
    return items


def decode_ubj(data: bytes) -> Any:
    """The one UBJ value ``data`` holds (typed arrays as numpy arrays); strict."""
    reader = _Reader(bytes(data))
    value = _value(reader, 0)
    if reader.pos != len(reader.data):
        raise ModelFormatError(f"UBJ booster: {len(reader.data) - reader.pos} bytes after "
                               "the model")
    return value


# --------------------------------------------------------------------------- structure
def _get(obj: Any, key: str, kind, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise ModelFormatError(f"XGBoost model: {where}{key} is missing or malformed")
    return value


def _int_text(value: Any, where: str, low: int, high: int) -> int:
    """XGBoost writes model params as strings of integers ("4")."""
    try:
        number = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) \
            else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ModelFormatError(f"XGBoost model: {where} is {value!r:.40}, not an integer in "
                               f"[{low}, {high}]")
    return number


def _as_array(value: Any, kinds: str) -> Any:
    """``value`` as a 1-D numpy array if it is one (typed) or a list of such scalars."""
    if isinstance(value, np.ndarray):
        return value if value.ndim == 1 and (value.size == 0 or value.dtype.kind in kinds) \
            else None
    if isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool)
            and (isinstance(x, int) or "f" in kinds) for x in value):
        return np.asarray(value, dtype=np.float64 if "f" in kinds else np.int64)
    return None


def _ints(value: Any, where: str) -> np.ndarray:
    array = _as_array(value, "iu")
    if array is None:
        raise ModelFormatError(f"XGBoost model: {where} is not a list of integers")
    return array.astype(np.int64)


def _numbers(value: Any, where: str, n: int) -> None:
    array = _as_array(value, "iuf")
    if array is None or array.size != n:
        raise ModelFormatError(f"XGBoost model: {where} does not hold {n} numbers")


def _empty(value: Any) -> bool:
    return isinstance(value, (list, np.ndarray)) and len(value) == 0


def _check_tree(tree: Any, index: int, num_feature: int) -> None:
    where = f"tree {index}: "
    param = _get(tree, "tree_param", dict, where)
    n = _int_text(param.get("num_nodes"), where + "num_nodes", 1, 2 ** 31 - 1)
    if _int_text(param.get("size_leaf_vector", "1"), where + "size_leaf_vector", 0, 2 ** 31) > 1:
        raise ModelFormatError(f"XGBoost model: {where}vector leaves (multi-target trees) are "
                               "not supported")
    _int_text(param.get("num_feature"), where + "num_feature", 0, num_feature)
    if tree.get("id") != index:
        raise ModelFormatError(f"XGBoost model: {where}has id {tree.get('id')!r:.20}")
    arrays = {}
    for name in ("left_children", "right_children", "parents", "split_indices", "split_type",
                 "default_left"):
        arrays[name] = _ints(tree.get(name), where + name)
        if arrays[name].size != n:
            raise ModelFormatError(f"XGBoost model: {where}{name} has {arrays[name].size} "
                                   f"entries for {n} nodes")
    for name in ("split_conditions", "base_weights", "loss_changes", "sum_hessian"):
        _numbers(tree.get(name), where + name, n)
    for name in ("categories", "categories_nodes", "categories_segments", "categories_sizes"):
        if name in tree and not _empty(tree[name]):
            raise ModelFormatError(f"XGBoost model: {where}categorical splits are not supported")
    left, right = arrays["left_children"], arrays["right_children"]
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise ModelFormatError(f"XGBoost model: {where}a node has one child")
    internal = ~leaf
    for children in (left[internal], right[internal]):
        if children.size and (children.min() < 1 or children.max() >= n):
            raise ModelFormatError(f"XGBoost model: {where}a child index is outside "
                                   f"[1, {n})")
    if np.any(arrays["split_type"][internal] != 0):
        raise ModelFormatError(f"XGBoost model: {where}categorical splits are not supported")
    features = arrays["split_indices"][internal]
    if features.size and (features.min() < 0 or features.max() >= num_feature):
        raise ModelFormatError(f"XGBoost model: {where}a split reads a feature outside "
                               f"[0, {num_feature})")
    if not np.isin(arrays["default_left"], (0, 1)).all():
        raise ModelFormatError(f"XGBoost model: {where}default_left is not 0/1")
    # Every node is reached at most once from the root, from the parent it names: a tree,
    # not a graph with cycles or shared subtrees.
    parents = arrays["parents"]
    if int(parents[0]) not in _ROOT_PARENT:
        raise ModelFormatError(f"XGBoost model: {where}the root has a parent")
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:
        frontier = frontier[internal[frontier]]
        children = np.concatenate([left[frontier], right[frontier]])
        owners = np.concatenate([frontier, frontier])
        if children.size and (seen[children].any() or np.unique(children).size != children.size):
            raise ModelFormatError(f"XGBoost model: {where}a node is reached twice (a cycle "
                                   "or a shared subtree)")
        if children.size and np.any((parents[children] & 0x7FFFFFFF) != owners):
            raise ModelFormatError(f"XGBoost model: {where}parents do not match children")
        seen[children] = True
        frontier = children


def _check_trees(model: Any, num_feature: int, groups: int, where: str) -> int:
    param = _get(model, "gbtree_model_param", dict, where)
    num_trees = _int_text(param.get("num_trees"), where + "num_trees", 0, 2 ** 31 - 1)
    _int_text(param.get("num_parallel_tree", "1"), where + "num_parallel_tree", 1, 2 ** 31 - 1)
    trees = _get(model, "trees", list, where)
    info = _ints(model.get("tree_info"), where + "tree_info")
    if len(trees) != num_trees or info.size != num_trees:
        raise ModelFormatError(f"XGBoost model: {where}num_trees is {num_trees} but there are "
                               f"{len(trees)} trees and {info.size} tree_info entries")
    if info.size and (info.min() < 0 or info.max() >= groups):
        raise ModelFormatError(f"XGBoost model: {where}tree_info names an output group outside "
                               f"[0, {groups})")
    if "iteration_indptr" in model:
        indptr = _ints(model["iteration_indptr"], where + "iteration_indptr")
        if indptr.size == 0 or indptr[0] != 0 or indptr[-1] != num_trees or np.any(
                np.diff(indptr) < 0):
            raise ModelFormatError(f"XGBoost model: {where}iteration_indptr does not count the "
                                   f"{num_trees} trees")
    cats = model.get("cats", {})
    if not isinstance(cats, dict) or any(not _empty(v) for v in cats.values()):
        raise ModelFormatError(f"XGBoost model: {where}categorical encodings are not supported")
    for index, tree in enumerate(trees):
        _check_tree(tree, index, num_feature)
    return num_trees


def check_booster_bytes(data: bytes, where: str = "booster") -> None:
    """Refuse (:class:`ModelFormatError`, naming ``where``) bytes that are not a well-formed
    UBJ XGBoost model of the kinds the predictors score (see the module doc)."""
    try:
        model = decode_ubj(data)
        learner = _get(model, "learner", dict, "")
        params = _get(learner, "learner_model_param", dict, "learner.")
        num_feature = _int_text(params.get("num_feature"), "num_feature", 1, MAX_FEATURES)
        num_class = _int_text(params.get("num_class", "0"), "num_class", 0, MAX_CLASSES)
        _int_text(params.get("num_target", "1"), "num_target", 1, 1)
        groups = max(num_class, 1)
        for key in ("feature_names", "feature_types"):
            names = learner.get(key, [])
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names) or (
                    names and len(names) != num_feature):
                raise ModelFormatError(f"XGBoost model: learner.{key} is malformed")
        if "c" in learner.get("feature_types", []):
            raise ModelFormatError("XGBoost model: categorical features are not supported")
        _get(_get(learner, "objective", dict, "learner."), "name", str, "learner.objective.")
        booster = _get(learner, "gradient_booster", dict, "learner.")
        name = booster.get("name")
        if name == "gbtree":
            _check_trees(_get(booster, "model", dict, "gbtree."), num_feature, groups, "gbtree.")
        elif name == "dart":
            inner = _get(booster, "gbtree", dict, "dart.")
            num_trees = _check_trees(_get(inner, "model", dict, "dart.gbtree."), num_feature,
                                     groups, "dart.gbtree.")
            _numbers(booster.get("weight_drop"), "dart.weight_drop", num_trees)
        elif name == "gblinear":
            model_ = _get(booster, "model", dict, "gblinear.")
            _numbers(model_.get("weights"), "gblinear.weights", (num_feature + 1) * groups)
        else:
            raise ModelFormatError(f"XGBoost model: unknown gradient booster {name!r:.40}")
    except ModelFormatError as exc:
        raise ModelFormatError(f"{where} is not a valid XGBoost model: {exc}") from None
