"""Spark-free predictor of the PyTorch models (family ``"torch"``).

Built from a saved artifact: the architecture spec in ``metadata["predictor"]`` and the
weights as plain numpy arrays (``arrays.npz``, ``"state.<name>"``), so loading never unpickles
anything.  A factory architecture names an installed function; it is imported only when the
predictor's allowlist (:mod:`sparkml_aiaas.models.trust`) holds it, checked when the predictor
is made and again, before any import, wherever the network is built (a Spark executor
included: the allowlist is pickled with the predictor).  Weights
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
from sparkml_aiaas.models.artifact import (as_int, feature_inputs, int_list, name_map,
                                           predictor_section)
from sparkml_aiaas.models.predictor_base import Predictor
from sparkml_aiaas.models.trust import Allowlist, trusted

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


def _shown(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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


def _network(spec: Dict[str, Any], state: Dict[str, np.ndarray], digest: str,
             allowlist: Allowlist):
    with _LOCK:
        module = _NETWORKS.get(digest)
        if module is None:
            import torch

            from sparkml_aiaas.core.torch_nets import build_network

            try:
                module = build_network(spec, factories=allowlist.resolve)
                module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                       strict=True)
            except ModelFormatError:
                raise
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                # NetworkSpecError is a ValueError; a byte order or dtype torch cannot take too.
                raise ModelFormatError(
                    f"cannot rebuild the torch network {_shown(spec)}: {exc}") from None
            # float64 inference (see predict_outputs): the same numbers in every batch.
            module.eval().double()
            _NETWORKS[digest] = module
    return module


def _scaling_of(spec: Dict[str, Any], arrays: Dict[str, np.ndarray]):
    """The stored standardization (``predictor.scaling == "standard"``), or None for a model
    without one (all models saved before it existed)."""
    kind = spec.get("scaling")
    if kind is None:
        return None
    if kind != "standard":
        raise ModelFormatError(f"unknown torch input scaling {_shown(kind)}; expected "
                               "'standard'")
    from sparkml_aiaas.core.torch_nets import Scaling

    shape = spec.get("input_shape")
    try:
        n_features = int(np.prod([int(s) for s in shape])) if shape else 0
        return Scaling.from_arrays(arrays, n_features)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"torch model scaling arrays are damaged: {exc}") from None


class TorchPredictor(Predictor):
    """Predictions of a torch network from columns of a pandas DataFrame or numpy arrays.

    The feature matrix is float32 (:attr:`feature_dtype`), as the network was trained on.

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
    trusted_factories : list of str or Allowlist, optional
        The factories this predictor may import (see :mod:`sparkml_aiaas.models.trust`).
        Default: exactly the one ``architecture`` names -- whoever constructs a predictor
        from code chose it; :meth:`from_artifact` passes the loading call's allowlist.
    scaling : sparkml_aiaas.core.torch_nets.Scaling, optional
        The standardization the network was trained behind (``standardization=True``):
        features are standardized (in float64, then rounded to float32) before the network
        and a regressor's outputs mapped back to the label's units.  None (every model saved
        before it existed): the network takes the raw features.
    """

    #: load_predictor passes its allowlist: the architecture may name code.
    names_code = True
    feature_dtype = np.float32

    def __init__(self, architecture: Dict[str, Any], state: Dict[str, np.ndarray], task: str,
                 input_shape: Sequence[int], feature_cols: Optional[List[str]] = None,
                 vector_col: Optional[str] = None, num_classes: int = 0,
                 output_names: Optional[Dict[str, str]] = None,
                 metadata: Optional[Dict[str, Any]] = None,
                 trusted_factories=None, where: str = "this torch model", scaling=None):
        if not isinstance(architecture, dict):
            raise ModelFormatError(f"a torch architecture must be a spec dict, got "
                                   f"{_shown(architecture)}")
        self.architecture = dict(architecture)
        self.trusted_factories = (Allowlist.of_spec(architecture) if trusted_factories is None
                                  else trusted(trusted_factories))
        self._where = where
        self._check_trust()
        if not isinstance(task, str) or task not in _OUTPUTS:
            raise ModelFormatError(f"unknown torch model task {_shown(task)}; expected one of "
                                   f"{list(_OUTPUTS)}")
        self.feature_cols, self.vector_col = feature_inputs(feature_cols, vector_col,
                                                            "a torch predictor")
        self.state = {str(k): np.asarray(v) for k, v in state.items()}
        self.task = task
        self.input_shape = int_list(input_shape, "input_shape", minimum=1)
        if not self.input_shape:
            raise ModelFormatError("a torch predictor needs a non-empty input_shape")
        if self.feature_cols and len(self.feature_cols) != self.n_features:
            raise ModelFormatError(
                f"input_shape {self.input_shape} holds {self.n_features} values but "
                f"{len(self.feature_cols)} feature columns are named")
        self.num_classes = as_int(num_classes, "num_classes", minimum=0)
        if task == "classification" and self.num_classes < 2:
            raise ModelFormatError(f"a torch classifier needs num_classes >= 2, got "
                                   f"{self.num_classes}")
        self.output_names = name_map(output_names, "output_names")
        self.metadata = metadata
        self.scaling = scaling
        if scaling is not None and scaling.input_mean is not None \
                and scaling.input_mean.shape != (self.n_features,):
            raise ModelFormatError(f"the input scaling holds {scaling.input_mean.shape[0]} "
                                   f"values, but input_shape {self.input_shape} needs "
                                   f"{self.n_features}")
        self._digest = _digest(self.architecture, self.state)
        self._module = None

    # Pickled for Spark as spec + arrays (plain numpy), never as a torch module.
    def __getstate__(self):
        d = dict(self.__dict__)
        d["_module"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)

    def _check_trust(self) -> None:
        """Refuse (before any import) a factory this predictor's allowlist does not hold."""
        if self.architecture.get("type") == "factory":
            self.trusted_factories.check(self.architecture.get("factory"), self._where)

    @property
    def network(self):
        """The ``torch.nn.Module`` (eval mode), built once per process and shared."""
        if self._module is None:
            # Again here: this may be an executor that unpickled the predictor.
            self._check_trust()
            self._module = _network(self.architecture, self.state, self._digest,
                                    self.trusted_factories)
        return self._module

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    def canonical_outputs(self) -> List[tuple]:
        return _OUTPUTS[self.task]

    def network_inputs(self, frame: pd.DataFrame) -> np.ndarray:
        """What the network is fed for the rows of ``frame``: the features, standardized when
        the model has a :attr:`scaling` (float32, ``(n, prod(input_shape))``)."""
        return self._scaled(np.ascontiguousarray(self.features(frame), dtype=np.float32))

    def network_targets(self, y: np.ndarray) -> np.ndarray:
        """A regressor's labels in the units its network outputs (standardized with
        :attr:`scaling`); class labels unchanged."""
        if self.task == "regression" and self.scaling is not None:
            return self.scaling.targets(y)
        return np.asarray(y)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        if self.scaling is None or self.scaling.input_mean is None:
            return X
        return self.scaling.inputs(X)

    def predict_arrays(self, X: np.ndarray) -> Dict[str, np.ndarray]:
        """Output arrays keyed by canonical output name; rows with a non-finite feature get NaN."""
        from sparkml_aiaas.core.torch_nets import predict_outputs

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataValidationError(
                f"expected {self.n_features} features (input shape {self.input_shape}), got "
                f"shape {X.shape}")
        bad = ~np.isfinite(X).all(axis=1)
        if _in_spark_task():
            import torch

            torch.set_num_threads(1)  # one task per core; serving keeps torch's threads
        k = self.num_classes if self.task == "classification" else 1
        if X.shape[0] == 0:
            out = np.empty((0, k))
        else:
            out = predict_outputs(self.network, self._scaled(X), self.input_shape,
                                  INFERENCE_BATCH_ROWS)
        if bad.any():
            out[bad] = np.nan
        if self.task == "regression":
            if self.scaling is not None:
                # float32-rounded like every output (the same numbers on every path).
                return {"prediction": self.scaling.outputs(out[:, 0]).astype(np.float32)
                        .astype(np.float64)}
            return {"prediction": out[:, 0]}
        shifted = out - out.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probability = exp / exp.sum(axis=1, keepdims=True)
        prediction = np.argmax(out, axis=1).astype(np.float64)
        prediction[bad] = np.nan
        return {"rawPrediction": out, "probability": probability, "prediction": prediction}

    @classmethod
    def from_artifact(cls, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray],
                      trusted_factories=None, where: str = "a saved torch model"):
        """The predictor of a saved model; its factory (if any) must be in
        ``trusted_factories`` (plus :data:`~sparkml_aiaas.models.trust.ENV_VAR`), checked here
        before anything is imported."""
        spec = predictor_section(metadata, "torch")
        allowlist = trusted(trusted_factories)
        architecture = spec.get("architecture")
        if isinstance(architecture, dict) and architecture.get("type") == "factory":
            allowlist.check(architecture.get("factory"), where)  # before decoding anything
        weights = spec.get("weights", "dense")
        if weights == "dense":
            state = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
            bad = [k for k, v in state.items() if v.dtype.kind not in "biuf"]
            if bad:
                raise ModelFormatError(f"torch weights {bad[:3]} do not hold numbers")
        else:
            try:
                from sparkml_aiaas.compress.codec import decode_state
            except ImportError:
                raise ModelFormatError(
                    f"this torch model stores its weights as {_shown(weights)}, which needs "
                    "sparkml_aiaas.compress (not available in this installation)") from None
            state = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
                     for k, v in decode_state(metadata, arrays).items()}
        if not state:
            raise ModelFormatError("torch model artifact holds no 'state.*' arrays")
        scaling = _scaling_of(spec, arrays)
        return cls(
            scaling=scaling,
            architecture=architecture, state=state, task=spec.get("task"),
            input_shape=spec.get("input_shape"), feature_cols=spec.get("feature_cols"),
            vector_col=spec.get("vector_col"), num_classes=spec.get("num_classes") or 0,
            output_names=spec.get("output_names"), metadata=metadata,
            trusted_factories=allowlist, where=where)
