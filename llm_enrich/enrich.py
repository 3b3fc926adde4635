"""Item knowledge enrichment of one day's catalog: new and changed items only, under a budget, resumable.

``enrich_items(settings, ds)`` is the DAG task: it reads the curated catalog
and item popularity of ``ds``, skips every item whose outcome is cached for
its current content (so an unchanged catalog costs no LLM call), takes the
rest by popularity up to ``enrich.max_items`` and ``enrich.max_seconds``,
runs the agents batch by batch (each batch stored as soon as it is done), and
reports coverage and cost. Items with no text at all (id-only catalogs) are
counted and left to their id embedding.
"""

from __future__ import annotations

import datetime as dt
import time

from llm_enrich import prompts
from llm_enrich.agents import ItemOutcome, analyse_items, plan_categories
from llm_enrich.backends import LLMBackend, build_backend
from llm_enrich.schemas import CategoryGuidance
from llm_enrich.store import KnowledgeStore, guidance_key, record_key
from reaflow.errors import InputError
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings

STATUSES = ("accepted", "revised", "rejected", "quarantined")


def category_of(metadata: dict) -> str:
    """The planner's unit: the two broadest category levels."""
    return " > ".join(metadata.get("categories", [])[:2]) or "(uncategorized)"


def enrich_items(settings: Settings, ds: str | dt.date, *, backend: LLMBackend | None = None, progress: bool = False) -> dict:
    """The DAG task: enrich the catalog of ``ds``; writes the cache, the day's quarantine and a report."""
    ds = ds_str(ds)
    lake = Lake.from_settings(settings)
    items = read_catalog(lake, ds)
    if not settings.enrich.enabled:
        summary = {"ds": ds, "enabled": False, "catalog_items": len(items)}
        lake.write_json(lake.path(Dataset.REPORTS, ds, "enrich_items.json"), summary)
        return summary
    summary = enrich_catalog(settings, items, read_popularity(lake, ds), ds, backend=backend, progress=progress)
    lake.write_json(lake.path(Dataset.REPORTS, ds, "enrich_items.json"), summary)
    log_run(settings, summary)
    return summary


def read_catalog(lake: Lake, ds: str) -> list[dict]:
    import pyarrow.dataset as pads

    location = lake.path(Dataset.CURATED_ITEMS, ds)
    if not lake.is_complete(location):
        raise InputError(f"{location} is missing or incomplete; run process_catalog for {ds} first")
    columns = ["item_id", "title", "brand", "categories", "description"]
    return pads.dataset(location, format="parquet").to_table(columns=columns).to_pylist()


def read_popularity(lake: Lake, ds: str) -> dict[str, int]:
    """Positive interactions per item as of ``ds`` (empty before the first sequences are built)."""
    import pyarrow.dataset as pads

    location = lake.path(Dataset.CURATED_ITEM_STATS, ds)
    if not lake.is_complete(location):
        return {}
    table = pads.dataset(location, format="parquet").to_table(columns=["item_id", "n_positive"])
    return dict(zip(table.column("item_id").to_pylist(), table.column("n_positive").to_pylist(), strict=True))


def enrich_catalog(settings: Settings, items: list[dict], popularity: dict[str, int], ds: str, *,
                   backend: LLMBackend | None = None, progress: bool = False) -> dict:
    """Enrich ``items`` (catalog rows) not yet in the cache; returns the run summary."""
    started = time.perf_counter()
    cfg = settings.enrich
    lake = Lake.from_settings(settings)
    store = KnowledgeStore(lake)
    backend = backend or build_backend(settings)
    model_id, version = backend.model_id, prompts.PROMPT_VERSION

    cached = store.outcomes()
    prepared, no_text, flagged, pending = {}, 0, 0, []
    for item in items:
        item_id = str(item["item_id"])
        metadata = prompts.clean_metadata(item, cfg.max_description_chars)
        if not any(k in metadata for k in ("title", "description", "categories")):
            no_text += 1
            continue
        flags = prompts.injection_flags(item)
        flagged += bool(flags)
        chash = prompts.content_hash(metadata)
        key = record_key(item_id, chash, version, model_id)
        prepared[item_id] = (metadata, chash, key, flags)
        if key not in cached:
            pending.append(item_id)
    pending.sort(key=lambda i: (-(popularity.get(i) or 0), i))
    selected = pending[:cfg.max_items] if cfg.max_items else pending

    counts = dict.fromkeys(STATUSES, 0)
    guidance_counts = {"planned": 0, "cached": 0, "failed": 0}
    processed = 0
    chunk_size = max(settings.llm.batch_size, 1)
    bar = _progress(len(selected), progress)
    guidance: dict[str, CategoryGuidance | None] = {}
    try:
        for start in range(0, len(selected), chunk_size):
            if cfg.max_seconds and time.perf_counter() - started > cfg.max_seconds:
                break
            chunk = selected[start:start + chunk_size]
            # Categories are planned when their first item comes up, so the budget is not spent on plans for items it never reaches.
            guidance.update(_guidance(store, backend, [i for i in chunk if category_of(prepared[i][0]) not in guidance],
                                      prepared, version, cfg.repair_attempts, guidance_counts))
            outcomes = analyse_items(backend, [(i, prepared[i][0], guidance.get(category_of(prepared[i][0]))) for i in chunk],
                                     judge=cfg.judge, repair_attempts=cfg.repair_attempts)
            store.append(ds, [_row(o, prepared[o.item_id], version, model_id, ds) for o in outcomes])
            for outcome in outcomes:
                counts[outcome.status] += 1
            processed += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()

    current = {item_id: chash for item_id, (_, chash, _, _) in prepared.items()}
    stored = store.outcomes()  # read once more: this run's chunks are in it now
    usable = store.latest_records(current, stored)
    quarantined = _write_quarantine(lake, stored, ds)
    summary = {
        "ds": ds, "model_id": model_id, "prompt_version": version,
        "catalog_items": len(items), "items_without_text": no_text, "items_with_text": len(prepared),
        "cached_before": len(prepared) - len(pending), "pending": len(pending), "processed": processed,
        "deferred": len(pending) - processed, **counts, "quarantine_rows": quarantined,
        "flagged_injection": flagged, "guidance": guidance_counts,
        "coverage": round(len(usable) / len(prepared), 4) if prepared else 0.0,
        "seconds": round(time.perf_counter() - started, 2), **backend.usage.as_dict(),
    }
    summary["items_per_minute"] = round(60 * processed / summary["seconds"], 2) if processed and summary["seconds"] else 0.0
    return summary


