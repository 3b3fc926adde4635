"""Raw data contracts, declared once.

Each contract is a list of columns from which the other forms are derived: a
pyarrow schema (parquet, Feast), a Spark DDL string (the log job), a per-record
check in Python (ingest adapters, tests) and, later, Great Expectations suites.
Raw files are JSON lines; timestamps are ISO-8601 strings with an explicit
offset (``Z`` or ``+HH:MM``) and are normalised to UTC downstream.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

ColumnType = Literal["string", "double", "timestamp", "string_list"]

#: Events before this instant are rejected as impossible for any source we read.
MIN_EVENT_TS = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
#: The one accepted timestamp form: ISO-8601, seconds, optional fraction, explicit offset.
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
#: How far past the end of its ``ds`` an event may be stamped (client clock skew).
FUTURE_TOLERANCE = dt.timedelta(hours=1)


class EventType(str, Enum):
    VIEW = "view"
    CLICK = "click"
    CART = "cart"
    PURCHASE = "purchase"
    RATE = "rate"


class Reason(str, Enum):
    """Why a raw row is quarantined. Stable codes: reports and tests count by them."""

    EMPTY_LINE = "empty_line"
    INVALID_UTF8 = "invalid_utf8"
    BROKEN_JSON = "broken_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TS_IN_FUTURE = "ts_in_future"
    TS_BEFORE_MIN = "ts_before_min"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_ITEM = "unknown_item"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool
    doc: str
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Violation:
    reason: Reason
    column: str | None
    detail: str

    def __str__(self) -> str:
        where = f" in {self.column}" if self.column else ""
        return f"{self.reason.value}{where}: {self.detail}"


@dataclass(frozen=True)
class Contract:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def arrow_schema(self):
        import pyarrow as pa

        types = {
            "string": pa.string(),
            "double": pa.float64(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "string_list": pa.list_(pa.string()),
        }
        return pa.schema([pa.field(c.name, types[c.type], nullable=not c.required) for c in self.columns])

    def spark_ddl(self, timestamps_as_string: bool = True) -> str:
        """Spark schema; raw reads keep timestamps as strings so bad ones can be quarantined."""
        types = {
            "string": "STRING",
            "double": "DOUBLE",
            "timestamp": "STRING" if timestamps_as_string else "TIMESTAMP",
            "string_list": "ARRAY<STRING>",
        }
        return ", ".join(f"`{c.name}` {types[c.type]}" for c in self.columns)

    def check(self, record: Any, *, ds: str | dt.date | None = None, known_items: Collection[str] | None = None) -> Violation | None:
        """The first contract violation of one parsed JSON record, or None."""
        if not isinstance(record, Mapping):
            return Violation(Reason.NOT_AN_OBJECT, None, f"expected a JSON object, got {type(record).__name__}")
        for col in self.columns:
            value = record.get(col.name)
            if value is None:
                if col.required:
                    return Violation(Reason.MISSING_FIELD, col.name, "required field is missing or null")
                continue
            problem = _check_value(col, value, ds)
            if problem:
                return problem
        if known_items is not None and "item_id" in record and record["item_id"] not in known_items:
            return Violation(Reason.UNKNOWN_ITEM, "item_id", f"{record['item_id']!r} is not in the catalog")
        return None


def classify_line(line: bytes, contract: Contract, **check: Any) -> Violation | None:
    """Reference classification of one raw JSON line: the first thing wrong with it, or None.

    The order is the one every reader must follow: blank, encoding, JSON, shape,
    then the contract's columns. Spark does the same in bulk; this is the
    single-line version for tests and small inputs.
    """
    if not line.strip():
        return Violation(Reason.EMPTY_LINE, None, "blank line")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Violation(Reason.INVALID_UTF8, None, f"byte {exc.start} is not UTF-8")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return Violation(Reason.BROKEN_JSON, None, exc.msg)
    return contract.check(record, **check)


def parse_ts(value: str) -> dt.datetime | None:
    """An ISO-8601 timestamp with an explicit offset, as UTC; None if it is not one."""
    if not isinstance(value, str) or not _TS_RE.match(value):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.timezone.utc)


def format_ts(value: dt.datetime) -> str:
    """The canonical raw form: UTC with a ``Z`` suffix."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{value.microsecond:06d}Z" if value.microsecond else "Z"
    )


