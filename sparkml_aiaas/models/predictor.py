"""Spark-free predictors: the code path shared by batch scoring and serving.

A predictor knows its input columns and output columns and turns a pandas
DataFrame into predictions with numpy.  Spark's pandas UDFs call exactly this
code on each Arrow batch; the REST server calls it on request records; so the
same rows get the same numbers everywhere.  This module imports no pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from sparkml_aiaas.core import fdlibm
from sparkml_aiaas.errors import DataValidationError, ModelFormatError
from sparkml_aiaas.models.artifact import read_artifact

#: Spark SQL types of output columns, by predictor kind.
_OUTPUTS = {
    "binary_logistic": [("rawPrediction", "double"), ("probability", "array<double>"),
                        ("prediction", "double")],
    "multinomial_logistic": [("rawPrediction", "array<double>"),
                             ("probability", "array<double>"), ("prediction", "double")],
    "linear_svc": [("rawPrediction", "double"), ("prediction", "double")],
    "linear_regression": [("prediction", "double")],
}


@dataclass
class LinearPredictor:
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

    @property
    def input_columns(self) -> List[str]:
        return list(self.feature_cols) if self.feature_cols else [self.vector_col]

    @property
    def output_columns(self) -> List[tuple]:
        """``[(name, spark_sql_type), ...]`` in output order."""
        names = self.output_names or {}
        return [(names.get(name, name), dtype) for name, dtype in _OUTPUTS[self.kind]]

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``(n, d)`` float64 feature matrix of a pandas DataFrame."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"input is missing column(s) {missing}; the model needs {self.input_columns}"
            )
        if self.feature_cols:
            try:
                X = frame[self.feature_cols].to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataValidationError(f"feature columns must be numeric: {exc}") from None
        else:
            cells = frame[self.vector_col].to_numpy()
            if len(cells) == 0:
                return np.empty((0, self.n_features))
            sizes = {len(c) if c is not None else -1 for c in cells}
            if sizes != {self.n_features}:
                raise DataValidationError(
                    f"column {self.vector_col!r} must hold vectors of size {self.n_features}; "
                    f"found sizes {sorted(sizes)}"
                )
            X = np.stack([np.asarray(c, dtype=np.float64) for c in cells])
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataValidationError(f"expected {self.n_features} features, got shape {X.shape}")
        return X

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name."""
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "multinomial_logistic":
            # einsum, not BLAS: each row's sum in one fixed order whatever the batch size or
            # BLAS threading; row-major first, as einsum's order depends on the layout.
            X = np.ascontiguousarray(X)
            margins = np.einsum("ij,jk->ik", X, self.coefficients) + self.intercept
            shifted = margins - margins.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            probability = exp / exp.sum(axis=1, keepdims=True)
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

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of ``frame`` (NaN features give NaN outputs)."""
        return self.predict_matrix(self.features(frame), index=frame.index)

    def predict_matrix(self, X: np.ndarray, index=None) -> pd.DataFrame:
        """Predictions for the rows of a feature matrix, as the output columns."""
        out = self.predict_arrays(X)
        names = self.output_names or {}
        columns = {}
        for name, _ in _OUTPUTS[self.kind]:
            values = out[name]
            columns[names.get(name, name)] = list(values) if values.ndim == 2 else values
        return pd.DataFrame(columns, index=index)

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        spec = metadata.get("predictor")
        if not spec:
            raise ModelFormatError("model metadata has no 'predictor' section")
        return cls(
            kind=spec["kind"],
            coefficients=arrays["coefficients"],
            intercept=arrays["intercept"],
            feature_cols=spec.get("feature_cols"),
            vector_col=spec.get("vector_col"),
            threshold=float(spec.get("threshold", 0.5)),
            output_names=spec.get("output_names"),
            metadata=metadata,
        )


#: Predictor family (``metadata["predictor"]["family"]``) -> class, or "module:Class"
#: imported on first use, so that loading a linear model never imports torch or xgboost.
_PREDICTORS = {
    "linear": LinearPredictor,
    "torch": "sparkml_aiaas.models.torch_predictor:TorchPredictor",
    "xgboost": "sparkml_aiaas.models.xgboost_predictor:XGBoostPredictor",
    "sklearn": "sparkml_aiaas.models.sklearn_predictor:SklearnPredictor",
}


def _predictor_class(family: str, path: str):
    try:
        entry = _PREDICTORS[family]
    except KeyError:
        raise ModelFormatError(f"model at {path!r} has unknown predictor family {family!r}") from None
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


def load_predictor(path: str):
    """Load a saved model as a Spark-free predictor (``predictor.predict(pandas_df)``).

    Parameters
    ----------
    path : str
        Directory written by a model's ``save``, a saved ``PipelineModel``
        of ``PreprocessorModel`` stages followed by one of our models, or a
        model bundle (``model/`` and ``preprocessor/``, as a registry version
        stores them).

    Examples
    --------
    >>> predictor = load_predictor("model_dir")          # doctest: +SKIP
    >>> predictor.predict(pandas_frame)["probability"]   # doctest: +SKIP
    """
    from sparkml_aiaas.models.pipeline_predictor import (
        is_bundle,
        is_saved_pipeline,
        load_bundle_predictor,
        load_pipeline_predictor,
    )

    if is_saved_pipeline(path):
        return load_pipeline_predictor(path, load_predictor)
    if is_bundle(path):
        return load_bundle_predictor(path, load_predictor)
    metadata, arrays = read_artifact(path)
    family = metadata.get("predictor", {}).get("family")
    predictor_class = _predictor_class(family, path)
    if getattr(predictor_class, "reads_files", False):
        # Families with extra files (an XGBoost booster, a skops file) read them, verified.
        return predictor_class.from_artifact(metadata, arrays, path)
    return predictor_class.from_artifact(metadata, arrays)
