"""PyTorch MLP/CNN models trained on the distributed gradient engine, as pyspark.ml stages.

``TorchClassifier`` (cross-entropy on logits) and ``TorchRegressor`` (squared error) build
float32 executor-resident blocks, validate the data from the blocks' statistics, and train
data-parallel (:mod:`sparkml_aiaas.engine.torch_loop`): parameters broadcast, torch autograd
in every task on its block, gradients (or locally stepped parameters) merged by the tree
reduce, the engine's optimizer rules (:mod:`sparkml_aiaas.core.first_order`) on the driver.
Scoring goes through the Spark-free :class:`~sparkml_aiaas.models.torch_predictor.TorchPredictor`
like every other model.  See docs/torch.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasAggregationDepth, HasFeaturesCol, HasLabelCol,
                                     HasPredictionCol, HasProbabilityCol, HasRawPredictionCol,
                                     HasSeed, HasStepSize, HasWeightCol)
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.first_order import RULES, RuleSettings
from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks
from sparkml_aiaas.errors import ConfigError, DataValidationError, SparkmlAiaasError
from sparkml_aiaas.models.params import HasFeaturesCols, HasNumPartitions
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.torch_predictor import _OUTPUTS, TorchPredictor
from sparkml_aiaas.models.trust import Allowlist

logger = logging.getLogger("sparkml_aiaas.train")

#: Built-in architectures; any other value of ``architecture`` names a factory
#: ``"pkg.module:function"`` (called with ``factoryKwargs``).
ARCHITECTURES = ("mlp", "cnn")


@dataclass
class TorchTrainingSummary:
    """What a fit did: ``lossHistory[e]`` is the mean training loss over epoch ``e + 1``
    (weighted; for local rounds the mean over the round's mini-batches), ``numJobs`` the
    Spark jobs of training (``jobsPerEpoch`` per epoch), ``blockBuildSeconds`` the part of
    ``wallTimeSeconds`` spent building the resident blocks."""

    lossHistory: List[float] = field(default_factory=list)
    epochs: int = 0
    numJobs: int = 0
    jobsPerEpoch: int = 0
    numRows: int = 0
    numPartitions: int = 0
    numParameters: int = 0
    wallTimeSeconds: float = 0.0
    blockBuildSeconds: float = 0.0
    rebuiltPartitions: int = 0


class _TorchParams(HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasPredictionCol, HasWeightCol,
                   HasSeed, HasStepSize, HasAggregationDepth, HasNumPartitions):
    """Params shared by the torch estimators and models."""

    architecture: Param = Param(
        Params._dummy(), "architecture",
        "network: 'mlp' (hiddenLayers), 'cnn' (LeNet-5 with same padding, needs inputShape "
        "[C, H, W]) or a factory 'pkg.module:function' returning a torch.nn.Module",
        typeConverter=TypeConverters.toString)
    hiddenLayers: Param = Param(Params._dummy(), "hiddenLayers",
                                "widths of the mlp's hidden layers (ReLU between layers)",
                                typeConverter=TypeConverters.toListInt)
    inputShape: Param = Param(
        Params._dummy(), "inputShape",
        "shape of one row's input, e.g. [1, 28, 28]; its product must equal the number of "
        "features; empty = a flat vector", typeConverter=TypeConverters.toListInt)
    factoryKwargs: Param = Param(Params._dummy(), "factoryKwargs",
                                 "JSON-able keyword arguments of the factory architecture",
                                 typeConverter=TypeConverters.identity)
    optimizer: Param = Param(Params._dummy(), "optimizer",
                             f"update rule, one of {list(RULES)}",
                             typeConverter=TypeConverters.toString)
    momentum: Param = Param(Params._dummy(), "momentum", "momentum/nesterov coefficient",
                            typeConverter=TypeConverters.toFloat)
    beta1: Param = Param(Params._dummy(), "beta1", "adam's first-moment decay",
                         typeConverter=TypeConverters.toFloat)
    beta2: Param = Param(Params._dummy(), "beta2", "adam's second-moment decay",
                         typeConverter=TypeConverters.toFloat)
    batchSize: Param = Param(
        Params._dummy(), "batchSize",
        "rows per step in each partition; 0 = the whole partition (full batch)",
        typeConverter=TypeConverters.toInt)
    maxEpochs: Param = Param(Params._dummy(), "maxEpochs", "passes over the training rows",
                             typeConverter=TypeConverters.toInt)
    localSteps: Param = Param(
        Params._dummy(), "localSteps",
        "optimizer steps each task takes on its own block per Spark job before the driver "
        "averages parameters and optimizer state (1 = exact data-parallel steps)",
        typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(featuresCol="features", featuresCols=[], labelCol="label",
                         predictionCol="prediction", seed=0, stepSize=0.001,
                         aggregationDepth=2, numPartitions=0, architecture="mlp",
                         hiddenLayers=[64], inputShape=[], factoryKwargs={}, optimizer="adam",
                         momentum=0.9, beta1=0.9, beta2=0.999, batchSize=256, maxEpochs=10,
                         localSteps=1)

    def getArchitecture(self) -> str:
        return self.getOrDefault(self.architecture)

    def getHiddenLayers(self) -> List[int]:
        return list(self.getOrDefault(self.hiddenLayers))

    def getInputShape(self) -> List[int]:
        return list(self.getOrDefault(self.inputShape))

    def getFactoryKwargs(self) -> Dict[str, Any]:
        return dict(self.getOrDefault(self.factoryKwargs) or {})

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getMaxEpochs(self) -> int:
        return self.getOrDefault(self.maxEpochs)

    def getLocalSteps(self) -> int:
        return self.getOrDefault(self.localSteps)

    def feature_spec(self) -> FeatureSpec:
        columns = self.getFeaturesCols()
        if columns:
            return FeatureSpec(columns=list(columns))
        return FeatureSpec(vector_col=self.getFeaturesCol())

    def rule_settings(self) -> RuleSettings:
        return RuleSettings(momentum=self.getOrDefault(self.momentum),
                            beta1=self.getOrDefault(self.beta1), beta2=self.getOrDefault(self.beta2))

    def _check_params(self) -> None:
        architecture = self.getArchitecture()
        checks = [
            (architecture in ARCHITECTURES or ":" in architecture, "architecture",
             f"must be one of {list(ARCHITECTURES)} or a factory 'pkg.module:function'"),
            (self.getOptimizer() in RULES, "optimizer", f"must be one of {list(RULES)}"),
            (self.getStepSize() > 0, "stepSize", "must be > 0"),
            (self.getBatchSize() >= 0, "batchSize", "must be >= 0 (0 = full batch)"),
            (self.getMaxEpochs() >= 0, "maxEpochs", "must be >= 0"),
            (self.getLocalSteps() >= 1, "localSteps", "must be >= 1"),
            (all(h >= 1 for h in self.getHiddenLayers()), "hiddenLayers", "must all be >= 1"),
            (all(s >= 1 for s in self.getInputShape()), "inputShape", "must all be >= 1"),
            (0.0 <= self.getOrDefault(self.momentum) < 1.0, "momentum", "must be in [0, 1)"),
            (0.0 <= self.getOrDefault(self.beta1) < 1.0, "beta1", "must be in [0, 1)"),
            (0.0 <= self.getOrDefault(self.beta2) < 1.0, "beta2", "must be in [0, 1)"),
            (self.getAggregationDepth() >= 2, "aggregationDepth", "must be >= 2"),
            (self.getNumPartitions() >= 0, "numPartitions", "must be >= 0"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"param {name} {rule}, got {self.getOrDefault(name)!r}")
        if architecture == "cnn" and len(self.getInputShape()) != 3:
            raise ConfigError("architecture 'cnn' needs inputShape [channels, height, width], "
                              f"got {self.getInputShape()}")

    def network_spec(self, n_features: int, n_outputs: int) -> Dict[str, Any]:
        """The architecture spec of :func:`~sparkml_aiaas.core.torch_nets.build_network`."""
        architecture = self.getArchitecture()
        if architecture == "mlp":
            return {"type": "mlp", "input_size": int(n_features),
                    "hidden_layers": self.getHiddenLayers(), "output_size": int(n_outputs)}
        if architecture == "cnn":
            return {"type": "cnn", "input_shape": self.getInputShape(),
                    "num_classes": int(n_outputs)}
        return {"type": "factory", "factory": architecture, "kwargs": self.getFactoryKwargs()}


class _TorchClassifierParams(_TorchParams, HasProbabilityCol, HasRawPredictionCol):
    numClasses: Param = Param(
        Params._dummy(), "numClasses",
        "number of classes (labels 0 … numClasses−1); 0 = max label + 1",
        typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(probabilityCol="probability", rawPredictionCol="rawPrediction",
                         numClasses=0)

    def getNumClasses(self) -> int:
        return self.getOrDefault(self.numClasses)

    def _check_params(self) -> None:
        super()._check_params()
        if self.getNumClasses() == 1 or self.getNumClasses() < 0:
            raise ConfigError(f"param numClasses must be >= 2 (or 0 to infer it), got "
                              f"{self.getNumClasses()}")


# --------------------------------------------------------------------------- validation
def _validate_data(stats, n_features: int, input_shape: List[int], features: str,
                   label_col: str, weight_col: Optional[str], task: str,
                   num_classes: int) -> int:
    """Raise :class:`DataValidationError` for data the network cannot train on; returns the
    number of classes (classifier) or 1 (regressor)."""
    if stats.count == 0:
        raise DataValidationError("the training data is empty: there are no rows to fit on")
    expected = int(np.prod(input_shape))
    if n_features != expected:
        raise DataValidationError(
            f"features {features} hold {n_features} values per row, but inputShape "
            f"{input_shape} needs {expected}")
    problems = []
    if stats.bad_vector_rows:
        problems.append(f"{stats.bad_vector_rows} rows of {features} are null or do not hold "
                        f"{n_features} values (inputShape {input_shape})")
    bad_values = int(np.sum(stats.nonfinite_features))
    if bad_values:
        first = int(np.flatnonzero(stats.nonfinite_features)[0])
        problems.append(f"{features} contain {bad_values} NaN, infinite or null values "
                        f"(first at feature index {first})")
    if stats.nonfinite_labels:
        problems.append(f"label column {label_col!r} contains NaN, infinity or null in "
                        f"{stats.nonfinite_labels} rows")
    if stats.nonfinite_weights or stats.negative_weights:
        problems.append(f"weight column {weight_col!r} has "
                        f"{stats.nonfinite_weights + stats.negative_weights} non-finite or "
                        "negative values")
    outputs = 1
    if task == "classification":
        if stats.non_integer_labels:
            problems.append(f"label column {label_col!r} must hold class indices 0, 1, …; "
                            f"{stats.non_integer_labels} rows hold non-integer values")
        if np.isfinite(stats.label_min) and stats.label_min < 0:
            problems.append(f"label column {label_col!r} holds the negative label "
                            f"{stats.label_min:g}; class indices start at 0")
        top = int(stats.label_max) if np.isfinite(stats.label_max) else 0
        outputs = num_classes if num_classes else max(top + 1, 2)
        if num_classes and np.isfinite(stats.label_max) and stats.label_max >= num_classes:
            problems.append(f"label column {label_col!r} holds the label {stats.label_max:g}, "
                            f"but numClasses is {num_classes} (labels must be in "
                            f"[0, {num_classes}))")
    if problems:
        raise DataValidationError("cannot train on this data: " + "; ".join(problems))
    return outputs


def _describe_features(spec: FeatureSpec) -> str:
    if spec.columns:
        return f"columns {list(spec.columns)}"
    return f"column {spec.vector_col!r}"


class _TorchEstimator(Estimator, DefaultParamsReadable, DefaultParamsWritable):
    _model_class: type = None
    _task: str = ""

    def _num_classes_param(self) -> int:
        return 0

    def _fit(self, dataset):
        from sparkml_aiaas.core.torch_nets import (NetworkSpecError, build_network, get_vector,
                                                   n_parameters, output_size, set_vector)
        from sparkml_aiaas.engine.torch_loop import TorchDataParallel, train_network

        self._check_params()
        spec = self.feature_spec()
        weight_col = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        label_col = self.getLabelCol()
        signature = input_signature(dataset, spec)
        started = time.perf_counter()
        kind = type(self).__name__
        # float32 dense blocks: torch computes in float32, so tasks wrap the memory-mapped
        # block with torch.from_numpy (no copy, half the bytes of float64).
        with ResidentBlocks.build(dataset, spec, label_col, weight_col, self.getNumPartitions(),
                                  block_format="dense", block_dtype="float32") as blocks:
            build_seconds = time.perf_counter() - started
            input_shape = self.getInputShape() or [blocks.n_features]
            outputs = _validate_data(blocks.stats, blocks.n_features, input_shape,
                                     _describe_features(spec), label_col, weight_col, self._task,
                                     self._num_classes_param())
            net_spec = self.network_spec(blocks.n_features, outputs)
            seed = int(self.getSeed()) & 0x7FFFFFFF
            try:
                module = build_network(net_spec, seed=seed)
                got = output_size(module, input_shape)
            except NetworkSpecError as exc:
                raise ConfigError(str(exc)) from None
            except RuntimeError as exc:  # shapes that do not fit the network
                raise ConfigError(f"the {net_spec['type']} network does not accept inputs of "
                                  f"shape {input_shape}: {exc}") from None
            if got != outputs:
                raise ConfigError(
                    f"the network outputs {got} values per row, but this {self._task} needs "
                    f"{outputs}" + (" (numClasses)" if self._task == "classification" else ""))
            trainer = TorchDataParallel(blocks, net_spec, self._task, input_shape,
                                        self.getAggregationDepth(), description=f"sparkml_aiaas {kind}")

            def log_epoch(epoch: int, loss: float) -> None:
                logger.info("%s epoch %4d  loss %.8g", kind, epoch, loss)

            try:
                result = train_network(
                    trainer, get_vector(module), rule=self.getOptimizer(),
                    settings=self.rule_settings(), step_size=self.getStepSize(),
                    batch_size=self.getBatchSize(), local_steps=self.getLocalSteps(),
                    max_epochs=self.getMaxEpochs(), seed=seed, rows=blocks.stats.count,
                    callback=log_epoch)
            except ValueError as exc:
                if isinstance(exc, SparkmlAiaasError):
                    raise
                raise ConfigError(str(exc)) from None
            rows, rebuilt, partitions = (blocks.stats.count, blocks.rebuilt_partitions,
                                         blocks.num_partitions)
        set_vector(module, result.x)
        summary = TorchTrainingSummary(
            lossHistory=[float(v) for v in result.loss_history], epochs=result.epochs,
            numJobs=result.jobs, jobsPerEpoch=result.steps_per_epoch, numRows=int(rows),
            numPartitions=int(partitions), numParameters=n_parameters(module),
            wallTimeSeconds=time.perf_counter() - started, blockBuildSeconds=build_seconds,
            rebuiltPartitions=int(rebuilt))
        model = self._model_class(architecture=net_spec, module=module, signature=signature,
                                  summary=summary, input_shape=input_shape,
                                  num_classes=outputs if self._task == "classification" else 0)
        self._copyValues(model)
        if self._task == "classification":
            model._set(numClasses=outputs)  # the inferred count when the param was 0
        model._set(inputShape=input_shape)
        return model


class _TorchModel(Model, MLWritable, MLReadable):
    """Shared state, scoring and persistence of the fitted torch models."""

    _task: str = ""

    def __init__(self, architecture: Optional[Dict[str, Any]] = None, module=None,
                 signature: Optional[Dict[str, Any]] = None,
                 summary: Optional[TorchTrainingSummary] = None,
                 input_shape: Optional[List[int]] = None, num_classes: int = 0):
        super().__init__()
        self._architecture = dict(architecture) if architecture else {}
        self._state: Dict[str, np.ndarray] = {}
        if module is not None:
            from sparkml_aiaas.core.torch_nets import state_to_arrays

            self._state = {k[len("state."):]: v for k, v in state_to_arrays(module).items()}
        self._signature = signature or {}
        self._summary = summary
        self._input_shape = [int(s) for s in (input_shape or [])]
        self._num_classes = int(num_classes)
        self._predictor: Optional[TorchPredictor] = None
        # None: built here from the caller's code (fit, from_module), so the factory it names
        # is trusted; a model read from a file holds the allowlist it was loaded with.
        self._trusted: Optional[Allowlist] = None
        self._load_where = "a saved torch model"

    @classmethod
    def from_module(cls, architecture, state_dict, *, featuresCol: Optional[str] = None,
                    featuresCols: Optional[List[str]] = None, inputShape: Optional[List[int]] = None,
                    numClasses: int = 0, factoryKwargs: Optional[Dict[str, Any]] = None,
                    **params):
        """Wrap an already-trained torch network for batch scoring and serving.

        ``architecture`` is a spec dict of :func:`~sparkml_aiaas.core.torch_nets.build_network`,
        a factory ``"pkg.module:function"`` (called with ``factoryKwargs``) or the factory
        function itself; ``state_dict`` the trained weights (a ``state_dict`` or the module).
        The weights must load into the rebuilt network exactly (``strict=True``).
        """
        import torch

        from sparkml_aiaas.core.torch_nets import (NetworkSpecError, build_network, factory_path,
                                                   output_size)

        if callable(architecture) and not isinstance(architecture, (str, dict)):
            architecture = factory_path(architecture)
        if isinstance(architecture, str):
            architecture = {"type": "factory", "factory": architecture,
                            "kwargs": dict(factoryKwargs or {})}
        if isinstance(state_dict, torch.nn.Module):
            state_dict = state_dict.state_dict()
        if bool(featuresCol) == bool(featuresCols):
            raise ConfigError("give exactly one of featuresCol or featuresCols")
        try:
            module = build_network(architecture)
            module.load_state_dict(state_dict, strict=True)
        except NetworkSpecError as exc:
            raise ConfigError(str(exc)) from None
        except RuntimeError as exc:
            raise ConfigError(f"the state_dict does not fit the architecture: {exc}") from None
        shape = [int(s) for s in (inputShape or [])]
        if not shape:
            if featuresCols:
                shape = [len(featuresCols)]
            elif architecture.get("type") == "mlp":
                shape = [int(architecture["input_size"])]
            elif architecture.get("type") == "cnn":
                shape = [int(s) for s in architecture["input_shape"]]
            else:
                raise ConfigError("give inputShape: the factory network's input size is unknown")
        try:
            outputs = output_size(module, shape)
        except RuntimeError as exc:
            raise ConfigError(f"the network does not accept inputs of shape {shape}: {exc}") from None
        if cls._task == "classification":
            numClasses = int(numClasses or outputs)
            if numClasses != outputs or numClasses < 2:
                raise ConfigError(f"the network outputs {outputs} logits per row; numClasses "
                                  f"is {numClasses} (must match and be >= 2)")
        elif outputs != 1:
            raise ConfigError(f"a regression network must output 1 value per row, got {outputs}")
        model = cls(architecture=architecture, module=module, input_shape=shape,
                    num_classes=numClasses if cls._task == "classification" else 0)
        features = ({"featuresCols": list(featuresCols)} if featuresCols
                    else {"featuresCol": featuresCol})
        model._set(inputShape=shape, **features, **params)
        if cls._task == "classification":
            model._set(numClasses=numClasses)
        cols = list(featuresCols) if featuresCols else [featuresCol]
        model._signature = {"inputs": [{"name": c, "type": "double" if featuresCols
                                        else "array<double>"} for c in cols]}
        return model

    @property
    def hasSummary(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> TorchTrainingSummary:
        if self._summary is None:
            raise RuntimeError(f"No training summary available for this {type(self).__name__}")
        return self._summary

    @property
    def architectureSpec(self) -> Dict[str, Any]:
        return dict(self._architecture)

    @property
    def trustedFactories(self) -> Allowlist:
        """The factories this model may import to build its network: its own for a model
        fitted or wrapped in this process; for a loaded one, the allowlist it was loaded with
        (see :mod:`sparkml_aiaas.models.trust`)."""
        if self._trusted is None:
            return Allowlist.of_spec(self._architecture)
        return self._trusted

    def state_dict(self):
        """The trained weights as a torch ``state_dict`` (copies)."""
        from sparkml_aiaas.core.torch_nets import state_from_arrays

        return state_from_arrays({f"state.{k}": v for k, v in self._state.items()})

    def network(self):
        """A fresh ``torch.nn.Module`` holding the trained weights (eval mode)."""
        from sparkml_aiaas.core.torch_nets import build_network

        module = build_network(self._architecture, factories=self.trustedFactories.resolve)
        module.load_state_dict(self.state_dict(), strict=True)
        return module.eval()

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol()}

    def predictor(self) -> TorchPredictor:
        """The Spark-free predictor with this model's network and params."""
        spec = self.feature_spec()
        return TorchPredictor(
            architecture=self._architecture, state=self._state, task=self._task,
            input_shape=self._input_shape, feature_cols=list(spec.columns) if spec.columns else None,
            vector_col=spec.vector_col, num_classes=self._num_classes,
            output_names=self._output_names(), metadata={"signature": self.signature},
            trusted_factories=self.trustedFactories)

    @property
    def signature(self) -> Dict[str, Any]:
        outputs = [(self._output_names().get(n, n), t) for n, t in _OUTPUTS[self._task]]
        return dict(self._signature, outputs=[{"name": n, "type": t} for n, t in outputs])

    def _transform(self, dataset):
        from sparkml_aiaas.scoring.udf import transform_with_predictor

        return transform_with_predictor(dataset, self.predictor())

    # -- persistence -------------------------------------------------------
    def _artifact(self):
        spec = self.feature_spec()
        metadata = {
            "predictor": {
                "family": "torch", "architecture": self._architecture, "task": self._task,
                "num_classes": self._num_classes, "input_shape": self._input_shape,
                "feature_cols": list(spec.columns) if spec.columns else None,
                "vector_col": spec.vector_col, "output_names": self._output_names(),
                "weights": "dense",
            },
            "signature": self.signature,
            "training": asdict(self._summary) if self._summary is not None else None,
        }
        arrays = {f"state.{k}": v for k, v in self._state.items()}
        return metadata, arrays

    def _trust_factories(self, allowlist: Allowlist, where: str) -> None:
        """Called by the reader before :meth:`_restore`: what this loaded model may import."""
        self._trusted = allowlist
        self._load_where = where

    def _restore(self, metadata: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        # Decodes any weight format; refuses an untrusted factory before importing it.
        predictor = TorchPredictor.from_artifact(
            metadata, arrays, trusted_factories=self._trusted or Allowlist(),
            where=self._load_where)
        self._architecture = predictor.architecture
        self._state = predictor.state
        self._input_shape = predictor.input_shape
        self._num_classes = predictor.num_classes
        self._signature = restored_signature(metadata)
        self._summary = restored_summary(TorchTrainingSummary, metadata)

    def write(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls, trusted_factories=None) -> ArtifactReader:
        return ArtifactReader(cls, trusted_factories)

    @classmethod
    def load(cls, path: str, trusted_factories=None):
        """Read a saved model.  A factory network is imported only if ``trusted_factories``
        (``"pkg.module:function"`` entries, or ``"pkg.module:*"``) or the environment variable
        ``SPARKML_AIAAS_TRUSTED_FACTORIES`` holds it; otherwise
        :class:`~sparkml_aiaas.models.trust.UntrustedCodeError`, before any import."""
        return cls.read(trusted_factories).load(path)


# --------------------------------------------------------------------------- public classes
def _param_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The set keyword params; a factory function given as ``architecture`` becomes its
    importable name (params are saved as JSON, never as code)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if callable(kwargs.get("architecture")):
        from sparkml_aiaas.core.torch_nets import NetworkSpecError, factory_path

        try:
            kwargs["architecture"] = factory_path(kwargs["architecture"])
        except NetworkSpecError as exc:
            raise ConfigError(str(exc)) from None
    return kwargs


class TorchClassificationModel(_TorchModel, _TorchClassifierParams):
    """A fitted torch classifier: ``rawPrediction`` (logits), ``probability`` (softmax) and
    ``prediction`` (the most probable class), all for ``numClasses`` classes."""

    _task = "classification"

    def _output_names(self) -> Dict[str, str]:
        return {"prediction": self.getPredictionCol(), "probability": self.getProbabilityCol(),
                "rawPrediction": self.getRawPredictionCol()}


class TorchRegressionModel(_TorchModel, _TorchParams):
    """A fitted torch regressor: ``prediction`` (the network's single output)."""

    _task = "regression"


class TorchClassifier(_TorchEstimator, _TorchClassifierParams):
    """A PyTorch classifier (cross-entropy on logits) trained data-parallel on the engine.

    Parameters
    ----------
    featuresCol : str, default "features"
        A vector or array column (images as flat arrays, reshaped to ``inputShape``).
    featuresCols : list of str
        Numeric columns used directly; when non-empty it wins over featuresCol.
    labelCol : str, default "label"
        Class indices 0 … numClasses−1.
    architecture : str, default "mlp"
        ``"mlp"`` (``hiddenLayers``), ``"cnn"`` (LeNet-5 with same padding; ``inputShape``
        ``[C, H, W]``), or a factory ``"pkg.module:function"`` called with ``factoryKwargs``.
    numClasses : int, default 0
        0 infers max label + 1.
    optimizer : {"sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"}, default "adam"
        The engine's update rules (``momentum``, ``beta1``, ``beta2`` set their constants).
    stepSize : float, default 0.001
    batchSize : int, default 256
        Rows per step in each partition (0 = the whole partition: full batch).
    maxEpochs : int, default 10
    localSteps : int, default 1
        1: every Spark job is one exact data-parallel step.  k > 1: each task takes k steps
        of the rule on its own block per job and the driver averages parameters and rule
        state (an epoch is ``ceil(rows / (batchSize·partitions·k))`` jobs).
    seed : int, default 0
        Initial weights and the mini-batch order.
    """

    _model_class = TorchClassificationModel
    _task = "classification"

    def _num_classes_param(self) -> int:
        return self.getNumClasses()

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", probabilityCol="probability",
                 rawPredictionCol="rawPrediction", weightCol=None, architecture="mlp",
                 hiddenLayers=None, inputShape=None, factoryKwargs=None, numClasses=0,
                 optimizer="adam", stepSize=0.001, momentum=None, beta1=None, beta2=None,
                 batchSize=256, maxEpochs=10, localSteps=1, seed=0, aggregationDepth=2,
                 numPartitions=0):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", probabilityCol="probability",
                  rawPredictionCol="rawPrediction", weightCol=None, architecture="mlp",
                  hiddenLayers=None, inputShape=None, factoryKwargs=None, numClasses=0,
                  optimizer="adam", stepSize=0.001, momentum=None, beta1=None, beta2=None,
                  batchSize=256, maxEpochs=10, localSteps=1, seed=0, aggregationDepth=2,
                  numPartitions=0):
        return self._set(**_param_kwargs(self._input_kwargs))


class TorchRegressor(_TorchEstimator, _TorchParams):
    """A PyTorch regressor (squared error, one output) trained data-parallel on the engine.

    Parameters as :class:`TorchClassifier` without the classifier ones; ``architecture``
    ``"cnn"`` ends in one output.
    """

    _model_class = TorchRegressionModel
    _task = "regression"

    @keyword_only
    def __init__(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                 predictionCol="prediction", weightCol=None, architecture="mlp",
                 hiddenLayers=None, inputShape=None, factoryKwargs=None, optimizer="adam",
                 stepSize=0.001, momentum=None, beta1=None, beta2=None, batchSize=256,
                 maxEpochs=10, localSteps=1, seed=0, aggregationDepth=2, numPartitions=0):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", featuresCols=None, labelCol="label",
                  predictionCol="prediction", weightCol=None, architecture="mlp",
                  hiddenLayers=None, inputShape=None, factoryKwargs=None, optimizer="adam",
                  stepSize=0.001, momentum=None, beta1=None, beta2=None, batchSize=256,
                  maxEpochs=10, localSteps=1, seed=0, aggregationDepth=2, numPartitions=0):
        return self._set(**_param_kwargs(self._input_kwargs))
