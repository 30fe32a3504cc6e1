"""Gradient-boosted trees and random forests with XGBoost, trained by ``xgboost.spark``.

``XGBoostClassifier`` / ``XGBoostRegressor`` (boosting) and
``RandomForestClassifier`` / ``RandomForestRegressor`` (XGBoost's random forest
mode: ``numTrees`` parallel trees, row and per-node column subsampling, one
boosting round at learning rate 1) are pyspark.ml Estimators with this
package's Params (``featuresCols`` or ``featuresCol``, ``labelCol``,
``weightCol``...).  ``_fit`` validates the data in one Spark job, checks the
barrier-mode preconditions (:mod:`sparkml_aiaas.engine.barrier`) and hands the
distributed training to ``xgboost.spark.SparkXGBClassifier`` /
``SparkXGBRegressor`` (a barrier stage of ``numWorkers`` tasks that build each
tree together through allreduce).  Only the resulting booster is kept: the
fitted models score through :class:`~sparkml_aiaas.models.xgboost_predictor.XGBoostPredictor`
(``transform_like_mllib``), the same code that batch scoring and serving
run, and save it as XGBoost's UBJ format (``model.ubj``), never a pickle.
Trees grow with ``tree_method="hist"``; null cells of ``featuresCols`` and NaN
entries of a ``featuresCol`` vector are XGBoost's missing values.

Already-trained boosters (``xgboost.Booster`` or a scikit-learn ``XGBModel``)
are wrapped with ``XGBoostClassificationModel.from_booster`` /
``XGBoostRegressionModel.from_booster``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasFeaturesCol, HasLabelCol, HasPredictionCol,
                                     HasProbabilityCol, HasRawPredictionCol, HasWeightCol)
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.stats import single_class_message
from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models.param_signature import KeywordParams
from sparkml_aiaas.models.params import HasFeaturesCols
from sparkml_aiaas.models.artifact import as_int, predictor_section
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.xgboost_predictor import (BOOSTER_FILE, XGBoostPredictor,
                                                    check_xgboost_distribution,
                                                    booster_from_bytes, booster_kind)
from sparkml_aiaas.scoring.mllib_output import (omitted_outputs, output_names,
                                                 predictor_outputs, transform_types)
from sparkml_aiaas.scoring.udf import transform_like_mllib

logger = logging.getLogger("sparkml_aiaas.train")

_FEATURES = "__sparkml_xgb_features"
_LABEL = "__sparkml_xgb_label"
_WEIGHT = "__sparkml_xgb_weight"

#: xgboost params the estimators set themselves (from their own Params): refused in xgbParams.
_RESERVED = {"objective", "n_estimators", "num_boost_round", "num_round", "learning_rate", "eta",
             "max_depth", "num_parallel_tree", "num_class", "num_workers", "features_col",
             "label_col", "weight_col", "prediction_col", "probability_col",
             "raw_prediction_col", "validation_indicator_col", "base_margin_col", "device",
             "use_gpu", "nthread", "n_jobs", "missing", "seed", "random_state", "subsample",
             "colsample_bytree", "colsample_bynode", "min_child_weight", "reg_lambda", "lambda",
             "reg_alpha", "alpha", "gamma", "min_split_loss", "max_bin", "tree_method"}

#: xgboost.spark's Python logger (driver and training tasks): INFO unless told otherwise.
_XGBOOST_SPARK_LOGGER = "XGBoost-PySpark"


def _xgboost_verbose(kwargs: Dict[str, Any]) -> bool:
    """Whether a fit reports at INFO: only when xgbParams ask for it, with ``verbosity`` >= 2
    (xgboost's info level) or ``verbose`` (the per-round evaluation lines).  By default a fit
    prints warnings only, like Spark's logging here (session.get_spark)."""
    if "verbose" in kwargs:
        return bool(kwargs["verbose"])
    try:
        return int(kwargs.get("verbosity", 1)) >= 2
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def _xgboost_spark_log_level(verbose: bool):
    """xgboost.spark's logger at WARNING for a quiet fit (it logs its params, "Training on
    CPUs" and "Finished" at INFO, on the driver and, with the level it reads here, in the
    training task), unless the user set its level themselves; restored afterwards."""
    log = logging.getLogger(_XGBOOST_SPARK_LOGGER)
    previous = log.level
    if verbose or previous not in (logging.NOTSET, logging.INFO):
        yield
        return
    # xgboost.spark sets INFO itself on a NOTSET logger, so INFO is not a user's choice.
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(previous)


_CLASSIFIER_OBJECTIVES = ("auto", "binary:logistic", "multi:softprob")
_REGRESSOR_OBJECTIVES = ("reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror",
                         "reg:pseudohubererror", "count:poisson", "reg:gamma", "reg:tweedie")


@dataclass
class XGBoostTrainingSummary:
    """What a fit did.

    ``objectiveHistory`` is the training metric after each boosting round (the
    first metric XGBoost reports for the objective: ``logloss``, ``mlogloss``,
    ``rmse``...; name in ``metricName``), computed by XGBoost over all workers'
    rows.  ``totalIterations`` = ``numPasses`` = boosting rounds (each round
    builds its trees with one pass over the data per tree level, all inside
    the one barrier job).
    """

    objectiveHistory: List[float] = field(default_factory=list)
    metricName: str = ""
    totalIterations: int = 0
    numPasses: int = 0
    numRows: int = 0
    numWorkers: int = 0
    numClasses: int = 0
    wallTimeSeconds: float = 0.0


def _float_param(name: str, doc: str) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=TypeConverters.toFloat)


