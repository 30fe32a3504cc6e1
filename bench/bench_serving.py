"""Serving benchmark: `sparkml-aiaas serve` (REST v1, REST v2, gRPC) vs `mlflow models serve`
vs the in-process predictor, single-record requests, one run.

    python bench/bench_serving.py                  # 15 s per row, 32 requests in flight
    python bench/bench_serving.py --quick          # 3 s per row
    python bench/bench_serving.py --workers 2 --skip-mlflow

The model is our own binary ``LogisticRegressionModel`` (the linear family, served by
``LinearPredictor``) with ``--features`` columns (default 30): its coefficients come from a
scikit-learn ``LogisticRegression`` fitted on synthetic data, so no Spark (and no JVM) is
needed.  It is registered in a temporary registry as ``bench@production``; one predict token
is made; ``sparkml-aiaas serve`` is started as a subprocess on free 127.0.0.1 ports (this
checkout's code: ``PYTHONPATH`` is set to it).  Rows, each for ``--seconds`` at
``--connections`` requests in flight, all on 127.0.0.1:

  REST v1      ``POST /v1/models/bench/predict`` ``{"records": [{...}]}``, driven by wrk
  REST v2      ``POST /v2/models/bench/infer``, Open Inference Protocol JSON (one FP64 tensor
               of shape [1] per feature column), driven by wrk; "not available in this build"
               when the route answers 404
  gRPC         ``inference.GRPCInferenceService/ModelInfer`` (Open Inference Protocol; the
               request is tritonclient's ``ModelInferRequest`` with ``raw_input_contents``),
               driven by h2load; run only when ``serve --help`` offers ``--grpc-port``
  mlflow       ``mlflow models serve --env-manager local`` serving the same version exported
               with ``export_mlflow``, ``POST /invocations`` ``{"dataframe_split": ...}``, wrk
  in-process   the registry's predictor in a loop, one thread: ``predict_columns(dict of
               1-element numpy columns)`` when the predictor has it (else "not available"),
               and ``predict(1-row pandas.DataFrame)``

Load generators.  wrk (HTTP/1.1, one thread by default, keep-alive connections): its Lua
``done()`` hook prints requests, duration, latency percentiles and errors (socket errors and
HTTP status >= 400, which wrk's text calls "Non-2xx or 3xx responses") as one JSON line; wrk's
own ``--latency`` report is kept in the log.  gRPC: PyPI's ``perf-analyzer`` is only a
placeholder package and ghz is not installed, so h2load (nghttp2; HTTP/2 with prior knowledge
on ``http://`` URIs, i.e. h2c) posts one pre-framed gRPC message (flag byte 0, 4-byte
big-endian length, the message) with ``content-type: application/grpc`` and ``te: trailers``;
latency percentiles come from its ``--log-file``.  h2load checks HTTP statuses only, and a
gRPC error is HTTP 200 with a ``grpc-status`` trailer, so the gRPC row is checked two more
ways: the same request is sent once with grpcio and tritonclient's stub and its outputs are
compared with the in-process predictor's, and an error response carries no DATA frame, so
h2load's DATA byte count must equal (responses × the size of the verified response); any
shortfall is counted as errors.  Every served row's first response is compared with the
in-process predictor's outputs; a mismatch is an error.

Everything shares the machine's cores (load generator included), as the targets state.  Exit
status 1 when any request of our server failed or gave other numbers (or the run broke);
``--strict`` also exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

MODEL = "bench"
HOST = "127.0.0.1"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"

TARGET_PREDICTOR_US = 50.0
TARGET_REST_RPS = 2000.0
TARGET_GRPC_RPS = 3000.0
TARGET_P99_MS = 50.0
TARGET_MLFLOW_RATIO = 5.0


# ------------------------------------------------------------------------------ results
@dataclass
class Row:
    """One line of the table: a load run, an in-process loop, or why there is none."""

    label: str
    rate: Optional[float] = None          # requests/s (or calls/s in process)
    p50_s: Optional[float] = None
    p90_s: Optional[float] = None
    p99_s: Optional[float] = None
    mean_s: Optional[float] = None
    requests: int = 0
    errors: Optional[int] = None          # None: not counted (in process)
    ours: bool = True                     # errors of our server decide the exit status
    unavailable: Optional[str] = None     # why the row was not measured
    notes: List[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.unavailable is None and self.rate is not None


# ------------------------------------------------------------------------------ model
def build_registry(root: str, features: int) -> List[str]:
    """Register our binary LogisticRegressionModel as bench@production; its feature columns.

    The coefficients are a scikit-learn fit's (no Spark needed); the model is ours, so the
    server runs ``LinearPredictor``, as for a model trained with our LogisticRegression.
    """
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    from sparkml_aiaas.models.linear import LogisticRegressionModel
    from sparkml_aiaas.registry import ModelRegistry

    cols = [f"x{j}" for j in range(features)]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5_000, features))
    y = (X @ rng.normal(size=features) + rng.normal(size=5_000) > 0).astype(int)
    fitted = SkLogisticRegression(max_iter=500).fit(X, y)
    model = LogisticRegressionModel(
        coefficients=fitted.coef_[0], intercept=float(fitted.intercept_[0]),
        signature={"inputs": [{"name": c, "type": "double"} for c in cols]})
    model._set(featuresCols=cols)
    registry = ModelRegistry(root)
    version = registry.register(model, MODEL, description="bench/bench_serving.py")
    registry.set_alias(MODEL, "production", version)
    return cols


def sample_record(cols: List[str]) -> Dict[str, float]:
    rng = np.random.default_rng(1)
    return {c: float(v) for c, v in zip(cols, rng.normal(size=len(cols)))}


# ------------------------------------------------------------------------------ bodies
def v1_body(record: Dict[str, float]) -> bytes:
    return json.dumps({"records": [record]}).encode()


def v2_body(record: Dict[str, float]) -> bytes:
    inputs = [{"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
              for c, v in record.items()]
    return json.dumps({"inputs": inputs}).encode()


def mlflow_body(record: Dict[str, float]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(record),
                                           "data": [list(record.values())]}}).encode()


def grpc_request(record: Dict[str, float]):
    """A ModelInferRequest (tritonclient's protobuf, inference.GRPCInferenceService's wire
    format): one FP64 [1] tensor per column, values in ``raw_input_contents``."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, value in record.items():
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, "FP64"
        tensor.shape.append(1)
        request.raw_input_contents.append(struct.pack("<d", value))
    return request


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes."""
    return struct.pack(">BI", 0, len(message)) + message


# ------------------------------------------------------------------------------ processes
def child_env() -> Dict[str, str]:
    """This checkout on PYTHONPATH (the venv may hold another one), the venv's bin on PATH
    (``mlflow models serve`` execs ``uvicorn`` by name)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(REPO),
                                                      env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def start(command: List[str], log_path: str) -> subprocess.Popen:
    """Start ``command`` in its own process group (so that stop() ends its children too)."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child_env(),
                                start_new_session=True)


def stop(process: Optional[subprocess.Popen]) -> None:
    """SIGTERM the process group, SIGKILL it after 15 s; a no-op when already gone."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            if sig == signal.SIGTERM:
                try:  # stragglers of the group (e.g. mlflow's uvicorn) once the leader is gone
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        except subprocess.TimeoutExpired:
            continue


