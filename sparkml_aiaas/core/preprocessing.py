"""Fitted preprocessing math, shared by training, batch scoring and serving.

No pyspark here.  The Spark stage :class:`sparkml_aiaas.preprocessing.Preprocessor`
computes column statistics with Spark aggregations and hands them to
:func:`fit_from_stats`; its model applies :meth:`FittedPreprocessor.transform_frame`
to each Arrow batch through a pandas UDF; the REST server rebuilds the same
object from saved metadata with :meth:`FittedPreprocessor.from_dict`.  So one
row gives one feature vector everywhere.  :func:`fit_from_pandas` computes the
same statistics with numpy and is the single-machine reference.

Per numeric column the steps run in this order::

    impute  ->  clip  ->  log1p  ->  scale

* **impute** (``mean`` | ``median`` | ``most_frequent`` | ``constant`` | ``none``):
  statistics over the raw non-missing values, so ``fill_value`` and the
  learned value are in the column's own units.  Null and NaN are both
  missing.  With ``none`` a missing value at transform time is an error.
* **clip** to ``[lower, upper]`` (either bound may be None).
* **log1p**: refused at fit (and at transform) when a value, after clipping,
  is negative; clip at 0 first to map negatives to 0 on purpose.
* **scale** (``standard`` | ``minmax`` | ``robust`` | ``none``): statistics
  over the non-missing values after clip and log, *not* over imputed values
  (as scikit-learn's scalers, which ignore NaN when fitting).  So a
  mean-imputed value scales to exactly 0 and imputation never shrinks the
  learned spread.  ``standard`` uses the population std (ddof 0, as
  ``StandardScaler``); ``minmax`` maps the training range to [0, 1];
  ``robust`` subtracts the median and divides by the IQR (q75 - q25).  A
  zero spread (std, range or IQR; judged with scikit-learn's tolerances)
  scales by 1, so a constant column maps to 0.  Quantiles interpolate
  linearly (numpy's default, Spark's exact ``percentile``).

Categorical columns are one-hot encoded.  Values are compared by a canonical
string (:func:`category_key`): strings as they are, integers (also integral
floats: an integer column with nulls reaches pandas as float64) as decimal
digits, booleans as ``true``/``false``, other floats as ``repr``.  Null (and
NaN) is a category of its own, named ``__null__``, when it was seen in
training.  Categories are ordered by training frequency, most frequent first,
ties by value in code-point order (null last); ``max_categories`` keeps the
first ``k``.  A value outside the kept categories is handled by
``handle_unseen``: ``error`` raises (naming column and value), ``keep`` puts a
1 in an extra last slot ``<col>=__unknown__``, ``zero`` gives an all-zero
block (scikit-learn's ``handle_unknown="ignore"``).  With ``error``, a
``max_categories`` that drops categories seen in training is refused at fit,
since the training data itself would then fail to transform.

Hashed columns share one block of ``num_features`` slots.  Each non-null value
adds 1.0 at ``murmur3_32(utf8(f"{column}={category_key(value)}"), seed=42) mod
num_features`` (non-negative modulo); nulls add nothing.  For string and
boolean columns this is exactly the index Spark's
``pyspark.ml.feature.FeatureHasher`` computes (checked in the tests); numeric
columns are hashed as categories here, whereas FeatureHasher would treat
them as real-valued.

The assembled matrix is float64: numeric columns (in ``numeric_cols`` order),
then each one-hot block (in ``categorical_cols`` order), then the hash block;
:attr:`FittedPreprocessor.feature_names` names every column (``age``,
``city=Paris``, ``city=__unknown__``, ``hash[17]``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from sparkml_aiaas.errors import (ConfigError, DataValidationError, ModelFormatError,
                                  expected_names, name_list)

__all__ = [
    "IMPUTE_STRATEGIES",
    "SCALINGS",
    "HANDLE_UNSEEN",
    "NULL_NAME",
    "UNKNOWN_NAME",
    "PreprocessSpec",
    "NumericStats",
    "ImputeStep",
    "ClipStep",
    "LogStep",
    "ScaleStep",
    "OneHotStep",
    "HashStep",
    "FittedPreprocessor",
    "category_key",
    "category_keys",
    "hash_index",
    "numeric_stats_from_values",
    "fit_imputer_from_stats",
    "fit_scaler_from_stats",
    "fit_log_from_stats",
    "fit_categories_from_counts",
    "fit_from_stats",
    "fit_from_pandas",
    "stats_needed",
]

IMPUTE_STRATEGIES = ("none", "mean", "median", "most_frequent", "constant")
SCALINGS = ("none", "standard", "minmax", "robust")
HANDLE_UNSEEN = ("error", "keep", "zero")
#: Display name of the null category and of the unknown slot in feature names.
NULL_NAME = "__null__"
UNKNOWN_NAME = "__unknown__"
HASH_SEED = 42
FORMAT = "sparkml_aiaas.preprocessor"
FORMAT_VERSION = 1

_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------
def _finite_or_none(value, what: str) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number or null, not {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, not {value!r}")
    return number


@dataclass
class PreprocessSpec:
    """What to fit: the columns and the options (see the module docstring).

    Parameters
    ----------
    numeric_cols, categorical_cols, hashed_cols : list of str
    num_hash_features : int
        Size of the hash block (used when ``hashed_cols`` is not empty).
    impute_strategy : {"none", "mean", "median", "most_frequent", "constant"}
    impute_fill_value : float
        The value for ``constant``, in the column's raw units.
    scaling : {"none", "standard", "minmax", "robust"}
    with_mean, with_std : bool
        ``standard`` scaling only: centre, and divide by the std.
    log_cols : list of str
        Numeric columns to ``log1p``.
    clip_bounds : dict of str to (lower, upper)
        Numeric columns to clip; a bound may be None (one-sided).
    handle_unseen : {"error", "keep", "zero"}
    max_categories : int
        Keep at most this many categories per column (0: all).
    """

    numeric_cols: List[str] = field(default_factory=list)
    categorical_cols: List[str] = field(default_factory=list)
    hashed_cols: List[str] = field(default_factory=list)
    num_hash_features: int = 1024
    impute_strategy: str = "mean"
    impute_fill_value: float = 0.0
    scaling: str = "none"
    with_mean: bool = True
    with_std: bool = True
    log_cols: List[str] = field(default_factory=list)
    clip_bounds: Dict[str, Tuple[Optional[float], Optional[float]]] = field(default_factory=dict)
    handle_unseen: str = "error"
    max_categories: int = 0

    def __post_init__(self):
        self.numeric_cols = list(self.numeric_cols or [])
        self.categorical_cols = list(self.categorical_cols or [])
        self.hashed_cols = list(self.hashed_cols or [])
        self.log_cols = list(self.log_cols or [])
        self.clip_bounds = dict(self.clip_bounds or {})
        self.validate()

    @property
    def input_columns(self) -> List[str]:
        return self.numeric_cols + self.categorical_cols + self.hashed_cols

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first problem found."""
        groups = {"numericCols": self.numeric_cols, "categoricalCols": self.categorical_cols,
                  "hashedCols": self.hashed_cols}
        seen: Dict[str, str] = {}
        for group, columns in groups.items():
            for name in columns:
                if not isinstance(name, str) or not name:
                    raise ConfigError(f"{group} must hold non-empty column names, not {name!r}")
                if name in seen:
                    where = "twice in " + group if seen[name] == group else (
                        f"in both {seen[name]} and {group}")
                    raise ConfigError(f"column {name!r} is listed {where}; a column gets one "
                                      "treatment")
                seen[name] = group
        if not seen:
            raise ConfigError("nothing to preprocess: set numericCols, categoricalCols or "
                              "hashedCols")
        if self.impute_strategy not in IMPUTE_STRATEGIES:
            raise ConfigError(f"imputeStrategy is {self.impute_strategy!r}; expected one of "
                              f"{list(IMPUTE_STRATEGIES)}")
        self.impute_fill_value = _finite_or_none(self.impute_fill_value, "imputeFillValue")
        if self.impute_fill_value is None:
            raise ConfigError("imputeFillValue must be a finite number")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"scaling is {self.scaling!r}; expected one of {list(SCALINGS)}")
        if self.handle_unseen not in HANDLE_UNSEEN:
            raise ConfigError(f"handleUnseen is {self.handle_unseen!r}; expected one of "
                              f"{list(HANDLE_UNSEEN)}")
        if isinstance(self.max_categories, bool) or not isinstance(self.max_categories, int) \
                or self.max_categories < 0:
            raise ConfigError(f"maxCategories must be an integer >= 0 (0: no limit), not "
                              f"{self.max_categories!r}")
        if self.hashed_cols and (isinstance(self.num_hash_features, bool)
                                 or not isinstance(self.num_hash_features, int)
                                 or self.num_hash_features < 1):
            raise ConfigError(f"numHashFeatures must be a positive integer, not "
                              f"{self.num_hash_features!r}")
        for name in self.log_cols:
            if name not in self.numeric_cols:
                raise ConfigError(f"logCols names column {name!r}, which is not in numericCols "
                                  f"{self.numeric_cols}")
        bounds = {}
        for name, pair in self.clip_bounds.items():
            if name not in self.numeric_cols:
                raise ConfigError(f"clipBounds names column {name!r}, which is not in "
                                  f"numericCols {self.numeric_cols}")
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"clipBounds for column {name!r} must be [lower, upper], "
                                  f"not {pair!r}")
            lower = _finite_or_none(pair[0], f"clipBounds lower bound of column {name!r}")
            upper = _finite_or_none(pair[1], f"clipBounds upper bound of column {name!r}")
            if lower is not None and upper is not None and lower > upper:
                raise ConfigError(f"clipBounds for column {name!r}: lower {lower} > upper {upper}")
            bounds[name] = (lower, upper)
        self.clip_bounds = bounds


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
@dataclass
class NumericStats:
    """Statistics of one column's non-missing values (fields not asked for stay None)."""

    count: int = 0
    mean: Optional[float] = None
    std: Optional[float] = None  # population (ddof 0)
    min: Optional[float] = None
    max: Optional[float] = None
    q25: Optional[float] = None
    median: Optional[float] = None
    q75: Optional[float] = None
    mode: Optional[float] = None  # most frequent, smallest on ties


