"""Param mixins shared by the models (pyspark.ml conventions: camelCase, typed converters)."""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasMaxIter,
    HasPredictionCol,
    HasProbabilityCol,
    HasRawPredictionCol,
    HasRegParam,
    HasSeed,
    HasStandardization,
    HasStepSize,
    HasThreshold,
    HasTol,
    HasWeightCol,
)

from sparkml_aiaas.core.optimizers import OPTIMIZERS
from sparkml_aiaas.engine.blocks import FeatureSpec
from sparkml_aiaas.errors import ConfigError


class HasFeaturesCols(Params):
    """Numeric feature columns used directly, without assembling a vector."""

    featuresCols: Param = Param(
        Params._dummy(),
        "featuresCols",
        "numeric feature columns; when set (non-empty) it wins over featuresCol",
        typeConverter=TypeConverters.toListString,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(featuresCols=[])

    def getFeaturesCols(self):
        return self.getOrDefault(self.featuresCols)

    def feature_spec(self) -> FeatureSpec:
        columns = self.getFeaturesCols()
        if columns:
            return FeatureSpec(columns=list(columns))
        return FeatureSpec(vector_col=self.getFeaturesCol())


class HasOptimizer(Params):
    optimizer: Param = Param(
        Params._dummy(),
        "optimizer",
        f"optimizer, one of {list(OPTIMIZERS)}",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(optimizer="lbfgs")

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)


class HasNumPartitions(Params):
    numPartitions: Param = Param(
        Params._dummy(),
        "numPartitions",
        "partitions (= tasks per pass) of the resident training blocks; 0 means one per core",
        typeConverter=TypeConverters.toInt,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(numPartitions=0)

    def getNumPartitions(self) -> int:
        return self.getOrDefault(self.numPartitions)


class LinearModelParams(
    HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasPredictionCol, HasWeightCol, HasMaxIter,
    HasTol, HasStepSize, HasRegParam, HasElasticNetParam, HasFitIntercept, HasStandardization,
    HasSeed, HasAggregationDepth, HasOptimizer, HasNumPartitions,
):
    """Params of every linear model, with MLlib's defaults."""

    def __init__(self):
        super().__init__()
        self._setDefault(
            featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
            tol=1e-6, stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
            standardization=True, aggregationDepth=2,
        )

    def validate_params(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range param."""
        checks = [
            (self.getMaxIter() >= 0, "maxIter", "must be >= 0"),
            (self.getTol() >= 0, "tol", "must be >= 0"),
            (self.getStepSize() > 0, "stepSize", "must be > 0"),
            (self.getRegParam() >= 0, "regParam", "must be >= 0"),
            (0.0 <= self.getElasticNetParam() <= 1.0, "elasticNetParam", "must be in [0, 1]"),
            (self.getAggregationDepth() >= 2, "aggregationDepth", "must be >= 2"),
            (self.getOptimizer() in OPTIMIZERS, "optimizer", f"must be one of {list(OPTIMIZERS)}"),
            (self.getNumPartitions() >= 0, "numPartitions", "must be >= 0"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"param {name} {rule}, got {self.getOrDefault(name)!r}")
        if (self.getOptimizer() == "lbfgs" and self.getRegParam() > 0
                and self.getElasticNetParam() > 0):
            # Refuse before any Spark job runs, not after the blocks are built.
            raise ConfigError(
                "optimizer 'lbfgs' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); set optimizer='gd', which applies L1 through a proximal step"
            )


class BinaryClassifierParams(LinearModelParams, HasProbabilityCol, HasRawPredictionCol,
                             HasThreshold):
    def __init__(self):
        super().__init__()
        self._setDefault(probabilityCol="probability", rawPredictionCol="rawPrediction",
                         threshold=0.5)

    def validate_params(self) -> None:
        super().validate_params()
        if not 0.0 <= self.getThreshold() <= 1.0:
            raise ConfigError(f"param threshold must be in [0, 1], got {self.getThreshold()!r}")
