"""Loading a model never imports or runs code it names unless the loading side trusts it.

Issue 14's probe: a torch model's metadata.json names its network factory; rewritten to
``subprocess:getoutput`` with ``{"cmd": "touch <canary>"}`` it ran the command on
``load_predictor(dir).predict``, in the REST server and in Spark executors.  Here every
loading path refuses it before importing anything, a factory the caller allowlists still
loads (argument, environment, executors), a model class outside the package is refused
without being imported, and random damage to every file of every kind of saved model gives
only :class:`ModelFormatError` (or a successful load, when the damage was harmless) -- never
another exception, and never a call into ``os.system``, ``subprocess.getoutput``,
``builtins.eval`` or the canary module (``tests/trust_canary.py``, which leaves a file
behind when it is imported or called, on the driver or on an executor).

The fuzzing is modest by default (a few seconds).  A long run::

    SPARKML_AIAAS_FUZZ_EXAMPLES=5000 pytest tests/test_model_trust.py -k fuzz

(the ``model-trust-long`` hypothesis profile: that many examples per model family,
random rather than derandomized).
"""

import builtins
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError
from sparkml_aiaas.models import load_predictor
from sparkml_aiaas.models.trust import (ARTIFACT_CLASSES, ENV_VAR, Allowlist,
                                        UntrustedCodeError)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
COLS = ["a", "b", "c", "d"]
FACTORY = "trust_factories:make_net"
#: Where tests/trust_canary.py records an import or a call (not imported here: importing it
#: is exactly what must never happen).
CANARY_DIR = os.path.join(tempfile.gettempdir(), f"sparkml_aiaas_trust_canary-{os.getuid()}")
#: Names a tampered artifact may put wherever it names code (factories, classes).
HOSTILE = ["os:system", "subprocess:getoutput", "builtins:eval", "trust_canary:boom",
           "trust_canary:Something", "os.system", "subprocess.getoutput", "builtins.eval",
           "trust_canary.boom", "trust_canary.Something", "trust_factories:make_net.__globals__",
           "trust_factories:torch.nn.Sequential"]

_FUZZ_EXAMPLES = int(os.environ.get("SPARKML_AIAAS_FUZZ_EXAMPLES") or 0)
settings.register_profile("model-trust", max_examples=40, deadline=None, derandomize=True,
                          database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("model-trust-long", max_examples=max(_FUZZ_EXAMPLES, 1),
                          deadline=None, database=None, suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile("model-trust-long" if _FUZZ_EXAMPLES else "model-trust")


def canary_records():
    return sorted(os.listdir(CANARY_DIR)) if os.path.isdir(CANARY_DIR) else []


@pytest.fixture(scope="module", autouse=True)
def canary_never_fires():
    """Around the whole module: the canary module is never imported or called, anywhere."""
    shutil.rmtree(CANARY_DIR, ignore_errors=True)
    assert "trust_canary" not in sys.modules
    yield
    assert canary_records() == []
    assert "trust_canary" not in sys.modules


# --------------------------------------------------------------------------- saved models
@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(14)
    n = 60
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=COLS)
    frame["city"] = rng.choice(["paris", "lyon", "nice"], n)
    frame["id"] = np.arange(n)
    frame["label"] = np.argmax(frame[COLS[:3]].to_numpy(), axis=1).astype(float)
    return frame


def _signature(cols):
    return {"inputs": [{"name": c, "type": "double"} for c in cols]}


@pytest.fixture(scope="module")
def models(pdf, tmp_path_factory, spark):
    """One small saved model of every kind, built without training on Spark: ``{kind: dir}``."""
    import xgboost
    from pyspark.ml import PipelineModel
    from sklearn.tree import DecisionTreeClassifier

    import trust_factories
    from sparkml_aiaas.compress import compress_model
    from sparkml_aiaas.core.preprocessing import PreprocessSpec, fit_from_pandas
    from sparkml_aiaas.core.torch_nets import build_network
    from sparkml_aiaas.models import TorchClassificationModel, wrap_model
    from sparkml_aiaas.models.linear import LogisticRegressionModel
    from sparkml_aiaas.preprocessing.stages import PreprocessorModel

    root = tmp_path_factory.mktemp("trust_models")
    X, y = pdf[COLS].to_numpy(), pdf["label"].to_numpy()
    dirs = {}

    def save(kind, model):
        dirs[kind] = str(root / kind)
        model.write().save(dirs[kind])

    linear = LogisticRegressionModel(coefficients=[0.5, -1.0, 2.0, 0.1], intercept=0.2,
                                     signature=_signature(COLS))
    save("linear", linear._set(featuresCols=COLS))
    mlp = {"type": "mlp", "input_size": 4, "hidden_layers": [6], "output_size": 3}
    save("torch_mlp", TorchClassificationModel.from_module(
        mlp, build_network(mlp, seed=0), featuresCols=COLS, numClasses=3))
    torch.manual_seed(0)
    save("torch_factory", TorchClassificationModel.from_module(
        FACTORY, trust_factories.make_net(width=5), featuresCols=COLS, numClasses=3,
        factoryKwargs={"width": 5}))
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
                            xgboost.DMatrix(X, label=y), num_boost_round=3)
    save("xgboost", wrap_model(booster, featuresCols=COLS, numClasses=3))
    save("sklearn", wrap_model(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y),
                               featuresCols=COLS))
    dirs["compressed"] = str(root / "compressed")
    compress_model(dirs["torch_mlp"], dirs["compressed"], method="prune+int8", sparsity=0.5)

    fitted = fit_from_pandas(pdf, PreprocessSpec(numeric_cols=["a", "b"],
                                                 categorical_cols=["city"], scaling="standard"))
    pre = PreprocessorModel(fitted=fitted, signature={"inputs": [
        {"name": "a", "type": "double"}, {"name": "b", "type": "double"},
        {"name": "city", "type": "string"}]})
    pre._set(outputCol="features")
    on_features = LogisticRegressionModel(
        coefficients=np.linspace(-1, 1, fitted.num_features), intercept=0.1,
        signature={"inputs": [{"name": "features", "type": "vector"}]})
    on_features._set(featuresCol="features")
    dirs["bundle"] = str(root / "bundle")
    pre.write().save(os.path.join(dirs["bundle"], "preprocessor"))
    on_features.write().save(os.path.join(dirs["bundle"], "model"))
    dirs["pipeline"] = str(root / "pipeline")
    PipelineModel(stages=[pre, on_features]).write().save(dirs["pipeline"])
    return dirs


