"""The knowledge cache in the lake: append-only chunks of item outcomes, and category guidance.

An outcome (accepted, revised, rejected or quarantined) is keyed by
(item id, content hash, prompt version, model id): rerunning on an unchanged
catalog finds every key and calls no LLM, and changing the metadata, the
prompts or the model makes new keys. Each chunk is written atomically as soon
as its batch is done, so a crashed run loses at most the batch in flight.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

from reaflow.lake import Dataset, Lake


def record_key(item_id: str, content_hash: str, prompt_version: str, model_id: str) -> str:
    return hashlib.sha256("\x1f".join([item_id, content_hash, prompt_version, model_id]).encode()).hexdigest()[:24]


def guidance_key(category: str, prompt_version: str, model_id: str) -> str:
    return hashlib.sha256("\x1f".join([category, prompt_version, model_id]).encode()).hexdigest()[:24]


class KnowledgeStore:
    def __init__(self, lake: Lake):
        self.lake = lake
        self.records_dir = lake.path(Dataset.ITEM_KNOWLEDGE, None, "records")
        self.guidance_dir = lake.path(Dataset.ITEM_KNOWLEDGE, None, "guidance")

    # ---- item outcomes ------------------------------------------------------
    def outcomes(self) -> dict[str, dict]:
        """Every stored outcome by key (a later chunk wins if a key appears twice)."""
        found: dict[str, dict] = {}
        for chunk in self.lake.files(self.records_dir, ".jsonl"):
            for line in self.lake.read_text(chunk).splitlines():
                if line.strip():
                    row = json.loads(line)
                    found[row["key"]] = row
        return found

    def append(self, ds: str, rows: list[dict]) -> str | None:
        """Write one chunk of outcomes atomically; returns its location."""
        if not rows:
            return None
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        location = f"{self.records_dir}/ds={ds}-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        with self.lake.atomic_file(location) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
        return location

    def latest_records(self, item_ids: dict[str, str] | None = None, outcomes: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per item, the usable record (accepted or revised) of its current content hash.

        ``item_ids`` maps item id -> current content hash; None takes each
        item's most recent usable record whatever its hash. ``outcomes``: the
        store as already read by the caller (None reads it).
        """
        best: dict[str, dict] = {}
        for row in (self.outcomes() if outcomes is None else outcomes).values():
            if row["record"] is None:
                continue
            if item_ids is not None and item_ids.get(row["item_id"]) != row["content_hash"]:
                continue
            held = best.get(row["item_id"])
            if held is None or row["created_at"] > held["created_at"]:
                best[row["item_id"]] = row
        return best

    # ---- category guidance --------------------------------------------------
    def guidance(self, key: str) -> dict | None:
        location = f"{self.guidance_dir}/{key}.json"
        return self.lake.read_json(location) if self.lake.exists(location) else None

    def save_guidance(self, key: str, payload: dict) -> None:
        self.lake.write_json(f"{self.guidance_dir}/{key}.json", payload)