def log_tail(path: str, chars: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


def http(method: str, url: str, body: Optional[bytes] = None,
         headers: Optional[Dict[str, str]] = None, timeout: float = 30.0):
    """(status, body bytes) of one request; (None, reason) when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc).encode()


def wait_http(process: subprocess.Popen, url: str, log_path: str, what: str,
              timeout: float = 180.0) -> None:
    """Wait until GET ``url`` answers 200; raise with the log's tail if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n"
                               + log_tail(log_path))
        if http("GET", url, timeout=2.0)[0] == 200:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s:\n"
                       + log_tail(log_path))


# ------------------------------------------------------------------------------ our server
def serve_command() -> List[str]:
    return [sys.executable, "-m", "sparkml_aiaas", "serve"]


def serve_options() -> str:
    """``sparkml-aiaas serve --help`` of this checkout: which flags this build has."""
    done = subprocess.run(serve_command() + ["--help"], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"sparkml-aiaas serve --help failed:\n{done.stderr[-3000:]}")
    return done.stdout


def start_ours(registry_root: str, tokens_file: str, port: int, grpc_port: Optional[int],
               workers: Optional[int], log_path: str) -> subprocess.Popen:
    command = serve_command() + [
        "--registry", registry_root, "--model", f"{MODEL}@production",
        "--tokens-file", tokens_file, "--host", HOST, "--port", str(port), "--quiet"]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return start(command, log_path)


