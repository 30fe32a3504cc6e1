"""The one SparkSession factory.

Library code never builds a session; jobs, the CLI, notebooks and tests call
:func:`get_spark`.  On Databricks, inside ``spark-submit`` or in a notebook that
already has a session, the active session is reused untouched (its master and
configuration belong to the platform), whether classic or Spark Connect.  With a
``remote`` URL (or ``SPARK_REMOTE`` set, as Databricks Connect and ``pyspark
--remote`` do) a Spark Connect client session connects to that server: no JVM
starts here.  Otherwise an embedded ``local[*]`` session starts with defaults
that suit a laptop or a CI box.

A JVM started here logs WARN and above from its start: the package's
``resources/log4j2.properties`` is given to it at launch (``spark.driver.defaultJavaOptions``;
``spark-submit`` jobs get it with ``--driver-java-options``, see README).
``SPARKML_AIAAS_SPARK_LOG_LEVEL=INFO`` brings Spark's INFO lines back; a log4j2 configuration
of the user's own (``-Dlog4j2.configurationFile`` in the driver's Java options, a
``log4j2.properties`` in ``SPARK_CONF_DIR``) is left alone.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
from typing import Mapping, Optional

from sparkml_aiaas.errors import ConfigError

#: Defaults for a session we start ourselves.  Each one is overridable through
#: ``conf``.
LOCAL_DEFAULTS: dict[str, str] = {
    # Scoring and block building move data through Arrow.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # 200 shuffle partitions is a cluster default; on one machine it means
    # hundreds of tiny tasks, each costing ~60 ms of scheduling here.
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "",  # filled with the core count below
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    # Each Python worker computes on its own block; BLAS threads on top of
    # Spark's task parallelism only oversubscribe the cores.
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.executorEnv.OMP_NUM_THREADS": "1",
    "spark.executorEnv.MKL_NUM_THREADS": "1",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
}


#: Environment variable: the level of Spark's JVM logging (``INFO``, ``DEBUG``...; WARN
#: when unset).
LOG_LEVEL_ENV = "SPARKML_AIAAS_SPARK_LOG_LEVEL"
#: The JVM system property our log4j2 file reads its level from (the environment
#: variable's, checked, when we set it; the variable itself otherwise).  Not named
#: ``spark...``: Spark refuses executor Java options holding ``-Dspark`` anywhere.
_LEVEL_PROPERTY = "aiaas.log4j.level"
_LEVELS = ("OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL")
_LOG4J_FILES = tuple(f"log4j2{test}.{ext}" for test in ("", "-test")
                     for ext in ("properties", "xml", "json", "jsn", "yaml", "yml"))


def spark_log_level(explicit: Optional[str] = None) -> str:
    """The level for Spark's JVM logging: ``explicit``, else ``$SPARKML_AIAAS_SPARK_LOG_LEVEL``,
    else ``WARN``."""
    value = explicit if explicit is not None else (os.environ.get(LOG_LEVEL_ENV) or "WARN")
    level = value.strip().upper()
    if level == "WARNING":
        level = "WARN"
    if level not in _LEVELS:
        source = "log_level" if explicit is not None else LOG_LEVEL_ENV
        raise ConfigError(f"{source}={value!r} is not a log level: expected one of "
                          f"{', '.join(_LEVELS)}")
    return level


def log4j2_config_uri() -> Optional[str]:
    """The URI of the package's log4j2 configuration (``file:`` or, from a zip on
    ``--py-files``, ``jar:file:…!/``), or None when it cannot be named."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "resources", "log4j2.properties")
    if os.path.isfile(path):
        return pathlib.Path(path).as_uri()
    archive = getattr(sys.modules["sparkml_aiaas"].__spec__.loader, "archive", None)
    if archive and os.path.isfile(archive):  # zipimport: the package inside a .zip
        inner = os.path.relpath(path, archive).replace(os.sep, "/")
        return f"jar:{pathlib.Path(archive).as_uri()}!/{inner}"
    return None


