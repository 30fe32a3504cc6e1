"""``compress_model``: a saved (or fitted) torch model in, a smaller model artifact out.

The output is a new artifact of the same class (same params, signature and
uid), whose ``metadata["predictor"]["weights"]`` says how the weights are
stored (``int8``, ``sparse`` or ``sparse-int8``, see
:mod:`sparkml_aiaas.compress.codec`), whose ``arrays.npz`` is deflated, and
whose ``metadata["compression"]`` is the :class:`CompressionReport`.  It
loads with ``load_predictor``, registers and scores like any other model.

No pyspark import here: compressing a saved model is a single-process job
(a fitted model object is saved first with its own writer).
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from sparkml_aiaas.compress import codec
from sparkml_aiaas.errors import (ConfigError, DataValidationError, InputNotFoundError,
                                  ModelFormatError)
from sparkml_aiaas.models.artifact import (ARRAYS_FILE, METADATA_FILE, local_path,
                                           read_artifact, read_artifact_file, write_artifact)
from sparkml_aiaas.models.trust import trusted

#: ``method`` -> the weights format it writes.
METHODS = {"int8": "int8", "prune": "sparse", "prune+int8": "sparse-int8"}
#: Keys ``write_artifact`` computes itself; dropped from the copied metadata.
_WRITER_KEYS = ("format_version", "sparkml_aiaas_version", "timestamp", "files", "model_id")


@dataclass
class CompressionReport:
    """What a compression did and what it cost.

    ``bytes_before``/``bytes_after`` count the serialized weights of the
    artifact (``arrays.npz`` plus any extra files): the part that scales
    with the model; ``total_bytes_*`` the whole directory including
    ``metadata.json`` (a few kB of params, signature and this report —
    significant next to a 20 kB model).  ``metric`` is ``accuracy``
    (multiclass), ``auc`` (binary) or ``rmse`` (regression) on the eval
    data; ``throughput_*`` are rows/s of the Spark-free predictor's
    ``predict`` on it (best of a few timed runs).
    """

    method: str
    weights: str
    source: str
    output: str
    bytes_before: int
    bytes_after: int
    ratio: float
    total_bytes_before: int
    total_bytes_after: Optional[int] = None
    sparsity: Optional[float] = None
    structured: bool = False
    achieved_sparsity: Optional[float] = None
    fine_tune_epochs: int = 0
    fine_tune_losses: List[float] = field(default_factory=list)
    parameters: int = 0
    metric: Optional[str] = None
    metric_before: Optional[float] = None
    metric_after: Optional[float] = None
    eval_rows: int = 0
    throughput_before: Optional[float] = None
    throughput_after: Optional[float] = None
    seconds: float = 0.0

    @property
    def metric_change(self) -> Optional[float]:
        if self.metric_before is None or self.metric_after is None:
            return None
        return self.metric_after - self.metric_before

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["metric_change"] = self.metric_change
        return out

    def lines(self) -> List[str]:
        """The report as aligned text lines (what the CLI prints)."""
        def num(value, fmt):
            return "n/a" if value is None else format(value, fmt)

        rows = [("method", f"{self.method} (weights {self.weights})"),
                ("source", self.source), ("output", self.output),
                ("parameters", str(self.parameters)),
                ("weights bytes", f"{self.bytes_before} -> {self.bytes_after} "
                                  f"({self.ratio:.2f}x smaller)"),
                ("artifact bytes", f"{self.total_bytes_before} -> "
                                   f"{num(self.total_bytes_after, 'd')} (with metadata)")]
        if self.sparsity is not None:
            rows.append(("sparsity", f"requested {self.sparsity:.3f}"
                         f"{' structured' if self.structured else ''}, achieved "
                         f"{num(self.achieved_sparsity, '.3f')}"))
        if self.fine_tune_epochs:
            rows.append(("fine-tuning", f"{self.fine_tune_epochs} epochs, loss "
                         + " -> ".join(f"{v:.4f}" for v in self.fine_tune_losses)))
        if self.metric:
            rows.append((self.metric, f"{num(self.metric_before, '.4f')} -> "
                         f"{num(self.metric_after, '.4f')} (change "
                         f"{num(self.metric_change, '+.4f')}, {self.eval_rows} rows)"))
            rows.append(("throughput", f"{num(self.throughput_before, ',.0f')} -> "
                         f"{num(self.throughput_after, ',.0f')} rows/s"))
        return [f"  {name:<15}{value}" for name, value in rows]

    def summary_line(self) -> str:
        line = (f"compressed method={self.method} weights={self.weights} "
                f"bytes={self.bytes_before}->{self.bytes_after} ratio={self.ratio:.2f}")
        if self.metric:
            line += (f" {self.metric}={_fmt(self.metric_before)}->{_fmt(self.metric_after)}")
        return line + f" output={self.output}"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------- inputs

def _check_options(method: str, sparsity: Any, structured: bool, fine_tune) -> float:
    if method not in METHODS:
        raise ConfigError(f"unknown compression method {method!r}; expected one of "
                          f"{list(METHODS)}")
    sparsity = codec.check_sparsity(sparsity)
    if method == "int8" and (structured or fine_tune is not None):
        raise ConfigError("structured and fine_tune apply to pruning: use method='prune' or "
                          "'prune+int8'")
    return sparsity


def _source_artifact(model, workdir: str) -> Tuple[str, Dict[str, Any], Dict[str, np.ndarray]]:
    """``(path, metadata, arrays)`` of the model to compress (a fitted model is saved first)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
    elif hasattr(model, "write"):
        path = os.path.join(workdir, "source")
        model.write().save(path)
    else:
        raise ConfigError(f"model must be a saved model path or a fitted model with .write(), "
                          f"got {type(model).__name__}")
    metadata, arrays = read_artifact(path)
    spec = metadata.get("predictor") or {}
    if spec.get("family") != "torch":
        raise ModelFormatError(
            f"model at {path!r} is a {spec.get('family') or metadata.get('class', 'unknown')!r} "
            "model; only torch models (predictor family 'torch') can be compressed")
    if spec.get("weights", "dense") != "dense":
        raise ModelFormatError(
            f"model at {path!r} is already compressed (weights {spec.get('weights')!r}); "
            "compress the dense original instead")
    if "architecture" not in spec:
        raise ModelFormatError(f"torch model at {path!r} has no predictor.architecture spec")
    return path, metadata, arrays


