"""Retrain a registered version from its provenance and compare it, array by array.

:func:`reproduce` (``ModelRegistry.reproduce``, ``sparkml-aiaas models reproduce``):

1. the version's provenance (:mod:`.provenance`) must be a train job's;
2. the code and the libraries that decide the bits must be the recorded ones (named
   when not; ``allow_environment_change`` retrains anyway, to see the difference);
3. the input must be what was read: each file by content hash, or the Delta version
   (read by time travel, so later commits do not matter);
4. the recorded job config is run again, with its seed and its number of training
   blocks, into a work folder (the registry and the job's own outputs are not touched);
5. the retrained model (and preprocessor) are compared with the registered ones: every
   array bit for bit, and every other file (an XGBoost booster) by its sha256.

The outcome: exit code 0 (identical), 1 (not: which arrays, max absolute difference)
or 2 (could not even try, and why), a one-line summary, and a JSON report stored beside
the version (``ModelRegistry.last_reproduction``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from sparkml_aiaas.errors import SparkmlAiaasError

IDENTICAL, DIFFERENT, REFUSED = "identical", "different", "refused"
EXIT_CODES = {IDENTICAL: 0, DIFFERENT: 1, REFUSED: 2}


class CannotReproduce(SparkmlAiaasError):
    """A reproduction cannot even be tried (exit 2): the message says why."""


@dataclass
class Difference:
    """One array or file that differs between the registered and the retrained model."""

    artifact: str  # "model" or "preprocessor"
    name: str  # an array of arrays.npz, or a file name
    detail: str
    max_abs_diff: Optional[float] = None

    def short(self) -> str:
        return f"{self.artifact} {self.name}: {self.detail}"


@dataclass
class Reproduction:
    """The outcome of one :func:`reproduce`."""

    ref: str
    status: str
    summary: str
    reasons: List[str] = field(default_factory=list)
    differences: List[Difference] = field(default_factory=list)
    compared: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0
    started_at: str = ""
    report_path: Optional[str] = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def identical(self) -> bool:
        return self.status == IDENTICAL

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


# --------------------------------------------------------------------------- comparing
def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
        return None
    x, y = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.abs(np.where(both_nan, 0.0, x - y))
    return float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0


def compare_arrays(artifact: str, registered: Mapping[str, np.ndarray],
                   retrained: Mapping[str, np.ndarray]) -> List[Difference]:
    """Every array of ``registered`` against ``retrained``: same shape, dtype and bytes."""
    differences = []
    for name in sorted(set(registered) | set(retrained)):
        if name not in retrained:
            differences.append(Difference(artifact, name, "missing from the retrained model"))
            continue
        if name not in registered:
            differences.append(Difference(artifact, name, "not in the registered model"))
            continue
        a, b = np.asarray(registered[name]), np.asarray(retrained[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            differences.append(Difference(
                artifact, name, f"shape/dtype {a.shape} {a.dtype} (registered) vs "
                f"{b.shape} {b.dtype} (retrained)"))
            continue
        if a.tobytes() == b.tobytes():
            continue
        worst = _max_abs_diff(a, b)
        count = int(np.sum(a != b)) if a.dtype.kind != "f" else \
            int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b)))))
        detail = f"{count} of {a.size} values differ"
        if worst is not None:
            detail += f", max |diff| {worst:.3g}"
        differences.append(Difference(artifact, name, detail, worst))
    return differences


def compare_artifacts(artifact: str, registered_dir: str,
                      retrained_dir: str) -> Tuple[int, List[Difference]]:
    """``(arrays and files compared, differences)`` of two saved model directories."""
    from sparkml_aiaas.models.artifact import ARRAYS_FILE, read_artifact

    meta_a, arrays_a = read_artifact(registered_dir)
    meta_b, arrays_b = read_artifact(retrained_dir)
    differences = []
    if meta_a.get("class") != meta_b.get("class"):
        differences.append(Difference(artifact, "class", f"{meta_a.get('class')} (registered) "
                                      f"vs {meta_b.get('class')} (retrained)"))
    differences += compare_arrays(artifact, arrays_a, arrays_b)
    files_a = {k: v.get("sha256") for k, v in (meta_a.get("files") or {}).items()
               if k != ARRAYS_FILE}
    files_b = {k: v.get("sha256") for k, v in (meta_b.get("files") or {}).items()
               if k != ARRAYS_FILE}
    for name in sorted(set(files_a) | set(files_b)):
        if files_a.get(name) != files_b.get(name):
            differences.append(Difference(artifact, name, "file bytes differ" if name in files_a
                                          and name in files_b else "file missing on one side"))
    return len(set(arrays_a) | set(arrays_b)) + len(set(files_a) | set(files_b)), differences


# --------------------------------------------------------------------------- the run
def reproduction_config(provenance: Mapping[str, Any], workdir: str):
    """The recorded job config, pinned to the recorded input and writing only into
    ``workdir``: no registry block, no report or metrics, quarantine in the work folder."""
    from pydantic import ValidationError

    from sparkml_aiaas.config import TrainJobConfig

    data = copy.deepcopy(dict(provenance.get("config") or {}))
    data.pop("registry", None)
    data["output"] = {"model_path": os.path.join(workdir, "job_model"), "report": False,
                      "overwrite": True}
    source = dict(data.get("input") or {})
    if source.get("quarantine_path"):
        source["quarantine_path"] = os.path.join(workdir, "quarantine")
    recorded_input = provenance.get("input") or {}
    if recorded_input.get("path"):
        source["path"] = recorded_input["path"]  # absolute: the job's cwd is not ours
    if recorded_input.get("format") == "delta":
        source["version"] = recorded_input.get("delta_version")
    data["input"] = source
    _check_factory(provenance, data)
    try:
        return TrainJobConfig.model_validate(data)
    except ValidationError as exc:
        from sparkml_aiaas.config import _problem

        # Its first problem, written as a config error's (an unknown key: "did you mean").
        first = _problem(exc.errors()[0], TrainJobConfig, ()) if exc.errors() else str(exc)
        raise CannotReproduce(f"the recorded train config does not validate with this "
                              f"version ({first})") from None


def _check_factory(provenance: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """A recorded torch ``architecture`` that names a factory (``pkg.module:function``) is
    code named by a file: registry.json of an unsigned registry can be edited.  It must be
    in the caller's allowlist (``SPARKML_AIAAS_TRUSTED_FACTORIES``), checked as a string
    before anything is imported, as every model load does."""
    from sparkml_aiaas.models.trust import trusted

    architecture = ((config.get("model") or {}).get("params") or {}).get("architecture")
    if isinstance(architecture, str) and ":" in architecture:
        try:
            trusted(None).check(architecture, where="the recorded train config")
        except SparkmlAiaasError as exc:  # UntrustedCodeError, or not a factory name
            raise CannotReproduce(str(exc)) from None


def _refusals(registry, mv, spark, allow_environment_change: bool,
              notes: List[str]) -> Tuple[Mapping[str, Any], Any]:
    """The provenance and a session, or CannotReproduce with every reason found."""
    from sparkml_aiaas.registry.provenance import (PROVENANCE_FORMAT, check_input,
                                                   environment, environment_differences,
                                                   hardware_differences)

    provenance = mv.metadata.get("provenance")
    if not provenance:
        raise CannotReproduce(
            f"{mv.ref} has no recorded provenance: it was not registered from a train job "
            "(a model wrapped from outside, or fitted in Python and registered without "
            "one), so there is no recipe to retrain it")
    if provenance.get("format") != PROVENANCE_FORMAT or provenance.get("kind") != "train_job":
        raise CannotReproduce(f"{mv.ref}'s provenance is of kind {provenance.get('kind')!r} "
                              f"(format {provenance.get('format')!r}); this version retrains "
                              f"train-job provenance of format {PROVENANCE_FORMAT}")
    recorded_env = provenance.get("environment") or {}
    here = environment()
    differences = environment_differences(recorded_env, here, provenance.get("family", ""))
    if differences and not allow_environment_change:
        raise CannotReproduce(f"{mv.ref} was trained with other code or libraries: "
                              + "; ".join(differences)
                              + " (--allow-environment-change retrains anyway)")
    notes += [f"allowed: {d}" for d in differences]
    hardware = hardware_differences(recorded_env, here)
    notes += [f"{d}: bit-identity is not promised on another CPU" for d in hardware]
    if spark is None:
        from sparkml_aiaas.session import get_spark

        spark = get_spark("sparkml_aiaas-reproduce")
    problems = check_input(spark, provenance.get("input") or {})
    if problems:
        raise CannotReproduce(f"{mv.ref}'s training input changed: " + "; ".join(problems))
    return provenance, spark


def _retrain_and_compare(mv, provenance, spark, workdir: str, outcome: Reproduction) -> None:
    from sparkml_aiaas.pipeline import fit_from_config

    config = reproduction_config(provenance, workdir)
    run = fit_from_config(spark, config, num_partitions=provenance.get("blocks"))
    try:
        model_dir = os.path.join(workdir, "model")
        run.model.write().overwrite().save(model_dir)
        count, differences = compare_artifacts("model", mv.path, model_dir)
        outcome.compared["model"] = count
        registered_pre = mv.preprocessor_path
        if (registered_pre is None) != (run.preprocessor is None):
            differences.append(Difference(
                "preprocessor", "-", "registered " + ("with" if registered_pre else "without")
                + " a preprocessor, retrained " + ("with" if run.preprocessor else "without")))
        elif registered_pre is not None:
            pre_dir = os.path.join(workdir, "preprocessor")
            run.preprocessor.write().overwrite().save(pre_dir)
            count, pre_differences = compare_artifacts("preprocessor", registered_pre, pre_dir)
            outcome.compared["preprocessor"] = count
            differences += pre_differences
        outcome.differences = differences
    finally:
        for frame in (run.train, run.test):
            if frame is not None and hasattr(frame, "unpersist"):
                try:
                    frame.unpersist()
                except Exception:  # noqa: BLE001 - a cache already gone is fine
                    pass


def _summary(outcome: Reproduction) -> str:
    took = f"({outcome.seconds:.1f} s)"
    if outcome.status == REFUSED:
        return f"cannot reproduce {outcome.ref}: {outcome.reasons[0]}"
    compared = ", ".join(f"{artifact} {n} arrays/files" for artifact, n in
                         outcome.compared.items())
    if outcome.status == IDENTICAL:
        return f"reproduced {outcome.ref} bit for bit: {compared} identical {took}"
    shown = "; ".join(d.short() for d in outcome.differences[:4])
    more = f"; {len(outcome.differences) - 4} more" if len(outcome.differences) > 4 else ""
    return (f"{outcome.ref} NOT reproduced: {len(outcome.differences)} of {compared} differ "
            f"({shown}{more}) {took}")


def reproduce(registry, ref: str, *, spark=None, workdir: Optional[str] = None,
              allow_environment_change: bool = False) -> Reproduction:
    """Retrain ``ref`` as recorded and compare it with the registered version.

    Parameters
    ----------
    registry : ModelRegistry
    ref : str
        ``name``, ``name/3`` or ``name@alias``.
    spark : SparkSession, optional
        Default: the active session, or a local one.
    workdir : str, optional
        Where the retrained model is written (kept); default a temporary folder, removed.
    allow_environment_change : bool
        Retrain even when the code or a library that decides the bits differs from the
        recorded one (the outcome then says which).

    Returns
    -------
    Reproduction
        ``exit_code`` 0, 1 or 2 and ``summary`` (one line); the report is stored beside
        the version and its path is ``report_path``.
    """
    mv = registry.resolve(ref)  # unknown ref, damaged files: raised, like every command
    started = time.perf_counter()
    outcome = Reproduction(ref=mv.ref, status=REFUSED, summary="",
                           started_at=_dt.datetime.now(_dt.timezone.utc).isoformat())
    temporary = workdir is None
    folder = tempfile.mkdtemp(prefix="sparkml_aiaas_reproduce-") if temporary \
        else os.path.abspath(workdir)
    try:
        os.makedirs(folder, exist_ok=True)
        provenance, spark = _refusals(registry, mv, spark, allow_environment_change,
                                      outcome.notes)
        _retrain_and_compare(mv, provenance, spark, folder, outcome)
        outcome.status = DIFFERENT if outcome.differences else IDENTICAL
    except CannotReproduce as exc:
        outcome.status, outcome.reasons = REFUSED, [str(exc)]
    except SparkmlAiaasError as exc:  # the recorded config no longer runs: say so, and keep it
        outcome.status = REFUSED
        outcome.reasons = [f"retraining failed: {str(exc).splitlines()[0]}"]
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    outcome.seconds = time.perf_counter() - started
    outcome.summary = _summary(outcome)
    report = outcome.to_json()
    report.pop("report_path", None)
    report["workdir"] = None if temporary else folder
    outcome.report_path = registry.record_reproduction(mv.name, mv.version, report)
    return outcome
