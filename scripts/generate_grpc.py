"""Regenerate sparkml_aiaas/serving/proto/grpc_inference_pb2{,_grpc}.py from its .proto.

    python scripts/generate_grpc.py            # rewrite the committed modules
    python scripts/generate_grpc.py --out DIR  # write them to DIR instead (the test does)

Needs grpcio-tools (the dev extra).  protoc's output is adjusted in two ways:

* The descriptors go into a descriptor pool of their own, not protobuf's default pool.
  The protocol's messages are named ``inference.*`` in every implementation, so a process
  that also imports another copy (tritonclient's, a KServe client's) would otherwise fail
  at import with "duplicate symbol 'inference.ServerLiveRequest'".  The wire format is
  unaffected: only the message names and field numbers travel.
* The service module imports the messages module by its package path, so that
  ``sparkml_aiaas.serving.proto.grpc_inference_pb2_grpc`` imports without a sys.path hack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(REPO, "sparkml_aiaas", "serving", "proto")
PROTO = "grpc_inference.proto"
PACKAGE = "sparkml_aiaas.serving.proto"
MODULES = ("grpc_inference_pb2.py", "grpc_inference_pb2_grpc.py")

_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = ("# A pool of its own (see scripts/generate_grpc.py): other copies of the protocol's\n"
             "# inference.* messages may be loaded in the same process.\n"
             "POOL = _descriptor_pool.DescriptorPool()\n"
             "DESCRIPTOR = POOL.AddSerializedFile(")
_FLAT_IMPORT = "import grpc_inference_pb2 as grpc__inference__pb2"
_PACKAGE_IMPORT = f"from {PACKAGE} import grpc_inference_pb2 as grpc__inference__pb2"


def _replace_once(text: str, old: str, new: str, module: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"error: protoc output for {module} changed shape: expected one "
                         f"{old!r}; update scripts/generate_grpc.py")
    return text.replace(old, new)


def generate(out_dir: str) -> None:
    """Run protoc on the .proto and write the adjusted modules into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="generate_grpc-") as work:
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
                   f"--python_out={work}", f"--grpc_python_out={work}",
                   os.path.join(PROTO_DIR, PROTO)]
        subprocess.run(command, check=True)
        with open(os.path.join(work, MODULES[0]), encoding="utf-8") as f:
            messages = _replace_once(f.read(), _DEFAULT_POOL, _OWN_POOL, MODULES[0])
        with open(os.path.join(work, MODULES[1]), encoding="utf-8") as f:
            service = _replace_once(f.read(), _FLAT_IMPORT, _PACKAGE_IMPORT, MODULES[1])
        os.makedirs(out_dir, exist_ok=True)
        for name, text in zip(MODULES, (messages, service)):
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text)
            shutil.copyfile(os.path.join(work, name), os.path.join(out_dir, name))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=PROTO_DIR,
                        help="where the modules go (default: beside the .proto)")
    args = parser.parse_args(argv)
    generate(args.out)
    print(f"wrote {', '.join(MODULES)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
