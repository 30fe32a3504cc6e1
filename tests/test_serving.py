"""Online serving: tokens, auth and scopes, predictions equal batch scoring, limits, reload."""

import contextlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient  # noqa: E402

from sparkml_aiaas.errors import ConfigError  # noqa: E402
from sparkml_aiaas.registry import DEFAULT_KEY_ENV, ModelRegistry  # noqa: E402
from sparkml_aiaas.serving import create_app  # noqa: E402
from sparkml_aiaas.serving.tokens import (  # noqa: E402
    TokenStore,
    create_token,
    load_tokens,
    revoke_token,
    verify,
)

COLS = ["x0", "x1", "x2"]
OUTPUTS = ["rawPrediction", "probability", "prediction"]


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(120, 3))
    frame = pd.DataFrame(X, columns=COLS)
    frame["color"] = np.where(X[:, 0] > 0, "red", "blue")
    frame["label"] = (X @ [1.0, -2.0, 0.5] + rng.normal(size=120) > 0).astype(float)
    frame["id"] = np.arange(120)
    return frame


@pytest.fixture(scope="module")
def registry_root(df, tmp_path_factory):
    """bc/1 and bc/2 (two fits), bc@production -> 1; pre/1 registered with a preprocessor."""
    from sparkml_aiaas.models import LogisticRegression
    from sparkml_aiaas.preprocessing import Preprocessor

    root = str(tmp_path_factory.mktemp("serving") / "registry")
    registry = ModelRegistry(root)
    registry.register(LogisticRegression(featuresCols=COLS, maxIter=10, regParam=0.01).fit(df),
                      "bc")
    registry.register(LogisticRegression(featuresCols=COLS, maxIter=3, regParam=1.0).fit(df),
                      "bc")
    registry.set_alias("bc", "production", 1)
    pre = Preprocessor(numericCols=COLS, categoricalCols=["color"]).fit(df)
    fitted = LogisticRegression(featuresCol="features", maxIter=10, regParam=0.01).fit(
        pre.transform(df))
    registry.register(fitted, "pre", preprocessor=pre)
    return root


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tokens") / "tokens.json")
    tokens = {"predict": create_token(path, "client", ["predict"]),
              "admin": create_token(path, "ops", ["predict", "admin"])}
    return path, tokens


@pytest.fixture(scope="module")
def app_client(registry_root, tokens_file):
    path, tokens = tokens_file
    app = create_app(registry_root, ["bc@production", "pre/1"], path, max_body_bytes=20_000,
                     max_records=50, alias_check_seconds=0.0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _records(frame, cols=COLS):
    return [{c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in cols}
            for _, row in frame.iterrows()]


def _assert_rows_equal(rows, frame):
    assert len(rows) == len(frame)
    for i, row in enumerate(rows):
        for name in OUTPUTS:
            expected = frame[name].iloc[i]
            expected = [float(v) for v in expected] if np.ndim(expected) else float(expected)
            assert row[name] == expected, (i, name)  # bit for bit: JSON floats round-trip


# --------------------------------------------------------------------------- tokens
def test_tokens_file_stores_no_plaintext(tmp_path):
    path = str(tmp_path / "t.json")
    token = create_token(path, "a", ["predict"])
    raw = open(path).read()
    assert token not in raw and token[:16] not in raw
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    (record,) = json.loads(raw)
    assert set(record) == {"name", "salt", "hash", "scopes", "created"}
    assert verify(path, token).name == "a"
    assert verify(path, token + "x") is None and verify(path, "") is None
    with pytest.raises(ConfigError, match="already exists"):
        create_token(path, "a", ["predict"])
    with pytest.raises(ConfigError, match="unknown token scope"):
        create_token(path, "b", ["root"])
    store = TokenStore(path)
    assert store.verify(token).scopes == ("predict",)
    revoke_token(path, "a")
    assert store.verify(token) is None  # re-read on change: cached success is dropped
    assert load_tokens(path) == []
    with pytest.raises(ConfigError, match="no token named"):
        revoke_token(path, "a")


def test_cli_tokens_create_prints_token_last(tmp_path):
    from sparkml_aiaas.cli import main

    path = str(tmp_path / "t.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tokens", "create", "--name", "ci", "--scope", "predict", "--scope",
                     "admin", "--tokens-file", path]) == 0
    token = out.getvalue().split()[-1]
    assert verify(path, token).scopes == ("admin", "predict")
    assert token not in open(path).read()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["tokens", "revoke", "--name", "ci", "--tokens-file", path]) == 0
    assert verify(path, token) is None
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["tokens", "revoke", "--name", "ci", "--tokens-file", path]) == 2


