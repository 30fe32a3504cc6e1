"""Registry names, aliases and references: exact, ASCII-only validation, one ConfigError.

Property tests (Hypothesis) check the pure validators against an independent rule
written without regular expressions, over text that mixes the valid alphabet with
what an adversary sends: trailing newlines, NUL, separators, ``@``, whitespace,
non-ASCII digits (``²`` ``١`` ``٣``), very long strings.  Every input is either
accepted and round-trips, or refused with exactly ``ConfigError`` and a one-line
message.  A few real registrations (a wrapped scikit-learn model: no Spark) and the
CLI (``models``, ``score``, ``serve``: ``error: ...``, one line, exit 2) follow.
"""

import contextlib
import io
import ntpath
import os
import posixpath

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkml_aiaas.errors import ConfigError
from sparkml_aiaas.registry import DEFAULT_KEY_ENV, ModelRegistry, parse_ref, validate_alias, \
    validate_name

COLS = ["x0", "x1"]
ASCII_NAME_CHARS = "abcxyzABCXYZ0123456789._-"
NASTY = ["\n", "\r", "\x00", "/", "\\", "@", " ", "\t", "²", "١", "٣", "..", ".", "é", "ａ",
         "\u2028", ":", "*"]
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None)

# Mostly valid characters, often one nasty piece: the interesting inputs are near misses.
pieces = st.lists(st.one_of(st.sampled_from(list(ASCII_NAME_CHARS)), st.sampled_from(NASTY)),
                  max_size=12).map("".join)
texts = st.one_of(pieces, st.text(max_size=20),
                  st.integers(120, 140).map(lambda n: "a" * n),  # around the 128 limit
                  st.just("m" * 5000))


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


def rule_name(text):
    """The documented rule, spelled out by hand (no regex): 1-128 of ASCII [A-Za-z0-9._-],
    starting with a letter or digit, without '..'."""
    ascii_alnum = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    return (1 <= len(text) <= 128 and text[0] in ascii_alnum
            and all(c in ascii_alnum or c in "._-" for c in text) and ".." not in text)


def rule_alias(text):
    return rule_name(text) and not all(c in "0123456789" for c in text)


def rule_version(text):
    return 1 <= len(text) <= 18 and all(c in "0123456789" for c in text) and int(text) >= 1


def _refused(call, *args):
    with pytest.raises(ConfigError) as info:
        call(*args)
    assert type(info.value) is ConfigError
    message = str(info.value)
    assert message.startswith("invalid ") and "\n" not in message and len(message) < 400
    return message


# --------------------------------------------------------------------------- properties
@PROPERTY
@given(texts)
def test_names_are_accepted_exactly_by_the_rule(text):
    if rule_name(text):
        assert validate_name(text) == text
        assert parse_ref(text) == (text, None, None)
        # A valid name is one path component under the root, on POSIX and on Windows.
        for path in (posixpath, ntpath):
            root = path.join(path.sep, "reg")
            joined = path.normpath(path.join(root, text))
            assert path.dirname(joined) == root and path.basename(joined) == text
    else:
        assert repr(text)[:40] in _refused(validate_name, text)


@PROPERTY
@given(texts)
def test_aliases_are_accepted_exactly_by_the_rule(text):
    if rule_alias(text):
        assert validate_alias(text) == text
        assert parse_ref(f"m@{text}") == ("m", None, text)
    else:
        _refused(validate_alias, text)
        _refused(parse_ref, f"m@{text}")


@PROPERTY
@given(texts)
def test_versions_are_ascii_digits_only(text):
    if rule_version(text):
        assert parse_ref(f"m1/{text}") == ("m1", int(text), None)
    else:
        message = _refused(parse_ref, f"m1/{text}")
        if "@" not in text:  # "m1/x@y" is read as name "m1/x" with an alias
            assert "version" in message


@PROPERTY
@given(texts, st.sampled_from(["", "/", "@"]), texts)
def test_any_reference_parses_or_is_one_config_error(head, sep, tail):
    ref = head + sep + tail
    try:
        name, version, alias = parse_ref(ref)
    except ConfigError as exc:
        assert type(exc) is ConfigError and "\n" not in str(exc)
        return
    assert rule_name(name)
    if version is not None:
        assert parse_ref(f"{name}/{version}") == (name, version, None)
    elif alias is not None:
        assert rule_alias(alias) and ref == f"{name}@{alias}"
    else:
        assert ref == name


@pytest.mark.parametrize("value", [None, 3, b"bc", ["bc"], True])
def test_non_strings_are_refused(value):
    _refused(validate_name, value)
    _refused(validate_alias, value)
    _refused(parse_ref, value)


def test_the_probe_cases():
    assert "invalid model name 'evil\\n'" in _refused(validate_name, "evil\n")
    assert "invalid alias 'prod\\n'" in _refused(parse_ref, "m1@prod\n")
    assert "version '²'" in _refused(parse_ref, "m1/²")
    assert "version '١'" in _refused(parse_ref, "m1/١")  # no longer version 1
    assert "(5000 characters)" in _refused(validate_name, "m" * 5000)  # cut short
    assert parse_ref("m1/003") == ("m1", 3, None)


