"""REST v2 (Open Inference Protocol) driven by tritonclient.http against a real server.

Every model family (linear binomial / multinomial / regression / SVC, sklearn, xgboost,
torch, a registry bundle with a preprocessor) is made without Spark; one module-scoped
uvicorn server serves them all.  Predictions must equal ``load_predictor(...).predict``
and the v1 endpoint bit for bit (and batch scoring, in the one test that starts Spark).
"""


import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpclient = pytest.importorskip("tritonclient.http")

import httpx  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from serving_fixtures import (  # noqa: E402
    COLS,
    MODELS,
    PRE_COLS,
    WIDTH,
    assert_same_bits,
    build_registry,
    frame,
    make_tokens,
    predictor_outputs,
    running,
)
from sparkml_aiaas.registry import DEFAULT_KEY_ENV  # noqa: E402
from sparkml_aiaas.serving import create_app  # noqa: E402

MAX_RECORDS = 50
MAX_BODY = 30_000
NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_,
         "BYTES": np.object_}


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(DEFAULT_KEY_ENV, raising=False)
        root = str(tmp_path_factory.mktemp("v2") / "registry")
        build_registry(root)
        yield root


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("v2-tokens") / "tokens.json")
    return path, make_tokens(path)


@pytest.fixture(scope="module")
def server(registry_root, tokens):
    """Every family served; yields (tritonclient, the http://host:port URL, tokens)."""
    path, made = tokens
    app = create_app(registry_root, list(MODELS.values()), path, max_body_bytes=MAX_BODY,
                     max_records=MAX_RECORDS, alias_check_seconds=3600)
    with running(app) as address:
        client = httpclient.InferenceServerClient(address)
        yield client, f"http://{address}", made
        client.close()


@pytest.fixture(scope="module")
def limited(registry_root, tokens):
    """bc and a model that cannot load, per-token rate limit 2/s, failed-auth throttle 1/s
    bursts of 3, on a fake clock; yields (client, url, tokens, clock)."""
    path, made = tokens
    now = [0.0]
    app = create_app(registry_root, ["bc/1", "ghost@production"], path, rate_limit=2,
                     clock=lambda: now[0], failed_auth_limit=1, failed_auth_burst=3)
    with running(app) as address:
        client = httpclient.InferenceServerClient(address)
        yield client, f"http://{address}", made, now
        client.close()


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _inputs(metadata, rows):
    """tritonclient inputs (JSON data) for ``rows`` of the model's input columns."""
    inputs = []
    for tensor in metadata["inputs"]:
        values = rows[tensor["name"]].to_numpy()
        if len(tensor["shape"]) == 2:
            values = np.stack(values)
        values = values.astype(NUMPY[tensor["datatype"]])
        item = httpclient.InferInput(tensor["name"], list(values.shape), tensor["datatype"])
        item.set_data_from_numpy(values, binary_data=False)
        inputs.append(item)
    return inputs


def _expected(registry_root, name, rows):
    return predictor_outputs(registry_root, MODELS[name], rows)


def _status(call):
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


# --------------------------------------------------------------------------- metadata
def test_live_ready_and_server_metadata(server):
    client, _, made = server
    assert client.is_server_live() and client.is_server_ready()  # probes need no token
    metadata = client.get_server_metadata(headers=_auth(made["predict"]))
    assert metadata["name"] == "sparkml_aiaas" and metadata["extensions"] == []
    for name in MODELS:
        assert client.is_model_ready(name, headers=_auth(made["predict"]))
        assert client.is_model_ready(name, "1", headers=_auth(made["predict"]))


