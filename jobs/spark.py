"""One way to get a SparkSession from the settings, locally or on a cluster."""

from __future__ import annotations

import os
import sys

from reaflow.settings import Settings


def spark_session(settings: Settings, app_name: str):
    """Get or create the session; under spark-submit the master comes from the command line."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.driver.memory", settings.spark.driver_memory)
        .config("spark.executor.memory", settings.spark.executor_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # set when spark-submit launched this driver
        builder = builder.master(settings.spark.master)
        if settings.spark.master.startswith("local"):  # one machine: stay on the loopback interface
            builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def read_parquet(spark, lake, *locations: str):
    """Read complete parquet partitions of the lake; a damaged file is named, not a JVM trace."""
    for location in locations:
        lake.check_parquet(location)
    return spark.read.parquet(*locations)
