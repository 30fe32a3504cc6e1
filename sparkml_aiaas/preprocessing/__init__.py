"""Preprocessing and de-identification as pyspark.ml stages, plus their Spark-free loader.

``load_fitted`` and the core classes need no Spark (and import none); the
stages are imported lazily so a serving process can use this package without
pyspark's ML stack.  The math is in :mod:`sparkml_aiaas.core.preprocessing`.
"""

from sparkml_aiaas.core.preprocessing import FittedPreprocessor, PreprocessSpec, fit_from_pandas
from sparkml_aiaas.preprocessing.loader import load_fitted

_LAZY = {
    "Preprocessor": "sparkml_aiaas.preprocessing.stages",
    "PreprocessorModel": "sparkml_aiaas.preprocessing.stages",
    "Deidentifier": "sparkml_aiaas.preprocessing.deidentify",
}

__all__ = ["FittedPreprocessor", "PreprocessSpec", "fit_from_pandas", "load_fitted", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        from sparkml_aiaas.errors import missing_dependency

        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            raise missing_dependency(exc) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'sparkml_aiaas.preprocessing' has no attribute {name!r}")
