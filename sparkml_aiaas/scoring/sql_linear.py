"""Linear models scored inside the JVM, as Spark SQL expressions: no Python worker at all.

A linear model's prediction is arithmetic Spark SQL can do itself.  Shipping
every row to Python and back (Arrow both ways) costs several times a scan of
the data, so for the binary logistic, linear SVM and linear regression models
the outputs are built here as expressions, evaluated by Spark's generated code.

They are the same doubles as :class:`~sparkml_aiaas.models.predictor.LinearPredictor`
computes in Python (and so the REST server and ``model.transform``):

- the margin is summed left to right, ``((b + x0*w0) + x1*w1) + ...``, one
  rounding per operation on both sides (Java fuses no multiply-adds, and
  Catalyst does not reorder floating-point sums);
- ``exp`` is ``StrictMath.exp`` here and its numpy port
  (:mod:`sparkml_aiaas.core.fdlibm`) there;
- a null feature is NaN on both sides, and NaN is handled explicitly: Spark
  SQL orders NaN above every number (``NaN > 0.5`` is true), numpy does not.

``tests/test_scoring.py`` checks the bit-for-bit equality.
"""

from __future__ import annotations

__all__ = ["margin_sql", "supports_sql", "transform_sql"]

_KINDS = ("binary_logistic", "linear_svc", "linear_regression")
_NAN = "CAST('NaN' AS DOUBLE)"
_MARGIN, _P1 = "__sparkml_margin", "__sparkml_p1"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _double(value: float) -> str:
    # repr round-trips a double exactly; Java's Double.parseDouble reads it back exactly.
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def supports_sql(predictor, df) -> bool:
    """Whether ``predictor`` can score ``df`` as SQL: a binary/regression linear model on
    numeric or boolean columns."""
    from pyspark.sql import types as T

    if type(predictor).__name__ != "LinearPredictor" or predictor.kind not in _KINDS:
        return False
    if not predictor.feature_cols:
        return False
    for name in predictor.feature_cols:
        if name not in df.columns:
            return False
        if not isinstance(df.schema[name].dataType, (T.NumericType, T.BooleanType)):
            return False
    return True


def margin_sql(predictor) -> str:
    """SQL for ``intercept + x·w`` summed left to right (a null feature counts as NaN)."""
    margin = _double(predictor.intercept)
    for name, weight in zip(predictor.feature_cols, predictor.coefficients.tolist()):
        feature = f"coalesce(CAST({_quote(name)} AS DOUBLE), {_NAN})"
        margin = f"({margin} + ({feature} * {_double(weight)}))"
    return margin


def _flag(condition_sql: str, value_sql: str) -> str:
    """1.0 when the condition holds, else 0.0; 0.0 for NaN, as numpy's comparison gives."""
    return f"CASE WHEN isnan({value_sql}) THEN 0.0D WHEN {condition_sql} THEN 1.0D ELSE 0.0D END"


def transform_sql(df, predictor):
    """``df`` with the predictor's output columns appended, computed in the JVM.

    Returns None when the model or the columns do not allow it (then score in Python).
    Each intermediate (margin, P(y=1)) is its own projection, so it is computed once.
    """
    from sparkml_aiaas.models.predictor import _OUTPUTS

    if not supports_sql(predictor, df):
        return None
    keep = [_quote(c) for c in df.columns]
    frame = df.selectExpr(*keep, f"{margin_sql(predictor)} AS {_MARGIN}")
    m, threshold = _MARGIN, _double(predictor.threshold)
    if predictor.kind == "linear_regression":
        outputs = {"prediction": m}
    elif predictor.kind == "linear_svc":
        outputs = {"rawPrediction": m, "prediction": _flag(f"{m} > {threshold}", m)}
    else:
        e = f"exp(-abs({m}))"
        frame = frame.selectExpr(
            *keep, m,
            f"CASE WHEN isnan({m}) THEN {_NAN} WHEN {m} >= 0.0D THEN 1.0D / (1.0D + {e}) "
            f"ELSE {e} / (1.0D + {e}) END AS {_P1}",
        )
        outputs = {
            "rawPrediction": m,
            "probability": f"array(1.0D - {_P1}, {_P1})",
            "prediction": _flag(f"{_P1} > {threshold}", _P1),
        }
    names = predictor.output_names or {}
    return frame.selectExpr(
        *keep,
        *[f"{outputs[name]} AS {_quote(names.get(name, name))}" for name, _ in _OUTPUTS[predictor.kind]],
    )
