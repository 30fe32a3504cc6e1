"""Register from the command line and the train job; reproduce bit for bit, or learn why not.

Each family is trained by a train job with a ``registry:`` block (or registered with
``models register``), then retrained by ``reproduce`` and compared array by array.
"""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.cli import main
from sparkml_aiaas.registry import DEFAULT_KEY_ENV, ModelRegistry


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


# --------------------------------------------------------------------------- no provenance
@pytest.fixture
def wrapped_dir(tmp_path):
    """A model wrapped from outside (scikit-learn), saved: no train job behind it."""
    from sklearn.linear_model import LogisticRegression

    from sparkml_aiaas.models import wrap_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    model = wrap_model(LogisticRegression().fit(X, X[:, 0] > 0), featuresCols=["a", "b", "c"])
    path = str(tmp_path / "wrapped")
    model.write().save(path)
    return path


def test_cli_register_and_a_model_without_provenance_is_refused_in_one_line(
        tmp_path, wrapped_dir, capsys):
    root = str(tmp_path / "registry")
    code, out, err = _cli(capsys, "models", "register", wrapped_dir, "--registry", root,
                          "--name", "outside", "--alias", "production")
    assert code == 0, err
    assert out.startswith("registered outside/1 (outside@production) from ")
    assert out.endswith("not reproducible: no train-job provenance")
    code, out, err = _cli(capsys, "models", "reproduce", "outside@production",
                          "--registry", root)
    assert code == 2 and "\n" not in out
    assert out.startswith("cannot reproduce outside/1: outside/1 has no recorded provenance")
    # The attempt is kept beside the version, and describe says so.
    code, out, _ = _cli(capsys, "models", "describe", "outside/1", "--registry", root)
    assert "  reproducible    no (no train-job provenance recorded)" in out
    assert "refused: cannot reproduce outside/1" in out
    last = ModelRegistry(root).last_reproduction("outside", 1)
    assert last["status"] == "refused" and last["exit_code"] == 2
    assert os.path.dirname(last["report_path"]) == os.path.join(root, "outside",
                                                                "reproductions", "1")


@pytest.mark.parametrize("argv, message", [
    (["models", "register", "/no/such/dir", "--name", "m"], "no saved model at '/no/such/dir'"),
    (["models", "register", "{wrapped}", "--name", "bad name"], "invalid model name"),
    (["models", "register", "{wrapped}", "--name", "m", "--alias", "7"], "invalid alias '7'"),
    (["models", "reproduce", "nope/1"], "nope"),
])
def test_cli_errors_are_one_line(tmp_path, wrapped_dir, capsys, argv, message):
    argv = [a.replace("{wrapped}", wrapped_dir) for a in argv]
    code, _, err = _cli(capsys, *argv, "--registry", str(tmp_path / "registry"))
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not os.path.exists(os.path.join(tmp_path, "registry", "m", "versions", "1"))


# --------------------------------------------------------------------------- train jobs
SCHEMA = "id INT, a DOUBLE, b DOUBLE, c DOUBLE, city STRING, y DOUBLE, label INT"
NUMERIC = ["a", "b", "c"]
#: model type -> (label column, params): small fits, every family the engine trains.
FAMILIES = {
    "logistic_regression": ("label", {"reg_param": 0.01}),
    "linear_regression": ("y", {"reg_param": 0.01}),
    "linear_svc": ("label", {"reg_param": 0.01, "max_iter": 50}),
    "torch_classifier": ("label", {"max_epochs": 3, "hidden_layers": [4], "batch_size": 32,
                                   "seed": 5}),
    "xgboost_classifier": ("label", {"num_round": 5, "max_depth": 2}),
    "random_forest_classifier": ("label", {"num_trees": 4, "max_depth": 3, "subsample": 0.8}),
}


def _rows(n, seed):
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    city = np.array(["paris", "lyon", "nice"])[rng.integers(0, 3, n)]
    margin = 1.5 * a - b + 0.5 * c + (city == "nice") + 0.4 * rng.normal(size=n)
    return pd.DataFrame({"id": np.arange(n, dtype=np.int32), "a": a, "b": b, "c": c,
                         "city": city, "y": 2.0 * a - b + 0.1 * rng.normal(size=n),
                         "label": (margin > 0.3).astype(np.int32)})


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    """Two CSV files of one input (a folder), written once for the module."""
    folder = tmp_path_factory.mktemp("reproduce") / "input"
    folder.mkdir()
    rows = _rows(300, seed=11)
    rows.iloc[:150].to_csv(folder / "part-0.csv", index=False, float_format="%.17g")
    rows.iloc[150:].to_csv(folder / "part-1.csv", index=False, float_format="%.17g")
    return str(folder)


