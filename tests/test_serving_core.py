"""The protocol-neutral serving core: security.Gate, the limits, oip, models.get."""

import numpy as np
import pandas as pd
import pytest

from sparkml_aiaas.models.predictor import LinearPredictor
from sparkml_aiaas.serving import oip
from sparkml_aiaas.serving.limits import RateLimiter
from sparkml_aiaas.serving.models import ServedModel
from sparkml_aiaas.serving.security import AuthError, Gate
from sparkml_aiaas.serving.tokens import TokenStore, create_token

COLS = ["x0", "x1", "x2"]


# --------------------------------------------------------------------------- security
@pytest.fixture
def tokens(tmp_path):
    import datetime as dt

    path = str(tmp_path / "tokens.json")
    made = {"predict": create_token(path, "client", ["predict"]),
            "admin": create_token(path, "ops", ["predict", "admin"]),
            "old": create_token(path, "old", ["predict"], expires_in_days=1,
                                now=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))}
    return path, made


def _refused(gate, token, scope="predict", client="10.0.0.1"):
    with pytest.raises(AuthError) as raised:
        gate.authorize(token, scope, client)
    return raised.value


def test_gate_kinds_and_messages(tokens):
    path, made = tokens
    gate = Gate(TokenStore(path))
    assert gate.authorize(made["predict"], "predict", "h").name == "client"
    assert gate.authorize(f" {made['admin']} ", "admin", "h").name == "ops"
    for token in ("", "not-a-token"):
        error = _refused(gate, token)
        assert (error.kind, error.message) == ("unauthenticated", "missing or invalid bearer "
                                               "token")
    error = _refused(gate, made["old"])
    assert (error.kind, error.message) == ("unauthenticated",
                                           "token expired at 2020-01-02T00:00:00.000Z")
    error = _refused(gate, made["predict"], "admin")
    assert (error.kind, error.message) == ("permission_denied",
                                           "token 'client' lacks the 'admin' scope")


def test_gate_rate_limit_per_token(tokens):
    path, made = tokens
    now = [0.0]
    gate = Gate(TokenStore(path), rate_limit=2, clock=lambda: now[0])
    gate.authorize(made["predict"], "predict", "h")
    gate.authorize(made["predict"], "predict", "h")
    error = _refused(gate, made["predict"])
    assert (error.kind, error.retry_after) == ("rate_limited", 1)
    assert error.message == ("rate limit of 2 requests/s exceeded for token 'client'; "
                             "retry after 1 s")
    gate.authorize(made["admin"], "predict", "h")  # its own bucket
    now[0] += 0.5
    gate.authorize(made["predict"], "predict", "h")


def test_failed_auth_throttle_is_per_address_and_before_the_kdf(tokens, monkeypatch):
    from sparkml_aiaas.serving import tokens as tokens_module

    path, made = tokens
    now = [0.0]
    store = TokenStore(path)
    gate = Gate(store, clock=lambda: now[0], failed_auth_limit=1, failed_auth_burst=3)
    gate.authorize(made["predict"], "predict", "attacker")  # verified: cached from now on
    for i in range(3):
        assert _refused(gate, f"guess-{i}", client="attacker").kind == "unauthenticated"
    checks = []
    real = tokens_module._match
    monkeypatch.setattr(tokens_module, "_match", lambda *a: checks.append(1) or real(*a))
    error = _refused(gate, "guess-new", client="attacker")
    assert error.kind == "rate_limited" and error.retry_after == 1
    assert error.message == ("too many failed authentications from this address; retry "
                             "after 1 s")
    assert checks == []  # refused before any scrypt check
    # Known tokens cost no check: a repeated wrong one is still 401, a verified one passes.
    assert _refused(gate, "guess-0", client="attacker").kind == "unauthenticated"
    assert gate.authorize(made["predict"], "predict", "attacker").name == "client"
    # Another address is not throttled; the throttle refills at the limit.
    assert _refused(gate, "guess-new", client="10.9.9.9").kind == "unauthenticated"
    assert checks == [1]
    now[0] += 1.0
    assert _refused(gate, "guess-newer", client="attacker").kind == "unauthenticated"
    # Off when failed_auth_limit is None.
    open_gate = Gate(store, failed_auth_limit=None)
    for i in range(30):
        _refused(open_gate, f"other-{i}", client="x")


def test_rate_limiter_wait_takes_no_token_and_buckets_are_bounded(monkeypatch):
    from sparkml_aiaas.serving import limits

    now = [0.0]
    limiter = RateLimiter(1, burst=2, clock=lambda: now[0])
    assert limiter.wait("a") == 0.0 and limiter.wait("a") == 0.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.wait("a") == 1.0
    monkeypatch.setattr(limits, "_MAX_BUCKETS", 10)
    for i in range(100):
        limiter.acquire(f"k{i}")
        now[0] += 5  # every earlier bucket refills: forgotten
    assert len(limiter._buckets) <= 10


