import pytest


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory):
    """Spark sized for tests: 2 local cores, few shuffle partitions."""
    from reaflow.settings import load_settings

    return load_settings(lake_root=str(tmp_path_factory.mktemp("unused")), spark={"master": "local[2]", "shuffle_partitions": 4})


@pytest.fixture(scope="session")
def spark(spark_settings):
    from jobs.spark import spark_session

    session = spark_session(spark_settings, "reaflow-tests")
    yield session
    session.stop()