def _job(input_path, workdir, kind="logistic_regression", registry=None, preprocess=None,
         input_format="csv"):
    from sparkml_aiaas.config import TrainJobConfig, validate_config

    label, params = FAMILIES[kind]
    source = {"path": input_path, "format": input_format}
    if input_format == "csv":
        source.update(schema=SCHEMA, options={"header": True},
                      quarantine_path=os.path.join(workdir, "quarantine"))
    model = {"type": kind, "label_col": label, "params": params}
    if preprocess is None:
        model["features"] = NUMERIC
    data = {"input": source, "split": {"key": "id", "test_fraction": 0.25, "seed": 3},
            "model": model,
            "output": {"model_path": os.path.join(workdir, "model"), "report": False}}
    if registry is not None:
        data["registry"] = registry
    if preprocess is not None:
        data["preprocess"] = preprocess
    return validate_config(TrainJobConfig, data)


def _train(spark, config):
    from sparkml_aiaas.pipeline import run_training

    report = run_training(spark, config)
    for frame in (report.test_frame,):
        if frame is not None:
            frame.unpersist()
    return report


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_each_family_registered_by_the_train_job_reproduces_bit_for_bit(
        spark, input_dir, tmp_path, kind):
    root = str(tmp_path / "registry")
    report = _train(spark, _job(input_dir, str(tmp_path), kind,
                                registry={"root": root, "name": "m", "alias": "production"}))
    assert report.registered_ref == "m/1"
    registry = ModelRegistry(root)
    provenance = registry.resolve("m@production").metadata["provenance"]
    assert provenance["family"] in ("linear", "torch", "xgboost")
    assert provenance["blocks"] >= 1
    assert [f["path"] for f in provenance["input"]["manifest"]["files"]] == \
        ["part-0.csv", "part-1.csv"]
    outcome = registry.reproduce("m@production", spark=spark)
    assert outcome.status == "identical", outcome.summary
    assert outcome.exit_code == 0 and outcome.summary.startswith("reproduced m/1 bit for bit")
    assert registry.last_reproduction("m", 1)["status"] == "identical"


def test_cli_register_then_reproduce_describe_and_a_changed_or_copied_file(
        spark, input_dir, tmp_path, capsys):
    folder = str(tmp_path / "input")
    shutil.copytree(input_dir, folder)
    _train(spark, _job(folder, str(tmp_path)))
    root = str(tmp_path / "registry")
    code, out, err = _cli(capsys, "models", "register", str(tmp_path / "model"),
                          "--registry", root, "--name", "churn", "--alias", "production")
    assert code == 0, err
    assert out.endswith("reproducible: provenance recorded")
    meta = ModelRegistry(root).resolve("churn/1").metadata
    assert set(meta["metrics"]) >= {"auc", "accuracy"}  # the job's, from the model's metadata
    assert meta["config"]["model"]["type"] == "logistic_regression"
    code, out, err = _cli(capsys, "models", "reproduce", "churn@production", "--registry", root,
                          "--workdir", str(tmp_path / "again"))
    assert code == 0, (out, err)
    # The retrain's progress lines, then the summary last (--quiet: the summary only).
    assert out.splitlines()[0].startswith("ingest    read 300")
    assert out.splitlines()[-1].startswith("reproduced churn/1 bit for bit: model ")
    assert os.path.isdir(tmp_path / "again" / "model")  # --workdir keeps the retrained model
    code, out, _ = _cli(capsys, "models", "describe", "churn/1", "--registry", root)
    assert "  reproducible    yes: 2 file(s) under " in out
    assert " identical: reproduced churn/1 bit for bit" in out

    # A copy of a file with the same bytes (a new modification time) is the same input.
    part = os.path.join(folder, "part-1.csv")
    shutil.copyfile(part, part + ".tmp")
    os.replace(part + ".tmp", part)
    code, out, _ = _cli(capsys, "models", "reproduce", "churn/1", "--registry", root, "--quiet")
    assert code == 0 and "\n" not in out, out
    # Changed bytes are named, and nothing is retrained.
    with open(part, "a") as f:
        f.write("300,0.1,0.2,0.3,lyon,0.5,1\n")
    code, out, _ = _cli(capsys, "models", "reproduce", "churn/1", "--registry", root, "--quiet")
    assert code == 2
    assert out == ("cannot reproduce churn/1: churn/1's training input changed: input file "
                   "changed: part-1.csv (content differs; size "
                   f"{os.path.getsize(part) - 27} -> {os.path.getsize(part)} bytes)")


def test_other_library_versions_are_refused_unless_allowed(spark, input_dir, tmp_path,
                                                           monkeypatch):
    from sparkml_aiaas.registry import provenance

    root = str(tmp_path / "registry")
    _train(spark, _job(input_dir, str(tmp_path), registry={"root": root, "name": "m"}))
    real = provenance.environment()
    monkeypatch.setattr(provenance, "environment", lambda: dict(real, numpy="1.0.0"))
    registry = ModelRegistry(root)
    outcome = registry.reproduce("m/1", spark=spark)
    assert outcome.exit_code == 2
    assert outcome.summary == (f"cannot reproduce m/1: m/1 was trained with other code or "
                               f"libraries: numpy {real['numpy']} (recorded) != 1.0.0 (here) "
                               "(--allow-environment-change retrains anyway)")
    outcome = registry.reproduce("m/1", spark=spark, allow_environment_change=True)
    assert outcome.exit_code == 0, outcome.summary
    assert outcome.notes == [f"allowed: numpy {real['numpy']} (recorded) != 1.0.0 (here)"]


