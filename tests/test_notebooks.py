"""The notebooks run top to bottom in a real Jupyter kernel (nbclient), as CI and users run them.

Each notebook executes in a fresh ``python3`` kernel of *this* interpreter (a kernelspec
written into a temporary folder, so a stale user-level ``python3`` spec cannot pick another
Python), with a temporary working directory; the kernel starts its own ``local[2]`` Spark
session.  The saved notebook is not changed: the test appends one extra code cell to its
in-memory copy that prints a JSON dict of values from the notebook's namespace, and the
assertions below check those values.
"""

import json
import os
import sys

import numpy as np
import pytest

import nbclient  # the dev extra installs nbclient, nbformat, ipykernel, jupyter_client
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
CELL_TIMEOUT = 300  # seconds per cell
MARKER = "__NOTEBOOK_RESULTS__"

#: Prepended to every collection cell: JSON for numpy/pandas values.
_COLLECT_PRELUDE = f"""
import json as _json, sys as _sys
import numpy as _np

def _jsonable(value):
    if isinstance(value, _np.ndarray):
        return value.tolist()
    if isinstance(value, _np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-able: {{type(value)}}")

def _emit(values):
    values = dict(values, executable=_sys.executable)
    print({MARKER!r} + _json.dumps(values, default=_jsonable))
"""


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A ``python3`` kernelspec whose argv starts with this interpreter (``sys.executable``)."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(str(root / "python3"))
    return str(root)


def _kernel_env() -> dict:
    env = dict(os.environ)
    # A kernel must start its own Spark, never attach to this process's JVM (spark-submit
    # sets these); and plots use the kernel's inline backend, not a test-time Agg override.
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "MPLBACKEND"):
        env.pop(name, None)
    return env


def run_notebook(name: str, collect: str, workdir, kernel_dir: str):
    """Execute ``notebooks/<name>`` plus a final ``collect`` cell; return (values, notebook)."""
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{name} is saved with outputs; clear them before committing"
    notebook.cells.append(nbformat.v4.new_code_cell(_COLLECT_PRELUDE + collect))
    manager = KernelManager(kernel_name="python3",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir]))
    client = nbclient.NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT,
                                     kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env=_kernel_env())
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs
                      if output.get("output_type") == "stream")
    lines = [line for line in printed.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, printed
    values = json.loads(lines[0][len(MARKER):])
    # The kernel ran this interpreter (CI's fresh virtualenv, not some other python3).
    assert values["executable"] == sys.executable
    return values, notebook


def _outputs_of_type(notebook, mime: str) -> int:
    return sum(1 for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []) if mime in output.get("data", {}))


def test_notebooks_are_saved_clean():
    names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
    assert names == ["01_quickstart.ipynb", "02_distributed_training.ipynb",
                     "03_torch_and_xgboost.ipynb", "04_compression_and_registry.ipynb",
                     "05_batch_scoring_and_serving.ipynb"]
    for name in names:
        notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        nbformat.validate(notebook)
        first_code = next(c for c in notebook.cells if c.cell_type == "code")
        # get_spark reuses the notebook's session of either kind (classic or Connect).
        assert "spark = get_spark(" in first_code.source, name
        assert "sparkContext" not in first_code.source, name
        intro = "".join(c.source for c in notebook.cells[:2] if c.cell_type == "markdown")
        assert "%pip install" in intro, name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, name
                # %pip is documented in markdown only: it must not run in CI.
                assert "%pip" not in cell.source, name


