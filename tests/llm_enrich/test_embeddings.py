"""Sentence embeddings of metadata and knowledge records: stored once, aligned with a model's items."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from llm_enrich import prompts
from llm_enrich.embeddings import embed_items
from llm_enrich.schemas import ItemKnowledge
from llm_enrich.store import KnowledgeStore, record_key
from reaflow.lake import Dataset, Lake

DS = "2024-01-05"
CATALOG = [
    {"item_id": "a", "title": "Chef knife", "brand": "Kitchenly", "categories": ["Kitchen", "Cutlery"], "description": "Forged blade."},
    {"item_id": "b", "title": "Trail running shoes", "brand": None, "categories": ["Sports", "Running"], "description": None},
    {"item_id": "c", "title": None, "brand": None, "categories": [], "description": None},  # id only: no text to encode
]


def _write_catalog(lake: Lake, items: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**item, "price": 10.0, "updated_at": dt.datetime(2024, 1, 1)} for item in items]
    with lake.atomic_dir(lake.path(Dataset.CURATED_ITEMS, DS)) as staging:
        pq.write_table(pa.Table.from_pylist(rows), staging / "part-0.parquet")


def _store_record(lake: Lake, item: dict) -> None:
    metadata = prompts.clean_metadata(item, 1200)
    record = ItemKnowledge(reasoning="It cuts food.", category_path=["Kitchen", "Cutlery"], functions=["slicing"],
                           audience=["home cooks"], scenarios=["dinner prep"], key_attributes=["forged blade"],
                           complements=["cutting board"], substitutes=["santoku knife"],
                           summary="A forged chef knife for slicing and dicing.")
    chash = prompts.content_hash(metadata)
    KnowledgeStore(lake).append(DS, [{"key": record_key(item["item_id"], chash, "v", "m"), "item_id": item["item_id"],
                                      "content_hash": chash, "record": record.model_dump(), "status": "accepted",
                                      "ds": DS, "created_at": "2024-01-05T00:00:00+00:00"}])


def test_embeddings_are_stored_once_and_align_with_the_model_items(make_settings):
    from models.data import DataError, item_vectors

    settings = make_settings()
    lake = Lake(settings.lake_root)
    _write_catalog(lake, CATALOG)
    _store_record(lake, CATALOG[0])

    first = embed_items(settings, DS)
    assert first["metadata"] == {"items": 2, "encoded": 2, "cached": 0}
    assert first["knowledge"] == {"items": 1, "encoded": 1, "cached": 0}
    again = embed_items(settings, DS)
    assert again["metadata"]["encoded"] == 0 and again["knowledge"]["encoded"] == 0

    matrix, coverage = item_vectors(settings, ["", "b", "a", "c", "unknown"], "metadata")
    assert matrix.shape == (5, 384) and coverage == pytest.approx(2 / 4)
    assert np.allclose(np.linalg.norm(matrix[[1, 2]], axis=1), 1.0, atol=1e-4)
    assert not matrix[[0, 3, 4]].any()  # padding and items without text stay zero
    knowledge, coverage = item_vectors(settings, ["", "a", "b"], "knowledge")
    assert coverage == 0.5 and knowledge[1].any() and not knowledge[2].any()
    # The record and the raw metadata are different texts: different vectors.
    assert float(matrix[2] @ knowledge[1]) < 0.999

    # A changed title is a new content hash: encoded again, and the newest vector wins.
    _write_catalog(lake, [dict(CATALOG[0], title="Bread knife"), *CATALOG[1:]])
    changed = embed_items(settings, DS)
    assert changed["metadata"] == {"items": 2, "encoded": 1, "cached": 1}
    assert changed["knowledge"]["items"] == 0  # the record describes the old content: not encoded again
    newer, _ = item_vectors(settings, ["", "a"], "metadata")
    assert not np.allclose(newer[1], matrix[2])

    with pytest.raises(DataError, match="no knowledge item embeddings"):
        item_vectors(make_settings(lake_root=str(lake.root) + "-empty"), ["", "a"], "knowledge")
