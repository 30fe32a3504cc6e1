"""scikit-learn models without Spark: safe skops loading, estimator specs, the predictor.

Three pieces, none of which imports pyspark:

* :func:`safe_loads` / :func:`safe_dumps` -- a fitted estimator to and from the
  skops format.  skops never unpickles: it rebuilds objects from a JSON schema
  and refuses every type that is not in its trusted list unless the caller
  trusts it.  We trust, on top of skops' defaults, only *classes* whose import
  path starts with ``sklearn.``, ``numpy.`` or ``scipy.sparse.`` (e.g.
  ``sklearn.tree._tree.Tree``, which skops does not trust by default); any other
  type -- a user's class, ``builtins.eval``, ``posix.system``, a function --
  is refused with :class:`ModelFormatError` naming it.  Never ``trusted=True``.
  The loaded values are checked too (:mod:`sparkml_aiaas.models.sklearn_check`): a tree
  whose nodes are not a tree would send Cython code past its arrays.
* :func:`estimator_spec` / :func:`build_estimator` -- an *unfitted* estimator
  as JSON (class path + ``get_params(deep=False)``, nested estimators
  recursively), so that it can live in a pyspark.ml ``Param`` and survive
  ``save``/``load`` and ``Pipeline.copy``.  Only classes under ``sklearn.`` are
  rebuilt.
* :class:`SklearnPredictor` -- a fitted estimator behind the predictor contract
  (:class:`~sparkml_aiaas.models.predictor_base.Predictor`: ``predict``,
  ``predict_matrix``, ``predict_columns``),
  used by ``model.transform``, batch scoring and serving alike.
* :func:`plan_sample` -- how much of a DataFrame to collect for training, and
  the size guard that refuses before anything is collected.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models.predictor_base import Predictor
from sparkml_aiaas.models.sklearn_check import check_fitted

logger = logging.getLogger(__name__)

#: The extra artifact file holding the fitted estimator.
SKOPS_FILE = "model.skops"

#: Prefixes of the type names trusted beyond skops' own defaults.  Only classes are
#: trusted (see :func:`trusted_types`): a function under one of these prefixes could
#: be called at predict time by a FunctionTransformer, so it must be one skops
#: already trusts (its curated numpy ufuncs and the like).
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")

#: Never trusted although under a trusted prefix: parts of those packages that read or
#: write files, download data or compile code.  No fitted model needs them.
REFUSED_PREFIXES = ("numpy.memmap", "numpy.testing", "numpy.f2py", "numpy.distutils",
                    "numpy.ctypeslib", "numpy.lib.npyio", "numpy.lib._npyio_impl",
                    "numpy.lib.format", "numpy.lib._datasource", "sklearn.datasets",
                    "sklearn.externals", "sklearn.utils._testing")

#: Markers of the JSON encoding of estimator params (see :func:`estimator_spec`).
_ESTIMATOR, _TUPLE, _DICT, _FLOAT = "__estimator__", "__tuple__", "__dict__", "__float__"


# ----------------------------------------------------------------------------- skops


_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _importable(name: Any) -> bool:
    """Whether ``_resolve`` may import for ``name``: a dotted name under a trusted prefix and
    under no refused one (checked on the string, before any import)."""
    return (isinstance(name, str) and bool(_DOTTED_NAME.fullmatch(name))
            and name.startswith(TRUSTED_PREFIXES) and not name.startswith(REFUSED_PREFIXES)
            and not any(part.startswith("__") for part in name.split(".")))


def _resolve(name: str):
    """The object a dotted type name names, or None (importing sklearn/numpy/scipy only).

    Names outside :data:`TRUSTED_PREFIXES` (or under :data:`REFUSED_PREFIXES`) give None
    without importing anything: every module tried is the name's own prefix.
    """
    if not _importable(name):
        return None
    module_name, _, attr = name.rpartition(".")
    while module_name:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            # "pkg.mod.Outer.Inner": step the split left until a module imports.
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
            continue
        value = module
        try:
            for part in attr.split("."):
                value = getattr(value, part)
        except AttributeError:
            return None
        return value
    return None


def trusted_types(untrusted: Sequence[str]) -> List[str]:
    """The names of ``untrusted`` (as skops lists them) we trust; raise for the others.

    A name is trusted when it starts with one of :data:`TRUSTED_PREFIXES` and
    names a class of the installed package.  Resolving the name imports a
    module of scikit-learn, numpy or scipy -- installed code, never code from
    the artifact.
    """
    refused = []
    for name in untrusted:
        if not _importable(name):
            refused.append(name)
            continue
        if not isinstance(_resolve(name), type):
            refused.append(name)
    if refused:
        raise ModelFormatError(
            f"the skops file holds type(s) that are not trusted: {sorted(set(refused))}; only "
            f"classes under {list(TRUSTED_PREFIXES)} (and skops' defaults) are loaded, so "
            "that loading never runs code from the artifact")
    return list(untrusted)


def safe_loads(data: bytes):
    """A fitted estimator from skops bytes, refusing untrusted types (see :func:`trusted_types`)."""
    import skops.io as sio
    from sklearn.base import BaseEstimator

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a zip or schema error of a corrupt file: name it as such
        raise ModelFormatError(f"not a readable skops file: {type(exc).__name__}: {exc}") from None
    trusted = trusted_types(untrusted)
    try:
        estimator = sio.loads(data, trusted=trusted)
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"the skops file could not be loaded: {type(exc).__name__}: "
                               f"{exc}") from None
    if not isinstance(estimator, BaseEstimator):
        raise ModelFormatError(
            f"the skops file holds a {type(estimator).__name__}, not a scikit-learn estimator")
    # Trusted types, untrusted values: trees are followed by Cython without bounds checks.
    check_fitted(estimator)
    return estimator


def safe_dumps(estimator) -> bytes:
    """skops bytes of ``estimator``, checked to load back under the same trust rules.

    Checking at save (and wrap) time means a model that could not be loaded is
    refused when it is made, not when someone tries to serve it.
    """
    import skops.io as sio

    data = sio.dumps(estimator)
    try:
        trusted_types(sio.get_untrusted_types(data=data))
    except ModelFormatError as exc:
        raise ConfigError(f"this estimator cannot be saved safely: {exc}") from None
    return data


# ----------------------------------------------------------------------- estimator specs


def _class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value, where: str):
    """A param value as JSON; refuse (ConfigError) what JSON cannot carry faithfully."""
    from sklearn.base import BaseEstimator

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(value, BaseEstimator):
        return {_ESTIMATOR: estimator_spec(value, where)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        # Pairs, not a JSON object: keys may be ints (class_weight={0: 1, 1: 3}).
        return {_DICT: [[_encode(k, f"{where} key"), _encode(v, f"{where}[{k!r}]")]
                        for k, v in value.items()]}
    raise ConfigError(
        f"estimator param {where} is a {type(value).__name__} ({value!r:.80}), which cannot be "
        "kept as a JSON param; use a plain value (numbers, strings, lists, dicts, nested "
        "scikit-learn estimators), or fit it yourself and wrap it with from_estimator")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if _ESTIMATOR in value:
            return build_estimator(value[_ESTIMATOR])
        if _TUPLE in value:
            return tuple(_decode(v) for v in value[_TUPLE])
        if _DICT in value:
            return {_decode(k): _decode(v) for k, v in value[_DICT]}
        if _FLOAT in value:
            return float(value[_FLOAT])
        raise ConfigError(f"estimator spec holds an unknown object {value!r:.80}")
    return value


def _sklearn_class(path: str):
    """The scikit-learn estimator class at ``path``; refuse anything outside ``sklearn.``."""
    from sklearn.base import BaseEstimator

    if not isinstance(path, str) or not path.startswith("sklearn.") or not _importable(path):
        raise ConfigError(
            f"estimator class {path!r} is not a scikit-learn class: only scikit-learn "
            "estimators (classes under 'sklearn.') are trained, wrapped and saved here")
    cls = _resolve(path)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ConfigError(f"estimator class {path!r} is not a scikit-learn estimator in the "
                          "installed scikit-learn")
    return cls


def estimator_spec(estimator, where: str = "estimator") -> Dict[str, Any]:
    """``{"class": ..., "params": {...}}`` of an estimator (its fitted state is not kept).

    ``params`` is ``get_params(deep=False)`` with nested estimators (a
    Pipeline's steps, a bagging ensemble's base estimator) encoded the same
    way, tuples and int-keyed dicts preserved, so :func:`build_estimator`
    gives back an equal unfitted estimator, as ``sklearn.base.clone`` would.
    """
    from sklearn.base import BaseEstimator

    if not isinstance(estimator, BaseEstimator):
        raise ConfigError(f"{where} must be a scikit-learn estimator, got a "
                          f"{type(estimator).__name__}")
    path = _class_path(type(estimator))
    _sklearn_class(path)
    params = estimator.get_params(deep=False)
    return {"class": path,
            "params": {k: _encode(v, f"{where}.{k}") for k, v in sorted(params.items())}}


def build_estimator(spec: Dict[str, Any]):
    """A new unfitted estimator from :func:`estimator_spec`'s output."""
    if not isinstance(spec, dict) or "class" not in spec:
        raise ConfigError(f"an estimator spec must be a dict with 'class' and 'params', got "
                          f"{spec!r:.80}")
    cls = _sklearn_class(spec["class"])
    params = {k: _decode(v) for k, v in (spec.get("params") or {}).items()}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"estimator spec params do not fit {spec['class']}: {exc}") from None


