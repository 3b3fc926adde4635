"""Spark log processing against a single-process DuckDB reference, side by side.

For each size, one day of simulated raw events (default noise) is written
once; then, in the same run:

* Spark (``settings.spark.master``, default ``local[2]``): ``process_catalog`` +
  ``process_events`` for that day, on a fresh lake, with a warm session (the
  session start is timed separately);
* DuckDB: the same transformation in one process: contract checks by the same
  rules and order, unknown items, exact duplicates, bot sessions,
  near-duplicates, dense id maps, curated and quarantine parquet.

Both must give the same accounting; the script stops if they do not.

    python bench/process_events_bench.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reaflow.contracts import EVENTS, FUTURE_TOLERANCE, MIN_EVENT_TS, TS_PATTERN
from reaflow.lake import Dataset, Lake
from reaflow.settings import load_settings

DS = "2024-01-01"


def simulate(root: Path, events: int, users: int, items: int) -> None:
    cmd = [sys.executable, "-m", "reaflow.cli", "simulate", "--lake", str(root), "--days", "1", "--events", str(events),
           "--users", str(users), "--items", str(items)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run_spark(settings, spark) -> tuple[float, dict]:
    from jobs.catalog import process_catalog
    from jobs.process_events import process_events

    start = time.perf_counter()
    process_catalog(settings, DS, spark=spark)
    report = process_events(settings, DS, spark=spark)
    return time.perf_counter() - start, report


def _duckdb_rules(ds: str) -> str:
    """The EVENTS contract as a DuckDB CASE, in the order of reaflow.contracts.classify_line."""
    limit = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time()) + dt.timedelta(days=1) + FUTURE_TOLERANCE
    rules = ["WHEN line IS NULL OR trim(line, ' \t\r\n\x0b\x0c') = '' THEN 'empty_line'",
             "WHEN NOT json_valid(line) THEN 'broken_json'",
             "WHEN json_type(line) <> 'OBJECT' THEN 'not_an_object'"]
    for col in EVENTS.columns:
        path = f"'$.{col.name}'"
        kind = f"json_type(line, {path})"
        text = f"(line->>{path})"
        missing = f"({kind} IS NULL OR {kind} = 'NULL')"
        if col.required:
            rules.append(f"WHEN {missing} THEN 'missing_field'")
        present = f"NOT {missing}"
        if col.type in ("string", "timestamp"):
            rules.append(f"WHEN {present} AND {kind} <> 'VARCHAR' THEN 'wrong_type'")
            if col.required:
                rules.append(f"WHEN {present} AND NOT regexp_matches({text}, '\\S') THEN 'missing_field'")
        if col.type == "double":
            rules.append(f"WHEN {present} AND {kind} NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN 'wrong_type'")
        if col.allowed:
            allowed = ", ".join(f"'{a}'" for a in col.allowed)
            rules.append(f"WHEN {present} AND {text} NOT IN ({allowed}) THEN '{'unknown_event_type' if col.name == 'event_type' else 'out_of_range'}'")
        if col.type == "double" and col.minimum is not None:
            rules.append(f"WHEN {present} AND CAST({text} AS DOUBLE) < {col.minimum} THEN 'out_of_range'")
        if col.type == "double" and col.maximum is not None:
            rules.append(f"WHEN {present} AND CAST({text} AS DOUBLE) > {col.maximum} THEN 'out_of_range'")
        if col.type == "timestamp":
            ts = f"TRY_CAST({text} AS TIMESTAMPTZ)"
            rules.append(f"WHEN {present} AND (NOT regexp_matches({text}, '{TS_PATTERN}') OR {ts} IS NULL) THEN 'bad_timestamp'")
            rules.append(f"WHEN {present} AND {ts} < TIMESTAMPTZ '{MIN_EVENT_TS:%Y-%m-%d %H:%M:%S}+00' THEN 'ts_before_min'")
            rules.append(f"WHEN {present} AND {ts} > TIMESTAMPTZ '{limit:%Y-%m-%d %H:%M:%S}+00' THEN 'ts_in_future'")
    return "CASE " + " ".join(rules) + " END"


def run_duckdb(lake: Lake, out: Path, cfg, threads: int, memory: str) -> tuple[float, dict]:
    import duckdb

    start = time.perf_counter()
    con = duckdb.connect()
    # Spark's driver shares this machine and process: cap DuckDB and let it spill.
    con.execute(f"SET threads = {threads}; SET TimeZone = 'UTC'; SET memory_limit = '{memory}'; SET temp_directory = '{out}.tmp'")
    raw = lake.path(Dataset.RAW_EVENTS, DS)
    items = lake.path(Dataset.RAW_ITEMS, DS)
    con.execute(f"""CREATE TABLE lines AS SELECT line FROM read_csv('{raw}/part-*.jsonl', columns={{'line': 'VARCHAR'}}, header=false,
                    delim=E'\\x01', quote='', escape='', auto_detect=false, strict_mode=false, store_rejects=true)""")
    invalid_utf8 = con.execute("SELECT count(*) FROM reject_errors WHERE error_type = 'INVALID ENCODING'").fetchone()[0]
    con.execute(f"CREATE TABLE catalog AS SELECT DISTINCT json_extract_string(json, '$.item_id') AS item_id FROM read_json_objects('{items}/part-*.jsonl')")
    con.execute(f"CREATE TABLE checked AS SELECT line, {_duckdb_rules(DS)} AS reason FROM lines")
    con.execute("""CREATE TABLE typed AS SELECT line, line->>'$.event_id' AS event_id, line->>'$.user_id' AS user_id,
                   line->>'$.item_id' AS item_id, line->>'$.event_type' AS event_type, CAST(line->>'$.event_ts' AS TIMESTAMPTZ) AS event_ts,
                   CAST(line->>'$.rating' AS DOUBLE) AS rating, CAST(line->>'$.value' AS DOUBLE) AS value,
                   line->>'$.session_id' AS session_id, line->>'$.source' AS source
                   FROM checked WHERE reason IS NULL""")
    con.execute("""CREATE TABLE valid AS SELECT t.* FROM typed t SEMI JOIN catalog c ON t.item_id = c.item_id""")
    unknown = con.execute("SELECT count(*) FROM typed t ANTI JOIN catalog c ON t.item_id = c.item_id").fetchone()[0]
    con.execute("""CREATE TABLE dedup AS SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY event_ts, line) > 1 AS dup FROM valid""")
    con.execute(f"""CREATE TABLE bots AS SELECT DISTINCT user_id FROM (
                    SELECT user_id, session_id, count(*) AS n, epoch(max(event_ts)) - epoch(min(event_ts)) AS span
                    FROM dedup WHERE NOT dup AND session_id IS NOT NULL GROUP BY ALL)
                    WHERE n >= {cfg.bot_min_session_events} AND n * 60.0 / greatest(span, 1) >= {cfg.bot_min_events_per_minute}""")
    con.execute("""CREATE TABLE labelled AS SELECT *, CASE WHEN dup THEN 'duplicate' WHEN user_id IN (SELECT user_id FROM bots) THEN 'bot' END AS removed FROM dedup""")
    con.execute(f"""CREATE TABLE final AS SELECT * EXCLUDE (removed), CASE WHEN removed IS NULL AND
                    epoch(event_ts) - lag(epoch(event_ts)) OVER (PARTITION BY removed IS NULL, user_id, item_id, event_type ORDER BY event_ts, event_id)
                    <= {cfg.near_duplicate_seconds} THEN 'near_duplicate' ELSE removed END AS removed FROM labelled""")
    con.execute("CREATE TABLE users AS SELECT user_id, row_number() OVER (ORDER BY user_id) AS user_idx FROM (SELECT DISTINCT user_id FROM final WHERE removed IS NULL)")
    con.execute("CREATE TABLE item_ids AS SELECT item_id, row_number() OVER (ORDER BY item_id) AS item_idx FROM catalog")
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"""COPY (SELECT f.event_id, u.user_idx, i.item_idx, f.user_id, f.item_id, f.event_type, f.event_ts, f.rating, f.value,
                    f.session_id, f.source, f.event_ts < TIMESTAMPTZ '{DS} 00:00:00+00' AS is_late
                    FROM final f JOIN users u USING (user_id) JOIN item_ids i USING (item_id) WHERE f.removed IS NULL
                    ORDER BY u.user_idx, f.event_ts, f.event_id) TO '{out}/curated.parquet' (FORMAT parquet, COMPRESSION zstd)""")
    con.execute(f"COPY (SELECT line, reason FROM checked WHERE reason IS NOT NULL) TO '{out}/quarantine.parquet' (FORMAT parquet, COMPRESSION zstd)")
    quarantined = dict(con.execute("SELECT reason, count(*) FROM checked WHERE reason IS NOT NULL GROUP BY reason").fetchall())
    quarantined["invalid_utf8"] = invalid_utf8
    if unknown:
        quarantined["unknown_item"] = unknown
    removed = dict(con.execute("SELECT removed, count(*) FROM final WHERE removed IS NOT NULL GROUP BY removed").fetchall())
    curated = con.execute(f"SELECT count(*) FROM read_parquet('{out}/curated.parquet')").fetchone()[0]
    rows_in = con.execute("SELECT count(*) FROM lines").fetchone()[0] + invalid_utf8
    con.close()
    report = {"rows_in": rows_in, "curated": curated, "quarantined": dict(sorted(quarantined.items())),
              "removed": {k: removed.get(k, 0) for k in ("duplicate", "seen_before", "bot", "near_duplicate")}}
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--duckdb-memory", default="6GB", help="DuckDB memory_limit (Spark's driver holds its own heap)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="reaflow-bench-"))
    threads = int(args.master[6:-1]) if args.master.startswith("local[") and args.master[6:-1].isdigit() else os.cpu_count()

    from jobs.spark import spark_session

    base = load_settings(lake_root=str(workdir / "spark"), spark={"master": args.master, "shuffle_partitions": 8, "driver_memory": "6g"})
    started = time.perf_counter()
    spark = spark_session(base, "reaflow-bench")
    session_seconds = time.perf_counter() - started
    print(f"# {dt.date.today()} {platform.machine()}, {os.cpu_count()} cores; Spark {spark.version} {args.master} (session start {session_seconds:.1f} s, not counted); DuckDB threads={threads}")
    print("| events | Spark s | Spark ev/s | DuckDB s | DuckDB ev/s | Spark / DuckDB | same accounting |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for size in args.sizes:
        raw_root = workdir / f"raw-{size}"
        if not Lake(raw_root).is_complete(Lake(raw_root).path(Dataset.RAW_EVENTS, DS)):
            simulate(raw_root, size, args.users, args.items)
        shutil.rmtree(workdir / f"spark-{size}", ignore_errors=True)
        spark_root = workdir / f"spark-{size}"
        shutil.copytree(raw_root, spark_root)
        settings = load_settings(lake_root=str(spark_root), spark=base.spark.model_dump())
        spark_s, spark_report = run_spark(settings, spark)
        print(f"# {size:,} events: Spark {spark_s:.1f} s", flush=True)
        duck_s, duck_report = run_duckdb(Lake(raw_root), workdir / f"duck-{size}", settings.processing, threads, args.duckdb_memory)
        same = all(spark_report[k] == duck_report[k] for k in ("rows_in", "curated", "quarantined", "removed"))
        print(f"| {size:,} | {spark_s:.1f} | {size / spark_s:,.0f} | {duck_s:.1f} | {size / duck_s:,.0f} | {spark_s / duck_s:.2f} | {'yes' if same else 'NO'} |", flush=True)
        if not same:
            print(json.dumps({"spark": spark_report, "duckdb": duck_report}, indent=1, default=str), file=sys.stderr)
        for path in (raw_root, spark_root, workdir / f"duck-{size}", workdir / f"duck-{size}.tmp"):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
