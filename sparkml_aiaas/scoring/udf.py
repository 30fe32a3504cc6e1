"""Scoring a DataFrame through an iterator pandas UDF around a Spark-free predictor.

Features are read straight from their columns (no VectorAssembler), the
predictor runs vectorized numpy on each Arrow batch, and every input column
passes through untouched, so ids survive.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from sparkml_aiaas.columns import named_column, vector_as_array
from sparkml_aiaas.errors import DataValidationError

_RESULT_COL = "__sparkml_aiaas_result"


def _input_struct(df, predictor):
    from pyspark.sql import functions as F

    missing = [c for c in predictor.input_columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"the data is missing column(s) {missing} that the model needs "
            f"({predictor.input_columns}); available columns: {df.columns}"
        )
    fields = []
    for name in predictor.input_columns:
        data_type = df.schema[name].dataType
        if type(data_type).__name__ == "VectorUDT":
            # Arrow has no vector type: hand the UDF a plain array<double> (null vectors
            # stay null and the predictor reports them with a clear message).
            fields.append(vector_as_array(named_column(name)).alias(name))
        else:
            fields.append(named_column(name))
    return F.struct(*fields)


def transform_with_predictor(df, predictor):
    """Append the predictor's output columns to ``df``.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    predictor : object
        Has ``input_columns``, ``output_columns`` (``[(name, sql_type)]``) and
        ``predict(pandas.DataFrame) -> pandas.DataFrame``.

    Returns
    -------
    pyspark.sql.DataFrame
        Every column of ``df`` followed by the output columns.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    outputs = predictor.output_columns
    clashes = [name for name, _ in outputs if name in df.columns]
    if clashes:
        raise DataValidationError(
            f"output column(s) {clashes} already exist in the data; rename them or set the "
            "model's output column params (predictionCol, probabilityCol, rawPredictionCol)"
        )
    return_type = ", ".join(f"`{name}` {dtype}" for name, dtype in outputs)

    @pandas_udf(return_type)
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield predictor.predict(batch)

    scored = df.withColumn(_RESULT_COL, score(_input_struct(df, predictor)))
    return scored.select(
        *[named_column(c) for c in df.columns],
        *[F.col(_RESULT_COL)[name].alias(name) for name, _ in outputs],
    )
