"""Sessions of either kind: get_spark's reuse and remote URLs, the CLI's --remote, the
quickstart on a Spark Connect server, and the one-line errors for a missing extra."""

import os
import subprocess
import sys

import pytest

from sparkml_aiaas.errors import ConfigError


def test_a_bad_remote_url_is_one_clear_error():
    from sparkml_aiaas.session import get_spark

    with pytest.raises(ConfigError, match=r"not a Spark Connect URL: expected sc://HOST"):
        get_spark(remote="http://127.0.0.1:15002")


def test_remote_beside_a_running_classic_session_is_refused(spark):
    from sparkml_aiaas.session import get_spark

    with pytest.raises(ConfigError, match="already runs a classic Spark session"):
        get_spark(remote="sc://127.0.0.1:1")


def test_config_validates_remote():
    from pydantic import ValidationError

    from sparkml_aiaas.config import SparkSettings

    assert SparkSettings(remote="sc://host:15002").remote == "sc://host:15002"
    with pytest.raises((ValidationError, ConfigError)):
        SparkSettings(remote="host:15002")


def test_get_spark_reuses_the_active_connect_session(connect):
    from sparkml_aiaas.session import get_spark
    from sparkml_aiaas.spark_env import is_connect

    assert get_spark() is connect and is_connect(connect)


def _run(args, env_extra=None, timeout=900):
    env = dict(os.environ, **(env_extra or {}))
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "sparkml_aiaas", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quickstart_runs_on_a_connect_server(connect_server, tmp_path):
    """README's quickstart with --remote, in a fresh process (no JVM of its own): every
    stage runs on the server, and the summary is the classic one."""
    out = _run(["quickstart", "--remote", connect_server.url, "--workdir", str(tmp_path)])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"(Spark Connect {connect_server.url})" in out.stdout
    assert "reloaded: identical predictions" in out.stdout
    assert "ingest      read 569, accepted 569, rejected 0" in out.stdout


def test_spark_remote_env_selects_the_server(connect_server, tmp_path):
    code = ("from sparkml_aiaas.session import get_spark\n"
            "from sparkml_aiaas.spark_env import is_connect\n"
            "from pyspark import SparkContext\n"
            "s = get_spark()\n"
            "print(is_connect(s), SparkContext._gateway is None, s.range(3).count())\n")
    env = dict(os.environ, SPARK_REMOTE=connect_server.url)
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["True", "True", "3"], out.stderr[-2000:]


def test_a_missing_spark_extra_names_it():
    """Without pyspark (a serving-only install) the estimators say which extra to install,
    and the Spark-free predictors still import."""
    code = ("import sys; sys.modules['pyspark'] = None\n"
            "from sparkml_aiaas.models import load_predictor\n"
            "try:\n"
            "    from sparkml_aiaas.models import LogisticRegression\n"
            "except ImportError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.startswith("MissingDependencyError pyspark is not installed"), out.stderr
    assert "sparkml_aiaas[spark]" in out.stdout