# ------------------------------------------------------------------------------ mlflow
def start_mlflow(registry_root: str, export_dir: str, port: int, workers: Optional[int],
                 log_path: str) -> subprocess.Popen:
    """Export bench@production with export_mlflow and serve it with ``mlflow models serve``
    in this environment (``--env-manager local``: no virtualenv, no network)."""
    from sparkml_aiaas.registry import ModelRegistry

    # mlflow's advice on type hints and input examples: its own filters override
    # warnings.catch_warnings, so the text it prints is dropped instead.
    with contextlib.redirect_stderr(io.StringIO()):
        ModelRegistry(registry_root).export_mlflow(f"{MODEL}@production", export_dir)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", export_dir,
               "-h", HOST, "-p", str(port), "--env-manager", "local"]
    if workers is not None:
        command += ["-w", str(workers)]
    return start(command, log_path)


def failure_reason(log: str) -> str:
    """The line of a server log that says why it failed: a missing program or module first
    (e.g. ``exec: uvicorn: not found``), else the last error-looking line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in (r"not found|no module named|command not found",
                    r"error|exception|cannot|refused"):
        for line in reversed(lines):
            if re.search(pattern, line, re.I):
                return line[:300]
    return lines[-1][:300] if lines else "no output"


# ------------------------------------------------------------------------------ checks
def compare_outputs(got: Dict[str, np.ndarray], expected: Dict[str, np.ndarray]) -> str:
    """'' when every output both have agrees (1e-9 relative), else what differs."""
    shared = [name for name in expected if name in got]
    if not shared:
        return f"no known output in the response (got {sorted(got)}, want {sorted(expected)})"
    for name in shared:
        a = np.asarray(got[name], dtype=np.float64).ravel()
        b = np.asarray(expected[name], dtype=np.float64).ravel()
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-12):
            return f"output {name!r}: got {a.tolist()[:4]}, in process {b.tolist()[:4]}"
    return ""


def v1_outputs(body: bytes) -> Dict[str, np.ndarray]:
    record = json.loads(body)["predictions"][0]
    return {k: np.asarray(v, dtype=np.float64) for k, v in record.items()
            if isinstance(v, (int, float, list))}


def v2_outputs(body: bytes) -> Dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"], dtype=np.float64)
            for o in json.loads(body).get("outputs", [])}


def mlflow_outputs(body: bytes) -> Dict[str, np.ndarray]:
    predictions = json.loads(body)["predictions"]
    record = predictions[0] if isinstance(predictions, list) else predictions
    return {k: np.asarray(v, dtype=np.float64) for k, v in record.items()}


_GRPC_DTYPES = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


def grpc_outputs(response) -> Dict[str, np.ndarray]:
    """Output tensors of a ModelInferResponse (raw_output_contents or typed contents)."""
    out = {}
    for i, tensor in enumerate(response.outputs):
        if i < len(response.raw_output_contents):
            dtype = _GRPC_DTYPES.get(tensor.datatype)
            if dtype is None:
                continue
            out[tensor.name] = np.frombuffer(response.raw_output_contents[i], dtype=dtype)
        else:
            for kind in ("fp64_contents", "fp32_contents", "int64_contents", "int_contents",
                         "bool_contents"):
                values = getattr(tensor.contents, kind)
                if len(values):
                    out[tensor.name] = np.asarray(values, dtype=np.float64)
                    break
    return out


def grpc_check(port: int, token: str, request, timeout: float = 60.0):
    """Send ``request`` once with grpcio + tritonclient's stub, retrying until the port
    answers: (outputs, serialized response size) or raise with the last gRPC error."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                response = stub.ModelInfer(request, timeout=30.0,
                                           metadata=[("authorization", f"Bearer {token}")])
                return grpc_outputs(response), len(response.SerializeToString())
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise RuntimeError(f"gRPC ModelInfer failed: {exc.code().name}: "
                                       f"{exc.details()}") from None
                time.sleep(0.25)