@pytest.fixture(scope="module")
def factory_on_executors(spark):
    """The legitimate factory module and the canary reach the executors as users ship code."""
    for name in ("trust_factories.py", "trust_canary.py"):
        spark.sparkContext.addPyFile(os.path.join(TESTS_DIR, name))


def _rewrite_json(path, edit):
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.fixture
def probe(models, tmp_path):
    """Issue 14's probe: the factory model rewritten to run ``touch <canary>``."""
    target = str(tmp_path / "probe")
    shutil.copytree(models["torch_factory"], target)
    canary = str(tmp_path / "pwned")

    def edit(meta):
        meta["predictor"]["architecture"] = {"type": "factory", "factory": "subprocess:getoutput",
                                             "kwargs": {"cmd": f"touch {canary}"}}
    _rewrite_json(os.path.join(target, "metadata.json"), edit)
    yield target, canary
    assert not os.path.exists(canary), "the probe's command ran"


# --------------------------------------------------------------------------- the probe
def test_the_probe_is_refused_by_every_plain_python_loader(probe, pdf, monkeypatch, tmp_path):
    from sparkml_aiaas.compress import compress_model
    from sparkml_aiaas.models import TorchClassificationModel, load_model
    from sparkml_aiaas.scoring.model_cache import artifact_files, files_digest, get_predictor

    path, _ = probe
    monkeypatch.delenv(ENV_VAR, raising=False)
    message = r"'subprocess:getoutput', which is not trusted.*trusted_factories=.*" + ENV_VAR
    with pytest.raises(UntrustedCodeError, match=message) as info:
        load_predictor(path).predict(pdf)
    assert "\n" not in str(info.value) and path in str(info.value)
    with pytest.raises(UntrustedCodeError):
        load_predictor(path, trusted_factories=[FACTORY, "subprocess:getstatusoutput"])
    with pytest.raises(UntrustedCodeError):
        TorchClassificationModel.load(path)
    with pytest.raises(UntrustedCodeError):
        load_model(path)
    with pytest.raises(UntrustedCodeError):
        compress_model(path, str(tmp_path / "small"))
    # An executor loads with the driver's list and nothing from its own environment.
    monkeypatch.setenv(ENV_VAR, "subprocess:getoutput")
    files = artifact_files(path)
    with pytest.raises(UntrustedCodeError):
        get_predictor(files_digest(files), files, Allowlist())


