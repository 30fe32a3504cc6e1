"""Spark-free predictor of the PyTorch models (family ``"torch"``).

Built from a saved artifact: the architecture spec in ``metadata["predictor"]`` and the
weights as plain numpy arrays (``arrays.npz``, ``"state.<name>"``), so loading never unpickles
anything; a factory architecture imports the installed function the spec names.  Weights
stored in another format (``metadata["predictor"]["weights"] != "dense"``, e.g. compressed) are
decoded by :func:`sparkml_aiaas.compress.codec.decode_state`.

The same object scores Arrow batches in Spark (pickled as its spec and arrays; the network is
rebuilt once per Python worker), the REST server and plain Python.  Inference runs in batches
of :data:`INFERENCE_BATCH_ROWS` under ``torch.inference_mode()``, in float64 with the outputs
rounded to float32, so that a row gets the same numbers whatever batch it arrives in (float32
kernels differ in the last bits with the batch's size and alignment).  This module imports no
pyspark.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from sparkml_aiaas.errors import DataValidationError, ModelFormatError

INFERENCE_BATCH_ROWS = 4096

_OUTPUTS = {
    "classification": [("rawPrediction", "array<double>"), ("probability", "array<double>"),
                       ("prediction", "double")],
    "regression": [("prediction", "double")],
}

_LOCK = threading.Lock()
#: digest of (spec, weights) -> network, in this Python process: a Spark Python worker
#: rebuilds a model's network once, however many tasks and batches it scores.
_NETWORKS: Dict[str, Any] = {}


def _digest(spec: Dict[str, Any], state: Dict[str, np.ndarray]) -> str:
    import json

    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for name in sorted(state):
        value = np.ascontiguousarray(state[name])
        h.update(name.encode())
        h.update(str(value.dtype).encode() + str(value.shape).encode())
        h.update(memoryview(value).cast("B"))
    return h.hexdigest()


def _in_spark_task() -> bool:
    """Whether this process is running a Spark task (pyspark already imported, task context
    set); never imports pyspark itself."""
    pyspark = sys.modules.get("pyspark")
    if pyspark is None:
        return False
    try:
        return pyspark.TaskContext.get() is not None
    except Exception:  # pragma: no cover - an unusual pyspark build
        return False


def _network(spec: Dict[str, Any], state: Dict[str, np.ndarray], digest: str):
    with _LOCK:
        module = _NETWORKS.get(digest)
        if module is None:
            import torch

            from sparkml_aiaas.core.torch_nets import NetworkSpecError, build_network

            try:
                module = build_network(spec)
                module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                       strict=True)
            except (NetworkSpecError, RuntimeError, KeyError, TypeError) as exc:
                raise ModelFormatError(f"cannot rebuild the torch network {spec}: {exc}") from None
            # float64 inference (see predict_outputs): the same numbers in every batch.
            module.eval().double()
            _NETWORKS[digest] = module
    return module


class TorchPredictor:
    """Predictions of a torch network from columns of a pandas DataFrame.

    Parameters
    ----------
    architecture : dict
        The network spec (:func:`sparkml_aiaas.core.torch_nets.build_network`).
    state : dict of str to ndarray
        The network's ``state_dict`` as numpy arrays (names without the ``state.`` prefix).
    task : {"classification", "regression"}
    input_shape : list of int
        Shape of one row's input; the features (``prod(input_shape)`` values) are reshaped to it.
    feature_cols / vector_col
        Numeric input columns, or one column holding arrays (or vectors).
    num_classes : int
        Classes of a classifier (0 for a regressor).
    output_names : dict, optional
        Renames of the output columns.
    """

    def __init__(self, architecture: Dict[str, Any], state: Dict[str, np.ndarray], task: str,
                 input_shape: Sequence[int], feature_cols: Optional[List[str]] = None,
                 vector_col: Optional[str] = None, num_classes: int = 0,
                 output_names: Optional[Dict[str, str]] = None,
                 metadata: Optional[Dict[str, Any]] = None):
        if task not in _OUTPUTS:
            raise ModelFormatError(f"unknown torch model task {task!r}; expected one of "
                                   f"{list(_OUTPUTS)}")
        if bool(feature_cols) == bool(vector_col):
            raise ModelFormatError("a torch predictor needs exactly one of feature_cols or vector_col")
        self.architecture = dict(architecture)
        self.state = {k: np.asarray(v) for k, v in state.items()}
        self.task = task
        self.input_shape = [int(s) for s in input_shape]
        self.feature_cols = list(feature_cols) if feature_cols else None
        self.vector_col = vector_col
        self.num_classes = int(num_classes)
        self.output_names = dict(output_names or {})
        self.metadata = metadata
        self._digest = _digest(self.architecture, self.state)
        self._module = None

    # Pickled for Spark as spec + arrays (plain numpy), never as a torch module.
    def __getstate__(self):
        d = dict(self.__dict__)
        d["_module"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)

    @property
    def network(self):
        """The ``torch.nn.Module`` (eval mode), built once per process and shared."""
        if self._module is None:
            self._module = _network(self.architecture, self.state, self._digest)
        return self._module

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def input_columns(self) -> List[str]:
        return list(self.feature_cols) if self.feature_cols else [self.vector_col]

    @property
    def output_columns(self) -> List[tuple]:
        return [(self.output_names.get(n, n), t) for n, t in _OUTPUTS[self.task]]

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``(n, prod(input_shape))`` float32 feature matrix of a pandas DataFrame."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataValidationError(
                f"input is missing column(s) {missing}; the model needs {self.input_columns}")
        d = self.n_features
        if self.feature_cols:
            try:
                return frame[self.feature_cols].to_numpy(dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise DataValidationError(f"feature columns must be numeric: {exc}") from None
        cells = frame[self.vector_col].to_numpy()
        if len(cells) == 0:
            return np.empty((0, d), dtype=np.float32)
        sizes = {len(c) if c is not None else -1 for c in cells}
        if sizes != {d}:
            raise DataValidationError(
                f"column {self.vector_col!r} must hold arrays of {d} values (input shape "
                f"{self.input_shape}); found sizes {sorted(sizes)} (-1 = null)")
        return np.stack([np.asarray(c, dtype=np.float32) for c in cells])

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name; rows with a non-finite feature get NaN."""
        from sparkml_aiaas.core.torch_nets import predict_outputs

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataValidationError(
                f"expected {self.n_features} features (input shape {self.input_shape}), got "
                f"shape {X.shape}")
        if _in_spark_task():
            import torch

            torch.set_num_threads(1)  # one task per core; serving keeps torch's threads
        k = self.num_classes if self.task == "classification" else 1
        if X.shape[0] == 0:
            out = np.empty((0, k))
        else:
            out = predict_outputs(self.network, X, self.input_shape, INFERENCE_BATCH_ROWS)
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            out[bad] = np.nan
        if self.task == "regression":
            return {"prediction": out[:, 0]}
        shifted = out - out.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probability = exp / exp.sum(axis=1, keepdims=True)
        prediction = np.argmax(out, axis=1).astype(np.float64)
        prediction[bad] = np.nan
        return {"rawPrediction": out, "probability": probability, "prediction": prediction}

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predict_matrix(self.features(frame), index=frame.index)

    def predict_matrix(self, X: np.ndarray, index=None) -> pd.DataFrame:
        out = self.predict_arrays(X)
        columns = {}
        for name, _ in _OUTPUTS[self.task]:
            values = out[name]
            columns[self.output_names.get(name, name)] = list(values) if values.ndim == 2 else values
        return pd.DataFrame(columns, index=index)

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]):
        spec = metadata.get("predictor")
        if not spec or spec.get("family") != "torch":
            raise ModelFormatError("model metadata has no torch 'predictor' section")
        weights = spec.get("weights", "dense")
        if weights == "dense":
            state = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
        else:
            try:
                from sparkml_aiaas.compress.codec import decode_state
            except ImportError:
                raise ModelFormatError(
                    f"this torch model stores its weights as {weights!r}, which needs "
                    "sparkml_aiaas.compress (not available in this installation)") from None
            state = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
                     for k, v in decode_state(metadata, arrays).items()}
        if not state:
            raise ModelFormatError("torch model artifact holds no 'state.*' arrays")
        return cls(
            architecture=spec["architecture"], state=state, task=spec["task"],
            input_shape=spec["input_shape"], feature_cols=spec.get("feature_cols"),
            vector_col=spec.get("vector_col"), num_classes=int(spec.get("num_classes") or 0),
            output_names=spec.get("output_names"), metadata=metadata)