# --------------------------------------------------------------------------- auth
def test_health_needs_no_auth_and_401_403(app_client):
    client, tokens = app_client
    assert client.get("/health").json() == {"status": "ok"}
    for headers in ({}, _auth("not-a-token"), {"Authorization": f"Basic {tokens['predict']}"}):
        response = client.get("/v1/models/bc", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "request_id" in response.json()
    assert client.get("/ready", headers=_auth(tokens["predict"])).status_code == 200
    assert client.get("/metrics", headers=_auth(tokens["predict"])).status_code == 403
    assert client.post("/v1/admin/reload", headers=_auth(tokens["predict"])).status_code == 403
    response = client.post("/v1/admin/reload", headers=_auth(tokens["admin"]))
    assert response.status_code == 200
    assert response.json()["models"] == {"bc": 1, "pre": 1}


def test_model_info_and_openapi(app_client):
    client, tokens = app_client
    info = client.get("/v1/models/bc", headers=_auth(tokens["predict"])).json()
    assert info["name"] == "bc" and info["version"] == 1 and info["ref"] == "bc@production"
    assert [c["name"] for c in info["signature"]] == COLS
    assert [c["name"] for c in info["outputs"]] == OUTPUTS
    assert info["aliases"] == ["production"] and len(info["digest"]) == 64
    assert client.get("/v1/models/nope", headers=_auth(tokens["predict"])).status_code == 404
    response = client.post("/v1/models/nope/predict", headers=_auth(tokens["predict"]),
                           json={"records": []})
    assert response.status_code == 404
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    assert "records" in json.dumps(predict["requestBody"])
    assert "PredictResponse" in json.dumps(predict["responses"]["200"])


# --------------------------------------------------------------------------- predictions
def test_predict_equals_predictor_and_batch_scoring(app_client, registry_root, pdf, spark,
                                                    tmp_path):
    from sparkml_aiaas.scoring import read_scores, score

    client, tokens = app_client
    rows = pdf.head(20)
    response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                           json={"records": _records(rows)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "bc" and body["version"] == 1
    expected = ModelRegistry(registry_root).load_predictor("bc/1").predict(rows[COLS])
    _assert_rows_equal(body["predictions"], expected)

    # The batch scoring job writes the same numbers for the same rows.
    out = str(tmp_path / "scores")
    score(spark, "bc@production", spark.createDataFrame(rows[COLS + ["id"]]), out,
          registry=registry_root)
    scored = read_scores(spark, out).orderBy("id").toPandas()
    _assert_rows_equal(body["predictions"], scored)


def test_predict_with_preprocessor_takes_raw_columns(app_client, registry_root, pdf):
    client, tokens = app_client
    rows = pdf.head(10)
    info = client.get("/v1/models/pre", headers=_auth(tokens["predict"])).json()
    assert {"name": "color", "type": "string"} in info["signature"]
    response = client.post("/v1/models/pre/predict", headers=_auth(tokens["predict"]),
                           json={"records": _records(rows, COLS + ["color"])})
    assert response.status_code == 200, response.text
    expected = ModelRegistry(registry_root).load_predictor("pre/1").predict(
        rows[COLS + ["color"]])
    _assert_rows_equal(response.json()["predictions"], expected)
    bad = _records(rows.head(1), COLS + ["color"])
    bad[0]["color"] = 3
    response = client.post("/v1/models/pre/predict", headers=_auth(tokens["predict"]),
                           json={"records": bad})
    assert response.status_code == 422 and "'color'" in response.json()["error"]


def test_validation_and_limits(app_client):
    client, tokens = app_client
    headers = _auth(tokens["predict"])
    url = "/v1/models/bc/predict"
    response = client.post(url, headers=headers, json={"records": [{"x0": 1.0, "x1": 2.0}]})
    assert response.status_code == 422
    assert "missing field 'x2'" in response.json()["error"]
    response = client.post(url, headers=headers,
                           json={"records": [{"x0": 1.0, "x1": "two", "x2": 3}]})
    assert response.status_code == 422 and "'x1' must be double" in response.json()["error"]
    response = client.post(url, headers=headers, json={"rows": []})
    assert response.status_code == 422 and "records" in response.json()["error"]
    response = client.post(url, headers=headers, content=b"{not json")
    assert response.status_code == 422
    # Too many records (limit 50) and too large a body (limit 20 000 bytes).
    many = [{"x0": 0.0, "x1": 0.0, "x2": 0.0}] * 51
    response = client.post(url, headers=headers, json={"records": many})
    assert response.status_code == 413 and "limit is 50" in response.json()["error"]
    big = json.dumps({"records": [{"x0": 0.0, "x1": 0.0, "x2": 0.0, "pad": "p" * 30_000}]})
    response = client.post(url, headers=headers, content=big)
    assert response.status_code == 413

    def chunks():  # no Content-Length: the body itself is counted
        for _ in range(30):
            yield b" " * 1000

    response = client.post(url, headers=headers, content=chunks())
    assert response.status_code == 413


def test_alias_move_is_served_without_restart(registry_root, tokens_file, pdf):
    path, tokens = tokens_file
    registry = ModelRegistry(registry_root)
    app = create_app(registry_root, ["bc@production"], path,
                     alias_check_seconds=0.0)
    rows = pdf.head(5)
    with TestClient(app) as client:
        try:
            registry.set_alias("bc", "production", 2)
            response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                                   json={"records": _records(rows)})
            assert response.json()["version"] == 2
            expected = registry.load_predictor("bc/2").predict(rows[COLS])
            _assert_rows_equal(response.json()["predictions"], expected)
        finally:
            registry.set_alias("bc", "production", 1)
        info = client.get("/v1/models/bc", headers=_auth(tokens["predict"])).json()
        assert info["version"] == 1


def test_revoked_token_is_refused_without_restart(registry_root, tmp_path):
    path = str(tmp_path / "tokens.json")
    token = create_token(path, "temp", ["predict"])
    app = create_app(registry_root, ["bc/1"], path)
    with TestClient(app) as client:
        assert client.get("/v1/models/bc", headers=_auth(token)).status_code == 200
        revoke_token(path, "temp")
        assert client.get("/v1/models/bc", headers=_auth(token)).status_code == 401


def test_internal_error_is_500_without_traceback(registry_root, tokens_file, caplog):
    path, tokens = tokens_file
    app = create_app(registry_root, ["bc/1"], path)

    class Boom:
        input_columns = COLS
        output_columns = [("prediction", "double")]

        def predict(self, frame):
            raise RuntimeError("secret internals /etc/passwd")

    app.state.manager.models["bc"].predictor = Boom()
    app.state.manager.check_seconds = 3600.0
    app.state.manager.models["bc"].checked_at = float("inf")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                               json={"records": [{"x0": 1.0, "x1": 2.0, "x2": 3.0}]})
        assert response.status_code == 500
        body = response.json()
        assert body["error"] == "internal error" and body["request_id"]
        assert "Traceback" not in response.text and "secret" not in response.text
        assert "RuntimeError" in caplog.text  # the traceback is logged, server side
        metrics = client.get("/metrics", headers=_auth(tokens["admin"])).text
        assert 'sparkml_serving_errors_total{endpoint="/v1/models/{name}/predict"} 1.0' in metrics


