"""The ingest job: read a source against its declared schema, write accepted and rejected rows.

``sparkml-aiaas ingest --config conf/ingest.yaml`` and ``spark-submit
jobs/ingest.py`` are thin shells over :func:`run_ingest`.  One run:

1. :func:`sparkml_aiaas.data.ingest` reads and checks every record (PII
   columns hashed or dropped, schema drift handled as configured);
2. the rejected rows, with ``_ingested_at`` and ``_run_id`` added, go to the
   quarantine sink (when one is configured), written *first* so that a run
   that fails on ``max_reject_fraction`` still shows why;
3. the rejected fraction is checked: above ``max_reject_fraction`` the job
   fails and writes no accepted row;
4. the accepted rows go to the output sink: Parquet atomically (overwrite)
   or as added files (append); Delta as one commit, whose version is reported;
5. a JSON report (counts, reasons, source files and fingerprint, schema,
   sinks, Delta versions, run id, timestamps) is written atomically when
   ``report_path`` is set, also when the run fails.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import posixpath
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["IngestReport", "run_ingest", "source_files", "fingerprint_files"]

logger = logging.getLogger("sparkml_aiaas.ingest")

#: Quarantine columns added to ingest's ``_raw, _reason, _source_file, _line, _byte_offset,
#: _byte_length``.
QUARANTINE_EXTRA_COLUMNS = ("_ingested_at", "_run_id")
#: Rejected rows per quarantine file, roughly (few, readable files).
_ROWS_PER_QUARANTINE_FILE = 1_000_000


@dataclass
class IngestReport:
    """What one ingest run read and wrote (also the JSON report's content).

    Attributes
    ----------
    run_id : str
        Also in the quarantine's ``_run_id`` column.
    status : {"succeeded", "failed"}
    counts : dict
        ``read``, ``accepted``, ``rejected`` (``read == accepted + rejected``)
        and ``blank`` (blank lines, not records).
    reasons : dict
        Rejected rows per reason code, most frequent first.
    source : dict
        ``path``, ``format``, ``files`` (the files read), ``fingerprint``.
    output, quarantine : dict or None
        ``path``, ``format``, ``mode``, ``rows``, ``version`` (Delta; None
        for Parquet), ``engine``; ``output`` is None when nothing was written
        (a failed run), ``quarantine`` when none is configured.
    """

    run_id: str
    status: str
    started_at: str
    finished_at: str
    seconds: float
    counts: Dict[str, int]
    reasons: Dict[str, int]
    source: Dict[str, Any]
    schema: str
    output_schema: Optional[str]
    output: Optional[Dict[str, Any]]
    quarantine: Optional[Dict[str, Any]]
    max_reject_fraction: Optional[float] = None
    on_schema_drift: str = "error"
    non_finite: Any = None
    pii: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def delta_versions(self) -> Dict[str, Optional[int]]:
        """Committed Delta versions of the sinks (``output``, ``quarantine``)."""
        return {name: sink.get("version") for name, sink in
                (("output", self.output), ("quarantine", self.quarantine))
                if sink is not None and sink.get("format") == "delta"}

    def to_json(self) -> Dict[str, Any]:
        payload = asdict(self)
        payload["delta_versions"] = self.delta_versions
        return payload

    def summary_line(self) -> str:
        """One line for schedulers and logs, like the train and score jobs print."""
        rate = self.counts.get("read", 0) / self.seconds if self.seconds > 0 else float("nan")
        top = ",".join(f"{code}:{n}" for code, n in list(self.reasons.items())[:3]) or "-"
        parts = [
            f"ingested read={self.counts.get('read', 0)}",
            f"accepted={self.counts.get('accepted', 0)}",
            f"rejected={self.counts.get('rejected', 0)}",
            f"blank={self.counts.get('blank', 0)}",
            f"top_reasons={top}",
            f"output={_sink_text(self.output)}",
            f"quarantine={_sink_text(self.quarantine)}"
            if self.quarantine is not None else "quarantine=none(rejected_rows_only_counted)",
            f"seconds={self.seconds:.1f}",
            f"rows_per_s={rate:,.0f}",
            f"run_id={self.run_id}",
        ]
        return " ".join(parts)


def _sink_text(sink: Optional[Dict[str, Any]]) -> str:
    if sink is None:
        return "none"
    if sink.get("written") is False:
        return f"{sink['path']}(nothing_to_append)"
    if sink.get("format") == "delta":
        return f"{sink['path']}@v{sink.get('version')}"
    return sink["path"]


def _absolute(path: str) -> str:
    """Local paths made absolute for the report; URIs (``s3a://``, ``file:``) as given."""
    return path if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path) else os.path.abspath(path)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def run_ingest(spark, config) -> IngestReport:
    """Run the ingest job described by ``config`` (an :class:`~sparkml_aiaas.config.IngestJobConfig`).

    Returns
    -------
    IngestReport

    Raises
    ------
    ConfigError
        A bad schema, option or PII policy (e.g. its key is not available).
    InputNotFoundError
        The source does not exist.
    DataValidationError
        More than ``input.max_reject_fraction`` of the records are rejected
        (the message gives the counts and top reasons; the quarantine is
        written, no accepted row is), or the data does not fit the schema or
        the sink's table.
    """
    from sparkml_aiaas.data.ingest import DEFAULT_NON_FINITE, ingest
    from sparkml_aiaas.data.schema import parse_schema, to_ddl

    started_clock = time.perf_counter()
    started_at = _now()
    run_id = uuid.uuid4().hex
    settings = config.input
    declared = parse_schema(settings.schema_)
    policy = config.pii_policy()
    if policy is not None:
        policy.key()  # a missing or short key fails now, before any data is read

    # The two options are passed only when set, so their defaults stay ingest()'s own.
    extra: Dict[str, Any] = {}
    if policy is not None:
        extra["pii"] = policy
    if settings.on_schema_drift != "error":
        extra["on_schema_drift"] = settings.on_schema_drift
    if settings.non_finite is not None:
        extra["non_finite"] = settings.non_finite
    report = IngestReport(
        run_id=run_id, status="failed", started_at=started_at.isoformat(), finished_at="",
        seconds=0.0, counts={}, reasons={},
        source={"path": settings.path, "format": settings.format},
        schema=to_ddl(declared.struct), output_schema=None, output=None, quarantine=None,
        max_reject_fraction=settings.max_reject_fraction, on_schema_drift=settings.on_schema_drift,
        non_finite=DEFAULT_NON_FINITE if settings.non_finite is None else settings.non_finite,
        pii=dict(policy.columns) if policy is not None else None,
    )
    result = None
    try:
        # No quarantine_path / max_reject_fraction here: the job writes the
        # quarantine to its configured sink first, then checks the fraction itself.
        options = dict(settings.options)
        if settings.format == "delta" and options.get("version") is None:
            # Pin the latest version before reading, so the version recorded is the one read.
            from sparkml_aiaas.data.delta import table_version

            options["version"] = table_version(spark, settings.path)
        result = ingest(spark, settings.path, declared, format=settings.format,
                        options=options, **extra)
        report.counts, report.reasons = dict(result.counts), dict(result.reasons)
        if settings.format == "delta":
            # The table's active files at the version read, not every file in its folder.
            from sparkml_aiaas.data.delta import read_table

            version = options["version"]
            files = sorted(read_table(spark, settings.path, version=version).inputFiles())
            report.source["delta_version"] = version
        else:
            files = source_files(spark, settings.path)
        report.source.update({"files": files, "fingerprint": fingerprint_files(spark, files)})
        logger.info("ingest    read %d, accepted %d, rejected %d from %s", result.counts["read"],
                    result.counts["accepted"], result.counts["rejected"], settings.path)
        if config.quarantine is not None:
            report.quarantine = _write_quarantine(result, config.quarantine, run_id, started_at)
        elif result.counts["rejected"]:
            report.warnings.append(
                f"{result.counts['rejected']} rejected rows were counted but not kept: "
                "configure a quarantine sink to keep them")
        _check_reject_fraction(result.counts, result.reasons, settings.max_reject_fraction,
                               config.quarantine)
        report.output_schema = result.accepted.schema.simpleString()
        report.output = _write_output(result.accepted, config.output, result.counts["accepted"])
        report.status = "succeeded"
    except Exception as exc:
        # The report of a failed run says why (a schedulers' log may keep only the file).
        report.error = str(exc)
        raise
    finally:
        if result is not None:
            result.unpersist()
        report.finished_at = _now().isoformat()
        report.seconds = time.perf_counter() - started_clock
        if config.report_path:
            from sparkml_aiaas.pipeline import write_json_atomically

            write_json_atomically(config.report_path, report.to_json())
    for warning in report.warnings:
        logger.warning("warning   %s", warning)
    return report


# ------------------------------------------------------------------- sinks


def _write_quarantine(result, sink, run_id: str, started_at: _dt.datetime) -> Dict[str, Any]:
    from pyspark.sql import functions as F

    rejected_count = result.counts["rejected"]
    mode = sink.effective_mode
    entry = {"path": _absolute(sink.path), "format": sink.format, "mode": mode,
             "rows": rejected_count, "version": None, "engine": None, "written": False}
    # Appending nothing would add an empty commit per clean run; an overwrite
    # is always written so the sink never shows an earlier run's rejects as current.
    if rejected_count == 0 and mode == "append":
        return entry
    frame = result.rejected.select(
        "_raw", "_reason", "_source_file", "_line", "_byte_offset", "_byte_length",
        # One instant for the whole run (not current_timestamp() per task).
        _timestamp_literal(started_at).alias("_ingested_at"),
        F.lit(run_id).alias("_run_id"),
    ).coalesce(rejected_count // _ROWS_PER_QUARANTINE_FILE + 1)
    entry.update(_write_sink(frame, sink.path, sink.format, mode))
    entry["written"] = True
    logger.info("quarantine %d rejected rows → %s", rejected_count, _sink_text(entry))
    return entry


def _timestamp_literal(moment: _dt.datetime):
    from pyspark.sql import functions as F

    # Epoch microseconds: independent of the session time zone, and allowed under ANSI casts.
    micros = int(round(moment.timestamp() * 1_000_000))
    return F.timestamp_micros(F.lit(micros))


def _write_output(accepted, sink, rows: int) -> Dict[str, Any]:
    entry = {"path": _absolute(sink.path), "format": sink.format, "mode": sink.mode,
             "rows": rows}
    if sink.keys:
        entry["keys"] = list(sink.keys)
    if sink.partition_by:
        entry["partition_by"] = list(sink.partition_by)
    entry.update(_write_sink(accepted, sink.path, sink.format, sink.mode, keys=sink.keys or None,
                             partition_by=sink.partition_by))
    logger.info("output    %d accepted rows → %s", rows, _sink_text(entry))
    return entry


def _write_sink(frame, path: str, fmt: str, mode: str, keys=None,
                partition_by: Sequence[str] = ()) -> Dict[str, Any]:
    """Write ``frame``; ``{"version", "engine"[, "files_added"]}`` of what was committed."""
    from sparkml_aiaas.data.delta import write_table
    from sparkml_aiaas.scoring.sink import write_parquet_atomically

    if fmt == "parquet" and mode == "overwrite":
        write_parquet_atomically(frame, path, mode="overwrite", partition_by=partition_by or None)
        return {"version": None, "engine": "spark"}
    committed = write_table(frame, path, format=fmt, mode=mode, keys=keys)
    return {"version": committed["version"], "engine": committed["engine"],
            "files_added": len(committed["files"])}


def _check_reject_fraction(counts, reasons, max_reject_fraction, quarantine) -> None:
    # ingest()'s own check and message, plus where the rejects went.
    from sparkml_aiaas.data.ingest import check_reject_fraction

    where = (f"; rejected rows written to {quarantine.path}" if quarantine is not None
             else "; no quarantine configured, rejected rows were not kept")
    check_reject_fraction(counts, reasons, max_reject_fraction,
                          where + "; no accepted rows were written")


# ----------------------------------------------------------- source identity


def source_files(spark, path) -> List[str]:
    """The data files Spark lists for ``path`` (a file, folder, glob or list), sorted.

    ``binaryFile`` has a fixed schema, so listing reads no file content;
    hidden files (``_SUCCESS``, ``.crc``) are left out as Spark leaves them out.
    """
    paths = [path] if isinstance(path, str) else list(path)
    return sorted(set(spark.read.format("binaryFile").load(paths).inputFiles()))


def fingerprint_files(spark, files: Sequence[str]) -> str:
    """sha256 over the sorted ``(relative path, size, modification time)`` of ``files``.

    Paths are taken relative to the files' common folder, so the fingerprint
    names the data, not where the folder was mounted; any file added, removed,
    resized or rewritten changes it.  Sizes and times come from Hadoop's
    FileSystem (local disks, HDFS and object stores alike): the driver's on a
    classic session, the server's on Spark Connect (the same value for the
    same files).
    """
    files = sorted(set(files))
    entries = []
    if files:
        root = _common_folder(files)
        for name, (size, modified) in zip(files, _file_statuses(spark, files)):
            relative = name[len(root):].lstrip("/") if root else name
            entries.append(f"{relative}\t{size}\t{modified}")
    digest = hashlib.sha256()
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _file_statuses(spark, files: Sequence[str]) -> List[tuple]:
    """``(size in bytes, modification time in ms)`` of each file, in order."""
    from sparkml_aiaas.spark_env import is_connect

    if is_connect(spark):
        return _listed_statuses(spark, files)
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    statuses = []
    for name in files:
        # The names are URIs (inputFiles() encodes a space as %20): Path(URI) decodes them.
        hadoop_path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(name))
        status = hadoop_path.getFileSystem(conf).getFileStatus(hadoop_path)
        statuses.append((int(status.getLen()), int(status.getModificationTime())))
    return statuses


def _listed_statuses(spark, files: Sequence[str]) -> List[tuple]:
    """:func:`_file_statuses` on Spark Connect: the server's Hadoop FileSystem lists the
    files for ``binaryFile`` (the statuses a classic driver reads), and selecting only
    these columns reads no content."""
    from urllib.parse import unquote

    from sparkml_aiaas.data.ingest import _normalized_uri, _reading
    from sparkml_aiaas.errors import InputNotFoundError

    # The names are URIs (%20 for a space); the reader takes and lists Hadoop paths.
    paths = [_normalized_uri(unquote(name)) for name in files]
    listed = _reading(lambda: spark.read.format("binaryFile").load(paths), paths)
    rows = listed.selectExpr("path", "length",
                             "unix_millis(modificationTime) AS modified").collect()
    found = {_normalized_uri(r["path"]): (int(r["length"]), int(r["modified"])) for r in rows}
    missing = [name for name, path in zip(files, paths) if path not in found]
    if missing:
        raise InputNotFoundError(f"the server lists no file at {missing[:3]} (for the data "
                                 "fingerprint); did the input change while it was read?")
    return [found[path] for path in paths]


def _common_folder(files: Sequence[str]) -> str:
    if len(files) == 1:
        return posixpath.dirname(files[0])
    prefix = posixpath.commonprefix(list(files))
    return prefix[: prefix.rfind("/") + 1].rstrip("/") if "/" in prefix else ""
