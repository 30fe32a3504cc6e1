"""Config errors: one line, cause first, "did you mean" for unknown keys (no Spark session)."""

import os
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparkml_aiaas.config import (MAX_PROBLEMS, IngestJobConfig, ScoreJobConfig, TrainJobConfig,
                                  load_config, model_param_aliases, preprocess_param_aliases,
                                  validate_config)
from sparkml_aiaas.errors import ConfigError, expected_names, unknown_names_hint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_YAML = os.path.join(ROOT, "conf", "train.yaml")
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)

SCHEMA = [{"name": "id", "type": "int"}, {"name": "a", "type": "double"}]
#: A valid config of each job with every optional section present: (model, data).
JOBS = {
    "train": (TrainJobConfig, {
        "input": {"path": "x.csv", "schema": SCHEMA}, "split": {"key": "id"},
        "model": {"features": ["a"]}, "output": {"model_path": "m"},
        "registry": {"root": "reg", "name": "churn"}}),
    "score": (ScoreJobConfig, {
        "model_path": "m", "input": {"path": "x.parquet", "format": "parquet"},
        "output": {"path": "o"}}),
    "ingest": (IngestJobConfig, {
        "input": {"path": "x.csv", "schema": SCHEMA}, "output": {"path": "o"},
        "quarantine": {"path": "q"}}),
}
#: (job, section or "" for the top level) → the keys that section accepts.
SECTIONS = {
    ("train", ""): ["input", "model", "output", "preprocess", "registry", "spark", "split"],
    ("train", "input"): ["format", "max_reject_fraction", "options", "path", "quarantine_path",
                         "schema", "version"],
    ("train", "split"): ["key", "seed", "test_fraction"],
    ("train", "model"): ["features", "features_col", "label_col", "params", "type"],
    ("train", "output"): ["metrics_path", "model_path", "overwrite", "report", "report_dir"],
    ("train", "registry"): ["alias", "description", "name", "root"],
    ("score", ""): ["batch_size", "incremental", "input", "model", "model_name", "model_path",
                    "output", "registry", "run_id", "spark"],
    ("score", "output"): ["format", "mode", "partition_by", "path"],
    ("ingest", "input"): ["format", "max_reject_fraction", "non_finite", "on_schema_drift",
                          "options", "path", "schema"],
    ("ingest", "output"): ["format", "keys", "mode", "partition_by", "path"],
    ("ingest", "quarantine"): ["format", "mode", "path"],
}
#: Names a section also accepts besides its keys (pydantic's populate_by_name).
ALSO_ACCEPTED = {"schema_"}


@st.composite
def one_char_off(draw, keys):
    """A key of ``keys`` with one character replaced, inserted or deleted, not itself a key."""
    key = draw(st.sampled_from(sorted(keys)))
    i = draw(st.integers(0, len(key)))
    char = draw(st.characters(min_codepoint=32, max_codepoint=0x2FF))
    edit = draw(st.sampled_from(["replace", "insert", "delete"]))
    if edit == "insert":
        typo = key[:i] + char + key[i:]
    elif edit == "delete" or i == len(key):
        typo = key[:max(i - 1, 0)] + key[max(i, 1):]
    else:
        typo = key[:i] + char + key[i + 1:]
    assume(typo and typo not in keys and typo not in ALSO_ACCEPTED)
    return key, typo


def _error(model, data, source="<arguments>", overridden=()):
    with pytest.raises(ConfigError) as info:
        validate_config(model, data, source, overridden)
    return str(info.value)


def _check_unknown_key_message(message, key, typo, known, where):
    """The property: one line, the unknown key named first; then the suggestion (a known
    key, the original one unless another is at least as close) or every known key."""
    assert "\n" not in message
    prefix = f"invalid configuration in <arguments>: unknown key {typo!r} {where}"
    assert message.startswith(prefix), message
    rest = message[len(prefix):]
    suggested = re.fullmatch(r"; did you mean '(.+)'\?", rest)
    if suggested:
        import difflib

        guess = suggested.group(1)
        assert guess in known
        if guess != key:  # another key is at least as close (or a case-folded match)
            def ratio(name):
                return difflib.SequenceMatcher(None, typo.lower(), name.lower()).ratio()
            assert ratio(guess) >= ratio(key) - 1e-9 or guess.lower() == typo.lower()
    else:
        assert rest == f"; known: {sorted(known)}", message


@PROPERTY
@given(data=st.data(), section=st.sampled_from(sorted(SECTIONS)))
def test_a_key_one_character_off_is_named_with_a_suggestion_or_the_known_keys(data, section):
    job, name = section
    model, base = JOBS[job]
    known = SECTIONS[section]
    key, typo = data.draw(one_char_off(known))
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    (config[name] if name else config)[typo] = 1
    message = _error(model, config)
    _check_unknown_key_message(message, key, typo, known,
                               f"in {name}" if name else "at the top level")


def test_the_sections_listed_are_the_models_keys():
    # SECTIONS is written out so the test does not share the code it checks; keep it true.
    for (job, name), keys in SECTIONS.items():
        model, _ = JOBS[job]
        if name:
            model = model.model_fields[name].annotation
            model = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))
        assert sorted(f.alias or n for n, f in model.model_fields.items()) == keys, (job, name)


@PROPERTY
@given(data=st.data(), model_type=st.sampled_from(["logistic_regression", "linear_svc"]))
def test_a_model_param_one_character_off_is_named_with_a_suggestion_or_the_known_params(
        data, model_type):
    known = sorted(model_param_aliases(model_type))
    key, typo = data.draw(one_char_off(known))
    with pytest.raises(ValueError) as info:
        model_param_aliases(model_type, {typo: 1})
    message = str(info.value)
    prefix = f"unknown model param(s) [{typo!r}] for type {model_type!r}"
    assert message.startswith(prefix)
    rest = message[len(prefix):]
    guess = re.fullmatch(r"; did you mean '(.+)'\?", rest)
    assert (guess and guess.group(1) in known) or rest == f"; known: {known}", message