def stats_needed(spec: PreprocessSpec, column: str) -> Dict[str, set]:
    """Which statistics fitting ``column`` needs, per stage.

    Returns ``{"raw": fields, "clipped": fields, "final": fields}``: ``raw`` over
    the non-missing input values (imputation), ``clipped`` after clipping (the
    log check), ``final`` after clip and log (scaling).  ``count`` is always
    wanted on ``raw``.
    """
    raw = {"count"}
    raw |= {"mean": {"mean"}, "median": {"median"}, "most_frequent": {"mode"}}.get(
        spec.impute_strategy, set())
    clipped = {"min"} if column in spec.log_cols else set()
    final = {"none": set(), "standard": {"count", "mean", "std"}, "minmax": {"min", "max"},
             "robust": {"q25", "median", "q75"}}[spec.scaling]
    return {"raw": raw, "clipped": clipped, "final": final}


def numeric_stats_from_values(values: np.ndarray, fields: Sequence[str]) -> NumericStats:
    """:class:`NumericStats` of float64 ``values`` (missing already removed)."""
    values = np.asarray(values, dtype=np.float64)
    stats = NumericStats(count=int(values.size))
    if values.size == 0:
        return stats
    fields = set(fields)
    if "mean" in fields:
        stats.mean = float(values.mean())
    if "std" in fields:
        stats.std = float(values.std())
    if "min" in fields:
        stats.min = float(values.min())
    if "max" in fields:
        stats.max = float(values.max())
    for name, q in (("q25", 25.0), ("median", 50.0), ("q75", 75.0)):
        if name in fields:
            setattr(stats, name, float(np.percentile(values, q)))
    if "mode" in fields:
        uniques, counts = np.unique(values, return_counts=True)
        stats.mode = float(uniques[int(np.argmax(counts))])  # sorted: first max is smallest
    return stats


