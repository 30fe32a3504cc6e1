"""Start and stop a Spark standalone cluster (a master and workers from pip's pyspark) on
127.0.0.1, and build the package to ship to its executors.  See docs/cluster.md.

    python scripts/standalone_cluster.py start --state-dir /tmp/spark-cluster [--workers 2]
        [--cores 1] [--memory 1g]        # prints the master URL (spark://127.0.0.1:PORT)
    python scripts/standalone_cluster.py status --state-dir /tmp/spark-cluster
    python scripts/standalone_cluster.py wheel --out dist   # prints the file for --py-files
    python scripts/standalone_cluster.py stop --state-dir /tmp/spark-cluster

``start`` returns once every worker is ALIVE, leaving the daemons running; their logs, work
and local folders and ``cluster.json`` (pids, URLs) are in the state directory.  ``stop``
reads ``cluster.json`` and stops those pids and their process groups (executors included):
SIGTERM, then SIGKILL.  A thin shell over :mod:`sparkml_aiaas.cluster.standalone`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

if importlib.util.find_spec("sparkml_aiaas") is None:  # run from a checkout without an install
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparkml_aiaas.cluster.standalone import (  # noqa: E402
    STATE_FILE,
    ClusterError,
    StandaloneCluster,
    build_wheel,
    process_alive,
    stop_from_state,
    zip_for_py_files,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="standalone_cluster.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser("start", help="start a master and workers; print the master URL")
    start.add_argument("--state-dir", required=True,
                       help="logs, work folders and cluster.json go here")
    start.add_argument("--workers", type=int, default=2)
    start.add_argument("--cores", type=int, default=1, help="cores each worker offers")
    start.add_argument("--memory", default="1g", help="memory each worker offers (e.g. 1g)")
    start.add_argument("--timeout", type=float, default=180.0,
                       help="seconds to wait for every worker to be ALIVE")
    stop = commands.add_parser("stop", help="stop the processes recorded in cluster.json")
    stop.add_argument("--state-dir", required=True)
    stop.add_argument("--timeout", type=float, default=30.0,
                      help="seconds between SIGTERM and SIGKILL")
    status = commands.add_parser("status", help="print the recorded processes and whether "
                                 "they run")
    status.add_argument("--state-dir", required=True)
    wheel = commands.add_parser("wheel", help="build the package's wheel and its .zip copy "
                                "for --py-files; print the .zip's path")
    wheel.add_argument("--out", required=True, help="folder for the wheel")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "start":
            state = os.path.join(args.state_dir, STATE_FILE)
            if os.path.exists(state):
                with open(state) as f:
                    recorded = json.load(f).get("processes", {}).values()
                if any(process_alive(p["pid"], p.get("start_time")) for p in recorded):
                    raise ClusterError(f"{state} records a running cluster: stop it first")
            cluster = StandaloneCluster(args.state_dir, workers=args.workers, cores=args.cores,
                                        memory=args.memory, start_timeout=args.timeout).start()
            print(f"started master {cluster.pids['master']} and {args.workers} worker(s) "
                  f"{[cluster.pids[f'worker-{i}'] for i in range(1, args.workers + 1)]}; "
                  f"web UI {cluster.webui_url}; state {state}", file=sys.stderr)
            print(cluster.master_url)
        elif args.command == "stop":
            state = os.path.join(args.state_dir, STATE_FILE)
            killed = stop_from_state(state, timeout=args.timeout)
            os.replace(state, state + ".stopped")
            print(f"stopped the cluster recorded in {state}"
                  + (f" (SIGKILL needed for {killed})" if killed else ""), file=sys.stderr)
        elif args.command == "status":
            with open(os.path.join(args.state_dir, STATE_FILE)) as f:
                state = json.load(f)
            print(state["master_url"], state["webui_url"])
            for name, proc in state["processes"].items():
                alive = process_alive(proc["pid"], proc.get("start_time"))
                print(f"{name:10s} pid {proc['pid']:>7d}  {'running' if alive else 'gone'}")
        else:
            wheel = build_wheel(args.out)
            print(f"built {wheel}", file=sys.stderr)
            print(zip_for_py_files(wheel))
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