# ------------------------------------------------------------------------------ wrk
_WRK_LUA = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
%(headers)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def wrk_script(path: str, body: bytes, headers: Dict[str, str]) -> str:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("request body cannot be quoted as a Lua long string")
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with open(path, "w") as f:
        f.write(_WRK_LUA % {"body": text, "headers": lines})
    return path


def run_wrk(url: str, script: str, seconds: float, connections: int, threads: int,
            log_path: str) -> dict:
    """One wrk run: the done() hook's numbers (wrk's --latency text goes to the log)."""
    command = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections),
               "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "--latency",
               "-s", script, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (status {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    return json.loads(match.group(1))


def wrk_row(label: str, stats: dict, ours: bool) -> Row:
    errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    row = Row(label, rate=stats["requests"] / (stats["duration_us"] / 1e6),
              p50_s=stats["p50_us"] / 1e6, p90_s=stats["p90_us"] / 1e6,
              p99_s=stats["p99_us"] / 1e6, mean_s=stats["mean_us"] / 1e6,
              requests=stats["requests"], errors=errors, ours=ours)
    if errors:
        row.notes.append("errors: " + ", ".join(
            f"{k} {stats[k]}" for k in ("status", "connect", "read", "write", "timeout")
            if stats[k]) + " (status = HTTP >= 400)")
    return row


def measure_wrk(label: str, url: str, body: bytes, headers: Dict[str, str], args,
                workdir: str, ours: bool = True) -> Row:
    name = re.sub(r"\W+", "_", label).strip("_")
    script = wrk_script(os.path.join(workdir, f"{name}.lua"), body,
                        {"Content-Type": "application/json", **headers})
    log_path = os.path.join(workdir, "wrk.log")
    run_wrk(url, script, 1, args.connections, args.client_threads, log_path)  # warm-up
    stats = run_wrk(url, script, args.seconds, args.connections, args.client_threads,
                    log_path)
    return wrk_row(label, stats, ours)


# ------------------------------------------------------------------------------ h2load
def run_h2load(url: str, body_path: str, headers: Dict[str, str], seconds: Optional[float],
               clients: int, streams: int, threads: int, log_path: str,
               requests_log: str) -> dict:
    """One h2load run (``-D seconds``, or one request when seconds is None): its totals.

    h2load appends to ``--log-file``: it is removed first so that it holds this run only.
    """
    if os.path.exists(requests_log):
        os.remove(requests_log)
    command = ["h2load", "-t", str(min(threads, clients)), "-c", str(clients),
               "-m", str(streams), "-d", body_path, f"--log-file={requests_log}"]
    command += ["-n", "1"] if seconds is None else ["-D", str(max(1, round(seconds)))]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=(seconds or 0) + 120)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    out = done.stdout
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    totals = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    traffic = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data",
                        out)
    if done.returncode != 0 or not (finished and totals and codes and traffic):
        raise RuntimeError(f"h2load failed (status {done.returncode}): "
                           f"{(done.stderr or out).strip()[-800:]}")
    seconds_taken = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    done_, succeeded, failed, errored, timeouts = (int(totals.group(i)) for i in (3, 4, 5, 6, 7))
    return {"seconds": seconds_taken, "rps": float(finished.group(3)), "done": done_,
            "succeeded": succeeded, "failed": failed, "errored": errored, "timeout": timeouts,
            "non2xx": sum(int(codes.group(i)) for i in (2, 3, 4)),
            "data_bytes": int(traffic.group(3))}


def request_latencies(requests_log: str) -> np.ndarray:
    """Per-request durations (s) from h2load's --log-file (start µs, status, duration µs)."""
    durations = []
    with open(requests_log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].strip().isdigit():
                durations.append(int(parts[2]) / 1e6)
    return np.asarray(durations)