# --------------------------------------------------------------------------------------------
# Fitted steps
# --------------------------------------------------------------------------------------------
@dataclass
class ImputeStep:
    """Replace missing values of ``column`` by ``value`` (``strategy`` is informative)."""

    column: str
    strategy: str
    value: Optional[float]  # None: strategy "none", missing values are an error
    kind: str = "impute"

    def apply(self, x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        if missing.any():
            if self.value is None:
                raise DataValidationError(
                    f"column {self.column!r} has {int(missing.sum())} missing value(s) (null or "
                    "NaN) and imputeStrategy is 'none'; set an imputeStrategy or clean the data")
            x = np.where(missing, self.value, x)
        return x


@dataclass
class ClipStep:
    column: str
    lower: Optional[float]
    upper: Optional[float]
    kind: str = "clip"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lower, self.upper)


@dataclass
class LogStep:
    """``log1p``; negative inputs are refused (clip at 0 first to map them to 0)."""

    column: str
    kind: str = "log1p"

    def apply(self, x: np.ndarray) -> np.ndarray:
        negative = x < 0
        if negative.any():
            raise DataValidationError(
                f"column {self.column!r} is log-transformed but holds a negative value "
                f"({float(x[negative][0])!r}); clip it at 0 (clipBounds) or remove it from logCols")
        return np.log1p(x)


