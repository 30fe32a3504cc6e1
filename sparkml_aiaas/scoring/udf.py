"""Scoring a DataFrame through an iterator pandas UDF around a Spark-free predictor.

Features are read straight from their columns (no VectorAssembler), the
predictor runs vectorized numpy on each Arrow batch, and every input column
passes through untouched, so ids survive.
"""

from __future__ import annotations

import logging
from typing import Iterator

import pandas as pd

from sparkml_aiaas.columns import named_column, quoted, vector_as_array
from sparkml_aiaas.errors import DataValidationError, expected_names, name_list

logger = logging.getLogger("sparkml_aiaas.scoring")

_RESULT_COL = "__sparkml_aiaas_result"


def _ddl(outputs) -> str:
    """The DDL of the output struct; names come from the model's metadata, so backticks in
    them are escaped (a name cannot end the quoting and add fields)."""
    return ", ".join(f"{quoted(name)} {dtype}" for name, dtype in outputs)


def _check_inputs(df, predictor) -> None:
    missing = [c for c in predictor.input_columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing} in the data the model reads "
            f"({expected_names(predictor.input_columns)}; it has {len(df.columns)}: "
            f"{name_list(df.columns)})"
        )


def _input_struct(df, predictor):
    from pyspark.sql import functions as F

    _check_inputs(df, predictor)
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


def _check_clashes(df, names) -> None:
    clashes = [name for name in names if name in df.columns]
    if clashes:
        raise DataValidationError(
            f"output column(s) {clashes} already exist in the data; rename them or set the "
            "model's output column params (predictionCol, probabilityCol, rawPredictionCol)"
        )


def _predictor_struct(df, predictor, load=None, field_names=None):
    """The iterator pandas UDF over ``df``: a struct of the predictor's outputs.

    Its fields are ``field_names`` (by position; default the output column names), so
    callers may read the outputs under names of their own choosing.
    """
    from pyspark.sql.functions import pandas_udf

    outputs = predictor.output_columns
    names = [name for name, _ in outputs]
    fields = list(field_names) if field_names is not None else names
    if len(fields) != len(outputs):
        raise ValueError(f"{len(fields)} field names for {len(outputs)} outputs")
    rename = fields != names
    return_type = _ddl([(field, dtype) for field, (_, dtype) in zip(fields, outputs)])

    if load is None:
        def load():
            return predictor

    @pandas_udf(return_type)
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = load()
        for batch in batches:
            out = model.predict(batch)
            # predict() gives the output columns in output_columns order.
            yield out.set_axis(fields, axis=1) if rename else out

    return score(_input_struct(df, predictor))


def transform_with_predictor(df, predictor, load=None):
    """Append the predictor's output columns to ``df``, in their wire types.

    What ``score()`` writes (``array<double>`` and ``double`` columns any Parquet reader
    opens); ``model.transform`` uses :func:`transform_like_mllib` instead.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    predictor : object
        Has ``input_columns``, ``output_columns`` (``[(name, sql_type)]``) and
        ``predict(pandas.DataFrame) -> pandas.DataFrame``.
    load : callable, optional
        Returns the predictor on the worker (e.g. from the per-worker model
        cache); by default ``predictor`` itself is pickled into the UDF.

    Returns
    -------
    pyspark.sql.DataFrame
        Every column of ``df`` followed by the output columns.
    """
    from pyspark.sql import functions as F

    outputs = predictor.output_columns
    _check_clashes(df, [name for name, _ in outputs])
    scored = df.withColumn(_RESULT_COL, _predictor_struct(df, predictor, load))
    return scored.select(
        *[named_column(c) for c in df.columns],
        *[F.col(_RESULT_COL)[name].alias(name) for name, _ in outputs],
    )