def test_a_different_block_count_is_reported_array_by_array(spark, input_dir, tmp_path):
    """Exit 1 names the arrays that differ and by how much (here: the registry.json of an
    unsigned registry edited to record 3 blocks where the fit used 2)."""
    root = str(tmp_path / "registry")
    _train(spark, _job(input_dir, str(tmp_path), "linear_regression",
                       registry={"root": root, "name": "m"}))
    meta_path = os.path.join(root, "m", "versions", "1", "registry.json")
    with open(meta_path) as f:
        meta = json.load(f)
    assert meta["provenance"]["blocks"] == 2  # local[2]: one block per core
    meta["provenance"]["blocks"] = 3
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    outcome = ModelRegistry(root).reproduce("m/1", spark=spark)
    assert outcome.exit_code == 1, outcome.summary
    assert outcome.summary.startswith("m/1 NOT reproduced: ")
    names = {d.name for d in outcome.differences}
    assert names <= {"coefficients", "intercept"} and names
    assert all(d.max_abs_diff is not None and 0 < d.max_abs_diff < 1e-9
               for d in outcome.differences)


def test_a_bundle_trained_from_delta_reproduces_after_the_table_gains_versions(
        spark, tmp_path):
    deltalake = pytest.importorskip("deltalake")
    table = str(tmp_path / "table")
    rows = _rows(300, seed=5)
    deltalake.write_deltalake(table, rows)
    root = str(tmp_path / "registry")
    preprocess = {"numeric_cols": NUMERIC, "categorical_cols": ["city"],
                  "scaling": "standard", "handle_unseen": "zero"}
    report = _train(spark, _job(table, str(tmp_path), input_format="delta",
                                preprocess=preprocess,
                                registry={"root": root, "name": "bundle"}))
    registry = ModelRegistry(root)
    mv = registry.resolve(report.registered_ref)
    assert mv.preprocessor_path is not None
    assert mv.metadata["provenance"]["input"]["delta_version"] == 0
    deltalake.write_deltalake(table, _rows(50, seed=6), mode="append")  # version 1
    outcome = registry.reproduce("bundle/1", spark=spark)
    assert outcome.status == "identical", outcome.summary
    assert set(outcome.compared) == {"model", "preprocessor"}


def test_reproduce_on_local_cluster(spark, input_dir, tmp_path):
    """The CLI in a fresh process on two executor JVMs retrains what local[2] trained."""
    import subprocess
    import sys

    root = str(tmp_path / "registry")
    _train(spark, _job(input_dir, str(tmp_path), registry={"root": root, "name": "m"}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] +
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop(DEFAULT_KEY_ENV, None)
    done = subprocess.run([sys.executable, "-m", "sparkml_aiaas", "models", "reproduce", "m/1",
                           "--registry", root, "--master", "local-cluster[2,1,1024]",
                           "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    # The summary is the last line (--quiet still shows our warnings, e.g. a lost executor).
    assert done.stdout.splitlines()[-1].startswith("reproduced m/1 bit for bit"), done.stdout


@pytest.fixture(scope="module")
def classic_registry(spark, input_dir, tmp_path_factory):
    """A registry with m/1 trained on the classic session (before any test enters Connect
    mode: the classic and the Connect session share this process)."""
    workdir = tmp_path_factory.mktemp("classic-trained")
    root = str(workdir / "registry")
    _train(spark, _job(input_dir, str(workdir), registry={"root": root, "name": "m"}))
    return root


def test_reproduce_on_spark_connect(classic_registry, connect):
    """Trained on a classic session, retrained through a Spark Connect server: the same
    bits (the input is listed and hashed on the server)."""
    outcome = ModelRegistry(classic_registry).reproduce("m/1", spark=connect)
    assert outcome.status == "identical", outcome.summary


def test_a_recorded_factory_is_not_imported_unless_allowlisted(spark, input_dir, tmp_path,
                                                                monkeypatch):
    """registry.json of an unsigned registry can be edited: a torch factory it names is
    code, refused as a string before anything is imported or trained."""
    import sys

    root = str(tmp_path / "registry")
    _train(spark, _job(input_dir, str(tmp_path), "torch_classifier",
                       registry={"root": root, "name": "m"}))
    meta_path = os.path.join(root, "m", "versions", "1", "registry.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["provenance"]["config"]["model"]["params"]["architecture"] = "evil_module_x:make"
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    monkeypatch.delenv("SPARKML_AIAAS_TRUSTED_FACTORIES", raising=False)
    outcome = ModelRegistry(root).reproduce("m/1", spark=spark)
    assert outcome.exit_code == 2
    assert "names the network factory 'evil_module_x:make', which is not trusted" in \
        outcome.summary
    assert "evil_module_x" not in sys.modules