@dataclass
class ScaleStep:
    """``(x - center) / scale``."""

    column: str
    method: str
    center: float
    scale: float
    kind: str = "scale"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center) / self.scale


@dataclass
class OneHotStep:
    """One-hot block of ``column`` over ``categories`` (canonical keys; None is null)."""

    column: str
    categories: List[Optional[str]]
    handle_unseen: str
    kind: str = "onehot"

    def __post_init__(self):
        self._lookup = {key: i for i, key in enumerate(self.categories)}

    @property
    def width(self) -> int:
        return len(self.categories) + (1 if self.handle_unseen == "keep" else 0)

    @property
    def feature_names(self) -> List[str]:
        names = [f"{self.column}={NULL_NAME if c is None else c}" for c in self.categories]
        if self.handle_unseen == "keep":
            names.append(f"{self.column}={UNKNOWN_NAME}")
        return names

    def indices(self, values) -> np.ndarray:
        """Slot of each value; -1 for an all-zero row (``zero`` policy)."""
        codes, keys = _factorized_keys(values)
        null_slot = self._lookup.get(None, -2)
        # One dict lookup per distinct value; code -1 (null/NaN) reads the last entry.
        unique_slots = np.array([self._lookup.get(k, -2) for k in keys] + [null_slot],
                                dtype=np.int64)
        slots = unique_slots[codes]
        unseen = slots == -2
        if unseen.any():
            if self.handle_unseen == "error":
                code = int(codes[int(np.argmax(unseen))])
                shown = "null" if code < 0 or keys[code] is None else repr(keys[code])
                raise DataValidationError(
                    f"column {self.column!r} has value {shown}, which was not among the "
                    f"categories kept at fit ({len(self.categories)}); set handleUnseen to "
                    "'keep' or 'zero' to accept unseen values")
            slots = np.where(unseen, len(self.categories) if self.handle_unseen == "keep" else -1,
                             slots)
        return slots

    def block(self, values) -> np.ndarray:
        slots = self.indices(values)
        out = np.zeros((len(slots), self.width), dtype=np.float64)
        rows = np.nonzero(slots >= 0)[0]
        out[rows, slots[rows]] = 1.0
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "categories": list(self.categories),
                "handle_unseen": self.handle_unseen}


@dataclass
class HashStep:
    """The shared hash block of ``columns`` (see the module docstring)."""

    columns: List[str]
    num_features: int
    kind: str = "hash"

    @property
    def feature_names(self) -> List[str]:
        return [f"hash[{i}]" for i in range(self.num_features)]

    def block(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(frame), self.num_features), dtype=np.float64)
        for column in self.columns:
            codes, keys = _factorized_keys(frame[column])
            # A distinct value whose key is None (an exotic missing marker) hashes nowhere.
            slots = np.array([-1 if k is None else hash_index(column, k, self.num_features)
                              for k in keys] + [-1], dtype=np.int64)[codes]
            rows = np.nonzero(slots >= 0)[0]
            # add.at, not +=: two columns (or a collision) may hit one slot in a row.
            np.add.at(out, (rows, slots[rows]), 1.0)
        return out


