"""What a SparkSession can do: classic (a JVM driver in this process) or Spark Connect.

A Spark Connect session (Databricks serverless and standard access mode, ``sc://``
remotes) has no ``sparkContext``: no RDDs, broadcasts, accumulators, job groups or
py4j.  Every place the package needs one of those asks this module first, so the
differences between the two kinds of session are declared once.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

from sparkml_aiaas.errors import ConfigError


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (no JVM, no ``sparkContext`` here)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def require_classic(spark, what: str, instead: str = "") -> None:
    """Raise one clear :class:`ConfigError` when ``what`` cannot run on Spark Connect."""
    if is_connect(spark):
        hint = f"; {instead}" if instead else ""
        raise ConfigError(f"{what} needs a classic Spark session (a driver with a JVM), "
                          f"not Spark Connect{hint}")


def app_id(spark) -> str:
    """The application id (a random id on a Connect server that will not say)."""
    if not is_connect(spark):
        return spark.sparkContext.applicationId
    try:
        return spark.conf.get("spark.app.id")
    except Exception:  # pragma: no cover - a server that hides its conf
        return f"connect-{uuid.uuid4().hex[:8]}"


def default_parallelism(spark) -> int:
    """Task slots Spark plans for (``spark.default.parallelism``, else what ``range`` uses)."""
    if not is_connect(spark):
        return max(int(spark.sparkContext.defaultParallelism), 1)
    cached = getattr(spark, "_sparkml_aiaas_parallelism", None)
    if cached:
        return cached
    try:
        value = int(spark.conf.get("spark.default.parallelism"))
    except Exception:
        # Unset on the server: spark.range without numPartitions splits into
        # defaultParallelism slices, each non-empty for 1M rows.
        from pyspark.sql import functions as F

        row = (spark.range(0, 1 << 20).select(F.spark_partition_id().alias("p"))
               .agg(F.max("p").alias("p")).first())
        value = int(row["p"]) + 1
    value = max(value, 1)
    spark._sparkml_aiaas_parallelism = value
    return value


def num_partitions(df) -> int:
    """Partitions of ``df``.  On Connect there is no ``df.rdd``: one job counts the
    partitions that hold rows (a scan with no columns read where the source allows);
    trailing empty partitions are not seen, which only matters if they decide a
    coalesce-or-shuffle choice (see :func:`engine.blocks._deterministic_partitions`)."""
    if not is_connect(df.sparkSession):
        return df.rdd.getNumPartitions()
    from pyspark.sql import functions as F

    row = df.select(F.spark_partition_id().alias("p")).agg(F.max("p").alias("p")).first()
    return 0 if row is None or row["p"] is None else int(row["p"]) + 1


@contextlib.contextmanager
def job_description(spark, text: str) -> Iterator[None]:
    """Name the jobs started inside the block in the Spark UI (classic sessions only:
    Connect has no job descriptions; its operations carry tags instead)."""
    if is_connect(spark):
        yield
        return
    sc = spark.sparkContext
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setJobDescription(None)


def add_job_tag(spark, tag: str) -> None:
    """Tag every job (classic) or operation (Connect) this thread starts from now on."""
    if is_connect(spark):
        spark.addTag(tag)
    else:
        spark.sparkContext.addJobTag(tag)


def cancel_job_tag(spark, tag: str) -> None:
    """Cancel the running jobs tagged ``tag`` and stop tagging new ones with it."""
    if is_connect(spark):
        spark.interruptTag(tag)
        spark.removeTag(tag)
    else:
        sc = spark.sparkContext
        sc.cancelJobsWithTag(tag)
        sc.removeJobTag(tag)


class Inline:
    """A broadcast stand-in for Connect: the value travels inside the plan (pickled with
    the task function), so ``.value`` reads it where a broadcast's would."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def destroy(self) -> None:
        pass


def ship(spark, value):
    """Send ``value`` to the tasks: a broadcast on a classic session, inside the plan on
    Connect (see :data:`sparkml_aiaas.engine.connect_pass.PLAN_PAYLOAD_LIMIT`).
    Either way the handle has ``.value`` and ``.destroy()``."""
    if is_connect(spark):
        return Inline(value)
    return spark.sparkContext.broadcast(value)


def describe_session(spark) -> str:
    """Where jobs run, for a banner: the master URL, or ``Spark Connect sc://host:port``
    (never the token or other URL parameters)."""
    if not is_connect(spark):
        return spark.sparkContext.master
    try:
        endpoint = spark.client._builder.endpoint  # host:port, without ;token=…
    except AttributeError:  # pragma: no cover - another client implementation
        endpoint = "(remote)"
    return f"Spark Connect sc://{endpoint}"
