"""Start and stop a Spark Connect server from pip's pyspark on 127.0.0.1 (a stand-in for
Databricks serverless or a cluster's Connect endpoint).  See docs/connect.md.

    python scripts/connect_server.py start --state-dir /tmp/spark-connect [--port 15002]
        [--master local[2]] [--driver-memory 2g]   # prints the URL (sc://127.0.0.1:PORT)
    python scripts/connect_server.py stop --state-dir /tmp/spark-connect

``start`` returns once the server listens, leaving it running; its log and
``connect.json`` (url, pid) are in the state directory.  ``stop`` stops that pid and its
process group (the server's Python workers): SIGTERM, then SIGKILL.  A thin shell over
:class:`sparkml_aiaas.cluster.connect_server.ConnectServer`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

if importlib.util.find_spec("sparkml_aiaas") is None:  # run from a checkout without an install
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparkml_aiaas.cluster.connect_server import ConnectServer  # noqa: E402
from sparkml_aiaas.cluster.standalone import ClusterError, stop_from_state  # noqa: E402

STATE_FILE = "connect.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="connect_server.py",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser("start", help="start a server; print its sc:// URL")
    start.add_argument("--state-dir", required=True, help="the log and connect.json go here")
    start.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    start.add_argument("--master", default="local[2]", help="the server's own master")
    start.add_argument("--driver-memory", default="2g", help="the server's JVM heap")
    stop = commands.add_parser("stop", help="stop the server recorded in connect.json")
    stop.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    state = os.path.join(args.state_dir, STATE_FILE)
    try:
        if args.command == "start":
            server = ConnectServer(args.state_dir, master=args.master, port=args.port,
                                   driver_memory=args.driver_memory).start()
            server.write_state(state)
            print(server.url)
        else:
            stop_from_state(state)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
