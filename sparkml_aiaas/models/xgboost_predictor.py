"""Spark-free predictor of an XGBoost booster (family ``"xgboost"``).

The booster is stored beside ``metadata.json`` as ``model.ubj``: XGBoost's own
Universal Binary JSON model format (``booster.save_raw("ubj")``), a data-only
format (trees, thresholds, leaf values, the objective) read back with
``Booster.load_model(bytearray)``.  Nothing is unpickled; the file's sha256 in
``metadata.json`` is checked, and the model decoded and its trees checked in Python
(:mod:`sparkml_aiaas.models.xgboost_check`), before XGBoost's C++ parser sees it.

Outputs follow pyspark's ``SparkXGBClassifier`` (and MLlib's conventions):

* binary classifier: ``rawPrediction = [-m, m]`` where ``m`` is the booster's
  margin (log-odds), ``probability = [1 - p, p]`` with ``p = sigmoid(m)``,
  ``prediction = argmax(probability)`` (1.0 when ``p > 0.5``);
* multiclass (``multi:softprob``): ``rawPrediction`` = the ``k`` margins,
  ``probability`` = their softmax, ``prediction`` = the most probable class;
* regressor: ``prediction`` = the booster's prediction (``predict_type="value"``).

Features are a float matrix in which NaN means *missing*, as XGBoost treats it
(missing values follow each split's learned default direction); a null numeric
cell becomes NaN.  This module imports no pyspark.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models.predictor_base import Predictor

#: Name of the booster file inside a saved model directory.
BOOSTER_FILE = "model.ubj"

KINDS = ("binary", "multiclass", "regression")

_CLASSIFIER_OUTPUTS = [("rawPrediction", "array<double>"), ("probability", "array<double>"),
                       ("prediction", "double")]
_REGRESSOR_OUTPUTS = [("prediction", "double")]


_DISTRIBUTIONS_CHECKED = False


def check_xgboost_distribution() -> None:
    """ConfigError when both the ``xgboost`` and the ``xgboost-cpu`` distributions are
    installed: they write the same ``xgboost`` module, so which one runs depends on the
    order they were installed in, and uninstalling either breaks the other.  Checked once
    per process, before the first booster is read or trained."""
    global _DISTRIBUTIONS_CHECKED
    if _DISTRIBUTIONS_CHECKED:
        return
    import importlib.metadata

    found = []
    for name in ("xgboost", "xgboost-cpu"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(found) == 2:
        raise ConfigError(
            f"both {found[0]} and {found[1]} are installed, and they write the same "
            "'xgboost' module; keep one: pip uninstall -y xgboost xgboost-cpu && pip install "
            "xgboost-cpu (or xgboost on a CUDA machine)")
    _DISTRIBUTIONS_CHECKED = True


def booster_from_bytes(data: bytes, where: str = "booster"):
    """An ``xgboost.Booster`` parsed from UBJ bytes; never unpickles.

    The bytes are decoded and their trees checked in Python first
    (:func:`~sparkml_aiaas.models.xgboost_check.check_booster_bytes`): XGBoost's C++ parser
    and predictor trust the file, and a damaged or edited one crashes them.
    """
    check_xgboost_distribution()
    import xgboost

    from sparkml_aiaas.models.xgboost_check import check_booster_bytes

    check_booster_bytes(data, where)
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
    except (xgboost.core.XGBoostError, UnicodeDecodeError) as exc:
        # (xgboost decodes its own error message as UTF-8, and may fail at it.)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ModelFormatError(f"{where} is not a valid XGBoost UBJ model: {first}") from None
    return booster


def booster_kind(booster, num_classes: Optional[int] = None) -> str:
    """``"binary"``, ``"multiclass"`` or ``"regression"`` from the booster's objective."""
    import json

    config = json.loads(booster.save_config())
    objective = config["learner"]["learner_train_param"]["objective"]
    if objective.startswith("binary:"):
        if objective != "binary:logistic":
            # binary:logitraw / binary:hinge have no probability output to report.
            raise ModelFormatError(
                f"objective {objective!r} is not supported for classification; use "
                "'binary:logistic' (probabilities) or a regressor")
        return "binary"
    if objective.startswith("multi:"):
        if objective != "multi:softprob":
            raise ModelFormatError(
                f"objective {objective!r} is not supported; use 'multi:softprob' (per-class "
                "probabilities; 'multi:softmax' keeps only the class)")
        return "multiclass"
    if num_classes:
        raise ModelFormatError(
            f"the booster's objective {objective!r} is not a classification objective, but "
            f"numClasses={num_classes} was given")
    return "regression"


