"""MLlib's output schema for ``model.transform``: the one place wire types become ML vectors.

Two representations of the same numbers:

* **wire types**, what predictors compute (:attr:`output_columns`) and what ``score()``,
  ``spark_udf``, ``load_predictor().predict`` and the REST server give: ``probability`` and
  multiclass ``rawPrediction`` as ``array<double>``, the binary linear ``rawPrediction`` as the
  margin ``m`` (a ``double``), ``prediction`` a ``double``.  Parquet, Delta, pandas and
  delta-rs read these as they are.
* **MLlib types**, what ``model.transform`` gives, as pyspark.ml's own models do:
  ``rawPrediction`` and ``probability`` dense ``VectorUDT`` (a binary margin ``m`` becomes
  ``[-m, m]``, as in ``LogisticRegressionModel`` and ``LinearSVCModel``), ``prediction`` a
  non-null ``double``, appended in the order rawPrediction, probability, prediction, each with
  MLlib's ``ml_attr`` column metadata (vector size, number of classes), and a column whose
  ``*Col`` param is ``""`` left out.

:func:`mllib_column` converts one wire value (any Column: today a field of the pandas UDF's
struct, later a Spark SQL expression) with DataFrame functions only (``array_to_vector``,
``transform``, ``coalesce``: no SparkContext, no Python UDF returning a UDT), so the
conversion also runs on Spark Connect.  Vectors cannot hold nulls: a missing value (a row
with a null or NaN feature) is NaN in them, and in ``prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

__all__ = ["OutputColumn", "ROLES", "VECTOR_ROLES", "mllib_column", "mllib_columns",
           "omitted_outputs", "output_layout", "output_names", "predictor_outputs",
           "transform_types"]

#: The outputs pyspark.ml appends, in its order; each named by its ``<role>Col`` param.
ROLES = ("rawPrediction", "probability", "prediction")
#: Outputs that are ML vectors in MLlib (arrays or a binary margin on the wire).
VECTOR_ROLES = ("rawPrediction", "probability")
_PARAMS = {"rawPrediction": "rawPredictionCol", "probability": "probabilityCol",
           "prediction": "predictionCol"}


@dataclass(frozen=True)
class OutputColumn:
    """One output of a model: its role, column name and wire type, and what MLlib records.

    ``size`` is the vector length when known (``ml_attr.num_attrs``), ``num_classes`` the
    classes of a classifier (``ml_attr.num_vals`` of ``prediction``; 0 for a regressor).
    """

    role: str
    name: str
    wire_type: str
    size: Optional[int] = None
    num_classes: int = 0

    @property
    def spark_type(self) -> str:
        """The column's type in ``model.transform`` (``simpleString``: ``vector``, ``double``)."""
        return "vector" if self.role in VECTOR_ROLES else self.wire_type

    @property
    def metadata(self) -> Dict[str, dict]:
        """MLlib's column metadata for this output (what its models attach)."""
        if self.role in VECTOR_ROLES:
            return {"ml_attr": {"num_attrs": int(self.size)}} if self.size else {}
        if self.role == "prediction":
            if self.num_classes > 0:
                return {"ml_attr": {"num_vals": int(self.num_classes), "type": "nominal"}}
            return {"ml_attr": {}}
        return {}


# ------------------------------------------------------------------ params and predictors


def output_names(model, roles: Iterable[str]) -> Dict[str, str]:
    """``{role: column name}`` from the model's ``<role>Col`` params, for its predictor.

    A param set to ``""`` (pyspark.ml: leave that column out of ``transform``) keeps the
    role's own name here, so the predictor, the saved artifact, ``score()`` and serving always
    give every output under a valid name; :func:`omitted_outputs` drops it from ``transform``.
    """
    return {role: model.getOrDefault(_PARAMS[role]) or role for role in roles}


def omitted_outputs(model) -> FrozenSet[str]:
    """Roles whose ``<role>Col`` param the model has set to ``""``."""
    return frozenset(role for role, param in _PARAMS.items()
                     if model.hasParam(param) and model.isDefined(param)
                     and model.getOrDefault(param) == "")


def _final_predictor(predictor):
    from sparkml_aiaas.models.pipeline_predictor import PipelinePredictor

    return predictor.model if isinstance(predictor, PipelinePredictor) else predictor


