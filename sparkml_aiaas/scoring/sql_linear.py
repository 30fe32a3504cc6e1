"""Linear models scored inside the JVM, as Spark SQL expressions: no Python worker at all.

A linear model's prediction is arithmetic Spark SQL can do itself.  Shipping
every row to Python and back (Arrow both ways) costs several times a scan of
the data, so every linear kind (binary and multinomial logistic, linear SVM,
linear regression) is scored here as expressions evaluated by Spark's generated
code, from numeric columns or from one vector/array column.  ``model.transform``
(MLlib's output types, :func:`transform_like_mllib_sql`) and ``score()`` (wire
types, :func:`transform_sql`) both use it; the expressions are plain DataFrame
functions, so they run on Spark Connect too.

They are the same doubles as :class:`~sparkml_aiaas.models.predictor.LinearPredictor`
computes in Python (and so the REST server and the pandas UDF path):

- a margin is summed left to right, ``((b + x0*w0) + x1*w1) + ...``, one
  rounding per operation on both sides (Java fuses no multiply-adds, and
  Catalyst does not reorder floating-point sums); the softmax's denominator
  too, ``(e0 + e1) + e2 ...``;
- ``exp`` is ``StrictMath.exp`` here and its numpy port
  (:mod:`sparkml_aiaas.core.fdlibm`) there;
- a null feature is NaN on both sides, and NaN is handled explicitly: Spark
  SQL orders NaN above every number (``NaN > 0.5`` is true), numpy does not;
  a multinomial prediction is numpy's ``argmax`` (the first NaN, else the
  first maximum).

A vector column must hold vectors of the model's size: any other (or a null
vector) stops the job with an error naming the column and the sizes, as the
Python path does.  ``tests/test_sql_scoring.py`` checks the bit-for-bit equality.
"""

from __future__ import annotations

from typing import List, Optional

from sparkml_aiaas.columns import quoted, vector_as_array

__all__ = ["MAX_SQL_TERMS", "margin_sql", "supports_sql", "transform_like_mllib_sql",
           "transform_sql", "wire_outputs_sql"]

_KINDS = ("binary_logistic", "multinomial_logistic", "linear_svc", "linear_regression")
_NAN = "CAST('NaN' AS DOUBLE)"
#: Internal column names of the intermediate projections.
_PREFIX = "__sparkml_aiaas_"
_X, _MARGIN, _P1, _MAX, _SUM = (_PREFIX + s for s in ("x", "margin", "p1", "max", "sum"))
#: Largest ``features × margins`` scored as SQL; past it the expression tree outgrows what
#: Spark compiles well and the Python path is faster.
MAX_SQL_TERMS = 4096


def _double(value: float) -> str:
    # repr round-trips a double exactly; Java's Double.parseDouble reads it back exactly.
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def _is_vector(data_type) -> bool:
    return type(data_type).__name__ == "VectorUDT"


def _is_numeric_array(data_type) -> bool:
    from pyspark.sql import types as T

    return isinstance(data_type, T.ArrayType) and isinstance(
        data_type.elementType, (T.NumericType, T.BooleanType))


def supports_sql(predictor, df) -> bool:
    """Whether ``predictor`` can score ``df`` as SQL: a linear model on numeric or boolean
    columns, or on one vector / numeric array column, of at most :data:`MAX_SQL_TERMS`
    coefficients."""
    from pyspark.sql import types as T

    if type(predictor).__name__ != "LinearPredictor" or predictor.kind not in _KINDS:
        return False
    if predictor.coefficients.size > MAX_SQL_TERMS:
        return False
    if predictor.feature_cols:
        for name in predictor.feature_cols:
            if name not in df.columns:
                return False
            if not isinstance(df.schema[name].dataType, (T.NumericType, T.BooleanType)):
                return False
        return True
    name = predictor.vector_col
    if not name or name not in df.columns:
        return False
    data_type = df.schema[name].dataType
    return _is_vector(data_type) or _is_numeric_array(data_type)


def _features_sql(predictor, df) -> List[str]:
    """SQL for each feature as a double (null → NaN).  For a vector column these refer to
    the array column :data:`_X` that :func:`_with_features` adds."""
    if predictor.feature_cols:
        return [f"coalesce(CAST({quoted(name)} AS DOUBLE), {_NAN})"
                for name in predictor.feature_cols]
    # Vector arrays never hold nulls; a numeric array may.
    nullable = not _is_vector(df.schema[predictor.vector_col].dataType)
    cells = [f"{_X}[{j}]" for j in range(predictor.n_features)]
    return [f"coalesce({c}, {_NAN})" for c in cells] if nullable else cells


def _with_features(df, predictor, keep: List[str]):
    """``df``'s columns plus, for a vector/array input, its values as ``array<double>`` in
    :data:`_X`, checked to hold exactly ``n_features`` values (else the job fails naming
    the column and the size found)."""
    from pyspark.sql import functions as F

    if predictor.feature_cols:
        return df
    name, d = predictor.vector_col, predictor.n_features
    column = F.col(quoted(name))
    if _is_vector(df.schema[name].dataType):
        values = vector_as_array(column)  # a null vector stays null, reported below
    else:
        values = column.cast("array<double>")
    kept = [F.col(quoted(c)) for c in keep]
    frame = df.select(*kept, values.alias(_X))
    x = F.col(_X)
    found = F.when(x.isNull(), F.lit("a null vector")).otherwise(
        F.concat(F.lit("one of size "), F.size(x).cast("string")))
    message = F.concat(F.lit(f"column {name!r} must hold vectors of size {d} (the model's "
                             "number of features); found "), found)
    checked = F.when(F.size(x) == d, x).otherwise(F.raise_error(message))
    return frame.select(*kept, checked.alias(_X))


