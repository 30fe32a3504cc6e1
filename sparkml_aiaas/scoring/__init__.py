"""Batch scoring: pandas-UDF scoring of any saved model, with lineage columns."""