def test_metrics_count_requests(app_client):
    client, tokens = app_client
    client.get("/health")
    text = client.get("/metrics", headers=_auth(tokens["admin"])).text
    assert 'sparkml_serving_requests_total{endpoint="/health",method="GET",status="200"}' in text
    assert 'status="401"' in text
    assert "sparkml_serving_request_seconds_bucket" in text


def test_ready_is_503_when_a_model_is_missing(registry_root, tokens_file):
    path, tokens = tokens_file
    app = create_app(registry_root, ["bc/1", "ghost@production"], path)
    with TestClient(app) as client:
        response = client.get("/ready", headers=_auth(tokens["predict"]))
        assert response.status_code == 503
        assert response.json()["models"] == {"bc": 1, "ghost": None}
        response = client.get("/v1/models/ghost", headers=_auth(tokens["predict"]))
        assert response.status_code == 503
        # The reason a client sees names the model, never the server's paths.
        assert response.json()["error"] == ("model 'ghost' is not available: its version or "
                                             "alias is not in the registry")
        assert registry_root not in response.text


def test_package_and_cli_import_without_fastapi():
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client'):\n"
            "    sys.modules[m] = None\n"
            "import sparkml_aiaas.cli, sparkml_aiaas.serving\n"
            "from sparkml_aiaas.serving.tokens import create_token\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_serve_runs_uvicorn_with_the_app(registry_root, tokens_file, monkeypatch):
    import uvicorn

    from sparkml_aiaas.cli import main

    path, tokens = tokens_file
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--registry", registry_root, "--model", "bc@production",
                 "--model", "pre/1", "--tokens-file", path, "--port", "9099", "--quiet"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 9099
    with TestClient(seen["app"]) as client:
        response = client.get("/ready", headers=_auth(tokens["predict"]))
        assert response.json() == {"status": "ready", "models": {"bc": 1, "pre": 1}}