def _factorized_keys(values) -> Tuple[np.ndarray, List[Optional[str]]]:
    """``(codes, keys)``: code per row (-1 for null/NaN) and the canonical key per code.

    Factorizing first keeps the Python-level work per distinct value, not per row.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [category_key(u) for u in uniques]


def hash_index(column: str, key: str, num_features: int) -> int:
    """Slot of the canonical value ``key`` of ``column`` in a hash block of ``num_features``."""
    from sklearn.utils import murmurhash3_32

    h = int(murmurhash3_32(f"{column}={key}", seed=HASH_SEED, positive=False))
    return h % num_features  # Python's % of a positive modulus is non-negative


def category_key(value: Any) -> Optional[str]:
    """The canonical string a categorical value is compared by; None for null/NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number != number:
            return None
        # An integer column with nulls reaches pandas as float64: 3.0 must still be "3".
        if number.is_integer() and abs(number) < 2 ** 63:
            return str(int(number))
        return repr(number)
    return str(value)


def category_keys(values) -> list:
    """:func:`category_key` of each value of a Series, array or list."""
    if isinstance(values, pd.Series):
        values = values.tolist()
    return [category_key(v) for v in values]


# --------------------------------------------------------------------------------------------
# Fitting from statistics
# --------------------------------------------------------------------------------------------
def _require(column: str, value, what: str, stats: NumericStats):
    if value is None or stats.count == 0:
        raise DataValidationError(
            f"column {column!r} has no non-missing values to compute its {what} from")
    return float(value)


def fit_imputer_from_stats(column: str, strategy: str, stats: NumericStats,
                           fill_value: float = 0.0) -> ImputeStep:
    """The :class:`ImputeStep` of ``column`` from its raw :class:`NumericStats`."""
    if strategy == "none":
        return ImputeStep(column, strategy, None)
    if strategy == "constant":
        return ImputeStep(column, strategy, float(fill_value))
    field_name = {"mean": "mean", "median": "median", "most_frequent": "mode"}.get(strategy)
    if field_name is None:
        raise ConfigError(f"imputeStrategy is {strategy!r}; expected one of "
                          f"{list(IMPUTE_STRATEGIES)}")
    value = _require(column, getattr(stats, field_name), f"{strategy} for imputation", stats)
    return ImputeStep(column, strategy, value)


def _is_constant_std(std: float, mean: float, n: int) -> bool:
    # scikit-learn's _is_constant_feature: a variance within the rounding error of
    # its own computation is zero, so a constant column scales by 1 (not 1e16).
    var = std * std
    upper_bound = n * _EPS * var + (n * mean * _EPS) ** 2
    return var <= upper_bound


def fit_scaler_from_stats(column: str, method: str, stats: NumericStats,
                          with_mean: bool = True, with_std: bool = True) -> Optional[ScaleStep]:
    """The :class:`ScaleStep` of ``column`` from its final :class:`NumericStats` (None: no-op)."""
    if method == "none":
        return None
    if method == "standard":
        if not (with_mean or with_std):
            return None
        mean = _require(column, stats.mean, "mean for standard scaling", stats)
        std = _require(column, stats.std, "std for standard scaling", stats)
        scale = 1.0 if (not with_std or _is_constant_std(std, mean, stats.count)) else std
        return ScaleStep(column, method, mean if with_mean else 0.0, scale)
    if method == "minmax":
        low = _require(column, stats.min, "min for minmax scaling", stats)
        high = _require(column, stats.max, "max for minmax scaling", stats)
        span = high - low
        return ScaleStep(column, method, low, 1.0 if span < 10 * _EPS else span)
    if method == "robust":
        median = _require(column, stats.median, "median for robust scaling", stats)
        q25 = _require(column, stats.q25, "25th percentile for robust scaling", stats)
        q75 = _require(column, stats.q75, "75th percentile for robust scaling", stats)
        iqr = q75 - q25
        return ScaleStep(column, method, median, 1.0 if iqr < 10 * _EPS else iqr)
    raise ConfigError(f"scaling is {method!r}; expected one of {list(SCALINGS)}")