def test_model_metadata_is_exactly_the_signature(server):
    client, _, made = server
    headers = _auth(made["predict"])
    scalar = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLS]
    binary_outputs = [{"name": "rawPrediction", "datatype": "FP64", "shape": [-1]},
                      {"name": "probability", "datatype": "FP64", "shape": [-1, 2]},
                      {"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    assert client.get_model_metadata("bc", headers=headers) == {
        "name": "bc", "versions": ["1"], "platform": "sparkml_aiaas_linear",
        "inputs": scalar, "outputs": binary_outputs}
    assert client.get_model_metadata("bc", "1", headers=headers)["inputs"] == scalar
    pre = client.get_model_metadata("pre", headers=headers)
    assert pre["inputs"] == scalar + [{"name": "n", "datatype": "INT64", "shape": [-1]},
                                      {"name": "color", "datatype": "BYTES", "shape": [-1]}]
    assert pre["outputs"] == binary_outputs and pre["platform"] == "sparkml_aiaas_linear"
    mn = client.get_model_metadata("mn", headers=headers)
    assert mn["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, WIDTH]}]
    assert [o["shape"] for o in mn["outputs"]] == [[-1, 3], [-1, 3], [-1]]
    assert [o["name"] for o in client.get_model_metadata("reg", headers=headers)["outputs"]] \
        == ["prediction"]
    assert [o["name"] for o in client.get_model_metadata("svc", headers=headers)["outputs"]] \
        == ["rawPrediction", "prediction"]
    for name, family in (("sk", "sklearn"), ("xg", "xgboost"), ("torch", "torch")):
        metadata = client.get_model_metadata(name, headers=headers)
        assert metadata["platform"] == f"sparkml_aiaas_{family}"
        assert metadata["inputs"] == scalar
        assert [o["name"] for o in metadata["outputs"]] == \
            ["rawPrediction", "probability", "prediction"]


# --------------------------------------------------------------------------- predictions
@pytest.mark.parametrize("name", list(MODELS))
def test_infer_equals_predictor_and_v1_bit_for_bit(server, registry_root, name):
    client, url, made = server
    headers = _auth(made["predict"])
    rows = frame(12)
    metadata = client.get_model_metadata(name, headers=headers)
    result = client.infer(name, _inputs(metadata, rows), headers=headers)
    expected = _expected(registry_root, name, rows)
    response = result.get_response()
    assert response["model_name"] == name and response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == list(expected)
    for column, values in expected.items():
        assert_same_bits(result.as_numpy(column), values)

    columns = [t["name"] for t in metadata["inputs"]]
    records = [{c: (row[c].tolist() if isinstance(row[c], np.ndarray) else row[c])
                for c in columns} for row in rows[columns].to_dict("records")]
    v1 = httpx.post(f"{url}/v1/models/{name}/predict", headers=headers,
                    json={"records": records}).json()["predictions"]
    for column, values in expected.items():
        assert_same_bits(np.array([row[column] for row in v1]), values)


def test_requested_outputs_subset_and_version_route(server, registry_root):
    client, _, made = server
    headers = _auth(made["predict"])
    rows = frame(5)
    metadata = client.get_model_metadata("pre", headers=headers)
    wanted = [httpclient.InferRequestedOutput("prediction", binary_data=False),
              httpclient.InferRequestedOutput("probability", binary_data=False)]
    result = client.infer("pre", _inputs(metadata, rows), model_version="1", outputs=wanted,
                          request_id="req-7", headers=headers)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["prediction", "probability"]
    assert response["id"] == "req-7"
    expected = _expected(registry_root, "pre", rows)
    assert_same_bits(result.as_numpy("probability"), expected["probability"])


def test_json_nested_rows_nulls_and_casts(server, registry_root):
    """What tritonclient does not send: nested data, null (NaN) features, INT32 for a
    double column; the same numbers as the predictor."""
    _, url, made = server
    rows = frame(3)
    rows.loc[1, "x1"] = np.nan
    body = {"inputs": [
        {"name": "x0", "datatype": "FP64", "shape": [3], "data": rows["x0"].tolist()},
        {"name": "x1", "datatype": "FP64", "shape": [3],
         "data": [None if np.isnan(v) else v for v in rows["x1"]]},
        {"name": "x2", "datatype": "INT32", "shape": [3], "data": [1, -2, 3]}]}
    rows["x2"] = [1.0, -2.0, 3.0]
    response = httpx.post(f"{url}/v2/models/bc/infer", headers=_auth(made["predict"]),
                          json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    expected = _expected(registry_root, "bc", rows)
    assert outputs["rawPrediction"]["data"][1] is None  # NaN is null, as in v1
    probability = np.array(outputs["probability"]["data"], dtype=np.float64).reshape(3, 2)
    assert_same_bits(probability, expected["probability"])
    vectors = np.stack(frame(2)["features"].to_numpy())
    nested = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [2, WIDTH],
                          "data": vectors.tolist()}]}
    response = httpx.post(f"{url}/v2/models/mn/infer", headers=_auth(made["predict"]),
                          json=nested)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][1]["shape"] == [2, 3]


def test_same_numbers_as_batch_scoring(server, registry_root, spark, tmp_path):
    from sparkml_aiaas.scoring import read_scores, score

    client, _, made = server
    headers = _auth(made["predict"])
    rows = frame(10)
    rows["id"] = np.arange(len(rows))
    metadata = client.get_model_metadata("pre", headers=headers)
    result = client.infer("pre", _inputs(metadata, rows), headers=headers)
    out = str(tmp_path / "scores")
    score(spark, "pre/1", spark.createDataFrame(rows[PRE_COLS + ["id"]]), out,
          registry=registry_root)
    scored = read_scores(spark, out).orderBy("id").toPandas()
    assert_same_bits(result.as_numpy("prediction"), scored["prediction"].to_numpy())
    assert_same_bits(result.as_numpy("probability"), np.stack(scored["probability"].to_numpy()))


