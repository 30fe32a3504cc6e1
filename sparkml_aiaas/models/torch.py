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
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasAggregationDepth, HasFeaturesCol, HasLabelCol,
                                     HasPredictionCol, HasProbabilityCol, HasRawPredictionCol,
                                     HasSeed, HasStandardization, HasStepSize, HasTol,
                                     HasWeightCol)
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable, MLReadable, MLWritable

from sparkml_aiaas.core.first_order import RULES, RuleSettings
from sparkml_aiaas.core.stats import single_class_message
from sparkml_aiaas.engine.blocks import FeatureSpec, ResidentBlocks
from sparkml_aiaas.errors import ConfigError, DataValidationError, SparkmlAiaasError
from sparkml_aiaas.models.param_signature import KeywordParams
from sparkml_aiaas.models.params import HasFeaturesCols, HasNumPartitions, with_doc
from sparkml_aiaas.models.persistence import (ArtifactReader, ArtifactWriter, input_signature,
                                              restored_signature, restored_summary)
from sparkml_aiaas.models.torch_predictor import _OUTPUTS, TorchPredictor
from sparkml_aiaas.models.trust import Allowlist

logger = logging.getLogger("sparkml_aiaas.train")

#: Built-in architectures; any other value of ``architecture`` names a factory
#: ``"pkg.module:function"`` (called with ``factoryKwargs``).
ARCHITECTURES = ("mlp", "cnn")

#: Defaults of the training params (docs/torch.md, "Defaults and when training stops"):
#: Adam on standardized inputs, mini-batches of 64 rows per partition, each task passing
#: over its whole block in one Spark job per epoch, scikit-learn's MLP stopping rule.
DEFAULTS: Dict[str, Any] = dict(stepSize=0.01, batchSize=64, localSteps=0, maxEpochs=200,
                                tol=1e-4, nIterNoChange=10, validationFraction=0.0,
                                standardization=True)
#: TorchRegressor's validationFraction (the classifier's is 0, as scikit-learn's).
REGRESSOR_VALIDATION_FRACTION = 0.1


@dataclass
class TorchTrainingSummary:
    """What a fit did: ``lossHistory[e]`` is the mean training loss over epoch ``e + 1``
    (weighted; for local rounds the mean over the round's mini-batches; in standardized
    label units for a regressor with ``standardization``), ``numJobs`` the Spark jobs of
    training (``jobsPerEpoch`` per epoch, plus one final validation pass when held-out rows
    were evaluated to the last epoch), ``blockBuildSeconds`` the part of ``wallTimeSeconds``
    spent building the resident blocks.

    ``stopReason``: ``"converged"`` (the training loss did not improve by more than ``tol``
    for ``nIterNoChange`` consecutive epochs), ``"earlyStopping"`` (the same on the held-out
    loss, ``validationFraction`` > 0) or ``"maxEpochs"``; ``stopMessage`` says it in words.
    ``bestEpoch`` is the epoch whose parameters the model holds (with held-out rows the
    best one, 0 = the initial weights; otherwise ``epochs``).  ``validationLossHistory[e]``
    (and, for a classifier, ``validationAccuracyHistory[e]``) is the held-out loss
    (accuracy) of the parameters after ``e`` epochs.  Models saved before these fields
    existed load with their defaults."""

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
    stopReason: str = ""
    stopMessage: str = ""
    bestEpoch: int = 0
    validationLossHistory: List[float] = field(default_factory=list)
    validationAccuracyHistory: List[float] = field(default_factory=list)


def _to_architecture(value) -> str:
    """Param converter: a factory function given as ``architecture`` becomes its importable
    name (params are saved as JSON, never as code)."""
    if callable(value) and not isinstance(value, str):
        from sparkml_aiaas.core.torch_nets import NetworkSpecError, factory_path

        try:
            return factory_path(value)
        except NetworkSpecError as exc:
            raise ConfigError(str(exc)) from None
    return TypeConverters.toString(value)


