"""The committed gRPC modules are exactly what scripts/generate_grpc.py makes of the .proto,
import without warnings, and coexist with another copy of the protocol (tritonclient's)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "sparkml_aiaas", "serving", "proto")


def test_committed_modules_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="regenerating needs grpcio-tools (the dev extra)")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "generate_grpc.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("grpc_inference_pb2.py", "grpc_inference_pb2_grpc.py"):
        with open(os.path.join(PROTO_DIR, name), encoding="utf-8") as f:
            committed = f.read()
        assert (tmp_path / name).read_text(encoding="utf-8") == committed, (
            f"{name} is stale: run python scripts/generate_grpc.py and commit the result")


def test_modules_import_without_warnings_beside_tritonclient():
    pytest.importorskip("tritonclient.grpc")
    code = ("import tritonclient.grpc.service_pb2 as theirs\n"
            "from sparkml_aiaas.serving.proto import grpc_inference_pb2 as ours, "
            "grpc_inference_pb2_grpc\n"
            "request = ours.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])\n"
            "again = theirs.ModelInferRequest.FromString(request.SerializeToString())\n"
            "assert again.model_name == 'm' and list(again.raw_input_contents) == [b'x']\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
