"""A Spark standalone cluster from pip's pyspark, on loopback, for tests, CI and laptops.

    with StandaloneCluster(work_dir, workers=2, cores=1, memory="1g") as cluster:
        wheel = build_wheel(dist_dir)
        subprocess.run([spark_submit(), "--master", cluster.master_url,
                        "--conf", "spark.driver.host=127.0.0.1",
                        "--py-files", wheel, "jobs/train.py", "--config", "conf/train.yaml"])

The master and each worker are ``$SPARK_HOME/bin/spark-class`` processes (``SPARK_HOME``
is the installed pyspark package, which ships ``bin/`` and the jars), each started in its own
session, so its process group holds the JVM and everything it forks (a worker's executors and
their Python workers): :meth:`StandaloneCluster.stop` signals the groups (SIGTERM, then
SIGKILL) and waits until every recorded pid is gone.  Ports are free ones chosen by binding
port 0; logs and the workers' work and local directories go under ``work_dir``.
:meth:`StandaloneCluster.start` returns once the master's web UI JSON
(``http://127.0.0.1:<ui port>/json/``) lists the expected number of ALIVE workers, and fails
with the tail of every log otherwise.

No pyspark import here: the module only starts and stops processes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Mapping, Optional

from sparkml_aiaas.errors import SparkmlAiaasError

#: The file :meth:`StandaloneCluster.start` writes into ``work_dir``.
STATE_FILE = "cluster.json"


class ClusterError(SparkmlAiaasError, RuntimeError):
    """The cluster could not be started, reached or stopped (the message says which and why)."""


# ------------------------------------------------------------------------- locations


def spark_home(explicit: Optional[str] = None) -> str:
    """The Spark installation whose ``bin/spark-class`` starts the daemons.

    ``explicit`` if given, else the installed pyspark package (pip's pyspark is a full Spark
    distribution: ``bin/``, ``jars/``).  ``$SPARK_HOME`` is deliberately not consulted: a
    cluster of another Spark version than the driver's pyspark fails in confusing ways.
    """
    if explicit is None:
        try:
            import importlib.util

            spec = importlib.util.find_spec("pyspark")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            raise ClusterError("pyspark is not installed: pip install pyspark (or pass spark_home)")
        explicit = os.path.dirname(spec.origin)
    home = os.path.abspath(explicit)
    if not os.path.isfile(os.path.join(home, "bin", "spark-class")):
        raise ClusterError(f"{home} has no bin/spark-class: not a Spark installation")
    return home


_spark_home = spark_home


def spark_submit(home: Optional[str] = None) -> str:
    """Path of ``spark-submit``: the one pip put beside this interpreter, else ``home``'s."""
    if home is None:
        beside = os.path.join(os.path.dirname(sys.executable), "spark-submit")
        if os.path.isfile(beside):
            return beside
    return os.path.join(spark_home(home), "bin", "spark-submit")


