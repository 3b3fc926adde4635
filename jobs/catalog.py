"""The item catalog as of ``ds``: yesterday's catalog plus today's raw changes.

Each raw catalog row is checked against the ITEMS contract; bad rows go to
``quarantine/items`` with their reason. The curated catalog keeps the latest
record per item (by ``updated_at``, then the record itself for a stable tie
break). With no curated catalog for the day before, it is rebuilt from every
raw catalog partition up to ``ds``: both paths give the same result.
"""

from __future__ import annotations

import datetime as dt

from jobs.contract_checks import fields_sql, quarantine_frame, typed_select, violation_sql
from jobs.spark import read_parquet, spark_session
from reaflow.contracts import ITEMS
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings


def process_catalog(settings: Settings, ds: str | dt.date, *, spark=None, full_rebuild: bool = False) -> dict:
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    spark = spark or spark_session(settings, "reaflow-catalog")
    yesterday = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    previous = lake.path(Dataset.CURATED_ITEMS, yesterday)
    incremental = not full_rebuild and lake.is_complete(previous)
    days = [ds] if incremental else [d for d in lake.partitions(Dataset.RAW_ITEMS) if d <= ds]
    days = [d for d in days if lake.is_complete(lake.path(Dataset.RAW_ITEMS, d))]

    rows_in, quarantined = 0, {}
    changes, cached = None, None
    for day in days:
        lines = spark.read.option("pathGlobFilter", "part-*").text(lake.path(Dataset.RAW_ITEMS, day)).withColumnRenamed("value", "line")
        labelled = (lines.withColumn("v", F.expr("try_parse_json(line)")).selectExpr(*fields_sql(ITEMS))
                    .withColumn("violation", F.expr(violation_sql(ITEMS, None))))
        bad = labelled.where("violation IS NOT NULL")
        if day == ds:  # only today's rows are counted and quarantined; earlier days were, on their day
            cached = labelled = labelled.cache()
            rows_in = labelled.count()
            quarantined = {r["reason"]: r["n"] for r in bad.groupBy(F.split_part("violation", F.lit(":"), F.lit(1)).alias("reason")).agg(F.count("*").alias("n")).collect()}
            with lake.spark_output(lake.path(Dataset.QUARANTINE_ITEMS, ds)) as out:
                quarantine_frame(bad, ds).write.mode("overwrite").parquet(out)
        good = labelled.where("violation IS NULL").selectExpr(*typed_select(ITEMS))
        changes = good if changes is None else changes.unionByName(good)
    if changes is None:
        changes = spark.createDataFrame([], ITEMS.spark_ddl(timestamps_as_string=False))
    if incremental:
        changes = read_parquet(spark, lake, previous).select(*ITEMS.names).unionByName(changes)
    latest = Window.partitionBy("item_id").orderBy(F.col("updated_at").desc(), F.to_json(F.struct(*ITEMS.names)).desc())
    catalog = changes.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank").orderBy("item_id")
    with lake.spark_output(lake.path(Dataset.CURATED_ITEMS, ds)) as out:
        catalog.write.mode("overwrite").parquet(out)
    items = spark.read.parquet(lake.path(Dataset.CURATED_ITEMS, ds)).count()
    if cached is not None:
        cached.unpersist()
    report = {"ds": ds, "mode": "incremental" if incremental else "full", "rows_in": rows_in,
              "accepted": rows_in - sum(quarantined.values()), "quarantined": dict(sorted(quarantined.items())), "items": items}
    lake.write_json(lake.path(Dataset.REPORTS, ds, "process_catalog.json"), report)
    return report


if __name__ == "__main__":
    from jobs.submit import main

    main(process_catalog, "Curate the item catalog as of --ds.")
