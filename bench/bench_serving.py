"""Serving benchmark: `sparkml-aiaas serve` under 32 concurrent clients vs the in-process predictor.

    python bench/bench_serving.py                               # 32 clients, 20 s, 1 record/request
    python bench/bench_serving.py --seconds 5 --records-per-request 100

A scikit-learn LogisticRegression (``--features`` columns, synthetic data; no Spark) is
wrapped with ``sparkml_aiaas.models.wrap_model``, registered in a temporary registry as
``bench@production``, and served by ``sparkml-aiaas serve`` started as a subprocess (uvicorn,
one process, 127.0.0.1, a free port) with one predict token.  Then, in this process:

  served        ``--clients`` threads, each with its own keep-alive ``httpx.Client``, POST
                ``/v1/models/bench/predict`` with ``--records-per-request`` records for
                ``--seconds``: requests/s, rows/s, latency percentiles, errors (non-200
                responses and exceptions; any error makes the exit status 1)
  in-process    the same predictor (``ModelRegistry.load_predictor``) called in a loop on the
                same batch size for the same time, as the server calls it per request
                (``predict(pandas.DataFrame.from_records(records))``), one thread

The ratio of the two rows/s is the cost of HTTP, JSON, authentication and validation.  The
clients run on the same machine as the server and share its cores; both are in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MODEL = "bench"


def build_registry(root: str, features: int) -> list:
    """Register a fitted, wrapped sklearn LogisticRegression as bench@production."""
    from sklearn.linear_model import LogisticRegression

    from sparkml_aiaas.models import wrap_model
    from sparkml_aiaas.registry import ModelRegistry

    cols = [f"x{j}" for j in range(features)]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5_000, features))
    y = (X @ rng.normal(size=features) + rng.normal(size=5_000) > 0).astype(int)
    registry = ModelRegistry(root)
    version = registry.register(wrap_model(LogisticRegression(max_iter=200).fit(X, y),
                                           featuresCols=cols), MODEL)
    registry.set_alias(MODEL, "production", version)
    return cols


def make_bodies(cols: list, records_per_request: int, count: int = 16) -> list:
    rng = np.random.default_rng(1)
    bodies = []
    for _ in range(count):
        values = rng.normal(size=(records_per_request, len(cols)))
        records = [{c: float(v) for c, v in zip(cols, row)} for row in values]
        bodies.append((records, json.dumps({"records": records}).encode()))
    return bodies


def start_server(registry_root: str, tokens_file: str, port: int, log_path: str):
    command = [sys.executable, "-m", "sparkml_aiaas", "serve", "--registry", registry_root,
               "--model", f"{MODEL}@production", "--tokens-file", tokens_file,
               "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child has its own copy of the descriptor


def wait_healthy(process, base_url: str, log_path: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}:\n"
                               + open(log_path, errors="replace").read()[-4000:])
        try:
            if httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s:\n"
                       + open(log_path, errors="replace").read()[-4000:])


def stop_server(process) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()  # SIGTERM to the server's pid: uvicorn shuts down gracefully
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def run_clients(base_url: str, token: str, bodies: list, clients: int, seconds: float):
    """``clients`` threads POSTing for ``seconds``; (latencies, errors, messages, elapsed)."""
    import httpx

    url = f"{base_url}/v1/models/{MODEL}/predict"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies = [[] for _ in range(clients)]
    errors = [0] * clients
    messages: list = []
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        with httpx.Client(headers=headers, timeout=60.0) as session:
            start.wait()
            n = i
            while time.perf_counter() < deadline[0]:
                body = bodies[n % len(bodies)][1]
                n += 1
                began = time.perf_counter()
                try:
                    response = session.post(url, content=body)
                    ok = response.status_code == 200
                    if not ok and len(messages) < 5:
                        messages.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    ok = False
                    if len(messages) < 5:
                        messages.append(f"{type(exc).__name__}: {exc}")
                if ok:
                    latencies[i].append(time.perf_counter() - began)
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return [x for per in latencies for x in per], sum(errors), messages, elapsed


def run_in_process(predictor, bodies: list, seconds: float):
    """The server's per-request computation, in a loop: (latencies, elapsed)."""
    import pandas as pd

    latencies = []
    n = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        records = bodies[n % len(bodies)][0]
        n += 1
        t0 = time.perf_counter()
        predictor.predict(pd.DataFrame.from_records(records))
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - began


