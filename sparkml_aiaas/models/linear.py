"""Linear models trained on the distributed gradient engine, as pyspark.ml stages.

Each minimizes pyspark.ml's objective for the same params, so the same data give the same
model as ``pyspark.ml``: the weighted mean loss plus
``regParam·(α‖s⊙w‖₁ + (1−α)/2‖s⊙w‖²)`` on the coefficients scaled by the features'
standard deviations ``s`` (``standardization``; the intercept is not penalized), with
MLlib's family rules (least squares divide the L2 part by the label's standard deviation,
huber's loss carries a factor ½; see :mod:`sparkml_aiaas.core.objective`).  The exact
objectives, the scikit-learn mapping and what goes beyond MLlib are in ``docs/linear.md``;
``tests/test_mllib_parity.py`` checks them against pyspark.ml itself.  ``_fit`` validates,
builds the executor-resident blocks and hands a data-pass function to
:func:`sparkml_aiaas.core.glm.fit_glm`; the math lives in ``core``.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.checkpoint import FileCheckpoint
from sparkml_aiaas.core.glm import fit_fingerprint, fit_glm, validate_training_stats
from sparkml_aiaas.columns import named_column
from sparkml_aiaas.core.losses import Loss, get_loss
from sparkml_aiaas.errors import (ConfigError, DataValidationError, ModelFormatError,
                                  SparkmlAiaasError)
from sparkml_aiaas.engine import DistributedDataPass, FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine.loop import DistributedLocalRounds
from sparkml_aiaas.engine.progress import progress_bar
from sparkml_aiaas.models.param_signature import KeywordParams
from sparkml_aiaas.models.params import (LinearRegressionParams, LinearSVCParams,
                                         LogisticRegressionParams)
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.predictor import LinearPredictor
from sparkml_aiaas.scoring.mllib_output import (omitted_outputs, output_names,
                                                 predictor_outputs, transform_types)
from sparkml_aiaas.scoring.udf import transform_like_mllib

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
    straight from the files; ``"spark"``: through a Spark job).  ``numPartitions``
    is the number of blocks the fit trained on (the floating-point sums depend on it,
    so a fit is reproduced bit for bit with the same number); models saved before it
    was recorded load with 0.
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
    numPartitions: int = 0

    @classmethod
    def of_fit(cls, fit, *, passes: int, blocks, build_seconds: float, wall_seconds: float,
               rebuilt_partitions: int, validation_rows: int = 0,
               num_rows: Optional[int] = None) -> "TrainingSummary":
        """The summary of ``fit`` (a :class:`~sparkml_aiaas.core.glm.GLMFit`) trained on
        ``blocks`` in ``passes`` passes (on ``num_rows`` of their rows when given: a fold)."""
        result = fit.result
        return cls(
            objectiveHistory=[float(v) for v in result.history], totalIterations=result.n_iter,
            numPasses=passes, numRows=blocks.stats.count if num_rows is None else int(num_rows), converged=result.converged,
            message=result.message, wallTimeSeconds=wall_seconds,
            rebuiltPartitions=rebuilt_partitions,
            validationLossHistory=[float(v) for v in fit.validation_history],
            bestIteration=fit.best_iteration, stoppedEarly=bool(fit.stopped_early),
            numValidationRows=int(validation_rows),
            blockBuildSeconds=build_seconds, blockSource=blocks.source,
            numPartitions=int(blocks.num_partitions),
        )


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


class _LinearEstimator(KeywordParams, Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Shared ``_fit``: validate → resident blocks → fit_glm → model; ``fitMultiple`` takes
    the same steps for several param maps over one set of blocks."""

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

    # -- the steps a fit takes, shared by _fit and fitMultiple (models/fit_multiple.py) ----
    def _training_columns(self) -> Tuple[FeatureSpec, str, Optional[str]]:
        """``(features, label column, weight column or None)``: what the blocks hold."""
        weighted = self.isDefined(self.weightCol) and self.getWeightCol()
        return self.feature_spec(), self.getLabelCol(), self.getWeightCol() if weighted else None

    def _build_blocks(self, dataset) -> ResidentBlocks:
        spec, label_col, weight_col = self._training_columns()
        return ResidentBlocks.build(dataset, spec, label_col, weight_col, self.getNumPartitions(),
                                    **self._block_options())

    def _training_loss(self, blocks: ResidentBlocks, stats=None) -> Tuple[Loss, int]:
        """The loss and ``k`` for these blocks (for the rows ``stats`` summarizes, when given:
        a cross-validation fold), after validating those rows for that loss."""
        stats = blocks.stats if stats is None else stats
        loss, n_outputs = self._choose_loss(self._loss(), stats)
        _, label_col, weight_col = self._training_columns()
        validate_training_stats(stats, loss, blocks.feature_names, label_col, weight_col,
                                num_classes=n_outputs if n_outputs > 1 else None)
        return loss, n_outputs

    def _iteration_logger(self, name: str, progress=None):
        # While a bar shows the iteration and objective, the CLI's console leaves the line
        # out (engine.progress.HideLinesShownOnBar); other handlers still get it.
        shown = {"shown_on_progress_bar": progress is not None}

        def log_iteration(iteration: int, objective: float) -> None:
            logger.info("%s iter %4d  objective %.10g", name, iteration, objective, extra=shown)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(objective=f"{objective:.8g}")

        return log_iteration

    def _run_glm(self, data_pass, stats, loss: Loss, n_outputs: int, callback, **engine):
        """:func:`fit_glm` with this estimator's params; ``engine`` adds the single fit's
        extras (checkpoint, local rounds, validation pass)."""
        try:
            return fit_glm(
                data_pass, stats, loss=loss, n_outputs=n_outputs,
                fit_intercept=self.getFitIntercept(),
                standardization=self.getStandardization(), reg_param=self.getRegParam(),
                elastic_net_param=self.getElasticNetParam(), optimizer=self.getOptimizer(),
                max_iter=self.getMaxIter(), tol=self.getTol(), step_size=self.getStepSize(),
                callback=callback, stochastic=self.stochastic_settings(),
                step_rule=self.getStepRule(), step_schedule=self.getStepSchedule(),
                step_decay=self.getStepDecay(), patience=self.getPatience(), **engine,
            )
        except ValueError as exc:
            if isinstance(exc, SparkmlAiaasError):
                raise
            # An unsupported combination found by the math (e.g. newton on hinge).
            raise ConfigError(str(exc)) from None

    def _make_model(self, fit, signature: Dict[str, Any], summary: TrainingSummary):
        model = self._model_class(
            coefficients=fit.coef, intercept=fit.intercept, signature=signature,
            summary=summary, extra=fit.extra,
        )
        self._copyValues(model)
        return model

    def _fit(self, dataset):
        self.validate_params()
        spec, label_col, weight_col = self._training_columns()
        signature = input_signature(dataset, spec)
        validation_col = self.validation_col()
        if validation_col is not None:
            train_df, validation_df = split_by_indicator(dataset, validation_col)
        else:
            train_df, validation_df = dataset, None
        started = time.perf_counter()
        kind = type(self).__name__
        progress = progress_bar(kind, self.getMaxIter())

        # Both block sets are removed however the fit ends (ExitStack unwinds in reverse).
        with ExitStack() as stack:
            if progress is not None:
                # Closed however the fit ends (Ctrl-C included), after the blocks are removed.
                stack.callback(progress.close)
            blocks = stack.enter_context(self._build_blocks(train_df))
            build_seconds = time.perf_counter() - started
            if validation_col is not None and blocks.stats.count == 0:
                raise DataValidationError(
                    f"validationIndicatorCol {validation_col!r} is true for every row: no rows "
                    "are left to train on")
            loss, n_outputs = self._training_loss(blocks)
            data_pass = DistributedDataPass(
                blocks, loss, self.getAggregationDepth(), description=f"sparkml_aiaas {kind}"
            )
            validation_pass = validation_blocks = None
            if validation_df is not None:
                validation_blocks = stack.enter_context(self._build_blocks(validation_df))
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
            fit = self._run_glm(data_pass, blocks.stats, loss, n_outputs,
                                self._iteration_logger(kind, progress), checkpoint=checkpoint,
                                local_rounds=local_rounds, validation_pass=validation_pass)
            rebuilt = blocks.rebuilt_partitions
            validation_rows = 0
            if validation_blocks is not None:
                validation_rows = validation_blocks.stats.count
                rebuilt += validation_blocks.rebuilt_partitions
        if fit.best_iteration is not None:
            logger.info("%s early stopping: best validation loss %.10g at iteration %d of %d%s",
                        kind, fit.validation_history[fit.best_iteration], fit.best_iteration,
                        fit.result.n_iter, " (stopped early)" if fit.stopped_early else "")
        summary = TrainingSummary.of_fit(
            fit, passes=data_pass.passes + local_rounds.passes, blocks=blocks,
            build_seconds=build_seconds, wall_seconds=time.perf_counter() - started,
            rebuilt_partitions=rebuilt, validation_rows=validation_rows)
        return self._make_model(fit, signature, summary)

    def fitMultiple(self, dataset, paramMaps):
        """Fit one model per param map; the maps share the training blocks and each pass
        (one Spark job evaluates every model's pending step) when they can, with models
        bit-identical to separate fits.  See ``docs/linear.md`` ("Model selection")."""
        from sparkml_aiaas.models.fit_multiple import batched_fit_multiple

        models = batched_fit_multiple(self, dataset, paramMaps)
        return models if models is not None else super().fitMultiple(dataset, paramMaps)


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
        """Input columns and their Spark types, as recorded at fit time, and the columns
        ``transform`` appends with their types there (``vector``, ``double``: MLlib's; the
        predictor's ``output_columns`` are the wire types score() and serving give)."""
        return dict(self._signature, outputs=transform_types(
            predictor_outputs(self.predictor()), omitted_outputs(self)))

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> TrainingSummary:
        if self._summary is None:
            raise RuntimeError(f"No training summary available for this {type(self).__name__}")
        return self._summary

    def _output_names(self) -> Dict[str, str]:
        return output_names(self, ["prediction"])

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
        # pyspark.ml's output schema (vectors); score() keeps the predictor's wire types.
        return transform_like_mllib(dataset, self.predictor(), omitted_outputs(self))

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

    ``transform`` appends MLlib's columns: ``rawPrediction`` (a vector; binomial
    ``[-m, m]`` with ``m`` the margin, multinomial the ``k`` margins), ``probability``
    (a vector, one entry per class) and ``prediction`` (binomial: 1.0 when P(1) >
    threshold; multinomial: the most probable class).  The predictor, ``score()`` and
    serving give the same numbers as ``array<double>`` (binomial ``rawPrediction``: ``m``).
    """

    @property
    def numClasses(self) -> int:
        return 2 if self.numOutputs == 1 else self.numOutputs

    def _kind(self) -> str:
        return "binary_logistic" if self.numOutputs == 1 else "multinomial_logistic"

    def _threshold(self) -> float:
        return float(self.getThreshold())

    def _output_names(self) -> Dict[str, str]:
        return output_names(self, ["prediction", "probability", "rawPrediction"])


class LogisticRegression(_LinearEstimator, LogisticRegressionParams):
    """Logistic regression (binomial or multinomial) on the distributed gradient engine.

    Labels are 0/1 for the binomial family and class indices 0 … k−1 for the
    multinomial; row weights must be non-negative; labels holding a single class are
    refused (``DataValidationError``).  The objective is pyspark.ml's
    ``LogisticRegression``'s: ``mean_w log-loss + regParam·(α‖s⊙w‖₁ + (1−α)/2‖s⊙w‖²)``,
    ``s`` the features' unbiased standard deviations (ones without ``standardization``).
    Multinomial intercepts are centered across classes, and without a penalty each
    feature's coefficients too, as MLlib does.  scikit-learn: ``LogisticRegression(C =
    1/(n·regParam), l1_ratio = elasticNetParam)`` with ``standardization=False``.

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