def _names_log4j_config(options: Optional[str]) -> bool:
    return bool(options) and re.search(r"log4j2?\.configurationFile", options) is not None


def _spark_conf_dir() -> Optional[str]:
    if os.environ.get("SPARK_CONF_DIR"):
        return os.environ["SPARK_CONF_DIR"]
    if os.environ.get("SPARK_HOME"):
        return os.path.join(os.environ["SPARK_HOME"], "conf")
    return None


def _spark_defaults() -> dict[str, str]:
    """``spark-defaults.conf`` of the configuration folder spark-submit reads."""
    conf_dir = _spark_conf_dir()
    values: dict[str, str] = {}
    if not conf_dir:
        return values
    try:
        with open(os.path.join(conf_dir, "spark-defaults.conf"), encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                match = re.match(r"([^\s=:]+)\s*[=:\s]\s*(.*)", line)
                if match and not line.startswith(("#", "!")):
                    values[match.group(1)] = match.group(2)
    except OSError:
        pass
    return values


def _user_log4j_config(settings: Mapping[str, str]) -> bool:
    """Whether the user configured log4j2 for the JVM we are about to start."""
    defaults = _spark_defaults()
    for role in ("driver", "executor"):
        for kind in ("extraJavaOptions", "defaultJavaOptions"):
            key = f"spark.{role}.{kind}"
            if _names_log4j_config(settings.get(key)) or _names_log4j_config(defaults.get(key)):
                return True
    for variable in ("PYSPARK_SUBMIT_ARGS", "SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS",
                     "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
        if _names_log4j_config(os.environ.get(variable)):
            return True
    conf_dir = _spark_conf_dir()  # on spark-submit's classpath: log4j2 finds a file there
    return bool(conf_dir) and any(os.path.isfile(os.path.join(conf_dir, name))
                                  for name in _LOG4J_FILES)


def _quiet_launch(settings: dict[str, str], master: Optional[str], level: str) -> None:
    """Point the JVM we are about to launch (and local-cluster executors) at our log4j2
    file, ahead of the user's own Java options (which come after, and so win)."""
    uri = log4j2_config_uri()
    if uri is None:
        return
    options = f"-Dlog4j2.configurationFile={uri} -D{_LEVEL_PROPERTY}={level}"
    roles = ["driver"]
    if (master or "").startswith("local-cluster"):  # executors on this machine's files
        roles.append("executor")
    defaults = _spark_defaults()
    for role in roles:
        key = f"spark.{role}.defaultJavaOptions"
        theirs = settings.get(key) or defaults.get(key) or ""
        settings[key] = f"{options} {theirs}".strip()


def _core_count(master: str) -> int:
    if master.startswith("local["):
        inner = master[len("local[") : -1].split(",")[0]
        if re.fullmatch(r"[0-9]{1,6}", inner):  # ASCII only: int("²") raises, int("١") is 1
            return int(inner)
    return os.cpu_count() or 1


def _active_connect_session():
    """The active Spark Connect session of this thread, if the Connect client is loaded."""
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return None
    return module.SparkSession.getActiveSession()


def _classic_running() -> bool:
    module = sys.modules.get("pyspark.core.context")
    return module is not None and module.SparkContext._active_spark_context is not None


def _active_connect_session_at(url: str):
    """The active Spark Connect session if it talks to ``url``'s server: a job asked to
    run there (``--remote``) reuses it rather than refusing beside a classic session."""
    active = _active_connect_session()
    if active is None:
        return None
    try:
        from pyspark.sql.connect.client import DefaultChannelBuilder

        same = active.client._builder.endpoint == DefaultChannelBuilder(url).endpoint
    except Exception:  # noqa: BLE001 - another client's internals: no reuse
        return None
    return active if same else None


def check_remote_url(url: str) -> str:
    """``url`` if it is a Spark Connect URL (``sc://host[:port][/;param=value…]``)."""
    if not re.fullmatch(r"sc://[A-Za-z0-9._\-\[\]:]+(/.*)?", url or ""):
        raise ConfigError(f"remote {url!r} is not a Spark Connect URL: expected "
                          "sc://HOST[:PORT] (e.g. sc://127.0.0.1:15002)")
    return url


def _connect(url: str, app_name: str, conf: Optional[Mapping[str, object]]):
    try:  # checks grpcio & co. (PySparkImportError is an ImportError)
        import pyspark.sql.connect.session  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"Spark Connect ({url}) needs the Connect client libraries ({exc}): "
                          "pip install 'sparkml_aiaas[connect]'") from None
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url).appName(app_name)
    # Only runtime settings apply to a remote session; the cluster's are the server's.
    for key, value in (conf or {}).items():
        builder = builder.config(str(key), str(value).lower() if isinstance(value, bool)
                                 else str(value))
    return builder.getOrCreate()


