"""Executor loss in the middle of a fit, on a real two-executor cluster.

A subprocess starts its own SparkSession on ``local-cluster[2,1,1024]`` (two
executor JVMs), fits the same logistic regression twice, and during the second
fit a driver thread SIGKILLs one executor.  Spark starts a replacement, the lost
cached key is recomputed by lineage (its block rewritten where the recomputing
task runs), and the fit goes on.  The result must be bit-identical to the
uninterrupted fit, and no block files may remain afterwards, including the dead
executor's, which no task of that executor can ever remove.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r'''
import glob, json, logging, os, signal, sys, threading, time
from pyspark.sql import functions as F
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.engine.blocks import ResidentBlocks
from sparkml_aiaas.models.linear import LogisticRegression

local_dir = sys.argv[1]
spark = get_spark("sparkml_aiaas-executor-loss-test", master="local-cluster[2,1,1024]",
                  conf={"spark.local.dir": local_dir, "spark.task.maxFailures": "4",
                        "spark.default.parallelism": "2", "spark.ui.enabled": "false"})


def block_folders():
    return sorted(glob.glob(os.path.join(local_dir, "**", "sparkml_aiaas-blocks", "*", "*"),
                            recursive=True))


def executor_processes():
    """{pid: executor id} of the CoarseGrainedExecutorBackend JVMs started for this driver."""
    tree = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = [c.decode(errors="replace") for c in f.read().split(b"\0")]
        except (OSError, IndexError, ValueError):
            continue
        tree[int(entry)] = (ppid, cmd)
    found = {}
    for pid, (ppid, cmd) in tree.items():
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" not in cmd:
            continue
        ancestor = ppid
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = tree.get(ancestor, (1, None))[0]
        if ancestor == os.getpid():
            found[pid] = cmd[cmd.index("--executor-id") + 1]
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# Iterations of the current fit, from the training log; the killer waits for the third.
iterations = {"count": 0}
third_iteration = threading.Event()


class IterationCounter(logging.Handler):
    def emit(self, record):
        if " iter " in record.getMessage():
            iterations["count"] += 1
            if iterations["count"] >= 3:
                third_iteration.set()


train_log = logging.getLogger("sparkml_aiaas.train")
train_log.setLevel(logging.INFO)
train_log.addHandler(IterationCounter())

# The block folders just before each cleanup (the dead executor's is still there).
before_cleanup = []
original_cleanup = ResidentBlocks.cleanup


def recording_cleanup(self):
    before_cleanup.append(block_folders())
    original_cleanup(self)


ResidentBlocks.cleanup = recording_cleanup

n, d = 3000, 10
df = spark.range(0, n, 1, 2).select(
    *[F.sin(F.col("id") * (j + 1) * 0.37).alias(f"x{j}") for j in range(d)],
    (F.sin(F.col("id") * 1.3) > 0).cast("double").alias("label"))
lr = LogisticRegression(featuresCols=[f"x{j}" for j in range(d)], optimizer="gd", maxIter=15,
                        tol=0.0, numPartitions=2)

result = {"executors_at_start": executor_processes()}
started = time.time()
first = lr.fit(df)
result["first_seconds"] = time.time() - started
result["first_passes"] = first.summary.numPasses
result["left_after_first"] = block_folders()

iterations["count"] = 0
third_iteration.clear()
kill = {}


def killer():
    third_iteration.wait()
    executors = executor_processes()
    pid = min(executors, key=lambda p: int(executors[p]))
    kill.update(pid=pid, executor_id=executors[pid], at_iteration=iterations["count"],
                folders=block_folders())
    os.kill(pid, signal.SIGKILL)


threading.Thread(target=killer, daemon=True).start()
started = time.time()
second = lr.fit(df)
result["second_seconds"] = time.time() - started
result.update(
    kill=kill, killed_alive=alive(kill["pid"]) if kill else None,
    executors_after=executor_processes(), second_iterations=iterations["count"],
    second_passes=second.summary.numPasses, rebuilt=second.summary.rebuiltPartitions,
    before_cleanup=before_cleanup[-1], left_after_second=block_folders(),
    first=[float(v) for v in first.coefficients] + [first.intercept],
    second=[float(v) for v in second.coefficients] + [second.intercept],
)
print("RESULT " + json.dumps(result), flush=True)
spark.stop()
'''


@pytest.mark.cluster
def test_fit_survives_a_killed_executor_bit_identically_and_cleans_up(tmp_path):
    script = tmp_path / "executor_loss_fit.py"
    script.write_text(SCRIPT)
    local_dir = tmp_path / "spark-local"
    local_dir.mkdir()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARKML_AIAAS_PROGRESS="0")
    run = subprocess.run([sys.executable, str(script), str(local_dir)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    output = run.stdout + "\n--- stderr ---\n" + run.stderr[-8000:]
    assert run.returncode == 0, output
    line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, output
    result = json.loads(line[len("RESULT "):])
    message = json.dumps(result, indent=1) + "\n" + output

    assert len(result["executors_at_start"]) == 2, message
    assert result["first_passes"] >= 15, message
    assert result["left_after_first"] == [], message

    # The kill happened mid-fit, while both blocks existed, and Spark replaced the executor.
    kill = result["kill"]
    assert kill, message
    assert 3 <= kill["at_iteration"] < result["second_iterations"], message
    assert len(kill["folders"]) == 2, message
    assert result["killed_alive"] is False, message
    assert kill["executor_id"] not in result["executors_after"].values(), message
    assert len(result["executors_after"]) == 2, message  # the replacement is up

    # The lost block was rewritten elsewhere; the dead executor's copy was still on disk.
    assert set(kill["folders"]) <= set(result["before_cleanup"]), message
    assert len(result["before_cleanup"]) >= 3, message

    # Bit-identical to the uninterrupted fit: the ordered reduce does not depend on where
    # or when the tasks ran.
    assert np.array_equal(np.array(result["first"]), np.array(result["second"])), message
    assert result["second_passes"] == result["first_passes"], message

    # Cleanup removed every folder, the dead executor's included.
    assert result["left_after_second"] == [], message
    print(f"first fit {result['first_seconds']:.1f} s, second {result['second_seconds']:.1f} s, "
          f"{result['second_passes']} passes, killed executor {kill['executor_id']} at "
          f"iteration {kill['at_iteration']}, rebuilt partitions {result['rebuilt']}")
