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
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.glm import fit_glm, validate_training_stats
from sparkml_aiaas.core.losses import get_loss
from sparkml_aiaas.engine import DistributedDataPass, ResidentBlocks
from sparkml_aiaas.models.params import BinaryClassifierParams, LinearModelParams
from sparkml_aiaas.models.persistence import ArtifactReader, ArtifactWriter, input_signature
from sparkml_aiaas.models.predictor import LinearPredictor
from sparkml_aiaas.scoring.udf import transform_with_predictor

logger = logging.getLogger("sparkml_aiaas.train")


@dataclass
class TrainingSummary:
    """What a fit did.  ``objectiveHistory[0]`` is the objective at the starting point."""

    objectiveHistory: List[float] = field(default_factory=list)
    totalIterations: int = 0
    numPasses: int = 0
    numRows: int = 0
    converged: bool = False
    message: str = ""
    wallTimeSeconds: float = 0.0
    rebuiltPartitions: int = 0


class _LinearEstimator(Estimator, DefaultParamsReadable, DefaultParamsWritable):
    """Shared ``_fit``: validate → resident blocks → fit_glm → model."""

    _loss_name: str = ""
    _model_class: type = None  # set by subclasses

    def _fit(self, dataset):
        self.validate_params()
        loss = get_loss(self._loss_name)
        spec = self.feature_spec()
        weight_col = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        label_col = self.getLabelCol()
        signature = input_signature(dataset, spec)
        started = time.perf_counter()
        kind = type(self).__name__

        def log_iteration(iteration: int, objective: float) -> None:
            logger.info("%s iter %4d  objective %.10g", kind, iteration, objective)

        with ResidentBlocks.build(dataset, spec, label_col, weight_col,
                                  self.getNumPartitions()) as blocks:
            validate_training_stats(blocks.stats, loss, blocks.feature_names, label_col, weight_col)
            data_pass = DistributedDataPass(
                blocks, loss.name, self.getAggregationDepth(), description=f"sparkml_aiaas {kind}"
            )
            fit = fit_glm(
                data_pass, blocks.stats, loss=loss, fit_intercept=self.getFitIntercept(),
                standardization=self.getStandardization(), reg_param=self.getRegParam(),
                elastic_net_param=self.getElasticNetParam(), optimizer=self.getOptimizer(),
                max_iter=self.getMaxIter(), tol=self.getTol(), step_size=self.getStepSize(),
                callback=log_iteration,
            )
            rows, rebuilt = blocks.stats.count, blocks.rebuilt_partitions
        result = fit.result
        summary = TrainingSummary(
            objectiveHistory=[float(v) for v in result.history], totalIterations=result.n_iter,
            numPasses=data_pass.passes, numRows=rows, converged=result.converged,
            message=result.message, wallTimeSeconds=time.perf_counter() - started,
            rebuiltPartitions=rebuilt,
        )
        model = self._model_class(
            coefficients=fit.coef[:, 0], intercept=float(fit.intercept[0]), signature=signature,
            summary=summary,
        )
        self._copyValues(model)
        return model


