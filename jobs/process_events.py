"""Raw daily events to curated events, with quarantine and exact row accounting.

For one ``ds``:

1. Read the raw lines as text (one row per line, whatever it holds) and check
   each against the EVENTS contract (``jobs.contract_checks``); events whose
   item is not in the catalog as of ``ds`` are quarantined as ``unknown_item``.
2. Remove, with a counted reason: exact duplicates (same ``event_id``; the
   first by time is kept), events whose ``event_id`` was curated in the last
   ``dedup_lookback_days`` days (``seen_before``), every event of a user with a
   bot-like session that day (``bot``), and a repeat of the same user, item and
   event type within ``near_duplicate_seconds`` of the previous one
   (``near_duplicate``).
3. Map external ids to stable integer ids (``curated/vocab``: appended, never
   renumbered; 0 is left free for padding) and write the curated partition.
4. Write the accounting report: rows in = curated + quarantined + removed. The
   numbers are counted from what was written, and the job fails if they do not
   add up (or disagree with the source's manifest).

A rerun of a ``ds`` replaces its partitions with the same content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time

from jobs.contract_checks import fields_sql, quarantine_frame, typed_select, violation_sql
from jobs.spark import read_parquet, spark_session
from reaflow.contracts import EVENTS, Reason
from reaflow.errors import InputError, ReaflowError
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings

log = logging.getLogger(__name__)

REMOVAL_REASONS = ("duplicate", "seen_before", "bot", "near_duplicate")
CURATED_COLUMNS = ["event_id", "user_idx", "item_idx", "user_id", "item_id", "event_type", "event_ts",
                   "rating", "value", "session_id", "source", "is_late"]


def process_events(settings: Settings, ds: str | dt.date, *, spark=None) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    ds = ds_str(ds)
    cfg = settings.processing
    lake = Lake.from_settings(settings)
    spark = spark or spark_session(settings, "reaflow-process-events")
    catalog_location = lake.path(Dataset.CURATED_ITEMS, ds)
    if not lake.is_complete(catalog_location):
        raise InputError(f"{catalog_location} is missing; run the catalog job for {ds} first")

    raw = lake.path(Dataset.RAW_EVENTS, ds)
    manifest_lines = None
    if lake.is_complete(raw):
        lines = spark.read.option("pathGlobFilter", "part-*").text(raw).withColumnRenamed("value", "line")
        manifest = f"{raw}/_manifest.json"
        if lake.exists(manifest):  # sources that write one say how many lines they delivered
            manifest_lines = lake.read_json(manifest).get("lines")
    elif cfg.missing_day == "empty":
        lines = spark.createDataFrame([], "line STRING")
    else:
        raise InputError(f"{raw} is missing or incomplete: no raw events delivered for {ds} "
                         "(set processing.missing_day=empty to process it as an empty day)")

    # One pass over the lines: the violation, and the typed columns for lines without one.
    # Only these narrow columns are cached, not the intermediate extractions.
    # Kept on local disk, not the heap: at 10M lines a memory cache no longer fits a 2-core machine's driver.
    checked = (lines.withColumn("v", F.expr("try_parse_json(line)")).selectExpr(*fields_sql(EVENTS))
               .withColumn("violation", F.expr(violation_sql(EVENTS, ds)))
               .select("line", "violation", *[F.expr(e) for e in typed_select(EVENTS)]).persist(StorageLevel.DISK_ONLY))
    with _timed("read and check raw lines"):
        rows_in = checked.count()

    # 1. contract and catalog (the catalog's ids are small: broadcast, one join)
    catalog_ids = read_parquet(spark, lake, catalog_location).select("item_id")  # ids as of ds
    typed = (checked.where("violation IS NULL").drop("violation")
             .join(F.broadcast(catalog_ids.withColumn("_known", F.lit(True))), "item_id", "left"))
    bad_lines = checked.where("violation IS NOT NULL").select("line", "violation").unionByName(
        typed.where("_known IS NULL").select("line", F.lit(f"{Reason.UNKNOWN_ITEM.value}:item_id").alias("violation")))
    # The raw line is not needed past this point; a hash of it breaks ties between duplicates.
    valid = typed.where("_known").withColumn("_line_hash", F.xxhash64("line")).drop("_known", "line")

    # 2. removals, each step on what the previous one kept.
    # Duplicates: only the few repeated event_ids go through the ranking window.
    repeated = valid.groupBy("event_id").count().where("count > 1").select("event_id", F.lit(True).alias("_repeated"))
    valid = valid.join(F.broadcast(repeated), "event_id", "left")
    first = Window.partitionBy("event_id").orderBy("event_ts", "_line_hash")
    valid = (valid.where("_repeated IS NULL").withColumn("_removed", F.lit(None).cast("string"))
             .unionByName(valid.where("_repeated").withColumn("_removed", F.when(F.row_number().over(first) > 1, F.lit("duplicate"))))
             .drop("_repeated"))
    earlier = _recent_event_ids(spark, lake, ds, cfg.dedup_lookback_days)
    if earlier is not None:
        seen = earlier.withColumn("_seen", F.lit(True))
        valid = (valid.join(seen, "event_id", "left")
                 .withColumn("_removed", F.coalesce("_removed", F.when(F.col("_seen"), F.lit("seen_before")))).drop("_seen"))
    kept = valid.where("_removed IS NULL")
    sessions = (kept.where("session_id IS NOT NULL").groupBy("user_id", "session_id")
                .agg(F.count("*").alias("n"), (F.max("event_ts").cast("long") - F.min("event_ts").cast("long")).alias("span")))
    bots = (sessions.where((F.col("n") >= cfg.bot_min_session_events)
                           & (F.col("n") * 60.0 / F.greatest(F.col("span"), F.lit(1)) >= cfg.bot_min_events_per_minute))
            .select("user_id").distinct().withColumn("_bot", F.lit(True)))
    valid = (valid.join(F.broadcast(bots), "user_id", "left")
             .withColumn("_removed", F.coalesce("_removed", F.when(F.col("_bot"), F.lit("bot")))).drop("_bot"))
    if cfg.near_duplicate_seconds > 0:
        candidates = Window.partitionBy("_removed", "user_id", "item_id", "event_type").orderBy("event_ts", "event_id")
        gap = F.col("event_ts").cast("long") - F.lag(F.col("event_ts").cast("long")).over(candidates)
        valid = valid.withColumn("_removed", F.when(F.col("_removed").isNull() & (gap <= cfg.near_duplicate_seconds), F.lit("near_duplicate"))
                                 .otherwise(F.col("_removed")))
    valid = valid.drop("_line_hash").persist(StorageLevel.DISK_ONLY)

    # 3. stable ids and the curated partition
    curated = valid.where("_removed IS NULL")
    with _timed("removals and user ids"):
        users = _extend_vocab(spark, lake, "users", curated.select(F.col("user_id").alias("external_id")), ds)
    with _timed("item ids"):
        items = _extend_vocab(spark, lake, "items", catalog_ids.select(F.col("item_id").alias("external_id")), ds)
    day_start = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time())
    curated = (curated.join(users.select(F.col("external_id").alias("user_id"), F.col("idx").alias("user_idx")), "user_id")
               .join(items.select(F.col("external_id").alias("item_id"), F.col("idx").alias("item_idx")), "item_id")
               .withColumn("is_late", F.col("event_ts") < F.lit(day_start))
               .select(*CURATED_COLUMNS).orderBy("user_idx", "event_ts", "event_id"))
    with _timed("write curated"), lake.spark_output(lake.path(Dataset.CURATED_EVENTS, ds)) as out:
        curated.write.mode("overwrite").parquet(out)
    with _timed("write quarantine"), lake.spark_output(lake.path(Dataset.QUARANTINE_EVENTS, ds)) as out:
        quarantine_frame(bad_lines, ds).write.mode("overwrite").parquet(out)
    removed = {r["_removed"]: r["n"] for r in valid.where("_removed IS NOT NULL").groupBy("_removed").agg(F.count("*").alias("n")).collect()}
    checked.unpersist()
    valid.unpersist()

    # 4. accounting, from what was written
    written_frame = spark.read.parquet(lake.path(Dataset.CURATED_EVENTS, ds))
    written = written_frame.count()
    users_today, items_today = written_frame.agg(F.countDistinct("user_idx"), F.countDistinct("item_idx")).first()
    quarantine = spark.read.parquet(lake.path(Dataset.QUARANTINE_EVENTS, ds))
    quarantined = {r["reason"]: r["n"] for r in quarantine.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    report = {
        "ds": ds,
        "rows_in": rows_in,
        "curated": written,
        "quarantined": dict(sorted(quarantined.items())),
        "removed": {reason: removed.get(reason, 0) for reason in REMOVAL_REASONS},
        "manifest_lines": manifest_lines,
        "users": users_today,
        "items": items_today,
    }
    report["balanced"] = rows_in == written + sum(quarantined.values()) + sum(removed.values())
    lake.write_json(lake.path(Dataset.REPORTS, ds, "process_events.json"), report)
    if not report["balanced"]:
        raise ReaflowError(f"row accounting for {ds} does not add up: {rows_in} in, {written} curated, "
                           f"{sum(quarantined.values())} quarantined, {sum(removed.values())} removed")
    if manifest_lines is not None and manifest_lines != rows_in:
        raise ReaflowError(f"{raw}: read {rows_in} lines but the source's manifest says {manifest_lines}")
    return report


@contextlib.contextmanager
def _timed(step: str):
    start = time.perf_counter()
    yield
    log.info("process_events: %s took %.1f s", step, time.perf_counter() - start)


def _recent_event_ids(spark, lake: Lake, ds: str, days: int):
    """event_ids curated in the ``days`` days before ``ds`` (None if there are none)."""
    day = dt.date.fromisoformat(ds)
    paths = [lake.path(Dataset.CURATED_EVENTS, (day - dt.timedelta(days=k)).isoformat()) for k in range(1, days + 1)]
    paths = [p for p in paths if lake.is_complete(p)]
    if not paths:
        return None
    return read_parquet(spark, lake, *paths).select("event_id").distinct()


def _extend_vocab(spark, lake: Lake, name: str, ids, ds: str):
    """Append ids not yet in ``curated/vocab/<name>`` (new ones in sorted order); return the whole map."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    location = lake.path(Dataset.CURATED_VOCAB, None, name)
    current = read_parquet(spark, lake, location) if lake.is_complete(location) else spark.createDataFrame([], "external_id STRING, idx BIGINT, first_ds STRING")
    current = current.cache()
    top = current.agg(F.coalesce(F.max("idx"), F.lit(0)).alias("top")).first()["top"]
    new = ids.distinct().join(current, "external_id", "left_anti")
    new = new.withColumn("idx", F.row_number().over(Window.orderBy("external_id")) + F.lit(top)).withColumn("first_ds", F.lit(ds))
    new = new.cache()
    if new.count() == 0:
        return current
    vocab = current.unionByName(new).orderBy("idx")
    with lake.spark_output(location) as out:
        vocab.write.mode("overwrite").parquet(out)
    current.unpersist()
    new.unpersist()
    return spark.read.parquet(location)


if __name__ == "__main__":
    from jobs.submit import main

    main(process_events, "Curate the raw events of --ds.")