class LinearRegressionModel(_LinearModel, LinearRegressionParams):
    """A fitted linear regression (squared error or huber); output column ``prediction``."""

    _predictor_kind = "linear_regression"

    @property
    def scale(self) -> float:
        """Huber's fitted scale σ (1.0 for squared error, as MLlib reports)."""
        return float(np.exp(self._extra[0])) if self._extra.size else 1.0


class LinearRegression(_LinearEstimator, LinearRegressionParams):
    """Linear regression on the distributed gradient engine: squared error or huber.

    Both minimize pyspark.ml's ``LinearRegression`` objective (its default
    ``solver="auto"``):

    ``loss="squaredError"``: ``½ mean_w (x·w + b − y)² + regParam·α‖s⊙w‖₁ +
    regParam·(1−α)/(2σ_y)·‖s⊙w‖²``.  MLlib fits the label scaled by its standard deviation
    ``σ_y``, which divides the L2 part by ``σ_y``; ``s`` and ``σ_y`` are population standard
    deviations (up to 4096 features, MLlib's normal equations; unbiased beyond, its L-BFGS
    path).  scikit-learn, ``standardization=False``: ``Ridge(alpha = n·regParam/σ_y)``,
    ``Lasso(alpha = regParam)``.  A constant label gives MLlib's untrained model (zero
    coefficients, the mean as intercept).

    ``loss="huber"``: joint estimation of the coefficients and a scale σ (``model.scale``),
    robustness ``epsilon``: ``½ mean_w(σ + H_ε(r/σ)·σ) + regParam/2·‖s⊙w‖²`` (the label is
    not scaled; ``s`` unbiased); scikit-learn: ``HuberRegressor(alpha = n·regParam)``.
    Beyond MLlib, which takes L2 only with huber, ``elasticNetParam`` > 0 adds an L1 part.
    """

    _model_class = LinearRegressionModel

    def _loss(self) -> Loss:
        if self.getLoss() == "huber":
            return get_loss("huber", epsilon=self.getEpsilon())
        return get_loss("squared")


