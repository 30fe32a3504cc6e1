"""Linear models trained on the distributed gradient engine, as pyspark.ml stages.

The objective is MLlib's: ``mean loss + regParam·(α‖w‖₁ + (1−α)/2‖w‖²)``
(weighted mean with ``weightCol``; intercept not penalized), so results
compare with pyspark.ml and scikit-learn.  ``_fit`` validates, builds the
executor-resident blocks and hands a data-pass function to
:func:`sparkml_aiaas.core.glm.fit_glm`; the math lives in ``core``.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.glm import fit_fingerprint, fit_glm, validate_training_stats
from sparkml_aiaas.columns import named_column
from sparkml_aiaas.core.losses import Loss, get_loss
from sparkml_aiaas.errors import (ConfigError, DataValidationError, ModelFormatError,
                                  SparkmlAiaasError)
from sparkml_aiaas.engine import DistributedDataPass, ResidentBlocks
from sparkml_aiaas.engine.loop import DistributedLocalRounds
from sparkml_aiaas.engine.progress import progress_bar
from sparkml_aiaas.models.params import (LinearRegressionParams, LinearSVCParams,
                                         LogisticRegressionParams)
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.predictor import LinearPredictor
from sparkml_aiaas.scoring.udf import transform_with_predictor

logger = logging.getLogger("sparkml_aiaas.train")


@dataclass
class TrainingSummary:
    """What a fit did.  ``objectiveHistory[0]`` is the objective at the starting point.

    With early stopping (``validationIndicatorCol``): ``validationLossHistory[i]``
    is the validation loss (weighted mean data loss over the held-out rows, no
    penalty) after ``i`` iterations, ``bestIteration`` the iteration whose
    coefficients the model holds, ``stoppedEarly`` whether ``patience`` ended
    the fit, ``numRows``/``numValidationRows`` the training/held-out rows;
    ``totalIterations`` counts the iterations run.  Without it the history is
    empty and ``bestIteration`` is None.  ``numPasses`` counts training passes.
    ``blockBuildSeconds`` is the part of ``wallTimeSeconds`` spent turning the
    training rows into resident blocks, ``blockSource`` how (``"parquet"``: read
    straight from the files; ``"spark"``: through a Spark job).
    """

    objectiveHistory: List[float] = field(default_factory=list)
    totalIterations: int = 0
    numPasses: int = 0
    numRows: int = 0
    converged: bool = False
    message: str = ""
    wallTimeSeconds: float = 0.0
    rebuiltPartitions: int = 0
    validationLossHistory: List[float] = field(default_factory=list)
    bestIteration: Optional[int] = None
    stoppedEarly: bool = False
    numValidationRows: int = 0
    blockBuildSeconds: float = 0.0
    blockSource: str = ""


def split_by_indicator(dataset, column: str):
    """``(training rows, validation rows)`` of ``dataset`` by a boolean column.

    Rows where ``column`` is true are the validation rows; false or null ones
    train.  Raises :class:`DataValidationError` when the column is missing or
    not boolean (before any Spark job).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    if column not in dataset.columns:
        raise DataValidationError(
            f"validationIndicatorCol {column!r} is not in the data; available columns: "
            f"{dataset.columns}")
    data_type = dataset.schema[column].dataType
    if not isinstance(data_type, BooleanType):
        raise DataValidationError(
            f"validationIndicatorCol {column!r} must be a boolean column (true = validation "
            f"row), but its type is {data_type.simpleString()}")
    held_out = F.coalesce(named_column(column), F.lit(False))
    return dataset.filter(~held_out), dataset.filter(held_out)