# --------------------------------------------------------------------------- oip
def _served(predictor, signature, name="m", version=3):
    return ServedModel(ref=f"{name}/{version}", name=name, alias=None, version=version,
                       predictor=predictor, signature=signature,
                       outputs=[{"name": n, "type": t} for n, t in predictor.output_columns])


@pytest.fixture
def binary():
    predictor = LinearPredictor("binary_logistic", np.array([1.0, -2.0, 0.5]), 0.25,
                                feature_cols=COLS, metadata={"predictor": {"family": "linear"}})
    return _served(predictor, [{"name": c, "type": "double"} for c in COLS])


@pytest.fixture
def multinomial():
    predictor = LinearPredictor("multinomial_logistic", np.arange(12.0).reshape(4, 3) / 7,
                                [0.1, 0.2, 0.3], vector_col="features")
    return _served(predictor, [{"name": "features", "type": "vector"}])


def _tensors(frame, datatype="FP64"):
    return [oip.Tensor(c, datatype, [len(frame)], frame[c].to_numpy()) for c in frame.columns]


def test_metadata(binary, multinomial):
    assert oip.server_metadata()["name"] == "sparkml_aiaas"
    assert oip.model_metadata(binary) == {
        "name": "m", "versions": ["3"], "platform": "sparkml_aiaas_linear",
        "inputs": [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLS],
        "outputs": [{"name": "rawPrediction", "datatype": "FP64", "shape": [-1]},
                    {"name": "probability", "datatype": "FP64", "shape": [-1, 2]},
                    {"name": "prediction", "datatype": "FP64", "shape": [-1]}]}
    meta = oip.model_metadata(multinomial)
    assert meta["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"][0] == {"name": "rawPrediction", "datatype": "FP64", "shape": [-1, 3]}
    assert [oip.column_datatype(t) for t in ("double", "decimal(10,2)", "float", "int",
                                             "bigint", "boolean", "string", "array<double>")] \
        == ["FP64", "FP64", "FP32", "INT64", "INT64", "BOOL", "BYTES", "FP64"]


def test_check_version(binary):
    for version in (None, "", "3"):
        oip.check_version(binary, version)
    with pytest.raises(oip.ModelUnavailable) as raised:
        oip.check_version(binary, "2")
    assert raised.value.status == 404
    assert str(raised.value) == "model 'm' version '2' is not served here (serving version 3)"


def test_infer_equals_predict_bit_for_bit(binary, multinomial):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(7, 3)), columns=COLS)
    frame.iloc[2, 1] = np.nan  # a null feature gives NaN outputs
    outputs = oip.infer(binary, oip.decode_inputs(binary, _tensors(frame)))
    expected = binary.predictor.predict(frame)
    assert [t.name for t in outputs] == ["rawPrediction", "probability", "prediction"]
    for tensor in outputs:
        want = np.stack(expected[tensor.name]) if tensor.name == "probability" else \
            expected[tensor.name].to_numpy()
        assert tensor.shape == list(want.shape) and tensor.datatype == "FP64"
        np.testing.assert_array_equal(tensor.data, want)  # NaN in the same places
    (only,) = oip.infer(binary, oip.decode_inputs(binary, _tensors(frame)), ["probability"])
    assert only.name == "probability" and only.shape == [7, 2]
    X = rng.normal(size=(5, 4))
    tensor = oip.Tensor("features", "FP64", [5, 4], X.ravel())
    outputs = oip.infer(multinomial, oip.decode_inputs(multinomial, [tensor]))
    np.testing.assert_array_equal(outputs[1].data, multinomial.predictor.predict_arrays(X)[
        "probability"])


def test_predict_columns_fallback_and_fast_path(binary):
    columns = {c: np.array([0.5, -1.0]) for c in COLS}
    out = oip.predict_columns(binary.predictor, columns)
    assert out["probability"].shape == (2, 2)

    class Fast:
        def predict_columns(self, columns):
            return {"prediction": columns["x0"] * 2}

    assert oip.predict_columns(Fast(), {"x0": np.array([1.0])})["prediction"][0] == 2.0


@pytest.mark.parametrize("change, message", [
    (lambda t: t[:2], "missing input(s) ['x2']"),
    (lambda t: t + [oip.Tensor("x9", "FP64", [2], np.zeros(2))], "unknown input 'x9'"),
    (lambda t: t + [t[0]], "input 'x0' is given twice"),
    (lambda t: [oip.Tensor("x0", "BYTES", [2], np.array(["a", "b"], object))] + t[1:],
     "input 'x0': datatype BYTES does not fit column 'x0' (double); send FP64"),
    (lambda t: [oip.Tensor("x0", "FP16", [2], np.zeros(2))] + t[1:],
     "input 'x0': unsupported datatype 'FP16'"),
    (lambda t: [oip.Tensor("x0", "FP64", [2, 1], np.zeros(2))] + t[1:],
     "input 'x0': shape [2, 1] does not fit column 'x0' (double); send [N]"),
    (lambda t: [oip.Tensor("x0", "FP64", [3], np.zeros(2))] + t[1:],
     "input 'x0': 2 value(s) for shape [3] (3 expected)"),
    (lambda t: [oip.Tensor("x0", "FP64", [3], np.zeros(3))] + t[1:],
     "input 'x1' has 2 rows but input 'x0' has 3; every input needs the same N"),
    (lambda t: [oip.Tensor("x0", "FP64", [2], np.array([1.0, np.inf]))] + t[1:],
     "input 'x0': a value is not a finite number"),
    (lambda t: [oip.Tensor("x0", "INT64", [2], np.array([2 ** 60, 1]))] + t[1:],
     "input 'x0': an integer beyond ±9007199254740992 does not fit FP64 exactly; send FP64"),
])
def test_decode_errors_name_the_tensor(binary, change, message):
    tensors = change([oip.Tensor(c, "FP64", [2], np.zeros(2)) for c in COLS])
    with pytest.raises(oip.InferenceError) as raised:
        oip.decode_inputs(binary, tensors)
    assert str(raised.value).split("; the model's")[0] == message


