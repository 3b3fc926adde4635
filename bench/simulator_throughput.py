"""Simulator throughput (lines/s) and peak memory at several sizes.

Each size runs in a fresh child process (``reaflow simulate``), so its peak
resident memory is its own. The per-day volume is the same at every size, so
flat memory across sizes shows that events stream to disk.

    python bench/simulator_throughput.py --sizes 1000000 10000000
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


def run(events: int, per_day: int, users: int, items: int, workdir: Path) -> dict:
    lake = workdir / f"lake-{events}"
    days = max(1, events // per_day)
    cmd = [sys.executable, "-m", "reaflow.cli", "simulate", "--lake", str(lake), "--events", str(events),
           "--days", str(days), "--users", str(users), "--items", str(items)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"simulate failed: {err.strip()}")
    summary = json.loads(out)
    size = sum(p.stat().st_size for p in lake.rglob("*") if p.is_file())
    shutil.rmtree(lake)
    return {
        "events": events, "days": days, "users": users, "items": items, "lines": summary["lines"],
        "seconds": round(seconds, 1), "lines_per_s": round(summary["lines"] / seconds),
        "peak_rss_mib": round(usage.ru_maxrss / 1024), "lake_mib": round(size / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="reaflow-bench-"))
    print(f"# {dt.date.today()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| events | days | users | items | seconds | lines/s | peak RSS MiB | lake MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for events in args.sizes:
        r = run(events, args.per_day, args.users, args.items, workdir)
        print(f"| {r['events']:,} | {r['days']} | {r['users']:,} | {r['items']:,} | {r['seconds']} | {r['lines_per_s']:,} | {r['peak_rss_mib']} | {r['lake_mib']:,} |", flush=True)


if __name__ == "__main__":
    main()
