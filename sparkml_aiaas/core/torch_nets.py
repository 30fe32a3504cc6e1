"""PyTorch networks for the distributed gradient engine: architectures, flat parameters,
per-block loss and gradient sums, and local optimizer steps on one block.

Nothing here imports pyspark: the Spark side (:mod:`sparkml_aiaas.engine.torch_loop`) runs
these functions inside tasks on executor-resident blocks, the tests run them on plain numpy
arrays, and the Spark-free predictor builds its network with :func:`build_network`.

Architectures are described by a JSON-able *spec*, never by pickled code:

* ``{"type": "mlp", "input_size": 50, "hidden_layers": [128, 64], "output_size": 10}``
* ``{"type": "cnn", "input_shape": [1, 8, 8], "num_classes": 10}`` — LeNet-5 with "same"
  padding (so 8×8 inputs fit): conv 5×5 (6) → ReLU → max-pool 2 → conv 5×5 (16) → ReLU →
  max-pool 2 → fully connected 120 → 84 → classes.
* ``{"type": "factory", "factory": "pkg.module:function", "kwargs": {...}}`` — an importable,
  installed function returning a ``torch.nn.Module``.  Training imports it (the user named it
  in code); a spec read from a saved model is built with ``factories=`` an allowlist's
  :meth:`~sparkml_aiaas.models.trust.Allowlist.resolve`, which refuses an untrusted name
  before importing anything.

Parameters travel as one float64 vector (:func:`get_vector` / :func:`set_vector`, in
``module.parameters()`` order): the driver's optimizer rules of
:mod:`sparkml_aiaas.core.first_order` work on it unchanged.
"""

from __future__ import annotations

import importlib
import json
import threading
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sparkml_aiaas.core.first_order import RuleSettings, State, apply_update
from sparkml_aiaas.core.merge import LossGradient
from sparkml_aiaas.core.stochastic import block_rng

#: Network types of a spec.
NETWORK_TYPES = ("mlp", "cnn", "factory")
#: What the network learns: class logits (cross-entropy) or one value (squared error).
TASKS = ("classification", "regression")
#: Rows per forward/backward chunk in a full-block pass: bounds activation memory (a 28×28
#: CNN holds ~40 kB of activations per row) while the gradient accumulates over chunks.
GRAD_CHUNK_ROWS = 4096


class NetworkSpecError(ValueError):
    """A spec that cannot be built (unknown type, bad sizes, a factory that is not importable)."""


# --------------------------------------------------------------------------- architectures
def _mlp(spec: Dict[str, Any]) -> nn.Module:
    try:
        input_size = int(spec["input_size"])
        output_size = int(spec["output_size"])
    except (KeyError, TypeError, ValueError):
        raise NetworkSpecError(f"an mlp spec needs integer input_size and output_size: {spec}") from None
    hidden = [int(h) for h in spec.get("hidden_layers", [])]
    if input_size < 1 or output_size < 1 or any(h < 1 for h in hidden):
        raise NetworkSpecError(f"mlp layer sizes must be >= 1: {spec}")
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(flatten=nn.Flatten())
    width = input_size
    for i, h in enumerate(hidden):
        layers[f"fc{i + 1}"] = nn.Linear(width, h)
        layers[f"relu{i + 1}"] = nn.ReLU()
        width = h
    layers["out"] = nn.Linear(width, output_size)
    return nn.Sequential(layers)


def _cnn(spec: Dict[str, Any]) -> nn.Module:
    shape = [int(s) for s in spec.get("input_shape", [])]
    if len(shape) != 3 or min(shape) < 1:
        raise NetworkSpecError(f"a cnn needs input_shape [channels, height, width], got {shape}")
    channels, height, width = shape
    if height < 4 or width < 4:
        # Two 2×2 max-pools: anything under 4×4 pools away to nothing.
        raise NetworkSpecError(f"a cnn needs images of at least 4×4 pixels, got {height}×{width}")
    outputs = int(spec.get("num_classes", spec.get("output_size", 0)))
    if outputs < 1:
        raise NetworkSpecError(f"a cnn spec needs num_classes (or output_size) >= 1: {spec}")
    # padding=2 keeps each 5×5 convolution's output the size of its input ("same"), so an
    # 8×8 digit pools to 4×4, then 2×2; a 28×28 image to 14×14, then 7×7.
    flat = 16 * (height // 4) * (width // 4)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 6, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5, padding=2), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(flat, 120), relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        out=nn.Linear(84, outputs),
    ))


