"""The standalone-cluster recipe of docs/cluster.md, run as documented.

``scripts/standalone_cluster.py start`` brings up a Spark standalone master and two workers
(1 core, 1g each) from pip's pyspark on 127.0.0.1; ``... wheel`` builds the package and its
``.zip`` copy for ``--py-files``; ``spark-submit --master spark://...`` runs a probe,
``jobs/train.py`` and ``jobs/score.py`` on the two executors; ``... stop`` stops everything by
the recorded pids.  The probe proves the executors imported ``sparkml_aiaas`` from the
shipped file, not from this checkout (the editable install), on both workers.
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from sparkml_aiaas.cluster.standalone import (
    STATE_FILE,
    ClusterError,
    StandaloneCluster,
    build_wheel,
    process_alive,
    process_group_members,
    spark_home,
    spark_submit,
    stop_from_state,
    zip_for_py_files,
)
from sparkml_aiaas.data import write_breast_cancer_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "standalone_cluster.py")

PROBE = r'''
import json, os
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("sparkml_aiaas-probe").getOrCreate()


def where(_):
    import sparkml_aiaas
    return [sparkml_aiaas.__file__, os.getpid(), os.getcwd()]


print("PROBE " + json.dumps(spark.sparkContext.parallelize(range(2), 2).map(where).collect()),
      flush=True)
spark.stop()
'''


def _script(*args, timeout=300):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def state_dir(tmp_path):
    """The cluster's state folder; whatever the test did, no process it records survives."""
    state = tmp_path / "cluster"
    yield state
    for name in (STATE_FILE, STATE_FILE + ".stopped"):
        if (state / name).exists():
            stop_from_state(str(state / name), timeout=10)


def _submit(master, py_files, script, *args, cwd):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARKML_AIAAS_PROGRESS="0")
    command = [spark_submit(), "--master", master,
               "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
               # Start the job once both executors have registered.
               "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
               "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=300s",
               "--py-files", py_files, script, *args]
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{' '.join(command)}\n{run.stdout}\n{run.stderr[-4000:]}"
    return run


@pytest.mark.cluster
def test_standalone_recipe_trains_and_scores_with_the_shipped_wheel(tmp_path, state_dir):
    started = _script("start", "--state-dir", str(state_dir), "--workers", "2", "--cores", "1",
                      "--memory", "1g")
    assert started.returncode == 0, started.stdout + started.stderr
    master = started.stdout.strip()
    assert master.startswith("spark://127.0.0.1:"), started.stdout
    state = json.loads((state_dir / STATE_FILE).read_text())
    assert state["master_url"] == master
    daemons = state["processes"]
    assert sorted(daemons) == ["master", "worker-1", "worker-2"]
    assert all(process_alive(p["pid"], p["start_time"]) for p in daemons.values())

    built = _script("wheel", "--out", str(tmp_path / "dist"))
    assert built.returncode == 0, built.stdout + built.stderr
    py_files = built.stdout.strip()
    assert os.path.basename(py_files) == "sparkml_aiaas-0.1.0-py3-none-any.zip", py_files
    assert os.path.isfile(py_files[:-len(".zip")] + ".whl")

    # The executors import the package from the shipped file, on both workers.
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    run = _submit(master, py_files, str(probe), cwd=tmp_path)
    line = next(l for l in run.stdout.splitlines() if l.startswith("PROBE "))
    answers = json.loads(line[len("PROBE "):])
    shipped = os.path.basename(py_files) + "/sparkml_aiaas/__init__.py"
    for module_file, _pid, cwd in answers:
        assert module_file.endswith(shipped), answers
        assert not module_file.startswith(ROOT + os.sep), answers
        assert cwd.startswith(str(state_dir)), answers  # an executor's work folder
    assert len({pid for _, pid, _ in answers}) == 2, answers
    workers = {os.path.relpath(cwd, state_dir).split(os.sep)[0] for _, _, cwd in answers}
    assert workers == {"worker-1", "worker-2"}, answers

    # The jobs, as a scheduler would submit them.
    data = write_breast_cancer_csv(str(tmp_path / "data" / "bc.csv"))
    train = _submit(master, py_files, os.path.join(ROOT, "jobs", "train.py"),
                    "--config", os.path.join(ROOT, "conf", "train.yaml"),
                    "--input", data.path, "--model-path", str(tmp_path / "model"),
                    "--set", f"input.quarantine_path={tmp_path / 'q'}",
                    "--set", f"output.metrics_path={tmp_path / 'metrics.json'}", cwd=tmp_path)
    assert "trained model_path=" in train.stdout, train.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["auc"] > 0.95, metrics
    score = _submit(master, py_files, os.path.join(ROOT, "jobs", "score.py"),
                    "--config", os.path.join(ROOT, "conf", "score.yaml"),
                    "--model-path", str(tmp_path / "model"), "--input", data.path,
                    "--output", str(tmp_path / "scored"),
                    "--set", f"input.quarantine_path={tmp_path / 'sq'}", cwd=tmp_path)
    assert "rows_in=569 rows_out=569" in score.stdout, score.stdout
    scored = pd.read_parquet(tmp_path / "scored")
    assert len(scored) == 569 and scored["id"].is_unique

    stopped = _script("stop", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # No daemon survives, nor anything in their process groups (executors, Python workers).
    for name, proc in daemons.items():
        assert not process_alive(proc["pid"], proc["start_time"]), name
        assert process_group_members(proc["pgid"]) == [], name


def test_cluster_errors_name_the_problem(tmp_path):
    with pytest.raises(ClusterError, match="no bin/spark-class"):
        spark_home(str(tmp_path))
    with pytest.raises(ClusterError, match="no pyproject.toml"):
        build_wheel(str(tmp_path / "dist"), root=str(tmp_path))
    with pytest.raises(ClusterError, match="not a wheel"):
        zip_for_py_files(str(tmp_path / "missing.whl"))
    with pytest.raises(ClusterError, match="at least one worker"):
        StandaloneCluster(str(tmp_path), workers=0)
    with pytest.raises(ClusterError, match="cannot read the cluster state"):
        stop_from_state(str(tmp_path / "nothing.json"))


@pytest.mark.cluster
def test_a_worker_that_cannot_start_fails_start_with_its_log(tmp_path):
    cluster = StandaloneCluster(str(tmp_path / "cluster"), workers=1, memory="lots")
    with pytest.raises(ClusterError) as failure:
        cluster.start()
    message = str(failure.value)
    assert "worker-1" in message and "worker-1.log (tail)" in message, message
    assert "master.log (tail)" in message, message
    assert cluster.pids == {}  # start() stopped what it had started...
    assert _processes_in(str(tmp_path / "cluster")) == []  # ...and waited for them to end


def _processes_in(folder):
    """Live pids whose working directory is ``folder`` (the daemons run there)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == folder and process_alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found