# --------------------------------------------------------------------------- token expiry
def test_token_expiry_is_recorded_and_enforced(tmp_path):
    import datetime as dt

    path = str(tmp_path / "t.json")
    past = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    old = create_token(path, "old", ["predict"], expires_in_days=1, now=past)
    fresh = create_token(path, "fresh", ["predict"], expires_in_days=30)
    forever = create_token(path, "forever", ["predict"])
    raw = {r["name"]: r for r in json.load(open(path))}
    assert raw["old"]["expires"] == "2020-01-02T00:00:00.000Z"
    assert raw["old"]["created"] == "2020-01-01T00:00:00.000Z"
    assert "expires" not in raw["forever"]  # files without the field keep their meaning
    expires = dt.datetime.fromisoformat(raw["fresh"]["expires"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=29) < expires - now <= dt.timedelta(days=30)

    assert verify(path, old) is None  # expired: no longer verifies
    assert verify(path, fresh).name == "fresh" and verify(path, forever).name == "forever"
    store = TokenStore(path)
    assert store.verify(old) is None
    record = store.lookup(old)  # still found, so the server can say why it is refused
    assert record.name == "old" and record.is_expired()
    assert not record.is_expired(now=past)
    assert not store.lookup(forever).is_expired()
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(ConfigError, match="expires_in_days"):
            create_token(path, f"bad{bad}", ["predict"], expires_in_days=bad)

    raw["forever"]["expires"] = "next tuesday"
    with open(path, "w") as fh:
        json.dump(list(raw.values()), fh)
    with pytest.raises(ConfigError, match="'forever' has an invalid expires timestamp"):
        load_tokens(path)


def test_expired_token_is_401_token_expired(registry_root, tmp_path):
    import datetime as dt

    path = str(tmp_path / "tokens.json")
    expired = create_token(path, "old", ["predict"], expires_in_days=1,
                           now=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    valid = create_token(path, "new", ["predict"], expires_in_days=1)
    app = create_app(registry_root, ["bc/1"], path)
    with TestClient(app) as client:
        response = client.get("/v1/models/bc", headers=_auth(expired))
        assert response.status_code == 401
        assert response.json()["error"] == "token expired at 2020-01-02T00:00:00.000Z"
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/models/bc", headers=_auth(valid)).status_code == 200


def test_cli_tokens_create_expires_in_days(tmp_path):
    import datetime as dt

    from sparkml_aiaas.cli import main

    path = str(tmp_path / "t.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tokens", "create", "--name", "ci", "--scope", "predict",
                     "--expires-in-days", "7", "--tokens-file", path]) == 0
    (record,) = load_tokens(path)
    assert f", expires {record.expires};" in out.getvalue()
    left = record.expires_at - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=6) < left <= dt.timedelta(days=7)
    assert verify(path, out.getvalue().split()[-1]).name == "ci"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["tokens", "create", "--name", "x", "--scope", "predict",
                     "--expires-in-days", "0", "--tokens-file", path]) == 2
    assert "expires_in_days must be a number of days in (0, 36500], got 0.0" in err.getvalue()


# --------------------------------------------------------------------------- rate limiting
def test_rate_limiter_token_bucket():
    from sparkml_aiaas.serving.app import RateLimiter

    now = [100.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.5]  # burst 2, then wait
    assert limiter.acquire("b") == 0.0  # one bucket per key
    now[0] += 0.25  # half a token back: still 0.25 s to wait
    assert limiter.acquire("a") == 0.25
    now[0] += 0.25
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.5
    now[0] += 3600  # refills up to the burst, not beyond
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    slow = RateLimiter(0.5, clock=lambda: now[0])  # below 1/s: bursts of one
    assert slow.acquire("a") == 0.0 and slow.acquire("a") == 2.0
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="rate limit must be a positive number"):
            RateLimiter(bad)


def test_rate_limit_gives_429_with_retry_after_and_metrics(registry_root, tokens_file):
    path, tokens = tokens_file
    now = [0.0]
    app = create_app(registry_root, ["bc/1"], path, rate_limit=2, clock=lambda: now[0])
    with TestClient(app) as client:
        statuses = [client.get("/v1/models/bc", headers=_auth(tokens["predict"])).status_code
                    for _ in range(2)]
        assert statuses == [200, 200]
        response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                               json={"records": [{"x0": 1.0, "x1": 2.0, "x2": 3.0}]})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["error"] == ("rate limit of 2 requests/s exceeded for token 'client'; "
                                 "retry after 1 s")
        assert body["request_id"] == response.headers["x-request-id"]
        # Another token has its own bucket; unauthenticated requests are 401, not counted.
        assert client.get("/v1/models/bc", headers=_auth(tokens["admin"])).status_code == 200
        assert client.get("/v1/models/bc").status_code == 401
        now[0] += 0.5  # one request's worth of refill
        assert client.get("/v1/models/bc", headers=_auth(tokens["predict"])).status_code == 200
        assert client.get("/v1/models/bc", headers=_auth(tokens["predict"])).status_code == 429
        now[0] += 10
        metrics = client.get("/metrics", headers=_auth(tokens["admin"])).text
    assert 'sparkml_serving_rate_limited_total{token="client"} 2.0' in metrics
    assert ('sparkml_serving_requests_total{endpoint="/v1/models/{name}/predict",'
            'method="POST",status="429"} 1.0') in metrics
    assert ('sparkml_serving_requests_total{endpoint="/v1/models/{name}",method="GET",'
            'status="429"} 1.0') in metrics