def predictor_outputs(predictor) -> List[Tuple[str, str, str]]:
    """``[(role, column name, wire type)]`` of a predictor, in its output order.

    The role is recovered from the predictor's renames (``output_names``), so a column
    renamed to another role's name is still classified by what it holds.
    """
    renames = getattr(_final_predictor(predictor), "output_names", None) or {}
    role_of = {name: role for role, name in renames.items()}
    return [(role_of.get(name, name), name, dtype) for name, dtype in predictor.output_columns]


def _num_classes(predictor) -> int:
    inner = _final_predictor(predictor)
    for attr in ("n_classes", "num_classes"):
        value = getattr(inner, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(int(value), 0)
    return 0


def _vector_size(predictor, role: str, wire_type: str, num_classes: int) -> Optional[int]:
    if wire_type == "double":
        return 2  # a binary margin m, as [-m, m]
    inner = _final_predictor(predictor)
    # scikit-learn: an SVC with decision_function_shape="ovo" has one margin per pair.
    width = getattr(inner, "_width", None)
    if callable(width):
        return int(width(role))
    return num_classes or None


def output_layout(predictor, omit: Iterable[str] = ()) -> List[OutputColumn]:
    """The columns ``model.transform`` appends for ``predictor``, in MLlib's order.

    ``omit``: roles left out (their ``*Col`` param is ``""``; see :func:`omitted_outputs`).
    """
    omit = frozenset(omit)
    k = _num_classes(predictor)
    layout = [OutputColumn(role, name, dtype,
                           _vector_size(predictor, role, dtype, k) if role in VECTOR_ROLES
                           else None, k)
              for role, name, dtype in predictor_outputs(predictor) if role not in omit]
    order = {role: i for i, role in enumerate(ROLES)}
    return sorted(layout, key=lambda c: order.get(c.role, len(ROLES)))


def transform_types(outputs: Sequence[Tuple[str, str, str]],
                    omit: Iterable[str] = ()) -> List[Dict[str, str]]:
    """``[{"name", "type"}]`` of what ``transform`` appends, from ``[(role, name, wire type)]``:
    what a model's ``signature["outputs"]`` records."""
    omit = frozenset(omit)
    columns = [OutputColumn(role, name, dtype) for role, name, dtype in outputs
               if role not in omit]
    order = {role: i for i, role in enumerate(ROLES)}
    columns.sort(key=lambda c: order.get(c.role, len(ROLES)))
    return [{"name": c.name, "type": c.spark_type} for c in columns]


# ------------------------------------------------------------------------- the conversion


def mllib_column(value, out: OutputColumn, entries_never_null: bool = False):
    """The wire value ``value`` (a Column) of output ``out`` as MLlib gives it, aliased to
    ``out.name`` with MLlib's metadata.

    * ``array<double>`` vector role -> dense vector (null entries -> NaN; a null array stays
      null, though predictors never give one);
    * ``double`` rawPrediction (a binary margin ``m``) -> the vector ``[-m, m]``;
    * ``prediction`` -> the same double, null -> NaN (never null, as in MLlib).

    ``entries_never_null``: the arrays hold no null entries (Spark SQL scoring's never do),
    so they become vectors as they are, without a per-entry pass.
    """
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    nan = F.lit(float("nan"))
    if out.role in VECTOR_ROLES and out.wire_type == "double":
        m = F.coalesce(value, nan)
        column = array_to_vector(F.array(-m, m))
    elif out.role in VECTOR_ROLES and entries_never_null:
        column = array_to_vector(value)
    elif out.role in VECTOR_ROLES:
        column = F.when(value.isNotNull(),
                        array_to_vector(F.transform(value, lambda x: F.coalesce(x, nan))))
    elif out.role == "prediction" and out.wire_type == "double":
        column = F.coalesce(value, nan)
    else:
        column = value
    return column.alias(out.name, metadata=out.metadata)


def mllib_columns(layout: Sequence[OutputColumn], value_of: Callable[[OutputColumn], object]):
    """:func:`mllib_column` of every output: ``value_of(out)`` gives its wire Column."""
    return [mllib_column(value_of(out), out) for out in layout]