class LinearSVCModel(_LinearModel, LinearSVCParams):
    """A fitted linear SVM: ``rawPrediction`` (``[-m, m]``, ``m`` the margin, as MLlib's) and
    ``prediction`` (``m`` > threshold).  The predictor, ``score()`` and serving give ``m``."""

    _predictor_kind = "linear_svc"

    def _threshold(self) -> float:
        return float(self.getThreshold())

    def _output_names(self) -> Dict[str, str]:
        return output_names(self, ["prediction", "rawPrediction"])


class LinearSVC(_LinearEstimator, LinearSVCParams):
    """Linear support vector machine (hinge loss), labels 0/1, MLlib's ``LinearSVC`` objective:
    ``mean_w max(0, 1 − y±(x·w + b)) + regParam/2·‖s⊙w‖²`` (``y± = 2y − 1``, ``s`` the
    features' unbiased standard deviations, ones without ``standardization``).

    Beyond MLlib, which takes L2 only, ``elasticNetParam`` > 0 turns the penalty into
    ``regParam·(α‖s⊙w‖₁ + (1−α)/2‖s⊙w‖²)``.  Like MLlib, it runs L-BFGS (OWL-QN with L1) on
    the non-smooth hinge, which stops near the minimum rather than at it: models agree
    with pyspark.ml in objective value, not to the last digits of the coefficients (see
    ``docs/linear.md``).  ``newton`` is refused (the hinge has no curvature).  Labels
    holding a single class are refused.  scikit-learn (``fitIntercept=False``,
    ``standardization=False``): ``LinearSVC(loss="hinge", C = 1/(n·regParam),
    fit_intercept=False)``.
    """

    _model_class = LinearSVCModel

    def _loss(self) -> Loss:
        return get_loss("hinge")

    def validate_params(self) -> None:
        super().validate_params()
        if self.getOptimizer() == "newton":
            raise ConfigError("optimizer 'newton' does not support the hinge loss (it has no "
                              "curvature); use 'lbfgs', as MLlib's LinearSVC does, or 'gd'")