def test_cli_serve_rate_limit(registry_root, tokens_file, monkeypatch):
    import uvicorn

    from sparkml_aiaas.cli import main

    path, tokens = tokens_file
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    # 0.001 requests/s: a burst of one, then ~1000 s until the next request is allowed.
    assert main(["serve", "--registry", registry_root, "--model", "bc/1", "--tokens-file", path,
                 "--rate-limit", "0.001", "--quiet"]) == 0
    with TestClient(seen["app"]) as client:
        assert client.get("/ready", headers=_auth(tokens["predict"])).status_code == 200
        response = client.get("/ready", headers=_auth(tokens["predict"]))
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["serve", "--registry", registry_root, "--model", "bc/1",
                     "--tokens-file", path, "--rate-limit", "0", "--quiet"]) == 2
    assert "rate limit must be a positive number" in err.getvalue()


def test_large_requests_are_checked_by_dtype_with_the_same_errors():
    """Past a few hundred values records_frame proves numeric columns by their dtype; the
    accepted frame and every error message are those of the value-by-value check."""
    from starlette.exceptions import HTTPException

    from sparkml_aiaas.serving.validation import (
        _VALUE_BY_VALUE_CELLS,
        records_frame,
        validate_records,
    )

    signature = [{"name": "x0", "type": "double"}, {"name": "n", "type": "bigint"},
                 {"name": "flag", "type": "boolean"}, {"name": "city", "type": "string"}]
    rng = np.random.default_rng(5)
    good = [{"x0": float(v), "n": int(i), "flag": bool(i % 2), "city": "lyon", "extra": 1}
            for i, v in enumerate(rng.normal(size=200))]
    good[7]["x0"] = None  # a null feature is allowed (NaN outputs)
    assert len(good) * len(signature) > _VALUE_BY_VALUE_CELLS
    frame = records_frame(good, signature)
    pd.testing.assert_frame_equal(frame, pd.DataFrame.from_records(good))

    def message(records):
        with pytest.raises(HTTPException) as raised:
            records_frame(records, signature)
        assert raised.value.status_code == 422
        with pytest.raises(HTTPException) as reference:
            validate_records(records, signature)
        assert raised.value.detail == reference.value.detail
        return raised.value.detail

    def broken(index, field, value):
        records = [dict(r) for r in good]
        if value is KeyError:
            del records[index][field]
        else:
            records[index][field] = value
        return records

    assert message(broken(150, "x0", True)) == \
        "records[150]: field 'x0' must be double, got bool true"
    assert message(broken(150, "x0", 1e400)).endswith("not a finite number")
    assert message(broken(150, "n", 10 ** 400)).endswith("out of the range of a double")
    assert message(broken(150, "x0", "1.5")) == \
        "records[150]: field 'x0' must be double, got str '1.5'"
    assert message(broken(199, "city", KeyError)) == "records[199]: missing field 'city' (string)"
    assert message(broken(3, "flag", "yes")) == \
        "records[3]: field 'flag' must be boolean, got str 'yes'"


# --------------------------------------------------------------------------- hygiene: logs,
# tokens files, error bodies
_LOGGERS = ("sparkml_aiaas", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@pytest.fixture
def restore_logging():
    """``serve`` configures logging for the process; put it back after the test."""
    import logging

    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


class _Records:
    """Collects the formatted records of one logger (independent of caplog and propagation)."""

    def __init__(self, name):
        import logging

        self.lines = []
        self.logger = logging.getLogger(name)
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger.addHandler(self.handler)

    def close(self):
        self.logger.removeHandler(self.handler)


def test_serve_logs_no_token_query_or_authorization(registry_root, tokens_file, monkeypatch,
                                                    capsys, restore_logging):
    """The logging `serve` really sets up (applied by uvicorn.Config from the very kwargs
    `serve` passes to uvicorn.run): uvicorn writes no access line, ours drops the query
    string, and tokens in any message (a traceback too) are blanked."""
    import logging

    import uvicorn

    from sparkml_aiaas.cli import main

    path, tokens = tokens_file
    seen = {}

    def run(app, **kwargs):
        seen.update(app=app, **kwargs)
        uvicorn.Config(app, **kwargs)  # configures logging exactly as uvicorn.run does

    monkeypatch.setattr(uvicorn, "run", run)
    assert main(["serve", "--registry", registry_root, "--model", "bc/1",
                 "--tokens-file", path]) == 0
    assert seen["access_log"] is False
    assert not logging.getLogger("uvicorn.access").hasHandlers()  # uvicorn logs no access line

    app = seen["app"]

    class Leaky:  # an internal error whose message carries a credential
        input_columns = COLS
        output_columns = [("prediction", "double")]

        def predict(self, frame):
            raise RuntimeError(f"Authorization: Bearer {tokens['admin']} token=ERRSECRET")

    with TestClient(app, raise_server_exceptions=False) as client:
        ok = client.get("/v1/models/bc?token=QUERYSECRET&x=1", headers=_auth(tokens["predict"]))
        assert ok.status_code == 200
        assert client.get("/v1/models/bc?token=QUERYSECRET2",
                          headers=_auth("HEADERSECRET")).status_code == 401
        served = app.state.manager.models["bc"]
        served.predictor, served.checked_at = Leaky(), float("inf")
        app.state.manager.check_seconds = 3600.0
        assert client.post("/v1/models/bc/predict%0Afake", headers=_auth(tokens["predict"]),
                           json={"records": []}).status_code == 404
        assert client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                           json={"records": [{"x0": 1.0, "x1": 2.0, "x2": 3.0}]}
                           ).status_code == 500
    logging.getLogger("uvicorn.error").warning("library says token=LIBSECRET")
    out, err = capsys.readouterr()
    assert '"GET /v1/models/bc?<redacted> HTTP/1.1" 200' in out
    assert '"GET /v1/models/bc?<redacted> HTTP/1.1" 401' in out
    assert "/v1/models/bc/predict%0Afake" in out  # percent-encoded: one line per request
    assert "RuntimeError: Authorization: Bearer <redacted> token=<redacted>" in out
    assert "token=<redacted>" in err
    for secret in ("QUERYSECRET", "HEADERSECRET", "ERRSECRET", "LIBSECRET", tokens["predict"],
                   tokens["admin"]):
        assert secret not in out and secret not in err