def _check_java(env: Mapping[str, str]) -> None:
    java_home = env.get("JAVA_HOME")
    if java_home and os.path.isfile(os.path.join(java_home, "bin", "java")):
        return
    if shutil.which("java", path=env.get("PATH")) is None:
        raise ClusterError("no Java found (set JAVA_HOME or put java on PATH): Spark needs "
                           "Java 17 or 21")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (Linux), or None: with the pid it
    identifies a process across pid reuse."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_alive(pid: int, start_time: Optional[int] = None) -> bool:
    """Whether ``pid`` runs (a zombie does not count); with ``start_time``, whether it is
    still that same process."""
    if os.path.isdir("/proc"):
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start_time is None or int(fields[19]) == start_time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_group_members(pgid: int) -> List[int]:
    """The live pids whose process group is ``pgid`` (Linux ``/proc``; zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isascii() and entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry))
    return sorted(members)


def _signal_group(entry: Mapping[str, int], sig: int) -> None:
    pid, pgid = int(entry["pid"]), int(entry.get("pgid", entry["pid"]))
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(entries: Iterable[Mapping[str, int]], timeout: float = 30.0,
                   popens: Iterable[subprocess.Popen] = ()) -> List[int]:
    """Stop processes and their process groups: SIGTERM, wait up to ``timeout`` s, SIGKILL.

    ``entries`` are ``{"pid", "pgid", "start_time"}`` mappings (``pgid`` defaults to the pid;
    with ``start_time``, a pid now belonging to another process is left alone).  Once the
    leaders are gone, whatever is left in their groups (a worker's executors and their Python
    workers) is SIGKILLed too.  ``popens`` are reaped as they exit.  Returns the leader pids
    that needed SIGKILL; raises :class:`ClusterError` if a process survives.
    """
    popens = list(popens)
    live = [dict(e) for e in entries if process_alive(int(e["pid"]), e.get("start_time"))]
    groups = [int(e.get("pgid", e["pid"])) for e in live]
    for entry in live:
        _signal_group(entry, signal.SIGTERM)

    def remaining(deadline: float) -> List[int]:
        while True:
            for proc in popens:
                proc.poll()
            left = [int(e["pid"]) for e in live
                    if process_alive(int(e["pid"]), e.get("start_time"))]
            if os.path.isdir("/proc"):
                left += [p for g in groups for p in process_group_members(g) if p not in left]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.2)

    left = remaining(time.monotonic() + timeout)
    killed = [int(e["pid"]) for e in live if int(e["pid"]) in left]
    if left:
        for entry in live:
            _signal_group(entry, signal.SIGKILL)
        left = remaining(time.monotonic() + 15.0)
    if left:
        raise ClusterError(f"processes {left} survived SIGKILL")
    return killed


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------- the cluster


class StandaloneCluster:
    """A standalone master and ``workers`` workers on ``host``, started from pip's pyspark.

    Parameters
    ----------
    work_dir : str
        Logs (``master.log``, ``worker-<i>.log``), each worker's ``work`` (executor stdout and
        stderr, fetched files) and ``local`` (shuffle, block files) folders, and the state file
        ``cluster.json``.
    workers, cores, memory : int, int, str
        Number of workers, and the cores and memory each offers to executors (``"1g"``).
    daemon_memory : str
        Heap of the master and worker JVMs themselves (``SPARK_DAEMON_MEMORY``).
    start_timeout : float
        Seconds :meth:`start` waits for the master and for every worker to be ALIVE.
    env : mapping, optional
        Extra environment for the daemons (and so for the executors they start).

    Attributes
    ----------
    master_url : str
        ``spark://host:port``, for ``spark-submit --master``.
    webui_url : str
        The master's web UI (its JSON status is at ``webui_url + "/json/"``).
    """

    def __init__(self, work_dir: str, workers: int = 2, cores: int = 1, memory: str = "1g",
                 host: str = "127.0.0.1", daemon_memory: str = "512m",
                 spark_home: Optional[str] = None, start_timeout: float = 180.0,
                 env: Optional[Mapping[str, str]] = None):
        if workers < 1 or cores < 1:
            raise ClusterError(f"need at least one worker with one core, got workers={workers} "
                               f"cores={cores}")
        self.work_dir = os.path.abspath(work_dir)
        self.workers, self.cores, self.memory = int(workers), int(cores), str(memory)
        self.host, self.daemon_memory = host, daemon_memory
        self.spark_home = _spark_home(spark_home)
        self.start_timeout = float(start_timeout)
        self.extra_env = dict(env or {})
        self.master_url: Optional[str] = None
        self.webui_url: Optional[str] = None
        self._procs: Dict[str, subprocess.Popen] = {}
        self._records: Dict[str, dict] = {}
        self._logs: Dict[str, str] = {}

    # -- lifecycle

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "StandaloneCluster":
        """Start the master, then the workers; return once all workers are ALIVE."""
        if self._records:
            raise ClusterError("this cluster is already started")
        os.makedirs(self.work_dir, exist_ok=True)
        env = self._env()
        _check_java(env)
        master_port, webui_port = free_port(self.host), free_port(self.host)
        self.master_url = f"spark://{self.host}:{master_port}"
        self.webui_url = f"http://{self.host}:{webui_port}"
        try:
            self._launch("master", ["org.apache.spark.deploy.master.Master",
                                    "--host", self.host, "--port", str(master_port),
                                    "--webui-port", str(webui_port)], env)
            self._wait(lambda status: status.get("status") == "ALIVE", "the master to be ALIVE")
            for i in range(1, self.workers + 1):
                worker_dir = os.path.join(self.work_dir, f"worker-{i}")
                os.makedirs(os.path.join(worker_dir, "work"), exist_ok=True)
                os.makedirs(os.path.join(worker_dir, "local"), exist_ok=True)
                worker_env = dict(env, SPARK_LOCAL_DIRS=os.path.join(worker_dir, "local"))
                self._launch(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host", self.host, "--cores", str(self.cores), "--memory", self.memory,
                    "--webui-port", str(free_port(self.host)),
                    "--work-dir", os.path.join(worker_dir, "work"), self.master_url], worker_env)
            self.wait_for_workers(self.workers)
        except BaseException:
            self.stop()
            raise
        self.write_state(os.path.join(self.work_dir, STATE_FILE))
        return self

    def stop(self, timeout: float = 30.0) -> List[int]:
        """Stop every process this cluster started (their whole process groups), by pid.

        Returns the pids that needed SIGKILL.  Idempotent.
        """
        records, procs = list(self._records.values()), list(self._procs.values())
        self._records, self._procs = {}, {}
        if not records:
            return []
        return stop_processes(records, timeout=timeout, popens=procs)

    # -- state

    @property
    def pids(self) -> Dict[str, int]:
        """``{"master": pid, "worker-1": pid, ...}`` of the running daemons."""
        return {name: record["pid"] for name, record in self._records.items()}

    @property
    def logs(self) -> Dict[str, str]:
        return dict(self._logs)

    def state(self) -> dict:
        return {"master_url": self.master_url, "webui_url": self.webui_url,
                "work_dir": self.work_dir, "spark_home": self.spark_home,
                "processes": dict(self._records), "logs": dict(self._logs)}

    def write_state(self, path: str) -> str:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state(), f, indent=2)
        os.replace(tmp, path)
        return path

    def master_status(self, timeout: float = 5.0) -> dict:
        """The master's status (``workers``, ``aliveworkers``, ``activeapps``, ...) from its
        web UI's JSON endpoint."""
        if self.webui_url is None:
            raise ClusterError("the cluster is not started")
        with urllib.request.urlopen(self.webui_url + "/json/", timeout=timeout) as response:
            return json.loads(response.read().decode())

    def alive_workers(self) -> List[dict]:
        return [w for w in self.master_status().get("workers", []) if w.get("state") == "ALIVE"]

    def wait_for_workers(self, count: Optional[int] = None,
                         timeout: Optional[float] = None) -> List[dict]:
        """Wait until the master lists ``count`` (default: all) ALIVE workers; return them."""
        count = self.workers if count is None else count
        status = self._wait(
            lambda s: sum(w.get("state") == "ALIVE" for w in s.get("workers", [])) >= count,
            f"{count} ALIVE worker(s)", timeout)
        return [w for w in status["workers"] if w.get("state") == "ALIVE"]

    # -- internals

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        # A daemon started from inside a PySpark driver must not think it is one.
        for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_HOME"):
            env.pop(key, None)
        env.update(SPARK_HOME=self.spark_home, SPARK_LOCAL_IP=self.host,
                   SPARK_DAEMON_MEMORY=self.daemon_memory)
        env.update(self.extra_env)
        return env

    def _launch(self, name: str, args: List[str], env: Mapping[str, str]) -> None:
        log = os.path.join(self.work_dir, f"{name}.log")
        self._logs[name] = log
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [os.path.join(self.spark_home, "bin", "spark-class"), *args], env=dict(env),
                cwd=self.work_dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        self._procs[name] = proc
        # spark-class execs the JVM, so the pid is the JVM's; the session makes it a group
        # leader and its group holds whatever it forks.
        self._records[name] = {"pid": proc.pid, "pgid": proc.pid,
                               "start_time": process_start_time(proc.pid)}
        # Recorded at once: whatever happens to this process later, `stop` finds the pids.
        self.write_state(os.path.join(self.work_dir, STATE_FILE))

    def _wait(self, ready, what: str, timeout: Optional[float] = None) -> dict:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last: object = "no answer yet"
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited with status {proc.returncode} while "
                                       f"waiting for {what}\n" + self._log_tails())
            try:
                status = self.master_status(timeout=5.0)
                if ready(status):
                    return status
                last = {k: status.get(k) for k in ("status", "aliveworkers")}
                last["workers"] = [(w.get("id"), w.get("state")) for w in status.get("workers", [])]
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out waiting for {what} at {self.webui_url}/json/ "
                                   f"(last: {last})\n" + self._log_tails())
            time.sleep(0.5)

    def _log_tails(self) -> str:
        return "\n".join(f"--- {name}: {path} (tail) ---\n{_tail(path)}"
                         for name, path in self._logs.items())