def fit_log_from_stats(column: str, stats: NumericStats) -> LogStep:
    """The :class:`LogStep` of ``column``; refuses a negative (clipped) minimum."""
    if stats.min is not None and stats.min < 0:
        raise DataValidationError(
            f"column {column!r} is in logCols but has negative values (min {stats.min!r}); "
            "log1p needs values >= 0: clip it at 0 (clipBounds) or drop it from logCols")
    return LogStep(column)


def fit_categories_from_counts(column: str, counts: Mapping[Any, int], max_categories: int = 0,
                               handle_unseen: str = "error") -> OneHotStep:
    """The :class:`OneHotStep` of ``column`` from ``{value: count}`` (raw or canonical values).

    Values are canonicalised with :func:`category_key` and their counts merged;
    categories are ordered by count descending, then value ascending, null last.
    """
    merged: Dict[Optional[str], int] = {}
    for value, count in counts.items():
        key = category_key(value)
        merged[key] = merged.get(key, 0) + int(count)
    ordered = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
    categories = [key for key, count in ordered if count > 0]
    if max_categories and len(categories) > max_categories:
        if handle_unseen == "error":
            raise ConfigError(
                f"maxCategories={max_categories} would drop {len(categories) - max_categories} "
                f"of the {len(categories)} categories of column {column!r} seen in training, "
                "which handleUnseen='error' would then refuse; use 'keep' or 'zero'")
        categories = categories[:max_categories]
    return OneHotStep(column, categories, handle_unseen)


@dataclass
class ColumnStats:
    """Everything :func:`fit_from_stats` needs about one numeric column."""

    raw: NumericStats
    clipped: Optional[NumericStats] = None
    final: Optional[NumericStats] = None


def fit_from_stats(spec: PreprocessSpec, n_rows: int, numeric: Mapping[str, ColumnStats],
                   category_counts: Mapping[str, Mapping[Any, int]]) -> "FittedPreprocessor":
    """Build the :class:`FittedPreprocessor` from statistics computed elsewhere (Spark, numpy)."""
    spec.validate()
    if n_rows == 0:
        raise DataValidationError("cannot fit preprocessing on an empty dataset (0 rows)")
    steps: List[Any] = []
    for column in spec.numeric_cols:
        stats = numeric[column]
        steps.append(fit_imputer_from_stats(column, spec.impute_strategy, stats.raw,
                                            spec.impute_fill_value))
        if column in spec.clip_bounds:
            lower, upper = spec.clip_bounds[column]
            steps.append(ClipStep(column, lower, upper))
        if column in spec.log_cols:
            steps.append(fit_log_from_stats(column, stats.clipped or NumericStats()))
        scaler = fit_scaler_from_stats(column, spec.scaling, stats.final or NumericStats(),
                                       spec.with_mean, spec.with_std)
        if scaler is not None:
            steps.append(scaler)
    for column in spec.categorical_cols:
        steps.append(fit_categories_from_counts(column, category_counts[column],
                                                spec.max_categories, spec.handle_unseen))
    if spec.hashed_cols:
        steps.append(HashStep(list(spec.hashed_cols), int(spec.num_hash_features)))
    return FittedPreprocessor(steps=steps, numeric_cols=list(spec.numeric_cols),
                              categorical_cols=list(spec.categorical_cols),
                              hashed_cols=list(spec.hashed_cols))


def _numeric_array(frame: pd.DataFrame, column: str) -> np.ndarray:
    series = frame[column]
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"numeric column {column!r} holds non-numeric values (dtype {series.dtype}); "
            "list it in categoricalCols or hashedCols instead") from None


def _check_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing} in the data the preprocessing reads "
            f"({expected_names(list(columns))}; it has {len(frame.columns)}: "
            f"{name_list(list(frame.columns))})")


