"""Run a small Python function where the data lives: one Spark task, result back as bytes.

On a classic session the driver has the JVM's Hadoop filesystem API at hand; a Spark
Connect client has none, and its own disk is not the cluster's.  Code that must look at
or change files the server sees (a CSV header, a data fingerprint, a sink's commit)
runs its Python there instead: :func:`run_on_server` ships ``fn`` and its arguments in
the plan of a one-partition ``mapInArrow`` job and returns ``fn``'s (pickled) result.
The task runs on an executor, so ``fn`` sees what executors see: local paths on a
single-machine server, FUSE mounts (``/Volumes``, ``/dbfs`` on Databricks), and the
object stores ``pyarrow.fs`` reaches with the executor's credentials.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

RESULT_SCHEMA = "result BINARY"


def run_on_server(spark, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in one Spark task; its result (picklable), or its exception re-raised
    here with the same type and message."""

    def task(batches):
        import pyarrow as pa

        for _ in batches:
            pass
        try:
            outcome = ("ok", fn(*args))
        except Exception as exc:  # travels back; raised on the client
            outcome = ("error", exc)
        try:
            payload = pickle.dumps(outcome, protocol=5)
        except Exception as exc:  # an exception that does not pickle
            payload = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        yield pa.RecordBatch.from_pydict({"result": [payload]},
                                         schema=pa.schema([("result", pa.binary())]))

    rows = spark.range(0, 1, 1, 1).mapInArrow(task, RESULT_SCHEMA).collect()
    status, value = pickle.loads(rows[0]["result"])
    if status == "error":
        raise value
    return value


def run_where_paths_are(spark, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` where ``spark``'s paths name files: here for a classic session (or
    None: no Spark), in one task on the server for Spark Connect (:func:`run_on_server`),
    whose paths are the cluster's, not the client's disk."""
    from sparkml_aiaas.spark_env import is_connect

    if spark is not None and is_connect(spark):
        return run_on_server(spark, fn, *args)
    return fn(*args)