# --------------------------------------------------------------------------- errors
def test_tokens_and_scopes(server):
    client, _, made = server
    rows = frame(2)
    inputs = _inputs(client.get_model_metadata("bc", headers=_auth(made["predict"])), rows)
    for headers in ({}, _auth("not-a-token"), {"Authorization": f"Basic {made['predict']}"}):
        assert _status(lambda: client.get_model_metadata("bc", headers=headers)) == \
            ("401", "missing or invalid bearer token")
        assert _status(lambda: client.infer("bc", inputs, headers=headers))[0] == "401"
    assert _status(lambda: client.get_server_metadata(headers=_auth(made["expired"]))) == \
        ("401", "token expired at 2020-01-02T00:00:00.000Z")
    assert _status(lambda: client.infer("bc", inputs, headers=_auth(made["admin_only"]))) == \
        ("403", "token 'ops' lacks the 'predict' scope")
    assert not client.is_model_ready("bc")  # model readiness needs a token (401)


def test_unknown_model_and_version_are_404(server):
    client, _, made = server
    headers = _auth(made["predict"])
    inputs = _inputs(client.get_model_metadata("bc", headers=headers), frame(1))
    assert _status(lambda: client.get_model_metadata("nope", headers=headers)) == \
        ("404", "model 'nope' is not served here")
    assert _status(lambda: client.infer("bc", inputs, model_version="2", headers=headers)) \
        == ("404", "model 'bc' version '2' is not served here (serving version 1)")
    assert not client.is_model_ready("bc", "2", headers=headers)


def _infer_body(url, token, name, body, **kw):
    return httpx.post(f"{url}/v2/models/{name}/infer", headers=_auth(token), json=body, **kw)