def transform_like_mllib(df, predictor, omit=(), load=None):
    """``model.transform``: ``df`` with the predictor's outputs in pyspark.ml's output schema.

    Linear models are scored as Spark SQL expressions (:mod:`~sparkml_aiaas.scoring.sql_linear`);
    for the others the pandas UDF computes the wire values (the numbers ``score()`` and serving
    give).  Either way
    :mod:`sparkml_aiaas.scoring.mllib_output` turns them into MLlib's types: dense vectors for
    ``rawPrediction`` (a binary margin ``m`` as ``[-m, m]``) and ``probability``, a non-null
    double ``prediction``, in MLlib's order and with its column metadata.  ``omit``: roles
    whose ``*Col`` param is ``""`` (left out, as pyspark.ml does); with every output left
    out, ``df`` comes back unchanged (its input columns checked).
    """
    from pyspark.sql import functions as F

    from sparkml_aiaas.scoring.mllib_output import mllib_columns, output_layout

    layout = output_layout(predictor, omit)
    if not layout:
        _check_inputs(df, predictor)
        logger.warning("every output column param is empty: transform returns the input "
                       "unchanged")
        return df
    _check_clashes(df, [out.name for out in layout])
    from sparkml_aiaas.scoring.sql_linear import transform_like_mllib_sql

    in_jvm = transform_like_mllib_sql(df, predictor, layout)
    if in_jvm is not None:  # a linear model: Spark SQL arithmetic, no Python worker
        return in_jvm
    # Internal field names: the UDF's struct never depends on the user's column names.
    fields = [f"_{i}" for i in range(len(predictor.output_columns))]
    index = {name: i for i, (name, _) in enumerate(predictor.output_columns)}
    scored = df.withColumn(_RESULT_COL, _predictor_struct(df, predictor, load, fields))
    return scored.select(
        *[named_column(c) for c in df.columns],
        *mllib_columns(layout, lambda out: F.col(_RESULT_COL)[fields[index[out.name]]]),
    )


# ----------------------------------------------------------------- Arrow path


def _spark_type(dtype: str):
    from pyspark.sql import types as T

    if dtype == "double":
        return T.DoubleType()
    if dtype == "array<double>":
        return T.ArrayType(T.DoubleType(), True)
    return T._parse_datatype_string(dtype)


def _is_vector(data_type) -> bool:
    return type(data_type).__name__ == "VectorUDT"


def _output_array(values, dtype: str):
    import numpy as np
    import pyarrow as pa

    values = np.asarray(values)
    if values.ndim == 2:
        n, k = values.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), pa.float64()))
    if dtype.startswith("array"):  # a column of per-row arrays from predict()
        return pa.array([None if v is None else list(v) for v in values],
                        pa.list_(pa.float64()))
    return pa.array(values, pa.float64())


def score_arrow_batch(predictor, batch, input_columns, outputs):
    """Input batch + the predictor's output columns, as one Arrow RecordBatch.

    Features come straight from their Arrow columns as one float64 matrix (nulls
    become NaN, which give NaN outputs, as with ``predict``).
    """
    import numpy as np
    import pyarrow as pa

    n = batch.num_rows
    if hasattr(predictor, "predict_arrays") and getattr(predictor, "feature_cols", None):
        X = np.empty((n, len(input_columns)), dtype=np.float64)
        for j, name in enumerate(input_columns):
            column = batch.column(batch.schema.get_field_index(name))
            X[:, j] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        arrays = predictor.predict_arrays(X)
        renames = getattr(predictor, "output_names", None) or {}
        by_name = {renames.get(k, k): v for k, v in arrays.items()}
    else:
        frame = batch.select(list(input_columns)).to_pandas()
        by_name = {k: v.to_numpy() for k, v in predictor.predict(frame).items()}
    out = [_output_array(by_name[name], dtype) for name, dtype in outputs]
    return pa.RecordBatch.from_arrays(list(batch.columns) + out,
                                      names=list(batch.schema.names) + [n for n, _ in outputs])


def _arrow_scorer(digest, files, allowlist, input_columns, outputs, counter=None):
    def run(batches):
        from sparkml_aiaas.scoring.model_cache import get_predictor

        predictor = get_predictor(digest, files, allowlist)
        for batch in batches:
            if counter is not None:
                counter.add(batch.num_rows)
            yield score_arrow_batch(predictor, batch, input_columns, outputs)
    return run


