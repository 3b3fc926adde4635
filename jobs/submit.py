"""The command line every Spark job shares, so each runs under spark-submit.

    spark-submit --master local[2] jobs/process_events.py --ds 2024-01-01 [--config reaflow.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from reaflow.errors import ReaflowError
from reaflow.settings import load_settings


def main(job: Callable[..., dict], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ds", required=True, help="Logical date, YYYY-MM-DD.")
    parser.add_argument("--config", default=None, help="YAML settings file (else $REAFLOW_CONFIG).")
    parser.add_argument("--lake", default=None, help="Lake root (overrides lake_root).")
    args = parser.parse_args()
    try:
        settings = load_settings(args.config, **({"lake_root": args.lake} if args.lake else {}))
        summary = job(settings, args.ds)
    except ReaflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2, default=str))
