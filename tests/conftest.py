import pytest

@pytest.fixture(scope="session")
def spark():
    from sparkml_aiaas.session import get_spark
    session = get_spark("sparkml_aiaas-tests", master="local[2]", conf={"spark.task.maxFailures": "1", "spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def df(spark, pdf):
    """The requesting module's ``pdf`` fixture (a pandas frame) as a cached Spark DataFrame."""
    frame = spark.createDataFrame(pdf).cache()
    frame.count()
    yield frame
    frame.unpersist()


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """One Spark Connect server (a separate process on a free loopback port) for the run."""
    pytest.importorskip("grpc", reason="Spark Connect clients need pip install '.[connect]'")
    from sparkml_aiaas.cluster.connect_server import ConnectServer

    server = ConnectServer(str(tmp_path_factory.mktemp("connect-server")), master="local[2]",
                           conf={"spark.default.parallelism": "2",
                                 "spark.sql.shuffle.partitions": "4",
                                 "spark.task.maxFailures": "1"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def connect_session(spark, connect_server):
    """A Spark Connect client session (no JVM in this process) on :func:`connect_server`.

    Built with the Connect module's own builder: ``SparkSession.builder.remote`` would
    refuse beside the classic ``spark`` fixture, which starts first (``get_spark`` would
    otherwise hand tests the active Connect session).  Tests take :func:`connect`.
    """
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    session = RemoteSparkSession.builder.remote(connect_server.url).getOrCreate()
    yield session
    session.stop()


@pytest.fixture
def connect(connect_session, monkeypatch):
    """The Connect session, with this process in Connect mode for the test, as
    ``SparkSession.builder.remote`` leaves a real client (pyspark.ml's own stages and
    ``pyspark.sql.functions`` then build Connect objects).  Only for the test's duration:
    the classic ``spark`` fixture shares the process.  Classic results a test compares
    with come from module-scoped fixtures, set up before this one."""
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    yield connect_session