def transform_with_model(df, resolved, counter=None):
    """Append the model's output columns to ``df`` (every input column passes through).

    Linear models on numeric columns are scored in the JVM as SQL expressions
    (:mod:`sparkml_aiaas.scoring.sql_linear`); other models (and bundles of a
    preprocessor and a model, which take raw columns of any type) use
    ``mapInArrow`` with the model shipped as a broadcast of its files (inside the plan on
    Spark Connect) and loaded once per Python worker
    (:mod:`sparkml_aiaas.scoring.model_cache`).
    Inputs holding vector columns (Arrow has no vector type) take the iterator
    pandas UDF path instead, with the same per-worker model cache.
    """
    from pyspark.sql import types as T

    from sparkml_aiaas.scoring.model_cache import broadcast_files

    predictor = resolved.predictor
    _check_inputs(df, predictor)
    outputs = predictor.output_columns
    clashes = [name for name, _ in outputs if name in df.columns]
    if clashes:
        raise DataValidationError(
            f"output column(s) {clashes} already exist in the data; rename or drop them")
    from sparkml_aiaas.scoring.sql_linear import transform_sql

    in_jvm = transform_sql(df, predictor)
    if in_jvm is not None:
        # Linear models on numeric columns: Spark SQL arithmetic, no Python worker, the
        # same doubles as the predictor (see sql_linear).
        return in_jvm
    files = broadcast_files(df.sparkSession, resolved.digest, resolved.files)
    # The driver's allowlist goes with the files: executors trust exactly what it trusted.
    allowlist = resolved.allowlist
    if any(_is_vector(f.dataType) for f in df.schema.fields):
        digest = resolved.digest

        def load():
            from sparkml_aiaas.scoring.model_cache import get_predictor

            return get_predictor(digest, files, allowlist)
        return transform_with_predictor(df, predictor, load)
    schema = T.StructType(list(df.schema.fields) + [
        T.StructField(name, _spark_type(dtype), True) for name, dtype in outputs])
    return df.mapInArrow(
        _arrow_scorer(resolved.digest, files, allowlist, list(predictor.input_columns), outputs,
                      counter),
        schema)


class ModelUDF:
    """A pandas UDF scoring with one model; see :func:`spark_udf`."""

    def __init__(self, resolved, udf, input_columns, outputs):
        self.resolved = resolved
        self.udf = udf
        self.input_columns = list(input_columns)
        self.output_columns = list(outputs)

    def __call__(self, *cols):
        from pyspark.sql import Column
        from pyspark.sql import functions as F

        if not cols:
            cols = tuple(self.input_columns)
        if len(cols) == 1 and len(self.input_columns) != 1:
            return self.udf(cols[0] if isinstance(cols[0], Column) else named_column(cols[0]))
        if len(cols) != len(self.input_columns):
            raise DataValidationError(
                f"the model takes {len(self.input_columns)} columns "
                f"({self.input_columns}), got {len(cols)}")
        fields = [(c if isinstance(c, Column) else named_column(c)).alias(name)
                  for c, name in zip(cols, self.input_columns)]
        return self.udf(F.struct(*fields))


def spark_udf(spark, model_ref, registry=None, trusted_factories=None) -> ModelUDF:
    """A pandas UDF that scores with a saved model (path) or registry reference.

    Calling convention::

        udf = spark_udf(spark, "/models/churn")          # or ("churn@production", registry=ROOT)
        df.withColumn("p", udf(*udf.input_columns))     # columns, positionally, in model order
        df.withColumn("p", udf("a", "b", "c"))          # names or Columns, same order
        df.withColumn("p", udf(F.struct("a", "b", "c")))  # one struct: fields matched by name
        df.withColumn("p", udf())                       # the model's own input columns
        df.select("id", "p.prediction", "p.probability")

    The result is a struct with the model's output columns (``prediction``,
    and for classifiers ``rawPrediction`` and ``probability``).  The model's
    files are broadcast (on Spark Connect: carried inside the plan, up to the server's
    message limit) and it is loaded once per Python worker.

    ``trusted_factories``: torch network factories the model may name (plus
    ``SPARKML_AIAAS_TRUSTED_FACTORIES`` on the driver); the executors load with exactly
    the driver's list.
    """
    from pyspark.sql.functions import pandas_udf

    from sparkml_aiaas.scoring.model_cache import broadcast_files, get_predictor
    from sparkml_aiaas.scoring.resolve import resolve_model

    resolved = resolve_model(model_ref, registry=registry, trusted_factories=trusted_factories)
    predictor = resolved.predictor
    outputs = predictor.output_columns
    inputs = list(predictor.input_columns)
    digest = resolved.digest
    allowlist = resolved.allowlist
    files = broadcast_files(spark, digest, resolved.files)
    return_type = _ddl(outputs)

    @pandas_udf(return_type)
    def score_struct(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = get_predictor(digest, files, allowlist)
        for batch in batches:
            if list(batch.columns) != inputs and len(batch.columns) == len(inputs) and \
                    not set(inputs) <= set(batch.columns):
                batch = batch.set_axis(inputs, axis=1)
            yield model.predict(batch)

    return ModelUDF(resolved, score_struct, inputs, outputs)