class _TorchParams(HasFeaturesCol, HasFeaturesCols, HasLabelCol, HasPredictionCol, HasWeightCol,
                   HasSeed, HasStepSize, HasTol, HasStandardization, HasAggregationDepth,
                   HasNumPartitions):
    """Params shared by the torch estimators and models."""

    architecture: Param = Param(
        Params._dummy(), "architecture",
        "network: 'mlp' (hiddenLayers), 'cnn' (LeNet-5 with same padding, needs inputShape "
        "[C, H, W]) or a factory 'pkg.module:function' returning a torch.nn.Module (the "
        "function itself is kept as that name), called with factoryKwargs",
        typeConverter=_to_architecture)
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
                             f"update rule, one of {list(RULES)} (momentum, beta1 and beta2 "
                             "set their constants)",
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
    maxEpochs: Param = Param(Params._dummy(), "maxEpochs",
                             "most passes over the training rows (training stops earlier by "
                             "tol and nIterNoChange)", typeConverter=TypeConverters.toInt)
    localSteps: Param = Param(
        Params._dummy(), "localSteps",
        "optimizer steps each task takes on its own block per Spark job before the driver "
        "averages parameters and optimizer state: 0 = one pass over the block in mini-batches "
        "of batchSize (one Spark job per epoch); 1 = exact data-parallel steps; k > 1 = k "
        "steps (an epoch is ceil(rows / (batchSize·partitions·k)) jobs)",
        typeConverter=TypeConverters.toInt)
    nIterNoChange: Param = Param(
        Params._dummy(), "nIterNoChange",
        "stop once this many consecutive epochs did not improve the training loss (the "
        "held-out loss with validationFraction > 0) on its best by more than tol (>= 1)",
        typeConverter=TypeConverters.toInt)
    validationFraction: Param = Param(
        Params._dummy(), "validationFraction",
        "fraction of each partition's rows held out of training (seeded; stratified by class "
        "for a classifier) whose loss decides stopping, the best epoch's parameters being "
        "kept; 0 = off (stop on the training loss); in [0, 1)",
        typeConverter=TypeConverters.toFloat)
    seed: Param = with_doc(HasSeed.seed, "seed of the initial weights and the mini-batch order")
    stepSize: Param = with_doc(HasStepSize.stepSize, "learning rate of the update rule (> 0)")
    tol: Param = with_doc(
        HasTol.tol, "an epoch improves when its loss is below the best so far minus tol "
        "(scikit-learn's MLP rule); 0 = never stop before maxEpochs (>= 0)")
    standardization: Param = with_doc(
        HasStandardization.standardization,
        "standardize the features inside the model (weighted mean and standard deviation of "
        "the training rows, per feature; per channel for [C, H, W] inputs) and a regressor's "
        "label; saved with the model and applied by every scoring path")

    def __init__(self):
        super().__init__()
        self._setDefault(featuresCol="features", featuresCols=[], labelCol="label",
                         predictionCol="prediction", seed=0, aggregationDepth=2,
                         numPartitions=0, architecture="mlp", hiddenLayers=[64], inputShape=[],
                         factoryKwargs={}, optimizer="adam", momentum=0.9, beta1=0.9,
                         beta2=0.999, **DEFAULTS)

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

    def getNIterNoChange(self) -> int:
        return self.getOrDefault(self.nIterNoChange)

    def getValidationFraction(self) -> float:
        return self.getOrDefault(self.validationFraction)

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
            (self.getLocalSteps() >= 0, "localSteps", "must be >= 0 (0 = one pass per job)"),
            (self.getTol() >= 0, "tol", "must be >= 0"),
            (self.getNIterNoChange() >= 1, "nIterNoChange", "must be >= 1"),
            (0.0 <= self.getValidationFraction() < 1.0, "validationFraction",
             "must be in [0, 1) (0 = off)"),
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


class _TorchRegressorParams(_TorchParams):
    """The regressor holds out 10 % of its rows by default: trained to convergence on the
    training loss, squared error fits the noise of small data sets (scikit-learn's diabetes:
    test R² 0.10 against 0.42 with the held-out rows deciding; docs/torch.md)."""

    def __init__(self):
        super().__init__()
        self._setDefault(validationFraction=REGRESSOR_VALIDATION_FRACTION)


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
    if task == "classification" and stats.label_min == stats.label_max:
        raise DataValidationError(single_class_message(label_col, stats.label_min, stats.count))
    return outputs