def get_spark(
    app_name: str = "sparkml_aiaas",
    master: Optional[str] = None,
    conf: Optional[Mapping[str, object]] = None,
    log_level: Optional[str] = None,
    remote: Optional[str] = None,
):
    """Return the active SparkSession, or start an embedded one.

    Parameters
    ----------
    app_name : str
        Application name for a session we start.
    master : str, optional
        Spark master URL for a session we start (``local[*]`` when omitted).
        Ignored, with the active session returned as is, when a session is
        already running.
    conf : mapping, optional
        Extra Spark configuration for a session we start; wins over
        :data:`LOCAL_DEFAULTS`.
    log_level : str, optional
        Log level of Spark's JVM logging in a session we start; ``$SPARKML_AIAAS_SPARK_LOG_LEVEL``
        or ``WARN`` when omitted (and then a log4j2 configuration of the user's own is left
        as it is).
    remote : str, optional
        A Spark Connect URL (``sc://host:port``); ``SPARK_REMOTE`` when omitted.  The
        session is then a Connect client: ``master`` and the local defaults do not apply,
        ``conf`` may hold runtime (SQL) settings only.

    Returns
    -------
    pyspark.sql.SparkSession
        A classic session or a Spark Connect one (``pyspark.sql.connect.session``).
    """
    remote = remote or os.environ.get("SPARK_REMOTE") or None
    if not remote:
        active = _active_connect_session()
        if active is not None and not _classic_running():
            return active
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("pyspark is not installed: pip install 'sparkml_aiaas[spark]' for "
                          "a local Spark, or use the runtime's own (Databricks)") from None

    if remote:
        check_remote_url(remote)
        active = _active_connect_session_at(remote)
        if active is not None:
            return active
        from pyspark import SparkContext

        if SparkContext._active_spark_context is not None:
            raise ConfigError(f"cannot connect to {remote}: this process already runs a "
                              "classic Spark session (stop it first, or unset SPARK_REMOTE)")
        return _connect(remote, app_name, conf)

    active = SparkSession.getActiveSession()
    if active is not None:
        return active

    # Python workers must run the interpreter the driver runs, or they import
    # a different (or no) sparkml_aiaas.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    # Under spark-submit the launcher already fixed the master and the
    # user's --conf values (the gateway port tells us we were launched so);
    # only an explicit ``master``/``conf`` from the caller overrides them.
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    settings: dict[str, str] = {}
    if not launched_by_submit:
        master = master or "local[*]"
        settings.update(LOCAL_DEFAULTS)
        settings["spark.default.parallelism"] = str(_core_count(master))
    for key, value in (conf or {}).items():
        settings[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)

    level = spark_log_level(log_level)
    set_level = True
    # Under spark-submit the JVM runs already, logging as spark-submit was told (README
    # passes our file with --driver-java-options): only the level after start-up is ours.
    if not launched_by_submit:
        if _user_log4j_config(settings):
            set_level = log_level is not None  # the user's own file decides
        else:
            _quiet_launch(settings, master, level)

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        if value != "":
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if set_level:
        spark.sparkContext.setLogLevel(level)
    return spark
