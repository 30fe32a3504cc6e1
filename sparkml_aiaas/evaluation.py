"""Standard metrics of a scored DataFrame, computed with pyspark.ml's evaluators."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

# (evaluator, metricName, the name we report it under)
MetricSpec = Tuple[object, str, str]


def _evaluate(scored, label_col: str, metrics: Sequence[MetricSpec]) -> Dict[str, float]:
    """Evaluate every metric over one cached copy of ``scored`` (labels cast to double)."""
    scored = scored.withColumn(label_col, scored[label_col].cast("double")).cache()
    try:
        values = {name: evaluator.evaluate(scored, {evaluator.metricName: metric})
                  for evaluator, metric, name in metrics}
        values["rows"] = float(scored.count())
        return values
    finally:
        scored.unpersist()


def evaluate_binary(scored, label_col: str = "label", raw_prediction_col: str = "rawPrediction",
                    prediction_col: str = "prediction") -> Dict[str, float]:
    """AUC (ROC and precision-recall) and accuracy of a binary classifier's output."""
    from pyspark.ml.evaluation import (BinaryClassificationEvaluator,
                                       MulticlassClassificationEvaluator)

    binary = BinaryClassificationEvaluator(labelCol=label_col, rawPredictionCol=raw_prediction_col)
    multi = MulticlassClassificationEvaluator(labelCol=label_col, predictionCol=prediction_col)
    return _evaluate(scored, label_col, [(binary, "areaUnderROC", "auc"),
                                         (binary, "areaUnderPR", "auc_pr"),
                                         (multi, "accuracy", "accuracy")])


def evaluate_multiclass(scored, label_col: str = "label",
                        prediction_col: str = "prediction") -> Dict[str, float]:
    """Accuracy, F1 and weighted precision/recall of a multiclass classifier's output."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    evaluator = MulticlassClassificationEvaluator(labelCol=label_col,
                                                  predictionCol=prediction_col)
    names = ("accuracy", "f1", "weightedPrecision", "weightedRecall")
    return _evaluate(scored, label_col, [(evaluator, name, name) for name in names])


def evaluate_regression(scored, label_col: str = "label",
                        prediction_col: str = "prediction") -> Dict[str, float]:
    """RMSE, MAE and R² of a regressor's output."""
    from pyspark.ml.evaluation import RegressionEvaluator

    evaluator = RegressionEvaluator(labelCol=label_col, predictionCol=prediction_col)
    return _evaluate(scored, label_col, [(evaluator, name, name) for name in ("rmse", "mae", "r2")])
