"""Spark-free predictors: the code path shared by batch scoring and serving.

A predictor knows its input columns and output columns and turns a pandas
DataFrame (``predict``) or a mapping of numpy columns (``predict_columns``, the
serving fast path) into predictions with numpy; the contract is
:class:`~sparkml_aiaas.models.predictor_base.Predictor`.  Spark's Arrow batches, the
REST server and plain Python all run this code, so the same rows get the same
numbers everywhere.  This module imports no pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from sparkml_aiaas.core import fdlibm
from sparkml_aiaas.errors import DataValidationError, ModelFormatError
from sparkml_aiaas.models.artifact import (as_float, checked_signature, feature_inputs,
                                           name_map, predictor_section, read_artifact)
from sparkml_aiaas.models.predictor_base import Predictor
from sparkml_aiaas.models.trust import trusted

#: Spark SQL types of output columns, by predictor kind.
_OUTPUTS = {
    "binary_logistic": [("rawPrediction", "double"), ("probability", "array<double>"),
                        ("prediction", "double")],
    "multinomial_logistic": [("rawPrediction", "array<double>"),
                             ("probability", "array<double>"), ("prediction", "double")],
    "linear_svc": [("rawPrediction", "double"), ("prediction", "double")],
    "linear_regression": [("prediction", "double")],
}

#: Up to this many rows (times classes, for the multinomial kind), predict_arrays computes
#: in Python floats rather than numpy: numpy's fixed cost per operation (and fdlibm.exp's,
#: tens of microseconds) dominates a served request's few rows; past it, numpy is faster
#: (measured: bench/bench_serving_predictor.py).  Both give the same doubles.
SCALAR_ROWS = 16


@dataclass
class LinearPredictor(Predictor):
    """Predictions of a fitted linear model from columns of a pandas DataFrame.

    Parameters
    ----------
    kind : {"binary_logistic", "multinomial_logistic", "linear_svc", "linear_regression"}
    coefficients : ndarray of shape (d,) or (d, k)
        ``(d, k)`` for the multinomial kind (one column per class).
    intercept : float or ndarray of shape (k,)
    feature_cols : list of str, optional
        Numeric input columns, in coefficient order.
    vector_col : str, optional
        Alternatively, one column holding length-``d`` arrays.
    threshold : float
        Binary logistic predicts 1 when P(y=1) > threshold; the linear SVM when
        the margin > threshold.
    output_names : dict, optional
        Renames of the output columns (e.g. ``{"prediction": "pred"}``).
    """

    kind: str
    coefficients: np.ndarray
    intercept: Any
    feature_cols: Optional[List[str]] = None
    vector_col: Optional[str] = None
    threshold: float = 0.5
    output_names: Optional[Dict[str, str]] = None
    metadata: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        if self.kind not in _OUTPUTS:
            raise ModelFormatError(f"unknown linear predictor kind {self.kind!r}")
        coefficients = np.asarray(self.coefficients, dtype=np.float64)
        intercept = np.asarray(self.intercept, dtype=np.float64).reshape(-1)
        if self.kind == "multinomial_logistic":
            self.coefficients = coefficients.reshape(coefficients.shape[0], -1)
            self.intercept = intercept
            if self.coefficients.shape[1] != intercept.shape[0]:
                raise ModelFormatError(
                    f"multinomial model has {self.coefficients.shape[1]} coefficient columns but "
                    f"{intercept.shape[0]} intercepts")
        else:
            self.coefficients = coefficients.ravel()
            self.intercept = float(intercept[0])

    @property
    def n_features(self) -> int:
        return int(self.coefficients.shape[0])

    @property
    def n_classes(self) -> int:
        """Classes of a classifier (2 for the binary kinds); 0 for a regressor."""
        if self.kind == "multinomial_logistic":
            return int(self.coefficients.shape[1])
        return 0 if self.kind == "linear_regression" else 2

    def canonical_outputs(self) -> List[tuple]:
        return _OUTPUTS[self.kind]

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataValidationError(
                f"expected {self.n_features} features, got an array of shape {X.shape}")
        if X.shape[0] * (self.n_classes if self.kind == "multinomial_logistic" else 1) \
                <= SCALAR_ROWS:
            # A few rows (a served request): Python floats, the same IEEE operations in the
            # same order as the numpy code below, without its per-call fixed cost.
            return self._predict_rows(X.tolist())
        if self.kind == "multinomial_logistic":
            # Each class's margin summed left to right over the features, the softmax's sum
            # left to right over the classes, fdlibm's exp: one fixed order whatever the
            # batch size or layout, and the very doubles of the Spark SQL that scores in the
            # JVM (sql_linear).
            margins = np.repeat(self.intercept[None, :], X.shape[0], axis=0)
            for j in range(X.shape[1]):
                margins = margins + X[:, j, None] * self.coefficients[j]
            with np.errstate(invalid="ignore"):
                shifted = margins - margins.max(axis=1, keepdims=True)
            exp = fdlibm.exp(shifted)
            total = exp[:, 0].copy()
            for k in range(1, exp.shape[1]):
                total = total + exp[:, k]
            probability = exp / total[:, None]
            return {"rawPrediction": margins, "probability": probability,
                    "prediction": np.argmax(margins, axis=1).astype(np.float64)}
        margin = self.margin(X)
        if self.kind == "linear_regression":
            return {"prediction": margin}
        if self.kind == "linear_svc":
            return {"rawPrediction": margin,
                    "prediction": (margin > self.threshold).astype(np.float64)}
        # fdlibm's exp (Spark SQL's) so that scoring in the JVM gives the same doubles.
        e = fdlibm.exp(-np.abs(margin))
        p1 = np.where(margin >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return {
            "rawPrediction": margin,
            "probability": np.column_stack([1.0 - p1, p1]),
            "prediction": (p1 > self.threshold).astype(np.float64),
        }

    def margin(self, X: np.ndarray) -> np.ndarray:
        """``intercept + x·w`` of each row, summed left to right over the features.

        One fixed order, one rounding per multiply and per add: exactly what
        the Spark SQL expression ``((b + x0*w0) + x1*w1) + ...`` computes (Java
        fuses no multiply-adds), so batch scoring in the JVM
        (:mod:`sparkml_aiaas.scoring.sql_linear`), pandas UDFs and the REST
        server agree bit for bit, whatever the batch size or memory layout.
        """
        X = np.asarray(X, dtype=np.float64)
        margin = np.full(X.shape[0], self.intercept, dtype=np.float64)
        for j, weight in enumerate(self.coefficients.tolist()):
            margin = margin + X[:, j] * weight
        return margin

    def _predict_rows(self, rows: List[List[float]]) -> Dict[str, np.ndarray]:
        """:meth:`predict_arrays` of a few rows, row by row in Python floats: bit for bit
        the numpy code's doubles (``tests/test_predictor_columns.py`` compares both)."""
        if self.kind == "multinomial_logistic":
            return _multinomial_rows(rows, self.intercept.tolist(), self.coefficients.tolist())
        weights, intercept = self.coefficients.tolist(), self.intercept
        margins = []
        for row in rows:
            margin = intercept
            for x, weight in zip(row, weights):
                margin = margin + x * weight
            margins.append(margin)
        margin = np.array(margins, dtype=np.float64)
        if self.kind == "linear_regression":
            return {"prediction": margin}
        threshold = self.threshold
        if self.kind == "linear_svc":
            return {"rawPrediction": margin,
                    "prediction": np.array([1.0 if m > threshold else 0.0 for m in margins])}
        probabilities, predictions = [], []
        for m in margins:
            e = fdlibm.exp_scalar(-abs(m))
            p1 = 1.0 / (1.0 + e) if m >= 0 else e / (1.0 + e)  # NaN: the second, as np.where
            probabilities.append((1.0 - p1, p1))
            predictions.append(1.0 if p1 > threshold else 0.0)
        return {"rawPrediction": margin,
                "probability": np.array(probabilities, dtype=np.float64).reshape(len(rows), 2),
                "prediction": np.array(predictions, dtype=np.float64)}

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        spec = predictor_section(metadata)
        kind = spec.get("kind")
        if not isinstance(kind, str) or kind not in _OUTPUTS:
            raise ModelFormatError(f"unknown linear predictor kind {kind!r:.80}")
        missing = [name for name in ("coefficients", "intercept") if name not in arrays]
        if missing:
            raise ModelFormatError(f"linear model artifact has no {missing} array(s)")
        numeric = {}
        for name in ("coefficients", "intercept"):
            value = arrays[name]
            if value.dtype.kind not in "biuf" or value.size == 0 or not np.isfinite(
                    value.astype(np.float64)).all():
                raise ModelFormatError(f"linear model array {name!r} must hold finite numbers, "
                                       f"got {value.dtype} of shape {value.shape}")
            numeric[name] = value
        feature_cols, vector_col = feature_inputs(spec.get("feature_cols"), spec.get("vector_col"),
                                                  "a linear predictor", exactly_one=False)
        coefficients = numeric["coefficients"]
        if kind == "multinomial_logistic":
            if coefficients.ndim != 2:
                raise ModelFormatError(f"multinomial coefficients must be a matrix, got shape "
                                       f"{coefficients.shape}")
        elif coefficients.ndim > 2 or (coefficients.ndim == 2 and coefficients.shape[1] != 1) \
                or numeric["intercept"].size != 1:
            raise ModelFormatError(f"{kind} needs one coefficient per feature and one intercept, "
                                   f"got shapes {coefficients.shape} and "
                                   f"{numeric['intercept'].shape}")
        if feature_cols and coefficients.shape[0] != len(feature_cols):
            raise ModelFormatError(f"the model has {coefficients.shape[0]} coefficients but "
                                   f"{len(feature_cols)} feature columns: {feature_cols}")
        return cls(
            kind=kind,
            coefficients=coefficients,
            intercept=numeric["intercept"],
            feature_cols=feature_cols,
            vector_col=None if feature_cols else vector_col,
            threshold=as_float(spec.get("threshold", 0.5), "threshold"),
            output_names=name_map(spec.get("output_names"), "output_names"),
            metadata=metadata,
        )