def _scaling(stats, input_shape: List[int], task: str):
    """The standardization of ``standardization=True`` from the blocks' statistics: weighted
    mean and population standard deviation per feature (per channel for ``[C, H, W]``
    inputs), and of the label for a regressor."""
    from sparkml_aiaas.core.torch_nets import Scaling

    regression = task == "regression"
    return Scaling.from_moments(
        stats.mean, stats.variance(population=True), input_shape,
        target_mean=stats.label_mean if regression else 0.0,
        target_std=stats.label_std(population=True) if regression else 1.0)


def _describe_features(spec: FeatureSpec) -> str:
    if spec.columns:
        return f"columns {list(spec.columns)}"
    return f"column {spec.vector_col!r}"


class _TorchEstimator(KeywordParams, Estimator, DefaultParamsReadable, DefaultParamsWritable):
    _model_class: type = None
    _task: str = ""

    def _num_classes_param(self) -> int:
        return 0

    def validate_params(self) -> None:
        """Check the params alone (ConfigError naming the first bad one), as the linear and
        tree estimators do: a job refuses a bad config before reading any data."""
        self._check_params()

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
            scaling = (_scaling(blocks.stats, input_shape, self._task)
                       if self.getStandardization() else None)
            trainer = TorchDataParallel(blocks, net_spec, self._task, input_shape,
                                        self.getAggregationDepth(),
                                        description=f"sparkml_aiaas {kind}", scaling=scaling,
                                        validation=self.getValidationFraction(), seed=seed)

            def log_epoch(epoch: int, loss: float) -> None:
                logger.info("%s epoch %4d  loss %.8g", kind, epoch, loss)

            try:
                result = train_network(
                    trainer, get_vector(module), rule=self.getOptimizer(),
                    settings=self.rule_settings(), step_size=self.getStepSize(),
                    batch_size=self.getBatchSize(), local_steps=self.getLocalSteps(),
                    max_epochs=self.getMaxEpochs(), seed=seed, rows=blocks.stats.count,
                    tol=self.getTol(), n_iter_no_change=self.getNIterNoChange(),
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
            rebuiltPartitions=int(rebuilt), stopReason=result.stop_reason,
            stopMessage=result.stop_message, bestEpoch=result.best_epoch,
            validationLossHistory=list(result.validation_loss),
            validationAccuracyHistory=list(result.validation_accuracy))
        logger.info("%s stopped after %d epochs (%d Spark jobs): %s", kind, result.epochs,
                    result.jobs, result.stop_message)
        model = self._model_class(architecture=net_spec, module=module, signature=signature,
                                  summary=summary, input_shape=input_shape,
                                  num_classes=outputs if self._task == "classification" else 0,
                                  scaling=scaling)
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
                 input_shape: Optional[List[int]] = None, num_classes: int = 0,
                 scaling=None):
        super().__init__()
        self._architecture = dict(architecture) if architecture else {}
        # core.torch_nets.Scaling of standardization=True (None: the network takes the raw
        # features, as every model saved before standardization existed).
        self._scaling = scaling
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

    @property
    def scaling(self):
        """The :class:`~sparkml_aiaas.core.torch_nets.Scaling` the network was trained behind
        (``standardization``), or None: :meth:`network` takes ``scaling.inputs(X)``, not
        the raw features, and a regressor's outputs map back with ``scaling.outputs``.
        Every scoring path (:meth:`predictor`) applies it."""
        return self._scaling

    def network(self):
        """A fresh ``torch.nn.Module`` holding the trained weights (eval mode).  With
        :attr:`scaling` it expects standardized inputs (``model.scaling.inputs(X)``)."""
        from sparkml_aiaas.core.torch_nets import build_network

        module = build_network(self._architecture, factories=self.trustedFactories.resolve)
        module.load_state_dict(self.state_dict(), strict=True)
        return module.eval()

    def _output_names(self) -> Dict[str, str]:
        from sparkml_aiaas.scoring.mllib_output import output_names

        return output_names(self, ["prediction"])

    def predictor(self) -> TorchPredictor:
        """The Spark-free predictor with this model's network and params."""
        spec = self.feature_spec()
        return TorchPredictor(
            architecture=self._architecture, state=self._state, task=self._task,
            input_shape=self._input_shape, feature_cols=list(spec.columns) if spec.columns else None,
            vector_col=spec.vector_col, num_classes=self._num_classes,
            output_names=self._output_names(), metadata={"signature": self.signature},
            trusted_factories=self.trustedFactories, scaling=self._scaling)

    @property
    def signature(self) -> Dict[str, Any]:
        """Input columns and their Spark types, and the columns ``transform`` appends with
        their types there (MLlib's ``vector``/``double``; the predictor's ``output_columns``
        are the wire types score() and serving give)."""
        from sparkml_aiaas.scoring.mllib_output import omitted_outputs, transform_types

        names = self._output_names()
        outputs = [(n, names.get(n, n), t) for n, t in _OUTPUTS[self._task]]
        return dict(self._signature, outputs=transform_types(outputs, omitted_outputs(self)))

    def _transform(self, dataset):
        from sparkml_aiaas.scoring.mllib_output import omitted_outputs
        from sparkml_aiaas.scoring.udf import transform_like_mllib

        # pyspark.ml's output schema (vectors); score() keeps the predictor's wire types.
        return transform_like_mllib(dataset, self.predictor(), omitted_outputs(self))

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
        if self._scaling is not None:
            metadata["predictor"]["scaling"] = "standard"
            arrays.update(self._scaling.to_arrays())
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
        self._scaling = predictor.scaling
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
class TorchClassificationModel(_TorchModel, _TorchClassifierParams):
    """A fitted torch classifier: ``rawPrediction`` (logits), ``probability`` (softmax) and
    ``prediction`` (the most probable class), all for ``numClasses`` classes."""

    _task = "classification"

    def _output_names(self) -> Dict[str, str]:
        from sparkml_aiaas.scoring.mllib_output import output_names

        return output_names(self, ["prediction", "probability", "rawPrediction"])


