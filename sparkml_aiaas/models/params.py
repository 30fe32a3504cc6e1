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
    HasValidationIndicatorCol,
    HasWeightCol,
)

from sparkml_aiaas.core.first_order import SCHEDULES
from sparkml_aiaas.core.optimizers import OPTIMIZERS as FULL_BATCH_OPTIMIZERS
from sparkml_aiaas.core.optimizers import STEP_RULES
from sparkml_aiaas.core.stochastic import STOCHASTIC_OPTIMIZERS

#: Every optimizer name a model accepts.
OPTIMIZERS = FULL_BATCH_OPTIMIZERS + STOCHASTIC_OPTIMIZERS
from sparkml_aiaas.engine.blocks import BLOCK_DTYPES, BLOCK_FORMATS, FeatureSpec
from sparkml_aiaas.errors import ConfigError


def with_doc(param: Param, doc: str) -> Param:
    """``param`` (a shared pyspark Param) redeclared with the doc of what it means here.

    A class attribute of that name in a subclass wins, as any attribute does; getters,
    persistence and grids go by the name, so nothing else changes.
    """
    return Param(Params._dummy(), param.name, doc, typeConverter=param.typeConverter)


class HasFeaturesCols(Params):
    """Numeric feature columns used directly, without assembling a vector."""

    featuresCols: Param = Param(
        Params._dummy(),
        "featuresCols",
        "numeric feature columns used directly, without assembling a vector; when "
        "non-empty they win over featuresCol (a vector or array-of-numbers column)",
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
        f"optimizer, one of {list(OPTIMIZERS)}: 'lbfgs' (L-BFGS; OWL-QN with an L1 "
        "penalty), 'newton' (the Hessian summed in the same pass: few passes for few "
        "features), 'gd' (proximal gradient descent) or a mini-batch first-order rule",
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


class HasBlockStorage(Params):
    """How the executor-resident training blocks store the features."""

    blockFormat: Param = Param(
        Params._dummy(), "blockFormat",
        f"layout of the training blocks, one of {list(BLOCK_FORMATS)}: 'auto' stores a "
        "partition as compressed sparse rows when the features are a vector column whose "
        "first 256 rows, and the partition's first batch, have under 25 % non-zero entries, "
        "else dense; "
        "'dense'/'sparse' force one layout",
        typeConverter=TypeConverters.toString)
    blockDtype: Param = Param(
        Params._dummy(), "blockDtype",
        f"type the training blocks store feature values in, one of {list(BLOCK_DTYPES)}: "
        "'float32' halves the blocks' memory and the bytes each pass reads (passes still "
        "compute in float64; labels and weights stay float64)",
        typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(blockFormat="auto", blockDtype="float64")

    def getBlockFormat(self) -> str:
        return self.getOrDefault(self.blockFormat)

    def getBlockDtype(self) -> str:
        return self.getOrDefault(self.blockDtype)


class HasStochasticParams(Params):
    """Mini-batch optimizers: sampled fraction, local steps per job, rule constants."""

    miniBatchFraction: Param = Param(
        Params._dummy(), "miniBatchFraction",
        "fraction of each partition's rows sampled per step (sgd, momentum, nesterov, adam, "
        "rmsprop, adagrad), in (0, 1]", typeConverter=TypeConverters.toFloat)
    localSteps: Param = Param(
        Params._dummy(), "localSteps",
        "update steps each task takes on its own block per Spark job before the driver "
        "averages (local SGD); 1 = exact mini-batch steps; 0 = one pass over the block in "
        "mini-batches of miniBatchFraction of its rows (one job per epoch; exact steps when "
        "miniBatchFraction is 1)", typeConverter=TypeConverters.toInt)
    nIterNoChange: Param = Param(
        Params._dummy(), "nIterNoChange",
        "with miniBatchFraction < 1 the mini-batch optimizers stop once this many consecutive "
        "iterations did not improve the objective on its best by more than tol (>= 1; tol 0 "
        "turns the rule off)",
        typeConverter=TypeConverters.toInt)
    momentum: Param = Param(Params._dummy(), "momentum", "momentum/nesterov coefficient",
                            typeConverter=TypeConverters.toFloat)
    beta1: Param = Param(Params._dummy(), "beta1", "adam's first-moment decay",
                         typeConverter=TypeConverters.toFloat)
    beta2: Param = Param(Params._dummy(), "beta2", "adam's second-moment decay",
                         typeConverter=TypeConverters.toFloat)

    def __init__(self):
        super().__init__()
        self._setDefault(miniBatchFraction=1.0, localSteps=0, momentum=0.9, beta1=0.9,
                         beta2=0.999, nIterNoChange=10)

    def getMiniBatchFraction(self) -> float:
        return self.getOrDefault(self.miniBatchFraction)

    def getLocalSteps(self) -> int:
        return self.getOrDefault(self.localSteps)

    def getNIterNoChange(self) -> int:
        return self.getOrDefault(self.nIterNoChange)

    def stochastic_settings(self):
        from sparkml_aiaas.core.first_order import RuleSettings
        from sparkml_aiaas.core.glm import StochasticSettings

        seed = self.getOrDefault(self.seed) if self.hasParam("seed") and self.isDefined(
            self.seed) else 0
        schedule = {}
        if self.hasParam("stepSchedule"):  # HasStepControl: the step schedule of every rule
            schedule = dict(schedule=self.getOrDefault("stepSchedule"),
                            decay=float(self.getOrDefault("stepDecay")))
        return StochasticSettings(
            mini_batch_fraction=self.getMiniBatchFraction(), local_steps=self.getLocalSteps(),
            seed=int(seed) & 0x7FFFFFFF, n_iter_no_change=self.getNIterNoChange(),
            default_step=self.hasParam("stepSize") and not self.isSet("stepSize"),
            rule=RuleSettings(momentum=self.getOrDefault(self.momentum),
                              beta1=self.getOrDefault(self.beta1),
                              beta2=self.getOrDefault(self.beta2)),
            **schedule)


class HasStepControl(Params):
    """How the first-order optimizers choose their step."""

    stepRule: Param = Param(
        Params._dummy(), "stepRule",
        f"step-size rule of optimizer 'gd' (ignored by the others), one of {list(STEP_RULES)}: "
        "'backtracking' tries the current step and halves it until the objective decreases "
        "enough; 'barzilai_borwein' takes s·s / s·y as each iteration's trial step, under the "
        "same backtracking (far fewer passes on ill-conditioned data); 'schedule' applies "
        "stepSchedule to stepSize without a line search",
        typeConverter=TypeConverters.toString)
    stepSchedule: Param = Param(
        Params._dummy(), "stepSchedule",
        f"step schedule of the mini-batch optimizers and of gd with stepRule 'schedule', one of "
        f"{list(SCHEDULES)}: the step of iteration t (0-based) is stepSize ('constant'), "
        "stepSize / (1 + stepDecay·t) ('inverse_time') or stepSize · stepDecay^floor(t / 10) "
        "('step_decay')", typeConverter=TypeConverters.toString)
    stepDecay: Param = Param(
        Params._dummy(), "stepDecay",
        "decay of stepSchedule (>= 0): inverse_time divides by 1 + stepDecay·t; step_decay "
        "multiplies by stepDecay (in (0, 1]) every 10 iterations",
        typeConverter=TypeConverters.toFloat)

    def __init__(self):
        super().__init__()
        self._setDefault(stepRule="backtracking", stepSchedule="constant", stepDecay=0.0)

    def getStepRule(self) -> str:
        return self.getOrDefault(self.stepRule)

    def getStepSchedule(self) -> str:
        return self.getOrDefault(self.stepSchedule)

    def getStepDecay(self) -> float:
        return self.getOrDefault(self.stepDecay)


class HasEarlyStopping(HasValidationIndicatorCol):
    """Early stopping on held-out rows.

    Rows whose boolean ``validationIndicatorCol`` is true are never trained
    on; the weighted mean data loss over them (without the penalty) is
    evaluated at the start and after every iteration, the fit stops once it
    has not improved for ``patience`` consecutive iterations, and the model
    gets the coefficients of the best iteration (``summary.bestIteration``).
    Rows where the column is false or null are the training rows.
    """

    validationIndicatorCol: Param = with_doc(
        HasValidationIndicatorCol.validationIndicatorCol,
        "early stopping: rows where this boolean column is true are held out of training; the "
        "fit keeps the coefficients of the iteration with the lowest loss on them "
        "(summary.bestIteration, summary.validationLossHistory)")
    patience: Param = Param(
        Params._dummy(), "patience",
        "early stopping: consecutive iterations without a lower validation loss before the fit "
        "stops (>= 1; used when validationIndicatorCol is set)",
        typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(patience=5)

    def getPatience(self) -> int:
        return self.getOrDefault(self.patience)

    def validation_col(self):
        """The indicator column's name, or None when early stopping is off."""
        if self.isDefined(self.validationIndicatorCol) and self.getValidationIndicatorCol():
            return self.getValidationIndicatorCol()
        return None


class HasCheckpoint(HasCheckpointInterval):
    checkpointInterval: Param = with_doc(
        HasCheckpointInterval.checkpointInterval,
        "iterations between two optimizer checkpoints written to checkpointDir (>= 1)")
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
    HasSeed, HasAggregationDepth, HasOptimizer, HasNumPartitions, HasBlockStorage, HasCheckpoint,
    HasStochasticParams, HasStepControl, HasEarlyStopping,
):
    """Params of every linear model, with MLlib's defaults."""

    tol: Param = with_doc(HasTol.tol, "stop when the relative change of the objective falls "
                                      "below tol; on mini-batches (miniBatchFraction < 1) when "
                                      "it has not improved by tol for nIterNoChange "
                                      "iterations (>= 0)")
    stepSize: Param = with_doc(
        HasStepSize.stepSize,
        "first step of optimizer 'gd' (with stepRule 'backtracking' halved whenever a step "
        "fails to decrease the objective enough) and base step of stepSchedule (> 0); left "
        "unset, the mini-batch optimizers take their own (sgd 1.0, momentum and nesterov "
        "0.05, adam 0.05, rmsprop 0.02, adagrad 0.5)")
    standardization: Param = with_doc(
        HasStandardization.standardization,
        "penalize the coefficients of the standardized features, as MLlib does; coefficients "
        "are always reported on the original scale")

    def __init__(self):
        super().__init__()
        self._setDefault(
            featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
            tol=1e-6, stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
            standardization=True, aggregationDepth=2, seed=0,
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
            (self.getBlockFormat() in BLOCK_FORMATS, "blockFormat",
             f"must be one of {list(BLOCK_FORMATS)}"),
            (self.getBlockDtype() in BLOCK_DTYPES, "blockDtype",
             f"must be one of {list(BLOCK_DTYPES)}"),
            (self.getCheckpointInterval() >= 1, "checkpointInterval", "must be >= 1"),
            (0.0 < self.getMiniBatchFraction() <= 1.0, "miniBatchFraction", "must be in (0, 1]"),
            (self.getLocalSteps() >= 0, "localSteps", "must be >= 0 (0 = one pass per job)"),
            (self.getNIterNoChange() >= 1, "nIterNoChange", "must be >= 1"),
            (0.0 <= self.getOrDefault(self.momentum) < 1.0, "momentum", "must be in [0, 1)"),
            (0.0 <= self.getOrDefault(self.beta1) < 1.0, "beta1", "must be in [0, 1)"),
            (0.0 <= self.getOrDefault(self.beta2) < 1.0, "beta2", "must be in [0, 1)"),
            (self.getStepRule() in STEP_RULES, "stepRule", f"must be one of {list(STEP_RULES)}"),
            (self.getStepSchedule() in SCHEDULES, "stepSchedule",
             f"must be one of {list(SCHEDULES)}"),
            (0.0 <= self.getStepDecay() < float("inf"), "stepDecay", "must be finite and >= 0"),
            (self.getStepSchedule() != "step_decay" or 0.0 < self.getStepDecay() <= 1.0,
             "stepDecay", "must be in (0, 1] with stepSchedule 'step_decay'"),
            (self.getPatience() >= 1, "patience", "must be >= 1"),
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
        "label distribution: 'auto' (binomial for labels 0/1, else multinomial, as MLlib "
        "chooses), 'binomial' or 'multinomial'", typeConverter=TypeConverters.toString,
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
    threshold: Param = with_doc(
        HasThreshold.threshold, "prediction is 1.0 when the margin (rawPrediction) exceeds "
                                "threshold, else 0.0")

    def __init__(self):
        super().__init__()
        self._setDefault(rawPredictionCol="rawPrediction", threshold=0.0)
