"""Fitted preprocessing as pyspark.ml stages: :class:`Preprocessor` -> :class:`PreprocessorModel`.

Spark only computes statistics (one aggregation over the numeric columns plus
one ``groupBy`` per categorical column) and moves rows through Arrow; the
math lives in :mod:`sparkml_aiaas.core.preprocessing`, which the model's
pandas UDF, batch scoring and the REST server all call.  No MLlib JVM stage
is involved, so a row gives the same vector in every one of them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.columns import named_column
from sparkml_aiaas.core.preprocessing import (ColumnStats, FittedPreprocessor, NumericStats,
                                              PreprocessSpec, fit_from_stats, stats_needed)
from sparkml_aiaas.errors import (ConfigError, DataValidationError, ModelFormatError,
                                  expected_names, name_list)
from sparkml_aiaas.models.persistence import ArtifactReader, ArtifactWriter, restored_signature

__all__ = ["Preprocessor", "PreprocessorModel"]


def _to_clip_bounds(value) -> str:
    """TypeConverter: a dict ``{col: [lo, hi]}`` (or its JSON) to canonical JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise TypeError(f"clipBounds is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise TypeError(f"clipBounds must be a dict of column -> [lower, upper], not {value!r}")
    out = {}
    for name, pair in value.items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"clipBounds for column {name!r} must be [lower, upper], not {pair!r}")
        bounds = []
        for bound in pair:
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or not math.isfinite(bound)):
                raise TypeError(f"clipBounds for column {name!r}: bounds must be finite numbers "
                                f"or None, not {bound!r}")
            bounds.append(None if bound is None else float(bound))
        out[str(name)] = bounds
    return json.dumps(out, sort_keys=True)


class _PreprocessorParams(HasOutputCol):
    """Params shared by :class:`Preprocessor` and :class:`PreprocessorModel`."""

    numericCols: Param = Param(Params._dummy(), "numericCols",
                               "numeric columns: impute -> clip -> log1p -> scale",
                               typeConverter=TypeConverters.toListString)
    categoricalCols: Param = Param(Params._dummy(), "categoricalCols",
                                   "columns to one-hot encode (categories by frequency)",
                                   typeConverter=TypeConverters.toListString)
    hashedCols: Param = Param(Params._dummy(), "hashedCols",
                              "columns hashed (murmur3, seed 42) into one shared block",
                              typeConverter=TypeConverters.toListString)
    numHashFeatures: Param = Param(Params._dummy(), "numHashFeatures",
                                   "size of the hash block", typeConverter=TypeConverters.toInt)
    imputeStrategy: Param = Param(Params._dummy(), "imputeStrategy",
                                  "none | mean | median | most_frequent | constant",
                                  typeConverter=TypeConverters.toString)
    imputeFillValue: Param = Param(Params._dummy(), "imputeFillValue",
                                   "fill value for imputeStrategy='constant' (raw units)",
                                   typeConverter=TypeConverters.toFloat)
    scaling: Param = Param(Params._dummy(), "scaling", "none | standard | minmax | robust",
                           typeConverter=TypeConverters.toString)
    withMean: Param = Param(Params._dummy(), "withMean", "standard scaling: centre",
                            typeConverter=TypeConverters.toBoolean)
    withStd: Param = Param(Params._dummy(), "withStd", "standard scaling: divide by the std",
                           typeConverter=TypeConverters.toBoolean)
    logCols: Param = Param(Params._dummy(), "logCols", "numeric columns to log1p (>= 0)",
                           typeConverter=TypeConverters.toListString)
    clipBounds: Param = Param(Params._dummy(), "clipBounds",
                              "JSON object column -> [lower, upper] (null: unbounded); "
                              "a dict is accepted and stored as JSON",
                              typeConverter=_to_clip_bounds)
    handleUnseen: Param = Param(Params._dummy(), "handleUnseen",
                                "categories not kept at fit: error | keep | zero",
                                typeConverter=TypeConverters.toString)
    maxCategories: Param = Param(Params._dummy(), "maxCategories",
                                 "keep at most this many categories per column (0: all)",
                                 typeConverter=TypeConverters.toInt)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(numericCols=[], categoricalCols=[], hashedCols=[], numHashFeatures=1024,
                         imputeStrategy="mean", imputeFillValue=0.0, scaling="none",
                         withMean=True, withStd=True, logCols=[], clipBounds="{}",
                         handleUnseen="error", maxCategories=0, outputCol="features")

    def getNumericCols(self) -> List[str]:
        return self.getOrDefault(self.numericCols)

    def getCategoricalCols(self) -> List[str]:
        return self.getOrDefault(self.categoricalCols)

    def getHashedCols(self) -> List[str]:
        return self.getOrDefault(self.hashedCols)

    def getNumHashFeatures(self) -> int:
        return self.getOrDefault(self.numHashFeatures)

    def getImputeStrategy(self) -> str:
        return self.getOrDefault(self.imputeStrategy)

    def getImputeFillValue(self) -> float:
        return self.getOrDefault(self.imputeFillValue)

    def getScaling(self) -> str:
        return self.getOrDefault(self.scaling)

    def getWithMean(self) -> bool:
        return self.getOrDefault(self.withMean)

    def getWithStd(self) -> bool:
        return self.getOrDefault(self.withStd)

    def getLogCols(self) -> List[str]:
        return self.getOrDefault(self.logCols)

    def getClipBounds(self) -> Dict[str, List[Optional[float]]]:
        """The clip bounds as a dict (the param itself holds JSON)."""
        return json.loads(self.getOrDefault(self.clipBounds) or "{}")

    def getHandleUnseen(self) -> str:
        return self.getOrDefault(self.handleUnseen)

    def getMaxCategories(self) -> int:
        return self.getOrDefault(self.maxCategories)

    def spec(self) -> PreprocessSpec:
        """The params as a validated core :class:`PreprocessSpec` (ConfigError if invalid)."""
        return PreprocessSpec(
            numeric_cols=self.getNumericCols(), categorical_cols=self.getCategoricalCols(),
            hashed_cols=self.getHashedCols(), num_hash_features=self.getNumHashFeatures(),
            impute_strategy=self.getImputeStrategy(), impute_fill_value=self.getImputeFillValue(),
            scaling=self.getScaling(), with_mean=self.getWithMean(), with_std=self.getWithStd(),
            log_cols=self.getLogCols(),
            clip_bounds={k: tuple(v) for k, v in self.getClipBounds().items()},
            handle_unseen=self.getHandleUnseen(), max_categories=self.getMaxCategories(),
        )