class TorchRegressionModel(_TorchModel, _TorchRegressorParams):
    """A fitted torch regressor: ``prediction`` (the network's single output)."""

    _task = "regression"


class TorchClassifier(_TorchEstimator, _TorchClassifierParams):
    """A PyTorch classifier (cross-entropy on logits) trained data-parallel on the engine.

    Labels are class indices 0 … numClasses−1; labels holding a single class are refused
    before any training step.  Images come as flat vectors or arrays, reshaped to
    ``inputShape``.

    The defaults train to convergence as scikit-learn's ``MLPClassifier`` does: Adam
    (``stepSize`` 0.01) on features standardized inside the model (``standardization``:
    per feature, per channel for ``[C, H, W]`` inputs; saved with the model and applied by
    every scoring path), mini-batches of ``batchSize`` rows per partition with each task
    passing over its whole block in one Spark job per epoch (``localSteps`` 0), until the
    training loss has not improved by more than ``tol`` for ``nIterNoChange`` consecutive
    epochs — or, with ``validationFraction`` > 0, the loss of held-out rows, the best
    epoch's parameters being kept — and at most ``maxEpochs``.  ``summary.stopReason``
    says which (docs/torch.md has the measured table).
    """

    _model_class = TorchClassificationModel
    _task = "classification"

    def _num_classes_param(self) -> int:
        return self.getNumClasses()


class TorchRegressor(_TorchEstimator, _TorchRegressorParams):
    """A PyTorch regressor (squared error, one output) trained data-parallel on the engine.

    ``architecture`` ``"cnn"`` ends in one output.  Defaults and stopping as
    :class:`TorchClassifier`, except that 10 % of each partition's rows are held out by
    default (``validationFraction`` 0.1) and decide when to stop, the best epoch's
    parameters being kept: fitted to convergence on the training loss, squared error learns
    the noise of small data sets.  ``standardization`` also standardizes the label (the
    network learns ``(y − mean) / std``, predictions are mapped back, ``lossHistory`` is in
    those standardized units), so a label in the thousands trains like one near 1.
    """

    _model_class = TorchRegressionModel
    _task = "regression"
