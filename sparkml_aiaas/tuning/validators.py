"""``CrossValidator`` and ``TrainValidationSplit``: pyspark.ml's, over one set of blocks.

Both are subclasses of pyspark.ml's classes: the same params, the same
``CrossValidatorModel`` / ``TrainValidationSplitModel`` results (``avgMetrics``,
``stdMetrics``, ``validationMetrics``, ``bestModel``, ``subModels``), the same save/load
format.  Over this package's linear estimators with one of pyspark's standard evaluators
they select in shared passes over one block build (:mod:`.fold_fits`); anything else runs
pyspark's own loop unchanged (logged, with the reason).
"""

from __future__ import annotations

import logging

from pyspark.ml import tuning as _tuning
from pyspark.ml.util import MLReader

from sparkml_aiaas.tuning.fold_fits import (cross_validation_splits, fast_path_refusal,
                                            fold_column_type_refusal, select_model,
                                            train_validation_splits)

logger = logging.getLogger("sparkml_aiaas.tuning")


class _SubclassReader(MLReader):
    """pyspark's reader, whose result (a pyspark validator) becomes this package's class:
    the subclasses add behaviour, no state."""

    def __init__(self, cls, reader):
        super().__init__()
        self.cls = cls
        self.reader = reader

    def session(self, sparkSession):
        self.reader.session(sparkSession)
        return super().session(sparkSession)

    def load(self, path: str):
        instance = self.reader.load(path)
        instance.__class__ = self.cls
        return instance


def _write_as(validator, pyspark_class):
    """pyspark's writer over a pyspark-class twin: pyspark's readers tell a Python-written
    folder by its class name (``pyspark.ml.*``), so the folder names pyspark's class, and
    either library loads it (ours as ours, see :class:`_SubclassReader`)."""
    twin = validator.copy()
    twin.__class__ = pyspark_class
    return twin.write()


def _refusal(validator, dataset) -> str:
    estimator = validator.getOrDefault(validator.estimator)
    maps = validator.getOrDefault(validator.estimatorParamMaps)
    evaluator = validator.getOrDefault(validator.evaluator)
    fold_col = validator.getOrDefault("foldCol") if validator.hasParam("foldCol") else ""
    return (fast_path_refusal(estimator, maps, evaluator)
            or fold_column_type_refusal(dataset, fold_col))


class CrossValidator(_tuning.CrossValidator):
    """K-fold cross-validation, drop-in for :class:`pyspark.ml.tuning.CrossValidator`.

    Over :class:`~sparkml_aiaas.models.LogisticRegression`, ``LinearRegression`` or
    ``LinearSVC`` with a ``BinaryClassificationEvaluator``,
    ``MulticlassClassificationEvaluator`` or ``RegressionEvaluator``, the data are read into
    resident blocks once, one per partition and fold; every fold × param map fit runs in
    shared passes (one Spark job per optimizer round for all of them), every model is
    evaluated on its held-out blocks in one job, and the best map is refitted on all rows
    from the same blocks.  The folds are pyspark's (``rand(seed)`` intervals, or
    ``foldCol``), so the metrics match pyspark's ``CrossValidator`` over the same estimator.
    ``parallelism`` is accepted and unused there (the fits already share every pass).

    Otherwise (another estimator, a custom evaluator, maps that build different blocks,
    early stopping...) it runs pyspark's own loop, logging why.

    Examples
    --------
    >>> from pyspark.ml.evaluation import BinaryClassificationEvaluator
    >>> from pyspark.ml.tuning import ParamGridBuilder
    >>> from sparkml_aiaas.models import LogisticRegression
    >>> from sparkml_aiaas.tuning import CrossValidator
    >>> lr = LogisticRegression(featuresCols=["x1", "x2"])
    >>> grid = ParamGridBuilder().addGrid(lr.regParam, [1e-3, 1e-2, 1e-1]).build()
    >>> cv = CrossValidator(estimator=lr, estimatorParamMaps=grid,
    ...                     evaluator=BinaryClassificationEvaluator(), numFolds=3, seed=7)
    >>> model = cv.fit(df)                                   # doctest: +SKIP
    >>> model.avgMetrics, model.bestModel.getRegParam()      # doctest: +SKIP
    """

    def _fit(self, dataset):
        reason = _refusal(self, dataset)
        if reason:
            logger.info("CrossValidator: pyspark's loop (%s)", reason)
            return super()._fit(dataset)
        splits = cross_validation_splits(dataset, self.getNumFolds(), self.getSeed(),
                                         self.getFoldCol())
        result = select_model(self.getEstimator(), dataset, self.getEstimatorParamMaps(),
                              self.getEvaluator(), splits, self.getCollectSubModels(),
                              "CrossValidator")
        average, std = _tuning.CrossValidator._gen_avg_and_std_metrics(result.metrics)
        return self._copyValues(_tuning.CrossValidatorModel(
            result.best_model, [float(v) for v in average], result.sub_models,
            [float(v) for v in std]))

    def write(self):
        return _write_as(self, _tuning.CrossValidator)

    @classmethod
    def read(cls):
        return _SubclassReader(cls, _tuning.CrossValidator.read())


class TrainValidationSplit(_tuning.TrainValidationSplit):
    """One train/validation split, drop-in for
    :class:`pyspark.ml.tuning.TrainValidationSplit`: the rows with
    ``rand(seed) >= trainRatio`` validate, as in pyspark.  Shares one block build and every
    pass between the param maps as :class:`CrossValidator` does, and falls back to pyspark's
    loop in the same cases."""

    def _fit(self, dataset):
        reason = _refusal(self, dataset)
        if reason:
            logger.info("TrainValidationSplit: pyspark's loop (%s)", reason)
            return super()._fit(dataset)
        splits = train_validation_splits(self.getTrainRatio(), self.getSeed())
        result = select_model(self.getEstimator(), dataset, self.getEstimatorParamMaps(),
                              self.getEvaluator(), splits, self.getCollectSubModels(),
                              "TrainValidationSplit")
        sub_models = result.sub_models[0] if result.sub_models is not None else None
        return self._copyValues(_tuning.TrainValidationSplitModel(
            result.best_model, [float(v) for v in result.metrics[0]], sub_models))

    def write(self):
        return _write_as(self, _tuning.TrainValidationSplit)

    @classmethod
    def read(cls):
        return _SubclassReader(cls, _tuning.TrainValidationSplit.read())