# --------------------------------------------------------------------------------------------
# Spark-side checks and statistics
# --------------------------------------------------------------------------------------------
def _check_input(dataset, numeric: List[str], categorical: List[str]) -> None:
    from pyspark.sql.types import (BooleanType, DecimalType, DoubleType, FloatType,
                                   IntegralType, NumericType, StringType)

    missing = [c for c in numeric + categorical if c not in dataset.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing} in the data the preprocessing reads "
            f"({expected_names(numeric + categorical)}; it has {len(dataset.columns)}: "
            f"{name_list(dataset.columns)})")
    for name in numeric:
        data_type = dataset.schema[name].dataType
        if not isinstance(data_type, NumericType):
            raise DataValidationError(
                f"numeric column {name!r} has type {data_type.simpleString()}; numericCols need "
                "a numeric type (list strings in categoricalCols or hashedCols)")
    # Types whose values turn into the same canonical string on the driver (collect)
    # and in a pandas UDF (Arrow); dates or timestamps would not.
    allowed = (StringType, BooleanType, IntegralType, FloatType, DoubleType, DecimalType)
    for name in categorical:
        data_type = dataset.schema[name].dataType
        if not isinstance(data_type, allowed):
            raise DataValidationError(
                f"categorical/hashed column {name!r} has type {data_type.simpleString()}; "
                "use a string, integer, boolean or floating type (cast it first)")


def _as_double(name: str):
    """The column as double, NaN turned into null: both are missing values."""
    from pyspark.sql import functions as F

    x = named_column(name).cast("double")
    return F.when(~F.isnan(x), x)


def _clip_expr(x, lower, upper):
    from pyspark.sql import functions as F

    clipped = x
    # greatest/least skip nulls (greatest(null, 0) is 0), so guard: missing stays missing.
    if lower is not None:
        clipped = F.greatest(clipped, F.lit(float(lower)))
    if upper is not None:
        clipped = F.least(clipped, F.lit(float(upper)))
    return F.when(x.isNotNull(), clipped)


_QUANTILES = {"q25": 0.25, "median": 0.5, "q75": 0.75}
#: Above this many features the output column's metadata omits the slot names.
_MAX_NAMED_ATTRS = 10_000


def _mode(x):
    """Most frequent value, the smallest on ties (scikit-learn's most_frequent)."""
    from pyspark.sql import functions as F

    try:
        return F.mode(x, True)
    except TypeError:  # Spark 3.5's mode has no deterministic flag: ties would be arbitrary
        raise ConfigError("imputeStrategy='most_frequent' needs Spark >= 4.0 "
                          "(deterministic mode)") from None


