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


def fields_sql(contract: Contract) -> list[str]:
    """Extract what the checks need from ``v`` once per line: each column's JSON kind and text.

    The checks then read these columns; writing ``variant_get`` inside every
    CASE branch instead made the check several times slower.
    """
    out = ["line", "v", "schema_of_variant(v) AS _kind"]
    for col in contract.columns:
        out.append(f"schema_of_variant(variant_get(v, '$.{col.name}')) AS `_k_{col.name}`")
        out.append(f"variant_get(v, '$.{col.name}', 'string') AS `_s_{col.name}`")
        if col.type == "timestamp":
            out.append(f"try_to_timestamp(variant_get(v, '$.{col.name}', 'string')) AS `_t_{col.name}`")
    return out


def _conditions(col: Column, ds: str | None) -> list[tuple[str, Reason]]:
    kind, text = f"`_k_{col.name}`", f"`_s_{col.name}`"
    rules: list[tuple[str, Reason]] = []
    missing = f"({kind} IS NULL OR {kind} = 'VOID')"
    if col.required:
        rules.append((missing, Reason.MISSING_FIELD))
    present = f"NOT {missing}"
    if col.type in ("string", "timestamp"):
        rules.append((f"{present} AND {kind} <> 'STRING'", Reason.WRONG_TYPE))
        if col.required:
            rules.append((f"{present} AND NOT {text} RLIKE '\\\\S'", Reason.MISSING_FIELD))
    elif col.type == "double":
        rules.append((f"{present} AND NOT ({kind} RLIKE '{_NUMERIC}')", Reason.WRONG_TYPE))
    elif col.type == "string_list":
        rules.append((f"{present} AND {kind} NOT IN ('ARRAY<STRING>', 'ARRAY<VOID>')", Reason.WRONG_TYPE))
    if col.allowed is not None:
        allowed = ", ".join(f"'{a}'" for a in col.allowed)
        reason = Reason.UNKNOWN_EVENT_TYPE if col.name == "event_type" else Reason.OUT_OF_RANGE
        rules.append((f"{present} AND {text} NOT IN ({allowed})", reason))
    if col.type == "double":
        if col.minimum is not None:
            rules.append((f"{present} AND try_cast({text} AS DOUBLE) < {col.minimum}", Reason.OUT_OF_RANGE))
        if col.maximum is not None:
            rules.append((f"{present} AND try_cast({text} AS DOUBLE) > {col.maximum}", Reason.OUT_OF_RANGE))
    if col.type == "timestamp":
        pattern = TS_PATTERN.replace("\\", "\\\\")
        ts = f"`_t_{col.name}`"
        rules.append((f"{present} AND (NOT {text} RLIKE '{pattern}' OR {ts} IS NULL)", Reason.BAD_TIMESTAMP))
        rules.append((f"{present} AND {ts} < TIMESTAMP '{MIN_EVENT_TS:%Y-%m-%d %H:%M:%S}'", Reason.TS_BEFORE_MIN))
        if ds is not None:
            limit = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time()) + dt.timedelta(days=1) + FUTURE_TOLERANCE
            rules.append((f"{present} AND {ts} > TIMESTAMP '{limit:%Y-%m-%d %H:%M:%S}'", Reason.TS_IN_FUTURE))
    return rules


def violation_sql(contract: Contract, ds: str | None) -> str:
    """SQL for the first violation of a raw line as ``'reason'`` or ``'reason:column'``; NULL if none.

    Expects the columns of ``fields_sql``.
    """
    rules: list[tuple[str, str]] = [
        ("NOT line RLIKE '\\\\S'", Reason.EMPTY_LINE.value),
        ("NOT is_valid_utf8(line)", Reason.INVALID_UTF8.value),
        ("v IS NULL", Reason.BROKEN_JSON.value),
        ("NOT startswith(_kind, 'OBJECT')", Reason.NOT_AN_OBJECT.value),
    ]
    for col in contract.columns:
        rules.extend((cond, f"{reason.value}:{col.name}") for cond, reason in _conditions(col, ds))
    # Every condition is evaluated (IF's predicate always is), so Spark shares the field
    # extractions between them; a CASE would re-evaluate them branch by branch.
    flags = ", ".join(f"IF({cond}, '{label}', NULL)" for cond, label in rules)
    return f"try_element_at(array_compact(array({flags})), 1)"


def typed_select(contract: Contract) -> list[str]:
    """SQL that gives every column of a valid line its contract type (from the ``fields_sql`` columns)."""
    out = []
    for col in contract.columns:
        if col.type == "string":
            out.append(f"`_s_{col.name}` AS {col.name}")
        elif col.type == "double":
            out.append(f"try_cast(`_s_{col.name}` AS DOUBLE) AS {col.name}")
        elif col.type == "timestamp":
            out.append(f"`_t_{col.name}` AS {col.name}")
        elif col.type == "string_list":
            out.append(f"variant_get(v, '$.{col.name}', 'array<string>') AS {col.name}")
    return out


def quarantine_frame(bad, ds: str):
    """Rejected lines as stored in quarantine: readable text, the exact bytes, reason and column."""
    from pyspark.sql import functions as F

    return bad.select(
        F.expr("make_valid_utf8(line)").alias("line"),
        F.col("line").cast("binary").alias("raw"),
        F.split_part("violation", F.lit(":"), F.lit(1)).alias("reason"),
        F.nullif(F.split_part("violation", F.lit(":"), F.lit(2)), F.lit("")).alias("column"),
        F.lit(ds).alias("ds"),
    )