@PROPERTY
@given(data=st.data())
def test_an_unknown_set_override_says_it_came_from_set(data):
    known = SECTIONS[("train", "input")]
    _, typo = data.draw(one_char_off(known))
    assume("=" not in typo and "." not in typo and typo.strip() == typo)
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, TRAIN_YAML, [f"input.{typo}=1"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"invalid configuration in {TRAIN_YAML}: unknown key {typo!r} in input (from --set)")


def test_did_you_mean_examples():
    model, base = JOBS["train"]
    assert _error(model, {**base, "input": {**base["input"], "quarantine_pth": "q"}}) == (
        "invalid configuration in <arguments>: unknown key 'quarantine_pth' in input; "
        "did you mean 'quarantine_path'?")
    assert _error(model, {**base, "inptu": {}}) == (
        "invalid configuration in <arguments>: unknown key 'inptu' at the top level; "
        "did you mean 'input'?")
    assert _error(model, {**base, "model": {"features": ["a"], "params": {"reg_parm": 1}}}) == (
        "invalid configuration in <arguments>: model.params: unknown model param(s) "
        "['reg_parm'] for type 'logistic_regression'; did you mean 'reg_param'?")
    nothing_close = _error(model, {**base, "output": {"model_path": "m", "zzz": 1}})
    assert nothing_close == (
        "invalid configuration in <arguments>: unknown key 'zzz' in output; known: "
        "['metrics_path', 'model_path', 'overwrite', 'report', 'report_dir']")
    with pytest.raises(ValueError, match=r"^unknown preprocess key\(s\) \['scalling'\]; "
                                         r"did you mean 'scaling'\?$"):
        preprocess_param_aliases({"scalling": "standard"})


def test_unknown_names_hint():
    known = ["max_iter", "reg_param", "tol"]
    assert unknown_names_hint(["reg_parm"], known) == "; did you mean 'reg_param'?"
    assert unknown_names_hint(["MAX_ITER"], known) == "; did you mean 'max_iter'?"
    assert unknown_names_hint(["zzz"], known) == "; known: ['max_iter', 'reg_param', 'tol']"
    assert unknown_names_hint(["reg_parm", "max_itr"], known) == (
        "; did you mean 'reg_param' for 'reg_parm', 'max_iter' for 'max_itr'?")
    assert unknown_names_hint(["reg_parm", "zzz"], known) == (
        "; did you mean 'reg_param' for 'reg_parm'? known: ['max_iter', 'reg_param', 'tol']")
    assert unknown_names_hint([], known) == ""


def test_expected_names_shortens_a_long_list_with_a_count():
    assert expected_names(["id", "x"]) == "expected 2 columns: id, x"
    assert expected_names([]) == "expected no columns"
    assert expected_names(["a b", "c"], "inputs") == "expected 2 inputs: 'a b', c"
    names = [f"c{i}" for i in range(32)]
    assert expected_names(names) == (
        "expected 32 columns: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, … (+22 more)")


def test_several_problems_are_one_line_joined_then_counted():
    model, base = JOBS["train"]
    two = _error(model, {**base, "split": {"key": "id", "seed": "x"},
                         "output": {"modle_path": "m"}})
    assert two == (
        "invalid configuration in <arguments> (3 problems): split.seed: Input should be a "
        "valid integer, unable to parse string as an integer; output.model_path: Field "
        "required; unknown key 'modle_path' in output; did you mean 'model_path'?")
    many = _error(model, {"input": {f"k{i}": 1 for i in range(8)}, "model": {"features": ["a"]},
                          "output": {"model_path": "m"}})
    assert "\n" not in many
    assert many.startswith("invalid configuration in <arguments> (9 problems): input.path: "
                           "Field required; unknown key 'k0' in input; known: [")
    assert many.count("unknown key") == MAX_PROBLEMS - 1 and many.endswith(" (+4 more)")


def test_cli_prints_a_config_error_on_one_line(tmp_path, capsys):
    from sparkml_aiaas.cli import EXIT_USER_ERROR, main

    assert main(["train", "--config", TRAIN_YAML, "--set", "model.params.reg_parm=0.1"]) \
        == EXIT_USER_ERROR
    assert capsys.readouterr().err == (
        f"error: invalid configuration in {TRAIN_YAML}: model.params: unknown model "
        "param(s) ['reg_parm'] for type 'logistic_regression'; did you mean 'reg_param'?\n")
    path = tmp_path / "ingest.yaml"
    path.write_text("input: {path: x.csv, schema: [{name: id, type: int}], on_schema_drif: allow}"
                    "\noutput: {path: o}\n")
    assert main(["ingest", "--config", str(path)]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == (
        f"error: invalid configuration in {path}: unknown key 'on_schema_drif' in input; did "
        "you mean 'on_schema_drift'?\n")


def test_reproduce_names_an_unknown_recorded_key_as_a_config_error_does(tmp_path):
    from sparkml_aiaas.registry.reproduce import CannotReproduce, reproduction_config

    recorded = {"config": {"input": {"path": "x.parquet", "format": "parquet", "quarantin": 1},
                           "model": {"features": ["a"]}}}
    with pytest.raises(CannotReproduce) as info:
        reproduction_config(recorded, str(tmp_path))
    assert str(info.value) == ("the recorded train config does not validate with this version "
                               "(unknown key 'quarantin' in input; did you mean "
                               "'quarantine_path'?)")