def compute_stats(dataset, spec: PreprocessSpec):
    """``(n_rows, numeric_stats, category_counts)`` for :func:`fit_from_stats`, with Spark.

    All numeric statistics come from ONE aggregation: counts, ``mean``,
    ``stddev_pop``, ``min``/``max``, ``mode(deterministic=True)`` (smallest on
    ties) and exact ``percentile`` (Spark's exact percentile with linear
    interpolation, as numpy; it holds each column's distinct values in
    memory per group, fine for a column's worth of doubles).  Categories
    cost one ``groupBy`` per categorical column.  Cache ``dataset`` first if it
    is expensive to recompute.
    """
    from pyspark.sql import functions as F

    exprs = [F.count(F.lit(1)).alias("n")]
    wanted = []  # (column, stage, field, alias, index or None)
    for i, column in enumerate(spec.numeric_cols):
        need = stats_needed(spec, column)
        raw = _as_double(column)
        clipped = _clip_expr(raw, *spec.clip_bounds[column]) if column in spec.clip_bounds else raw
        final = F.log1p(clipped) if column in spec.log_cols else clipped
        for stage, x in (("raw", raw), ("clipped", clipped), ("final", final)):
            fields = need[stage]
            quantiles = [f for f in ("q25", "median", "q75") if f in fields]
            for field in sorted(fields - set(quantiles)):
                alias = f"c{i}_{stage}_{field}"
                agg = {"count": F.count, "mean": F.mean, "std": F.stddev_pop, "min": F.min,
                       "max": F.max, "mode": _mode}[field]
                exprs.append(agg(x).alias(alias))
                wanted.append((column, stage, field, alias, None))
            if quantiles:
                alias = f"c{i}_{stage}_quantiles"
                exprs.append(F.percentile(x, [_QUANTILES[q] for q in quantiles]).alias(alias))
                wanted.extend((column, stage, q, alias, j) for j, q in enumerate(quantiles))
    row = dataset.agg(*exprs).collect()[0]
    n_rows = int(row["n"])
    numeric = {c: ColumnStats(NumericStats(), NumericStats(), NumericStats())
               for c in spec.numeric_cols}
    for column, stage, field, alias, index in wanted:
        value = row[alias]
        if index is not None:
            value = None if value is None else value[index]
        stats = getattr(numeric[column], stage)
        if field == "count":
            stats.count = int(value)
        else:
            setattr(stats, field, None if value is None else float(value))
    # count is only aggregated where a statistic needs it; the others share the raw count.
    for column in spec.numeric_cols:
        cs = numeric[column]
        for stats in (cs.clipped, cs.final):
            if stats.count == 0:
                stats.count = cs.raw.count
    counts: Dict[str, Dict[Any, int]] = {}
    if n_rows:
        for column in spec.categorical_cols:
            grouped = dataset.groupBy(named_column(column).alias("v")).count().collect()
            counts[column] = {}
            for r in grouped:
                # NaN and null are both missing; category_key folds NaN into None later.
                counts[column][r["v"]] = counts[column].get(r["v"], 0) + int(r["count"])
    return n_rows, numeric, counts


# --------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------
class Preprocessor(Estimator, _PreprocessorParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fits imputation, clipping, log, scaling, one-hot and hashing into one vector column.

    The math and its conventions are documented in
    :mod:`sparkml_aiaas.core.preprocessing`; Spark computes the statistics.

    Examples
    --------
    >>> pre = Preprocessor(numericCols=["age", "income"], categoricalCols=["city"],
    ...                    scaling="standard", logCols=["income"], handleUnseen="keep")
    >>> model = pre.fit(df)                     # doctest: +SKIP
    >>> model.transform(df).select("features")  # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, numericCols=None, categoricalCols=None, hashedCols=None,
                 numHashFeatures=1024, imputeStrategy="mean", imputeFillValue=0.0,
                 scaling="none", withMean=True, withStd=True, logCols=None, clipBounds=None,
                 handleUnseen="error", maxCategories=0, outputCol="features"):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, numericCols=None, categoricalCols=None, hashedCols=None,
                  numHashFeatures=1024, imputeStrategy="mean", imputeFillValue=0.0,
                  scaling="none", withMean=True, withStd=True, logCols=None, clipBounds=None,
                  handleUnseen="error", maxCategories=0, outputCol="features"):
        """Set params (keyword arguments only)."""
        return self._set(**self._input_kwargs)

    def setNumericCols(self, value):
        return self._set(numericCols=value)
    def setCategoricalCols(self, value):
        return self._set(categoricalCols=value)
    def setHashedCols(self, value):
        return self._set(hashedCols=value)
    def setNumHashFeatures(self, value):
        return self._set(numHashFeatures=value)
    def setImputeStrategy(self, value):
        return self._set(imputeStrategy=value)
    def setImputeFillValue(self, value):
        return self._set(imputeFillValue=value)
    def setScaling(self, value):
        return self._set(scaling=value)
    def setWithMean(self, value):
        return self._set(withMean=value)
    def setWithStd(self, value):
        return self._set(withStd=value)
    def setLogCols(self, value):
        return self._set(logCols=value)
    def setClipBounds(self, value):
        return self._set(clipBounds=value)
    def setHandleUnseen(self, value):
        return self._set(handleUnseen=value)
    def setMaxCategories(self, value):
        return self._set(maxCategories=value)
    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def _fit(self, dataset) -> "PreprocessorModel":
        spec = self.spec()
        _check_input(dataset, spec.numeric_cols, spec.categorical_cols + spec.hashed_cols)
        n_rows, numeric, counts = compute_stats(dataset, spec)
        if n_rows == 0:
            raise DataValidationError("cannot fit preprocessing on an empty dataset (0 rows)")
        fitted = fit_from_stats(spec, n_rows, numeric, counts)
        signature = {"inputs": [{"name": c, "type": dataset.schema[c].dataType.simpleString()}
                                for c in spec.input_columns]}
        model = PreprocessorModel(fitted=fitted, signature=signature)
        self._copyValues(model)
        return model


