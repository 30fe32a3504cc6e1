"""Batch scoring with lineage: which model scored each row, when, in which run."""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any, Dict, Optional, Sequence

from sparkml_aiaas.errors import DataValidationError, expected_names

_NUMERIC = {"tinyint", "smallint", "int", "bigint", "float", "double", "boolean"}

LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at", "run_id")


def _is_numeric(type_name: str) -> bool:
    return type_name in _NUMERIC or type_name.startswith("decimal")


def check_signature(df, signature: Dict[str, Any]) -> None:
    """Refuse input that lacks a column the model reads, or has it with an incompatible type.

    Numeric types are interchangeable (an int column feeds a double feature);
    anything else must match the type recorded at training.
    """
    problems = []
    for column in signature.get("inputs", []):
        name, expected = column["name"], column["type"]
        if name not in df.columns:
            problems.append(f"missing column {name!r} ({expected})")
            continue
        actual = df.schema[name].dataType.simpleString()
        compatible = actual == expected or (_is_numeric(actual) and _is_numeric(expected))
        if not compatible:
            problems.append(f"column {name!r} is {actual}, the model expects {expected}")
    if problems:
        names = [column["name"] for column in signature.get("inputs", [])]
        raise DataValidationError(
            "; ".join(problems) + " in the input (the model's signature: "
            + expected_names(names) + ")"
        )


def with_lineage(scored, model_name: str, model_version, run_id: str,
                 scored_at: _dt.datetime):
    """``scored`` with the lineage columns appended, all literals.

    ``scored_at`` is a literal of the run's start, not ``current_timestamp()``:
    one value per run, and about 3× cheaper per row here (Spark evaluates
    ``current_timestamp()`` per row in generated code; a literal is free).
    """
    from pyspark.sql import functions as F

    return scored.withColumns({
        "model_name": F.lit(model_name),
        "model_version": F.lit(str(model_version)),
        "scored_at": F.lit(scored_at).cast("timestamp"),
        "run_id": F.lit(run_id),
    })


def _wire_transform(model, df):
    """``df`` scored by ``model`` in the wire types :func:`score` writes (``array<double>``,
    a binary linear margin as a double), not ``transform``'s ML vectors.

    One of our models (also as the last stage of a ``PipelineModel``, after the earlier
    stages' ``transform``) runs its predictor; any other model, its own ``transform``.
    """
    from pyspark.ml import PipelineModel

    from sparkml_aiaas.scoring.udf import transform_with_predictor

    if isinstance(model, PipelineModel) and model.stages and \
            hasattr(model.stages[-1], "predictor"):
        df = PipelineModel(model.stages[:-1]).transform(df)
        model = model.stages[-1]
    if hasattr(model, "predictor"):
        return transform_with_predictor(df, model.predictor())
    return model.transform(df)


def score_dataframe(df, model, model_name: str, model_version: str,
                    run_id: Optional[str] = None, scored_at: Optional[_dt.datetime] = None):
    """Score ``df`` with a fitted model and append lineage columns.

    Returns ``(scored_df, run_id)``.  ``scored_at`` is one timestamp for the
    whole run (UTC), so every row of a run carries the same value.  The output
    columns have :func:`score`'s types (``array<double>``, not ``transform``'s
    vectors), so that files written from it open in any Parquet reader.
    """
    check_signature(df, getattr(model, "signature", {}) or {})
    clashes = [c for c in LINEAGE_COLUMNS if c in df.columns]
    if clashes:
        raise DataValidationError(f"input already has lineage column(s) {clashes}")
    run_id = run_id or uuid.uuid4().hex
    scored_at = scored_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return with_lineage(_wire_transform(model, df), model_name, model_version, run_id,
                        scored_at), run_id


# --------------------------------------------------------------- score(): the job


import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from sparkml_aiaas.errors import ConfigError  # noqa: E402
from sparkml_aiaas.spark_env import is_connect, require_classic  # noqa: E402

logger = logging.getLogger("sparkml_aiaas.scoring")

STATE_FILE = "_sparkml_scoring_state.json"
_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


@dataclass
class ScoreReport:
    output_path: str
    run_id: str
    model_name: str
    model_version: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    seconds: float
    model_digest: Optional[str] = None
    #: True when nothing was written: no new input (incremental).
    skipped: bool = False
    input_files: int = 0
    delta_version: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def summary_line(self) -> str:
        rate = self.rows_out / self.seconds if self.seconds > 0 else float("nan")
        return (f"scored rows_in={self.rows_in} rows_out={self.rows_out} "
                f"rejected={self.rows_rejected} seconds={self.seconds:.1f} "
                f"rows_per_s={rate:,.0f} output={self.output_path} run_id={self.run_id}"
                + (" skipped=true" if self.skipped else ""))


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def _local(path: str) -> str:
    from sparkml_aiaas.models.artifact import local_path

    return os.path.abspath(local_path(path))


