"""Weight codecs for torch models: per-channel int8, magnitude pruning, sparse storage.

Pure torch/numpy (no pyspark), so that a serving process decoding a
compressed artifact never imports Spark.  What it does:

* **int8** — symmetric per-output-channel quantization of the weights of
  Conv1d/2d/3d and Linear layers: ``scale[c] = max|w[c]| / 127``,
  ``q = round(w / scale)`` in ``[-127, 127]``; ``deq = q · scale``, so
  ``|w − deq| ≤ scale/2`` element-wise.  Biases and every other tensor
  (norm statistics...) stay float32.  -128 is never used, so the range is
  symmetric and ``-q`` never overflows.
* **pruning** — :func:`prune_module` zeroes the smallest weights of every
  Conv/Linear layer with :mod:`torch.nn.utils.prune` (``l1_unstructured``,
  or ``ln_structured`` over output channels), keeping the masks so that a
  fine-tuning pass (:func:`fine_tune`) trains only the surviving weights;
  :func:`remove_pruning` then makes the zeros permanent (``prune.remove``).
* **sparse storage** — a pruned weight is stored as its nonzero values plus
  where they are, as whichever is smaller for that tensor: a packed bitmask
  (``np.packbits``, ``ceil(n/8)`` bytes) or int32 flat indices (``4·nnz``
  bytes).  The bitmask wins once more than 1/32 of the weights survive,
  i.e. for every sparsity below 96.9 %.  ``sparse-int8`` stores the
  surviving values as int8 with per-output-channel scales.

Layout (all open numpy arrays; ``decode_state`` never runs code): all
tensors share five flat pools so that a small model does not pay a zip entry
and an .npy header (~250 bytes) per tensor:

=================  =======  ==============================================
``enc.float32``    float32  dense tensors kept as float32, sparse float values
``enc.int8``       int8     quantized values (dense or the nonzeros)
``enc.scales``     float32  one scale per output channel of each int8 tensor
``enc.bitmask``    uint8    packed masks of sparse tensors stored by bitmask
``enc.indices``    int32    flat C-order indices of sparse tensors stored by index
=================  =======  ==============================================

``metadata["predictor"]["encoding"]["tensors"]`` lists, in state-dict order,
each tensor's ``name``, ``shape``, ``storage`` (``float32``, ``int8``,
``sparse-float32`` or ``sparse-int8``), and the ``[offset, count]`` of its
slice of each pool it uses.  Pools that no tensor uses are not written.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from sparkml_aiaas.errors import ConfigError, ModelFormatError

#: ``metadata["predictor"]["weights"]`` values this module writes (``dense`` is read too).
WEIGHT_FORMATS = ("int8", "sparse", "sparse-int8")
#: Layers whose ``weight`` is quantized / pruned (dim 0 = output channels for all of them).
COMPRESSIBLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ENCODING_VERSION = 1
QMAX = 127

_POOL_DTYPES = {"float32": np.float32, "int8": np.int8, "scales": np.float32,
                "bitmask": np.uint8, "indices": np.int32}
_STORAGES = ("float32", "int8", "sparse-float32", "sparse-int8")
#: Largest tensor a (possibly edited) encoding may declare: a sparse tensor is allocated
#: from its declared shape before its few stored values are placed.
MAX_TENSOR_VALUES = 2 ** 31


# --------------------------------------------------------------------------- quantization

def quantize_per_channel(weight: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of ``weight`` with one scale per output channel (dim 0).

    Returns ``(q, scale)``: ``q`` int8 of ``weight``'s shape, ``scale`` float32
    of shape ``(weight.shape[0],)``.  An all-zero channel gets scale 0 (its
    values dequantize to exactly 0).
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim < 1 or w.shape[0] == 0:
        raise ValueError(f"cannot quantize a tensor of shape {w.shape} per channel")
    flat = w.reshape(w.shape[0], -1)
    scale = (np.abs(flat).max(axis=1) / np.float32(QMAX)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))[:, None]
    q = np.clip(np.rint(flat / safe), -QMAX, QMAX).astype(np.int8)
    return q.reshape(w.shape), scale


def dequantize_per_channel(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``q · scale`` per output channel, float32."""
    q = np.asarray(q)
    scale = np.asarray(scale, dtype=np.float32)
    flat = q.reshape(q.shape[0], -1).astype(np.float32) * scale[:, None]
    return flat.reshape(q.shape)


# --------------------------------------------------------------------------- pruning

def compressible_weights(module: nn.Module) -> List[str]:
    """State-dict names of the Conv/Linear weights of ``module``, in module order."""
    return [f"{name}.weight" if name else "weight"
            for name, sub in module.named_modules() if isinstance(sub, COMPRESSIBLE_LAYERS)]