def test_the_probe_is_refused_by_the_registry_and_the_server(models, pdf, tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.registry.core import content_digest

    registry = ModelRegistry(str(tmp_path / "registry"))
    registry.register(models["torch_factory"], "net")
    vdir = os.path.dirname(registry.resolve("net/1").path)
    # An unsigned registry: whoever can write it rewrites the model and the hashes.
    canary = str(tmp_path / "pwned")
    _rewrite_json(os.path.join(vdir, "model", "metadata.json"), lambda meta: meta["predictor"]
                  .update(architecture={"type": "factory", "factory": "subprocess:getoutput",
                                        "kwargs": {"cmd": f"touch {canary}"}}))

    def rehash(record):
        with open(os.path.join(vdir, "model", "metadata.json"), "rb") as f:
            record["files"]["model/metadata.json"] = hashlib.sha256(f.read()).hexdigest()
        record["digest"] = content_digest(record["files"])
    _rewrite_json(os.path.join(vdir, "registry.json"), rehash)
    registry.resolve("net/1")  # the checksums agree: only the allowlist stands in the way
    with pytest.raises(UntrustedCodeError):
        registry.load_predictor("net/1").predict(pdf)
    with pytest.raises(UntrustedCodeError):
        registry.load("net/1")
    with pytest.raises(UntrustedCodeError):
        registry.export_mlflow("net/1", str(tmp_path / "mlflow"))
    pytest.importorskip("fastapi")
    from sparkml_aiaas.serving import create_app
    from sparkml_aiaas.serving.tokens import create_token

    tokens = str(tmp_path / "tokens.json")
    create_token(tokens, "t", ["predict"])
    app = create_app(registry.root, ["net/1"], tokens, registry=registry)
    assert not app.state.manager.ready()
    assert "not trusted" in app.state.manager.models["net"].error
    assert not os.path.exists(canary)


def test_the_probe_is_refused_by_spark_scoring(spark, probe, pdf, tmp_path):
    from sparkml_aiaas.scoring import score, spark_udf

    path, _ = probe
    frame = spark.createDataFrame(pdf[COLS + ["id"]])
    with pytest.raises(UntrustedCodeError):
        score(spark, path, frame, str(tmp_path / "scores"))
    assert not os.path.exists(tmp_path / "scores")
    with pytest.raises(UntrustedCodeError):
        spark_udf(spark, path)


def test_executors_check_the_allowlist_they_receive_before_importing(spark, factory_on_executors,
                                                                     pdf, tmp_path):
    """A predictor pickled to the executors carries its allowlist and checks it there, before
    importing: here the canary factory (shipped to the executors) is not on the list the
    executor gets, so the task fails and the canary is never imported on the executor."""
    from sparkml_aiaas.core.torch_nets import state_to_arrays
    from sparkml_aiaas.models.torch_predictor import TorchPredictor
    from sparkml_aiaas.scoring.udf import transform_with_predictor

    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    state = {k[len("state."):]: v for k, v in state_to_arrays(net).items()}
    predictor = TorchPredictor({"type": "factory", "factory": "trust_canary:boom"}, state,
                               "classification", [4], feature_cols=COLS, num_classes=3)
    predictor.trusted_factories = Allowlist()  # what a narrower driver list would send
    frame = spark.createDataFrame(pdf[COLS + ["id"]]).coalesce(1)
    with pytest.raises(Exception, match="trust_canary:boom', which is not trusted"):
        transform_with_predictor(frame, predictor).collect()
    assert canary_records() == []


# --------------------------------------------------------------------------- trusted factories
def test_an_allowlisted_factory_loads_by_argument_wildcard_and_environment(models, pdf,
                                                                           monkeypatch):
    from sparkml_aiaas.models import TorchClassificationModel

    monkeypatch.delenv(ENV_VAR, raising=False)
    path = models["torch_factory"]
    want = TorchClassificationModel.load(path, trusted_factories=[FACTORY]).predictor() \
        .predict(pdf)
    for trust in ([FACTORY], "trust_factories:*", Allowlist.of([FACTORY])):
        got = load_predictor(path, trusted_factories=trust).predict(pdf)
        np.testing.assert_array_equal(np.stack(got["probability"]), np.stack(want["probability"]))
    with pytest.raises(UntrustedCodeError):
        load_predictor(path, trusted_factories=["trust_factories:other"])
    monkeypatch.setenv(ENV_VAR, f"os:getcwd, {FACTORY}")
    assert load_predictor(path).predict(pdf)["prediction"].tolist() == \
        want["prediction"].tolist()
    # An Allowlist object is final: the environment adds nothing to it.
    with pytest.raises(UntrustedCodeError):
        load_predictor(path, trusted_factories=Allowlist())


def test_a_wildcard_trusts_only_what_the_module_defines(models, tmp_path, pdf):
    wildcard = Allowlist.of("trust_factories:*")
    assert wildcard.allows(FACTORY) and not wildcard.allows("trust_factories:make_net.__globals__")
    assert not wildcard.allows("trust_factories_x:make_net") and not wildcard.allows("os:system")
    with pytest.raises(UntrustedCodeError, match="imports from elsewhere"):
        wildcard.resolve("trust_factories:torch.nn.Sequential")
    target = str(tmp_path / "reexport")
    shutil.copytree(models["torch_factory"], target)
    _rewrite_json(os.path.join(target, "metadata.json"), lambda m: m["predictor"][
        "architecture"].update(factory="trust_factories:torch.nn.Sequential", kwargs={}))
    with pytest.raises(UntrustedCodeError, match="imports from elsewhere"):
        load_predictor(target, trusted_factories="trust_factories:*").predict(pdf)
    for bad in ("os", "*", "os:*:x", "os:sys tem", "", 3):
        if bad == "":
            assert not Allowlist.of(bad)
            continue
        with pytest.raises(ConfigError, match="is not 'pkg.module:function'"):
            Allowlist.of([bad])


def test_scoring_with_a_trusted_factory_runs_on_executors(spark, factory_on_executors, models,
                                                          pdf, tmp_path):
    """The driver's list reaches the executors (whose environment trusts nothing)."""
    from sparkml_aiaas.scoring import score

    path = models["torch_factory"]
    frame = spark.createDataFrame(pdf[COLS + ["id"]]).coalesce(1)  # one Python worker
    want = load_predictor(path, trusted_factories=[FACTORY]).predict(pdf)
    report = score(spark, path, frame, str(tmp_path / "scores"), trusted_factories=[FACTORY])
    scored = pd.read_parquet(report.output_path).sort_values("id")
    np.testing.assert_array_equal(scored["prediction"], want["prediction"])


def test_a_model_built_in_this_process_needs_no_allowlist(spark, factory_on_executors, pdf,
                                                          tmp_path, monkeypatch):
    import trust_factories
    from sparkml_aiaas.models import TorchClassificationModel

    monkeypatch.delenv(ENV_VAR, raising=False)
    model = TorchClassificationModel.from_module(trust_factories.make_net, trust_factories
                                                 .make_net(), featuresCols=COLS, numClasses=3)
    assert model.trustedFactories == Allowlist.of([FACTORY])
    out = model.transform(spark.createDataFrame(pdf[COLS + ["id"]]).coalesce(1)).toPandas()
    np.testing.assert_array_equal(out["prediction"], model.predictor().predict(pdf)["prediction"])
    path = str(tmp_path / "mine")
    model.write().save(path)
    with pytest.raises(UntrustedCodeError):  # from a file it needs the allowlist like any other
        TorchClassificationModel.load(path)


def test_registry_and_server_load_a_trusted_factory(models, pdf, tmp_path):
    from sparkml_aiaas.registry import ModelRegistry

    registry = ModelRegistry(str(tmp_path / "registry"))
    registry.register(models["torch_factory"], "net")
    got = registry.load_predictor("net", trusted_factories=[FACTORY]).predict(pdf)
    assert len(got) == len(pdf)
    pytest.importorskip("fastapi")
    from sparkml_aiaas.cli import build_parser
    from sparkml_aiaas.serving import create_app
    from sparkml_aiaas.serving.tokens import create_token

    args = build_parser().parse_args(["serve", "--registry", registry.root, "--model", "net",
                                      "--tokens-file", "t", "--trust-factory", FACTORY,
                                      "--trust-factory", "other.mod:*"])
    assert args.trusted_factories == [FACTORY, "other.mod:*"]
    tokens = str(tmp_path / "tokens.json")
    create_token(tokens, "t", ["predict"])
    app = create_app(registry.root, ["net"], tokens, registry=registry,
                     trusted_factories=args.trusted_factories)
    assert app.state.manager.ready()


# --------------------------------------------------------------------------- model classes
def test_a_model_class_outside_the_package_is_refused_before_import(models, tmp_path):
    from sparkml_aiaas.models import load_model
    from sparkml_aiaas.models.linear import LogisticRegressionModel

    for name in ("trust_canary.Something", "os.system", "sparkml_aiaas.models.linear.np",
                 "sparkml_aiaas.cli.main", ["x"]):
        target = str(tmp_path / f"class_{abs(hash(str(name)))}")
        shutil.copytree(models["linear"], target)
        _rewrite_json(os.path.join(target, "metadata.json"), lambda m: m.update({"class": name}))
        with pytest.raises(ModelFormatError, match="not a sparkml_aiaas model class"):
            load_model(target)
        with pytest.raises(ModelFormatError, match="not a sparkml_aiaas model class"):
            LogisticRegressionModel.load(target)
    assert "trust_canary" not in sys.modules and canary_records() == []


def test_a_saved_pipeline_naming_a_foreign_stage_class_is_refused_before_import(models,
                                                                                tmp_path):
    from sparkml_aiaas.models import load_model

    target = str(tmp_path / "pipeline")
    shutil.copytree(models["pipeline"], target)
    stage = sorted(os.listdir(os.path.join(target, "stages")))[0]
    part = os.path.join(target, "stages", stage, "metadata", "part-00000")
    with open(part) as f:
        meta = json.loads(f.readline())
    meta["class"] = "trust_canary.Something"
    with open(part, "w") as f:
        f.write(json.dumps(meta) + "\n")
    with pytest.raises(ModelFormatError, match="neither a sparkml_aiaas model class nor"):
        load_model(target)
    assert "trust_canary" not in sys.modules


def test_the_class_table_is_every_class_our_artifact_writer_saves():
    import importlib

    from pyspark.ml.param import Params

    from sparkml_aiaas.models.persistence import ArtifactWriter

    found = set()
    for module_name in ("sparkml_aiaas.models.linear", "sparkml_aiaas.models.sklearn",
                        "sparkml_aiaas.models.torch", "sparkml_aiaas.models.xgboost",
                        "sparkml_aiaas.preprocessing.stages",
                        "sparkml_aiaas.preprocessing.deidentify"):
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == module_name
                    and issubclass(value, Params) and not value.__name__.startswith("_")
                    and getattr(value, "write", None) is not None):
                try:
                    writer = value().write()
                except Exception:  # estimators needing arguments are not artifacts
                    continue
                if isinstance(writer, ArtifactWriter):
                    found.add(f"{module_name}.{value.__qualname__}")
    assert found == set(ARTIFACT_CLASSES)