class PreprocessorModel(Model, _PreprocessorParams, MLWritable, MLReadable):
    """Applies a :class:`~sparkml_aiaas.core.preprocessing.FittedPreprocessor` to a DataFrame.

    Every input column passes through; ``outputCol`` (a dense ``VectorUDT``,
    with ML attribute metadata naming each slot) is appended.  The model's
    column lists are the fitted ones; changing ``numericCols`` etc. on a
    fitted model has no effect (only ``outputCol`` does).
    """

    def __init__(self, fitted: Optional[FittedPreprocessor] = None,
                 signature: Optional[Dict[str, Any]] = None):
        super().__init__()
        self._fitted = fitted
        self._signature = signature or {}

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    @property
    def fitted(self) -> FittedPreprocessor:
        """The Spark-free fitted preprocessor (the same object batch scoring and serving use)."""
        if self._fitted is None:
            raise RuntimeError("this PreprocessorModel holds no fitted state")
        return self._fitted

    @property
    def featureNames(self) -> List[str]:
        return self.fitted.feature_names

    @property
    def numFeatures(self) -> int:
        return self.fitted.num_features

    @property
    def signature(self) -> Dict[str, Any]:
        return dict(self._signature, outputs=[{"name": self.getOutputCol(), "type": "vector",
                                                "size": self.numFeatures}])

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf

        fitted = self.fitted
        output = self.getOutputCol()
        _check_input(dataset, fitted.numeric_cols, fitted.categorical_cols + fitted.hashed_cols)
        if output in dataset.columns:
            raise DataValidationError(f"output column {output!r} already exists in the data; "
                                      "set outputCol to another name")
        # Numeric inputs arrive as double (an int column with nulls would anyway);
        # categorical ones keep their type so their canonical keys match the fit's.
        fields = [named_column(c).cast("double").alias(c) for c in fitted.numeric_cols]
        fields += [named_column(c).alias(c) for c in fitted.categorical_cols + fitted.hashed_cols]

        @pandas_udf("array<double>")
        def assemble(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
            for batch in batches:
                yield pd.Series(list(fitted.transform_frame(batch)), dtype=object)

        metadata = {"ml_attr": {"num_attrs": fitted.num_features}}
        if fitted.num_features <= _MAX_NAMED_ATTRS:
            # Slot names as VectorAssembler records them; skipped for huge hash blocks,
            # whose names would only bloat every plan and schema that carries them.
            metadata["ml_attr"]["attrs"] = {"numeric": [
                {"idx": i, "name": n} for i, n in enumerate(fitted.feature_names)]}
        vector = array_to_vector(assemble(F.struct(*fields)))
        return dataset.withColumn(output, vector.alias(output, metadata=metadata))

    # -- persistence -------------------------------------------------------
    def _artifact(self):
        """``(metadata, arrays)`` to save: everything is JSON (floats round-trip exactly)."""
        return {"preprocessor": self.fitted.to_dict(), "signature": self.signature}, {}

    def _restore(self, metadata: Dict[str, Any], arrays) -> None:
        if "preprocessor" not in metadata:
            raise ModelFormatError("saved PreprocessorModel has no 'preprocessor' entry")
        self._fitted = FittedPreprocessor.from_dict(metadata["preprocessor"])
        self._signature = restored_signature(metadata)

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)