def _layers(module: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(name, sub) for name, sub in module.named_modules()
            if isinstance(sub, COMPRESSIBLE_LAYERS)]


def check_sparsity(sparsity: Any) -> float:
    """``sparsity`` as a float in [0, 1), or :class:`ConfigError`."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ConfigError(f"sparsity must be in [0, 1) (the fraction of weights set to zero), "
                          f"got {sparsity!r}")
    return value


def prune_module(module: nn.Module, sparsity: float, structured: bool = False) -> List[str]:
    """Zero the smallest-magnitude weights of each Conv/Linear layer, masks kept.

    Unstructured: ``prune.l1_unstructured`` removes ``round(sparsity · n)``
    weights of each layer.  Structured: ``prune.ln_structured`` (L2 norm,
    ``dim=0``) removes ``round(sparsity · out_channels)`` whole output
    channels (rows of a Linear, filters of a Conv); the last layer is left
    alone because its output channels are the model's outputs (pruning one
    would silence a class).  Each layer is pruned to the same fraction, so
    no layer is emptied while another keeps all its weights.

    The layers keep ``weight_orig`` and ``weight_mask`` (pruning hooks):
    fine-tune now if wanted, then call :func:`remove_pruning`.
    Returns the names of the pruned weights.
    """
    sparsity = check_sparsity(sparsity)
    layers = _layers(module)
    if not layers:
        raise ConfigError("the network has no Linear or Conv layers to prune")
    if structured:
        if len(layers) < 2:
            raise ConfigError("structured pruning needs at least two Linear/Conv layers: the "
                              "output layer's channels (the model's outputs) are never pruned")
        layers = layers[:-1]
    pruned = []
    for name, layer in layers:
        if structured:
            prune.ln_structured(layer, "weight", amount=sparsity, n=2, dim=0)
        else:
            prune.l1_unstructured(layer, "weight", amount=sparsity)
        pruned.append(f"{name}.weight" if name else "weight")
    return pruned


def remove_pruning(module: nn.Module) -> None:
    """Make pruning permanent: ``weight = weight_orig · mask`` as a plain parameter."""
    for _, layer in _layers(module):
        if prune.is_pruned(layer) and hasattr(layer, "weight_mask"):
            prune.remove(layer, "weight")


def weight_sparsity(module: nn.Module, names: Optional[Iterable[str]] = None) -> float:
    """Fraction of exact zeros among the Conv/Linear weights (or the named ones)."""
    wanted = set(names) if names is not None else None
    zeros = total = 0
    for name, layer in _layers(module):
        key = f"{name}.weight" if name else "weight"
        if wanted is not None and key not in wanted:
            continue
        w = layer.weight.detach()
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def fine_tune(module: nn.Module, X: np.ndarray, y: np.ndarray, task: str = "classification",
              epochs: int = 2, lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> List[float]:
    """A few epochs of single-process Adam on ``(X, y)``; returns the mean loss of each epoch.

    Run between :func:`prune_module` and :func:`remove_pruning`: the pruning
    hooks multiply ``weight_orig`` by the mask on every forward pass, so the
    pruned weights get zero gradient and stay zero while the others adapt.
    ``X`` is already shaped for the network's forward (e.g. ``(n, 1, 8, 8)``).
    Classification uses cross-entropy on integer labels, regression MSE.
    """
    if epochs < 1:
        raise ConfigError(f"fine-tuning epochs must be >= 1, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    features = torch.as_tensor(np.asarray(X, dtype=np.float32))
    if task == "classification":
        targets = torch.as_tensor(np.asarray(y).astype(np.int64))
        loss_fn = nn.CrossEntropyLoss()
    else:
        targets = torch.as_tensor(np.asarray(y, dtype=np.float32))
        loss_fn = nn.MSELoss()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    was_training = module.training
    module.train()
    history = []
    n = features.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            out = module(features[idx])
            if task != "classification":
                out = out.reshape(targets[idx].shape)
            loss = loss_fn(out, targets[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
    module.train(was_training)
    return history


# --------------------------------------------------------------------------- encoding

class _Pools:
    def __init__(self):
        self.parts: Dict[str, List[np.ndarray]] = {k: [] for k in _POOL_DTYPES}
        self.sizes: Dict[str, int] = {k: 0 for k in _POOL_DTYPES}

    def add(self, pool: str, values: np.ndarray) -> List[int]:
        values = np.ascontiguousarray(values, dtype=_POOL_DTYPES[pool]).ravel()
        span = [self.sizes[pool], int(values.size)]
        self.parts[pool].append(values)
        self.sizes[pool] += int(values.size)
        return span

    def arrays(self) -> Dict[str, np.ndarray]:
        return {f"enc.{k}": np.concatenate(v) for k, v in self.parts.items() if self.sizes[k]}


def _as_numpy(tensor) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    return np.asarray(tensor)


def encode_state(state: Mapping[str, Any], weight_names: Sequence[str],
                 fmt: str) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Encode a state dict: ``(encoding metadata, arrays)``.

    ``weight_names`` are the tensors to quantize / store sparse (the
    Conv/Linear weights, :func:`compressible_weights`); the others are kept
    as float32.  ``fmt`` is ``"int8"`` (dense int8 weights), ``"sparse"``
    (nonzero float32 values + positions) or ``"sparse-int8"``.  Put the
    metadata at ``metadata["predictor"]["encoding"]`` and the arrays in the
    artifact; :func:`decode_state` inverts it.
    """
    if fmt not in WEIGHT_FORMATS:
        raise ConfigError(f"unknown weights format {fmt!r}; expected one of {list(WEIGHT_FORMATS)}")
    missing = [n for n in weight_names if n not in state]
    if missing:
        raise ConfigError(f"weights {missing} are not in the state dict")
    targets = set(weight_names)
    pools = _Pools()
    tensors = []
    for name, tensor in state.items():
        value = _as_numpy(tensor)
        entry: Dict[str, Any] = {"name": name, "shape": list(value.shape)}
        if name not in targets or value.ndim < 2:
            entry["storage"] = "float32"
            entry["float32"] = pools.add("float32", value.astype(np.float32))
        elif fmt == "int8":
            q, scale = quantize_per_channel(value)
            entry["storage"] = "int8"
            entry["int8"] = pools.add("int8", q)
            entry["scales"] = pools.add("scales", scale)
        else:
            value = value.astype(np.float32)
            mask = value.ravel() != 0
            nnz = int(mask.sum())
            # Positions as a bitmask or as indices, whichever takes fewer bytes.
            if 4 * nnz < (mask.size + 7) // 8:
                entry["indices"] = pools.add("indices", np.flatnonzero(mask).astype(np.int32))
            else:
                entry["bitmask"] = pools.add("bitmask", np.packbits(mask))
            if fmt == "sparse":
                entry["storage"] = "sparse-float32"
                entry["float32"] = pools.add("float32", value.ravel()[mask])
            else:
                q, scale = quantize_per_channel(value)
                entry["storage"] = "sparse-int8"
                entry["int8"] = pools.add("int8", q.ravel()[mask])
                entry["scales"] = pools.add("scales", scale)
            entry["nnz"] = nnz
        tensors.append(entry)
    return {"version": ENCODING_VERSION, "format": fmt, "tensors": tensors}, pools.arrays()


