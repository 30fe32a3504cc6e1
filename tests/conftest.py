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