def _directory_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(local_path(path)):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _weights_bytes(path: str, metadata: Mapping[str, Any]) -> int:
    """``arrays.npz`` plus the extra files: the serialized weights, without metadata."""
    root = local_path(path)
    names = [n for n in metadata.get("files", {}) if n != METADATA_FILE]
    return sum(os.path.getsize(os.path.join(root, n)) for n in names)


def _read_frame(data, what: str) -> Optional[pd.DataFrame]:
    if data is None:
        return None
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.exists(path):
            raise InputNotFoundError(f"{what} {path!r} does not exist")
        if path.endswith(".csv"):
            return pd.read_csv(path)
        if path.endswith(".json") or path.endswith(".jsonl"):
            return pd.read_json(path, lines=path.endswith(".jsonl"))
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for "not parquet"
            raise DataValidationError(f"{what} {path!r} is not CSV, JSON lines or Parquet: "
                                      f"{exc}") from None
    raise ConfigError(f"{what} must be a pandas DataFrame or a path, got {type(data).__name__}")


def _fine_tune_options(fine_tune) -> Optional[Dict[str, Any]]:
    """``fine_tune``: a DataFrame/path (2 epochs) or ``{"data": ..., "epochs", "lr",
    "batch_size"}``."""
    if fine_tune is None:
        return None
    options = dict(fine_tune) if isinstance(fine_tune, Mapping) else {"data": fine_tune}
    unknown = set(options) - {"data", "epochs", "lr", "batch_size", "seed"}
    if unknown:
        raise ConfigError(f"unknown fine_tune option(s) {sorted(unknown)}; expected data, "
                          "epochs, lr, batch_size, seed")
    if "data" not in options:
        raise ConfigError("fine_tune needs 'data' (a pandas DataFrame or a path)")
    options["data"] = _read_frame(options["data"], "fine-tuning data")
    options.setdefault("epochs", 2)
    options.setdefault("lr", 1e-3)
    options.setdefault("batch_size", 64)
    options.setdefault("seed", 0)
    return options


# --------------------------------------------------------------------------- predictor use

def _predictor(metadata, arrays, allowlist, where: str):
    from sparkml_aiaas.models.predictor import _predictor_class

    cls = _predictor_class("torch", "<compress>")
    return cls.from_artifact(metadata, arrays, trusted_factories=allowlist, where=where)