def fit_from_pandas(pdf: pd.DataFrame, spec: PreprocessSpec) -> "FittedPreprocessor":
    """Fit on a pandas DataFrame with numpy statistics (the single-machine reference)."""
    spec.validate()
    _check_columns(pdf, spec.input_columns)
    numeric = {}
    for column in spec.numeric_cols:
        need = stats_needed(spec, column)
        x = _numeric_array(pdf, column)
        x = x[~np.isnan(x)]
        raw = numeric_stats_from_values(x, need["raw"])
        if column in spec.clip_bounds:
            x = np.clip(x, *spec.clip_bounds[column])
        clipped = numeric_stats_from_values(x, need["clipped"])
        if column in spec.log_cols:
            if x.size and x.min() < 0:
                fit_log_from_stats(column, clipped)  # raises with the message
            x = np.log1p(x)
        numeric[column] = ColumnStats(raw, clipped, numeric_stats_from_values(x, need["final"]))
    counts = {}
    for column in spec.categorical_cols:
        keys = pd.Series(category_keys(pdf[column]), dtype=object)
        counts[column] = keys.value_counts(dropna=False).to_dict()
        # value_counts reports a null key as NaN; fold it back to None.
        counts[column] = {(None if k is None or (isinstance(k, float) and k != k) else k): v
                          for k, v in counts[column].items()}
    return fit_from_stats(spec, len(pdf), numeric, counts)


# --------------------------------------------------------------------------------------------
# The fitted preprocessor
# --------------------------------------------------------------------------------------------
_NUMERIC_KINDS = {"impute": ImputeStep, "clip": ClipStep, "log1p": LogStep, "scale": ScaleStep}

#: The JSON value each annotation of a step field allows (a saved preprocessor may have
#: been edited: a wrong type must fail at load, not as a TypeError in the first batch).
_FIELD_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "float": lambda v: _is_number(v),
    "Optional[float]": lambda v: v is None or _is_number(v),
    # The only int field is a hash block's width: positive (a modulus), and bounded so that
    # an edited one cannot ask the first batch for terabytes.
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 2 ** 24,
    "List[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "List[Optional[str]]": lambda v: isinstance(v, list) and all(
        x is None or isinstance(x, str) for x in v),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(step) -> None:
    """Refuse a step whose fields do not have the JSON types its annotations say."""
    for item in dataclasses.fields(step):
        check = _FIELD_CHECKS.get(str(item.type))
        value = getattr(step, item.name)
        if check is not None and not check(value):
            raise ModelFormatError(f"saved preprocessing step {step.kind!r} has field "
                                   f"{item.name}={value!r:.80}, not a {item.type}")