class _LinearEstimator(Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Shared ``_fit``: validate → resident blocks → fit_glm → model."""

    _model_class: type = None  # set by subclasses

    def _loss(self) -> Loss:
        raise NotImplementedError

    def _choose_loss(self, loss: Loss, stats) -> Tuple[Loss, int]:
        """The loss and number of outputs ``k`` for these data (the multinomial family needs k)."""
        return loss, 1

    def _block_options(self) -> Dict[str, str]:
        """Keywords of :meth:`ResidentBlocks.build`: how the blocks store the features."""
        return {"block_format": self.getBlockFormat(), "block_dtype": self.getBlockDtype()}

    def _checkpoint(self, stats, loss: Loss, n_outputs: int,
                    validation_stats=None) -> Optional[FileCheckpoint]:
        """The fit's checkpoint file, keyed by everything that determines the result
        (with early stopping, the validation rows' summary too)."""
        if not self.getCheckpointDir():
            return None
        ignored = {"checkpointDir", "checkpointInterval", "predictionCol", "probabilityCol",
                   "rawPredictionCol", "threshold"}
        settings = {param.name: value for param, value in self.extractParamMap().items()
                    if param.name not in ignored}
        settings.update(estimator=type(self).__name__, loss=loss.name, n_outputs=n_outputs)
        if validation_stats is not None:
            settings.update(validation_data=fit_fingerprint(validation_stats, {}))
        return FileCheckpoint(self.getCheckpointDir(), fit_fingerprint(stats, settings),
                              self.getCheckpointInterval())

    def _fit(self, dataset):
        self.validate_params()
        loss = self._loss()
        spec = self.feature_spec()
        weight_col = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        label_col = self.getLabelCol()
        signature = input_signature(dataset, spec)
        validation_col = self.validation_col()
        if validation_col is not None:
            train_df, validation_df = split_by_indicator(dataset, validation_col)
        else:
            train_df, validation_df = dataset, None
        started = time.perf_counter()
        kind = type(self).__name__

        progress = progress_bar(kind, self.getMaxIter())

        def log_iteration(iteration: int, objective: float) -> None:
            logger.info("%s iter %4d  objective %.10g", kind, iteration, objective)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(objective=f"{objective:.8g}")

        # Both block sets are removed however the fit ends (ExitStack unwinds in reverse).
        with ExitStack() as stack:
            if progress is not None:
                # Closed however the fit ends (Ctrl-C included), after the blocks are removed.
                stack.callback(progress.close)
            blocks = stack.enter_context(ResidentBlocks.build(
                train_df, spec, label_col, weight_col, self.getNumPartitions(),
                **self._block_options()))
            build_seconds = time.perf_counter() - started
            if validation_col is not None and blocks.stats.count == 0:
                raise DataValidationError(
                    f"validationIndicatorCol {validation_col!r} is true for every row: no rows "
                    "are left to train on")
            loss, n_outputs = self._choose_loss(loss, blocks.stats)
            validate_training_stats(blocks.stats, loss, blocks.feature_names, label_col, weight_col,
                                    num_classes=n_outputs if n_outputs > 1 else None)
            data_pass = DistributedDataPass(
                blocks, loss, self.getAggregationDepth(), description=f"sparkml_aiaas {kind}"
            )
            validation_pass = validation_blocks = None
            if validation_df is not None:
                validation_blocks = stack.enter_context(ResidentBlocks.build(
                    validation_df, spec, label_col, weight_col, self.getNumPartitions(),
                    **self._block_options()))
                if validation_blocks.stats.count == 0:
                    raise DataValidationError(
                        f"validationIndicatorCol {validation_col!r} is not true for any row: "
                        "the validation set is empty")
                validate_training_stats(validation_blocks.stats, loss, blocks.feature_names,
                                        label_col, weight_col,
                                        num_classes=n_outputs if n_outputs > 1 else None,
                                        role="validation")
                validation_pass = DistributedDataPass(
                    validation_blocks, loss, self.getAggregationDepth(),
                    description=f"sparkml_aiaas {kind} validation")
            local_rounds = DistributedLocalRounds(
                blocks, self.getAggregationDepth(), description=f"sparkml_aiaas {kind}")
            checkpoint = self._checkpoint(
                blocks.stats, loss, n_outputs,
                validation_blocks.stats if validation_blocks is not None else None)
            try:
                fit = fit_glm(
                    data_pass, blocks.stats, loss=loss, n_outputs=n_outputs,
                    fit_intercept=self.getFitIntercept(),
                    standardization=self.getStandardization(), reg_param=self.getRegParam(),
                    elastic_net_param=self.getElasticNetParam(), optimizer=self.getOptimizer(),
                    max_iter=self.getMaxIter(), tol=self.getTol(), step_size=self.getStepSize(),
                    callback=log_iteration, checkpoint=checkpoint,
                    stochastic=self.stochastic_settings(),
                    local_rounds=local_rounds,
                    step_rule=self.getStepRule(), step_schedule=self.getStepSchedule(),
                    step_decay=self.getStepDecay(),
                    validation_pass=validation_pass, patience=self.getPatience(),
                )
            except ValueError as exc:
                if isinstance(exc, SparkmlAiaasError):
                    raise
                # An unsupported combination found by the math (e.g. newton on hinge).
                raise ConfigError(str(exc)) from None
            rows, rebuilt = blocks.stats.count, blocks.rebuilt_partitions
            validation_rows = 0
            if validation_blocks is not None:
                validation_rows = validation_blocks.stats.count
                rebuilt += validation_blocks.rebuilt_partitions
        result = fit.result
        if fit.best_iteration is not None:
            logger.info("%s early stopping: best validation loss %.10g at iteration %d of %d%s",
                        kind, fit.validation_history[fit.best_iteration], fit.best_iteration,
                        result.n_iter, " (stopped early)" if fit.stopped_early else "")
        summary = TrainingSummary(
            objectiveHistory=[float(v) for v in result.history], totalIterations=result.n_iter,
            numPasses=data_pass.passes + local_rounds.passes, numRows=rows, converged=result.converged,
            message=result.message, wallTimeSeconds=time.perf_counter() - started,
            rebuiltPartitions=rebuilt,
            validationLossHistory=[float(v) for v in fit.validation_history],
            bestIteration=fit.best_iteration, stoppedEarly=bool(fit.stopped_early),
            numValidationRows=int(validation_rows),
            blockBuildSeconds=build_seconds, blockSource=blocks.source,
        )
        model = self._model_class(
            coefficients=fit.coef, intercept=fit.intercept, signature=signature,
            summary=summary, extra=fit.extra,
        )
        self._copyValues(model)
        return model


class _LinearModel(Model, MLWritable, MLReadable):
    """Shared state, scoring and persistence of the fitted linear models."""

    _predictor_kind: str = ""

    def __init__(self, coefficients=None, intercept=0.0,
                 signature: Optional[Dict[str, Any]] = None,
                 summary: Optional[TrainingSummary] = None, extra=None):
        super().__init__()
        matrix = np.zeros((0, 1)) if coefficients is None else np.asarray(coefficients, float)
        # (d,) and (d, 1) both mean one output; (d, k) is a multinomial model.
        self._coef = matrix.reshape(-1, 1) if matrix.ndim < 2 else matrix
        self._intercepts = np.asarray(intercept, dtype=np.float64).reshape(-1)
        self._extra = np.zeros(0) if extra is None else np.asarray(extra, float).reshape(-1)
        self._signature = signature or {}
        self._summary = summary

    @property
    def numOutputs(self) -> int:
        return int(self._coef.shape[1])

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients on the original feature scale, shape ``(numFeatures,)``."""
        if self.numOutputs != 1:
            raise ValueError("a multinomial model has a matrix of coefficients: use "
                             "coefficientMatrix (numClasses × numFeatures) and interceptVector")
        return self._coef[:, 0]

    @property
    def intercept(self) -> float:
        if self.numOutputs != 1:
            raise ValueError("a multinomial model has one intercept per class: use interceptVector")
        return float(self._intercepts[0])

    @property
    def coefficientMatrix(self) -> np.ndarray:
        """Coefficients as MLlib lays them out: ``(numOutputs, numFeatures)``."""
        return self._coef.T

    @property
    def interceptVector(self) -> np.ndarray:
        return self._intercepts

    @property
    def numFeatures(self) -> int:
        return int(self._coef.shape[0])

    @property
    def signature(self) -> Dict[str, Any]:
        """Input columns and their Spark types, and output columns, as recorded at fit time."""
        return dict(self._signature, outputs=[
            {"name": n, "type": t} for n, t in self.predictor().output_columns
        ])

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> TrainingSummary:
        if self._summary is None:
            raise RuntimeError(f"No training summary available for this {type(self).__name__}")
        return self._summary

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol()}

    def _kind(self) -> str:
        return self._predictor_kind

    def predictor(self) -> LinearPredictor:
        """The Spark-free predictor with this model's numbers and params."""
        spec = self.feature_spec()
        return LinearPredictor(
            kind=self._kind(), coefficients=self._coef, intercept=self._intercepts,
            feature_cols=list(spec.columns) if spec.columns else None,
            vector_col=spec.vector_col, threshold=self._threshold(),
            output_names=self._output_names(),
        )

    def _threshold(self) -> float:
        return 0.5

    def _transform(self, dataset):
        return transform_with_predictor(dataset, self.predictor())

    # -- persistence -------------------------------------------------------
    def _artifact(self):
        """``(metadata, arrays)`` to save; the reader restores from the same."""
        predictor = self.predictor()
        metadata = {
            "predictor": {
                "family": "linear", "kind": predictor.kind,
                "feature_cols": predictor.feature_cols, "vector_col": predictor.vector_col,
                "threshold": predictor.threshold, "output_names": predictor.output_names,
            },
            "signature": self.signature,
            "training": asdict(self._summary) if self._summary is not None else None,
        }
        arrays = {"coefficients": self._coef, "intercept": self._intercepts,
                  "extra": self._extra}
        return metadata, arrays

    def _restore(self, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        LinearPredictor.from_artifact(metadata, arrays)  # refuses malformed arrays and spec
        matrix = np.asarray(arrays["coefficients"], dtype=np.float64)
        self._coef = matrix.reshape(-1, 1) if matrix.ndim < 2 else matrix
        self._intercepts = np.asarray(arrays["intercept"], dtype=np.float64).reshape(-1)
        extra = arrays.get("extra", np.zeros(0))
        if extra.dtype.kind not in "biuf":
            raise ModelFormatError(f"linear model array 'extra' holds {extra.dtype}, not numbers")
        self._extra = np.asarray(extra, dtype=np.float64).reshape(-1)
        self._signature = restored_signature(metadata)
        self._summary = restored_summary(TrainingSummary, metadata)

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)


# --------------------------------------------------------------------------------------------
class LogisticRegressionModel(_LinearModel, LogisticRegressionParams):
    """A fitted logistic regression, binomial or multinomial.

    Output columns: ``rawPrediction`` (binomial: the margin, a double usable by
    ``BinaryClassificationEvaluator``; multinomial: the ``k`` margins as
    ``array<double>``), ``probability`` (``array<double>``, one entry per class)
    and ``prediction`` (binomial: 1.0 when P(1) > threshold; multinomial: the
    most probable class).
    """

    @property
    def numClasses(self) -> int:
        return 2 if self.numOutputs == 1 else self.numOutputs

    def _kind(self) -> str:
        return "binary_logistic" if self.numOutputs == 1 else "multinomial_logistic"

    def _threshold(self) -> float:
        return float(self.getThreshold())

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol(), "probability": self.getProbabilityCol(),
                "rawPrediction": self.getRawPredictionCol()}


class LogisticRegression(_LinearEstimator, LogisticRegressionParams):
    """Logistic regression (binomial or multinomial) on the distributed gradient engine.

    Parameters
    ----------
    featuresCol : str, default "features"
        A vector (or array of numbers) column.
    featuresCols : list of str, default []
        Numeric columns used directly; when non-empty it wins over featuresCol.
    labelCol : str, default "label"
        0/1 for the binomial family; class indices 0 … k−1 for the multinomial.
    family : {"auto", "binomial", "multinomial"}, default "auto"
        ``auto`` chooses binomial when the labels are 0/1, as MLlib does.
    weightCol : str, optional
        Non-negative row weights.
    maxIter, tol : int, float
        Stop after ``maxIter`` iterations or when the relative objective change
        falls below ``tol``.
    regParam, elasticNetParam : float
        Penalty ``regParam·(α‖w‖₁ + (1−α)/2‖w‖²)``.
    optimizer : {"lbfgs", "newton", "gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"}
        ``lbfgs`` (default; OWL-QN with L1), ``newton`` (the Hessian from the same
        pass: few passes for few features), proximal gradient descent ``gd``, or
        a mini-batch first-order rule.
    stepSize : float, default 1.0
        First step of ``gd`` (with ``stepRule="backtracking"`` halved whenever a
        step fails to decrease enough), base step of ``stepSchedule``.
    stepRule : {"backtracking", "barzilai_borwein", "schedule"}, default "backtracking"
        Read by ``gd`` only: halve-until-decrease backtracking, the
        Barzilai–Borwein step ``s·s / s·y`` as each trial step (same
        backtracking as a safeguard; far fewer passes on ill-conditioned data),
        or ``stepSchedule`` without any line search.
    stepSchedule : {"constant", "inverse_time", "step_decay"}, default "constant"
        Step of iteration ``t`` for the mini-batch optimizers and ``gd`` with
        ``stepRule="schedule"``: ``stepSize``, ``stepSize/(1 + stepDecay·t)``
        or ``stepSize·stepDecay^floor(t/10)``.
    stepDecay : float, default 0.0
        Decay of ``stepSchedule`` (>= 0; in (0, 1] for ``step_decay``).
    validationIndicatorCol : str, optional
        Early stopping: rows where this boolean column is true are held out of
        training; the fit stops when their loss has not improved for
        ``patience`` iterations and keeps the best iteration's coefficients
        (``summary.bestIteration``, ``summary.validationLossHistory``).
    patience : int, default 5
        Non-improving iterations tolerated by early stopping.
    standardization : bool, default True
        Penalize standardized coefficients (as MLlib); coefficients are always
        reported on the original scale.
    numPartitions : int, default 0
        Tasks per pass; 0 = one per core.
    blockFormat : {"auto", "dense", "sparse"}, default "auto"
        How the resident blocks store the features: ``auto`` keeps sparse vector
        input (under 25 % non-zeros) as compressed sparse rows, decided per
        partition; ``dense``/``sparse`` force one layout.
    blockDtype : {"float64", "float32"}, default "float64"
        ``float32`` halves the blocks' memory and the bytes a pass reads; passes
        still compute in float64.

    Examples
    --------
    >>> lr = LogisticRegression(featuresCols=["x1", "x2"], regParam=0.01)   # doctest: +SKIP
    >>> model = lr.fit(train_df)                                            # doctest: +SKIP
    >>> model.transform(test_df).select("id", "probability").show()         # doctest: +SKIP
    """

    _model_class = LogisticRegressionModel

    def _loss(self) -> Loss:
        return get_loss("multinomial" if self.getFamily() == "multinomial" else "logistic")

    def _choose_loss(self, loss: Loss, stats) -> Tuple[Loss, int]:
        family = self.getFamily()
        if family == "auto":
            # MLlib's rule: binomial unless the labels show more than two classes.
            family = "multinomial" if stats.label_max > 1 else "binomial"
        if family == "binomial":
            return get_loss("logistic"), 1
        top = stats.label_max if np.isfinite(stats.label_max) else 1
        return get_loss("multinomial"), max(int(top) + 1, 2)

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", probabilityCol="probability",
                 rawPredictionCol="rawPrediction", weightCol=None, maxIter=100, tol=1e-6,
                 stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                 standardization=True, threshold=0.5, optimizer="lbfgs", family="auto",
                 seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                 blockFormat=None, blockDtype=None,
                 checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                 momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                 stepDecay=None, validationIndicatorCol=None, patience=None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", probabilityCol="probability",
                  rawPredictionCol="rawPrediction", weightCol=None, maxIter=100, tol=1e-6,
                  stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                  standardization=True, threshold=0.5, optimizer="lbfgs", family="auto",
                  seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                  blockFormat=None, blockDtype=None,
                  checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                  momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                  stepDecay=None, validationIndicatorCol=None, patience=None):
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)