class _LinearModel(Model, MLWritable, MLReadable):
    """Shared state, scoring and persistence of the fitted linear models."""

    _predictor_kind: str = ""

    def __init__(self, coefficients=None, intercept: float = 0.0,
                 signature: Optional[Dict[str, Any]] = None,
                 summary: Optional[TrainingSummary] = None):
        super().__init__()
        self._coefficients = (np.asarray(coefficients, dtype=np.float64).ravel()
                              if coefficients is not None else np.zeros(0))
        self._intercept = float(intercept)
        self._signature = signature or {}
        self._summary = summary

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients on the original feature scale, shape ``(numFeatures,)``."""
        return self._coefficients

    @property
    def intercept(self) -> float:
        return self._intercept

    @property
    def numFeatures(self) -> int:
        return int(self._coefficients.shape[0])

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

    def predictor(self) -> LinearPredictor:
        """The Spark-free predictor with this model's numbers and params."""
        spec = self.feature_spec()
        return LinearPredictor(
            kind=self._predictor_kind, coefficients=self._coefficients, intercept=self._intercept,
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
        arrays = {"coefficients": self._coefficients, "intercept": np.array([self._intercept])}
        return metadata, arrays

    def _restore(self, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        self._coefficients = np.asarray(arrays["coefficients"], dtype=np.float64).ravel()
        self._intercept = float(arrays["intercept"].ravel()[0])
        signature = dict(metadata.get("signature") or {})
        signature.pop("outputs", None)
        self._signature = signature
        training = metadata.get("training")
        self._summary = TrainingSummary(**training) if training else None

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader:
        return ArtifactReader(cls)


# --------------------------------------------------------------------------------------------
class LogisticRegressionModel(_LinearModel, BinaryClassifierParams):
    """A fitted binary logistic regression.

    Output columns: ``rawPrediction`` (the margin, a double usable by
    ``BinaryClassificationEvaluator``), ``probability`` (``array<double>``,
    ``[P(0), P(1)]``) and ``prediction`` (1.0 when P(1) > threshold).
    """

    _predictor_kind = "binary_logistic"

    def _threshold(self) -> float:
        return float(self.getThreshold())

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol(), "probability": self.getProbabilityCol(),
                "rawPrediction": self.getRawPredictionCol()}


class LogisticRegression(_LinearEstimator, BinaryClassifierParams):
    """Binary logistic regression on the distributed gradient engine.

    Parameters
    ----------
    featuresCol : str, default "features"
        A vector (or array of numbers) column.
    featuresCols : list of str, default []
        Numeric columns used directly; when non-empty it wins over featuresCol.
    labelCol : str, default "label"
        Labels 0 or 1.
    weightCol : str, optional
        Non-negative row weights.
    maxIter, tol : int, float
        Stop after ``maxIter`` iterations or when the relative objective change
        falls below ``tol``.
    regParam, elasticNetParam : float
        Penalty ``regParam·(α‖w‖₁ + (1−α)/2‖w‖²)``.
    optimizer : {"lbfgs", "gd"}
        ``lbfgs`` (default) or proximal gradient descent ``gd`` (needed for L1).
    stepSize : float
        First step of ``gd``; halved whenever a step fails to decrease enough.
    standardization : bool, default True
        Penalize standardized coefficients (as MLlib); coefficients are always
        reported on the original scale.
    numPartitions : int, default 0
        Tasks per pass; 0 = one per core.

    Examples
    --------
    >>> lr = LogisticRegression(featuresCols=["x1", "x2"], regParam=0.01)   # doctest: +SKIP
    >>> model = lr.fit(train_df)                                            # doctest: +SKIP
    >>> model.transform(test_df).select("id", "probability").show()         # doctest: +SKIP
    """

    _loss_name = "logistic"
    _model_class = LogisticRegressionModel

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", probabilityCol="probability",
                 rawPredictionCol="rawPrediction", weightCol=None, maxIter=100, tol=1e-6,
                 stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                 standardization=True, threshold=0.5, optimizer="lbfgs", seed=None,
                 aggregationDepth=2, numPartitions=0):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", probabilityCol="probability",
                  rawPredictionCol="rawPrediction", weightCol=None, maxIter=100, tol=1e-6,
                  stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                  standardization=True, threshold=0.5, optimizer="lbfgs", seed=None,
                  aggregationDepth=2, numPartitions=0):
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)


class LinearRegressionModel(_LinearModel, LinearModelParams):
    """A fitted least-squares linear regression; output column ``prediction``."""

    _predictor_kind = "linear_regression"


class LinearRegression(_LinearEstimator, LinearModelParams):
    """Least-squares linear regression on the distributed gradient engine.

    The objective is ``1/(2n) Σ wᵢ(yᵢ − xᵢ·w − b)² / mean(w) + penalty``, i.e. MLlib's
    with ``regParam = 0``; unlike MLlib the labels are not rescaled, so with
    ``standardization=False`` the result equals scikit-learn's ``Ridge(alpha = n·regParam)``.
    Parameters as :class:`LogisticRegression` (without the classifier ones).
    """

    _loss_name = "squared"
    _model_class = LinearRegressionModel

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", weightCol=None, maxIter=100, tol=1e-6,
                 stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                 standardization=True, optimizer="lbfgs", seed=None, aggregationDepth=2,
                 numPartitions=0):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", weightCol=None, maxIter=100, tol=1e-6,
                  stepSize=1.0, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                  standardization=True, optimizer="lbfgs", seed=None, aggregationDepth=2,
                  numPartitions=0):
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)