def measure_grpc(port: int, token: str, record: Dict[str, float], expected, args,
                 workdir: str) -> Row:
    label = "gRPC ModelInfer (h2load)"
    request = grpc_request(record)
    try:
        outputs, message_size = grpc_check(port, token, request)
    except RuntimeError as exc:
        return Row(label, errors=1, unavailable=str(exc))
    mismatch = compare_outputs(outputs, expected)
    body_path = os.path.join(workdir, "grpc_body.bin")
    with open(body_path, "wb") as f:
        f.write(grpc_frame(request.SerializeToString()))
    url = f"http://{HOST}:{port}{GRPC_PATH}"
    headers = {"content-type": "application/grpc", "te": "trailers",
               "authorization": f"Bearer {token}"}
    log_path = os.path.join(workdir, "h2load.log")
    requests_log = os.path.join(workdir, "h2load_requests.tsv")
    streams = max(1, args.grpc_streams)
    clients = max(1, args.connections // streams)
    one = run_h2load(url, body_path, headers, None, 1, 1, 1, log_path, requests_log)
    response_bytes = one["data_bytes"]  # one verified response, framed, as h2load counts it
    run_h2load(url, body_path, headers, 1, clients, streams, args.client_threads, log_path,
               requests_log)  # warm-up
    stats = run_h2load(url, body_path, headers, args.seconds, clients, streams,
                       args.client_threads, log_path, requests_log)
    latencies = request_latencies(requests_log)
    if latencies.size < stats["done"]:
        raise RuntimeError(f"h2load's log holds {latencies.size} requests, its summary "
                           f"{stats['done']}")
    # An error response (grpc-status != 0) carries no DATA frame: count the missing bodies.
    full_bodies = stats["data_bytes"] // response_bytes if response_bytes else 0
    bodiless = max(0, stats["succeeded"] - full_bodies)
    errors = (stats["failed"] + stats["errored"] + stats["timeout"] + stats["non2xx"]
              + bodiless + (1 if mismatch else 0))
    row = Row(label, rate=stats["rps"], requests=stats["done"], errors=errors,
              p50_s=_percentile(latencies, 50), p90_s=_percentile(latencies, 90),
              p99_s=_percentile(latencies, 99),
              mean_s=float(latencies.mean()) if latencies.size else None)
    row.notes.append(f"{clients} connections x {streams} stream(s); grpc-status checked "
                     f"once with grpcio (response {message_size} B), then by DATA bytes "
                     f"({stats['data_bytes']} = {full_bodies} x {response_bytes})")
    if mismatch:
        row.notes.append("WRONG NUMBERS: " + mismatch)
    if bodiless:
        row.notes.append(f"{bodiless} responses without a message body (gRPC errors)")
    return row


def _percentile(values: np.ndarray, q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values.size else None


# ------------------------------------------------------------------------------ in process
def time_calls(call, seconds: float, batch: int = 200):
    """Call ``call()`` for ``seconds``: (calls/s, mean s, per-call samples)."""
    for _ in range(batch):
        call()  # warm caches and lazy paths
    samples, calls = [], 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - t0) / batch)  # mean of one batch
        calls += batch
    elapsed = time.perf_counter() - began
    return calls / elapsed, elapsed / calls, np.asarray(samples)


def measure_in_process(registry_root: str, record: Dict[str, float], seconds: float):
    """Rows for predict_columns (when the predictor has it) and predict(frame)."""
    import pandas as pd

    from sparkml_aiaas.registry import ModelRegistry

    predictor = ModelRegistry(registry_root).load_predictor(f"{MODEL}@production")
    columns = {c: np.array([v], dtype=np.float64) for c, v in record.items()}
    frame = pd.DataFrame({c: [v] for c, v in record.items()})
    rows = []
    label = "in process predict_columns"
    if hasattr(predictor, "predict_columns"):
        rows.append(_in_process_row(label, lambda: predictor.predict_columns(columns), seconds))
    else:
        rows.append(Row(label, unavailable="the predictor has no predict_columns in this build"))
    rows.append(_in_process_row("in process predict(frame)", lambda: predictor.predict(frame),
                                seconds))
    return rows, predictor