class LinearRegressionModel(_LinearModel, LinearRegressionParams):
    """A fitted linear regression (squared error or huber); output column ``prediction``."""

    _predictor_kind = "linear_regression"

    @property
    def scale(self) -> float:
        """Huber's fitted scale σ (1.0 for squared error, as MLlib reports)."""
        return float(np.exp(self._extra[0])) if self._extra.size else 1.0


class LinearRegression(_LinearEstimator, LinearRegressionParams):
    """Linear regression on the distributed gradient engine: squared error or huber.

    ``loss="squaredError"``: ``1/2 mean_w (y − x·w − b)² + penalty``, MLlib's objective
    with ``regParam = 0``; unlike MLlib the labels are not rescaled, so with
    ``standardization=False`` the result equals scikit-learn's ``Ridge(alpha = n·regParam)``.
    ``loss="huber"``: MLlib's / scikit-learn's ``HuberRegressor`` joint estimation of the
    coefficients and a scale σ (``model.scale``), robustness ``epsilon`` (default 1.35).
    Other parameters as :class:`LogisticRegression` (without the classifier ones).
    """

    _model_class = LinearRegressionModel

    def _loss(self) -> Loss:
        if self.getLoss() == "huber":
            return get_loss("huber", epsilon=self.getEpsilon())
        return get_loss("squared")

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", weightCol=None, maxIter=100, tol=1e-6,
                 stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                 standardization=True, optimizer="lbfgs", loss="squaredError", epsilon=1.35,
                 seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                 blockFormat=None, blockDtype=None,
                 checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                 momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                 stepDecay=None, validationIndicatorCol=None, patience=None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", weightCol=None, maxIter=100, tol=1e-6,
                  stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                  standardization=True, optimizer="lbfgs", loss="squaredError", epsilon=1.35,
                  seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                  blockFormat=None, blockDtype=None,
                  checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                  momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                  stepDecay=None, validationIndicatorCol=None, patience=None):
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)


