"""Executor loss in the middle of a fit, on a real two-executor cluster.

A subprocess starts its own SparkSession on ``local-cluster[2,1,1024]`` (two
executor JVMs), fits the same logistic regression twice, and during the second
fit a driver thread SIGKILLs one executor.  Spark starts a replacement, the lost
cached key is recomputed by lineage (its block rewritten where the recomputing
task runs), and the fit goes on.  The result must be bit-identical to the
uninterrupted fit, and no block files may remain afterwards, including the dead
executor's, which no task of that executor can ever remove.
"""

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def executor_jvms(processes):
    """{pid: executor id} of the executor JVMs among ``processes`` ({pid: (ppid, cmdline)}).

    A JVM starts a child (an executor, its Python worker) by forking and then exec'ing; in
    between, the child shows its parent's command line.  On a loaded machine that window is
    long enough to be seen: a third "executor" whose parent is executor 0, with executor 0's
    command line, one thread, named after the forking thread ("Executor task l").  It is not
    an executor: executors are started by the Worker, never by another executor, so a process
    whose parent is an executor JVM is left out.  (SCRIPT's driver runs this same source.)"""
    candidates = {pid: cmd for pid, (ppid, cmd) in processes.items()
                  if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd
                  and "--executor-id" in cmd}
    return {pid: cmd[cmd.index("--executor-id") + 1] for pid, cmd in candidates.items()
            if processes[pid][0] not in candidates}


def _assert_executors(seen, message, count=2):
    """``seen`` holds ``count`` executor JVMs with distinct ids and, when the driver reported
    them (``registered``), exactly the executors Spark has registered."""
    jvms = seen["jvms"]
    ids = sorted(jvms.values(), key=int)
    text = f"expected {count} executor JVMs, saw {json.dumps(seen, indent=1)}\n{message}"
    assert len(jvms) == count and len(set(ids)) == count, text
    if "registered" in seen:
        assert sorted(seen["registered"], key=int) == ids, text


SCRIPT = inspect.getsource(executor_jvms) + r'''
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


def process_tree():
    """{pid: (ppid, cmdline)} of every process."""
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
    return tree


def executor_processes():
    """{pid: executor id} of the executor JVMs started for this driver."""
    tree = process_tree()
    found = {}
    for pid, executor_id in executor_jvms(tree).items():
        ancestor = tree[pid][0]
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = tree.get(ancestor, (1, None))[0]
        if ancestor == os.getpid():
            found[pid] = executor_id
    return found


def registered_executors():
    """The executor ids Spark's scheduler has registered and not lost (no driver)."""
    ids = spark.sparkContext._jsc.sc().getExecutorIds()
    return sorted((ids.apply(i) for i in range(ids.size())), key=int)


def wait_for_executors(count=2, lost=None, timeout=180):
    """Wait until ``count`` executors are registered with Spark, none of them ``lost``, each
    one JVM of this driver; return what was seen last (the test asserts on it)."""
    started = time.time()
    while True:
        registered, jvms = registered_executors(), executor_processes()
        if ((len(registered) == count and lost not in registered
             and sorted(jvms.values(), key=int) == registered)
                or time.time() - started > timeout):
            return {"registered": registered, "jvms": jvms,
                    "waited": round(time.time() - started, 2)}
        time.sleep(0.1)


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

result = {"executors_at_start": wait_for_executors(2)}
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
    executors_after=wait_for_executors(2, lost=kill.get("executor_id")),
    second_iterations=iterations["count"],
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
    # Spark's shutdown noise can fill the stderr tail: keep the Python traceback (the cause)
    # whole, wherever it is, and the tail after it.
    start = run.stderr.find("Traceback (most recent call last)")
    cause = run.stderr[start:start + 6000] if start >= 0 else ""
    output = (run.stdout + "\n--- Python traceback ---\n" + cause + "\n--- stderr tail ---\n"
              + run.stderr[-4000:])
    assert run.returncode == 0, output
    line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, output
    result = json.loads(line[len("RESULT "):])
    message = json.dumps(result, indent=1) + "\n" + output

    _assert_executors(result["executors_at_start"], message)
    assert result["first_passes"] >= 15, message
    assert result["left_after_first"] == [], message

    # The kill happened mid-fit, while both blocks existed, and Spark replaced the executor.
    kill = result["kill"]
    assert kill, message
    assert 3 <= kill["at_iteration"] < result["second_iterations"], message
    assert len(kill["folders"]) == 2, message
    assert result["killed_alive"] is False, message
    assert kill["executor_id"] not in result["executors_after"]["jvms"].values(), message
    assert kill["executor_id"] not in result["executors_after"]["registered"], message
    _assert_executors(result["executors_after"], message)  # the replacement is up

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


# ----------------------------------------------------------- the driver killed mid-fit

RESUMABLE_FIT = r'''
import json, os, sys
from pyspark.sql import functions as F
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.models.linear import LogisticRegression