def _int_param(name: str, doc: str) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=TypeConverters.toInt)


def _to_dict(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"xgbParams must be a dict of xgboost parameters, got {type(value).__name__}")
    return dict(value)


class _TreeParams(HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasWeightCol, HasPredictionCol):
    """Params shared by the boosted and the forest models (defaults = XGBoost's)."""

    maxDepth = _int_param("maxDepth", "maximum depth of a tree (>= 1; xgboost's max_depth)")
    minChildWeight = _float_param("minChildWeight", "minimum sum of hessians in a child (>= 0; "
                                                    "xgboost's min_child_weight)")
    regLambda = _float_param("regLambda", "L2 penalty on leaf values (>= 0; xgboost's "
                                          "reg_lambda)")
    regAlpha = _float_param("regAlpha", "L1 penalty on leaf values (>= 0; xgboost's reg_alpha)")
    gamma = _float_param("gamma", "minimum loss reduction to make a split (>= 0; xgboost's "
                                  "gamma)")
    maxBin = _int_param("maxBin", "histogram bins per feature (>= 2; xgboost's max_bin)")
    subsample = _float_param("subsample", "fraction of rows sampled per tree, in (0, 1]")
    colsampleBytree = _float_param("colsampleBytree", "fraction of columns sampled per tree, in (0, 1]")
    colsampleBynode = _float_param("colsampleBynode", "fraction of columns sampled per split, in (0, 1]")
    seed = _int_param("seed", "random seed of XGBoost's sampling")
    numWorkers = _int_param(
        "numWorkers", "Spark tasks that train together in the barrier stage; 0 = every free "
        "task slot, capped by the input's partitions; checked before the job starts (enough "
        "free slots, no dynamic allocation)")
    xgbParams = Param(Params._dummy(), "xgbParams",
                      "other xgboost parameters by their xgboost name (e.g. "
                      "{'max_delta_step': 1}); the ones the Params above set are refused",
                      typeConverter=_to_dict)

    def __init__(self):
        super().__init__()
        self._setDefault(maxDepth=6, minChildWeight=1.0, regLambda=1.0, regAlpha=0.0, gamma=0.0,
                         maxBin=256, subsample=1.0, colsampleBytree=1.0, colsampleBynode=1.0,
                         seed=0, numWorkers=0, xgbParams={})

    def _weight_col(self) -> Optional[str]:
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() \
            else None

    def _check_common(self) -> None:
        checks = [("maxDepth", self.getOrDefault(self.maxDepth) >= 1, ">= 1"),
                  ("minChildWeight", self.getOrDefault(self.minChildWeight) >= 0, ">= 0"),
                  ("regLambda", self.getOrDefault(self.regLambda) >= 0, ">= 0"),
                  ("regAlpha", self.getOrDefault(self.regAlpha) >= 0, ">= 0"),
                  ("gamma", self.getOrDefault(self.gamma) >= 0, ">= 0"),
                  ("maxBin", self.getOrDefault(self.maxBin) >= 2, ">= 2"),
                  ("numWorkers", self.getOrDefault(self.numWorkers) >= 0, ">= 0 (0 = auto)")]
        for name in ("subsample", "colsampleBytree", "colsampleBynode"):
            value = self.getOrDefault(getattr(self, name))
            checks.append((name, 0.0 < value <= 1.0, "in (0, 1]"))
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got "
                                  f"{self.getOrDefault(getattr(self, name))!r}")
        reserved = sorted(set(self.getOrDefault(self.xgbParams)) & _RESERVED)
        if reserved:
            raise ConfigError(
                f"xgbParams must not set {reserved}: use the estimator's own Params for them "
                "(maxDepth, eta, numRound, numTrees, subsample, seed...)")

    def _xgb_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of SparkXGB* (scikit-learn names) for the shared Params."""
        kwargs = dict(self.getOrDefault(self.xgbParams))
        kwargs.update(
            max_depth=self.getOrDefault(self.maxDepth),
            min_child_weight=self.getOrDefault(self.minChildWeight),
            reg_lambda=self.getOrDefault(self.regLambda),
            reg_alpha=self.getOrDefault(self.regAlpha),
            gamma=self.getOrDefault(self.gamma), max_bin=self.getOrDefault(self.maxBin),
            subsample=self.getOrDefault(self.subsample),
            colsample_bytree=self.getOrDefault(self.colsampleBytree),
            colsample_bynode=self.getOrDefault(self.colsampleBynode),
            random_state=self.getOrDefault(self.seed), tree_method="hist")
        return kwargs


class _BoostingParams(Params):
    numRound = _int_param("numRound", "boosting rounds (>= 1)")
    eta = _float_param("eta", "learning rate (shrinkage of each round's trees), in (0, 1]")

    def __init__(self):
        super().__init__()
        self._setDefault(numRound=100, eta=0.3)

    def _rounds_and_rate(self):
        rounds, eta = self.getOrDefault(self.numRound), self.getOrDefault(self.eta)
        if rounds < 1:
            raise ConfigError(f"numRound must be >= 1, got {rounds}")
        if not 0.0 < eta <= 1.0:
            raise ConfigError(f"eta must be in (0, 1], got {eta}")
        return {"n_estimators": rounds, "learning_rate": eta}


class _ForestParams(Params):
    # Listed before _TreeParams in the classes' bases: its defaults (set after
    # _TreeParams' in __init__) must win.
    numTrees = _int_param("numTrees", "trees of the forest (>= 1)")

    def __init__(self):
        super().__init__()
        # Random forest's usual sampling: 80 % of the rows per tree, 80 % of the columns
        # per split (XGBoost's RF recipe); no shrinkage, one round.
        self._setDefault(numTrees=100, subsample=0.8, colsampleBynode=0.8)

    def _rounds_and_rate(self):
        trees = self.getOrDefault(self.numTrees)
        if trees < 1:
            raise ConfigError(f"numTrees must be >= 1, got {trees}")
        return {"n_estimators": 1, "learning_rate": 1.0, "num_parallel_tree": trees}


class _ClassifierParams(HasProbabilityCol, HasRawPredictionCol):
    objective = Param(Params._dummy(), "objective",
                      f"one of {list(_CLASSIFIER_OBJECTIVES)}; 'auto': binary:logistic for "
                      "labels 0/1, multi:softprob for 0 … k-1", typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(objective="auto")


class _RegressorParams(Params):
    objective = Param(Params._dummy(), "objective", f"one of {list(_REGRESSOR_OBJECTIVES)}",
                      typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(objective="reg:squarederror")


# ------------------------------------------------------------------------------- fitting
def _feature_column(dataset, spec):
    """``array<double>`` column of the features (null cells → NaN: XGBoost's missing)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType

    from sparkml_aiaas.columns import named_column

    nan = F.lit(float("nan"))
    if spec.columns:
        missing = [c for c in spec.columns if c not in dataset.columns]
        if missing:
            raise DataValidationError(
                f"feature column(s) {missing} are not in the data; available columns: "
                f"{dataset.columns}")
        wrong = [f"{c} ({dataset.schema[c].dataType.simpleString()})" for c in spec.columns
                 if not isinstance(dataset.schema[c].dataType, NumericType)]
        if wrong:
            raise DataValidationError(f"feature columns must be numeric: {wrong}")
        return F.array(*[F.coalesce(named_column(c).cast("double"), nan) for c in spec.columns])
    name = spec.vector_col
    if name not in dataset.columns:
        raise DataValidationError(
            f"featuresCol {name!r} is not in the data; available columns: {dataset.columns}")
    data_type = dataset.schema[name].dataType
    if type(data_type).__name__ == "VectorUDT":
        return vector_to_array(named_column(name))
    if isinstance(data_type, ArrayType) and isinstance(data_type.elementType, NumericType):
        return F.transform(named_column(name), lambda x: F.coalesce(x.cast("double"), nan))
    raise DataValidationError(
        f"featuresCol {name!r} must be a vector or an array of numbers, not "
        f"{data_type.simpleString()}")


def _check_training_data(frame, label_col: str, weight_col: Optional[str], classifier: bool,
                         objective: str):
    """One Spark job over the prepared rows; returns ``(rows, num_classes)``."""
    from pyspark.sql import functions as F

    label, weight = F.col(_LABEL), F.col(_WEIGHT) if weight_col else None
    bad_label = label.isNull() | F.isnan(label)
    aggs = [F.count(F.lit(1)).alias("rows"),
            F.sum(bad_label.cast("long")).alias("bad_labels"),
            F.min(F.when(~bad_label, label)).alias("label_min"),
            F.max(F.when(~bad_label, label)).alias("label_max"),
            F.sum(F.col(_FEATURES).isNull().cast("long")).alias("null_vectors"),
            F.min(F.size(F.col(_FEATURES))).alias("min_size"),
            F.max(F.size(F.col(_FEATURES))).alias("max_size"),
            F.sum(F.exists(F.col(_FEATURES), lambda x: (x == float("inf")) |
                           (x == float("-inf"))).cast("long")).alias("infinite_rows")]
    if classifier:
        aggs.append(F.sum((~bad_label & (label != F.floor(label))).cast("long"))
                    .alias("fractional"))
        aggs.append(F.countDistinct(F.when(~bad_label, label)).alias("distinct"))
    if weight is not None:
        aggs.append(F.sum((weight.isNull() | F.isnan(weight) | (weight < 0)).cast("long"))
                    .alias("bad_weights"))
    stats = frame.agg(*aggs).first().asDict()
    rows = int(stats["rows"])
    if rows == 0:
        raise DataValidationError("the training data has no rows")
    if stats["bad_labels"]:
        raise DataValidationError(
            f"label column {label_col!r} has {stats['bad_labels']} null or NaN value(s) of "
            f"{rows}; drop or impute them before training")
    if stats["null_vectors"] or stats["min_size"] != stats["max_size"]:
        raise DataValidationError(
            f"the feature vectors must all have one size and not be null; found "
            f"{stats['null_vectors']} null(s), sizes {stats['min_size']}..{stats['max_size']}")
    if stats["infinite_rows"]:
        raise DataValidationError(
            f"{stats['infinite_rows']} row(s) have infinite feature values, which XGBoost "
            "refuses (NaN or null means missing; infinity is not allowed)")
    if weight is not None and stats["bad_weights"]:
        raise DataValidationError(
            f"weight column {weight_col!r} has {stats['bad_weights']} null, NaN or negative "
            "value(s); weights must be >= 0")
    if not classifier:
        return rows, 0
    low, high = stats["label_min"], stats["label_max"]
    if stats["distinct"] < 2:
        raise DataValidationError(single_class_message(label_col, low, rows))
    if stats["fractional"] or low < 0:
        raise DataValidationError(
            f"label column {label_col!r} must hold class indices 0, 1, …, k-1 (integers >= 0); "
            f"found values from {low} to {high}"
            + (f", {stats['fractional']} not integral" if stats["fractional"] else ""))
    if objective == "binary:logistic" and high > 1:
        raise DataValidationError(
            f"objective 'binary:logistic' needs labels in {{0, 1}}, but label column "
            f"{label_col!r} has values up to {high}; use objective 'multi:softprob' (or 'auto') "
            "for more classes")
    num_classes = int(high) + 1
    if stats["distinct"] != num_classes:
        # xgboost.spark counts the distinct labels to choose num_class.
        raise DataValidationError(
            f"label column {label_col!r} has labels up to {int(high)} but only "
            f"{stats['distinct']} distinct classes: every class 0 … {int(high)} must occur")
    if objective == "multi:softprob" and num_classes == 2:
        raise DataValidationError(
            f"objective 'multi:softprob' was requested but label column {label_col!r} has only "
            "the classes 0 and 1; use 'binary:logistic' (or 'auto')")
    return rows, num_classes


class _XGBoostEstimator(KeywordParams, Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Shared ``_fit``: validate → barrier check → xgboost.spark → our Model."""

    _model_class: type = None
    _classifier: bool = False

    def validate_params(self) -> None:
        """Check the Params (no Spark job); raises :class:`ConfigError`."""
        self._check_common()
        self._rounds_and_rate()
        objective = self.getOrDefault(self.objective)
        allowed = _CLASSIFIER_OBJECTIVES if self._classifier else _REGRESSOR_OBJECTIVES
        if objective not in allowed:
            raise ConfigError(f"objective {objective!r} is not supported by "
                              f"{type(self).__name__}; use one of {list(allowed)}")

    def _require_classic(self, spark) -> None:
        """Refuse Spark Connect before any job: xgboost.spark 3.x trains in an RDD barrier
        stage (``.rdd.barrier()``, ``sparkContext``), which a Connect client cannot start
        (its Connect support, dmlc/xgboost#11970, is not in a 3.x release).  Scoring needs
        no barrier: the fitted models transform on Connect."""
        from sparkml_aiaas.spark_env import require_classic

        model = self._model_class.__name__
        require_classic(
            spark, f"{type(self).__name__}.fit (distributed XGBoost: xgboost.spark trains in "
            "a barrier-mode stage)",
            f"fit on a classic cluster (Databricks: a dedicated or no-isolation cluster, not "
            f"serverless or standard access mode), or train xgboost's scikit-learn estimator "
            f"on one machine and wrap it with {model}.from_booster; either model's transform "
            "runs on Spark Connect")

    def _num_workers(self, spark, frame) -> int:
        from sparkml_aiaas.engine.barrier import check_barrier_preconditions, free_task_slots
        from sparkml_aiaas.spark_env import num_partitions

        requested = self.getOrDefault(self.numWorkers)
        if requested == 0:
            # All free slots, but no more workers than partitions (more would only
            # shuffle tiny partitions around).
            requested = max(min(free_task_slots(spark), num_partitions(frame)), 1)
        check_barrier_preconditions(spark, requested)
        return requested

    def _fit(self, dataset):
        from sparkml_aiaas.columns import named_column

        self.validate_params()
        self._require_classic(dataset.sparkSession)
        started = time.perf_counter()
        spec = self.feature_spec()
        label_col, weight_col = self.getLabelCol(), self._weight_col()
        for role, name in (("labelCol", label_col), ("weightCol", weight_col)):
            if name is not None and name not in dataset.columns:
                raise DataValidationError(f"{role} {name!r} is not in the data; available "
                                          f"columns: {dataset.columns}")
        signature = input_signature(dataset, spec)
        columns = [_feature_column(dataset, spec).alias(_FEATURES),
                   named_column(label_col).cast("double").alias(_LABEL)]
        if weight_col:
            columns.append(named_column(weight_col).cast("double").alias(_WEIGHT))
        frame = dataset.select(*columns)
        objective = self.getOrDefault(self.objective)
        rows, num_classes = _check_training_data(frame, label_col, weight_col, self._classifier,
                                                 objective)
        spark = dataset.sparkSession
        num_workers = self._num_workers(spark, frame)
        kwargs = self._xgb_kwargs()
        kwargs.update(self._rounds_and_rate())
        if not self._classifier:
            kwargs["objective"] = objective
        check_xgboost_distribution()
        from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

        trainer_class = SparkXGBClassifier if self._classifier else SparkXGBRegressor
        verbose = _xgboost_verbose(kwargs)
        kwargs.setdefault("verbose", verbose)
        trainer = trainer_class(features_col=_FEATURES, label_col=_LABEL,
                                weight_col=_WEIGHT if weight_col else None,
                                num_workers=num_workers, **kwargs)
        logger.info("%s: xgboost.spark on %d worker(s), %d rows, %s", type(self).__name__,
                    num_workers, rows, {k: v for k, v in sorted(kwargs.items())})
        try:
            with _xgboost_spark_log_level(verbose):
                fitted = trainer.fit(frame)
        except Exception as exc:
            # xgboost.spark reports bad params as ValueError; anything else is not ours to wrap.
            if isinstance(exc, ValueError) and not isinstance(exc, DataValidationError):
                raise ConfigError(f"xgboost.spark refused the training: {exc}") from None
            raise
        booster = fitted.get_booster()
        history = getattr(getattr(fitted, "training_summary", None),
                          "train_objective_history", None) or {}
        metric, values = next(iter(history.items()), ("", []))
        rounds = int(booster.num_boosted_rounds())
        summary = XGBoostTrainingSummary(
            objectiveHistory=[float(v) for v in values], metricName=metric,
            totalIterations=rounds, numPasses=rounds, numRows=rows, numWorkers=num_workers,
            numClasses=num_classes, wallTimeSeconds=time.perf_counter() - started)
        model = self._model_class(booster=booster, signature=signature, summary=summary,
                                  numClasses=num_classes)
        self._copyValues(model)
        model._check_booster()
        return model


# ------------------------------------------------------------------------------- models
class _XGBoostModel(Model, MLWritable, MLReadable):
    """A fitted booster, scored through :class:`XGBoostPredictor`."""

    _classifier: bool = False

    def __init__(self, booster=None, signature: Optional[Dict[str, Any]] = None,
                 summary: Optional[XGBoostTrainingSummary] = None, numClasses: int = 0):
        super().__init__()
        self._booster = booster
        self._signature = signature or {}
        self._summary = summary
        self._num_classes = int(numClasses or 0)

    # -- state -----------------------------------------------------------------
    def get_booster(self):
        """The ``xgboost.Booster`` (shared, not copied: do not train it further)."""
        return self._booster

    @property
    def booster(self):
        return self._booster

    @property
    def numFeatures(self) -> int:
        return int(self._booster.num_features())

    @property
    def signature(self) -> Dict[str, Any]:
        """Input columns and their Spark types, and the columns ``transform`` appends with
        their types there (MLlib's ``vector``/``double``; the predictor's ``output_columns``
        are the wire types score() and serving give)."""
        return {**self._signature, "outputs": transform_types(
            predictor_outputs(self.predictor()), omitted_outputs(self))}

    @property
    def summary(self) -> Optional[XGBoostTrainingSummary]:
        return self._summary

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    def _kind(self) -> str:
        if not self._classifier:
            return "regression"
        return "binary" if self._num_classes <= 2 else "multiclass"

    def _check_booster(self) -> None:
        kind = booster_kind(self._booster, self._num_classes if self._classifier else None)
        if kind != self._kind():
            raise ModelFormatError(
                f"{type(self).__name__} holds a {kind} booster, not a {self._kind()} one")

    def _output_names(self) -> Dict[str, str]:
        roles = ["prediction", "probability", "rawPrediction"] if self._classifier \
            else ["prediction"]
        return output_names(self, roles)

    def predictor(self) -> XGBoostPredictor:
        """The Spark-free predictor: what transform, batch scoring and serving run."""
        if self._booster is None:
            raise ModelFormatError(f"{type(self).__name__} has no booster (not fitted or loaded)")
        spec = self.feature_spec()
        return XGBoostPredictor(self._booster, kind=self._kind(), feature_cols=spec.columns,
                                vector_col=spec.vector_col,
                                num_classes=self._num_classes if self._classifier else 0,
                                output_names=self._output_names())

    def _transform(self, dataset):
        # pyspark.ml's output schema (vectors); score() keeps the predictor's wire types.
        return transform_like_mllib(dataset, self.predictor(), omitted_outputs(self))

    # -- persistence -------------------------------------------------------------
    def _artifact(self):
        """``(metadata, arrays, files)``: the booster as UBJ in ``model.ubj``."""
        predictor = self.predictor()
        metadata = {
            "predictor": predictor.spec(),
            "signature": self.signature,
            "training": asdict(self._summary) if self._summary is not None else None,
        }
        return metadata, {}, {BOOSTER_FILE: bytes(self._booster.save_raw("ubj"))}

    def _restore(self, metadata: Dict[str, Any], arrays) -> None:
        self._signature = restored_signature(metadata)
        self._summary = restored_summary(XGBoostTrainingSummary, metadata)
        self._num_classes = as_int(predictor_section(metadata).get("num_classes") or 0,
                                   "num_classes", minimum=0)

    def _restore_files(self, path: str, metadata: Dict[str, Any]) -> None:
        from sparkml_aiaas.models.artifact import read_artifact_file

        name = predictor_section(metadata).get("booster_file", BOOSTER_FILE)
        self._booster = booster_from_bytes(read_artifact_file(path, name, metadata),
                                           where=f"{name} of the model at {path!r}")
        self._check_booster()

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)

    # -- wrapping ------------------------------------------------------------------
    @classmethod
    def from_booster(cls, booster, featuresCols: Optional[List[str]] = None,
                     featuresCol: Optional[str] = None, numClasses: Optional[int] = None,
                     featuresColType: str = "array<double>", **params):
        """Wrap an already-trained ``xgboost.Booster`` or scikit-learn ``XGBModel``.

        Parameters
        ----------
        booster : xgboost.Booster or xgboost.XGBModel
            Copied (through its UBJ bytes), so later changes to it do not leak in.
        featuresCols : list of str, optional
            The columns feeding the booster's features, in its feature order.
        featuresCol : str, optional
            Alternatively one vector / array column (its Spark type recorded as
            ``featuresColType`` in the signature).
        numClasses : int, optional
            Classifiers: 2 for ``binary:logistic``; read from the booster for
            ``multi:softprob`` when omitted.
        params
            Other Params of the model (``predictionCol``...).
        """
        import json

        if hasattr(booster, "get_booster"):  # scikit-learn wrapper
            booster = booster.get_booster()
        if not hasattr(booster, "save_raw"):
            raise ConfigError(f"from_booster needs an xgboost.Booster or XGBModel, got "
                              f"{type(booster).__name__}")
        if bool(featuresCols) == bool(featuresCol):
            raise ConfigError("give exactly one of featuresCols (numeric columns) or "
                              "featuresCol (a vector column)")
        copy = booster_from_bytes(bytes(booster.save_raw("ubj")))
        kind = booster_kind(copy, None if cls._classifier else numClasses)
        if cls._classifier:
            if kind == "regression":
                raise ConfigError("the booster's objective is a regression objective: wrap it "
                                  "with XGBoostRegressionModel.from_booster")
            booster_classes = int(json.loads(copy.save_config())["learner"]
                                  ["learner_model_param"]["num_class"])
            inferred = 2 if kind == "binary" else booster_classes
            if numClasses is not None and int(numClasses) != inferred:
                raise ConfigError(f"numClasses={numClasses} does not match the booster "
                                  f"({kind}, {inferred} classes)")
            num_classes = inferred
        else:
            if kind != "regression":
                raise ConfigError(f"the booster is a {kind} classifier: wrap it with "
                                  "XGBoostClassificationModel.from_booster")
            num_classes = 0
        n = int(copy.num_features())
        if featuresCols and len(featuresCols) != n:
            raise ConfigError(f"the booster has {n} features but {len(featuresCols)} "
                              f"featuresCols were given")
        if featuresCols:
            inputs = [{"name": c, "type": "double"} for c in featuresCols]
        else:
            inputs = [{"name": featuresCol, "type": featuresColType}]
        model = cls(booster=copy, signature={"inputs": inputs}, numClasses=num_classes)
        if featuresCols:
            model._set(featuresCols=list(featuresCols))
        else:
            model._set(featuresCol=featuresCol)
        if params:
            model._set(**params)
        model.predictor()  # fail now, not at scoring time, on an inconsistent wrap
        return model


class _ClassificationModelMixin:
    @property
    def numClasses(self) -> int:
        return self._num_classes


class XGBoostClassificationModel(_ClassificationModelMixin, _XGBoostModel, _TreeParams,
                                 _BoostingParams, _ClassifierParams):
    """A fitted boosted-trees classifier.  Outputs: ``rawPrediction`` (binary: ``[-m, m]``
    with ``m`` the margin; multiclass: the margins), ``probability``, ``prediction``."""

    _classifier = True


class XGBoostRegressionModel(_XGBoostModel, _TreeParams, _BoostingParams, _RegressorParams):
    """A fitted boosted-trees regressor; output column ``prediction``."""


class RandomForestClassificationModel(_ClassificationModelMixin, _XGBoostModel, _ForestParams,
                                      _TreeParams, _ClassifierParams):
    """A fitted XGBoost random forest classifier (outputs as :class:`XGBoostClassificationModel`)."""

    _classifier = True


class RandomForestRegressionModel(_XGBoostModel, _ForestParams, _TreeParams, _RegressorParams):
    """A fitted XGBoost random forest regressor; output column ``prediction``."""


# ------------------------------------------------------------------------------- estimators
class XGBoostClassifier(_XGBoostEstimator, _TreeParams, _BoostingParams, _ClassifierParams):
    """Gradient-boosted trees classifier, trained distributed by ``xgboost.spark``.

    Labels are class indices 0 … k-1, at least two classes; ``objective``
    ``auto`` picks ``binary:logistic`` for two classes and ``multi:softprob``
    for more.  ``numRound`` rounds at learning rate ``eta``.
    """

    _model_class = XGBoostClassificationModel
    _classifier = True


class XGBoostRegressor(_XGBoostEstimator, _TreeParams, _BoostingParams, _RegressorParams):
    """Gradient-boosted trees regressor, trained distributed by ``xgboost.spark``.

    ``numRound`` rounds at learning rate ``eta``.
    """

    _model_class = XGBoostRegressionModel


class RandomForestClassifier(_XGBoostEstimator, _ForestParams, _TreeParams, _ClassifierParams):
    """Random forest classifier built with XGBoost: ``numTrees`` trees grown in one
    boosting round at learning rate 1 (``num_parallel_tree``), each on a ``subsample``
    of the rows, choosing each split among a ``colsampleBynode`` fraction of the
    columns (XGBoost's random forest recipe).

    Unlike Breiman's forest the trees' leaf values are XGBoost's regularized
    Newton steps on the logistic loss (summed margins, not averaged votes), and
    sampling is without replacement.
    """

    _model_class = RandomForestClassificationModel
    _classifier = True


class RandomForestRegressor(_XGBoostEstimator, _ForestParams, _TreeParams, _RegressorParams):
    """Random forest regressor built with XGBoost (see :class:`RandomForestClassifier`)."""

    _model_class = RandomForestRegressionModel