def test_served_process_logs_no_token(registry_root, tokens_file, tmp_path):
    """End to end: `sparkml-aiaas serve` under uvicorn, a real socket; the process's whole
    output holds no token, whether sent as ?token= or in a (wrong) Authorization header."""
    import subprocess
    import sys
    import time

    import httpx

    from sparkml_aiaas.cluster import free_port

    path, tokens = tokens_file
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sparkml_aiaas", "serve", "--registry", registry_root,
             "--model", "bc/1", "--tokens-file", path, "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert httpx.get(f"{base}/v1/models/bc?token=QUERYSECRET",
                         headers=_auth(tokens["predict"])).status_code == 200
        assert httpx.get(f"{base}/v1/models/bc?token={tokens['admin']}").status_code == 401
        assert httpx.get(f"{base}/v1/models/bc",
                         headers=_auth("HEADERSECRET")).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log_path.read_text()
    assert '"GET /v1/models/bc?<redacted> HTTP/1.1" 200' in text, text
    assert '"GET /v1/models/bc?<redacted> HTTP/1.1" 401' in text, text
    for secret in ("QUERYSECRET", "HEADERSECRET", tokens["predict"], tokens["admin"]):
        assert secret not in text, text


def _good_record(name="a"):
    return {"name": name, "salt": "ab" * 16, "hash": "cd" * 32, "scopes": ["predict"],
            "created": "2026-01-01T00:00:00.000Z"}


def _bad_tokens_file(kind, path):
    """Write the tokens file ``kind`` describes at ``path``; returns the expected message."""
    def write(value):
        with open(path, "w") as fh:
            fh.write(value if isinstance(value, str) else json.dumps(value))

    def record(**changes):
        return [dict(_good_record(), **changes)]

    cases = {
        "not JSON": ("{not json", "is not valid JSON"),
        "not a list": ({"name": "a"}, "must hold a JSON list"),
        "not an object": (["a"], "record 0 is not a JSON object"),
        "no name": (record(name=""), "record 0 has no name"),
        "no hash": ([{k: v for k, v in _good_record().items() if k != "hash"}],
                    "token 'a': hash must be 64 hex digits"),
        "bad hash": (record(hash="zz" * 32), "token 'a': hash must be 64 hex digits"),
        "short hash": (record(hash="ab" * 8), "token 'a': hash must be 64 hex digits"),
        "bad salt": (record(salt="not hex"), "token 'a': salt must be 8 to 64 bytes in hex"),
        "bad scope": (record(scopes=["root"]), "unknown token scope(s) ['root']"),
        "scopes not a list": (record(scopes="predict"), "scopes must be a list of strings"),
        "duplicate": ([_good_record(), _good_record()], "token 'a' appears twice"),
        "bad expires": (record(expires="next tuesday"), "invalid expires timestamp"),
    }
    if kind == "missing":
        return "does not exist; create a token with"
    if kind == "directory":
        os.mkdir(path)
        return "cannot be read: Is a directory"
    if kind == "world-writable":
        write([_good_record()])
        os.chmod(path, 0o666)
        return "is writable by every user (mode 0666)"
    content, message = cases[kind]
    write(content)
    return message


