"""The gRPC API (inference.GRPCInferenceService, health, reflection) driven by tritonclient as a
real client against the real server: REST and gRPC on one event loop, one model cache.

Models: one per family from tests/serving_fixtures.py (shared with the REST v2 tests; built
without Spark, so the module starts no Spark session).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
grpc = pytest.importorskip("grpc")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("cryptography")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402
from tritonclient.grpc import (  # noqa: E402
    InferenceServerClient,
    InferInput,
    InferRequestedOutput,
)
from tritonclient.utils import InferenceServerException  # noqa: E402

from serving_certs import make_certificates  # noqa: E402
from serving_fixtures import (  # noqa: E402
    COLS,
    MODELS,
    assert_same_bits,
    build_registry,
    frame,
    free_port,
    make_tokens,
    predictor_outputs,
)
from sparkml_aiaas import __version__  # noqa: E402
from sparkml_aiaas.registry import DEFAULT_KEY_ENV, ModelRegistry  # noqa: E402
from sparkml_aiaas.serving import create_app  # noqa: E402
from sparkml_aiaas.serving.grpc_server import GrpcOptions, attach_grpc  # noqa: E402
from sparkml_aiaas.serving.proto import grpc_inference_pb2 as pb  # noqa: E402
from sparkml_aiaas.serving.proto import grpc_inference_pb2_grpc as pb_grpc  # noqa: E402
from sparkml_aiaas.serving.tls import TLSConfig  # noqa: E402

MAX_RECORDS = 50
MAX_BODY = 20_000


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rows():
    return frame(60)


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("grpc") / "registry")
    build_registry(root)
    return root


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("grpc-tokens") / "tokens.json")
    return path, make_tokens(path)


@contextlib.contextmanager
def _serving(registry_root, tokens_path, models, tls=None, **app_options):
    """REST (uvicorn) and gRPC on one event loop in a thread; yields (app, rest, grpc port)."""
    app = create_app(registry_root, models, tokens_path, max_body_bytes=MAX_BODY,
                     max_records=MAX_RECORDS, **app_options)
    grpc_port, rest_port = free_port(), free_port()
    attach_grpc(app, GrpcOptions(host="127.0.0.1", port=grpc_port, tls=tls,
                                 max_message_bytes=MAX_BODY, max_records=MAX_RECORDS,
                                 grace_seconds=0))
    config = uvicorn.Config(app, host="127.0.0.1", port=rest_port, log_level="warning",
                            lifespan="on", **(tls.uvicorn_options() if tls else {}))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield app, rest_port, grpc_port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def server(registry_root, tokens):
    path, _ = tokens
    with _serving(registry_root, path, list(MODELS.values()),
                  alias_check_seconds=60.0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    _, _, port = server
    with InferenceServerClient(f"127.0.0.1:{port}") as triton:
        yield triton


@pytest.fixture(scope="module")
def auth(tokens):
    return {"authorization": f"Bearer {tokens[1]['predict']}"}


def _status(excinfo) -> str:
    return excinfo.value.status()


def _inputs(batch, columns):
    """One tensor per column, its datatype from the column's values: strings BYTES, int64
    INT64, vectors FP64 [N, k], numbers FP64 [N]."""
    inputs = []
    for column in columns:
        values = batch[column].to_numpy()
        if values.dtype == object and isinstance(values[0], str):
            tensor = InferInput(column, [len(values)], "BYTES")
            tensor.set_data_from_numpy(values.astype(object))
        elif values.dtype == object:
            matrix = np.vstack(values).astype(np.float64)
            tensor = InferInput(column, list(matrix.shape), "FP64")
            tensor.set_data_from_numpy(matrix)
        elif values.dtype == np.int64:
            tensor = InferInput(column, [len(values)], "INT64")
            tensor.set_data_from_numpy(values)
        else:
            tensor = InferInput(column, [len(values)], "FP64")
            tensor.set_data_from_numpy(values.astype(np.float64))
        inputs.append(tensor)
    return inputs


# --------------------------------------------------------------------------- server level
def test_live_ready_and_server_metadata(client, auth):
    assert client.is_server_live() and client.is_server_ready()  # probes: no token
    meta = client.get_server_metadata(headers=auth)
    assert meta.name == "sparkml_aiaas" and meta.version == __version__
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_server_metadata()
    assert _status(excinfo) == "StatusCode.UNAUTHENTICATED"


def test_model_ready_and_metadata(client, auth, server):
    app = server[0]
    assert client.is_model_ready("bc", headers=auth)
    assert client.is_model_ready("bc", "1", headers=auth)
    meta = client.get_model_metadata("bc", headers=auth)
    assert meta.name == "bc" and list(meta.versions) == ["1"]
    assert meta.platform.startswith("sparkml_aiaas_")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (c, "FP64", [-1]) for c in COLS]
    expected = __import__("sparkml_aiaas.serving.oip", fromlist=["model_metadata"]) \
        .model_metadata(app.state.manager.get("bc"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        (t["name"], t["datatype"], list(t["shape"])) for t in expected["outputs"]]
    assert [t.name for t in meta.outputs] == ["rawPrediction", "probability", "prediction"]
    bundle = client.get_model_metadata("pre", headers=auth)
    assert [(t.name, t.datatype) for t in bundle.inputs] == [
        ("x0", "FP64"), ("x1", "FP64"), ("x2", "FP64"), ("n", "INT64"), ("color", "BYTES")]
    vector = client.get_model_metadata("mn", headers=auth)
    assert [(t.name, t.datatype, list(t.shape)) for t in vector.inputs] == [
        ("features", "FP64", [-1, 4])]
    for call in (lambda: client.is_model_ready("nope", headers=auth),
                 lambda: client.get_model_metadata("nope", headers=auth),
                 lambda: client.get_model_metadata("bc", "7", headers=auth)):
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert _status(excinfo) == "StatusCode.NOT_FOUND"


# --------------------------------------------------------------------------- inference
@pytest.mark.parametrize("name", list(MODELS))
def test_infer_equals_the_predictor_bit_for_bit(client, auth, registry_root, rows, name):
    predictor = ModelRegistry(registry_root).load_predictor(MODELS[name])
    columns = [c for c in predictor.input_columns]
    batch = rows.head(17)
    result = client.infer(name, _inputs(batch, columns), headers=auth, request_id="r-1")
    response = result.get_response()
    assert response.model_name == name and response.model_version == "1"
    assert response.id == "r-1"
    expected = predictor_outputs(registry_root, MODELS[name], batch)
    assert [o.name for o in response.outputs] == list(expected)
    for output, want in expected.items():
        assert_same_bits(result.as_numpy(output), want)


def test_requested_outputs_only(client, auth, rows):
    result = client.infer("mn", _inputs(rows.head(3), ["features"]), headers=auth,
                          outputs=[InferRequestedOutput("probability")])
    assert [o.name for o in result.get_response().outputs] == ["probability"]
    assert result.as_numpy("probability").shape == (3, 3)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("mn", _inputs(rows.head(3), ["features"]), headers=auth,
                     outputs=[InferRequestedOutput("nope")])
    assert _status(excinfo) == "StatusCode.INVALID_ARGUMENT"


def test_calls_are_counted_in_the_shared_metrics(server, client, auth, rows):
    client.infer("reg", _inputs(rows.head(5), COLS), headers=auth)
    text = server[0].state.context.metrics.text().decode()
    assert 'endpoint="grpc:ModelInfer",method="grpc",status="OK"' in text
    assert 'sparkml_serving_predicted_records_total{model="reg",version="1"}' in text


def _stub(server):
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[2]}"))


def test_typed_contents_in_and_out(server, auth, registry_root, rows):
    """A client that sends InferTensorContents (not raw bytes) gets contents back."""
    batch = rows.head(4)
    request = pb.ModelInferRequest(model_name="pre")
    for column in COLS:
        request.inputs.add(name=column, datatype="FP64", shape=[4]).contents.fp64_contents \
            .extend(batch[column].tolist())
    request.inputs.add(name="n", datatype="INT64", shape=[4]).contents.int64_contents \
        .extend(batch["n"].tolist())
    request.inputs.add(name="color", datatype="BYTES", shape=[4]).contents.bytes_contents \
        .extend(v.encode() for v in batch["color"])
    response = _stub(server).ModelInfer(request, metadata=tuple(auth.items()))
    assert not response.raw_output_contents
    expected = predictor_outputs(registry_root, "pre/1", batch)
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["prediction"].contents.fp64_contents) == \
        expected["prediction"].tolist()
    assert list(outputs["probability"].shape) == [4, 2]
    assert list(outputs["probability"].contents.fp64_contents) == \
        expected["probability"].ravel().tolist()


# --------------------------------------------------------------------------- errors
def test_unauthenticated_and_permission_denied(client, tokens, rows):
    _, made = tokens
    inputs = _inputs(rows.head(2), COLS)
    cases = {"UNAUTHENTICATED": [None, {"authorization": "Bearer not-a-token"},
                                 {"authorization": f"Basic {made['predict']}"},
                                 {"authorization": f"Bearer {made['expired']}"}],
             "PERMISSION_DENIED": [{"authorization": f"Bearer {made['admin_only']}"}]}
    for code, headers_list in cases.items():
        for headers in headers_list:
            with pytest.raises(InferenceServerException) as excinfo:
                client.infer("bc", inputs, headers=headers)
            assert _status(excinfo) == f"StatusCode.{code}", headers
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("bc", inputs, headers={"authorization": f"Bearer {made['expired']}"})
    assert "expired" in excinfo.value.message()
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_model_metadata("bc",
                                  headers={"authorization": f"Bearer {made['admin_only']}"})
    assert "'predict' scope" in excinfo.value.message()


def test_invalid_arguments(client, auth, server, rows):
    def refused(inputs, model="bc"):
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer(model, inputs, headers=auth)
        assert _status(excinfo) == "StatusCode.INVALID_ARGUMENT", excinfo.value.message()
        return excinfo.value.message()

    good = _inputs(rows.head(3), COLS)
    assert "x2" in refused(good[:2])  # a missing input is named
    wrong_type = InferInput("x1", [3], "BYTES")
    wrong_type.set_data_from_numpy(np.array(["a", "b", "c"], dtype=object))
    assert "x1" in refused([wrong_type] + good[1:])
    short = InferInput("x1", [2], "FP64")
    short.set_data_from_numpy(np.zeros(2))
    refused([short] + good[1:])  # rows differ between tensors
    extra = InferInput("x9", [3], "FP64")
    extra.set_data_from_numpy(np.zeros(3))
    assert "x9" in refused(good + [extra])

    # What tritonclient never sends: broken raw bytes, counts and contents.
    stub = _stub(server)
    metadata = tuple(auth.items())

    def raw_request(raw, n=3):
        request = pb.ModelInferRequest(model_name="reg")
        for column in COLS:
            request.inputs.add(name=column, datatype="FP64", shape=[n])
        request.raw_input_contents.extend(raw)
        return request

    ok = np.zeros(3).tobytes()
    for request in (raw_request([ok, ok, ok[:-3]]), raw_request([ok, ok]),
                    raw_request([ok, ok, np.zeros(4).tobytes()])):
        with pytest.raises(grpc.RpcError) as excinfo:
            stub.ModelInfer(request, metadata=metadata)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Traceback" not in excinfo.value.details()


def test_resource_exhausted_records_and_message_size(client, auth, rows):
    many = pd.concat([rows] * 2).head(MAX_RECORDS + 1)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("bc", _inputs(many, COLS), headers=auth)
    assert _status(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"
    assert str(MAX_RECORDS) in excinfo.value.message()
    huge = InferInput("x1", [MAX_BODY // 8 + 10], "FP64")
    huge.set_data_from_numpy(np.zeros(MAX_BODY // 8 + 10))
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("bc", [huge], headers=auth)
    assert _status(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"


def test_internal_error_has_no_traceback(client, auth, rows, monkeypatch, caplog):
    from sparkml_aiaas.serving import oip

    def broken(predictor, columns):
        raise RuntimeError("secret detail /srv/models/x")

    monkeypatch.setattr(oip, "predict_columns", broken)
    with caplog.at_level("ERROR", logger="sparkml_aiaas.serving.grpc"):
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer("bc", _inputs(rows.head(2), COLS), headers=auth)
    assert _status(excinfo) == "StatusCode.INTERNAL"
    assert excinfo.value.message() == "internal error"
    assert "secret detail" in caplog.text  # the server log has it all


# --------------------------------------------------------------------------- health, reflection
def test_health_service_and_reflection(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server[2]}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as excinfo:
        health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="inference.GRPCInferenceService")]
    listed, described = list(reflection.ServerReflectionInfo(iter(requests)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe


# --------------------------------------------------------------------------- shared limits
def test_rate_limit_throttle_and_unavailable_share_state_with_rest(registry_root, tokens, rows):
    """One Gate for both protocols: a token's rate limit and an address's failed-auth
    throttle count REST and gRPC calls together.  A model that cannot load: UNAVAILABLE."""
    path, made = tokens
    limited = {"authorization": f"Bearer {made['limited']}"}
    # A smaller failed-auth burst than the default 20 keeps the test short (every failed
    # check costs one scrypt per token in the file).
    with _serving(registry_root, path, ["reg/1", "bc@staging"], rate_limit=2.0,
                  failed_auth_limit=0.2, failed_auth_burst=3) as (app, rest_port, grpc_port):
        with InferenceServerClient(f"127.0.0.1:{grpc_port}") as triton:
            assert triton.is_server_live() and not triton.is_server_ready()
            health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
            assert health.Check(health_pb2.HealthCheckRequest()).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
            assert not triton.is_model_ready("bc", headers=limited)
            with pytest.raises(InferenceServerException) as excinfo:
                triton.infer("bc", _inputs(rows.head(1), COLS), headers=limited)
            assert _status(excinfo) == "StatusCode.UNAVAILABLE"  # the burst (2) is used up

            with pytest.raises(InferenceServerException) as excinfo:
                triton.get_model_metadata("reg", headers=limited)
            assert _status(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"
            assert "rate limit" in excinfo.value.message()
            rest = httpx.get(f"http://127.0.0.1:{rest_port}/v1/models/reg",
                             headers=limited)
            assert rest.status_code == 429  # the same bucket

            stub = pb_grpc.GRPCInferenceServiceStub(
                grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=tuple(limited.items()))
            assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert int(dict(excinfo.value.trailing_metadata())["retry-after"]) >= 1

            # Failed authentications from one address: throttled past the burst (each a
            # new token: a token that failed once is remembered, and answered cheaply).
            codes = []
            for attempt in range(10):
                try:
                    triton.get_server_metadata(
                        headers={"authorization": f"Bearer wrong-{attempt}"})
                except InferenceServerException as exc:
                    codes.append(exc.status())
                if codes[-1] == "StatusCode.RESOURCE_EXHAUSTED":
                    break
            assert codes[0] == "StatusCode.UNAUTHENTICATED"
            assert codes[-1] == "StatusCode.RESOURCE_EXHAUSTED", codes
            rest = httpx.get(f"http://127.0.0.1:{rest_port}/v1/models/reg",
                             headers={"authorization": "Bearer wrong-again"})
            assert rest.status_code == 429  # the same throttle


# --------------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(str(tmp_path_factory.mktemp("certs")))


def _trusting(certs, client_cert=False) -> ssl.SSLContext:
    """An httpx client context trusting the test CA (and presenting the client cert)."""
    context = ssl.create_default_context(cafile=certs.ca_cert)
    if client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


def test_tls_for_grpc_and_rest(registry_root, tokens, certs, auth, rows):
    tls = TLSConfig.from_flags(certs.server_cert, certs.server_key, None)
    with _serving(registry_root, tokens[0], ["reg/1"], tls=tls) as (_, rest_port, grpc_port):
        url = f"127.0.0.1:{grpc_port}"
        with InferenceServerClient(url, ssl=True, root_certificates=certs.ca_cert) as triton:
            assert triton.is_server_ready()
            result = triton.infer("reg", _inputs(rows.head(2), COLS), headers=auth)
            assert result.as_numpy("prediction").shape == (2,)
        for client in (InferenceServerClient(url),  # plaintext
                       InferenceServerClient(url, ssl=True,
                                             root_certificates=certs.other_ca_cert)):
            with client, pytest.raises(InferenceServerException) as excinfo:
                client.is_server_live(client_timeout=5)
            assert _status(excinfo) == "StatusCode.UNAVAILABLE"
        rest = httpx.get(f"https://127.0.0.1:{rest_port}/health", verify=_trusting(certs))
        assert rest.status_code == 200
        with pytest.raises(httpx.HTTPError):  # plaintext HTTP to the TLS port
            httpx.get(f"http://127.0.0.1:{rest_port}/health", timeout=5)


def test_mutual_tls_for_grpc_and_rest(registry_root, tokens, certs, auth):
    tls = TLSConfig.from_flags(certs.server_cert, certs.server_key, certs.ca_cert)
    with _serving(registry_root, tokens[0], ["reg/1"], tls=tls) as (_, rest_port, grpc_port):
        url = f"127.0.0.1:{grpc_port}"
        with InferenceServerClient(url, ssl=True, root_certificates=certs.ca_cert,
                                   private_key=certs.client_key,
                                   certificate_chain=certs.client_cert) as triton:
            assert triton.get_server_metadata(headers=auth).name == "sparkml_aiaas"
        with InferenceServerClient(url, ssl=True, root_certificates=certs.ca_cert) as anonymous:
            with pytest.raises(InferenceServerException) as excinfo:
                anonymous.is_server_live(client_timeout=5)
            assert _status(excinfo) == "StatusCode.UNAVAILABLE"
        https = f"https://127.0.0.1:{rest_port}/health"
        assert httpx.get(https, verify=_trusting(certs, client_cert=True)).status_code == 200
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.get(https, verify=_trusting(certs), timeout=5)


# --------------------------------------------------------------------------- CLI
def test_cli_serve_attaches_grpc_with_tls(registry_root, tokens, certs, monkeypatch):
    from fastapi.testclient import TestClient

    from sparkml_aiaas.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    grpc_port = free_port()
    assert main(["serve", "--registry", registry_root, "--model", "reg/1", "--tokens-file",
                 tokens[0], "--port", "9099", "--grpc-port", str(grpc_port), "--tls-cert",
                 certs.server_cert, "--tls-key", certs.server_key, "--tls-client-ca",
                 certs.ca_cert, "--quiet"]) == 0
    assert seen["ssl_certfile"] == certs.server_cert and seen["ssl_keyfile"] == certs.server_key
    assert seen["ssl_ca_certs"] == certs.ca_cert and seen["ssl_cert_reqs"] == 2  # CERT_REQUIRED
    with TestClient(seen["app"]):  # the lifespan starts gRPC beside the app
        endpoint = seen["app"].state.grpc
        assert endpoint.port == grpc_port and endpoint.options.tls.client_ca_file
    assert seen["app"].state.grpc is None


@pytest.mark.parametrize("flags,message", [
    (["--grpc-port", "8080"], "--grpc-port 8080 is also --port"),
    (["--grpc-port", "70000"], "--grpc-port 70000 is out of range"),
    (["--port", "0"], "--port 0 is out of range"),
    (["--tls-key", "k.pem"], "--tls-key needs --tls-cert too"),
    (["--tls-cert", "c.pem"], "--tls-cert needs --tls-key too"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"],
     "--tls-cert /nonexistent/c.pem: no such file"),
    (["--tls-cert", "{ca}", "--tls-key", "{ca}"], "are not a PEM certificate and its private key"),
])
def test_cli_serve_flag_errors_are_one_line(flags, message, certs, capsys):
    from sparkml_aiaas.cli import main

    flags = [f.format(ca=certs.ca_cert) for f in flags]
    # Checked before the registry or tokens file is even opened (neither exists here).
    assert main(["serve", "--registry", "/nonexistent/r", "--model", "m", "--tokens-file",
                 "/nonexistent/t", "--port", "8080"] + flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
