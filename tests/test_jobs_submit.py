"""The spark-submit entry points, run once through pip's spark-submit."""

import json
import os
import subprocess
import sys

import pytest

from sparkml_aiaas.cluster import spark_submit
from sparkml_aiaas.data import write_breast_cancer_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _submit(job: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("SPARKML_AIAAS_SPARK_LOG_LEVEL", None)
    # As README runs the jobs: the package's log4j2 file, by its path in the checkout.
    log4j2 = os.path.join(ROOT, "sparkml_aiaas", "resources", "log4j2.properties")
    command = [spark_submit(), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
               "--driver-java-options", f"-Dlog4j2.configurationFile={log4j2}",
               os.path.join(ROOT, "jobs", job), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.cluster
def test_train_and_score_jobs_through_spark_submit(tmp_path):
    data = write_breast_cancer_csv(str(tmp_path / "data" / "bc.csv"))
    train = _submit("train.py", "--config", os.path.join(ROOT, "conf", "train.yaml"),
                    "--input", data.path, "--model-path", str(tmp_path / "model"),
                    "--set", f"input.quarantine_path={tmp_path / 'q'}",
                    "--set", f"output.metrics_path={tmp_path / 'metrics.json'}", cwd=tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr[-3000:]
    assert "LogisticRegression iter" in train.stdout
    assert "trained model_path=" in train.stdout
    # Quiet start-up (Spark's default logs ~45 INFO lines here), warnings still shown.
    info = [line for line in train.stderr.splitlines() if " INFO " in line]
    assert info == [], info[:5]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["auc"] > 0.95

    score = _submit("score.py", "--config", os.path.join(ROOT, "conf", "score.yaml"),
                    "--model-path", str(tmp_path / "model"), "--input", data.path,
                    "--output", str(tmp_path / "scored"),
                    "--set", f"input.quarantine_path={tmp_path / 'sq'}", cwd=tmp_path)
    assert score.returncode == 0, score.stdout + score.stderr[-3000:]
    assert "rows_in=569 rows_out=569" in score.stdout
    # One summary line (the library's own, timed differently, is gone).
    summary_like = [line for line in score.stdout.splitlines() if "rows_per_s=" in line]
    assert len(summary_like) == 1 and summary_like[0].startswith("scored rows_in=569 "), \
        score.stdout

    # A user error exits non-zero with one clear line and no traceback.  (spark-submit merges
    # the Python driver's stderr into its stdout.)
    bad = _submit("train.py", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert bad.returncode == 2
    output = bad.stdout + bad.stderr
    assert "error: config file" in output
    assert "Traceback" not in output