@dataclass
class FittedPreprocessor:
    """An ordered list of fitted steps that turns a pandas DataFrame into a feature matrix.

    Attributes
    ----------
    steps : list
        :class:`ImputeStep`, :class:`ClipStep`, :class:`LogStep`,
        :class:`ScaleStep` (per numeric column, in that order), then one
        :class:`OneHotStep` per categorical column, then one :class:`HashStep`.
    numeric_cols, categorical_cols, hashed_cols : list of str
    """

    steps: List[Any]
    numeric_cols: List[str]
    categorical_cols: List[str]
    hashed_cols: List[str]

    @property
    def input_columns(self) -> List[str]:
        return self.numeric_cols + self.categorical_cols + self.hashed_cols

    @property
    def feature_names(self) -> List[str]:
        names = list(self.numeric_cols)
        for step in self.steps:
            if isinstance(step, (OneHotStep, HashStep)):
                names.extend(step.feature_names)
        return names

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def transform_frame(self, pdf: pd.DataFrame) -> np.ndarray:
        """The float64 feature matrix ``(len(pdf), num_features)`` of ``pdf``'s rows.

        Raises
        ------
        DataValidationError
            A column is missing, a numeric column is not numeric, a missing
            value meets ``imputeStrategy='none'``, a log column is negative, or
            an unseen category meets ``handleUnseen='error'``.
        """
        _check_columns(pdf, self.input_columns)
        numeric = {c: _numeric_array(pdf, c) for c in self.numeric_cols}
        return self._assemble(numeric, pdf, len(pdf))

    def transform_numeric_columns(self, columns: Mapping[str, Any]) -> Optional[np.ndarray]:
        """:meth:`transform_frame` of numpy columns, without pandas, when it can be done so.

        Only numeric columns given as 1-D bool/int/float numpy arrays of one length: their
        float64 values are what :meth:`transform_frame` converts them to, and the same steps
        follow.  None otherwise (a categorical or hashed column, an object array, a missing
        column): the caller goes through :meth:`transform_frame`.
        """
        if self.categorical_cols or self.hashed_cols or not self.numeric_cols:
            return None
        numeric, lengths = {}, set()
        for column in self.numeric_cols:
            values = columns.get(column)
            if not isinstance(values, np.ndarray) or values.ndim != 1 \
                    or values.dtype.kind not in "biuf":
                return None
            numeric[column] = values.astype(np.float64)
            lengths.add(values.shape[0])
        if len(lengths) != 1:
            return None
        return self._assemble(numeric, None, lengths.pop())

    def _assemble(self, numeric: Dict[str, np.ndarray], pdf: Optional[pd.DataFrame],
                  n: int) -> np.ndarray:
        """The steps on the numeric columns' float64 values (and on ``pdf``'s categorical
        and hashed columns), assembled into the feature matrix."""
        blocks = []
        for step in self.steps:
            if isinstance(step, OneHotStep):
                blocks.append(step.block(pdf[step.column]))
            elif isinstance(step, HashStep):
                blocks.append(step.block(pdf))
            else:
                numeric[step.column] = step.apply(numeric[step.column])
        parts = [numeric[c].reshape(n, 1) for c in self.numeric_cols] + blocks
        if not parts:
            return np.zeros((n, 0), dtype=np.float64)
        out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return np.ascontiguousarray(out, dtype=np.float64)

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe description; floats are JSON numbers (``repr`` round-trips exactly)."""
        steps = []
        for step in self.steps:
            if isinstance(step, OneHotStep):
                steps.append(step.to_dict())
            else:
                steps.append(asdict(step))
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "numeric_cols": list(self.numeric_cols),
                "categorical_cols": list(self.categorical_cols),
                "hashed_cols": list(self.hashed_cols), "steps": steps,
                "feature_names": self.feature_names}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FittedPreprocessor":
        """Inverse of :meth:`to_dict`; refuses unknown formats and step kinds."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ModelFormatError("not a saved sparkml_aiaas preprocessor (format field is "
                                   f"{data.get('format') if isinstance(data, Mapping) else data!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelFormatError(f"preprocessor format_version {data.get('format_version')!r} "
                                   f"is not supported (this version reads {FORMAT_VERSION})")
        steps = []
        try:
            for raw in data["steps"]:
                raw = dict(raw)
                kind = raw.get("kind")
                if kind in _NUMERIC_KINDS:
                    steps.append(_NUMERIC_KINDS[kind](**raw))
                elif kind == "onehot":
                    steps.append(OneHotStep(**raw))
                elif kind == "hash":
                    steps.append(HashStep(**raw))
                else:
                    raise ModelFormatError(f"unknown preprocessing step kind {kind!r:.80}")
                _check_fields(steps[-1])
            columns = {key: data[key] for key in ("numeric_cols", "categorical_cols",
                                                   "hashed_cols")}
            for key, value in columns.items():
                if not _FIELD_CHECKS["List[str]"](value):
                    raise ModelFormatError(f"saved preprocessor's {key} is not a list of names")
            fitted = cls(steps=steps, **{key: list(value) for key, value in columns.items()})
            for step in steps:  # every step reads a column its block is fed from
                inputs = (step.columns if isinstance(step, HashStep) else [step.column])
                allowed = (fitted.hashed_cols if isinstance(step, HashStep) else
                           fitted.categorical_cols if isinstance(step, OneHotStep) else
                           fitted.numeric_cols)
                if not set(inputs) <= set(allowed):
                    raise ModelFormatError(f"saved preprocessing step {step.kind!r} reads "
                                           f"{inputs!r:.80}, which its column list lacks")
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"saved preprocessor is malformed: {exc}") from None
        saved_names = data.get("feature_names")
        if saved_names is not None and saved_names != fitted.feature_names:
            raise ModelFormatError("saved preprocessor's feature_names do not match its steps")
        return fitted
