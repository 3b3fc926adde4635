"""The raw contracts compiled to Spark expressions.

The same order as ``reaflow.contracts.classify_line``: blank line, UTF-8, JSON,
object, then each column in declared order (missing, type, allowed values,
range, timestamp form and bounds). Lines are parsed once into a VARIANT, so a
value of the wrong JSON type is seen as such (Spark's typed JSON reader would
silently turn 12345 into "12345").
"""

from __future__ import annotations

import datetime as dt

from reaflow.contracts import FUTURE_TOLERANCE, MIN_EVENT_TS, TS_PATTERN, Column, Contract, Reason

_NUMERIC = r"^(BIGINT|INT|SMALLINT|TINYINT|DOUBLE|FLOAT|DECIMAL.*)$"


def _field(name: str) -> str:
    return f"variant_get(v, '$.{name}')"


def _conditions(col: Column, ds: str) -> list[tuple[str, Reason]]:
    value = _field(col.name)
    kind = f"schema_of_variant({value})"
    as_string = f"variant_get(v, '$.{col.name}', 'string')"
    rules: list[tuple[str, Reason]] = []
    missing = f"({value} IS NULL OR is_variant_null({value}))"
    if col.required:
        rules.append((missing, Reason.MISSING_FIELD))
    present = f"NOT {missing}"
    if col.type in ("string", "timestamp"):
        rules.append((f"{present} AND {kind} <> 'STRING'", Reason.WRONG_TYPE))
        if col.required:
            rules.append((f"{present} AND NOT {as_string} RLIKE '\\\\S'", Reason.MISSING_FIELD))
    elif col.type == "double":
        rules.append((f"{present} AND NOT ({kind} RLIKE '{_NUMERIC}')", Reason.WRONG_TYPE))
    elif col.type == "string_list":
        rules.append((f"{present} AND {kind} NOT IN ('ARRAY<STRING>', 'ARRAY<VOID>')", Reason.WRONG_TYPE))
    if col.allowed is not None:
        allowed = ", ".join(f"'{a}'" for a in col.allowed)
        reason = Reason.UNKNOWN_EVENT_TYPE if col.name == "event_type" else Reason.OUT_OF_RANGE
        rules.append((f"{present} AND {as_string} NOT IN ({allowed})", reason))
    if col.type == "double":
        number = f"variant_get(v, '$.{col.name}', 'double')"
        if col.minimum is not None:
            rules.append((f"{present} AND {number} < {col.minimum}", Reason.OUT_OF_RANGE))
        if col.maximum is not None:
            rules.append((f"{present} AND {number} > {col.maximum}", Reason.OUT_OF_RANGE))
    if col.type == "timestamp":
        pattern = TS_PATTERN.replace("\\", "\\\\")
        ts = f"try_to_timestamp({as_string})"
        rules.append((f"{present} AND (NOT {as_string} RLIKE '{pattern}' OR {ts} IS NULL)", Reason.BAD_TIMESTAMP))
        rules.append((f"{present} AND {ts} < TIMESTAMP '{MIN_EVENT_TS:%Y-%m-%d %H:%M:%S}'", Reason.TS_BEFORE_MIN))
        if ds is not None:
            limit = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time()) + dt.timedelta(days=1) + FUTURE_TOLERANCE
            rules.append((f"{present} AND {ts} > TIMESTAMP '{limit:%Y-%m-%d %H:%M:%S}'", Reason.TS_IN_FUTURE))
    return rules


def violation_sql(contract: Contract, ds: str | None) -> str:
    """SQL for the first violation of a raw line as ``'reason'`` or ``'reason:column'``; NULL if none.

    Expects columns ``line`` (the raw text) and ``v`` (``try_parse_json(line)``).
    """
    rules: list[tuple[str, str]] = [
        ("NOT line RLIKE '\\\\S'", Reason.EMPTY_LINE.value),
        ("NOT is_valid_utf8(line)", Reason.INVALID_UTF8.value),
        ("v IS NULL", Reason.BROKEN_JSON.value),
        ("NOT startswith(schema_of_variant(v), 'OBJECT')", Reason.NOT_AN_OBJECT.value),
    ]
    for col in contract.columns:
        rules.extend((cond, f"{reason.value}:{col.name}") for cond, reason in _conditions(col, ds))
    return "CASE " + " ".join(f"WHEN {cond} THEN '{label}'" for cond, label in rules) + " END"


def typed_select(contract: Contract) -> list[str]:
    """SQL expressions that extract every column of a valid line with its contract type."""
    out = []
    for col in contract.columns:
        if col.type == "string":
            out.append(f"variant_get(v, '$.{col.name}', 'string') AS {col.name}")
        elif col.type == "double":
            out.append(f"variant_get(v, '$.{col.name}', 'double') AS {col.name}")
        elif col.type == "timestamp":
            out.append(f"to_timestamp(variant_get(v, '$.{col.name}', 'string')) AS {col.name}")
        elif col.type == "string_list":
            out.append(f"variant_get(v, '$.{col.name}', 'array<string>') AS {col.name}")
    return out