def _in_process_row(label: str, call, seconds: float) -> Row:
    rate, mean, samples = time_calls(call, seconds)
    return Row(label, rate=rate, mean_s=mean, p50_s=_percentile(samples, 50),
               p90_s=_percentile(samples, 90), p99_s=_percentile(samples, 99),
               notes=["latencies: means of 200-call batches"])


def expected_outputs(predictor, record: Dict[str, float]) -> Dict[str, np.ndarray]:
    import pandas as pd

    out = predictor.predict(pd.DataFrame({c: [v] for c, v in record.items()}))
    return {c: np.asarray(out[c].iloc[0], dtype=np.float64) for c in out.columns}


# ------------------------------------------------------------------------------ report
def _time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def print_table(rows: List[Row], mlflow: Optional[Row]) -> None:
    base = mlflow.rate if mlflow is not None and mlflow.measured and not mlflow.errors else None
    print(f"  {'':<30} {'rate/s':>10} {'mean':>10} {'p50':>10} {'p90':>10} {'p99':>10} "
          f"{'errors':>7} {'vs mlflow':>9}")
    for row in rows:
        if not row.measured:
            print(f"  {row.label:<30} {row.unavailable}")
            continue
        ratio = (f"{row.rate / base:.1f}x" if base and row.errors is not None
                 and row is not mlflow else "")
        errors = "-" if row.errors is None else str(row.errors)
        print(f"  {row.label:<30} {row.rate:>10,.0f} {_time(row.mean_s):>10} "
              f"{_time(row.p50_s):>10} {_time(row.p90_s):>10} {_time(row.p99_s):>10} "
              f"{errors:>7} {ratio:>9}")
        for note in row.notes:
            print(f"  {'':<30}   {note}")


def target_checks(rows: Dict[str, Row]) -> List[tuple]:
    """[(target, 'met' | 'MISSED' | 'not measured', detail)]."""
    checks = []

    def check(name: str, row: Row, value, ok, detail) -> None:
        if not row.measured or value is None:
            checks.append((name, "not measured", "see the table" if row.unavailable else ""))
        else:
            checks.append((name, "met" if ok(value) else "MISSED", detail(value)))

    predictor = rows["predict_columns"] if rows["predict_columns"].measured else rows["predict"]
    check(f"predictor <= {TARGET_PREDICTOR_US:g} µs/record", predictor, predictor.mean_s,
          lambda v: v * 1e6 <= TARGET_PREDICTOR_US,
          lambda v: f"{predictor.label}: {_time(v)} mean")
    for key, target in (("v1", TARGET_REST_RPS), ("v2", TARGET_REST_RPS),
                        ("grpc", TARGET_GRPC_RPS)):
        row = rows[key]
        check(f"{row.label} >= {target:,.0f} req/s", row, row.rate,
              lambda v, t=target: v >= t, lambda v: f"{v:,.0f} req/s")
        check(f"{row.label} p99 <= {TARGET_P99_MS:g} ms", row, row.p99_s,
              lambda v: v * 1e3 <= TARGET_P99_MS, lambda v: f"p99 {_time(v)}")
        check(f"{row.label} 0 errors", row, row.errors, lambda v: v == 0,
              lambda v: f"{v} errors")
    # Every protocol of ours against mlflow's REST server, each in its own check: the
    # target holds for the slowest, not for whichever is quickest.
    mlflow = rows["mlflow"]
    for key in ("v1", "v2", "grpc"):
        ours = rows[key]
        name = f"{ours.label.split(' (')[0]} >= {TARGET_MLFLOW_RATIO:g}x mlflow"
        if mlflow.measured and ours.measured and mlflow.rate > 0 and not mlflow.errors:
            ratio = ours.rate / mlflow.rate
            checks.append((name, "met" if ratio >= TARGET_MLFLOW_RATIO else "MISSED",
                           f"{ratio:.1f}x ({ours.rate:,.0f} vs {mlflow.rate:,.0f} req/s, "
                           f"same load, same run)"))
        else:
            checks.append((name, "not measured", mlflow.unavailable or (
                f"mlflow had {mlflow.errors} errors" if mlflow.errors
                else f"{ours.label} not measured")))
    return checks


