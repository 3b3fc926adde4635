"""Per-user sequences, item and user statistics, and evaluation splits as of ``ds``.

Sequences hold each user's positive interactions (``processing.positive_event_types``,
and for ``rate`` events at least ``min_rating`` when set) in time order
``(event_ts, event_id)``, keeping the last ``max_sequence_length``. They are
built incrementally (yesterday's snapshot plus today's curated events) or by a
full rebuild from every curated partition; both give identical results because
the last L of a union equals the last L of (last L of the old part + the new
part), and counts, minima and maxima add up the same way.

Splits (protocol ``loo`` and ``time``) are derived from the snapshot: repeated
consecutive items are collapsed, then the ``k_core`` filter applies.

* ``loo``: the last item is the test target, the one before it validation,
  the rest training (users with at least 3 items).
* ``time``: items from the last ``test_days`` days (up to ``ds``) are test, the
  ``test_days`` before them validation; the target is the first item of the
  period and the history everything before it.
"""

from __future__ import annotations

import datetime as dt

from jobs.spark import read_parquet, spark_session
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings

EVENT_TYPES = ("view", "click", "cart", "purchase", "rate")


def build_sequences(settings: Settings, ds: str | dt.date, *, spark=None, full_rebuild: bool = False) -> dict:
    from pyspark.sql import functions as F

    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    spark = spark or spark_session(settings, "reaflow-sequences")
    today = lake.path(Dataset.CURATED_EVENTS, ds)
    lake.require_complete(today)
    yesterday = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    previous = {d: lake.path(d, yesterday) for d in (Dataset.CURATED_SEQUENCES, Dataset.CURATED_ITEM_STATS, Dataset.CURATED_USER_STATS)}
    incremental = not full_rebuild and all(lake.is_complete(p) for p in previous.values())
    if incremental:
        events = read_parquet(spark, lake, today)
    else:
        days = [d for d in lake.partitions(Dataset.CURATED_EVENTS) if d <= ds]
        events = read_parquet(spark, lake, *[lake.path(Dataset.CURATED_EVENTS, d) for d in days])
    events = events.cache()

    sequences = _sequences(settings, events, read_parquet(spark, lake, previous[Dataset.CURATED_SEQUENCES]) if incremental else None)
    item_stats = _stats(events, "item", read_parquet(spark, lake, previous[Dataset.CURATED_ITEM_STATS]) if incremental else None, settings)
    user_stats = _stats(events, "user", read_parquet(spark, lake, previous[Dataset.CURATED_USER_STATS]) if incremental else None, settings)
    for dataset, frame, key in ((Dataset.CURATED_SEQUENCES, sequences, "user_idx"),
                                (Dataset.CURATED_ITEM_STATS, item_stats, "item_idx"),
                                (Dataset.CURATED_USER_STATS, user_stats, "user_idx")):
        with lake.spark_output(lake.path(dataset, ds)) as out:
            frame.orderBy(key).write.mode("overwrite").parquet(out)
    events.unpersist()

    snapshot = spark.read.parquet(lake.path(Dataset.CURATED_SEQUENCES, ds))
    splits = _splits(settings, snapshot, ds)
    with lake.spark_output(lake.path(Dataset.CURATED_SPLITS, ds)) as out:
        splits.orderBy("protocol", "split", "user_idx").write.mode("overwrite").parquet(out)
    written = spark.read.parquet(lake.path(Dataset.CURATED_SPLITS, ds))
    split_counts = {f"{r['protocol']}/{r['split']}": r["n"] for r in written.groupBy("protocol", "split").agg(F.count("*").alias("n")).collect()}
    summary = {
        "ds": ds,
        "mode": "incremental" if incremental else "full",
        "users": snapshot.count(),
        "positives_in_snapshot": snapshot.agg(F.coalesce(F.sum("length"), F.lit(0))).first()[0],
        "items_with_stats": spark.read.parquet(lake.path(Dataset.CURATED_ITEM_STATS, ds)).count(),
        "splits": dict(sorted(split_counts.items())),
    }
    lake.write_json(lake.path(Dataset.REPORTS, ds, "sequences.json"), summary)
    return summary


def _is_positive(settings: Settings):
    """The Spark condition for a positive interaction under the processing settings."""
    from pyspark.sql import functions as F

    cfg = settings.processing
    positive = F.col("event_type").isin(cfg.positive_event_types)
    if cfg.min_rating is not None:
        positive = positive & ((F.col("event_type") != "rate") | (F.col("rating") >= cfg.min_rating))
    return positive


def _sequences(settings: Settings, events, previous):
    from pyspark.sql import functions as F

    limit = settings.processing.max_sequence_length
    step = F.struct(F.col("event_ts").alias("ts"), "event_id", "item_idx")
    new = events.where(_is_positive(settings)).select("user_idx", "user_id", step.alias("e"))
    if previous is not None:
        old = previous.select("user_idx", "user_id", F.explode("events").alias("e"))
        new = old.unionByName(new)
    grouped = new.groupBy("user_idx", "user_id").agg(F.sort_array(F.collect_list("e")).alias("all"))
    trimmed = grouped.withColumn("events", F.expr(f"slice(all, greatest(size(all) - {limit} + 1, 1), {limit})")).drop("all")
    return trimmed.select(
        "user_idx", "user_id", "events",
        F.expr("transform(events, e -> e.item_idx)").alias("items"),
        F.size("events").alias("length"),
    )