local_dir, checkpoint_dir, mode = sys.argv[1:4]
spark = get_spark("sparkml_aiaas-driver-kill-test", master="local-cluster[2,1,1024]",
                  conf={"spark.local.dir": local_dir, "spark.default.parallelism": "2",
                        "spark.ui.enabled": "false",
                        "spark.scheduler.minRegisteredResourcesRatio": "1.0"})
n, d = 2000, 8
df = spark.range(0, n, 1, 2).select(
    *[F.sin(F.col("id") * (j + 1) * 0.37).alias(f"x{j}") for j in range(d)],
    (F.sin(F.col("id") * 1.3) > 0).cast("double").alias("label"))
params = dict(featuresCols=[f"x{j}" for j in range(d)], optimizer="gd", maxIter=30, tol=0.0,
              regParam=0.01, numPartitions=2)


def record(model):
    return {"coefficients": [float(v) for v in model.coefficients],
            "intercept": float(model.intercept),
            "history": [float(v) for v in model.summary.objectiveHistory],
            "passes": model.summary.numPasses, "iterations": model.summary.totalIterations}


print("STARTED", flush=True)
checkpointed = LogisticRegression(checkpointDir=checkpoint_dir, checkpointInterval=2,
                                  **params).fit(df)
result = {"checkpointed": record(checkpointed),
          "left_in_checkpoint_dir": sorted(os.listdir(checkpoint_dir))}
if mode == "with-reference":
    result["reference"] = record(LogisticRegression(**params).fit(df))
print("RESULT " + json.dumps(result), flush=True)
spark.stop()
'''


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [c.decode(errors="replace") for c in f.read().split(b"\0")]
    except OSError:
        return []  # ended since it was listed


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # ended since it was listed


def _group(pgid):
    """{pid: (ppid, cmdline)} of the live members of process group ``pgid``."""
    from sparkml_aiaas.cluster import process_group_members

    return {pid: (_ppid(pid), _cmdline(pid)) for pid in process_group_members(pgid)}


def _group_executors(members):
    """What :func:`_assert_executors` checks, from a :func:`_group` snapshot: the executor
    JVMs, and every member (pid, ppid, the command line's start) for the failure message."""
    return {"jvms": executor_jvms(members),
            "members": {pid: [ppid, " ".join(cmd)[:160]] for pid, (ppid, cmd) in members.items()}}


def _kill_group_when(proc, ready, what, timeout=300):
    """Poll ``ready()`` until it is true, then SIGKILL ``proc``'s whole process group (the
    Python driver, its JVM, the executors and their Python workers: nothing can clean up).
    Returns the group's {pid: (ppid, cmdline)} at the kill; the group is gone when this
    returns."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the process ended before {what}: {proc.returncode}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
        members = _group(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    deadline = time.monotonic() + 30
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return members


def _run_to_result(command, env, cwd):
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                         start_new_session=True)
    # Spark's shutdown noise can fill the stderr tail: keep the Python traceback (the cause)
    # whole, wherever it is, and the tail after it.
    start = run.stderr.find("Traceback (most recent call last)")
    cause = run.stderr[start:start + 6000] if start >= 0 else ""
    output = (run.stdout + "\n--- Python traceback ---\n" + cause + "\n--- stderr tail ---\n"
              + run.stderr[-4000:])
    assert run.returncode == 0, output
    line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, output
    return json.loads(line[len("RESULT "):]), output


def _spark_env():
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                SPARKML_AIAAS_PROGRESS="0")


@pytest.mark.cluster
def test_killed_driver_resumes_from_its_checkpoint_and_ends_identical(tmp_path):
    script = tmp_path / "resumable_fit.py"
    script.write_text(RESUMABLE_FIT)
    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    for name in ("local-killed", "local-resumed"):
        (tmp_path / name).mkdir()

    def checkpoint_written():
        return any(f.endswith(".npz") and not f.startswith(".")
                   for f in os.listdir(checkpoint_dir))

    killed = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "local-killed"), str(checkpoint_dir),
         "killed"], cwd=tmp_path, env=_spark_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    members = _kill_group_when(killed, checkpoint_written, "the first checkpoint")
    # The group held the driver, its JVM and both executors; none of them survived.
    assert killed.pid in members, members
    _assert_executors(_group_executors(members), "the group at the kill")
    assert _group(killed.pid) == {}, _group(killed.pid)
    # It died mid-fit: the checkpoint is there, and no fit completed (a completed fit
    # removes its checkpoint).
    saved = [f for f in os.listdir(checkpoint_dir) if not f.startswith(".")]
    assert len(saved) == 1, saved

    result, output = _run_to_result(
        [sys.executable, str(script), str(tmp_path / "local-resumed"), str(checkpoint_dir),
         "with-reference"], _spark_env(), tmp_path)
    resumed, reference = result["checkpointed"], result["reference"]
    message = json.dumps(result, indent=1) + "\n" + output
    assert resumed["passes"] < reference["passes"], message  # it really resumed
    assert resumed["iterations"] == reference["iterations"] == 30, message
    assert np.array_equal(resumed["coefficients"], reference["coefficients"]), message
    assert resumed["intercept"] == reference["intercept"], message
    assert resumed["history"] == reference["history"], message
    assert result["left_in_checkpoint_dir"] == [], message  # removed once the fit completed


# ----------------------------------------------------------- a scoring run killed mid-write

KILLABLE_SCORING = r'''
import json, os, sys, time
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.models.linear import LogisticRegression
from sparkml_aiaas.scoring import score