def _multinomial_rows(rows, intercepts: List[float], weights: List[List[float]]):
    """The multinomial outputs of a few rows in Python floats, in the order (and with the
    NaN rules: np.max and np.argmax pick NaN first) of the numpy code."""
    raw, probability, prediction = [], [], []
    for row in rows:
        margins = intercepts
        for x, class_weights in zip(row, weights):
            margins = [m + x * w for m, w in zip(margins, class_weights)]
        nan_at = next((k for k, m in enumerate(margins) if m != m), None)
        top = margins[nan_at] if nan_at is not None else max(margins)
        exp = [fdlibm.exp_scalar(m - top) for m in margins]
        total = exp[0]
        for value in exp[1:]:
            total = total + value
        raw.append(margins)
        probability.append([value / total for value in exp])
        prediction.append(float(nan_at if nan_at is not None else margins.index(top)))
    k = len(intercepts)
    return {"rawPrediction": np.array(raw, dtype=np.float64).reshape(len(rows), k),
            "probability": np.array(probability, dtype=np.float64).reshape(len(rows), k),
            "prediction": np.array(prediction, dtype=np.float64)}


#: Predictor family (``metadata["predictor"]["family"]``) -> class, or "module:Class"
#: imported on first use, so that loading a linear model never imports torch or xgboost.
_PREDICTORS = {
    "linear": LinearPredictor,
    "torch": "sparkml_aiaas.models.torch_predictor:TorchPredictor",
    "xgboost": "sparkml_aiaas.models.xgboost_predictor:XGBoostPredictor",
    "sklearn": "sparkml_aiaas.models.sklearn_predictor:SklearnPredictor",
}