CORRUPT_KINDS = ["not JSON", "not a list", "not an object", "no name", "no hash", "bad hash",
                 "short hash", "bad salt", "bad scope", "scopes not a list", "duplicate",
                 "bad expires", "missing", "directory", "world-writable"]


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_corrupt_tokens_file_stops_serve_with_one_line(registry_root, tmp_path, monkeypatch,
                                                       kind, restore_logging):
    import uvicorn

    from sparkml_aiaas.cli import main

    path = str(tmp_path / "tokens.json")
    expected = _bad_tokens_file(kind, path)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("serve started"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["serve", "--registry", registry_root, "--model", "bc/1",
                       "--tokens-file", path])
    err = err.getvalue()
    assert status == 2
    assert err.startswith(f"error: tokens file {path}") and err.count("\n") == 1, err
    assert expected in err, err
    assert "ab" * 16 not in err and "cd" * 32 not in err and "zz" * 32 not in err  # no secrets


def test_tokens_file_turning_corrupt_keeps_the_last_good_tokens(registry_root, tmp_path):
    path = str(tmp_path / "tokens.json")
    token = create_token(path, "a", ["predict"])
    app = create_app(registry_root, ["bc/1"], path)
    errors = _Records("sparkml_aiaas.serving.tokens")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/v1/models/bc", headers=_auth(token)).status_code == 200
            changes = 0
            for kind in ("not JSON", "bad hash", "duplicate", "world-writable", "directory"):
                if os.path.isdir(path):
                    os.rmdir(path)
                elif os.path.exists(path):
                    os.remove(path)
                _bad_tokens_file(kind, path)
                changes += 1
                for _ in range(3):  # no 500: the last good tokens are still in use
                    response = client.get("/v1/models/bc", headers=_auth(token))
                    assert response.status_code == 200, (kind, response.text)
                assert len(errors.lines) == changes, errors.lines  # once per change
                assert "still using the 1 token(s) loaded before" in errors.lines[-1]
            os.rmdir(path)
            fresh = create_token(path, "b", ["predict"])  # a good file again: it is used
            assert client.get("/v1/models/bc", headers=_auth(fresh)).status_code == 200
            assert client.get("/v1/models/bc", headers=_auth(token)).status_code == 401
            os.remove(path)  # deleted while serving: no tokens, every request refused
            assert client.get("/v1/models/bc", headers=_auth(fresh)).status_code == 401
    finally:
        errors.close()
    assert not any(token in line or fresh in line for line in errors.lines)


def test_503_body_names_the_model_not_the_path(registry_root, tokens_file, tmp_path):
    import shutil

    path, tokens = tokens_file
    root = str(tmp_path / "registry")
    shutil.copytree(registry_root, root)
    with open(os.path.join(root, "bc", "versions", "2", "model", "arrays.npz"), "ab") as fh:
        fh.write(b"tampered")
    logged = _Records("sparkml_aiaas.serving")  # before the app: it loads the model at once
    app = create_app(root, ["bc/2"], path)
    try:
        with TestClient(app) as client:
            for response in (client.get("/v1/models/bc", headers=_auth(tokens["predict"])),
                             client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                                         json={"records": []})):
                assert response.status_code == 503
                assert response.json()["error"] == ("model 'bc' is not available: its files "
                                                    "failed verification")
                assert root not in response.text and "arrays.npz" not in response.text
    finally:
        logged.close()
    # The detail stays on the server side (logged once, when the load first failed).
    assert any("checksum mismatch for file model/arrays.npz" in line for line in logged.lines)


@pytest.mark.parametrize("flag,value", [
    ("--port", "٨٠٨٠"), ("--max-records", "²"), ("--rate-limit", "١.٥"),
    ("--alias-check-seconds", "nan")])
def test_serve_numbers_are_ascii(flag, value, capsys):
    from sparkml_aiaas.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--registry", "r", "--model", "m", "--tokens-file", "t", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: expected a" in capsys.readouterr().err


def test_cli_serve_workers_run_the_same_app_in_each_worker(registry_root, tokens_file,
                                                           monkeypatch):
    """--workers N: uvicorn gets the factory's import string and N; the factory, run as in a
    worker process (options from the environment), builds an app serving the same models;
    a bad count is one line before anything loads."""
    import uvicorn

    from sparkml_aiaas.cli import main
    from sparkml_aiaas.serving import worker

    path, tokens = tokens_file
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.delenv(worker.OPTIONS_ENV, raising=False)
    assert main(["serve", "--registry", registry_root, "--model", "bc@production",
                 "--tokens-file", path, "--workers", "2", "--quiet"]) == 0
    assert seen["app"] == "sparkml_aiaas.serving.worker:app_from_environment"
    assert seen["factory"] is True and seen["workers"] == 2
    with TestClient(worker.app_from_environment()) as client:
        response = client.get("/ready", headers=_auth(tokens["predict"]))
        assert response.json() == {"status": "ready", "models": {"bc": 1}}
    monkeypatch.delenv(worker.OPTIONS_ENV)
    assert main(["serve", "--registry", registry_root, "--model", "bc@production",
                 "--tokens-file", path, "--workers", "0"]) != 0


