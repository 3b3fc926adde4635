import pyarrow as pa
import pytest

from jobs.ingest.replay import event_record, item_record
from reaflow.contracts import EVENTS, ITEMS, EventType, Reason, format_ts, parse_ts

GOOD = {
    "event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "purchase",
    "event_ts": "2024-01-01T10:00:00+02:00", "rating": None, "value": 12.5, "session_id": "s1", "source": "test",
}


def test_valid_event_passes():
    assert EVENTS.check(GOOD, ds="2024-01-01", known_items={"i1"}) is None


@pytest.mark.parametrize(
    ("change", "reason", "column"),
    [
        ({"user_id": None}, Reason.MISSING_FIELD, "user_id"),
        ({"event_id": "  "}, Reason.MISSING_FIELD, "event_id"),
        ({"user_id": 7}, Reason.WRONG_TYPE, "user_id"),
        ({"value": "12.5"}, Reason.WRONG_TYPE, "value"),
        ({"value": True}, Reason.WRONG_TYPE, "value"),
        ({"event_type": "hover"}, Reason.UNKNOWN_EVENT_TYPE, "event_type"),
        ({"event_ts": "2024-01-01T10:00:00"}, Reason.BAD_TIMESTAMP, "event_ts"),
        ({"event_ts": "soon"}, Reason.BAD_TIMESTAMP, "event_ts"),
        ({"event_ts": "1989-12-31T23:59:59Z"}, Reason.TS_BEFORE_MIN, "event_ts"),
        ({"event_ts": "2024-01-02T01:30:00Z"}, Reason.TS_IN_FUTURE, "event_ts"),
        ({"rating": 6.0}, Reason.OUT_OF_RANGE, "rating"),
        ({"item_id": "i404"}, Reason.UNKNOWN_ITEM, "item_id"),
    ],
)
def test_each_violation_has_its_reason(change, reason, column):
    violation = EVENTS.check({**GOOD, **change}, ds="2024-01-01", known_items={"i1"})
    assert violation is not None and (violation.reason, violation.column) == (reason, column)
    assert reason.value in str(violation)


def test_not_an_object():
    assert EVENTS.check(["a"]).reason is Reason.NOT_AN_OBJECT


def test_within_clock_skew_tolerance_is_accepted():
    assert EVENTS.check({**GOOD, "event_ts": "2024-01-02T00:30:00Z"}, ds="2024-01-01") is None


def test_timestamps_normalise_to_utc():
    ts = parse_ts("2024-01-01T10:00:00+02:00")
    assert format_ts(ts) == "2024-01-01T08:00:00Z"
    assert parse_ts("2024-01-01T10:00:00") is None


def test_derived_schemas_agree():
    schema = EVENTS.arrow_schema()
    assert schema.names == EVENTS.names
    assert schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("event_id").nullable and schema.field("rating").nullable
    assert ITEMS.arrow_schema().field("categories").type == pa.list_(pa.string())
    assert "`event_ts` STRING" in EVENTS.spark_ddl()
    assert "`event_ts` TIMESTAMP" in EVENTS.spark_ddl(timestamps_as_string=False)
    assert set(EVENTS.column("event_type").allowed) == {e.value for e in EventType}


def test_adapter_record_builders_follow_the_contracts():
    import datetime as dt

    record = event_record(event_id="e", user_id="u", item_id="i", event_type="rate",
                          ts=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), source="t", rating=4.0)
    assert list(record) == EVENTS.names
    assert EVENTS.check(record) is None
    item = {**item_record(title="t"), "item_id": "i", "updated_at": "2024-01-01T00:00:00Z"}
    assert set(item) == set(ITEMS.names)
    assert ITEMS.check(item) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", Reason.EMPTY_LINE),
        (b"  \t", Reason.EMPTY_LINE),
        (b'{"user_id":"\xff\xfe"}', Reason.INVALID_UTF8),
        (b'{"event_id":"e1","us', Reason.BROKEN_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b"null", Reason.NOT_AN_OBJECT),
    ],
)
def test_line_level_reasons(line, reason):
    from reaflow.contracts import classify_line

    assert classify_line(line, EVENTS).reason is reason


def test_valid_line_classifies_clean():
    import json

    from reaflow.contracts import classify_line

    assert classify_line(json.dumps(GOOD).encode(), EVENTS, ds="2024-01-01") is None