@pytest.mark.parametrize("change, message", [
    (lambda b: b["inputs"].pop(), "missing input(s) ['x2']; the model's inputs are "
                                  "['x0', 'x1', 'x2']"),
    (lambda b: b["inputs"][0].update(datatype="BYTES", data=["a", "b"]),
     "input 'x0': datatype BYTES does not fit column 'x0' (double); send FP64"),
    (lambda b: b["inputs"][0].update(data=[1.0, "b"]),
     "input 'x0': FP64 data must be numbers or null, got str 'b'"),
    (lambda b: b["inputs"][0].update(shape=[2, 1]),
     "input 'x0': shape [2, 1] does not fit column 'x0' (double); send [N]"),
    (lambda b: b["inputs"][0].update(shape=[3]),
     "input 'x0': 2 value(s) for shape [3] (3 expected)"),
    (lambda b: b["inputs"][0].update(datatype="INT64", data=[1, 2 ** 70]),
     "input 'x0': INT64 data must be integers, got float 1.1805916207174113e+21"),
    (lambda b: b.update(outputs=[{"name": "nope"}]),
     "unknown output(s) ['nope']; the model's outputs are ['rawPrediction', 'probability', "
     "'prediction']"),
    (lambda b: b["inputs"][0].update(parameters={"binary_data_size": 16}),
     "input 'x0': binary tensor data is not supported; send the data as JSON "
     "(tritonclient: binary_data=False)"),
    (lambda b: b.pop("inputs"), "body.inputs must be a list, got null"),
    # Found by the fuzzer: a parameters value that is not an object was a 500.
    (lambda b: b["inputs"][0].update(parameters=38865),
     "input 'x0'.parameters must be an object, got int 38865"),
    (lambda b: b.update(parameters=[1]), "body.parameters must be an object, got list of 1 "
                                         "item(s)"),
    (lambda b: b.update(outputs=[{"name": "prediction", "parameters": "x"}]),
     "outputs[0].parameters must be an object, got str 'x'"),
])
def test_bad_tensors_are_422(server, change, message):
    _, url, made = server
    body = {"inputs": [{"name": c, "datatype": "FP64", "shape": [2], "data": [0.5, 1.5]}
                       for c in COLS]}
    change(body)
    response = _infer_body(url, made["predict"], "bc", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == message


def test_tritonclient_binary_tensors_are_refused_clearly(server):
    client, _, made = server
    values = np.zeros(2)
    inputs = []
    for column in COLS:
        item = httpclient.InferInput(column, [2], "FP64")
        item.set_data_from_numpy(values)  # tritonclient's default: binary data
        inputs.append(item)
    status, message = _status(lambda: client.infer("bc", inputs, headers=_auth(made["predict"])))
    assert status == "422" and "binary tensor data is not supported" in message


def test_size_limits_are_413(server):
    _, url, made = server
    many = MAX_RECORDS + 1
    body = {"inputs": [{"name": c, "datatype": "FP64", "shape": [many], "data": [0.0] * many}
                       for c in COLS]}
    response = _infer_body(url, made["predict"], "bc", body)
    assert response.status_code == 413
    assert response.json()["error"] == f"input 'x0' has {many} rows; the limit is " \
                                       f"{MAX_RECORDS} per request"
    body = {"inputs": [{"name": "x0", "datatype": "BYTES", "shape": [1],
                        "data": ["p" * MAX_BODY]}]}
    response = _infer_body(url, made["predict"], "bc", body)
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_rate_limit_throttle_and_unavailable(limited):
    client, url, made, now = limited
    headers = _auth(made["predict"])
    assert not client.is_server_ready()  # ghost is not loaded: 503
    assert _status(lambda: client.get_model_metadata("ghost", headers=headers)) == \
        ("503", "model 'ghost' is not available: its version or alias is not in the "
                "registry")
    now[0] += 10
    inputs = _inputs(client.get_model_metadata("bc", headers=headers), frame(1))
    client.infer("bc", inputs, headers=headers)  # the burst of 2 is spent
    status, message = _status(lambda: client.infer("bc", inputs, headers=headers))
    assert (status, message) == ("429", "rate limit of 2 requests/s exceeded for token "
                                        "'client'; retry after 1 s")
    response = httpx.get(f"{url}/v2/models/bc", headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    # Failed authentications from this address: 3 checked, then refused unchecked.
    now[0] += 10
    for i in range(3):
        assert _status(lambda: client.get_server_metadata(headers=_auth(f"guess{i}")))[0] \
            == "401"
    assert _status(lambda: client.get_server_metadata(headers=_auth("guess-more"))) == \
        ("429", "too many failed authentications from this address; retry after 1 s")
    assert client.get_server_metadata(headers=headers)["name"] == "sparkml_aiaas"  # known
    now[0] += 1.0
    assert _status(lambda: client.get_server_metadata(headers=_auth("guess-4")))[0] == "401"
    now[0] += 10
    metrics = httpx.get(f"{url}/metrics", headers=_auth(made["admin_only"])).text
    assert "sparkml_serving_auth_throttled_total 1.0" in metrics
    assert 'sparkml_serving_rate_limited_total{token="client"} 2.0' in metrics


# --------------------------------------------------------------------------- fuzzing
def test_v2_openapi_fuzzed_by_schemathesis(registry_root, tokens):
    """Every v2 operation from the OpenAPI document, valid and invalid requests generated:
    none answers 5xx, every error is the documented body, valid ones are answered 200."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    path, made = tokens
    app = create_app(registry_root, ["bc@production", "mn/1", "pre/1"], path,
                     max_body_bytes=MAX_BODY, max_records=MAX_RECORDS)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()
                  if result.ok().path.startswith("/v2")]
    assert len(operations) == 9
    seen = {}

    def check(case):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {made['predict']}"}
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error])
        seen.setdefault((case.method, case.path), set()).add(response.status_code)
        if response.status_code >= 400 and response.json().get("error") != "Not Found":
            assert set(response.json()) == {"error", "request_id"}, response.text

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            if mode is GenerationMode.NEGATIVE and not any(
                    len(getattr(operation, part)) for part in ("path_parameters", "body")):
                continue  # nothing declared that could be made invalid

            @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                check(case)

            run()
    # A valid infer body must match the model named in the path: random bodies hardly
    # do, so those operations are checked for client errors here, for 200 below.
    infer = {("POST", "/v2/models/{name}/infer"),
             ("POST", "/v2/models/{name}/versions/{version}/infer")}
    assert all(200 in statuses for key, statuses in seen.items() if key not in infer), seen
    assert 422 in seen[("POST", "/v2/models/{name}/infer")], seen

    # The document's example bodies (one per model) have the model's tensors; a string
    # example ("a") is not a category the bundle's preprocessor knows: refused by the model.
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        examples = document["components"]["schemas"]["InferRequest"]["examples"]
        assert len(examples) == 3
        for name, example in zip(["bc", "mn", "pre"], examples):
            response = client.post(f"/v2/models/{name}/infer", json=example,
                                   headers=_auth(made["predict"]))
            if name == "pre":
                assert response.status_code == 422
                assert "'color' has value 'a'" in response.json()["error"]
            else:
                assert response.status_code == 200, response.text


def test_cli_serve_failed_auth_flags(registry_root, tokens, monkeypatch):
    import uvicorn

    from sparkml_aiaas.cli import main

    path, _ = tokens
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--registry", registry_root, "--model", "bc/1", "--tokens-file",
                 path, "--failed-auth-limit", "0.5", "--failed-auth-burst", "2",
                 "--quiet"]) == 0
    failures = seen["app"].state.context.gate.failures
    assert (failures.rate, failures.burst) == (0.5, 2.0)
    assert main(["serve", "--registry", registry_root, "--model", "bc/1", "--tokens-file",
                 path, "--failed-auth-limit", "0", "--quiet"]) == 0
    assert seen["app"].state.context.gate.failures is None