def test_decode_casts_and_vectors(binary, multinomial):
    tensors = [oip.Tensor("x0", "INT32", [2], np.array([1, 2], np.int32)),
               oip.Tensor("x1", "FP32", [2], np.array([0.5, 1.5], np.float32)),
               oip.Tensor("x2", "FP64", [2], np.array([1.0, 2.0]))]
    columns = oip.decode_inputs(binary, tensors)
    assert all(v.dtype == np.float64 for v in columns.values())
    with pytest.raises(oip.InferenceError, match=r"send \[N, 4\]"):
        oip.decode_inputs(multinomial, [oip.Tensor("features", "FP64", [2, 3], np.zeros(6))])
    with pytest.raises(oip.InferenceError, match="vectors must be complete"):
        oip.decode_inputs(multinomial, [oip.Tensor("features", "FP64", [1, 4],
                                                   np.array([1.0, np.nan, 0, 0]))])
    integer = _served(binary.predictor, [{"name": c, "type": "bigint"} for c in COLS])
    with pytest.raises(oip.InferenceError, match="takes whole numbers"):
        oip.decode_inputs(integer, [oip.Tensor(c, "FP64", [1], np.array([0.5])) for c in COLS])
    decoded = oip.decode_inputs(integer, [oip.Tensor(c, "FP64", [1], np.array([2.0]))
                                          for c in COLS])
    assert decoded["x0"].dtype == np.int64
    with pytest.raises(oip.InferenceError, match="unknown output"):
        oip.infer(binary, oip.decode_inputs(binary, tensors), ["nope"])


def test_check_rows():
    oip.check_rows([oip.Tensor("a", "FP64", [5], np.zeros(5))], 5)
    with pytest.raises(oip.RequestTooLarge, match="input 'a' has 6 rows; the limit is 5"):
        oip.check_rows([oip.Tensor("a", "FP64", [6], np.zeros(6))], 5)


def test_manager_get_raises_model_unavailable(tmp_path):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.serving.models import ModelManager

    manager = ModelManager(ModelRegistry(str(tmp_path / "r")), ["ghost@production"])
    manager.load_all()
    with pytest.raises(oip.ModelUnavailable) as raised:
        manager.get("nope")
    assert (raised.value.status, raised.value.message) == (404, "model 'nope' is not served here")
    with pytest.raises(oip.ModelUnavailable) as raised:
        manager.get("ghost")
    assert raised.value.status == 503
    assert raised.value.message == ("model 'ghost' is not available: its version or alias is "
                                    "not in the registry")


def test_probe_retries_a_failed_model_at_most_every_check_interval(tmp_path, monkeypatch):
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.serving.models import ModelManager

    manager = ModelManager(ModelRegistry(str(tmp_path / "r")), ["ghost@production"],
                           check_seconds=3600)
    manager.load_all()
    attempts = []
    monkeypatch.setattr(manager, "_target", lambda served: attempts.append(1) or 1 / 0)
    assert [manager.probe() for _ in range(5)] == [False] * 5
    assert attempts == []  # checked at load_all, less than check_seconds ago
    manager.check_seconds = 0.0
    assert manager.probe() is False and attempts == [1]


def test_a_model_that_keeps_failing_is_logged_once_per_new_error(tmp_path, caplog):
    """The gRPC health watch and probes retry a failed model every few seconds: the log
    says why once (and again only when the reason changes), not at every retry."""
    import logging

    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.serving.models import ModelManager

    manager = ModelManager(ModelRegistry(str(tmp_path / "r")), ["ghost@production"],
                           check_seconds=0.0)
    with caplog.at_level(logging.DEBUG, logger="sparkml_aiaas.serving"):
        for _ in range(4):
            manager.load_all()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot load ghost@production" in errors[0].getMessage()
    assert sum("still cannot load" in r.getMessage() for r in caplog.records) == 3
    manager.models["ghost"].ref = "ghost/1"  # another reason to fail
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="sparkml_aiaas.serving"):
        manager.load_all()
    assert len(caplog.records) == 1  # another reason: said again
