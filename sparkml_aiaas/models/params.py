"""Param mixins shared by the models (pyspark.ml conventions: camelCase, typed converters)."""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasCheckpointInterval,
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


class HasCheckpoint(HasCheckpointInterval):
    checkpointDir: Param = Param(
        Params._dummy(), "checkpointDir",
        "directory for optimizer checkpoints; a killed fit re-run with the same arguments "
        "resumes from it ('' disables checkpoints)", typeConverter=TypeConverters.toString,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(checkpointDir="", checkpointInterval=10)

    def getCheckpointDir(self) -> str:
        return self.getOrDefault(self.checkpointDir)


class LinearModelParams(
    HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasPredictionCol, HasWeightCol, HasMaxIter,
    HasTol, HasStepSize, HasRegParam, HasElasticNetParam, HasFitIntercept, HasStandardization,
    HasSeed, HasAggregationDepth, HasOptimizer, HasNumPartitions, HasCheckpoint,
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
            (self.getCheckpointInterval() >= 1, "checkpointInterval", "must be >= 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"param {name} {rule}, got {self.getOrDefault(name)!r}")
        if (self.getOptimizer() == "newton" and self.getRegParam() > 0
                and self.getElasticNetParam() > 0):
            # Refuse before any Spark job runs, not after the blocks are built.
            raise ConfigError(
                "optimizer 'newton' does not support an L1 penalty (elasticNetParam > 0 with "
                "regParam > 0); use optimizer='lbfgs' (OWL-QN) or 'gd' (proximal)"
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


class HasFamily(Params):
    family: Param = Param(
        Params._dummy(), "family",
        "label distribution: 'auto' (binomial for labels 0/1, else multinomial), 'binomial' or "
        "'multinomial'", typeConverter=TypeConverters.toString,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(family="auto")

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)


class LogisticRegressionParams(BinaryClassifierParams, HasFamily):
    def validate_params(self) -> None:
        super().validate_params()
        if self.getFamily() not in ("auto", "binomial", "multinomial"):
            raise ConfigError("param family must be 'auto', 'binomial' or 'multinomial', "
                              f"got {self.getFamily()!r}")


class LinearRegressionParams(LinearModelParams):
    loss: Param = Param(
        Params._dummy(), "loss", "loss to minimize: 'squaredError' or 'huber'",
        typeConverter=TypeConverters.toString,
    )
    epsilon: Param = Param(
        Params._dummy(), "epsilon",
        "huber's robustness: residuals beyond epsilon·scale count linearly; must be > 1",
        typeConverter=TypeConverters.toFloat,
    )

    def __init__(self):
        super().__init__()
        self._setDefault(loss="squaredError", epsilon=1.35)

    def getLoss(self) -> str:
        return self.getOrDefault(self.loss)

    def getEpsilon(self) -> float:
        return self.getOrDefault(self.epsilon)

    def validate_params(self) -> None:
        super().validate_params()
        if self.getLoss() not in ("squaredError", "huber"):
            raise ConfigError(
                f"param loss must be 'squaredError' or 'huber', got {self.getLoss()!r}")
        if not self.getEpsilon() > 1.0:
            raise ConfigError(f"param epsilon must be > 1, got {self.getEpsilon()!r}")


class LinearSVCParams(LinearModelParams, HasRawPredictionCol, HasThreshold):
    """A linear SVM: ``prediction`` is 1 when the margin (``rawPrediction``) > threshold."""

    def __init__(self):
        super().__init__()
        self._setDefault(rawPredictionCol="rawPrediction", threshold=0.0)
