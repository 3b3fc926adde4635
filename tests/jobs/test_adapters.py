"""Public dataset adapters: exact counts on the real files, clear errors on wrong ones."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from jobs.ingest import ingest
from jobs.ingest.amazon import synthetic_ts
from reaflow.contracts import EVENTS, ITEMS, classify_line, parse_ts
from reaflow.errors import InputError
from reaflow.lake import Dataset, Lake


def _read_back(lake_root: str, dataset: Dataset) -> list[dict]:
    lake = Lake(lake_root)
    rows = []
    for ds in lake.partitions(dataset):
        for part in sorted(Path(lake.path(dataset, ds)).glob("part-*.jsonl")):
            for line in part.open("rb"):
                line = line.rstrip(b"\n")
                assert classify_line(line, EVENTS if dataset is Dataset.RAW_EVENTS else ITEMS, ds=ds) is None, line
                record = json.loads(line)
                if dataset is Dataset.RAW_EVENTS:
                    assert record["event_ts"].startswith(ds)
                rows.append(record)
    return rows


def _counts(settings) -> tuple[int, int, int]:
    events = _read_back(settings.lake_root, Dataset.RAW_EVENTS)
    items = _read_back(settings.lake_root, Dataset.RAW_ITEMS)
    assert len({i["item_id"] for i in items}) == len(items)  # each item delivered once
    assert {e["item_id"] for e in events} <= {i["item_id"] for i in items}
    return len(events), len({e["user_id"] for e in events}), len(items)


def test_ml100k_exact_counts_and_real_days(make_settings, shared_data):
    settings = make_settings(source={"name": "ml-100k", "path": shared_data("ml-100k")})
    summary = ingest(settings)
    assert (summary["events"], summary["users"], summary["items"]) == (100_000, 943, 1_682)
    assert _counts(settings) == (100_000, 943, 1_682)
    # Real timestamps: one partition per calendar day from the first to the last rating, empty days included.
    assert summary["days"][0] == "1997-09-20" and summary["days"][-1] == "1998-04-22"
    assert len(summary["days"]) == 215 == len(Lake(settings.lake_root).partitions(Dataset.RAW_EVENTS))
    toy_story = next(i for i in _read_back(settings.lake_root, Dataset.RAW_ITEMS) if i["item_id"] == "1")
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["categories"] == ["Animation", "Children's", "Comedy"]


def test_ml100k_day_by_day_is_the_same_as_all_at_once(make_settings, shared_data, tmp_path):
    whole = make_settings(lake_root=str(tmp_path / "whole"), source={"name": "ml-100k", "path": shared_data("ml-100k")})
    daily = make_settings(lake_root=str(tmp_path / "daily"), source={"name": "ml-100k", "path": shared_data("ml-100k")})
    ingest(whole, ds_from="1997-12-01", ds_to="1997-12-03")
    for ds in ("1997-12-01", "1997-12-02", "1997-12-03", "1997-12-02"):  # including a rerun
        ingest(daily, ds_from=ds, ds_to=ds)
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
    assert files(whole.lake_root) == files(daily.lake_root)
    assert len(files(whole.lake_root)) == 3 * 2 * 3  # 3 days x (events, items) x (part, manifest, _SUCCESS)


@pytest.mark.parametrize(
    ("name", "folder", "expected"),
    [
        ("amazon-beauty", "amazon-beauty/Beauty.txt", (198_502, 22_363, 12_101)),
        ("amazon-sports", "amazon-sports", (296_337, 35_598, 18_357)),
        ("amazon-scientific", "amazon-scientific", (19_712, 2_928, 1_585)),
    ],
)
def test_amazon_exact_counts(make_settings, shared_data, name, folder, expected):
    dataset, _, file = folder.partition("/")
    path = shared_data(dataset) / file if file else shared_data(dataset)
    settings = make_settings(source={"name": name, "path": path, "synthetic_days": 10})
    summary = ingest(settings)
    assert (summary["events"], summary["users"]) == expected[:2]
    assert _counts(settings) == expected
    assert len(summary["days"]) == 10


def test_amazon_synthetic_time_keeps_each_users_order(make_settings, shared_data):
    path = shared_data("amazon-beauty") / "Beauty.txt"
    settings = make_settings(source={"name": "amazon-beauty", "path": path, "synthetic_days": 30})
    ingest(settings)
    events = _read_back(settings.lake_root, Dataset.RAW_EVENTS)
    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    first_line = path.open().readline().split()
    got = sorted(by_user[first_line[0]], key=lambda e: e["event_ts"])
    assert [e["item_id"] for e in got] == first_line[1:]
    assert all(len({e["event_ts"] for e in seq}) == len(seq) for seq in by_user.values())


def test_scientific_items_carry_text(make_settings, shared_data):
    settings = make_settings(source={"name": "amazon-scientific", "path": shared_data("amazon-scientific")})
    ingest(settings)
    items = {i["item_id"]: i for i in _read_back(settings.lake_root, Dataset.RAW_ITEMS)}
    glue = items["B0000223UV"]
    assert glue["title"].startswith("Gorilla Original Gorilla Glue")
    assert glue["brand"] == "Gorilla"
    assert glue["categories"][0].startswith("Industrial & Scientific")


def test_synthetic_timestamps_are_strictly_increasing():
    start = dt.date(2024, 1, 1)
    stamps = [synthetic_ts(j, 7, start, 30) for j in range(7)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 7
    assert stamps[0] >= dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert stamps[-1] < dt.datetime(2024, 1, 31, tzinfo=dt.timezone.utc)


def test_ml1m_format(make_settings, tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    settings = make_settings(source={"name": "ml-1m", "path": folder})
    summary = ingest(settings)
    assert (summary["events"], summary["users"], summary["items"]) == (3, 2, 2)
    items = {i["item_id"]: i for i in _read_back(settings.lake_root, Dataset.RAW_ITEMS)}
    assert items["2"]["title"] == "Amélie (2001)" and items["2"]["categories"] == ["Comedy", "Romance"]
    events = _read_back(settings.lake_root, Dataset.RAW_EVENTS)
    assert parse_ts(events[0]["event_ts"]).timestamp() == 978300760 and events[0]["rating"] == 5.0


@pytest.mark.parametrize(
    ("name", "setup", "message"),
    [
        ("ml-100k", lambda p: p.mkdir(), "u.data not found: expected a MovieLens folder"),
        ("ml-100k", None, "not found: expected a local copy of ml-100k"),
        ("ml-1m", lambda p: (p.mkdir(), (p / "ratings.dat").write_text("1,2,3\n"), (p / "movies.dat").write_text("1::A::Drama\n")),
         r"ratings.dat:1: expected user::item::rating::unix time"),
        ("amazon-beauty", lambda p: p.write_text("only_a_user\n"), r":1: expected 'user_id item_1 item_2 ...'"),
        ("amazon-scientific", lambda p: p.mkdir(), r"expected one RecBole '\*.test.inter' file, found 0"),
    ],
)
def test_wrong_inputs_name_the_file(make_settings, tmp_path, name, setup, message):
    path = tmp_path / "input"
    if setup:
        setup(path)
    with pytest.raises(InputError, match=message):
        ingest(make_settings(source={"name": name, "path": path}))


def test_amazon_without_path_says_so(make_settings):
    with pytest.raises(InputError, match="no official download; pass --path"):
        ingest(make_settings(source={"name": "amazon-beauty"}))


def test_download_failure_is_one_clear_error(make_settings, monkeypatch):
    """No network here: the download fails fast with a message that says what to do."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(InputError, match=r"could not download https://files.grouplens.org/datasets/movielens/ml-100k.zip .*pass --path"):
        ingest(make_settings(source={"name": "ml-100k"}))


def test_download_checks_the_checksum(tmp_path, monkeypatch):
    import io
    import urllib.request

    from jobs.ingest.download import fetch_zip

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the archive"))
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch_zip("https://example.invalid/ml-100k.zip", "0" * 32, tmp_path)
    assert list(tmp_path.iterdir()) == []
