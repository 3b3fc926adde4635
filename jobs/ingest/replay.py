"""Replay a public dataset into the lake as daily raw partitions.

Adapters turn a dataset into contract-shaped event records (with a UTC
``event_ts``) and item records; this module groups them by calendar day (UTC)
and writes one events partition per day, empty days included, so the daily
pipeline sees the dataset as it would a live feed. An item is delivered in the
catalog partition of the day it is first interacted with (a change feed), with
``updated_at`` at the start of that day.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from jobs.ingest.writer import RawPartitionWriter
from reaflow.contracts import format_ts
from reaflow.errors import InputError
from reaflow.lake import Dataset, Lake, ds_str


@dataclass
class IngestSummary:
    source: str
    days: list[str] = field(default_factory=list)
    events: int = 0
    items: int = 0
    users: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def replay(
    lake: Lake,
    source: str,
    events: Iterable[dict],
    items: dict[str, dict],
    *,
    ds_from: str | dt.date | None = None,
    ds_to: str | dt.date | None = None,
) -> IngestSummary:
    """Write the days of ``events`` that fall in [ds_from, ds_to] (inclusive) into the lake."""
    by_day: dict[str, list[dict]] = defaultdict(list)
    for record in events:
        by_day[record["event_ts"][:10]].append(record)
    if not by_day:
        raise InputError(f"{source}: the dataset holds no events")
    first_day, last_day = min(by_day), max(by_day)
    lo = ds_str(ds_from) if ds_from else first_day
    hi = ds_str(ds_to) if ds_to else last_day
    if lo > hi:
        raise InputError(f"{source}: ds_from {lo} is after ds_to {hi}")

    first_seen: dict[str, str] = {}
    for day in sorted(by_day):
        for record in by_day[day]:
            first_seen.setdefault(record["item_id"], day)
    missing = sorted(set(first_seen) - set(items))
    if missing:
        raise InputError(f"{source}: {len(missing)} item ids in the events are not in the catalog, e.g. {missing[0]!r}")
    items_by_day: dict[str, list[str]] = defaultdict(list)
    for item_id, day in first_seen.items():
        items_by_day[day].append(item_id)

    summary = IngestSummary(source=source)
    users: set[str] = set()
    day = dt.date.fromisoformat(max(lo, first_day))
    end = dt.date.fromisoformat(min(hi, last_day))
    while day <= end:
        ds = day.isoformat()
        rows = sorted(by_day.get(ds, ()), key=lambda r: (r["event_ts"], r["event_id"]))
        with RawPartitionWriter(lake, Dataset.RAW_EVENTS, ds, source=source) as writer:
            for record in rows:
                writer.write_record(record)
        updated_at = format_ts(dt.datetime.combine(day, dt.time(), dt.timezone.utc))
        new_items = sorted(items_by_day.get(ds, ()))
        with RawPartitionWriter(lake, Dataset.RAW_ITEMS, ds, source=source) as writer:
            for item_id in new_items:
                writer.write_record({**items[item_id], "item_id": item_id, "updated_at": updated_at})
        summary.days.append(ds)
        summary.events += len(rows)
        summary.items += len(new_items)
        users.update(r["user_id"] for r in rows)
        day += dt.timedelta(days=1)
    summary.users = len(users)
    return summary


def event_record(
    *, event_id: str, user_id: str, item_id: str, event_type: str, ts: dt.datetime, source: str,
    rating: float | None = None, value: float | None = None, session_id: str | None = None,
) -> dict:
    """One raw event in contract form (column order as declared)."""
    return {
        "event_id": event_id, "user_id": user_id, "item_id": item_id, "event_type": event_type,
        "event_ts": format_ts(ts), "rating": rating, "value": value, "session_id": session_id, "source": source,
    }


def item_record(*, title: str | None = None, brand: str | None = None, categories: list[str] | None = None,
                description: str | None = None, price: float | None = None) -> dict:
    """One catalog record without id and ``updated_at`` (the replay adds them)."""
    return {"title": title, "brand": brand, "categories": categories, "description": description, "price": price}