def test_cli_serve_workers_refuse_a_taken_grpc_port(registry_root, tokens_file, monkeypatch):
    """Workers share the gRPC port with SO_REUSEPORT, so the parent checks it is free first."""
    import socket

    import uvicorn

    from sparkml_aiaas.cli import main

    path, _ = tokens_file
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--registry", registry_root, "--model", "bc@production",
                     "--tokens-file", path, "--workers", "2", "--grpc-port", str(port)]) == 2


def test_small_numeric_requests_take_the_columns_path_with_the_same_numbers(
        app_client, registry_root, pdf, monkeypatch):
    """Up to 256 values of numeric columns go to predict_columns (no pandas frame): the same
    outputs as predict(frame), nulls included; integers past 2**53 and larger requests still
    build the frame."""
    from sparkml_aiaas.serving import validation

    client, tokens = app_client
    records = _records(pdf.head(5))
    records[1]["x1"] = None
    records[2]["x0"] = 3  # a JSON integer in a double column
    predictor = ModelRegistry(registry_root).load_predictor("bc/1")
    expected = predictor.predict(pd.DataFrame.from_records(records)[COLS])
    built = []
    real = validation.records_columns
    monkeypatch.setattr("sparkml_aiaas.serving.rest_v1.records_columns",
                        lambda r, s: built.append(real(r, s)) or built[-1])
    response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                           json={"records": records})
    assert response.status_code == 200, response.text
    assert built[-1] is not None  # the columns path ran
    rows = response.json()["predictions"]
    assert np.isnan(expected["rawPrediction"].iloc[1]) and rows[1]["rawPrediction"] is None
    assert rows[1]["prediction"] == float(expected["prediction"].iloc[1])
    finite = [i for i in range(5) if i != 1]
    _assert_rows_equal([rows[i] for i in finite], expected.iloc[finite].reset_index(drop=True))

    records[0]["x2"] = 2 ** 60  # not exact as a double: the frame path
    response = client.post("/v1/models/bc/predict", headers=_auth(tokens["predict"]),
                           json={"records": records})
    assert response.status_code == 200 and built[-1] is None


@pytest.mark.parametrize("model, message", [
    ("churn@production", "no model named 'churn' in the registry '{root}' (it holds: bc, pre); "
     "register one: sparkml-aiaas models register MODEL_DIR --registry {root} --name churn "
     "--alias production"),
    ("bc@staging", "bc has no alias 'staging' in the registry '{root}' (versions: 1, 2; "
     "aliases: production -> 1); set it: sparkml-aiaas models set-alias --registry {root} bc "
     "staging 2"),
    ("bc/9", "bc has no version 9 in the registry '{root}' (its versions: 1, 2)"),
])
def test_serve_refuses_a_model_or_alias_that_does_not_exist(registry_root, tokens_file,
                                                            model, message, capsys):
    """One line naming what is missing and how to create it, before any port opens."""
    from sparkml_aiaas.cli import main

    code = main(["serve", "--registry", registry_root, "--model", model,
                 "--tokens-file", tokens_file[0]])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "error: " + message.format(root=registry_root)


def test_serve_refuses_a_registry_that_does_not_exist(tmp_path, tokens_file, capsys):
    from sparkml_aiaas.cli import main

    missing = str(tmp_path / "models_registry")
    code = main(["serve", "--registry", missing, "--model", "churn@production",
                 "--tokens-file", tokens_file[0]])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: the registry folder '{missing}' does not exist; create it by registering a "
        f"model: sparkml-aiaas models register MODEL_DIR --registry {missing} --name NAME "
        "--alias production")
    assert not os.path.exists(missing)


def test_serve_log_handlers_write_to_the_current_streams(capsys):
    """The log config writes to sys.stdout/sys.stderr as they are at each record: a stream
    replaced (and closed) since configuration is never written to."""
    import io
    import logging.config
    import sys

    from sparkml_aiaas.serving.logs import log_config

    logging.config.dictConfig(log_config(False))
    try:
        first = io.StringIO()
        real, sys.stdout = sys.stdout, first
        first.close()
        second = io.StringIO()
        sys.stdout = second
        logging.getLogger("sparkml_aiaas.serving.access").info("hello %s", "there")
        sys.stdout = real
        assert second.getvalue() == "hello there\n"
    finally:
        sys.stdout = sys.__stdout__ if sys.stdout is None else sys.stdout
        logging.getLogger("sparkml_aiaas").handlers[:] = []
