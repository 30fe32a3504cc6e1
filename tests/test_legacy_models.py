"""Models saved by release 0.1 (tests/data/models_v0_1, written by scripts/make_legacy_models.py)
still load and predict what they predicted when they were saved.

A binomial ``rawPrediction`` saved as the margin ``m`` (a double, 0.1) is now MLlib's vector
``[-m, m]``; ``probability`` arrays are now vectors: the numbers are compared, not the types.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).parent / "data" / "models_v0_1"
EXPECTED = json.loads((ROOT / "expected.json").read_text())


def _values(cell) -> np.ndarray:
    if hasattr(cell, "toArray"):
        return cell.toArray()
    return np.atleast_1d(np.asarray(cell, dtype=float))


def _load(name: str, kind: str):
    if kind == "PipelineModel":
        from pyspark.ml import PipelineModel
        return PipelineModel.load(str(ROOT / name))
    from sparkml_aiaas.models.persistence import load_model
    return load_model(str(ROOT / name))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_saved_by_0_1_predicts_what_it_predicted(spark, name):
    expected = EXPECTED[name]
    model = _load(name, expected["class"])
    rows = spark.createDataFrame(pd.read_csv(ROOT / "rows.csv"))
    scored = model.transform(rows).toPandas()
    for column, values in expected["outputs"].items():
        for got, want in zip(scored[column], values):
            got, want = _values(got), np.atleast_1d(np.asarray(want, dtype=float))
            if want.size == 1 and got.size == 2 and column == "rawPrediction":
                got = got[1:]  # 0.1's binomial margin m is MLlib's [-m, m] now
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name}.{column}")