def import_factory(path: str):
    """The function named ``"pkg.module:function"`` (a dotted attribute path after the colon)."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise NetworkSpecError(
            f"a network factory must be named 'pkg.module:function', got {path!r}")
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise NetworkSpecError(
            f"network factory {path!r} cannot be imported ({exc}); it must be an installed "
            "module (or shipped to the executors with SparkContext.addPyFile)") from None
    if not callable(target):
        raise NetworkSpecError(f"network factory {path!r} is not callable")
    return target


def factory_path(function) -> str:
    """``"module:qualname"`` of a module-level function, checked to import back to itself."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or "<" in qualname:
        raise NetworkSpecError(
            f"{function!r} is not an importable module-level function: define the factory at "
            "the top level of an installed module")
    path = f"{module}:{qualname}"
    if module == "__main__" or import_factory(path) is not function:
        raise NetworkSpecError(
            f"factory {path!r} does not import back to the same function: define it in an "
            "installed module (not __main__)")
    return path


def build_network(spec: Dict[str, Any], seed: Optional[int] = None,
                  factories: Optional[Callable[[str], Callable]] = None) -> nn.Module:
    """The ``torch.nn.Module`` a spec describes (float32, CPU).

    With ``seed`` the initial weights are a pure function of it (torch's global RNG is
    forked, so the caller's random state is left as it was).  ``factories`` turns a
    factory name into the function (default :func:`import_factory`, for specs the caller
    wrote itself); loaders pass an allowlist's ``resolve``.
    """
    if not isinstance(spec, dict) or spec.get("type") not in NETWORK_TYPES:
        raise NetworkSpecError(
            f"network spec must be a dict with type in {list(NETWORK_TYPES)}, got {spec!r}")

    def build() -> nn.Module:
        kind = spec["type"]
        if kind == "mlp":
            return _mlp(spec)
        if kind == "cnn":
            return _cnn(spec)
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise NetworkSpecError(f"a factory spec's kwargs must be a dict, got {kwargs!r:.80}")
        factory = (factories or import_factory)(spec.get("factory", ""))
        module = factory(**kwargs)
        if not isinstance(module, nn.Module):
            raise NetworkSpecError(
                f"network factory {spec.get('factory')!r} returned a {type(module).__name__}, "
                "not a torch.nn.Module")
        return module

    if seed is None:
        module = build()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
            module = build()
    return module.float()