def _sigmoid(m: np.ndarray) -> np.ndarray:
    # Numerically stable on both tails (no overflow in exp).
    e = np.exp(-np.abs(m))
    return np.where(m >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class XGBoostPredictor(Predictor):
    """Predictions of an XGBoost booster from columns of a pandas DataFrame or numpy arrays.

    Parameters
    ----------
    booster : xgboost.Booster
    kind : {"binary", "multiclass", "regression"}
    feature_cols : list of str, optional
        Numeric input columns, in the booster's feature order.
    vector_col : str, optional
        Alternatively one column of length-``n_features`` arrays.
    num_classes : int
        Classes of a classifier (0 for a regressor).
    output_names : dict, optional
        Renames of the output columns (e.g. ``{"prediction": "pred"}``).
    """

    reads_files = True
    family = "xgboost"

    def __init__(self, booster, kind: str, feature_cols: Optional[List[str]] = None,
                 vector_col: Optional[str] = None, num_classes: int = 0,
                 output_names: Optional[Dict[str, str]] = None,
                 metadata: Optional[Dict[str, Any]] = None):
        if kind not in KINDS:
            raise ModelFormatError(f"unknown xgboost predictor kind {kind!r}; expected {KINDS}")
        if not feature_cols and not vector_col:
            raise ModelFormatError("an xgboost predictor needs feature_cols or vector_col")
        self.booster = booster
        self.kind = kind
        self.feature_cols = list(feature_cols) if feature_cols else None
        self.vector_col = None if feature_cols else vector_col
        self.num_classes = int(num_classes) if kind != "regression" else 0
        self.output_names = dict(output_names or {})
        self.metadata = metadata
        self.n_features = int(booster.num_features())
        if self.feature_cols and len(self.feature_cols) != self.n_features:
            raise ModelFormatError(
                f"the booster has {self.n_features} features but {len(self.feature_cols)} "
                f"feature columns were given ({self.feature_cols})")

    # -- the predictor contract ----------------------------------------------
    def canonical_outputs(self) -> List[tuple]:
        return _REGRESSOR_OUTPUTS if self.kind == "regression" else _CLASSIFIER_OUTPUTS

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataValidationError(
                f"expected {self.n_features} features, got shape {X.shape}")
        n = X.shape[0]
        if self.kind == "regression":
            if n == 0:
                return {"prediction": np.empty(0)}
            value = self.booster.inplace_predict(X, predict_type="value", missing=np.nan)
            return {"prediction": np.asarray(value, dtype=np.float64).reshape(n)}
        if n == 0:
            k = 2 if self.kind == "binary" else self.num_classes
            return {"rawPrediction": np.empty((0, k)), "probability": np.empty((0, k)),
                    "prediction": np.empty(0)}
        margin = np.asarray(self.booster.inplace_predict(X, predict_type="margin",
                                                         missing=np.nan), dtype=np.float64)
        if self.kind == "binary":
            m = margin.reshape(n)
            p = _sigmoid(m)
            raw = np.column_stack([-m, m])
            probability = np.column_stack([1.0 - p, p])
        else:
            raw = margin.reshape(n, -1)
            shifted = raw - raw.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            probability = exp / exp.sum(axis=1, keepdims=True)
        # argmax of the probabilities, as SparkXGBClassifier (ties go to the lower class).
        return {"rawPrediction": raw, "probability": probability,
                "prediction": np.argmax(probability, axis=1).astype(np.float64)}

    # -- persistence ---------------------------------------------------------
    def spec(self) -> Dict[str, Any]:
        """The ``metadata["predictor"]`` section that :meth:`from_artifact` reads."""
        return {"family": self.family, "kind": self.kind, "feature_cols": self.feature_cols,
                "vector_col": self.vector_col, "num_classes": self.num_classes,
                "output_names": self.output_names, "booster_file": BOOSTER_FILE,
                "booster_format": "ubj"}

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray], path: str):
        from sparkml_aiaas.models.artifact import (as_int, feature_inputs, name_map,
                                                   predictor_section, read_artifact_file)

        spec = predictor_section(metadata)
        kind = spec.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise ModelFormatError(f"unknown xgboost predictor kind {kind!r:.80}; expected {KINDS}")
        feature_cols, vector_col = feature_inputs(spec.get("feature_cols"), spec.get("vector_col"),
                                                  "an xgboost predictor", exactly_one=False)
        num_classes = as_int(spec.get("num_classes") or 0, "num_classes", minimum=0)
        if kind == "multiclass" and num_classes < 2:
            raise ModelFormatError(f"a multiclass xgboost model needs num_classes >= 2, got "
                                   f"{num_classes}")
        output_names = name_map(spec.get("output_names"), "output_names")
        name = spec.get("booster_file", BOOSTER_FILE)
        # read_artifact_file checks the sha256 recorded in metadata.json first.
        booster = booster_from_bytes(read_artifact_file(path, name, metadata),
                                     where=f"{name} of the model at {path!r}")
        predictor = cls(booster, kind=kind, feature_cols=feature_cols, vector_col=vector_col,
                        num_classes=num_classes, output_names=output_names, metadata=metadata)
        if booster_kind(booster, num_classes if kind != "regression" else None) != kind:
            raise ModelFormatError(f"the booster's objective does not make a {kind} model")
        return predictor
