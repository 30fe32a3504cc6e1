"""Preconditions of a barrier-mode Spark job, checked before it is submitted.

A barrier stage (``rdd.barrier().mapPartitions``, what ``xgboost.spark`` trains
with) launches all its tasks at once or not at all.  If the cluster has fewer
free task slots than the stage has tasks, Spark does not fail: it waits
(``spark.scheduler.barrier.maxConcurrentTasksCheck``) and then aborts with an
error that does not say what to change.  With dynamic allocation Spark refuses
barrier stages outright, deep inside the job.  :func:`check_barrier_preconditions`
does both checks up front and raises :class:`ConfigError` with the numbers
and the fix.

The slot arithmetic (:func:`total_task_slots`) is plain Python so it can be
tested without a cluster.  Spark Connect has no barrier mode reachable from here
(no RDDs, no ``sparkContext``): both checks refuse such a session with one clear
:class:`ConfigError` instead of an ``AttributeError``.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.spark_env import require_classic

#: What needs barrier mode, for :func:`~sparkml_aiaas.spark_env.require_classic`'s message.
_BARRIER_JOB = "a barrier-mode Spark job (distributed XGBoost)"

# fullmatch, [0-9] (ASCII): Spark's own master patterns take nothing else.
_LOCAL = re.compile(r"local(?:\[(\*|[0-9]+)(?:\s*,\s*[0-9]+)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*([0-9]+)\s*,\s*([0-9]+)\s*,\s*[0-9]+\s*\]")


def _truthy(value: Optional[str]) -> bool:
    return str(value).strip().lower() == "true" if value is not None else False


def total_task_slots(master: str, get_conf: Callable[[str, Optional[str]], Optional[str]],
                     num_executors: int = 0, default_parallelism: int = 0) -> int:
    """Tasks the application can run at once: cores / ``spark.task.cpus``.

    Parameters
    ----------
    master : str
        ``local``, ``local[N]``, ``local[*]``, ``local[N, F]``, ``local-cluster[n, c, m]``
        or a cluster URL.
    get_conf : callable
        ``get_conf(key, default)`` (``SparkConf.get``).
    num_executors : int
        Registered executors (cluster masters only).
    default_parallelism : int
        ``sc.defaultParallelism``: the fallback for the total core count when
        ``spark.executor.cores`` is not set (Spark's default parallelism on a
        cluster is the executors' total core count).
    """
    task_cpus = max(int(get_conf("spark.task.cpus", "1") or 1), 1)
    local = _LOCAL.fullmatch(master.strip())
    if local:
        inner = local.group(1)
        cores = (os.cpu_count() or 1) if inner == "*" else int(inner or 1)
    else:
        cluster = _LOCAL_CLUSTER.fullmatch(master.strip())
        if cluster:
            cores = int(cluster.group(1)) * int(cluster.group(2))
        else:
            executor_cores = get_conf("spark.executor.cores", None)
            if executor_cores and num_executors > 0:
                cores = num_executors * int(executor_cores)
            else:
                cores = int(default_parallelism)
    return cores // task_cpus


def _running_tasks(sc) -> int:
    """Tasks running now in this application (other jobs compete for the slots)."""
    tracker = sc.statusTracker()
    running = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            running += int(info.numActiveTasks)
    return running


def _executor_count(sc) -> int:
    try:
        # The block managers known to the driver, minus the driver's own.
        return max(int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1, 0)
    except Exception:  # no JVM access (e.g. Spark Connect): fall back to defaultParallelism
        return 0


def free_task_slots(spark) -> int:
    """Task slots of ``spark``'s application not taken by running tasks."""
    require_classic(spark, _BARRIER_JOB)
    sc = spark.sparkContext
    conf = sc.getConf()
    total = total_task_slots(sc.master, conf.get, _executor_count(sc), sc.defaultParallelism)
    return max(total - _running_tasks(sc), 0)


def check_barrier_preconditions(spark, num_workers: int) -> int:
    """Refuse, with the numbers and the fix, a barrier job of ``num_workers`` tasks
    that could not start; return the free task slots.

    Raises
    ------
    ConfigError
        ``spark.dynamicAllocation.enabled`` is true (Spark does not run barrier
        stages with dynamic allocation), ``num_workers`` < 1, or fewer free task
        slots than ``num_workers``, or a Spark Connect session.
    """
    require_classic(spark, _BARRIER_JOB)
    sc = spark.sparkContext
    conf = sc.getConf()
    if _truthy(conf.get("spark.dynamicAllocation.enabled", "false")):
        raise ConfigError(
            "distributed XGBoost trains in a barrier stage, which Spark does not run with "
            "dynamic allocation (spark.dynamicAllocation.enabled=true): set "
            "spark.dynamicAllocation.enabled=false for this application (on Databricks: "
            "a fixed-size cluster, autoscaling off)")
    if int(num_workers) < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    executors = _executor_count(sc)
    task_cpus = max(int(conf.get("spark.task.cpus", "1") or 1), 1)
    total = total_task_slots(sc.master, conf.get, executors, sc.defaultParallelism)
    running = _running_tasks(sc)
    free = max(total - running, 0)
    if num_workers > free:
        raise ConfigError(
            f"distributed XGBoost needs {num_workers} task slots at once (barrier mode: all "
            f"workers start together), but only {free} are free: {total} slot(s) in total "
            f"(master {sc.master!r}, {executors or 'local'} executor(s), spark.task.cpus="
            f"{task_cpus}) minus {running} running task(s). Set num_workers <= {free} "
            f"(numWorkers, or 0 for all free slots), or add executors/cores, or wait for the "
            f"running jobs to finish")
    return free