def _guidance(store: KnowledgeStore, backend: LLMBackend, item_ids: list[str], prepared: dict, version: str,
              repair_attempts: int, counts: dict) -> dict[str, CategoryGuidance | None]:
    """The planner's guidance for the categories of ``item_ids`` (cached per category, prompt version and model; None: failed)."""
    examples: dict[str, list[dict]] = {}
    for item_id in item_ids:
        examples.setdefault(category_of(prepared[item_id][0]), []).append(prepared[item_id][0])
    found: dict[str, CategoryGuidance | None] = {}
    missing: dict[str, list[dict]] = {}
    for category, metas in examples.items():
        stored = store.guidance(guidance_key(category, version, backend.model_id))
        if stored is None:
            missing[category] = metas
        elif stored.get("guidance"):
            found[category] = CategoryGuidance.model_validate(stored["guidance"])
            counts["cached"] += 1
        else:
            found[category] = None
            counts["failed"] += 1  # planned before and failed: its items go without guidance
    for category, answer in plan_categories(backend, missing, repair_attempts).items():
        payload = {"category": category, "prompt_version": version, "model_id": backend.model_id,
                   "guidance": answer.value.model_dump() if answer.value else None, "error": answer.error}
        store.save_guidance(guidance_key(category, version, backend.model_id), payload)
        found[category] = answer.value
        counts["planned" if answer.value is not None else "failed"] += 1
    return found


def _row(outcome: ItemOutcome, prepared: tuple, version: str, model_id: str, ds: str) -> dict:
    metadata, chash, key, flags = prepared
    return {"key": key, "item_id": outcome.item_id, "content_hash": chash, "prompt_version": version, "model_id": model_id,
            "status": outcome.status, "record": outcome.record.model_dump() if outcome.record else None,
            "reason": outcome.reason, "verdicts": outcome.verdicts, "repairs": outcome.repairs, "flags": flags,
            "metadata": metadata, "ds": ds, "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}


def _write_quarantine(lake: Lake, outcomes: dict[str, dict], ds: str) -> int:
    """The day's items without a usable record (rejected or quarantined), each with its reason."""
    import json

    rows = [r for r in outcomes.values() if r["ds"] == ds and r["record"] is None]
    rows.sort(key=lambda r: r["item_id"])
    with lake.atomic_dir(lake.path(Dataset.QUARANTINE_KNOWLEDGE, ds)) as staging:
        (staging / "items.jsonl").write_text(
            "".join(json.dumps({k: r[k] for k in ("item_id", "status", "reason", "flags", "content_hash", "model_id")}) + "\n"
                    for r in rows), encoding="utf-8")
    return len(rows)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="enrich", unit="item", disable=not enabled)


def log_run(settings: Settings, summary: dict) -> str:
    """The run summary as an MLflow run in ``<experiment>-enrich`` (params: model, prompts, budget; metrics: counts, tokens, seconds)."""
    import mlflow

    from models.tracking import experiment_id

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with mlflow.start_run(run_name=f"enrich-{summary['ds']}", experiment_id=experiment_id(mlflow, settings, "enrich")) as run:
        mlflow.set_tags({"stage": "enrich_items", "ds": summary["ds"]})
        mlflow.log_params({"model_id": summary["model_id"], "prompt_version": summary["prompt_version"],
                           **{f"enrich.{k}": str(v) for k, v in settings.enrich.model_dump(mode="json").items()}})
        mlflow.log_metrics(numbers)
        mlflow.log_dict(summary, "enrich_summary.json")
    return run.info.run_id