model_path, input_path, out, local_dir, mode = sys.argv[1:6]
spark = get_spark("sparkml_aiaas-scoring-kill-test", master="local-cluster[2,1,1024]",
                  conf={"spark.local.dir": local_dir, "spark.default.parallelism": "2",
                        "spark.ui.enabled": "false",
                        "spark.scheduler.minRegisteredResourcesRatio": "1.0"})
frame = spark.read.parquet(input_path)
if mode == "killed":
    LogisticRegression(featuresCols=["x0", "x1", "x2"], regParam=0.01,
                       numPartitions=2).fit(frame).write().save(model_path)

    def slow(batches):  # a long scoring job: the first rows go out, then the task stalls
        for batch in batches:
            yield batch
            time.sleep(600)

    score(spark, model_path, frame.mapInArrow(slow, frame.schema), out, run_id="r1",
          batch_size=100)
else:
    report = score(spark, model_path, input_path, out, run_id="r1")
    print("RESULT " + json.dumps({"rows_in": report.rows_in, "rows_out": report.rows_out}),
          flush=True)
spark.stop()
'''


@pytest.mark.cluster
def test_scoring_killed_mid_write_leaves_nothing_visible_and_rerun_scores_once(tmp_path):
    import pandas as pd

    from sparkml_aiaas.models import load_predictor
    from sparkml_aiaas.scoring import STATE_FILE

    n = 3000
    rng = np.random.default_rng(3)
    pdf = pd.DataFrame(rng.normal(size=(n, 3)), columns=["x0", "x1", "x2"])
    pdf["label"] = (pdf.x0 - pdf.x1 + 0.5 * rng.normal(size=n) > 0).astype(float)
    pdf["id"] = np.arange(n)
    input_path = tmp_path / "input"
    input_path.mkdir()
    pdf.iloc[: n // 2].to_parquet(input_path / "part-0.parquet", index=False)
    pdf.iloc[n // 2:].to_parquet(input_path / "part-1.parquet", index=False)
    script = tmp_path / "killable_scoring.py"
    script.write_text(KILLABLE_SCORING)
    model_path, out = tmp_path / "model", tmp_path / "scored"
    for name in ("local-killed", "local-rerun"):
        (tmp_path / name).mkdir()

    def partial_output():
        """Part files already open in the run's hidden staging folder."""
        if not out.exists():
            return []
        return [os.path.join(root, f) for root, _, files in os.walk(out)
                for f in files if f.startswith("part-")
                and os.path.relpath(root, out).startswith(".staging-run_id=r1-")]

    killed = subprocess.Popen(
        [sys.executable, str(script), str(model_path), str(input_path), str(out),
         str(tmp_path / "local-killed"), "killed"], cwd=tmp_path, env=_spark_env(),
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    members = _kill_group_when(killed, lambda: bool(partial_output()), "the scoring write")
    _assert_executors(_group_executors(members), "the group at the kill")
    assert _group(killed.pid) == {}, _group(killed.pid)
    # Partial files are left, but only in the hidden staging folder: readers see nothing.
    assert partial_output()
    visible = [p for p in os.listdir(out) if not p.startswith((".", "_"))]
    assert visible == [] and not (out / STATE_FILE).exists(), os.listdir(out)

    result, output = _run_to_result(
        [sys.executable, str(script), str(model_path), str(input_path), str(out),
         str(tmp_path / "local-rerun"), "rerun"], _spark_env(), tmp_path)
    assert result == {"rows_in": n, "rows_out": n}, output
    # The killed attempt's staging folder is swept by the run that committed.
    assert sorted(os.listdir(out)) == sorted(["run_id=r1", STATE_FILE]), os.listdir(out)
    scored = pd.read_parquet(out).sort_values("id").reset_index(drop=True)
    assert scored["id"].tolist() == list(range(n))  # each row exactly once
    direct = load_predictor(str(model_path)).predict(pdf)
    np.testing.assert_array_equal(np.stack(scored["probability"].to_numpy()),
                                  np.stack(direct["probability"].to_numpy()))
    np.testing.assert_array_equal(scored["prediction"].to_numpy(),
                                  direct["prediction"].to_numpy())
