"""Data in: declared schemas, checked ingest, deterministic splits, bundled datasets, Delta tables."""

from sparkml_aiaas.errors import missing_dependency

try:
    from sparkml_aiaas.data.datasets import BundledDataset, write_breast_cancer_csv
    from sparkml_aiaas.data.delta import read_table, table_version, write_table
    from sparkml_aiaas.data.ingest import IngestResult, ingest
    from sparkml_aiaas.data.schema import ColumnConstraints, DeclaredSchema, parse_schema
    from sparkml_aiaas.data.split import split_by_key
except ImportError as exc:  # pyspark missing: name the extra that installs it
    raise missing_dependency(exc) from exc

__all__ = [
    "BundledDataset",
    "ColumnConstraints",
    "DeclaredSchema",
    "IngestResult",
    "ingest",
    "parse_schema",
    "read_table",
    "split_by_key",
    "table_version",
    "write_breast_cancer_csv",
    "write_table",
]