class LinearSVCModel(_LinearModel, LinearSVCParams):
    """A fitted linear SVM: ``rawPrediction`` (the margin) and ``prediction`` (margin > threshold)."""

    _predictor_kind = "linear_svc"

    def _threshold(self) -> float:
        return float(self.getThreshold())

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol(),
                "rawPrediction": self.getRawPredictionCol()}


class LinearSVC(_LinearEstimator, LinearSVCParams):
    """Linear support vector machine (hinge loss), labels 0/1, MLlib's ``LinearSVC`` objective:
    ``mean_w max(0, 1 − y±(x·w + b)) + regParam·(α‖w‖₁ + (1−α)/2‖w‖²)``.

    Like MLlib, it runs L-BFGS (OWL-QN with L1) on the non-smooth hinge; ``newton`` is refused
    (the hinge has no curvature).  Other parameters as :class:`LogisticRegression`.
    """

    _model_class = LinearSVCModel

    def _loss(self) -> Loss:
        return get_loss("hinge")

    def validate_params(self) -> None:
        super().validate_params()
        if self.getOptimizer() == "newton":
            raise ConfigError("optimizer 'newton' does not support the hinge loss (it has no "
                              "curvature); use 'lbfgs', as MLlib's LinearSVC does, or 'gd'")

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", rawPredictionCol="rawPrediction", weightCol=None,
                 maxIter=100, tol=1e-6, stepSize=1.0, regParam=0.0, elasticNetParam=0.0,
                 fitIntercept=True, standardization=True, threshold=0.0, optimizer="lbfgs",
                 seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                 blockFormat=None, blockDtype=None,
                 checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                 momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                 stepDecay=None, validationIndicatorCol=None, patience=None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", rawPredictionCol="rawPrediction", weightCol=None,
                  maxIter=100, tol=1e-6, stepSize=1.0, regParam=0.0, elasticNetParam=0.0,
                  fitIntercept=True, standardization=True, threshold=0.0, optimizer="lbfgs",
                  seed=None, aggregationDepth=2, numPartitions=0, checkpointDir=None,
                  blockFormat=None, blockDtype=None,
                  checkpointInterval=None, miniBatchFraction=None, localSteps=None,
                  momentum=None, beta1=None, beta2=None, stepRule=None, stepSchedule=None,
                  stepDecay=None, validationIndicatorCol=None, patience=None):
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)
