"""Schemathesis fuzzing of the serving API, from its own OpenAPI document.

Every operation gets generated requests (valid and invalid path parameters and
bodies, ``max_examples`` per operation and generation mode); with an admin +
predict token none may answer 5xx, and without a token (or with a wrong one)
every authenticated operation must answer 401.  The model is a scikit-learn
logistic regression wrapped with ``wrap_model``: registered and served without
a Spark session.
"""

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from sparkml_aiaas.registry import DEFAULT_KEY_ENV, ModelRegistry  # noqa: E402
from sparkml_aiaas.serving import create_app  # noqa: E402
from sparkml_aiaas.serving.tokens import create_token  # noqa: E402

COLS = ["x0", "x1", "x2"]
MAX_EXAMPLES = 50
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(HealthCheck))
# Operations anyone may call: everything else must refuse a request without a valid token.
PUBLIC = {("GET", "/health"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready")}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An app serving ``lr@production`` (sklearn LogisticRegression) and an admin+predict token."""
    from sklearn.linear_model import LogisticRegression

    from sparkml_aiaas.models import wrap_model

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(DEFAULT_KEY_ENV, raising=False)
        root = tmp_path_factory.mktemp("fuzz")
        rng = np.random.default_rng(5)
        X = rng.normal(size=(200, len(COLS)))
        y = (X @ [1.0, -2.0, 0.5] > 0).astype(int)
        registry = ModelRegistry(str(root / "registry"))
        registry.register(wrap_model(LogisticRegression().fit(X, y), featuresCols=COLS), "lr")
        registry.set_alias("lr", "production", 1)
        tokens_file = str(root / "tokens.json")
        token = create_token(tokens_file, "fuzzer", ["predict", "admin"])
        app = create_app(str(root / "registry"), ["lr@production"], tokens_file,
                         max_body_bytes=50_000, max_records=100, registry=registry)
        yield app, token


@pytest.fixture(scope="module")
def api_schema(served):
    app, _ = served
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {(op.method.upper(), op.path) for op in operations}
    # A new endpoint is fuzzed too; these are the ones the app must at least have.
    assert {("GET", "/health"), ("GET", "/ready"), ("GET", "/v1/models/{name}"),
            ("POST", "/v1/models/{name}/predict"), ("POST", "/v1/admin/reload"),
            ("GET", "/metrics")} <= labels, labels
    return operations


def _fuzz(operation, mode, check, **strategies):
    """Run ``check(case, **drawn)`` on ``MAX_EXAMPLES`` generated requests to ``operation``."""
    if mode is GenerationMode.NEGATIVE and not any(
            len(getattr(operation, part)) for part in
            ("path_parameters", "query", "headers", "cookies", "body")):
        return  # nothing declared that could be made invalid (e.g. GET /health)

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode), **strategies)
    def run(case, **drawn):
        check(case, **drawn)

    run()


def _call(case, authorization):
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    case.headers = headers
    return case.call()


def _is_unrouted(response):
    """A generated path that matches no route (e.g. a name with a '/') never reaches auth."""
    return response.status_code == 404 and response.json().get("error") == "Not Found"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gives_a_server_error(api_schema, served, mode):
    _, token = served
    seen = {}

    def check(case):
        response = _call(case, f"Bearer {token}")
        case.validate_response(response, checks=[not_a_server_error])
        key = (case.method.upper(), case.path)
        seen.setdefault(key, set()).add(response.status_code)
        if response.status_code >= 400:  # every error is the documented JSON body
            body = response.json()
            assert set(body) == {"error", "request_id"}, body
            assert body["error"], body

    operations = _operations(api_schema)
    for operation in operations:
        _fuzz(operation, mode, check)
    if mode is GenerationMode.POSITIVE:  # valid requests were generated and answered
        assert all(200 in statuses for statuses in seen.values()), seen
        assert len(seen) == len(operations)
    else:  # invalid ones were refused with a client error
        assert 422 in seen[("POST", "/v1/models/{name}/predict")], seen
        assert 404 in seen[("GET", "/v1/models/{name}")], seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_or_wrong_token_is_401_never_500(api_schema, served, mode):
    _, token = served
    wrong = st.sampled_from([None, "", "Bearer", "Bearer not-a-valid-token",
                             f"Bearer {token[:-1]}", f"Basic {token}", token])

    def check(case, authorization):
        response = _call(case, authorization)
        case.validate_response(response, checks=[not_a_server_error])
        if (case.method.upper(), case.path) in PUBLIC or _is_unrouted(response):
            return
        assert response.status_code == 401, (case.method, case.formatted_path,
                                             response.status_code, response.text)
        assert response.headers["www-authenticate"] == ["Bearer"]
        assert response.json()["error"] == "missing or invalid bearer token"

    for operation in _operations(api_schema):
        _fuzz(operation, mode, check, authorization=wrong)


def test_openapi_describes_the_served_models(served):
    from fastapi.testclient import TestClient

    app, _ = served
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "PredictRequest" and body["required"] == ["records"]
    (name,) = [p for p in predict["parameters"] if p["name"] == "name"]
    assert name["schema"]["enum"] == ["lr"]
    schemas = spec["components"]["schemas"]
    records = body["properties"]["records"]
    assert records["items"] == {"$ref": "#/components/schemas/Record_lr"}
    assert records["maxItems"] == 100
    record = schemas["Record_lr"]
    assert record["required"] == COLS
    assert record["properties"]["x0"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "a token from `sparkml-aiaas tokens create`"}
    assert predict["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


# Bodies that gave 500s before the app checked for them (the fuzzer's finds, kept as cases).
@pytest.mark.parametrize("body, message", [
    ('{"records": [{"x0": 1%s, "x1": 0, "x2": 0}]}' % ("0" * 400,),
     "records[0]: field 'x0' must be double, got int 1000000000000000000000000000000000000000"
     "...: out of the range of a double"),
    ('{"records": [{"x0": 1e400, "x1": 0, "x2": 0}]}',
     "records[0]: field 'x0' must be double, got float inf: not a finite number"),
    ('{"records": [{"x0": NaN, "x1": 0, "x2": 0}]}',
     "body is not valid JSON: NaN is not valid JSON (send null for a missing value)"),
    ("[" * 20_000 + "]" * 20_000, "body is not valid JSON: nested too deeply"),
    ('{"records": [[1, 2, 3]]}', "records[0]: Input should be a valid dictionary"),
    ("[]", 'body must be a JSON object {"records": [...]}, got list of 0 item(s)'),
    ("", 'body is empty; send a JSON object {"records": [...]}'),
])
def test_bad_bodies_are_422_naming_the_problem(served, body, message):
    from fastapi.testclient import TestClient

    app, token = served
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/models/lr/predict", content=body.encode(),
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == message