def spec_key(spec: Dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


_CACHE_LOCK = threading.Lock()
_CACHED: Dict[Tuple[str, str], nn.Module] = {}


def cached_network(spec: Dict[str, Any], device: str = "cpu") -> nn.Module:
    """One network per (spec, device) per Python process: a reused Spark Python worker builds
    (and imports a factory for) it once, not on every task.  Callers always load the
    broadcast parameters into it before use, so whatever the last task left does not matter.
    """
    key = (spec_key(spec), str(device))
    with _CACHE_LOCK:
        module = _CACHED.get(key)
        if module is None:
            module = build_network(spec).to(device)
            _CACHED[key] = module
    return module


def output_size(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Outputs per row of ``module`` for inputs of ``input_shape`` (one dummy forward)."""
    with torch.inference_mode():
        out = module(torch.zeros((2, *[int(s) for s in input_shape]), dtype=torch.float32))
    if out.ndim != 2:
        raise NetworkSpecError(
            f"the network must output a (rows, outputs) matrix; for inputs {list(input_shape)} "
            f"it returned shape {list(out.shape)}")
    return int(out.shape[1])


# --------------------------------------------------------------------------- parameters and state
def get_vector(module: nn.Module) -> np.ndarray:
    """All parameters as one float64 vector (``parameters_to_vector`` order)."""
    with torch.no_grad():
        vec = nn.utils.parameters_to_vector(list(module.parameters()))
    return vec.detach().cpu().numpy().astype(np.float64)


def set_vector(module: nn.Module, x: np.ndarray) -> None:
    """Load a flat vector (float64 on the driver) into the parameters, as float32."""
    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    vec = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    with torch.no_grad():
        nn.utils.vector_to_parameters(vec, params)


def n_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _grad_vector(module: nn.Module) -> np.ndarray:
    """The accumulated gradients as one float64 vector (zeros for unused parameters)."""
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
             for p in module.parameters()]
    if not parts:
        return np.zeros(0)
    return torch.cat(parts).detach().cpu().numpy().astype(np.float64)


def state_to_arrays(module: nn.Module) -> Dict[str, np.ndarray]:
    """``{"state.<name>": ndarray}`` of the module's ``state_dict`` (floating tensors as
    float32; integer buffers such as BatchNorm's counter keep their type)."""
    arrays = {}
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().numpy()
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)
        arrays[f"state.{name}"] = np.ascontiguousarray(value)
    return arrays


def state_from_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` stored by :func:`state_to_arrays` (other keys are ignored)."""
    return {key[len("state."):]: torch.from_numpy(np.array(value))
            for key, value in arrays.items() if key.startswith("state.")}


# --------------------------------------------------------------------------- block math
def _as_tensor(array: np.ndarray, device) -> torch.Tensor:
    """float32 tensor over ``array``: no copy for a float32 (memory-mapped) block on the CPU."""
    array = np.asarray(array)
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    with warnings.catch_warnings():
        # A read-only memory map: torch warns that writing through the tensor is undefined;
        # the tensor is only ever read.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array.view(np.ndarray) if isinstance(array, np.memmap) else array)
    return tensor.to(device)


def _row_outputs(module: nn.Module, X, input_shape: Sequence[int], device,
                 scaling: Optional["Scaling"]):
    inputs = _as_tensor(X, device)
    if scaling is not None and scaling.input_mean is not None:
        shift, factor = scaling.tensors(device)
        inputs = (inputs - shift) * factor
    return module(inputs.reshape((-1, *input_shape)))


def _losses_of(out, y, task: str, device, scaling: Optional["Scaling"]):
    if task == "classification":
        target = torch.from_numpy(np.asarray(y).astype(np.int64)).to(device)
        return nn.functional.cross_entropy(out, target, reduction="none")
    target = np.asarray(y, dtype=np.float64)
    if scaling is not None:
        target = scaling.targets(target)
    target = _as_tensor(target, device).reshape(-1)
    return (out.reshape(-1) - target) ** 2


def _row_losses(module: nn.Module, X, y, task: str, input_shape: Sequence[int], device,
                scaling: Optional["Scaling"] = None):
    """Per-row losses (cross-entropy on logits, or squared error) of a chunk of rows, on
    inputs (and regression targets) standardized by ``scaling``."""
    out = _row_outputs(module, X, input_shape, device, scaling)
    return _losses_of(out, y, task, device, scaling)


def block_loss_grad(module: nn.Module, X, y, w, *, task: str, input_shape: Sequence[int],
                    device="cpu", rows: Optional[np.ndarray] = None,
                    chunk: int = GRAD_CHUNK_ROWS,
                    scaling: Optional["Scaling"] = None) -> LossGradient:
    """Weighted sums over (some rows of) one block: ``Σ wᵢ·lossᵢ``, its gradient with respect
    to the flat parameters, ``Σ wᵢ`` and the row count, as a mergeable
    :class:`~sparkml_aiaas.core.merge.LossGradient`.

    The parameters must already hold the broadcast values.  ``rows`` (sorted indices)
    restricts the sums to a mini-batch; the block is read in chunks of ``chunk`` rows
    (slices of a memory map: no copy) while autograd accumulates the gradient.  ``scaling``
    standardizes the inputs (and regression targets) on the fly.
    """
    n_total = X.shape[0] if rows is None else len(rows)
    module.zero_grad(set_to_none=True)
    loss_sum = 0.0
    weight_sum = 0.0
    for start in range(0, n_total, chunk):
        if rows is None:
            sl = slice(start, start + chunk)
            Xc, yc, wc = X[sl], y[sl], w[sl]
        else:
            idx = rows[start:start + chunk]
            Xc, yc, wc = X[idx], np.asarray(y)[idx], np.asarray(w)[idx]
        weights = torch.from_numpy(np.asarray(wc, dtype=np.float32)).to(device)
        loss = (_row_losses(module, Xc, yc, task, input_shape, device, scaling)
                * weights).sum()
        loss.backward()
        loss_sum += float(loss.detach())
        weight_sum += float(np.sum(wc, dtype=np.float64))
    grad = _grad_vector(module) if n_total else np.zeros(n_parameters(module))
    return LossGradient(loss_sum, grad, weight_sum, int(n_total))


def epoch_order(n: int, seed: int, epoch: int, partition: int,
                rows: Optional[np.ndarray] = None) -> np.ndarray:
    """The order in which a block's rows are visited in one epoch: a permutation drawn from
    (seed, epoch, partition), so a retried or rebuilt task sees the same mini-batches.
    ``rows`` (the block's training rows, when some are held out) restricts it to them."""
    if rows is None:
        return block_rng(seed, epoch, partition).permutation(n)
    return rows[block_rng(seed, epoch, partition).permutation(len(rows))]


#: The ``iteration`` of :func:`block_rng` that draws the held-out rows (epochs never get here).
_VALIDATION_STREAM = 0xFFFFFFFF


def validation_split(n: int, fraction: float, seed: int, partition: int,
                     y: Optional[np.ndarray] = None) -> Tuple[Optional[np.ndarray],
                                                              Optional[np.ndarray]]:
    """``(training rows, held-out rows)`` of a block of ``n`` rows, sorted; ``(None, None)``
    when ``fraction`` is 0 (every row trains).

    A pure function of (seed, partition, the block's rows): the same rows are held out in
    every epoch, on a retry and on a rebuilt block.  With labels ``y`` (a classifier) each
    class of the block gives ``round(fraction · its rows)`` rows (stratified); otherwise
    ``round(fraction · n)`` rows are drawn.
    """
    if fraction <= 0 or n == 0:
        return None, None
    order = block_rng(seed, _VALIDATION_STREAM, partition).permutation(n)
    if y is None:
        held = order[:int(round(fraction * n))]
    else:
        labels = np.asarray(y)[order]
        grouped = order[np.argsort(labels, kind="stable")]
        sorted_labels = np.sort(labels, kind="stable")
        _, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
        held = np.concatenate([grouped[s:s + int(round(fraction * c))]
                               for s, c in zip(starts, counts)]) if len(starts) else order[:0]
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def seed_torch(seed: int, epoch: int, job: int, partition: int) -> None:
    """Seed torch's RNG for one task's job from (seed, epoch, job in epoch, partition): dropout
    and other random layers draw the same numbers when the task is retried or re-run."""
    torch.manual_seed(int(block_rng(seed, epoch, partition, job + 1).integers(2 ** 62)))


def batch_rows(order: np.ndarray, position: int, batch_size: int) -> np.ndarray:
    """Sorted rows of the mini-batch starting at ``position`` of the epoch order, wrapping
    around the block's end (blocks of a few more rows than others finish a round too).
    Sorted: a memory-mapped block is then read in file order."""
    n = order.shape[0]
    size = n if batch_size <= 0 else min(batch_size, n)
    return np.sort(order[(position + np.arange(size)) % n])


def local_steps(module: nn.Module, X, y, w, x: np.ndarray, state: State, *, task: str,
                input_shape: Sequence[int], rule: str, settings: RuleSettings, step: float,
                steps: Optional[int], batch_size: int, order: np.ndarray, position: int,
                device="cpu",
                scaling: Optional["Scaling"] = None) -> Tuple[np.ndarray, State, float, float]:
    """``steps`` updates of the engine's rule (``apply_update``, as the linear models' local
    SGD) on successive mini-batches of one block, from ``(x, state)``.

    Each step takes the weighted mean loss of ``batch_size`` rows starting at ``position +
    s·batch_size`` of the epoch ``order`` (wrapping around its end).  ``steps=None``: one
    pass over ``order`` — ``ceil(len(order) / batch_size)`` steps, the last on the rows
    left (scikit-learn's batches); ``position`` is then ignored.  Returns ``(x, state,
    weight used, loss sum)`` — what :func:`sparkml_aiaas.core.stochastic.round_sums` turns
    into mergeable sums.
    """
    used, loss_sum = 0.0, 0.0
    x = np.asarray(x, dtype=np.float64)
    n = order.shape[0]
    if X.shape[0] == 0 or n == 0:
        return x, state, used, loss_sum
    size = n if batch_size <= 0 else batch_size
    count = -(-n // size) if steps is None else steps
    for s in range(count):
        if steps is None:
            rows = np.sort(order[s * size:(s + 1) * size])
        else:
            rows = batch_rows(order, position + s * max(batch_size, 0), batch_size)
        set_vector(module, x)
        sums = block_loss_grad(module, X, y, w, task=task, input_shape=input_shape,
                               device=device, rows=rows, chunk=max(len(rows), 1),
                               scaling=scaling)
        if sums.weight <= 0:
            continue
        _, grad = sums.mean()
        x, state = apply_update(rule, x, grad, state, step, settings)
        used += sums.weight
        loss_sum += sums.loss
    return x, state, used, loss_sum


def block_evaluate(module: nn.Module, X, y, w, *, task: str, input_shape: Sequence[int],
                   rows: np.ndarray, device="cpu", scaling: Optional["Scaling"] = None,
                   chunk: int = GRAD_CHUNK_ROWS) -> np.ndarray:
    """Held-out rows' ``[Σ wᵢ·lossᵢ, Σ wᵢ, Σ wᵢ·correctᵢ]`` (correct: the arg-max class is
    the label; 0 for a regressor) at the module's parameters, in eval mode (no dropout)
    and without autograd.  Blocks' results add up."""
    sums = np.zeros(3)
    if len(rows) == 0:
        return sums
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), chunk):
                idx = rows[start:start + chunk]
                Xc, yc = X[idx], np.asarray(y)[idx]
                wc = np.asarray(w, dtype=np.float64)[idx]
                out = _row_outputs(module, Xc, input_shape, device, scaling)
                losses = _losses_of(out, yc, task, device, scaling)
                sums[0] += float(np.dot(losses.detach().cpu().numpy().astype(np.float64), wc))
                sums[1] += float(wc.sum())
                if task == "classification":
                    hit = out.argmax(dim=1).cpu().numpy() == np.asarray(yc).astype(np.int64)
                    sums[2] += float(wc[hit].sum())
    finally:
        module.train(was_training)
    return sums


# --------------------------------------------------------------------------- standardization
class Scaling:
    """The standardization a network trains and predicts behind (scikit-learn's
    ``StandardScaler`` inside the model): inputs ``(x − input_mean) / input_scale`` per
    feature (per channel values repeated over the channel's features), regression targets
    ``(y − target_mean) / target_scale``; predictions are mapped back with
    :meth:`outputs`.  Arrays are float64; a zero spread gives scale 1 (centred only)."""

    def __init__(self, input_mean: Optional[np.ndarray] = None,
                 input_scale: Optional[np.ndarray] = None, target_mean: float = 0.0,
                 target_scale: float = 1.0):
        self.input_mean = None if input_mean is None else np.asarray(input_mean, np.float64)
        self.input_scale = None if input_scale is None else np.asarray(input_scale, np.float64)
        self.target_mean = float(target_mean)
        self.target_scale = float(target_scale)
        self._tensors: Dict[str, Any] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_tensors"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tensors = {}

    @classmethod
    def from_moments(cls, mean: np.ndarray, variance: np.ndarray, input_shape: Sequence[int],
                     target_mean: float = 0.0, target_std: float = 1.0) -> "Scaling":
        """Per feature from the features' weighted ``mean`` and population ``variance`` when
        ``input_shape`` is flat (one dimension); per channel (the first axis, e.g. ``[C, H,
        W]``) otherwise, so that an image keeps its spatial contrast."""
        mean = np.asarray(mean, np.float64)
        variance = np.maximum(np.asarray(variance, np.float64), 0.0)
        shape = [int(s) for s in input_shape]
        if len(shape) >= 2:
            channels = shape[0]
            m = mean.reshape(channels, -1)
            second = (variance + mean * mean).reshape(channels, -1).mean(axis=1)
            channel_mean = m.mean(axis=1)
            channel_var = np.maximum(second - channel_mean * channel_mean, 0.0)
            per = m.shape[1]
            mean = np.repeat(channel_mean, per)
            variance = np.repeat(channel_var, per)
        std = np.sqrt(variance)
        scale = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        target_std = float(target_std)
        if not np.isfinite(target_std) or target_std <= 0:
            target_std = 1.0
        return cls(mean, scale, float(target_mean), target_std)

    def tensors(self, device):
        """``(shift, factor)`` float32 tensors: standardized = (x − shift)·factor."""
        key = str(device)
        cached = self._tensors.get(key)
        if cached is None:
            shift = torch.from_numpy(self.input_mean.astype(np.float32)).to(device)
            factor = torch.from_numpy((1.0 / self.input_scale).astype(np.float32)).to(device)
            cached = self._tensors[key] = (shift, factor)
        return cached

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """Standardized float32 features of raw rows (computed in float64)."""
        X = np.asarray(X)
        if self.input_mean is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        return ((X.astype(np.float64) - self.input_mean) / self.input_scale).astype(np.float32)

    def targets(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, np.float64) - self.target_mean) / self.target_scale

    def outputs(self, out: np.ndarray) -> np.ndarray:
        """A regressor's network outputs back in the label's units."""
        return np.asarray(out, np.float64) * self.target_scale + self.target_mean

    def to_arrays(self) -> Dict[str, np.ndarray]:
        arrays = {"scaling.target": np.array([self.target_mean, self.target_scale])}
        if self.input_mean is not None:
            arrays["scaling.input_mean"] = self.input_mean
            arrays["scaling.input_scale"] = self.input_scale
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], n_features: int) -> "Scaling":
        """The scaling :meth:`to_arrays` stored; ``ValueError`` naming what is wrong."""
        target = np.asarray(arrays.get("scaling.target", [0.0, 1.0]), np.float64).reshape(-1)
        mean, scale = arrays.get("scaling.input_mean"), arrays.get("scaling.input_scale")
        if target.shape != (2,) or not np.all(np.isfinite(target)) or target[1] <= 0:
            raise ValueError("scaling.target must hold a finite mean and a positive scale")
        if (mean is None) != (scale is None):
            raise ValueError("scaling.input_mean and scaling.input_scale come together")
        if mean is not None:
            mean = np.asarray(mean, np.float64).reshape(-1)
            scale = np.asarray(scale, np.float64).reshape(-1)
            if mean.shape != (n_features,) or scale.shape != (n_features,):
                raise ValueError(f"scaling arrays must hold {n_features} values (one per "
                                 f"feature), got {mean.shape} and {scale.shape}")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))
                    and np.all(scale > 0)):
                raise ValueError("scaling.input_mean must be finite and scaling.input_scale "
                                 "finite and positive")
        return cls(mean, scale, target[0], target[1])


def predict_outputs(module: nn.Module, X: np.ndarray, input_shape: Sequence[int],
                    batch_rows_: int = 4096, device="cpu") -> np.ndarray:
    """Network outputs for rows of ``X``, in batches under ``torch.inference_mode()``:
    ``(n, outputs)`` float64 holding float32-rounded values.

    The network runs in the dtype of its parameters.  The predictor runs a float64 copy and
    rounds the outputs to float32: float32 kernels give a row slightly different results
    depending on the batch it falls in (size, memory alignment, threads), so Spark's Arrow
    batches and a pandas frame would disagree in the last bits; float64 differences are
    ~1e-16 and vanish in the rounding, so every path gives the same numbers.
    """
    X = np.asarray(X)
    dtype = next(iter(module.parameters())).dtype if any(True for _ in module.parameters()) \
        else torch.float32
    outs = []
    with torch.inference_mode():
        for start in range(0, X.shape[0], batch_rows_):
            inputs = _as_tensor(X[start:start + batch_rows_], device).to(dtype)
            inputs = inputs.reshape((-1, *input_shape))
            out = module(inputs).reshape(inputs.shape[0], -1).cpu().numpy()
            outs.append(out.astype(np.float32).astype(np.float64))
    if not outs:
        return np.empty((0, 0))
    return np.concatenate(outs, axis=0)
