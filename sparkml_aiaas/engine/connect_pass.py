"""The engine's jobs on Spark Connect: DataFrame operations in place of RDDs and broadcasts.

A classic session runs a pass as ``keys RDD → mapPartitionsWithIndex → ordered tree
reduce`` with the parameters broadcast.  Spark Connect has neither RDDs nor broadcasts,
so there:

* the keys are a cached **DataFrame** (the build's ``mapInArrow`` output): a pass is
  ``keys.mapInArrow(task)``, and cache locality sends each task to the executor that
  computed its key — and so wrote its block files — as on the classic path;
* the parameters travel **inside the plan**, pickled with the task function
  (:func:`check_plan_size` refuses a payload past the server's message limit);
* each task returns its partial sums as **one row** ``(partition, pickled result)``;
  the client merges them with :func:`~sparkml_aiaas.engine.tree_reduce.merge_tree_ordered`,
  the same grouping in the same order as the classic tree reduce, so the same blocks
  give bit-identical sums;
* a task whose block files are not where it runs reports its partition missing, and
  :func:`rebuild_and_run` rewrites those partitions from the source in one job and runs
  the pass on them there.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import List, Optional, Sequence, Tuple

RESULT_SCHEMA = "partition INT, result BINARY"

#: Spark Connect's default ``spark.connect.grpc.maxInboundMessageSize`` (128 MiB): a plan
#: (task function and the parameters pickled in it) larger than this is refused by the server.
DEFAULT_MESSAGE_LIMIT = 128 * 1024 * 1024
#: Room kept for the rest of the plan (the keys' lineage, the ingest's expressions).
PLAN_HEADROOM = 4 * 1024 * 1024


def _result_batch(index: int, value):
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(
        {"partition": [int(index)], "result": [pickle.dumps(value, protocol=5)]},
        schema=pa.schema([("partition", pa.int32()), ("result", pa.binary())]))


def _key_rows(batches) -> List[dict]:
    return [row for batch in batches for row in batch.to_pylist()]


def pass_task(partition_fn):
    """``partition_fn(index, key_rows)`` (the classic pass's function, unchanged) as a
    ``mapInArrow`` function over the keys DataFrame."""

    def task(batches):
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        for out_index, value in partition_fn(index, _key_rows(batches)):
            yield _result_batch(out_index, value)

    return task


@contextlib.contextmanager
def single_stream(spark):
    """Run a pass's ``collect`` as one plain ``ExecutePlan`` stream, not a reattachable one.

    Reattachable execution (the client's default) lets a long query survive a dropped
    stream, at 25-45 ms more per operation (measured on a local server: a trivial
    ``collect`` 84 → 38 ms), which is most of a short pass's overhead.  A pass returns
    a few KB and is idempotent, so the client's retry policy re-running it whole is
    enough; :func:`collect_partitions` drops the duplicates a retry could deliver.
    """
    client = getattr(spark, "client", None)
    before = getattr(client, "_use_reattachable_execute", None)
    if before is None:  # another client implementation: leave it as it is
        yield
        return
    client._use_reattachable_execute = False
    try:
        yield
    finally:
        client._use_reattachable_execute = before


def collect_partitions(frame) -> List[Tuple[int, object]]:
    """Collect ``frame``'s ``(partition, result)`` rows, unpickled, one per partition (a
    partition's result is a pure function of its block and the plan, so a duplicate that a
    retried stream delivered is the same value and is dropped)."""
    with single_stream(frame.sparkSession):
        rows = frame.collect()
    pairs = {}
    for row in rows:
        pairs.setdefault(int(row["partition"]), row["result"])
    return [(index, pickle.loads(result)) for index, result in sorted(pairs.items())]


def run_partitions(keys, partition_fn) -> List[Tuple[int, object]]:
    """One job of ``partition_fn`` over the cached keys DataFrame: ``(index, value)`` pairs."""
    return collect_partitions(keys.mapInArrow(pass_task(partition_fn), RESULT_SCHEMA))


def rebuild_and_run(frame, writer, partitions: Sequence[int], partition_fn):
    """Rewrite ``partitions``' blocks from ``frame`` where their tasks now run (``writer``
    is the build's ``mapInArrow`` function) and run ``partition_fn`` on them, in one job.
    The other partitions' tasks stop at once without reading their input."""
    wanted = frozenset(int(p) for p in partitions)

    def task(batches):
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        if index not in wanted:
            return
        keys = _key_rows(writer(batches))
        for out_index, value in partition_fn(index, keys):
            yield _result_batch(out_index, value)

    return collect_partitions(frame.mapInArrow(task, RESULT_SCHEMA))


#: message_limit per Connect session id: the server reads its limit once, at start.
_LIMITS: dict = {}


def message_limit(spark) -> int:
    """The smaller of the server's inbound gRPC message limit and this client's send limit
    (the Python client refuses to send more than its channel allows, 128 MiB by default)."""
    session_id = getattr(spark, "session_id", None)
    if session_id is not None and session_id in _LIMITS:
        return _LIMITS[session_id]
    limit = _message_limit(spark)
    if session_id is not None:
        _LIMITS[session_id] = limit
    return limit


def _message_limit(spark) -> int:
    try:
        server = _parse_bytes(spark.conf.get("spark.connect.grpc.maxInboundMessageSize"))
    except Exception:
        server = None
    client = None
    try:
        options = dict(spark.client._builder._channel_options or [])
        client = int(options.get("grpc.max_send_message_length", 0)) or None
    except (AttributeError, TypeError, ValueError):
        pass
    return min(server or DEFAULT_MESSAGE_LIMIT, client or DEFAULT_MESSAGE_LIMIT)


def _parse_bytes(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    text = str(text).strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "b": 1}
    scale = 1
    for suffix in ("kb", "mb", "gb", "k", "m", "g", "b"):
        if text.endswith(suffix):
            scale = units[suffix[0]]
            text = text[: -len(suffix)]
            break
    try:
        return int(float(text) * scale)
    except ValueError:
        return None


def check_plan_size(spark, value, what: str,
                    instead: str = "or train on a classic session, where parameters are "
                                   "broadcast") -> None:
    """Refuse, with the sizes, a payload too large to travel inside a Connect plan;
    ``instead`` ends the message with the caller's other ways out."""
    size = len(pickle.dumps(value, protocol=5))
    limit = message_limit(spark) - PLAN_HEADROOM
    if size > limit:
        raise ValueError(
            f"{what} is {size / 2**20:.1f} MiB pickled, more than the {limit / 2**20:.1f} MiB a "
            "Spark Connect plan can carry (the smaller of the server's "
            "spark.connect.grpc.maxInboundMessageSize and the client's "
            "grpc.max_send_message_length, less 4 MiB for the rest of the plan): raise both, "
            f"with a server driver heap of several times the payload, {instead}")
