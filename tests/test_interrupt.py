"""Ctrl-C during a fit: the process stops promptly and leaves no block files behind.

The fit runs in a subprocess with its own SparkSession (local[2]), so that a real
SIGINT reaches PySpark's handler as it would in a terminal.  From the fourth pass
on, every task sleeps (far longer than the test waits), so a pass job that Ctrl-C
did not cancel would keep the removal job, and the process, waiting.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

SCRIPT = r'''
import glob, os, sys
from pyspark.sql import functions as F
from sparkml_aiaas.session import get_spark
from sparkml_aiaas.models.linear import LogisticRegression
import sparkml_aiaas.engine.loop as loop

local_dir = sys.argv[1]
spark = get_spark("sparkml_aiaas-interrupt-test", master="local[2]",
                  conf={"spark.local.dir": local_dir, "spark.ui.enabled": "false"})


def fit_folders():
    return sorted(glob.glob(os.path.join(local_dir, "**", "sparkml_aiaas-blocks", "*"),
                            recursive=True))


# Passes 4, 5, ... sleep on the executors: a pass that is not cancelled outlasts the test.
# "multiple": the same through fitMultiple's shared passes (one job for both maps).
multiple = sys.argv[2] == "multiple"
if multiple:
    import sparkml_aiaas.engine.batched_pass as loop
    loop.make_partition_fn = loop.make_batch_partition_fn
original = loop.make_partition_fn
made = [0]


def slow_partition_fn(*args, **kwargs):
    run = original(*args, **kwargs)
    made[0] += 1
    if made[0] < 4:
        return run

    def slow(index, key_rows):
        import time
        time.sleep(600)
        yield from run(index, key_rows)

    print("SLOW PASS", made[0], "FOLDERS", len(fit_folders()), flush=True)
    return slow


loop.make_partition_fn = slow_partition_fn
if multiple:
    loop.make_batch_partition_fn = slow_partition_fn

n, d = 2000, 10
df = spark.range(0, n, 1, 2).select(
    *[F.sin(F.col("id") * (j + 1) * 0.37).alias(f"x{j}") for j in range(d)],
    (F.sin(F.col("id") * 1.3) > 0).cast("double").alias("label"))
lr = LogisticRegression(featuresCols=[f"x{j}" for j in range(d)], optimizer="gd",
                        maxIter=1000, tol=0.0, numPartitions=2)
try:
    if multiple:
        dict(lr.fitMultiple(df, [{lr.regParam: 0.0}, {lr.regParam: 0.1}]))
    else:
        lr.fit(df)
except KeyboardInterrupt:
    from tqdm import tqdm
    print("INTERRUPTED", flush=True)
    print("OPEN_BARS", len(getattr(tqdm, "_instances", ())), flush=True)
    # Spark deletes its local dirs when the process exits, so look now.
    print("FOLDERS_AFTER", fit_folders(), flush=True)
    raise
print("FIT FINISHED", flush=True)
'''


def _read_lines(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.cluster
@pytest.mark.parametrize("mode", ["fit", "multiple"])
def test_ctrl_c_stops_the_fit_promptly_and_removes_its_blocks(tmp_path, mode):
    script = tmp_path / "interrupt_fit.py"
    script.write_text(SCRIPT)
    local_dir = tmp_path / "spark-local"
    local_dir.mkdir()
    stderr_path = tmp_path / "stderr.txt"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARKML_AIAAS_PROGRESS="1")  # the progress bar on, to see that it is closed
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(script), str(local_dir), mode], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    stdout = []

    def output() -> str:
        return "".join(stdout) + "\n--- stderr ---\n" + stderr_path.read_text()[-6000:]

    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith("SLOW PASS") for line in stdout):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, "the fit ended before its slow pass:\n" + output()
            stdout.append(line)
        time.sleep(3)  # the slow pass's tasks are running now
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the process did not stop within 90 s of SIGINT:\n" + output())
        stopped_after = time.monotonic() - interrupted
        print(f"stopped {stopped_after:.1f} s after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            stdout.append(line)

    text = "".join(stdout)
    assert proc.returncode != 0, output()
    assert "KeyboardInterrupt" in stderr_path.read_text(), output()
    assert "FIT FINISHED" not in text, output()
    assert "INTERRUPTED" in text, output()
    slow = next(line for line in stdout if line.startswith("SLOW PASS"))
    assert slow.split()[-1] == "1", output()  # the fit's block folder existed
    assert "OPEN_BARS 0\n" in text, output()  # the progress bar was closed
    assert "FOLDERS_AFTER []\n" in text, output()  # cleanup ran after the cancellation
    # Cancelled tasks' Python workers are killed after spark.python.task.killTimeout (2 s).
    assert stopped_after < 60, output()