def margin_sql(predictor, features: List[str], k: Optional[int] = None) -> str:
    """SQL for ``intercept + x·w`` summed left to right (of class ``k`` for a multinomial)."""
    if k is None:
        intercept, weights = predictor.intercept, predictor.coefficients.tolist()
    else:
        intercept, weights = predictor.intercept[k], predictor.coefficients[:, k].tolist()
    margin = _double(intercept)
    for feature, weight in zip(features, weights):
        margin = f"({margin} + ({feature} * {_double(weight)}))"
    return margin


def _flag(condition_sql: str, value_sql: str) -> str:
    """1.0 when the condition holds, else 0.0; 0.0 for NaN, as numpy's comparison gives."""
    return f"CASE WHEN isnan({value_sql}) THEN 0.0D WHEN {condition_sql} THEN 1.0D ELSE 0.0D END"


def wire_outputs_sql(df, predictor):
    """``(frame, {output: SQL over frame})``: the predictor's outputs in their wire types
    (``double`` or ``array<double>``, by canonical name), over a ``frame`` that keeps every
    column of ``df`` and adds intermediates (each its own projection, so computed once).

    None when the model or the columns do not allow SQL scoring.
    """
    if not supports_sql(predictor, df):
        return None
    keep = [quoted(c) for c in df.columns]
    frame = _with_features(df, predictor, list(df.columns))
    features = _features_sql(predictor, df)
    if predictor.kind == "multinomial_logistic":
        return _multinomial(frame, predictor, features, keep)
    frame = frame.selectExpr(*keep, f"{margin_sql(predictor, features)} AS {_MARGIN}")
    m, threshold = _MARGIN, _double(predictor.threshold)
    if predictor.kind == "linear_regression":
        return frame, {"prediction": m}
    if predictor.kind == "linear_svc":
        return frame, {"rawPrediction": m, "prediction": _flag(f"{m} > {threshold}", m)}
    e = f"exp(-abs({m}))"
    frame = frame.selectExpr(
        *keep, m,
        f"CASE WHEN isnan({m}) THEN {_NAN} WHEN {m} >= 0.0D THEN 1.0D / (1.0D + {e}) "
        f"ELSE {e} / (1.0D + {e}) END AS {_P1}",
    )
    return frame, {
        "rawPrediction": m,
        "probability": f"array(1.0D - {_P1}, {_P1})",
        "prediction": _flag(f"{_P1} > {threshold}", _P1),
    }


def _multinomial(frame, predictor, features: List[str], keep: List[str]):
    """Margins, softmax (shifted by the row's max) and numpy's argmax, as SQL."""
    k = predictor.n_classes
    margins = [f"{_MARGIN}{c}" for c in range(k)]
    frame = frame.selectExpr(*keep, *[f"{margin_sql(predictor, features, c)} AS {margins[c]}"
                                      for c in range(k)])
    # greatest() is NaN when any margin is (Spark orders NaN above every number), as
    # numpy's max propagates NaN.
    frame = frame.selectExpr(*keep, *margins, f"greatest({', '.join(margins)}) AS {_MAX}")
    exps = [f"{_PREFIX}e{c}" for c in range(k)]
    frame = frame.selectExpr(*keep, *margins, _MAX,
                             *[f"exp({m} - {_MAX}) AS {e}" for m, e in zip(margins, exps)])
    total = exps[0]
    for e in exps[1:]:
        total = f"({total} + {e})"
    frame = frame.selectExpr(*keep, *margins, _MAX, *exps, f"{total} AS {_SUM}")
    # numpy's argmax: the first NaN if any, else the first maximum.
    first_nan = " ".join(f"WHEN isnan({m}) THEN {float(c)!r}D" for c, m in enumerate(margins))
    first_max = " ".join(f"WHEN {m} = {_MAX} THEN {float(c)!r}D" for c, m in enumerate(margins))
    # Without NaN, some margin equals the max: the ELSE is never taken.
    argmax = f"CASE {first_nan} {first_max} ELSE 0.0D END"
    return frame, {
        "rawPrediction": f"array({', '.join(margins)})",
        "probability": f"array({', '.join(f'{e} / {_SUM}' for e in exps)})",
        "prediction": argmax,
    }


def transform_sql(df, predictor):
    """``df`` with the predictor's output columns appended in their wire types (what
    ``score()`` writes), computed in the JVM; None when SQL cannot score it."""
    from sparkml_aiaas.models.predictor import _OUTPUTS

    built = wire_outputs_sql(df, predictor)
    if built is None:
        return None
    frame, outputs = built
    names = predictor.output_names or {}
    return frame.selectExpr(
        *[quoted(c) for c in df.columns],
        *[f"{outputs[name]} AS {quoted(names.get(name, name))}"
          for name, _ in _OUTPUTS[predictor.kind]],
    )


def transform_like_mllib_sql(df, predictor, layout):
    """``df`` with the outputs of ``layout`` (:func:`~sparkml_aiaas.scoring.mllib_output.output_layout`)
    in MLlib's types, computed in the JVM; None when SQL cannot score it."""
    from pyspark.sql import functions as F

    from sparkml_aiaas.scoring.mllib_output import mllib_column

    built = wire_outputs_sql(df, predictor)
    if built is None:
        return None
    frame, outputs = built
    return frame.select(
        *[F.col(quoted(c)) for c in df.columns],
        *[mllib_column(F.expr(outputs[out.role]), out, entries_never_null=True)
          for out in layout],
    )
