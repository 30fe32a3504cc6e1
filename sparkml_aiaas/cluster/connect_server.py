"""A Spark Connect server from pip's pyspark, as a separate process (tests, benchmarks,
a laptop standing in for Databricks serverless).

pip's pyspark ships the server (``jars/spark-connect_*.jar``); ``spark-submit`` starts it
with a master of its own (``local[2]`` by default, or a standalone cluster's URL), and
clients reach it with ``SparkSession.builder.remote(server.url)``.  The server's Python
workers run ``python`` (this interpreter by default), which must have this package
installed.  No pyspark import here: this only starts and stops a process.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Mapping, Optional

from sparkml_aiaas.cluster.standalone import (ClusterError, _check_java, _tail, free_port,
                                              process_start_time, spark_home, stop_processes)

#: Settings of a server we start (each overridable through ``conf``): quiet, small
#: shuffles, one BLAS thread per task, reused Python workers (as session.LOCAL_DEFAULTS).
SERVER_DEFAULTS: Dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.python.worker.reuse": "true",
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.executorEnv.OMP_NUM_THREADS": "1",
    "spark.executorEnv.MKL_NUM_THREADS": "1",
}


def connect_jar(home: Optional[str] = None) -> str:
    """The Spark Connect server jar of ``home`` (pip's pyspark by default)."""
    jars = sorted(glob.glob(os.path.join(spark_home(home), "jars", "spark-connect_*.jar")))
    if not jars:
        raise ClusterError(f"no jars/spark-connect_*.jar in {spark_home(home)}: this Spark "
                           "distribution has no Spark Connect server (pyspark >= 4.0 has one)")
    return jars[0]


class ConnectServer:
    """``with ConnectServer(log_dir) as server: SparkSession.builder.remote(server.url)``.

    Parameters
    ----------
    log_dir : str
        Where the server's log goes (``connect-server.log``).
    master : str
        The server's own master (``local[2]``, ``local-cluster[2,1,1024]``, ``spark://…``).
    port : int, optional
        Port on 127.0.0.1 (a free one by default).
    conf : mapping, optional
        Extra Spark settings (win over :data:`SERVER_DEFAULTS`).
    driver_memory : str
        The server's JVM heap (it is the driver of every client's jobs).
    python : str, optional
        Interpreter of the server's Python workers (this one by default).
    """

    def __init__(self, log_dir: str, master: str = "local[2]", port: Optional[int] = None,
                 conf: Optional[Mapping[str, object]] = None, driver_memory: str = "1g",
                 python: Optional[str] = None, start_timeout: float = 180.0):
        self.log_dir = os.path.abspath(log_dir)
        self.master = master
        self.host = "127.0.0.1"
        self.port = int(port) if port else free_port(self.host)
        self.conf = dict(SERVER_DEFAULTS, **{str(k): str(v) for k, v in (conf or {}).items()})
        self.driver_memory = driver_memory
        self.python = python or sys.executable
        self.start_timeout = start_timeout
        self.log = os.path.join(self.log_dir, "connect-server.log")
        self._proc: Optional[subprocess.Popen] = None
        self._record: Optional[dict] = None

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    def command(self) -> List[str]:
        args = [os.path.join(spark_home(), "bin", "spark-submit"), "--master", self.master,
                "--driver-memory", self.driver_memory,
                "--conf", f"spark.connect.grpc.binding.address={self.host}",
                "--conf", f"spark.connect.grpc.binding.port={self.port}"]
        for key, value in self.conf.items():
            args += ["--conf", f"{key}={value}"]
        return args + ["--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
                       connect_jar()]

    def start(self) -> "ConnectServer":
        os.makedirs(self.log_dir, exist_ok=True)
        env = dict(os.environ)
        for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_HOME",
                    "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
            env.pop(key, None)
        env.update(PYSPARK_PYTHON=self.python, PYSPARK_DRIVER_PYTHON=self.python)
        if self.master.startswith("local"):
            # A Connect server's Python functions carry no spark.executorEnv.* (classic
            # sessions pass them with each function), and in local mode the workers are the
            # server's own children: give them the settings (one BLAS thread a task) here.
            env.update({key[len("spark.executorEnv."):]: value
                        for key, value in self.conf.items()
                        if key.startswith("spark.executorEnv.")})
        _check_java(env)
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(self.command(), env=env, cwd=self.log_dir,
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._record = {"pid": self._proc.pid, "pgid": self._proc.pid,
                        "start_time": process_start_time(self._proc.pid)}
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise ClusterError(f"the Spark Connect server exited with status "
                                   f"{self._proc.returncode} while starting\n{_tail(self.log)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise ClusterError(f"the Spark Connect server did not listen on {self.url} within "
                                   f"{self.start_timeout:.0f} s\n{_tail(self.log)}")
            time.sleep(0.25)

    def write_state(self, path: str) -> str:
        """Record the url and pid in ``path`` (read by ``stop_from_state`` in another process)."""
        with open(path, "w") as f:
            json.dump({"url": self.url, "log": self.log,
                       "processes": {"connect": self._record}}, f, indent=2)
        return path

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and everything it forked (its Python workers)."""
        if self._record is not None:
            stop_processes([self._record], timeout=timeout,
                           popens=[self._proc] if self._proc else [])
            self._record = None

    def __enter__(self) -> "ConnectServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
