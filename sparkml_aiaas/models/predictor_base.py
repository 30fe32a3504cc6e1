"""The predictor contract every Spark-free model family shares.

A predictor declares its input columns (numeric ``feature_cols``, or one ``vector_col``
holding length-``n_features`` arrays) and its output columns, and turns rows into
predictions with numpy.  :class:`Predictor` owns everything around a family's arithmetic:

* the feature matrix, from a pandas DataFrame (:meth:`~Predictor.features`) or from a
  mapping of numpy columns (:meth:`~Predictor.features_from_columns`) -- one code path
  underneath, so that both give the same doubles, nulls included;
* ``predict(frame)`` (a DataFrame, as batch scoring and ``transform`` use it),
  ``predict_matrix(X)`` and ``predict_columns(columns)`` (numpy in, numpy out: the serving
  fast path, never a pandas frame).

A family implements only :meth:`~Predictor.predict_arrays` (the ``(n, d)`` matrix to
output arrays keyed by canonical output name) and :meth:`~Predictor.canonical_outputs`.
Null (None / NaN / ``pd.NA``) numeric cells become NaN features; what a NaN feature gives
is the family's business (NaN outputs for most).  This module imports no pyspark.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import pandas as pd

from sparkml_aiaas.errors import DataValidationError, expected_names

__all__ = ["Predictor", "output_arrays"]


class Predictor:
    """Base of the Spark-free predictors (linear, scikit-learn, torch, XGBoost).

    Subclasses set ``feature_cols`` / ``vector_col`` / ``output_names`` and provide
    ``n_features`` (``None`` when unknown until data arrives), :meth:`canonical_outputs`
    and :meth:`predict_arrays`.
    """

    feature_cols: Optional[List[str]]
    vector_col: Optional[str]
    output_names: Optional[Dict[str, str]]

    #: dtype of the feature matrix (torch networks read float32).
    feature_dtype = np.float64

    # -- what a family provides ----------------------------------------------------------
    def canonical_outputs(self) -> List[tuple]:
        """``[(canonical name, spark_sql_type), ...]`` in output order, before renaming."""
        raise NotImplementedError

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays of the rows of ``X``, keyed by canonical output name."""
        raise NotImplementedError

    # -- the contract --------------------------------------------------------------------
    @property
    def input_columns(self) -> List[str]:
        return list(self.feature_cols) if self.feature_cols else [self.vector_col]

    @property
    def output_columns(self) -> List[tuple]:
        """``[(name, spark_sql_type), ...]`` in output order."""
        names = self.output_names or {}
        return [(names.get(name, name), dtype) for name, dtype in self.canonical_outputs()]

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``(n, d)`` feature matrix of a pandas DataFrame (null cells: NaN)."""
        self._check_present(frame.columns)
        if self.feature_cols:
            columns = {name: _series_values(frame[name], name, self.feature_dtype)
                       for name in self.feature_cols}
        else:
            columns = {self.vector_col: frame[self.vector_col].to_numpy()}
        return self.features_from_columns(columns)

    def features_from_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The ``(n, d)`` feature matrix of one array per input column (all of length n).

        Scalar columns are 1-D (float, int, bool, or object holding numbers, numeric
        strings and None); the vector column is 2-D ``[n, d]`` or 1-D of per-row arrays.
        """
        self._check_present(columns)
        if self.feature_cols:
            return self._scalar_matrix([columns[name] for name in self.feature_cols])
        return self._vector_matrix(columns[self.vector_col])

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of ``frame`` (same index)."""
        return self.predict_matrix(self.features(frame), index=frame.index)

    def predict_matrix(self, X: np.ndarray, index=None) -> pd.DataFrame:
        """Predictions for the rows of a feature matrix, as the output columns (an array
        output is a column of per-row arrays)."""
        out = output_arrays(self, self.predict_arrays(X))
        return pd.DataFrame({name: list(values) if values.ndim == 2 else values
                             for name, values in out.items()}, index=index)

    def predict_columns(self, columns: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """Predictions as numpy arrays, one per output column in :attr:`output_columns` order:
        ``[n]`` for a scalar output, ``[n, C]`` float64 for an array output.

        The serving fast path: the same doubles as ``predict(pd.DataFrame(columns))``
        without building a frame.
        """
        return output_arrays(self, self.predict_arrays(self.features_from_columns(columns)))

    # -- feature extraction --------------------------------------------------------------
    def _check_present(self, available) -> None:
        missing = [name for name in self.input_columns if name not in available]
        if missing:
            raise DataValidationError(
                f"missing column(s) {missing} in the model's input "
                f"({expected_names(self.input_columns)})")

    def _scalar_matrix(self, values: List[Any]) -> np.ndarray:
        # One numpy call converts every column (float(v) for object cells: None -> NaN,
        # "1.5" -> 1.5); X is the transpose of that (d, n) array, the layout pandas gives.
        try:
            stacked = np.array(values, dtype=self.feature_dtype)
        except (TypeError, ValueError):
            stacked = None
        if stacked is None or stacked.ndim != 2:
            self._explain_bad_columns(values)
        d = self.n_features
        if d is not None and stacked.shape[0] != d:
            raise DataValidationError(f"expected {d} features, got {stacked.shape[0]} columns")
        return stacked.T

    def _explain_bad_columns(self, values: List[Any]) -> None:
        """Raise the DataValidationError naming the first column that cannot be a feature."""
        lengths = set()
        for name, column in zip(self.feature_cols, values):
            array = np.asarray(column)
            if array.ndim != 1:
                raise DataValidationError(
                    f"feature column {name!r} must be one value per row (a 1-D array), got "
                    f"shape {array.shape}")
            try:
                array.astype(self.feature_dtype)
            except (TypeError, ValueError) as exc:
                raise DataValidationError(
                    f"feature column {name!r} must be numeric (dtype {array.dtype}): "
                    f"{exc}") from None
            lengths.add(array.shape[0])
        raise DataValidationError(f"feature columns must all have the same length; found "
                                  f"lengths {sorted(lengths)}")

    def _vector_matrix(self, column: Any) -> np.ndarray:
        name, d = self.vector_col, self.n_features
        cells = np.asarray(column) if not isinstance(column, np.ndarray) else column
        if len(cells) == 0:
            return np.empty((0, d or 0), dtype=self.feature_dtype)
        if cells.ndim == 2:
            sizes = {cells.shape[1]}
        elif cells.ndim == 1 and cells.dtype == object:
            sizes = {len(c) if c is not None else -1 for c in cells}
        else:
            raise DataValidationError(
                f"column {name!r} must hold one vector per row ([n, d] or n arrays), got an "
                f"array of shape {cells.shape} and dtype {cells.dtype}")
        if d is None and len(sizes) == 1 and -1 not in sizes:
            d = next(iter(sizes))  # a model that learns its width from the data
        if sizes != {d}:
            raise DataValidationError(
                f"column {name!r} must hold arrays of {d} values (one per row; null arrays are "
                f"not allowed: use NaN entries for missing values); found sizes {sorted(sizes)} "
                "(-1 = null)")
        try:
            if cells.ndim == 2:
                return np.asarray(cells, dtype=self.feature_dtype)
            return np.stack([np.asarray(c, dtype=self.feature_dtype) for c in cells])
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"column {name!r} must hold numbers: {exc}") from None


def output_arrays(predictor, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``predict_arrays``'s result as the output columns: renamed, in output order, float64."""
    names = predictor.output_names or {}
    return {names.get(name, name): np.asarray(arrays[name], dtype=np.float64)
            for name, _ in predictor.canonical_outputs()}


def _series_values(series: pd.Series, name: str, dtype) -> np.ndarray:
    """A frame column as numpy for :meth:`Predictor.features_from_columns`.

    Nullable extension columns (``Int64``, ``Float64``, ``boolean``, ``string``) are
    converted here, ``pd.NA`` to NaN; numpy-backed columns pass as they are.
    """
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    try:
        return series.to_numpy(dtype=dtype, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"feature column {name!r} must be numeric (dtype {series.dtype}): {exc}") from None