_TS_RE = re.compile(TS_PATTERN)


def _check_value(col: Column, value: Any, ds: str | dt.date | None) -> Violation | None:
    if col.type in ("string", "timestamp"):
        if not isinstance(value, str):
            return Violation(Reason.WRONG_TYPE, col.name, f"expected a string, got {type(value).__name__}")
        if col.required and not value.strip():
            return Violation(Reason.MISSING_FIELD, col.name, "required field is empty")
    if col.type == "double" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return Violation(Reason.WRONG_TYPE, col.name, f"expected a number, got {type(value).__name__}")
    if col.type == "string_list" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        return Violation(Reason.WRONG_TYPE, col.name, "expected a list of strings")
    if col.allowed is not None and value not in col.allowed:
        reason = Reason.UNKNOWN_EVENT_TYPE if col.name == "event_type" else Reason.OUT_OF_RANGE
        return Violation(reason, col.name, f"{value!r} is not one of {', '.join(col.allowed)}")
    if col.type == "double":
        if (col.minimum is not None and value < col.minimum) or (col.maximum is not None and value > col.maximum):
            return Violation(Reason.OUT_OF_RANGE, col.name, f"{value} is outside [{col.minimum}, {col.maximum}]")
    if col.type == "timestamp":
        ts = parse_ts(value)
        if ts is None:
            return Violation(Reason.BAD_TIMESTAMP, col.name, f"{value!r} is not ISO-8601 with an offset")
        if ts < MIN_EVENT_TS:
            return Violation(Reason.TS_BEFORE_MIN, col.name, f"{value} is before {MIN_EVENT_TS:%Y-%m-%d}")
        if ds is not None:
            day_end = dt.datetime.combine(dt.date.fromisoformat(str(ds)), dt.time(), dt.timezone.utc) + dt.timedelta(days=1)
            if ts > day_end + FUTURE_TOLERANCE:
                return Violation(Reason.TS_IN_FUTURE, col.name, f"{value} is after the end of {ds}")
    return None


EVENTS = Contract(
    name="events",
    key=("event_id",),
    columns=(
        Column("event_id", "string", True, "Unique id of the event at its source; exact duplicates share it."),
        Column("user_id", "string", True, "External user id."),
        Column("item_id", "string", True, "External item id; must exist in the item catalog."),
        Column("event_type", "string", True, "Kind of interaction.", allowed=tuple(e.value for e in EventType)),
        Column("event_ts", "timestamp", True, "When it happened, ISO-8601 with offset; normalised to UTC."),
        Column("rating", "double", False, "Explicit rating for 'rate' events.", minimum=0.0, maximum=5.0),
        Column("value", "double", False, "Monetary value for 'purchase' events.", minimum=0.0),
        Column("session_id", "string", False, "Session the event belongs to, if the source has sessions."),
        Column("source", "string", True, "Name of the log source (simulator, ml-100k, ...)."),
    ),
)

ITEMS = Contract(
    name="items",
    key=("item_id", "updated_at"),
    columns=(
        Column("item_id", "string", True, "External item id."),
        Column("title", "string", False, "Product title; may be absent for id-only datasets."),
        Column("brand", "string", False, "Brand or maker."),
        Column("categories", "string_list", False, "Category path or tags, broadest first."),
        Column("description", "string", False, "Free text; untrusted (never an instruction)."),
        Column("price", "double", False, "Current price.", minimum=0.0),
        Column("updated_at", "timestamp", True, "When this version of the item record took effect."),
    ),
)