# --------------------------------------------------------------------------- a real registry
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from sklearn.linear_model import LogisticRegression

    from sparkml_aiaas.models import wrap_model

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, len(COLS)))
    path = str(tmp_path_factory.mktemp("saved") / "lr")
    wrap_model(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)),
               featuresCols=COLS).write().save(path)
    return path


@pytest.fixture(scope="module")
def registry(saved_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("names") / "reg"
    registry = ModelRegistry(str(root))
    for name in ("m1", "A-1.b_c", "9lives", "x" * 128):
        registry.register(saved_model, name)
    registry.set_alias("m1", "prod", 1)
    return registry


@pytest.mark.parametrize("ref,expected", [("m1", ("m1", 1)), ("m1/1", ("m1", 1)),
                                          ("m1@prod", ("m1", 1)), ("A-1.b_c", ("A-1.b_c", 1)),
                                          ("9lives/1", ("9lives", 1)), ("x" * 128, ("x" * 128, 1))])
def test_valid_names_register_and_resolve(registry, ref, expected):
    mv = registry.resolve(ref)
    assert (mv.name, mv.version) == expected


@pytest.mark.parametrize("name", ["evil\n", "m1\x00", "a/b", "a\\b", "..", "a..b", "x" * 129,
                                  "bc²", "m ", ""])
def test_bad_names_touch_nothing(registry, saved_model, name):
    before = sorted(os.listdir(registry.root))
    with pytest.raises(ConfigError):
        registry.register(saved_model, name)
    with pytest.raises(ConfigError):
        registry.set_alias("m1", name, 1)
    assert sorted(os.listdir(registry.root)) == before


@pytest.mark.parametrize("ref", ["m1/²", "m1/١", "m1/٣", "m1/0", "m1@prod\n", "m1@12",
                                 "m1/" + "9" * 5000])
def test_bad_refs_never_resolve(registry, ref):
    with pytest.raises(ConfigError):
        registry.resolve(ref)


def test_stray_entries_on_disk_are_ignored(registry):
    """What an older release (or a hand) may have left: a name with a newline, version and
    alias entries with non-ASCII digits.  Listing skips them instead of crashing or
    printing a broken table."""
    root = registry.root
    os.makedirs(os.path.join(root, "evil\n", "versions", "1"))
    os.makedirs(os.path.join(root, "m1", "versions", "²"))
    os.makedirs(os.path.join(root, "m1", "versions", "١"))
    open(os.path.join(root, "m1", "allocated", "²"), "w").close()
    open(os.path.join(root, "m1", "aliases", "prod\n"), "w").close()
    try:
        assert "evil\n" not in registry.names()
        assert registry.versions("m1") == [1]
        assert registry.aliases("m1") == {"prod": 1}
        status, out, err = _cli("models", "list", "--registry", root)
        assert status == 0, err
        assert [line.split()[0] for line in out.splitlines()[1:]] == sorted(
            ["m1", "A-1.b_c", "9lives", "x" * 128])
    finally:
        import shutil

        shutil.rmtree(os.path.join(root, "evil\n"))
        os.rmdir(os.path.join(root, "m1", "versions", "²"))
        os.rmdir(os.path.join(root, "m1", "versions", "١"))
        os.remove(os.path.join(root, "m1", "allocated", "²"))
        os.remove(os.path.join(root, "m1", "aliases", "prod\n"))


# --------------------------------------------------------------------------- the CLI
def _cli(*argv):
    from sparkml_aiaas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _one_line_error(status, err):
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,expected", [
    (["models", "describe", "m1/²"], "invalid model reference 'm1/²': version '²'"),
    (["models", "describe", "m1/١"], "invalid model reference 'm1/١': version '١'"),
    (["models", "describe", "evil\n"], "invalid model name 'evil\\n'"),
    (["models", "list", "evil\n"], "invalid model name 'evil\\n'"),
    (["models", "set-alias", "m1", "prod", "²"], "invalid version '²'"),
    (["models", "set-alias", "m1", "prod\n", "1"], "invalid alias 'prod\\n'"),
    (["models", "delete", "m1", "١"], "invalid version '١'"),
])
def test_models_cli_prints_one_line(registry, argv, expected):
    status, _, err = _cli(*argv, "--registry", registry.root)
    assert expected in _one_line_error(status, err)


@pytest.fixture
def restore_logging():
    """``serve`` configures logging for the process; put it back after the test."""
    import logging

    loggers = [logging.getLogger(n) for n in ("sparkml_aiaas", "uvicorn", "uvicorn.error",
                                              "uvicorn.access")]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_score_and_serve_cli_print_one_line(tmp_path, restore_logging):
    score_yaml = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "score.yaml")
    status, _, err = _cli("score", "--config", score_yaml, "--model", "m1/²",
                          "--registry", str(tmp_path))  # refused before Spark starts
    assert "invalid model reference 'm1/²'" in _one_line_error(status, err)

    from sparkml_aiaas.serving.tokens import create_token

    tokens = str(tmp_path / "tokens.json")
    create_token(tokens, "t", ["predict"])
    for ref, expected in [("m1/²", "invalid model reference 'm1/²'"),
                          ("evil\n", "invalid model name 'evil\\n'")]:
        status, _, err = _cli("serve", "--registry", str(tmp_path), "--model", ref,
                              "--tokens-file", tokens, "--quiet")
        assert expected in _one_line_error(status, err)