def test_quickstart_notebook(tmp_path, kernel_dir):
    values, _ = run_notebook("01_quickstart.ipynb", """
_sample_predictions = predictor.predict(sample)
_spark_side = model.transform(spark.createDataFrame(sample)).orderBy("id").toPandas()
_emit({
    "counts": ingested.counts,
    "auc": metrics["auc"],
    "history": list(summary.objectiveHistory),
    "sample_ids": sample["id"].tolist(),
    "spark_ids": _spark_side["id"].tolist(),
    "predictor_probability": _np.stack(_sample_predictions["probability"]),
    "spark_probability": _np.stack(_spark_side["probability"]),
    "model_saved": os.path.exists(os.path.join(WORK, "model", "metadata.json")),
})
""", tmp_path, kernel_dir)
    assert values["counts"] == {"read": 569, "accepted": 569, "rejected": 0, "blank": 0}
    assert values["auc"] > 0.97
    history = values["history"]
    assert history[-1] < history[0]
    assert values["sample_ids"] == values["spark_ids"] and len(values["sample_ids"]) == 5
    # The Spark-free predictor and the Spark transform give the same bits.
    np.testing.assert_array_equal(np.array(values["predictor_probability"]),
                                  np.array(values["spark_probability"]))
    assert values["model_saved"]
    assert (tmp_path / "work" / "01_quickstart" / "model" / "metadata.json").exists()


def test_distributed_training_notebook(tmp_path, kernel_dir):
    values, notebook = run_notebook("02_distributed_training.ipynb", """
_emit({
    "n_train": int(X_train.shape[0]),
    "n_features": int(X_train.shape[1]),
    "optimizers": list(results.index),
    "results": results.reset_index().to_dict(orient="records"),
    "histories": {name: list(fit.summary.objectiveHistory) for name, fit in fits.items()},
    "sk_objective": sk_objective,
    "sk_coef": sk_coef,
    "coefficients": {name: fit.coefficients for name, fit in fits.items()},
    "svm_auc": svm_metrics["auc"],
})
""", tmp_path, kernel_dir)
    expected = {"lbfgs", "newton", "gd", "gd_bb", "sgd", "momentum", "nesterov", "adam",
                "rmsprop", "adagrad"}
    assert set(values["optimizers"]) == expected
    assert values["n_features"] == 30 and 380 < values["n_train"] < 480
    sk_coef = np.array(values["sk_coef"])
    # How close to scikit-learn's optimum of the same objective each optimizer must end
    # (full-data objective gap): exact methods to round-off, Barzilai-Borwein gradient
    # descent nearly, the mini-batch rules within their noise, plain gd after 40 steps.
    max_gap = {"lbfgs": 1e-6, "newton": 1e-6, "gd_bb": 1e-4, "gd": 0.05}
    for row in values["results"]:
        name = row["optimizer"]
        history = values["histories"][name]
        assert history[-1] < history[0], name
        assert row["passes"] >= 1 and row["iterations"] >= 1, name
        assert row["test_auc"] > 0.97, (name, row)
        assert -1e-9 < row["gap"] < max_gap.get(name, 5e-3), (name, row)
    by_name = {row["optimizer"]: row for row in values["results"]}
    for exact in ("lbfgs", "newton"):
        np.testing.assert_allclose(values["coefficients"][exact], sk_coef, atol=1e-3)
    # Second-order and quasi-Newton methods need far fewer passes than plain gradient descent.
    assert by_name["newton"]["passes"] < by_name["gd"]["passes"]
    assert by_name["lbfgs"]["passes"] < by_name["gd"]["passes"]
    assert values["svm_auc"] > 0.97
    assert _outputs_of_type(notebook, "image/png") >= 1  # the loss curves were drawn


