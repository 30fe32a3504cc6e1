"""Data in: declared schemas, checked ingest, deterministic splits, bundled datasets."""

from sparkml_aiaas.data.datasets import BundledDataset, write_breast_cancer_csv
from sparkml_aiaas.data.ingest import IngestResult, ingest
from sparkml_aiaas.data.schema import ColumnConstraints, DeclaredSchema, parse_schema
from sparkml_aiaas.data.split import split_by_key

__all__ = [
    "BundledDataset",
    "ColumnConstraints",
    "DeclaredSchema",
    "IngestResult",
    "ingest",
    "parse_schema",
    "split_by_key",
    "write_breast_cancer_csv",
]
