"""sparkml_aiaas: Spark-native machine-learning pipelines.

Ingest with a declared schema, preprocess, train on a distributed gradient
engine (broadcast parameters, per-partition gradients, ``treeReduce``, driver
update), save, and batch-score through pandas UDFs.
"""

__version__ = "0.1.0"

from sparkml_aiaas.errors import SparkmlAiaasError  # noqa: E402

__all__ = ["SparkmlAiaasError", "__version__"]
