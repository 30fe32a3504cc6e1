"""Notebooks run top to bottom (code cells executed in order, in one namespace)."""

import json
import os

import numpy as np

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


def run_notebook(name: str) -> dict:
    with open(os.path.join(NOTEBOOKS, name)) as f:
        notebook = json.load(f)
    namespace: dict = {}
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        exec(compile(source, f"{name}[cell {index}]", "exec"), namespace)
    return namespace


def test_quickstart_notebook(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = run_notebook("01_quickstart.ipynb")
    assert ns["ingested"].counts == {"read": 569, "accepted": 569, "rejected": 0}
    assert ns["metrics"]["auc"] > 0.97
    history = ns["summary"].objectiveHistory
    assert history[-1] < history[0]
    predicted = ns["predictor"].predict(ns["sample"])
    spark_side = (ns["model"].transform(spark.createDataFrame(ns["sample"]))
                  .orderBy("id").toPandas())
    np.testing.assert_array_equal(np.stack(predicted["probability"]),
                                  np.stack(spark_side["probability"]))
