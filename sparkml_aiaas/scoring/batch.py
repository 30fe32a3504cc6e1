"""Batch scoring with lineage: which model scored each row, when, in which run."""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any, Dict, Optional

from sparkml_aiaas.errors import DataValidationError

_NUMERIC = {"tinyint", "smallint", "int", "bigint", "float", "double", "boolean"}

LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at", "run_id")


def _is_numeric(type_name: str) -> bool:
    return type_name in _NUMERIC or type_name.startswith("decimal")


def check_signature(df, signature: Dict[str, Any]) -> None:
    """Refuse input that lacks a column the model reads, or has it with an incompatible type.

    Numeric types are interchangeable (an int column feeds a double feature);
    anything else must match the type recorded at training.
    """
    problems = []
    for field in signature.get("inputs", []):
        name, expected = field["name"], field["type"]
        if name not in df.columns:
            problems.append(f"missing column {name!r} ({expected})")
            continue
        actual = df.schema[name].dataType.simpleString()
        compatible = actual == expected or (_is_numeric(actual) and _is_numeric(expected))
        if not compatible:
            problems.append(f"column {name!r} is {actual}, the model expects {expected}")
    if problems:
        raise DataValidationError(
            "the input does not match the model's signature: " + "; ".join(problems)
        )


def score_dataframe(df, model, model_name: str, model_version: str,
                    run_id: Optional[str] = None, scored_at: Optional[_dt.datetime] = None):
    """Score ``df`` with a fitted model and append lineage columns.

    Returns ``(scored_df, run_id)``.  ``scored_at`` is one timestamp for the
    whole run (UTC), so every row of a run carries the same value.
    """
    from pyspark.sql import functions as F

    check_signature(df, getattr(model, "signature", {}) or {})
    clashes = [c for c in LINEAGE_COLUMNS if c in df.columns]
    if clashes:
        raise DataValidationError(f"input already has lineage column(s) {clashes}")
    run_id = run_id or uuid.uuid4().hex
    scored_at = scored_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    scored = model.transform(df)
    scored = scored.withColumns({
        "model_name": F.lit(model_name),
        "model_version": F.lit(str(model_version)),
        "scored_at": F.lit(scored_at).cast("timestamp"),
        "run_id": F.lit(run_id),
    })
    return scored, run_id
