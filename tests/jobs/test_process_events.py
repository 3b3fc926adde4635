"""The Spark log processing: exact accounting, idempotence, incremental = full, stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.catalog import process_catalog
from jobs.ingest import ingest
from jobs.process_events import process_events
from jobs.sequences import build_sequences
from reaflow.errors import InputError
from reaflow.lake import Dataset, Lake

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
SIM = {"days": 3, "users": 1_500, "items": 600, "events": 24_000, "seed": 11,
       "noise": {"malformed_rate": 0.03, "bot_user_rate": 0.005}}


def _settings(root: Path, **extra):
    from reaflow.settings import load_settings

    return load_settings(lake_root=str(root), simulator=SIM, spark={"master": "local[2]", "shuffle_partitions": 4}, **extra)


def _run_day(settings, ds, spark, **kw):
    catalog = process_catalog(settings, ds, spark=spark)
    report = process_events(settings, ds, spark=spark)
    sequences = build_sequences(settings, ds, spark=spark, **kw)
    return catalog, report, sequences


def _files(root: str, *datasets: Dataset) -> dict[str, bytes]:
    out = {}
    for dataset in datasets:
        base = Path(root) / dataset.value
        out.update({str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file() and not p.name.startswith(".")})
    return out


def _table(spark, location, order=None):
    frame = spark.read.parquet(location)
    return [r.asDict(recursive=True) for r in frame.orderBy(*(order or frame.columns)).collect()]


@pytest.fixture(scope="module")
def processed(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("lake")
    settings = _settings(root)
    ingest(settings)
    results = {ds: _run_day(settings, ds, spark) for ds in DAYS}
    return settings, results


def test_accounting_is_exact_and_matches_what_the_source_injected(processed):
    settings, results = processed
    lake = Lake(settings.lake_root)
    for ds in DAYS:
        report = results[ds][1]
        manifest = lake.read_json(f"{lake.path(Dataset.RAW_EVENTS, ds)}/_manifest.json")
        sim = manifest["simulator"]
        assert report["balanced"] and report["rows_in"] == manifest["lines"]
        assert report["rows_in"] == report["curated"] + sum(report["quarantined"].values()) + sum(report["removed"].values())
        # Every malformed line lands in quarantine with the reason it was made with.
        assert report["quarantined"] == {k: v for k, v in sim["malformed"].items() if v}
        assert report["removed"]["duplicate"] == sim["duplicates"]
        assert report["removed"]["seen_before"] == 0
        assert sim["bot_events"] * 0.9 <= report["removed"]["bot"] <= sim["bot_events"]
        assert sim["near_duplicates"] <= report["removed"]["near_duplicate"] <= sim["near_duplicates"] * 1.1 + 3
        assert lake.read_json(lake.path(Dataset.REPORTS, ds, "process_events.json")) == report


def test_quarantine_keeps_the_exact_bytes(processed, spark):
    settings, _ = processed
    lake = Lake(settings.lake_root)
    rows = spark.read.parquet(lake.path(Dataset.QUARANTINE_EVENTS, DAYS[0])).collect()
    raw_lines = set()
    for part in Path(lake.path(Dataset.RAW_EVENTS, DAYS[0])).glob("part-*.jsonl"):
        raw_lines.update(line.rstrip(b"\n") for line in part.open("rb"))
    assert rows and all(bytes(r["raw"]) in raw_lines for r in rows)
    utf8 = [r for r in rows if r["reason"] == "invalid_utf8"]
    assert utf8 and all(b"\xff" in bytes(r["raw"]) for r in utf8)
    assert {r["column"] for r in rows if r["reason"] == "missing_field"} <= {"event_id", "user_id", "item_id", "event_type", "event_ts", "source"}


def test_curated_events_are_typed_unique_and_in_utc(processed, spark):
    settings, _ = processed
    lake = Lake(settings.lake_root)
    frame = spark.read.parquet(lake.path(Dataset.CURATED_EVENTS, DAYS[1]))
    types = dict(frame.dtypes)
    assert types["event_ts"] == "timestamp" and types["user_idx"] == "bigint" and types["rating"] == "double"
    assert frame.count() == frame.select("event_id").distinct().count()
    late = frame.where("is_late").count()
    assert late > 0
    assert frame.where("event_ts >= TIMESTAMP '2024-01-03 01:00:00'").count() == 0


def test_rerun_gives_identical_outputs_and_stable_ids(processed, spark, tmp_path):
    settings, results = processed
    lake = Lake(settings.lake_root)
    datasets = (Dataset.CURATED_EVENTS, Dataset.QUARANTINE_EVENTS, Dataset.CURATED_ITEMS, Dataset.CURATED_SEQUENCES,
                Dataset.CURATED_SPLITS, Dataset.CURATED_ITEM_STATS, Dataset.CURATED_USER_STATS)
    before = {name: _table(spark, lake.path(d, DAYS[1])) for d in datasets for name in [d.value]}
    vocab_before = _table(spark, lake.path(Dataset.CURATED_VOCAB, None, "users"), ["idx"])
    again = _run_day(settings, DAYS[1], spark)  # rerun a middle day after later days ran
    assert again[1] == results[DAYS[1]][1]
    after = {d.value: _table(spark, lake.path(d, DAYS[1])) for d in datasets}
    assert after == before
    assert _table(spark, lake.path(Dataset.CURATED_VOCAB, None, "users"), ["idx"]) == vocab_before


def test_vocabulary_only_grows(processed, spark):
    settings, _ = processed
    lake = Lake(settings.lake_root)
    vocab = _table(spark, lake.path(Dataset.CURATED_VOCAB, None, "users"), ["idx"])
    assert [v["idx"] for v in vocab] == list(range(1, len(vocab) + 1))  # dense, from 1 (0 is padding)
    first_day = [v for v in vocab if v["first_ds"] == DAYS[0]]
    assert first_day == sorted(first_day, key=lambda v: v["external_id"])
    assert {v["first_ds"] for v in vocab} == set(DAYS)
    for ds in DAYS:  # every curated event uses the vocabulary's id
        mapping = {v["external_id"]: v["idx"] for v in vocab}
        for row in spark.read.parquet(lake.path(Dataset.CURATED_EVENTS, ds)).select("user_id", "user_idx").distinct().collect():
            assert mapping[row["user_id"]] == row["user_idx"]


def test_incremental_equals_full_rebuild(processed, spark):
    settings, _ = processed
    lake = Lake(settings.lake_root)
    last = DAYS[-1]
    datasets = (Dataset.CURATED_SEQUENCES, Dataset.CURATED_ITEM_STATS, Dataset.CURATED_USER_STATS, Dataset.CURATED_SPLITS)
    incremental = {d.value: _table(spark, lake.path(d, last)) for d in datasets}
    catalog_incremental = _table(spark, lake.path(Dataset.CURATED_ITEMS, last), ["item_id"])
    summary = build_sequences(settings, last, spark=spark, full_rebuild=True)
    assert summary["mode"] == "full"
    assert process_catalog(settings, last, spark=spark, full_rebuild=True)["mode"] == "full"
    assert {d.value: _table(spark, lake.path(d, last)) for d in datasets} == incremental
    assert _table(spark, lake.path(Dataset.CURATED_ITEMS, last), ["item_id"]) == catalog_incremental


def test_sequences_and_splits(processed, spark):
    settings, results = processed
    lake = Lake(settings.lake_root)
    seqs = spark.read.parquet(lake.path(Dataset.CURATED_SEQUENCES, DAYS[-1])).collect()
    for row in seqs[:200]:
        stamps = [(e["ts"], e["event_id"]) for e in row["events"]]
        assert stamps == sorted(stamps) and row["items"] == [e["item_idx"] for e in row["events"]]
    splits = spark.read.parquet(lake.path(Dataset.CURATED_SPLITS, DAYS[-1]))
    loo_test = {r["user_idx"]: r for r in splits.where("protocol = 'loo' AND split = 'test'").collect()}
    loo_valid = {r["user_idx"]: r for r in splits.where("protocol = 'loo' AND split = 'valid'").collect()}
    assert loo_test and set(loo_test) == set(loo_valid)
    for user, test in list(loo_test.items())[:100]:
        assert test["history"][:-1] == loo_valid[user]["history"] and test["history"][-1] == loo_valid[user]["target"]
    counts = results[DAYS[-1]][2]["splits"]
    assert counts["time/test"] > 0 and counts["time/valid"] > 0


def test_missing_day_is_a_clear_error_or_an_empty_day(tmp_path, spark):
    settings = _settings(tmp_path / "lake")
    ingest(settings, ds_from=DAYS[0], ds_to=DAYS[0])
    process_catalog(settings, DAYS[1], spark=spark)  # the catalog carries over
    with pytest.raises(InputError, match=r"raw/events/ds=2024-01-02 is missing or incomplete.*missing_day=empty"):
        process_events(settings, DAYS[1], spark=spark)
    empty = _settings(tmp_path / "lake", processing={"missing_day": "empty"})
    report = process_events(empty, DAYS[1], spark=spark)
    assert report["rows_in"] == report["curated"] == 0 and report["balanced"]


def test_corrupt_parquet_input_names_the_file(processed, spark, tmp_path):
    import shutil

    settings, _ = processed
    copy = tmp_path / "lake"
    shutil.copytree(settings.lake_root, copy)
    broken = _settings(copy)
    target = sorted((copy / "curated" / "items" / f"ds={DAYS[0]}").glob("*.parquet"))[0]
    target.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=rf"{target.name} is not a readable parquet file"):
        process_events(broken, DAYS[0], spark=spark)


def test_ml100k_day_by_day(tmp_path, spark, shared_data):
    from reaflow.settings import load_settings

    settings = load_settings(lake_root=str(tmp_path / "lake"), source={"name": "ml-100k", "path": shared_data("ml-100k")},
                             spark={"master": "local[2]", "shuffle_partitions": 4}, processing={"positive_event_types": ["rate"]})
    days = ["1997-09-20", "1997-09-21", "1997-09-22", "1997-09-23"]
    ingest(settings, ds_from=days[0], ds_to=days[-1])
    curated = 0
    for ds in days:
        _, report, _ = _run_day(settings, ds, spark)
        assert report["balanced"] and not report["quarantined"] and report["rows_in"] == report["manifest_lines"]
        curated += report["curated"]
    lake = Lake(settings.lake_root)
    raw = sum(lake.read_json(f"{lake.path(Dataset.RAW_EVENTS, d)}/_manifest.json")["lines"] for d in days)
    assert curated == raw  # MovieLens is clean: nothing quarantined, nothing removed
    users = spark.read.parquet(lake.path(Dataset.CURATED_VOCAB, None, "users")).count()
    assert users == len({r["user_id"] for d in days for r in spark.read.parquet(lake.path(Dataset.CURATED_EVENTS, d)).collect()})