def print_checks(checks: List[tuple]) -> None:
    print("\ntargets (issue 18)")
    for name, verdict, detail in checks:
        print(f"  {verdict:<13} {name:<46} {detail}")


# ------------------------------------------------------------------------------ main
def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of each measured row (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 s per row")
    parser.add_argument("--connections", type=int, default=32,
                        help="requests in flight (default 32)")
    parser.add_argument("--features", type=int, default=30, help="feature columns (default 30)")
    parser.add_argument("--workers", type=int, default=None,
                        help="server processes: passed to serve when it has --workers, "
                             "and then to mlflow models serve (-w) too")
    parser.add_argument("--grpc-streams", type=int, default=1,
                        help="HTTP/2 streams per h2load connection; connections = "
                             "--connections / this (default 1)")
    parser.add_argument("--client-threads", type=int, default=1,
                        help="wrk / h2load threads (default 1: the load generator shares "
                             "the cores)")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--strict", action="store_true",
                        help="also exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (registry, logs, wrk/h2load output)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    if args.seconds <= 0 or args.connections < 1 or args.features < 1 or \
            args.grpc_streams < 1 or args.client_threads < 1 or \
            (args.workers is not None and args.workers < 1):
        parser.error("--seconds must be > 0; --connections, --features, --grpc-streams, "
                     "--client-threads and --workers must be >= 1")
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH (apt-get install wrk nghttp2-client)")
    return args


def measure_ours(args, workdir: str, registry_root: str, token: str, record, expected,
                 help_text: str, workers: Optional[int], rows: Dict[str, Row]) -> None:
    """Start our server, measure REST v1, REST v2 and gRPC, stop it."""
    from sparkml_aiaas.cluster import free_port

    grpc_port = free_port() if "--grpc-port" in help_text else None
    port = free_port()
    base = f"http://{HOST}:{port}"
    log_path = os.path.join(workdir, "serve.log")
    auth = {"Authorization": f"Bearer {token}"}
    process = start_ours(registry_root, os.path.join(workdir, "tokens.json"), port, grpc_port,
                         workers, log_path)
    try:
        wait_http(process, f"{base}/health", log_path, "sparkml-aiaas serve")
        print(f"server    sparkml-aiaas serve, pid {process.pid}, {base}"
              + (f", gRPC {HOST}:{grpc_port}" if grpc_port else "")
              + (f", {workers} workers" if workers else ", 1 process"), flush=True)
        rows["v1"] = measure_rest(
            "REST v1 /predict (wrk)", f"{base}/v1/models/{MODEL}/predict", v1_body(record),
            auth, v1_outputs, expected, args, workdir)
        rows["v2"] = measure_rest(
            "REST v2 /infer (wrk)", f"{base}/v2/models/{MODEL}/infer", v2_body(record),
            auth, v2_outputs, expected, args, workdir)
        if grpc_port is None:
            rows["grpc"] = Row("gRPC ModelInfer (h2load)", unavailable=(
                "not available in this build (serve has no --grpc-port)"))
        else:
            rows["grpc"] = measure_grpc(grpc_port, token, record, expected, args, workdir)
    finally:
        stop(process)


def measure_rest(label: str, url: str, body: bytes, headers: Dict[str, str], parse,
                 expected, args, workdir: str, ours: bool = True) -> Row:
    """Check one request's answer against the in-process predictor, then run wrk."""
    status, answer = http("POST", url, body, {"Content-Type": "application/json", **headers},
                          timeout=60.0)
    if status == 404 and ours:
        return Row(label, unavailable=f"not available in this build (POST {url} -> 404 "
                                      f"{answer[:120].decode(errors='replace')})")
    if status != 200:
        return Row(label, errors=1, ours=ours, unavailable=(
            f"first request failed: HTTP {status} {answer[:300].decode(errors='replace')}"))
    try:
        mismatch = compare_outputs(parse(answer), expected)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        mismatch = f"unreadable response ({type(exc).__name__}: {exc}): {answer[:200]!r}"
    row = measure_wrk(label, url, body, headers, args, workdir, ours=ours)
    if mismatch:
        row.errors += 1
        row.notes.append("WRONG NUMBERS: " + mismatch)
    return row


def measure_mlflow(args, workdir: str, registry_root: str, record, expected,
                   workers: Optional[int]) -> Row:
    """Serve the export with ``mlflow models serve`` and run the same wrk load on it."""
    from sparkml_aiaas.cluster import free_port

    label = "mlflow models serve (wrk)"
    port = free_port()
    log_path = os.path.join(workdir, "mlflow.log")
    process = None
    try:
        try:
            process = start_mlflow(registry_root, os.path.join(workdir, "mlflow_model"), port,
                                   workers, log_path)
            wait_http(process, f"http://{HOST}:{port}/ping", log_path, "mlflow models serve")
            from mlflow.version import VERSION

            print(f"mlflow    mlflow {VERSION} models serve --env-manager local, pid "
                  f"{process.pid}, http://{HOST}:{port}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported as the row, never skipped silently
            reason = failure_reason(log_tail(log_path, 20000) or str(exc))
            return Row(label, ours=False, unavailable=f"mlflow models serve did not start: "
                                                      f"{reason} (log: {log_path})")
        return measure_rest(label, f"http://{HOST}:{port}/invocations", mlflow_body(record),
                            {}, mlflow_outputs, expected, args, workdir, ours=False)
    finally:
        stop(process)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks that stop the servers


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    import sklearn

    from sparkml_aiaas import __version__
    from sparkml_aiaas.serving.tokens import create_token

    workdir = tempfile.mkdtemp(prefix="sparkml_bench_serving_")
    registry_root = os.path.join(workdir, "registry")
    try:
        cols = build_registry(registry_root, args.features)
        token = create_token(os.path.join(workdir, "tokens.json"), "bench", ["predict"])
        record = sample_record(cols)
        print(f"serving benchmark: sparkml_aiaas {__version__} ({os.path.abspath(REPO)}), "
              f"binary LogisticRegressionModel ({args.features} features, coefficients from "
              f"scikit-learn {sklearn.__version__}), {os.cpu_count()} CPUs", flush=True)
        print(f"load      {args.connections} requests in flight, 1 record/request, "
              f"{args.seconds:g} s per row (+1 s warm-up), wrk/h2load with "
              f"{args.client_threads} thread(s), all on {HOST}", flush=True)

        rows: Dict[str, Row] = {}
        in_process, predictor = measure_in_process(registry_root, record,
                                                   min(args.seconds, 5.0))
        rows["predict_columns"], rows["predict"] = in_process
        expected = expected_outputs(predictor, record)
        help_text = serve_options()
        # The same number of server processes on both sides: mlflow gets -w only when ours
        # has --workers.
        workers = args.workers if "--workers" in help_text else None
        if args.workers is not None and workers is None:
            print("note      serve has no --workers in this build: one process each (ours "
                  "and mlflow)", flush=True)
        measure_ours(args, workdir, registry_root, token, record, expected, help_text,
                     workers, rows)
        rows["mlflow"] = (Row("mlflow models serve (wrk)", ours=False,
                              unavailable="skipped (--skip-mlflow)")
                          if args.skip_mlflow else
                          measure_mlflow(args, workdir, registry_root, record, expected,
                                         workers))

        print()
        order = ["v1", "v2", "grpc", "mlflow", "predict_columns", "predict"]
        print_table([rows[k] for k in order], rows["mlflow"])
        checks = target_checks(rows)
        print_checks(checks)
        failed = [r for r in rows.values() if r.ours and r.errors]
        if failed:
            print("\nerror: " + "; ".join(f"{r.label}: {r.errors} error(s)" for r in failed),
                  file=sys.stderr)
            return 1
        if args.strict and any(verdict == "MISSED" for _, verdict, _ in checks):
            return 1
        return 0
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