def spec_json(value) -> str:
    """Canonical JSON of an estimator spec, from an estimator, a spec dict or its JSON.

    The spec is rebuilt and encoded again: a value that does not survive the
    round trip unchanged is refused here, not discovered after a save.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"estimator spec is not valid JSON: {exc}") from None
    spec = value if isinstance(value, dict) else estimator_spec(value)
    again = estimator_spec(build_estimator(spec))
    if json.dumps(again, sort_keys=True) != json.dumps(spec, sort_keys=True):
        raise ConfigError(
            f"the params of {spec.get('class')} do not survive a JSON round trip "
            f"({json.dumps(spec, sort_keys=True):.200} became "
            f"{json.dumps(again, sort_keys=True):.200})")
    return json.dumps(again, sort_keys=True)


# ------------------------------------------------------------------------------ sampling

#: Default ``maxSampleBytes``: the float64 training matrix the driver may hold.
DEFAULT_MAX_SAMPLE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class SamplePlan:
    """What :func:`plan_sample` decided: the Bernoulli fraction and the sizes it implies."""

    fraction: float
    expected_rows: int
    bound_rows: int
    row_bytes: int
    estimated_bytes: int


def plan_sample(total_rows: int, n_features: int, max_sample_bytes: int,
                sample_fraction: float = 1.0, max_sample_rows: int = 0) -> SamplePlan:
    """The sampling fraction for ``total_rows`` rows, or :class:`ConfigError` if over budget.

    The fraction is ``sample_fraction``, lowered so that the expected sample
    holds at most ``max_sample_rows`` rows (0: no row cap).  A row of the
    training matrix costs ``(n_features + 1) × 8`` bytes (float64 features and
    label).  A Bernoulli sample's size is random (binomial), so the guard
    checks the expected size plus four standard deviations: the collected
    sample exceeds ``max_sample_bytes`` with probability below 1/10 000 (and
    never when the whole data is taken).
    """
    if total_rows < 0 or n_features < 1:
        raise ValueError(f"total_rows must be >= 0 and n_features >= 1, got {total_rows}, "
                         f"{n_features}")
    fraction = float(sample_fraction)
    if max_sample_rows and total_rows * fraction > max_sample_rows:
        fraction = max_sample_rows / total_rows
    fraction = min(fraction, 1.0)
    expected = total_rows * fraction
    spread = 4.0 * math.sqrt(total_rows * fraction * (1.0 - fraction))
    bound = min(total_rows, int(math.ceil(expected + spread)))
    row_bytes = (n_features + 1) * 8
    plan = SamplePlan(fraction=fraction, expected_rows=int(round(expected)), bound_rows=bound,
                      row_bytes=row_bytes, estimated_bytes=bound * row_bytes)
    if plan.estimated_bytes > max_sample_bytes:
        raise ConfigError(
            f"the training sample would be too large for the driver: up to {bound} rows "
            f"(expected {plan.expected_rows} of {total_rows}, fraction {fraction:.6g}) x "
            f"({n_features} features + label) x 8 bytes = {plan.estimated_bytes} bytes, over "
            f"maxSampleBytes={max_sample_bytes}; lower maxSampleRows or sampleFraction, or raise "
            "maxSampleBytes if the driver has the memory")
    return plan


# ----------------------------------------------------------------------------- predictor


def _output_types(task: str, has_raw: bool, has_proba: bool) -> List[tuple]:
    if task == "regressor":
        return [("prediction", "double")]
    outputs = []
    if has_raw:
        outputs.append(("rawPrediction", "array<double>"))
    if has_proba:
        outputs.append(("probability", "array<double>"))
    outputs.append(("prediction", "double"))
    return outputs


def _to_jsonable(value):
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class SklearnPredictor(Predictor):
    """A fitted scikit-learn classifier or regressor, scoring pandas frames.

    Parameters
    ----------
    estimator : fitted scikit-learn estimator (a Pipeline included)
    task : {"classifier", "regressor"}
    feature_cols : list of str, optional
        Numeric input columns, in the estimator's feature order.
    vector_col : str, optional
        Alternatively, one column holding length-``n_features`` arrays.
    n_features : int, optional
        Checked against every input (from ``n_features_in_`` when omitted).
    output_names : dict, optional
        Renames of the output columns (e.g. ``{"prediction": "pred"}``).

    Outputs (classifier): ``rawPrediction`` -- ``decision_function`` when the
    estimator has one (binary: ``[-d, d]``, as pyspark's), otherwise the class
    probabilities (as pyspark's tree ensembles); ``probability`` -- from
    ``predict_proba`` when the estimator has it (an ``SVC`` without
    ``probability=True`` has none, and so no such column); ``prediction`` --
    the *index* of ``predict``'s class in ``classes_`` as a double (the label
    itself for models trained here, whose classes are 0..k-1).  Regressor:
    ``prediction``.  Rows with NaN or infinite features get NaN outputs unless
    the estimator accepts missing values (its ``allow_nan`` tag), in which case
    it predicts them.
    """

    estimator: Any
    task: str
    feature_cols: Optional[List[str]] = None
    vector_col: Optional[str] = None
    n_features: Optional[int] = None
    output_names: Optional[Dict[str, str]] = None
    metadata: Optional[Dict[str, Any]] = None

    #: load_predictor passes the model directory: the estimator is in an extra file.
    reads_files = True

    def __post_init__(self):
        if self.task not in ("classifier", "regressor"):
            raise ModelFormatError(f"unknown scikit-learn predictor task {self.task!r}")
        if bool(self.feature_cols) == bool(self.vector_col):
            raise ModelFormatError("give exactly one of feature_cols or vector_col")
        if self.n_features is None:
            found = getattr(self.estimator, "n_features_in_", None)
            self.n_features = int(found) if found is not None else (
                len(self.feature_cols) if self.feature_cols else None)
        if self.feature_cols and self.n_features != len(self.feature_cols):
            raise ModelFormatError(
                f"the estimator takes {self.n_features} features but {len(self.feature_cols)} "
                f"columns are named: {self.feature_cols}")
        est = self.estimator
        # hasattr, not type checks: Pipelines and SVC expose these only when available.
        self.has_proba = self.task == "classifier" and hasattr(est, "predict_proba")
        self.has_decision = self.task == "classifier" and hasattr(est, "decision_function")
        if self.task == "classifier":
            if not hasattr(est, "classes_"):
                raise ModelFormatError(f"the classifier {type(est).__name__} has no classes_")
            self.classes = np.asarray(est.classes_)
        else:
            self.classes = None
        try:
            from sklearn.utils import get_tags

            self.allow_nan = bool(get_tags(est).input_tags.allow_nan)
        except Exception:  # tags of estimators written before sklearn 1.6's tag API
            self.allow_nan = False
        names = getattr(est, "feature_names_in_", None)
        self._feature_names = None if names is None else [str(n) for n in names]

    # -- contract ------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else int(len(self.classes))

    def canonical_outputs(self) -> List[tuple]:
        return _output_types(self.task, self.has_decision or self.has_proba, self.has_proba)

    def _estimator_input(self, X: np.ndarray):
        # An estimator fitted on a DataFrame checks (and warns about) column names.
        if self._feature_names is not None and len(self._feature_names) == X.shape[1]:
            return pd.DataFrame(X, columns=self._feature_names, copy=False)
        return X

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name (``rawPrediction``, ...)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or (self.n_features is not None and X.shape[1] != self.n_features):
            raise DataValidationError(
                f"expected {self.n_features} features, got an array of shape {X.shape}")
        n = X.shape[0]
        rows = np.ones(n, dtype=bool) if self.allow_nan else np.isfinite(X).all(axis=1)
        if rows.all():
            return self._predict_rows(X) if n else self._all_nan(0)
        if not rows.any():
            return self._all_nan(n)  # no row scikit-learn would accept
        # Predict the rows sklearn accepts; NaN for the others (as the linear predictor).
        valid = self._predict_rows(X[rows])
        result = {}
        for name, values in valid.items():
            full = np.full((n,) + values.shape[1:], np.nan)
            full[rows] = values
            result[name] = full
        return result

    def _predict_rows(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        # Finite inputs near the float limits (1e308: the serving fuzzer sends them)
        # overflow inside the estimator's matmul to ±inf, IEEE's answer, which the outputs
        # carry (a probability of 0 or 1, a margin of ±inf); numpy's warning says no more.
        with np.errstate(over="ignore"):
            return self._predict_rows_unchecked(X)

    def _predict_rows_unchecked(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        Xs = self._estimator_input(X)
        est = self.estimator
        if self.task == "regressor":
            values = np.asarray(est.predict(Xs), dtype=np.float64)
            if values.ndim != 1:
                raise ModelFormatError("multi-output regressors are not supported: predict gave "
                                       f"shape {values.shape}")
            return {"prediction": values}
        labels = np.asarray(est.predict(Xs))
        result = {"prediction": pd.Index(self.classes).get_indexer(labels).astype(np.float64)}
        probability = None
        if self.has_proba:
            probability = np.asarray(est.predict_proba(Xs), dtype=np.float64)
            result["probability"] = probability
        if self.has_decision:
            d = np.asarray(est.decision_function(Xs), dtype=np.float64)
            # Binary: one margin, for classes_[1]; pyspark's rawPrediction is [-m, m].
            result["rawPrediction"] = np.column_stack([-d, d]) if d.ndim == 1 else d
        elif probability is not None:
            result["rawPrediction"] = probability
        return result

    def _all_nan(self, n: int) -> Dict[str, np.ndarray]:
        """NaN outputs of the right shapes for ``n`` rows none of which can be predicted."""
        return {name: np.full((n, self._width(name)) if dtype.startswith("array") else n, np.nan)
                for name, dtype in self.canonical_outputs()}

    def _width(self, name: str) -> int:
        if name == "rawPrediction" and self.has_decision and self.n_classes > 2:
            # ovr: one column per class; SVC with decision_function_shape="ovo": one per pair.
            final = self.estimator.steps[-1][1] if hasattr(self.estimator, "steps") \
                else self.estimator
            k = self.n_classes
            ovo = getattr(final, "decision_function_shape", "ovr") == "ovo"
            return k * (k - 1) // 2 if ovo else k
        return self.n_classes

    # -- persistence ---------------------------------------------------------------------
    def predictor_metadata(self) -> Dict[str, Any]:
        """The ``predictor`` section of the artifact metadata."""
        import sklearn
        import skops

        return {
            "family": "sklearn", "task": self.task, "file": SKOPS_FILE,
            "feature_cols": list(self.feature_cols) if self.feature_cols else None,
            "vector_col": self.vector_col, "n_features": self.n_features,
            "output_names": self.output_names or {},
            "classes": None if self.classes is None else [_to_jsonable(c) for c in self.classes],
            "estimator_class": _class_path(type(self.estimator)),
            "sklearn_version": sklearn.__version__, "skops_version": skops.__version__,
        }

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray], path: str):
        from sparkml_aiaas.models.artifact import (as_int, feature_inputs, name_map,
                                                   predictor_section)

        spec = predictor_section(metadata, "sklearn")
        feature_cols, vector_col = feature_inputs(spec.get("feature_cols"),
                                                  spec.get("vector_col"), "a scikit-learn model")
        n_features = spec.get("n_features")
        n_features = None if n_features is None else as_int(n_features, "n_features", minimum=1)
        output_names = name_map(spec.get("output_names"), "output_names")
        estimator = load_estimator(path, metadata)
        return cls(estimator=estimator, task=spec.get("task", ""), feature_cols=feature_cols,
                   vector_col=vector_col, n_features=n_features, output_names=output_names,
                   metadata=metadata)


def load_estimator(path: str, metadata: Dict[str, Any]):
    """The fitted estimator of a saved model: checksum-verified, then :func:`safe_loads`."""
    import sklearn

    from sparkml_aiaas.models.artifact import read_artifact_file

    spec = metadata.get("predictor") or {}
    if not isinstance(spec, dict):
        raise ModelFormatError(f"model at {path!r} has a malformed 'predictor' section")
    data = read_artifact_file(path, spec.get("file", SKOPS_FILE), metadata)
    saved = spec.get("sklearn_version")
    if saved and saved != sklearn.__version__:
        # skops restores attributes as saved; scikit-learn does not promise they mean the
        # same in another version.
        logger.warning("model at %s was saved with scikit-learn %s; this is %s", path, saved,
                       sklearn.__version__)
    try:
        return safe_loads(data)
    except ModelFormatError as exc:
        raise ModelFormatError(f"model at {path!r}: {exc}") from None