def load_state(output: str, spark=None) -> Dict[str, Any]:
    """The scoring state kept beside ``output`` (``{}`` if none yet); read on the server
    when ``spark`` is a Spark Connect session (its paths are the server's)."""
    if not _is_local(output):
        return {}
    if spark is not None and is_connect(spark):
        from sparkml_aiaas.scoring import server_fs
        from sparkml_aiaas.server_tasks import run_on_server

        return run_on_server(spark, server_fs.read_json, _state_path_on_server(output))
    path = os.path.join(_local(output), STATE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _state_path_on_server(output: str) -> str:
    from sparkml_aiaas.models.artifact import local_path
    from sparkml_aiaas.scoring.server_fs import checked_path

    return os.path.join(local_path(checked_path(output)), STATE_FILE)


def _save_state(spark, output: str, state: Dict[str, Any]) -> None:
    if is_connect(spark):
        from sparkml_aiaas.scoring import server_fs
        from sparkml_aiaas.server_tasks import run_on_server

        run_on_server(spark, server_fs.write_json, _state_path_on_server(output), state)
        return
    from sparkml_aiaas.pipeline import write_json_atomically

    write_json_atomically(os.path.join(_local(output), STATE_FILE), state)


def _file_entries(spark, path) -> Dict[str, list]:
    """``{file URI: [size, modification time ms]}`` of the data files under ``path``."""
    from sparkml_aiaas.data.ingest_job import source_files

    if is_connect(spark):
        return _file_entries_listed(spark, path)
    files = source_files(spark, path)
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    entries = {}
    for uri in files:
        p = jvm.org.apache.hadoop.fs.Path(uri)
        status = p.getFileSystem(conf).getFileStatus(p)
        entries[uri] = [int(status.getLen()), int(status.getModificationTime())]
    return entries


def _file_entries_listed(spark, path) -> Dict[str, list]:
    """:func:`_file_entries` without a JVM (Spark Connect): the ``binaryFile`` listing
    :func:`~sparkml_aiaas.data.ingest_job.source_files` makes also carries each file's
    Hadoop ``FileStatus`` length and modification time (the values the classic path
    asks for), and reads no file content when ``content`` is not selected."""
    from pyspark.sql import functions as F

    from sparkml_aiaas.data.ingest_job import source_files

    paths = [path] if isinstance(path, str) else list(path)
    rows = (spark.read.format("binaryFile").load(paths)
            .select("path", "length", F.unix_millis("modificationTime").alias("mtime"))
            .collect())
    listed = {_same_file(r["path"]): [int(r["length"]), int(r["mtime"])] for r in rows}
    # Keyed as inputFiles() spells the files (file:///…, percent-encoded) and the classic
    # path keys them: the run id digests these names, so both sessions derive the same.
    return {uri: listed[_same_file(uri)] for uri in source_files(spark, path)
            if _same_file(uri) in listed}


def _same_file(uri: str) -> str:
    """One spelling of a file URI for matching (``file:///x`` and ``file:/x``, %-escapes)."""
    from urllib.parse import unquote

    uri = unquote(uri)
    return "file:" + uri[len("file://"):] if uri.startswith("file:///") else uri


def _relative(entries: Dict[str, list]) -> list:
    """Entries keyed by path relative to their common folder (what the run id digests)."""
    if not entries:
        return []
    paths = sorted(entries)
    common = os.path.commonpath([p.split(":", 1)[-1] for p in paths]) if len(paths) > 1 else \
        os.path.dirname(paths[0].split(":", 1)[-1])
    return [[p.split(":", 1)[-1][len(common):].lstrip("/"), *entries[p]] for p in paths]


def derive_run_id(model_digest: str, snapshot: Any) -> str:
    """sha256(model digest + input snapshot)[:16]: the same model on the same input, same run."""
    text = model_digest + json.dumps(snapshot, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_input(spark, input, input_format, input_options, input_schema, incremental, state):
    """(frame or None, snapshot, state updates, files count, delta version)."""
    from pyspark.sql import DataFrame

    if isinstance(input, DataFrame):
        if incremental:
            raise ConfigError("incremental scoring needs an input path, not a DataFrame")
        try:
            files = input.inputFiles()
        except Exception:  # noqa: BLE001 - plans without a file scan
            files = []
        snapshot = None
        if files and is_connect(spark):
            # fingerprint_files asks the driver's JVM; the listing's sizes and times say
            # the same (a run id of its own: not the classic session's for this input).
            snapshot = {"files": _relative(_file_entries_listed(spark, files)),
                        "plan": input.semanticHash()}
        elif files:
            from sparkml_aiaas.data.ingest_job import fingerprint_files

            # The plan too: two filters of the same files are different inputs.
            snapshot = {"files": fingerprint_files(spark, files), "plan": input.semanticHash()}
        return input, snapshot, {}, len(files), None
    if input_format == "delta":
        from pyspark.sql import functions as F

        from sparkml_aiaas.data.delta import read_table, table_version

        version = table_version(spark, input)
        frame = read_table(spark, input, format="delta", version=version)
        files = sorted(set(frame.inputFiles()))
        updates = {"input": input, "delta_version": version, "delta_files": files}
        new = files
        if incremental and state.get("input") == input and "delta_files" in state:
            seen = set(state["delta_files"])
            new = [f for f in files if f not in seen]
            if not new:
                return None, None, updates, 0, version
            if len(new) < len(files):
                frame = frame.where(F.input_file_name().isin(new))
        snapshot = {"delta": os.path.basename(os.path.normpath(input)), "version": version,
                    "files": [os.path.basename(f) for f in new]}
        return frame, snapshot, updates, len(new), version
    entries = _file_entries(spark, input)
    if not entries:
        from sparkml_aiaas.errors import InputNotFoundError

        raise InputNotFoundError(f"no input files at {input!r}")
    new = entries
    if incremental:
        seen = state.get("files", {}) if state.get("input") == input else {}
        new = {p: e for p, e in entries.items() if seen.get(p) != e}
    updates = {"input": input, "new_files": new}
    if not new:
        return None, None, updates, 0, None
    reader = spark.read.format(input_format).options(**(input_options or {}))
    if input_schema is not None:
        from sparkml_aiaas.data.schema import parse_schema

        reader = reader.schema(parse_schema(input_schema).struct)
    if isinstance(input, str) and len(new) < len(entries):
        reader = reader.option("basePath", input)
    frame = reader.load(sorted(new)) if len(new) < len(entries) else reader.load(input)
    return frame, {"files": _relative(new)}, updates, len(new), None


def score(spark, model_ref, input, output: str, *, registry: Optional[str] = None,
          format: str = "parquet", input_format: str = "parquet",
          input_options: Optional[Dict[str, Any]] = None, input_schema=None,
          partition_by: Optional[Sequence[str]] = None, run_id: Optional[str] = None,
          incremental: bool = False, batch_size: Optional[int] = None,
          mode: str = "overwrite", model_name: Optional[str] = None,
          rows_rejected: int = 0, snapshot: Any = None,
          trusted_factories=None) -> ScoreReport:
    """Batch-score ``input`` with a model and write the result atomically, once per run.

    Parameters
    ----------
    model_ref : str
        A saved model directory, or with ``registry=ROOT`` a registry reference
        (``name@alias``, ``name/3``, ``name``).
    input : str or DataFrame
        A path read with ``input_format`` (``parquet``, ``csv``, ``json``, ``orc``,
        ``delta``; ``input_options`` and ``input_schema`` apply to file formats),
        or a DataFrame (not with ``incremental``).
    output : str
        Parquet: a folder holding one ``run_id=<id>/`` partition per run (read it with
        :func:`sparkml_aiaas.scoring.read_scores`).  Delta: a table partitioned by
        ``run_id``; each run replaces its own rows in one transaction.
    partition_by : list of str
        Partition each run's rows further (e.g. by a date column); for Delta, the
        table's partition columns are ``["run_id", *partition_by]``.
    run_id : str
        Defaults to sha256(model digest + input snapshot)[:16]: re-running the same
        model on the same input is the same run and replaces its rows, never
        duplicates them.
    incremental : bool
        Score only the input files not scored by an earlier successful run into
        this output (for Delta inputs: only the data files added since).
    batch_size : int
        Rows per Arrow batch (``spark.sql.execution.arrow.maxRecordsPerBatch``
        for this query, restored after).
    trusted_factories : list of str, optional
        Torch network factories the model may name (``"pkg.module:function"`` or
        ``"pkg.module:*"``), plus ``SPARKML_AIAAS_TRUSTED_FACTORIES`` of the driver; the
        executors load with exactly this list.  An untrusted factory is refused before
        anything is imported or written.

    Raises
    ------
    DataValidationError
        The input lacks a column the model reads, or has it with an
        incompatible type; checked before anything is written.
    """
    from sparkml_aiaas.scoring.resolve import resolve_model
    from sparkml_aiaas.scoring.sink import run_partition_path, write_run_partition
    from sparkml_aiaas.scoring.udf import transform_with_model

    started = time.perf_counter()
    if format not in ("parquet", "delta"):
        raise ConfigError(f"output format must be 'parquet' or 'delta', got {format!r}")
    if format == "delta":
        # Writing a Delta table commits through delta-rs's file moves on the driver (for now).
        require_classic(spark, "Delta output for score()", "write Parquet (format='parquet')")
    if not _is_local(output) and incremental:
        raise ConfigError("incremental scoring keeps its state beside the output: "
                          "a local (or file:) output path is needed")
    resolved = resolve_model(model_ref, registry=registry, model_name=model_name,
                             trusted_factories=trusted_factories)
    state = load_state(output, spark) if incremental or _is_local(output) else {}
    frame, input_snapshot, updates, n_files, delta_version = _read_input(
        spark, input, input_format, input_options, input_schema, incremental, state)

    def report(**kw):
        base = dict(output_path=output, run_id=run_id or "", model_name=resolved.name,
                    model_version=resolved.version, rows_in=0, rows_out=0,
                    rows_rejected=rows_rejected, seconds=time.perf_counter() - started,
                    model_digest=resolved.digest, input_files=n_files,
                    delta_version=delta_version)
        base.update(kw)
        return ScoreReport(**base)

    if frame is None:
        logger.info("score     no new input since the last run: nothing to do")
        return report(skipped=True)

    # Everything that can be refused is refused before any work.
    check_signature(frame, resolved.signature)
    clashes = [c for c in LINEAGE_COLUMNS if c in frame.columns]
    if clashes:
        raise DataValidationError(f"input already has lineage column(s) {clashes}")
    if partition_by:
        unknown = [c for c in partition_by if c not in frame.columns]
        if unknown:
            raise DataValidationError(f"partition_by column(s) {unknown} are not in the input")
    snapshot = snapshot if snapshot is not None else input_snapshot
    if run_id is None:
        run_id = derive_run_id(resolved.digest, snapshot) if snapshot is not None \
            else uuid.uuid4().hex[:16]
    scored_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    # Connect has no accumulators: rows_in is then what was written (scoring maps rows one
    # to one), as on classic when a model scored in the JVM counted nothing.
    counter = None if is_connect(spark) else spark.sparkContext.accumulator(0)
    scored = with_lineage(transform_with_model(frame, resolved, counter), resolved.name,
                          resolved.version, run_id, scored_at)

    previous_batch = spark.conf.get(_BATCH_CONF, None)
    if batch_size:
        spark.conf.set(_BATCH_CONF, str(int(batch_size)))
    skipped = False
    try:
        if format == "parquet":
            written = write_run_partition(scored.drop("run_id"), output, run_id,
                                          partition_by=partition_by, mode=mode)
            rows_out = spark.read.parquet(written).count()
            output_path = run_partition_path(output, run_id) if _is_local(output) else written
        else:
            from sparkml_aiaas.scoring.sink import write_run_delta

            # One transaction: the run's previous rows (if any) out, its new rows in.
            result = write_run_delta(scored, output, run_id, partition_by=partition_by,
                                     mode=mode)
            rows_out = int(result["rows"])
            delta_version = result.get("version", delta_version)
            output_path = output
    finally:
        if batch_size:
            if previous_batch is None:
                spark.conf.unset(_BATCH_CONF)
            else:
                spark.conf.set(_BATCH_CONF, previous_batch)
    if skipped or counter is None or not counter.value:
        # Scored in the JVM (no Python worker counted the rows): scoring maps rows one to
        # one, so what was written is what was read; a skipped run is counted afresh.
        rows_in = frame.count() if skipped else rows_out
    else:
        rows_in = counter.value

    if _is_local(output):
        if "input" in updates:  # a path: the file/version record is about this input
            new_state = dict(state) if state.get("input") == updates["input"] else {}
            new_state["input"] = updates["input"]
        else:  # a DataFrame: only the run is recorded
            new_state = dict(state)
        if "new_files" in updates:
            files = dict(new_state.get("files", {}))
            files.update(updates["new_files"])
            new_state["files"] = files
        for key in ("delta_version", "delta_files"):
            if key in updates:
                new_state[key] = updates[key]
        runs = dict(new_state.get("runs", {}))
        runs[run_id] = {"model_name": resolved.name, "model_version": str(resolved.version),
                        "model_digest": resolved.digest, "rows": rows_out,
                        "scored_at": scored_at.isoformat()}
        new_state["runs"] = runs
        new_state["last_run_id"] = run_id
        _save_state(spark, output, new_state)
    out = report(output_path=output_path, run_id=run_id, rows_in=rows_in, rows_out=rows_out,
                 skipped=skipped, delta_version=delta_version)
    # Not the summary: a caller prints ``summary_line()`` once, with its own timing scope
    # (the CLI's covers the ingest too); a second ``scored ...`` line would contradict it.
    logger.debug("score     wrote %d rows to %s (run_id %s)", rows_out, output_path, run_id)
    return out