# --------------------------------------------------------------------------- fuzzing
class Tripwire(Exception):
    """Raised by the stand-ins for os.system, subprocess.getoutput and builtins.eval."""


@pytest.fixture
def tripwires(monkeypatch):
    """os.system, subprocess.getoutput and builtins.eval record any call instead of running."""
    calls = []

    def stand_in(name):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))
            raise Tripwire(name)
        return call
    monkeypatch.setattr(os, "system", stand_in("os.system"))
    monkeypatch.setattr(subprocess, "getoutput", stand_in("subprocess.getoutput"))
    monkeypatch.setattr(builtins, "eval", stand_in("builtins.eval"))
    return calls


def _governing_metadata(root, rel):
    """``(metadata.json path, name in its files table)`` that checksums ``rel``, or None."""
    folder, name = os.path.split(rel)
    meta = os.path.join(root, folder, "metadata.json")
    if name != "metadata.json" and os.path.isfile(meta):
        return meta, name
    return None


def _json_paths(value, prefix=()):
    """Every path to a value inside a JSON document (containers and leaves)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_paths(item, prefix + (i,))


def _replace(document, path, new):
    if not path:
        return new
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return document


_JSON_VALUES = st.one_of(
    st.sampled_from(HOSTILE), st.text(max_size=8), st.integers(-2, 10 ** 7), st.none(),
    st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(-1, 4), st.sampled_from(HOSTILE)), max_size=3),
    st.dictionaries(st.sampled_from(["type", "factory", "kwargs", "class", "x"]),
                    st.one_of(st.sampled_from(HOSTILE), st.integers(0, 3)), max_size=2))


def _mutate(data, root):
    """Damage one file of the model directory at ``root`` as ``data`` draws it; returns a
    description for the failure report."""
    files = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, _, names in os.walk(root) for f in names)
    rel = data.draw(st.sampled_from(files), label="file")
    full = os.path.join(root, rel)
    with open(full, "rb") as f:
        raw = f.read()
    document = None
    try:
        document = json.loads(raw.decode("utf-8").splitlines()[0] if rel.endswith("part-00000")
                              else raw.decode("utf-8"))
    except (ValueError, IndexError):
        pass
    kinds = ["flip", "truncate"] + (["json"] * 3 if document is not None else []) + (
        ["skops_json", "skops_member"] if rel.endswith(".skops") else []) + (
        ["ubj_value"] * 2 if rel.endswith(".ubj") else [])
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "flip":
        flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)),
                                             st.integers(1, 255)), min_size=1, max_size=4))
        out = bytearray(raw)
        for pos, bits in flips:
            if out:
                out[pos] ^= bits
        new = bytes(out)
    elif kind == "truncate":
        new = raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)), label="cut")]
    elif kind == "json":
        paths = list(_json_paths(document))
        strings = [p for p in paths if isinstance(_get(document, p), str)]
        use_string = strings and data.draw(st.booleans(), label="a string value")
        path = data.draw(st.sampled_from(strings if use_string else paths), label="path")
        value = data.draw(st.sampled_from(HOSTILE) if use_string else _JSON_VALUES, label="value")
        new = json.dumps(_replace(document, path, value)).encode()
        if rel.endswith("part-00000"):
            new += b"\n"
    elif kind == "ubj_value":  # a well-formed booster with one number changed: its trees
        from sparkml_aiaas.models.xgboost_check import decode_ubj

        model = decode_ubj(raw)
        paths = [p for p in _json_paths(model) if isinstance(_get(model, p), (int, np.ndarray))
                 and not isinstance(_get(model, p), bool)]
        path = data.draw(st.sampled_from(paths), label="ubj path")
        number = data.draw(st.sampled_from([-2, -1, 0, 1, 2, 3, 4, 6, 2 ** 31 - 1]), label="n")
        target = _get(model, path)
        if isinstance(target, np.ndarray) and target.size:
            target = target.copy()
            target[data.draw(st.integers(0, target.size - 1), label="at")] = \
                np.asarray(number).astype(target.dtype)  # wraps around in a uint8 array
        elif not isinstance(target, np.ndarray):
            target = number
        new = _ubj(_replace(model, path, target))
    else:  # inside the skops zip: its schema names the classes to rebuild, .npy the values
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        if kind == "skops_json":
            schema = json.loads(members["schema.json"])
            strings = [p for p in _json_paths(schema) if isinstance(_get(schema, p), str)]
            path = data.draw(st.sampled_from(strings), label="schema path")
            value = data.draw(st.sampled_from(HOSTILE), label="value")
            members["schema.json"] = json.dumps(_replace(schema, path, value)).encode()
        else:
            name = data.draw(st.sampled_from(sorted(members)), label="member")
            content = bytearray(members[name])
            for pos, bits in data.draw(st.lists(st.tuples(st.integers(0, max(len(content) - 1, 0)),
                                                         st.integers(1, 255)), min_size=1,
                                                max_size=3), label="member flips"):
                if content:
                    content[pos] ^= bits
            members[name] = bytes(content)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        new = buffer.getvalue()
    with open(full, "wb") as f:
        f.write(new)
    governing = _governing_metadata(root, rel)
    fixed = governing is not None and data.draw(st.booleans(), label="checksum rewritten")
    if fixed:  # the attacker rewrites the hash too: now only the parsers stand in the way
        meta_path, name = governing
        try:
            _rewrite_json(meta_path, lambda m: m["files"][name].update(
                sha256=hashlib.sha256(new).hexdigest()))
        except (KeyError, TypeError, AttributeError, ValueError):
            pass
    return f"{kind} of {rel}" + (" (checksum rewritten)" if fixed else "")


def _ubj(value) -> bytes:
    """UBJ bytes of a decoded booster, in the forms XGBoost writes (counts as int64)."""
    def count(n):
        return b"L" + struct.pack(">q", n)
    if value is None:
        return b"Z"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return (b"i" + struct.pack(">b", value) if -128 <= value < 128 else
                b"l" + struct.pack(">i", value) if -2 ** 31 <= value < 2 ** 31 else
                b"L" + struct.pack(">q", value))
    if isinstance(value, (float, np.floating)):
        return b"d" + struct.pack(">f", value)
    if isinstance(value, str):
        return b"S" + count(len(value.encode())) + value.encode()
    if isinstance(value, np.ndarray):
        marker = {"int32": b"l", "int64": b"L", "uint8": b"U", "int8": b"i", "int16": b"I",
                  "float32": b"d", "float64": b"D"}[value.dtype.name]
        return (b"[$" + marker + b"#" + count(value.size)
                + value.astype(value.dtype.newbyteorder(">")).tobytes())
    if isinstance(value, list):
        return b"[#" + count(len(value)) + b"".join(_ubj(v) for v in value)
    return b"{" + b"".join(count(len(k.encode())) + k.encode() + _ubj(v)
                           for k, v in value.items()) + b"}"


def _get(document, path):
    for key in path:
        document = document[key]
    return document


def _load_and_predict(path, frame, trusted_factories):
    """Load and predict; ``ModelFormatError`` (at load or predict) and ``DataValidationError``
    (at predict: an edit renamed the model's input columns) are the allowed refusals."""
    try:
        predictor = load_predictor(path, trusted_factories=trusted_factories)
    except ModelFormatError:
        return "refused"
    try:
        predictor.predict(frame)
    except (ModelFormatError, DataValidationError):
        return "refused at predict"
    return "loaded"


def _load_model(path, trusted_factories):
    from sparkml_aiaas.models import load_model

    try:
        model = load_model(path, trusted_factories=trusted_factories)
    except ModelFormatError:
        return
    predictor = getattr(model, "predictor", None)
    if predictor is not None:
        try:
            predictor()
        except ModelFormatError:
            pass


FAMILIES = ["linear", "torch_mlp", "torch_factory", "xgboost", "sklearn", "compressed",
            "bundle", "pipeline"]


@pytest.mark.parametrize("kind", FAMILIES)
def test_fuzz_damaged_models_refuse_cleanly_and_never_run_named_code(kind, models, pdf,
                                                                     tripwires, tmp_path,
                                                                     monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    # The legitimate factory is trusted, so edits reach past the allowlist into the
    # factory call and the weights; nothing else is.
    trust = [FACTORY] if kind == "torch_factory" else None
    source = models[kind]
    spark_model = kind not in ("bundle", "pipeline")
    work = tempfile.mkdtemp(dir=tmp_path)

    @FUZZ
    @given(data=st.data())
    def run(data):
        target = os.path.join(work, "m")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        what = _mutate(data, target)
        note(what)
        outcome = _load_and_predict(target, pdf, trust)
        note(outcome)
        event(outcome)  # --hypothesis-show-statistics: how many loaded, refused where
        if spark_model:
            _load_model(target, trust)
        assert tripwires == [], what
        assert "trust_canary" not in sys.modules and canary_records() == [], what

    run()


# --------------------------------------------------------------------------- MLflow export
def test_mlflow_export_has_no_pickle_and_predicts_like_load_predictor(models, pdf, tmp_path,
                                                                      monkeypatch):
    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc")
    from sparkml_aiaas.registry import ModelRegistry

    monkeypatch.chdir(tmp_path)  # mlflow may create ./mlruns
    registry = ModelRegistry(str(tmp_path / "registry"))
    registry.register(os.path.join(models["bundle"], "model"), "bundle",
                      preprocessor=os.path.join(models["bundle"], "preprocessor"))
    target = registry.export_mlflow("bundle", str(tmp_path / "export"))
    names = [f for _, _, files in os.walk(target) for f in files]
    assert not [f for f in names if f.endswith((".pkl", ".pickle", ".cloudpickle"))], names
    with open(os.path.join(target, "MLmodel")) as f:
        mlmodel = f.read()
    assert "loader_module: sparkml_aiaas.registry.mlflow_loader" in mlmodel
    assert "python_model" not in mlmodel and "cloudpickle" not in mlmodel
    got = mlflow_pyfunc.load_model(target).predict(pdf[["a", "b", "city"]])
    want = load_predictor(registry.resolve("bundle").predictor_path).predict(pdf)
    np.testing.assert_array_equal(np.stack(got["probability"]), np.stack(want["probability"]))
    np.testing.assert_array_equal(got["prediction"], want["prediction"])
