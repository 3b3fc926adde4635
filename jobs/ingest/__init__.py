"""Log sources: write raw events and catalog partitions into the lake, day by day.

``ingest(settings)`` is the one entry point the CLI and the DAG call; the
source is ``settings.source.name``: the clickstream simulator (the embedded
default) or a public dataset replayed by its timestamps.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from reaflow.errors import InputError
from reaflow.lake import Lake
from reaflow.settings import Settings


def ingest(settings: Settings, *, ds_from: str | dt.date | None = None, ds_to: str | dt.date | None = None) -> dict:
    """Write the source's raw partitions for [ds_from, ds_to] (all its days by default); return a summary."""
    from jobs.ingest import amazon, movielens
    from jobs.ingest.replay import replay

    source = settings.source
    lake = Lake.from_settings(settings)
    if source.name == "simulator":
        from jobs.ingest.simulator import simulate

        return simulate(settings, ds_from=ds_from, ds_to=ds_to)
    if source.name in movielens.OFFICIAL:
        folder = source.path or _download(settings, source.name)
        reader = movielens.read_ml100k if source.name == "ml-100k" else movielens.read_ml1m
        events, items = reader(_existing(folder, source.name))
    elif source.name in ("amazon-beauty", "amazon-sports", "amazon-s3rec"):
        events, items = amazon.read_s3rec(_existing(_required_path(source.path, source.name), source.name),
                                          source.name, source.start_date, source.synthetic_days)
    elif source.name in ("amazon-scientific", "amazon-recbole"):
        events, items = amazon.read_recbole(_existing(_required_path(source.path, source.name), source.name),
                                            source.name, source.start_date, source.synthetic_days)
    else:  # settings validation makes this unreachable
        raise InputError(f"no adapter for source {source.name!r}")
    return replay(lake, source.name, events, items, ds_from=ds_from, ds_to=ds_to).to_dict()


def _download(settings: Settings, name: str) -> Path:
    from jobs.ingest.download import fetch_zip
    from jobs.ingest.movielens import OFFICIAL

    url, md5 = OFFICIAL[name]
    return fetch_zip(url, md5, settings.state_dir / "downloads")


def _required_path(path: Path | None, name: str) -> Path:
    if path is None:
        raise InputError(f"source {name!r} has no official download; pass --path to a local copy")
    return path


def _existing(path: Path, name: str) -> Path:
    if not path.exists():
        raise InputError(f"{path} not found: expected a local copy of {name}")
    return path