def _slice(arrays: Mapping[str, np.ndarray], entry: Mapping[str, Any], pool: str) -> np.ndarray:
    key = f"enc.{pool}"
    span = entry.get(pool)
    if not (isinstance(span, list) and len(span) == 2):
        raise ModelFormatError(f"tensor {entry.get('name')!r} ({entry.get('storage')}) has no "
                               f"valid {pool!r} span in its encoding")
    if key not in arrays:
        raise ModelFormatError(f"compressed weights need array {key!r}, which the artifact lacks")
    data = np.asarray(arrays[key])
    if data.dtype != _POOL_DTYPES[pool] or data.ndim != 1:
        raise ModelFormatError(f"array {key!r} must be 1-D {np.dtype(_POOL_DTYPES[pool]).name}, "
                               f"found {data.dtype} of shape {data.shape}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in span):
        raise ModelFormatError(f"tensor {entry.get('name')!r:.80}: span {span!r:.80} is not two "
                               "integers")
    start, count = span
    if start < 0 or count < 0 or start + count > data.size:
        raise ModelFormatError(f"tensor {entry.get('name')!r}: span {span} is outside {key!r} "
                               f"({data.size} values)")
    return data[start:start + count]


def _decode_tensor(arrays: Mapping[str, np.ndarray], entry: Mapping[str, Any]) -> np.ndarray:
    name, storage = entry.get("name"), entry.get("storage")
    shape = entry.get("shape", [])
    if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ModelFormatError(f"tensor {name!r:.80}: shape {shape!r:.80} is not a list of "
                               "sizes")
    shape = tuple(shape)
    size = int(np.prod(shape, dtype=object)) if shape else 1
    if size > MAX_TENSOR_VALUES:
        raise ModelFormatError(f"tensor {name!r:.80}: shape {list(shape)} has more than "
                               f"{MAX_TENSOR_VALUES} values")
    if not isinstance(storage, str) or storage not in _STORAGES:
        raise ModelFormatError(f"tensor {name!r} has unknown storage {storage!r}; "
                               f"expected one of {list(_STORAGES)}")
    if storage in ("float32", "int8"):
        values = _slice(arrays, entry, storage)
        if values.size != size:
            raise ModelFormatError(f"tensor {name!r}: {values.size} values for shape {list(shape)}")
        if storage == "float32":
            return values.reshape(shape).astype(np.float32)
        scale = _slice(arrays, entry, "scales")
        if len(shape) < 1 or scale.size != shape[0]:
            raise ModelFormatError(f"tensor {name!r}: {scale.size} scales for {shape[:1]} channels")
        return dequantize_per_channel(values.reshape(shape), scale)
    # sparse: positions from a bitmask or indices, then the values in C order
    if "bitmask" in entry:
        packed = _slice(arrays, entry, "bitmask")
        if packed.size != (size + 7) // 8:
            raise ModelFormatError(f"tensor {name!r}: bitmask of {packed.size} bytes for {size} "
                                   "weights")
        positions = np.flatnonzero(np.unpackbits(packed, count=size))
    else:
        positions = _slice(arrays, entry, "indices").astype(np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= size):
            raise ModelFormatError(f"tensor {name!r}: indices outside [0, {size})")
    pool = "float32" if storage == "sparse-float32" else "int8"
    values = _slice(arrays, entry, pool)
    if values.size != positions.size:
        raise ModelFormatError(f"tensor {name!r}: {values.size} values for {positions.size} "
                               "nonzero positions")
    flat = np.zeros(size, dtype=np.float32)
    if storage == "sparse-float32":
        flat[positions] = values
        return flat.reshape(shape)
    scale = _slice(arrays, entry, "scales")
    if len(shape) < 1 or scale.size != shape[0]:
        raise ModelFormatError(f"tensor {name!r}: {scale.size} scales for {shape[:1]} channels")
    per_row = size // shape[0] if shape[0] else 0
    flat[positions] = values.astype(np.float32) * scale[positions // max(per_row, 1)]
    return flat.reshape(shape)


def decode_state(metadata: Mapping[str, Any],
                 arrays: Mapping[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """The float32 state dict of a torch model artifact, whatever its weights format.

    ``metadata`` is the artifact metadata (or its ``predictor`` section);
    ``metadata["predictor"]["weights"]`` names the format: ``dense`` (arrays
    ``state.<name>``), ``int8``, ``sparse`` or ``sparse-int8`` (the pools
    described in the module docstring).  Only numpy arithmetic on arrays
    loaded with ``allow_pickle=False``: decoding never runs code.
    """
    spec = metadata.get("predictor", metadata) if isinstance(metadata, Mapping) else None
    if not isinstance(spec, Mapping):
        raise ModelFormatError("model metadata has no 'predictor' section")
    fmt = spec.get("weights", "dense")
    if fmt == "dense":
        bad = [k for k, v in arrays.items()
               if k.startswith("state.") and v.dtype.kind not in "biuf"]
        if bad:
            raise ModelFormatError(f"dense torch weights {bad[:3]} do not hold numbers")
        state = {k[len("state."):]: torch.from_numpy(np.array(v, dtype=np.float32))
                 for k, v in arrays.items() if k.startswith("state.")}
        if not state:
            raise ModelFormatError("dense torch weights: the artifact has no 'state.*' arrays")
        return state
    if fmt not in WEIGHT_FORMATS:
        raise ModelFormatError(f"unknown torch weights format {fmt!r}; this sparkml_aiaas reads "
                               f"{['dense', *WEIGHT_FORMATS]}")
    encoding = spec.get("encoding")
    if not isinstance(encoding, Mapping) or not isinstance(encoding.get("tensors"), list):
        raise ModelFormatError(f"{fmt} torch weights: metadata['predictor']['encoding'] is "
                               "missing or has no 'tensors' list")
    if encoding.get("version") != ENCODING_VERSION:
        raise ModelFormatError(f"weights encoding version {encoding.get('version')!r} is not "
                               f"supported (this sparkml_aiaas reads {ENCODING_VERSION})")
    state = {}
    for entry in encoding["tensors"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ModelFormatError(f"{fmt} torch weights: encoding entry {entry!r:.80} has no "
                                   "tensor name")
        state[entry["name"]] = torch.from_numpy(np.ascontiguousarray(
            _decode_tensor(arrays, entry)))
    return state


def state_sparsity(state: Mapping[str, Any], names: Iterable[str]) -> float:
    """Fraction of exact zeros over the named tensors of a state dict."""
    zeros = total = 0
    for name in names:
        value = _as_numpy(state[name])
        zeros += int((value == 0).sum())
        total += value.size
    return zeros / total if total else 0.0