def row(label: str, requests: int, rows_per_request: int, seconds: float, latencies: list,
        errors) -> float:
    rps = requests / seconds
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1000.0 if latencies
                     else (float("nan"),) * 3)
    print(f"  {label:<14} {rps:>12,.0f} {rps * rows_per_request:>12,.0f} {p50:>9.2f} "
          f"{p95:>9.2f} {p99:>9.2f} {errors:>8}", flush=True)
    return rps * rows_per_request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long each side runs (default 20)")
    parser.add_argument("--clients", type=int, default=32,
                        help="concurrent client threads (default 32)")
    parser.add_argument("--records-per-request", type=int, default=1)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary registry, tokens file and server log")
    args = parser.parse_args()
    if args.seconds <= 0 or args.clients < 1 or args.records_per_request < 1 or \
            args.features < 1:
        parser.error("--seconds must be > 0; --clients, --records-per-request and --features "
                     "must be >= 1")

    import sklearn

    from sparkml_aiaas import __version__
    from sparkml_aiaas.cluster import free_port  # a port the kernel has free on loopback
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.serving.tokens import create_token

    workdir = tempfile.mkdtemp(prefix="sparkml_bench_serving_")
    registry_root = os.path.join(workdir, "registry")
    tokens_file = os.path.join(workdir, "tokens.json")
    log_path = os.path.join(workdir, "server.log")
    process = None
    try:
        cols = build_registry(registry_root, args.features)
        token = create_token(tokens_file, "bench", ["predict"])
        bodies = make_bodies(cols, args.records_per_request)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        process = start_server(registry_root, tokens_file, port, log_path)
        wait_healthy(process, base_url, log_path)

        import httpx

        warm = httpx.post(f"{base_url}/v1/models/{MODEL}/predict", content=bodies[0][1],
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"}, timeout=60.0)
        if warm.status_code != 200:  # also pays the token's one scrypt before timing
            raise RuntimeError(f"warm-up request failed: HTTP {warm.status_code} {warm.text}")

        print(f"serving benchmark: sparkml_aiaas {__version__}, scikit-learn {sklearn.__version__} "
              f"LogisticRegression ({args.features} features), {os.cpu_count()} CPUs", flush=True)
        print(f"server    sparkml-aiaas serve (uvicorn, 1 process, pid {process.pid}) on "
              f"{base_url}", flush=True)
        print(f"load      {args.clients} clients (threads, keep-alive httpx), "
              f"{args.records_per_request} record(s)/request, {args.seconds:g} s per side",
              flush=True)
        print()
        print(f"  {'':<14} {'requests/s':>12} {'rows/s':>12} {'p50 ms':>9} {'p95 ms':>9} "
              f"{'p99 ms':>9} {'errors':>8}")
        latencies, errors, messages, elapsed = run_clients(
            base_url, token, bodies, args.clients, args.seconds)
        served = row("served", len(latencies), args.records_per_request, elapsed, latencies,
                     errors)
        stop_server(process)

        predictor = ModelRegistry(registry_root).load_predictor(f"{MODEL}@production")
        local_latencies, local_elapsed = run_in_process(predictor, bodies, args.seconds)
        local = row("in-process", len(local_latencies), args.records_per_request,
                    local_elapsed, local_latencies, "-")
        print()
        if served > 0 and local > 0:
            print(f"  served vs in-process   {served / local:.3f}× the rows/s "
                  f"(HTTP + JSON + auth overhead factor {local / served:.1f}×)")
        if errors:
            print(f"\nerror: {errors} failed request(s); first: " + " | ".join(messages),
                  file=sys.stderr)
            return 1
        return 0
    finally:
        stop_server(process)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