def _network_inputs(predictor, metadata, frame: pd.DataFrame) -> np.ndarray:
    """The rows of ``frame`` as the network's input tensor layout ``(n, *input_shape)``.

    The predictor's own feature extraction (column checks, any input scaling it
    applies before the network) when it exposes one, so that fine-tuning sees
    exactly what scoring feeds the network.
    """
    spec = metadata["predictor"]
    if hasattr(predictor, "network_inputs"):
        X = predictor.network_inputs(frame)
    elif hasattr(predictor, "features"):
        X = predictor.features(frame)
    else:
        cols = spec.get("feature_cols")
        if cols:
            X = frame[list(cols)].to_numpy(dtype=np.float32)
        else:
            X = np.stack([np.asarray(c, dtype=np.float32) for c in frame[spec["vector_col"]]])
    shape = [int(s) for s in spec.get("input_shape") or [np.asarray(X).shape[1]]]
    return np.asarray(X, dtype=np.float32).reshape((-1, *shape))


def _labels(frame: pd.DataFrame, label_col: str) -> np.ndarray:
    if label_col not in frame.columns:
        raise DataValidationError(f"label column {label_col!r} is not in the data; columns: "
                                  f"{list(frame.columns)}")
    y = frame[label_col].to_numpy()
    if pd.isna(y).any():
        raise DataValidationError(f"label column {label_col!r} has missing values")
    return y


def _evaluate(predictor, spec: Mapping[str, Any], frame: pd.DataFrame,
              label_col: str) -> Tuple[str, float, float]:
    """``(metric name, value, rows/s)`` of a predictor on labelled data."""
    best = float("inf")
    out = None
    for _ in range(3):  # best of three: the first run pays for lazy allocations
        start = time.perf_counter()
        out = predictor.predict(frame)
        best = min(best, time.perf_counter() - start)
    throughput = len(frame) / best if best > 0 else float("inf")
    y = _labels(frame, label_col).astype(np.float64)
    names = spec.get("output_names") or {}
    prediction = out[names.get("prediction", "prediction")].to_numpy(dtype=np.float64)
    if spec.get("task") == "regression":
        return "rmse", float(np.sqrt(np.mean((prediction - y) ** 2))), throughput
    classes = int(spec.get("num_classes") or 0)
    if classes == 2 and len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        probability = np.stack(out[names.get("probability", "probability")].to_numpy())
        return "auc", float(roc_auc_score(y, probability[:, 1])), throughput
    return "accuracy", float(np.mean(prediction == y)), throughput


# --------------------------------------------------------------------------- compress

