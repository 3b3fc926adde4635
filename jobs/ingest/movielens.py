"""MovieLens 100K and 1M: real timestamps replayed as daily partitions.

Every rating becomes a ``rate`` event at its own timestamp; titles and genres
form the catalog. MovieLens has no sessions, so ``session_id`` is left empty.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from jobs.ingest.replay import event_record, item_record
from reaflow.errors import InputError

OFFICIAL = {
    "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
}


def read_ml100k(folder: Path) -> tuple[Iterator[dict], dict[str, dict]]:
    ratings, movies, genres = (_require(folder, name) for name in ("u.data", "u.item", "u.genre"))
    genre_names = [line.split("|")[0] for line in _lines(genres) if line.strip()]
    items: dict[str, dict] = {}
    for number, line in enumerate(_lines(movies), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 5 + len(genre_names):
            raise InputError(f"{movies}:{number}: expected {5 + len(genre_names)} '|'-separated fields (id|title|date|video date|url|genre flags), got {len(fields)}")
        flags = fields[5:]
        categories = [name for name, flag in zip(genre_names, flags) if flag.strip() == "1"]
        items[fields[0]] = item_record(title=fields[1] or None, categories=categories,
                                       description=f"Released {fields[2]}" if fields[2] else None)
    return _ratings(ratings, "\t", "ml-100k"), items


def read_ml1m(folder: Path) -> tuple[Iterator[dict], dict[str, dict]]:
    ratings, movies = (_require(folder, name) for name in ("ratings.dat", "movies.dat"))
    items: dict[str, dict] = {}
    for number, line in enumerate(_lines(movies), 1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3:
            raise InputError(f"{movies}:{number}: expected MovieID::Title::Genres, got {line[:60]!r}")
        items[fields[0]] = item_record(title=fields[1], categories=[g for g in fields[2].split("|") if g])
    return _ratings(ratings, "::", "ml-1m"), items


def _ratings(path: Path, sep: str, source: str) -> Iterator[dict]:
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        try:
            user, item, rating, stamp = fields
            ts = dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc)
            value = float(rating)
        except ValueError:
            raise InputError(f"{path}:{number}: expected user{sep}item{sep}rating{sep}unix time, got {line[:60]!r}") from None
        yield event_record(event_id=f"{user}:{item}:{stamp}", user_id=user, item_id=item, event_type="rate",
                           ts=ts, source=source, rating=value)


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InputError(f"{path} not found: expected a MovieLens folder holding {name}")
    return path


def _lines(path: Path) -> Iterator[str]:
    # GroupLens files are Latin-1 (titles with accents).
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            yield line.rstrip("\r\n")
