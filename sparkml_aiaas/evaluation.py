"""Standard metrics of a scored DataFrame, computed with pyspark.ml's evaluators."""

from __future__ import annotations

from typing import Dict


def evaluate_binary(scored, label_col: str = "label", raw_prediction_col: str = "rawPrediction",
                    prediction_col: str = "prediction") -> Dict[str, float]:
    """AUC (ROC and precision-recall) and accuracy of a binary classifier's output."""
    from pyspark.ml.evaluation import (BinaryClassificationEvaluator,
                                       MulticlassClassificationEvaluator)

    scored = scored.withColumn(label_col, scored[label_col].cast("double")).cache()
    try:
        binary = BinaryClassificationEvaluator(labelCol=label_col,
                                               rawPredictionCol=raw_prediction_col)
        multi = MulticlassClassificationEvaluator(labelCol=label_col,
                                                  predictionCol=prediction_col)
        return {
            "auc": binary.evaluate(scored, {binary.metricName: "areaUnderROC"}),
            "auc_pr": binary.evaluate(scored, {binary.metricName: "areaUnderPR"}),
            "accuracy": multi.evaluate(scored, {multi.metricName: "accuracy"}),
            "rows": float(scored.count()),
        }
    finally:
        scored.unpersist()


def evaluate_multiclass(scored, label_col: str = "label",
                        prediction_col: str = "prediction") -> Dict[str, float]:
    """Accuracy, F1 and weighted precision/recall of a multiclass classifier's output."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    scored = scored.withColumn(label_col, scored[label_col].cast("double")).cache()
    try:
        evaluator = MulticlassClassificationEvaluator(labelCol=label_col,
                                                      predictionCol=prediction_col)
        return {
            name: evaluator.evaluate(scored, {evaluator.metricName: name})
            for name in ("accuracy", "f1", "weightedPrecision", "weightedRecall")
        } | {"rows": float(scored.count())}
    finally:
        scored.unpersist()


def evaluate_regression(scored, label_col: str = "label",
                        prediction_col: str = "prediction") -> Dict[str, float]:
    """RMSE, MAE and R² of a regressor's output."""
    from pyspark.ml.evaluation import RegressionEvaluator

    scored = scored.withColumn(label_col, scored[label_col].cast("double")).cache()
    try:
        evaluator = RegressionEvaluator(labelCol=label_col, predictionCol=prediction_col)
        return {
            name: evaluator.evaluate(scored, {evaluator.metricName: name})
            for name in ("rmse", "mae", "r2")
        } | {"rows": float(scored.count())}
    finally:
        scored.unpersist()