def _stats(events, entity: str, previous, settings: Settings):
    """Counts by event type, positives, first and last seen, per item or user."""
    from pyspark.sql import functions as F

    key = f"{entity}_idx"
    positive = _is_positive(settings)
    today = events.groupBy(key, f"{entity}_id").agg(
        *[F.sum((F.col("event_type") == t).cast("long")).alias(f"n_{t}") for t in EVENT_TYPES],
        F.sum(positive.cast("long")).alias("n_positive"),
        F.min("event_ts").alias("first_seen"),
        F.max("event_ts").alias("last_seen"),
    )
    if previous is None:
        return today
    both = previous.unionByName(today)
    return both.groupBy(key, f"{entity}_id").agg(
        *[F.sum(f"n_{t}").alias(f"n_{t}") for t in EVENT_TYPES],
        F.sum("n_positive").alias("n_positive"),
        F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"),
    )


def _splits(settings: Settings, snapshot, ds: str):
    from pyspark.sql import functions as F

    cfg = settings.processing
    # Collapse consecutive repeats of the same item (click, cart, purchase of one item are one step).
    steps = snapshot.select("user_idx", F.expr(
        "filter(events, (e, i) -> i = 0 OR e.item_idx <> events[i - 1].item_idx)").alias("events"))
    if cfg.k_core > 1:
        steps = _k_core(steps, cfg.k_core)
    items = F.expr("transform(events, e -> e.item_idx)")
    loo = steps.where(F.size("events") >= 3).select("user_idx", items.alias("items"))
    loo_rows = [
        loo.select(F.lit("train").alias("split"), "user_idx", F.expr("slice(items, 1, size(items) - 2)").alias("history"), F.lit(None).cast("bigint").alias("target")),
        loo.select(F.lit("valid").alias("split"), "user_idx", F.expr("slice(items, 1, size(items) - 2)").alias("history"), F.expr("items[size(items) - 2]").alias("target")),
        loo.select(F.lit("test").alias("split"), "user_idx", F.expr("slice(items, 1, size(items) - 1)").alias("history"), F.expr("items[size(items) - 1]").alias("target")),
    ]
    end = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time()) + dt.timedelta(days=1)
    test_start = end - dt.timedelta(days=cfg.test_days)
    valid_start = test_start - dt.timedelta(days=cfg.test_days)
    period = lambda lo, hi: F.expr(f"filter(events, e -> e.ts >= TIMESTAMP '{lo}' AND e.ts < TIMESTAMP '{hi}')")
    timed = steps.select(
        "user_idx",
        F.expr(f"transform(filter(events, e -> e.ts < TIMESTAMP '{valid_start}'), e -> e.item_idx)").alias("train"),
        period(valid_start, test_start).alias("valid_period"),
        period(test_start, end).alias("test_period"),
        F.expr(f"transform(filter(events, e -> e.ts < TIMESTAMP '{test_start}'), e -> e.item_idx)").alias("before_test"),
    ).where(F.size("train") > 0)
    time_rows = [
        timed.select(F.lit("train").alias("split"), "user_idx", F.col("train").alias("history"), F.lit(None).cast("bigint").alias("target")),
        timed.where(F.size("valid_period") > 0).select(F.lit("valid").alias("split"), "user_idx", F.col("train").alias("history"), F.expr("valid_period[0].item_idx").alias("target")),
        timed.where(F.size("test_period") > 0).select(F.lit("test").alias("split"), "user_idx", F.col("before_test").alias("history"), F.expr("test_period[0].item_idx").alias("target")),
    ]
    out = None
    for protocol, rows in (("loo", loo_rows), ("time", time_rows)):
        for frame in rows:
            frame = frame.withColumn("protocol", F.lit(protocol)).select("protocol", "split", "user_idx", "history", "target")
            out = frame if out is None else out.unionByName(frame)
    return out


def _k_core(steps, k: int, max_rounds: int = 20):
    """Drop users and items with fewer than k interactions until none is left to drop."""
    from pyspark.sql import functions as F

    flat = steps.select("user_idx", F.posexplode("events").alias("pos", "e")).cache()
    for _ in range(max_rounds):
        users = flat.groupBy("user_idx").count().where(F.col("count") >= k).select("user_idx")
        items = flat.groupBy("e.item_idx").count().where(F.col("count") >= k).select("item_idx")
        kept = flat.join(users, "user_idx", "left_semi").join(items, flat["e.item_idx"] == items["item_idx"], "left_semi").cache()
        if kept.count() == flat.count():
            break
        flat = kept
    return flat.groupBy("user_idx").agg(F.expr("transform(sort_array(collect_list(struct(pos, e))), x -> x.e)").alias("events"))


if __name__ == "__main__":
    from jobs.submit import main

    main(build_sequences, "Build user sequences, statistics and splits as of --ds.")