def compress_model(model, out_path: str, method: str = "int8", sparsity: float = 0.5,
                   structured: bool = False, fine_tune=None, eval_data=None,
                   label_col: str = "label", overwrite: bool = False,
                   trusted_factories=None) -> CompressionReport:
    """Write a compressed copy of a torch model; returns (and stores) the report.

    Parameters
    ----------
    model : str or fitted model
        A saved torch model directory, or a fitted torch model (saved to a
        temporary directory first, so both start from the dense artifact).
    out_path : str
        Where the compressed artifact goes (refused if it exists, unless ``overwrite``).
    method : {"int8", "prune", "prune+int8"}
        ``int8``: per-output-channel int8 Conv/Linear weights.  ``prune``:
        magnitude pruning to ``sparsity``, stored sparse (float32 nonzeros).
        ``prune+int8``: both.
    sparsity : float in [0, 1)
        Fraction of each Conv/Linear weight set to zero (pruning methods).
    structured : bool
        Prune whole output channels (L2 norm) instead of single weights.
    fine_tune : DataFrame, path or dict, optional
        Labelled pandas data (``{"data": ..., "epochs": 2, "lr": 1e-3,
        "batch_size": 64}`` for more control): a few epochs of single-process
        Adam with the pruning masks kept, before the zeros are made permanent.
    eval_data : DataFrame or path, optional
        Labelled data for accuracy (AUC for binary, RMSE for regression) and
        throughput before and after.
    label_col : str
        Label column of ``eval_data`` and ``fine_tune`` data.
    trusted_factories : list of str, optional
        Torch network factories a saved model may name (plus
        ``SPARKML_AIAAS_TRUSTED_FACTORIES``); a fitted model object's own factory is
        trusted already.  Anything else is refused before it is imported.
    """
    started = time.perf_counter()
    sparsity = _check_options(method, sparsity, structured, fine_tune)
    tuning = _fine_tune_options(fine_tune)
    eval_frame = _read_frame(eval_data, "eval data")
    target = os.path.abspath(local_path(os.fspath(out_path)))
    if os.path.exists(target) and not overwrite:
        raise ConfigError(f"output path {out_path!r} already exists; pass overwrite=True "
                          "(--overwrite) to replace it")

    import torch

    from sparkml_aiaas.core.torch_nets import build_network

    # A fitted model object came from the caller's code: its own factory is trusted.
    allowlist = trusted(trusted_factories).union(getattr(model, "trustedFactories", None))
    with tempfile.TemporaryDirectory(prefix="sparkml-compress-") as workdir:
        source, metadata, arrays = _source_artifact(model, workdir)
        if os.path.abspath(local_path(source)) == target:
            raise ConfigError("out_path must differ from the model path (the dense original "
                              "is kept)")
        spec = metadata["predictor"]
        extra_files = {name: read_artifact_file(source, name, metadata)
                       for name in metadata.get("files", {}) if name != ARRAYS_FILE}
        bytes_before = _weights_bytes(source, metadata)
        total_before = _directory_bytes(source)

        # Checks the factory (before any import), the spec and the weights.
        dense_predictor = _predictor(metadata, arrays, allowlist, f"the model at {source!r}")
        try:
            network = build_network(spec["architecture"], factories=allowlist.resolve)
            network.load_state_dict(codec.decode_state(metadata, arrays))
        except ModelFormatError:
            raise
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFormatError(f"torch model at {source!r}: {exc}") from None
        network.eval()
        weight_names = codec.compressible_weights(network)
        if not weight_names:
            raise ModelFormatError(f"torch model at {source!r} has no Conv/Linear layers to "
                                   "compress")

        report_kwargs: Dict[str, Any] = {}
        if method != "int8":
            pruned = codec.prune_module(network, sparsity, structured=structured)
            if tuning is not None:
                frame = tuning["data"]
                X = _network_inputs(dense_predictor, metadata, frame)
                y = _labels(frame, label_col)
                if spec.get("task") == "regression" and hasattr(dense_predictor,
                                                                "network_targets"):
                    # A standardized regressor's network outputs standardized labels.
                    y = dense_predictor.network_targets(y.astype(np.float64))
                task = spec.get("task", "classification")
                losses = codec.fine_tune(network, X, y, task=task, epochs=int(tuning["epochs"]),
                                         lr=float(tuning["lr"]),
                                         batch_size=int(tuning["batch_size"]),
                                         seed=int(tuning["seed"]))
                report_kwargs.update(fine_tune_epochs=int(tuning["epochs"]),
                                     fine_tune_losses=[round(v, 6) for v in losses])
            codec.remove_pruning(network)
            network.eval()
            report_kwargs.update(sparsity=sparsity, structured=bool(structured),
                                 achieved_sparsity=codec.weight_sparsity(network, pruned))

        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        encoding, encoded = codec.encode_state(state, weight_names, METHODS[method])
        new_arrays = {k: v for k, v in arrays.items() if not k.startswith("state.")}
        new_arrays.update(encoded)
        new_meta = {k: copy.deepcopy(v) for k, v in metadata.items() if k not in _WRITER_KEYS}
        new_meta["predictor"] = dict(spec, weights=METHODS[method], encoding=encoding)

        # Size of the deflated arrays.npz before writing, so the stored report is complete
        # (the same np.savez_compressed call as write_artifact's: the same bytes).
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in new_arrays.items()})
        extra_bytes = sum(len(b) for b in extra_files.values())
        bytes_after = buffer.getbuffer().nbytes + extra_bytes
        report = CompressionReport(
            method=method, weights=METHODS[method], source=str(source if isinstance(model, (
                str, os.PathLike)) else f"<fitted {type(model).__name__}>"),
            output=str(out_path), bytes_before=int(bytes_before), bytes_after=int(bytes_after),
            ratio=round(bytes_before / bytes_after, 4), total_bytes_before=int(total_before),
            parameters=int(sum(v.numel() for v in state.values())), **report_kwargs)

        if eval_frame is not None:
            before = dense_predictor
            after = _predictor(new_meta, new_arrays, allowlist, str(out_path))
            name, report.metric_before, report.throughput_before = _evaluate(
                before, spec, eval_frame, label_col)
            _, report.metric_after, report.throughput_after = _evaluate(
                after, spec, eval_frame, label_col)
            report.metric, report.eval_rows = name, int(len(eval_frame))
        report.seconds = round(time.perf_counter() - started, 3)
        stored = report.to_dict()
        stored.pop("total_bytes_after")  # the size of the file this is written into
        new_meta["compression"] = stored
        write_artifact(out_path, new_meta, new_arrays, overwrite=overwrite,
                       files=extra_files or None, compress=True)
    report.total_bytes_after = _directory_bytes(out_path)
    return report
