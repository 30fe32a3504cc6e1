"""Training and scoring on ``local-cluster[2,1,1024]``: two executor JVMs, each with its own
Python workers, as on a real cluster (closures, broadcasts and block files cross process
boundaries; nothing is shared through the driver's memory).

One subprocess pays the cluster's start-up once: it fits a logistic and a linear regression,
saves the logistic model and batch-scores the data over the cluster; then it stops that
session and fits the same models on ``local[2]``.  The cluster's coefficients must be
bit-identical to ``local[2]``'s (the blocks and the ordered tree reduce do not depend on
where tasks run), agree with scikit-learn / least squares, and every scored row must equal
the Spark-free predictor's output.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

COLS = ["x0", "x1", "x2", "x3", "x4"]
N = 2000
REG = 0.05

SCRIPT = r'''
import glob, json, os, sys
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.models import LinearRegression, LogisticRegression
from sparkml_aiaas.scoring import score

work = sys.argv[1]
data, local_dir = os.path.join(work, "data"), os.path.join(work, "spark-local")
cols = json.loads(sys.argv[2])
reg = float(sys.argv[3])

# The block folders of each fit just before its cleanup: where the executors kept the data.
folders = []
original_cleanup = ResidentBlocks.cleanup


def recording_cleanup(self):
    folders.append(sorted(glob.glob(
        os.path.join(local_dir, "**", "sparkml_aiaas-blocks", "*", "*"), recursive=True)))
    original_cleanup(self)


ResidentBlocks.cleanup = recording_cleanup


def session(master):
    return get_spark("sparkml_aiaas-local-cluster-test", master=master, conf={
        "spark.local.dir": local_dir, "spark.default.parallelism": "2",
        "spark.ui.enabled": "false", "spark.task.maxFailures": "1",
        # Run the first job once both executors are up, so both hold a block.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "300s"})


def fits(spark):
    df = spark.read.parquet(data)
    logistic = LogisticRegression(featuresCols=cols, labelCol="label", regParam=reg,
                                  standardization=False, tol=1e-12, maxIter=500,
                                  numPartitions=2).fit(df)
    linear = LinearRegression(featuresCols=cols, labelCol="y", tol=1e-12, maxIter=500,
                              numPartitions=2).fit(df)
    return logistic, linear


def params(model):
    return [float(v) for v in model.coefficients] + [float(model.intercept)]


def executor_python_pids(spark):
    return sorted(set(spark.sparkContext.parallelize(range(4), 4)
                      .map(lambda _: os.getppid()).collect()))


result = {}
spark = session("local-cluster[2,1,1024]")
result["executor_daemons"] = executor_python_pids(spark)
logistic, linear = fits(spark)
result["cluster_folders"] = folders[:]
logistic.write().save(os.path.join(work, "model"))
report = score(spark, os.path.join(work, "model"), data, os.path.join(work, "scored"))
result.update(cluster_logistic=params(logistic), cluster_linear=params(linear),
              cluster_passes=logistic.summary.numPasses, rows_in=report.rows_in,
              rows_out=report.rows_out, run_id=report.run_id)
spark.stop()

spark = session("local[2]")
logistic, linear = fits(spark)
result.update(local_logistic=params(logistic), local_linear=params(linear),
              local_passes=logistic.summary.numPasses)
spark.stop()
print("RESULT " + json.dumps(result), flush=True)
'''


def _data(path):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, len(COLS))) * [1.0, 2.0, 0.5, 3.0, 1.0] + [0.0, 1.0, -1.0, 0.0, 2.0]
    pdf = pd.DataFrame(X, columns=COLS)
    margin = X @ [1.0, -0.5, 2.0, 0.3, -1.0] - 0.5
    pdf["label"] = (margin + rng.logistic(size=N) > 0).astype(float)
    pdf["y"] = X @ [0.5, 1.5, -2.0, 0.25, 1.0] + 3.0 + rng.normal(scale=0.3, size=N)
    pdf["id"] = np.arange(N)
    path.mkdir()
    pdf.iloc[: N // 2].to_parquet(path / "part-0.parquet", index=False)
    pdf.iloc[N // 2:].to_parquet(path / "part-1.parquet", index=False)
    return pdf


@pytest.mark.cluster
def test_train_and_score_on_a_local_cluster(tmp_path):
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    from sparkml_aiaas.models import load_predictor

    pdf = _data(tmp_path / "data")
    script = tmp_path / "local_cluster_fit.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARKML_AIAAS_PROGRESS="0")
    run = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(COLS),
                          str(REG)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    output = run.stdout + "\n--- stderr ---\n" + run.stderr[-8000:]
    assert run.returncode == 0, output
    line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, output
    result = json.loads(line[len("RESULT "):])
    message = json.dumps(result, indent=1)

    # Two executor processes, each holding one of the two blocks of a fit.
    assert len(result["executor_daemons"]) == 2, message
    first_fit = result["cluster_folders"][0]
    assert len(first_fit) == 2, message
    executor_dirs = {os.path.dirname(os.path.dirname(os.path.dirname(f))) for f in first_fit}
    assert len(executor_dirs) == 2, message

    # The cluster's fit is the local fit, to the last bit.
    assert result["cluster_logistic"] == result["local_logistic"], message
    assert result["cluster_linear"] == result["local_linear"], message
    assert result["cluster_passes"] == result["local_passes"], message

    # ...and the textbook solution.  MLlib's objective without standardization:
    # mean log-loss + reg/2·|w|², i.e. scikit-learn's with C = 1 / (reg · n).
    X, label, y = pdf[COLS].to_numpy(), pdf["label"].to_numpy(), pdf["y"].to_numpy()
    reference = SkLogisticRegression(C=1.0 / (REG * N), tol=1e-12, max_iter=10_000).fit(X, label)
    np.testing.assert_allclose(result["cluster_logistic"],
                               [*reference.coef_[0], reference.intercept_[0]], rtol=1e-6,
                               atol=1e-8)
    least_squares = np.linalg.lstsq(np.column_stack([X, np.ones(N)]), y, rcond=None)[0]
    np.testing.assert_allclose(result["cluster_linear"], least_squares, rtol=1e-6, atol=1e-8)

    # Scored over the cluster: every row once, equal to the Spark-free predictor.
    assert result["rows_in"] == result["rows_out"] == N, message
    scored = pd.read_parquet(tmp_path / "scored").sort_values("id").reset_index(drop=True)
    assert len(scored) == N and scored["id"].tolist() == list(range(N))
    assert (scored["run_id"].astype(str) == result["run_id"]).all()
    direct = load_predictor(str(tmp_path / "model")).predict(pdf)
    np.testing.assert_array_equal(np.stack(scored["probability"].to_numpy()),
                                  np.stack(direct["probability"].to_numpy()))
    np.testing.assert_array_equal(scored["prediction"].to_numpy(),
                                  direct["prediction"].to_numpy())