def test_torch_and_xgboost_notebook(tmp_path, kernel_dir):
    values, notebook = run_notebook("03_torch_and_xgboost.ipynb", """
_emit({
    "n_train": train.count(),
    "n_test": test.count(),
    "accuracy": accuracies["accuracy"].to_dict(),
    "round_trip": round_trip,
    "loss_history": {name: list(models[name].summary.lossHistory) for name in ("mlp", "cnn")},
    "saved": sorted(os.listdir(os.path.join(WORK, "models"))),
})
""", tmp_path, kernel_dir)
    assert values["n_train"] + values["n_test"] == 1797
    accuracy = values["accuracy"]
    assert set(accuracy) == {"mlp", "cnn", "xgboost", "random_forest"}
    assert accuracy["cnn"] > 0.93 and accuracy["mlp"] > 0.93
    assert accuracy["xgboost"] > 0.9 and accuracy["random_forest"] > 0.88
    for name in ("mlp", "cnn"):
        history = values["loss_history"][name]
        assert len(history) >= 2 and history[-1] < history[0], (name, history)
    # save -> load (Spark) and the Spark-free predictor give the fitted model's predictions.
    assert values["round_trip"] == {name: {"spark_load": True, "predictor": True}
                                    for name in accuracy}
    assert values["saved"] == sorted(accuracy)
    assert _outputs_of_type(notebook, "image/png") >= 1


def test_compression_and_registry_notebook(tmp_path, kernel_dir):
    values, _ = run_notebook("04_compression_and_registry.ipynb", """
_emit({
    "report": report.to_dict(),
    "dense_accuracy": dense_accuracy,
    "versions": [mv.version for mv in registry.list("digits_cnn")],
    "aliases": registry.aliases("digits_cnn"),
    "champion_version": champion.version,
    "champion_matches": bool(champion_matches),
    "tamper_error": tamper_error,
})
""", tmp_path, kernel_dir)
    report = values["report"]
    assert report["method"] == "prune+int8"
    assert report["ratio"] > 3.5                       # weights bytes, dense / compressed
    assert report["bytes_after"] < report["bytes_before"]
    assert report["total_bytes_after"] < report["total_bytes_before"]
    assert 0.45 < report["achieved_sparsity"] < 0.8
    assert report["metric"] == "accuracy" and report["eval_rows"] > 300
    assert report["metric_before"] == pytest.approx(values["dense_accuracy"])
    assert report["metric_before"] > 0.9 and report["metric_after"] > 0.88
    assert values["versions"] == [1, 2]
    aliases = values["aliases"]
    assert set(aliases) == {"champion", "challenger"}
    assert sorted(aliases.values()) == [1, 2]
    assert values["champion_version"] == aliases["champion"]
    assert values["champion_matches"]
    assert "checksum mismatch" in values["tamper_error"]
    assert (tmp_path / "work" / "04_compression" / "registry" / "digits_cnn" / "versions"
            / "2" / "registry.json").exists()


def test_batch_scoring_and_serving_notebook(tmp_path, kernel_dir):
    values, _ = run_notebook("05_batch_scoring_and_serving.ipynb", """
_emit({
    "rows_in": report.rows_in,
    "rows_out": report.rows_out,
    "n_new": n_new,
    "output_path": report.output_path,
    "model_version": report.model_version,
    "test_auc": test_metrics["auc"],
    "health": health.status_code,
    "served_status": response.status_code,
    "served_version": response.json()["version"],
    "served": [p["probability"] for p in response.json()["predictions"]],
    "served_prediction": [p["prediction"] for p in response.json()["predictions"]],
    "batch": [list(p) for p in compare["probability"]],
    "batch_prediction": compare["prediction"].tolist(),
    "n_compared": len(compare),
    "unauthorized": unauthorized.status_code,
    "unseen_status": unseen.status_code,
})
""", tmp_path, kernel_dir)
    assert values["rows_in"] == values["rows_out"] == values["n_new"] > 0
    assert os.path.isdir(values["output_path"])
    assert any(name.endswith(".parquet") for name in os.listdir(values["output_path"]))
    assert str(values["model_version"]) == "1"
    assert values["test_auc"] > 0.75
    assert values["health"] == 200 and values["served_status"] == 200
    assert values["served_version"] == 1
    assert values["n_compared"] == len(values["served"]) >= 10
    # Served and batch-scored predictions of the same rows are the same numbers.
    assert values["served"] == values["batch"]
    assert values["served_prediction"] == values["batch_prediction"]
    assert values["unauthorized"] == 401
    assert values["unseen_status"] == 200
