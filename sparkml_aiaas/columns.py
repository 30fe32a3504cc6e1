"""Spark column expressions shared by training (engine) and scoring."""

from __future__ import annotations


def quoted(name: str) -> str:
    """``name`` as a Spark SQL identifier taken literally (dots and backticks included):
    the one place a column name is quoted for SQL text."""
    return "`" + name.replace("`", "``") + "`"


def named_column(name: str):
    """A top-level column by its exact name (dots and backticks are not parsed)."""
    from pyspark.sql import functions as F

    return F.col(quoted(name))


def vector_as_array(col):
    """``vector_to_array`` (float64) that keeps null vectors null.

    Spark's own raises on a null vector; callers report null vectors with a
    clear message instead.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return F.when(col.isNotNull(), vector_to_array(col, "float64"))
