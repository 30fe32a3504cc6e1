"""Spark's JVM logging: quiet from start-up by default, INFO back on request."""

import os
import subprocess
import sys

import pytest

from sparkml_aiaas import session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Starts a JVM the way get_spark does, in a process of its own (the test session's JVM runs
# already), and stops it.
_START = ("from sparkml_aiaas.session import get_spark\n"
          "spark = get_spark('log-test', master='local[1]')\n"
          "spark.stop()\n")


def _start(**env_overrides) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in (session.LOG_LEVEL_ENV, "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR")}
    env.update(env_overrides, PYTHONPATH=ROOT, PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    return subprocess.run([sys.executable, "-c", _START], env=env, capture_output=True,
                          text=True, timeout=300)


def _info_lines(text: str) -> list:
    return [line for line in text.splitlines() if " INFO " in line]


@pytest.mark.cluster
def test_get_spark_starts_quiet_and_the_env_var_brings_info_back():
    quiet = _start()
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert _info_lines(quiet.stderr) == [], _info_lines(quiet.stderr)[:5]
    assert "Using Spark's default log4j profile" not in quiet.stderr
    assert 'Setting default log level to "WARN"' not in quiet.stderr

    loud = _start(**{session.LOG_LEVEL_ENV: "INFO"})
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert any("INFO SparkContext: Running Spark version" in line
               for line in _info_lines(loud.stderr)), loud.stderr[-3000:]


def test_log4j2_file_is_shipped_and_named_by_absolute_uri():
    uri = session.log4j2_config_uri()
    assert uri is not None and uri.startswith("file:///")
    path = os.path.join(os.path.dirname(session.__file__), "resources", "log4j2.properties")
    text = open(path, encoding="utf-8").read()
    assert "rootLogger.level = ${sys:aiaas.log4j.level:-${env:" in text


def test_launch_options_leave_the_users_own_log4j_config_alone(monkeypatch, tmp_path):
    for name in ("PYSPARK_SUBMIT_ARGS", "SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS",
                 "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))

    settings = {"spark.driver.defaultJavaOptions": "-Xss4m"}
    assert not session._user_log4j_config(settings)
    session._quiet_launch(settings, "local[2]", "WARN")
    options = settings["spark.driver.defaultJavaOptions"]
    assert options.startswith("-Dlog4j2.configurationFile=file:///")
    assert options.endswith("-Daiaas.log4j.level=WARN -Xss4m")  # theirs last
    assert "spark.executor.defaultJavaOptions" not in settings
    settings = {}
    session._quiet_launch(settings, "local-cluster[2,1,1024]", "INFO")
    assert "log4j2.configurationFile" in settings["spark.executor.defaultJavaOptions"]

    user = "-Dlog4j2.configurationFile=/etc/mine.properties"
    assert session._user_log4j_config({"spark.driver.extraJavaOptions": user})
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", f'--driver-java-options "{user}" pyspark-shell')
    assert session._user_log4j_config({})
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (tmp_path / "spark-defaults.conf").write_text(f"spark.driver.extraJavaOptions  {user}\n")
    assert session._user_log4j_config({})
    (tmp_path / "spark-defaults.conf").unlink()
    (tmp_path / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert session._user_log4j_config({})


def test_spark_log_level_reads_the_env_var(monkeypatch):
    monkeypatch.delenv(session.LOG_LEVEL_ENV, raising=False)
    assert session.spark_log_level() == "WARN"
    monkeypatch.setenv(session.LOG_LEVEL_ENV, "info")
    assert session.spark_log_level() == "INFO"
    assert session.spark_log_level("error") == "ERROR"
    monkeypatch.setenv(session.LOG_LEVEL_ENV, "loud")
    with pytest.raises(session.ConfigError, match="SPARKML_AIAAS_SPARK_LOG_LEVEL='loud'"):
        session.spark_log_level()
