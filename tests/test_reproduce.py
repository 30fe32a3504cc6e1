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