def stop_from_state(path: str, timeout: float = 30.0) -> List[int]:
    """Stop the processes a state file written by :meth:`StandaloneCluster.start` records
    (e.g. from another process); pids now running something else are left alone.  Returns the
    pids that needed SIGKILL."""
    try:
        with open(path) as f:
            state = json.load(f)
    except OSError as exc:
        raise ClusterError(f"cannot read the cluster state {path!r}: {exc}") from exc
    return stop_processes(state.get("processes", {}).values(), timeout=timeout)


# ------------------------------------------------------------------------- the wheel


def project_root() -> str:
    """The source checkout this package was imported from (holds ``pyproject.toml``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(root)
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        raise ClusterError(f"{root} has no pyproject.toml: build the wheel from a source "
                           "checkout (or pass project_root)")
    return root


_SOURCE_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "MANIFEST.in",
                 "LICENSE", "LICENSE.txt", "NOTICE")


def build_wheel(out_dir: str, root: Optional[str] = None, python: Optional[str] = None,
                timeout: float = 600.0) -> str:
    """Build this package's wheel into ``out_dir`` and return its path.

    Runs ``pip wheel --no-deps --no-build-isolation --no-index`` (no network: the build
    backend, setuptools, comes from the running environment) on a copy of the project's
    metadata files and ``sparkml_aiaas/``, so the checkout gets no ``build/`` folder and
    concurrent builds do not collide.  The wheel is pure Python (``py3-none-any``).
    """
    root = os.path.abspath(root or project_root())
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        raise ClusterError(f"{root} has no pyproject.toml: not this package's source checkout")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="sparkml_aiaas-wheel-")
    try:
        for name in _SOURCE_FILES:
            if os.path.isfile(os.path.join(root, name)):
                shutil.copy2(os.path.join(root, name), staging)
        shutil.copytree(os.path.join(root, "sparkml_aiaas"),
                        os.path.join(staging, "sparkml_aiaas"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        before = set(glob.glob(os.path.join(out_dir, "*.whl")))
        command = [python or sys.executable, "-m", "pip", "wheel", "--no-deps",
                   "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                   "--wheel-dir", out_dir, staging]
        try:
            run = subprocess.run(command, cwd=staging, capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"building the wheel took longer than {timeout:.0f} s") from exc
        if run.returncode != 0:
            raise ClusterError(f"building the wheel failed ({' '.join(command)}):\n"
                               + (run.stdout + run.stderr)[-4000:])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    wheels = glob.glob(os.path.join(out_dir, "sparkml_aiaas-*.whl"))
    fresh = [w for w in wheels if w not in before] or wheels
    if not fresh:
        raise ClusterError(f"pip reported success but no sparkml_aiaas wheel is in {out_dir}")
    return max(fresh, key=os.path.getmtime)


def zip_for_py_files(wheel: str) -> str:
    """A copy of ``wheel`` named ``<same name>.zip`` beside it, for ``--py-files``.

    On standalone and Kubernetes, PySpark puts a ``--py-files`` entry on the executors'
    Python path only when its name ends in ``.zip``, ``.egg`` or ``.jar`` (``.py`` files land
    in the working directory); a ``.whl`` reaches the driver's path but not the executors'.  A
    pure-Python wheel is a zip archive with the packages at its root, so the same bytes under
    a ``.zip`` name are imported by zipimport everywhere.
    """
    if not wheel.endswith(".whl") or not os.path.isfile(wheel):
        raise ClusterError(f"not a wheel file: {wheel!r}")
    if not wheel.endswith("-none-any.whl"):
        raise ClusterError(f"{os.path.basename(wheel)} is not a pure-Python wheel: it cannot "
                           "be imported from a zip; ship an environment with --archives")
    target = wheel[: -len(".whl")] + ".zip"
    shutil.copyfile(wheel, target)
    return target