def _predictor_class(family: str, path: str):
    # A fixed table: the family is only a key, so the artifact selects among our own
    # predictors and never names a module.
    entry = _PREDICTORS.get(family) if isinstance(family, str) else None
    if entry is None:
        raise ModelFormatError(
            f"model at {path!r} has unknown predictor family {family!r:.80}") from None
    if isinstance(entry, str):
        import importlib

        module, name = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise ModelFormatError(
                f"model at {path!r} is a {family} model, which needs an optional dependency "
                f"that is not installed ({exc}); pip install 'sparkml_aiaas[{family}]'") from None
    return entry


def load_predictor(path: str, trusted_factories=None):
    """Load a saved model as a Spark-free predictor (``predictor.predict(pandas_df)``).

    Loading never imports or runs code the artifact names unless ``trusted_factories``
    allows it (see :mod:`sparkml_aiaas.models.trust`); a damaged or edited artifact raises
    :class:`~sparkml_aiaas.errors.ModelFormatError`.

    Parameters
    ----------
    path : str
        Directory written by a model's ``save``, a saved ``PipelineModel``
        of ``PreprocessorModel`` stages followed by one of our models, or a
        model bundle (``model/`` and ``preprocessor/``, as a registry version
        stores them).
    trusted_factories : list of str, str or Allowlist, optional
        Torch network factories (``"pkg.module:function"``, or ``"pkg.module:*"``) a
        torch model may name, on top of ``SPARKML_AIAAS_TRUSTED_FACTORIES``.  The built-in
        ``mlp``/``cnn`` need none; any other named factory raises
        :class:`~sparkml_aiaas.models.trust.UntrustedCodeError` before it is imported.

    Examples
    --------
    >>> predictor = load_predictor("model_dir")          # doctest: +SKIP
    >>> predictor.predict(pandas_frame)["probability"]   # doctest: +SKIP
    >>> load_predictor("net_dir", trusted_factories=["mypkg.nets:make_net"])  # doctest: +SKIP
    """
    from sparkml_aiaas.models.pipeline_predictor import (
        is_bundle,
        is_saved_pipeline,
        load_bundle_predictor,
        load_pipeline_predictor,
    )

    allowlist = trusted(trusted_factories)

    def load_part(part: str):
        return load_predictor(part, allowlist)

    if is_saved_pipeline(path):
        return load_pipeline_predictor(path, load_part)
    if is_bundle(path):
        return load_bundle_predictor(path, load_part)
    metadata, arrays = read_artifact(path)
    # Batch scoring checks input frames against it, the server describes the model with it.
    checked_signature(metadata.get("signature"))
    family = predictor_section(metadata).get("family")
    predictor_class = _predictor_class(family, path)
    if getattr(predictor_class, "names_code", False):
        # Torch: the architecture may name a factory; the allowlist decides, before import.
        return predictor_class.from_artifact(metadata, arrays, trusted_factories=allowlist,
                                             where=f"the model at {path!r}")
    if getattr(predictor_class, "reads_files", False):
        # Families with extra files (an XGBoost booster, a skops file) read them, verified.
        return predictor_class.from_artifact(metadata, arrays, path)
    return predictor_class.from_artifact(metadata, arrays)
