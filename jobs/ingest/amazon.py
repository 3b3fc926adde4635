"""Amazon review datasets, which carry order but no usable timestamps.

Two formats:

* S3-Rec / ICLRec sequence files (``Beauty.txt``): one line per user,
  ``user_id item_1 item_2 ...`` in time order; ids only, no item text.
* RecBole atomic files (``Scientific.*``): ``.test.inter`` holds each user's
  full history plus the last item, ``.user2index`` / ``.item2index`` map the
  indices back to Amazon ids, ``.text`` holds the item text.

Synthetic timestamps (documented choice): a user's j-th of n interactions
(j = 0..n-1) is stamped at ``start + (j + 0.5) / n * days`` (whole seconds), so
each user's order is kept exactly, every user's history spans the same
calendar, and the last item of a user falls in the last part of it. Every
interaction becomes a ``purchase`` event (a review implies a purchase).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from jobs.ingest.replay import event_record, item_record
from reaflow.errors import InputError


def synthetic_ts(j: int, n: int, start: dt.date, days: int) -> dt.datetime:
    origin = dt.datetime.combine(start, dt.time(), dt.timezone.utc)
    return origin + dt.timedelta(seconds=int((j + 0.5) / n * days * 86_400))


def read_s3rec(path: Path, source: str, start: dt.date, days: int) -> tuple[Iterator[dict], dict[str, dict]]:
    if path.is_dir():
        found = sorted(path.glob("*.txt"))
        if len(found) != 1:
            raise InputError(f"{path}: expected one S3-Rec sequence file (*.txt) in the folder, found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise InputError(f"{path} not found: expected an S3-Rec sequence file (user_id item_1 item_2 ...)")
    sequences: list[tuple[str, list[str]]] = []
    items: dict[str, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise InputError(f"{path}:{number}: expected 'user_id item_1 item_2 ...', got {line.strip()[:60]!r}")
            sequences.append((fields[0], fields[1:]))
            for item in fields[1:]:
                items.setdefault(item, item_record())
    return _events(sequences, source, start, days), items


def read_recbole(folder: Path, source: str, start: dt.date, days: int) -> tuple[Iterator[dict], dict[str, dict]]:
    if folder.is_file():
        folder = folder.parent
    tests = sorted(folder.glob("*.test.inter"))
    if len(tests) != 1:
        raise InputError(f"{folder}: expected one RecBole '*.test.inter' file, found {len(tests)}")
    stem = tests[0].name[: -len(".test.inter")]
    users = _index(folder / f"{stem}.user2index")
    item_ids = _index(folder / f"{stem}.item2index")
    texts = _texts(folder / f"{stem}.text")
    sequences = []
    with open(tests[0], encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["user_id:token", "item_id_list:token_seq", "item_id:token"]:
            raise InputError(f"{tests[0]}: expected the header 'user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token', got {header}")
        for number, line in enumerate(fh, 2):
            if not line.strip():
                continue
            try:
                user, history, target = line.rstrip("\n").split("\t")
                sequence = [item_ids[i] for i in history.split()] + [item_ids[target]]
                sequences.append((users[user], sequence))
            except (ValueError, KeyError) as exc:
                raise InputError(f"{tests[0]}:{number}: bad row ({exc.__class__.__name__}: {exc})") from None
    items = {item: _item_from_text(texts.get(item)) for item in item_ids.values()}
    return _events(sequences, source, start, days), items


def _events(sequences: list[tuple[str, list[str]]], source: str, start: dt.date, days: int) -> Iterator[dict]:
    for user, sequence in sequences:
        n = len(sequence)
        for j, item in enumerate(sequence):
            yield event_record(event_id=f"{user}:{j}", user_id=user, item_id=item, event_type="purchase",
                               ts=synthetic_ts(j, n, start, days), source=source)


def _index(path: Path) -> dict[str, str]:
    """index -> external id, from a RecBole ``*2index`` file (``external<TAB>index``)."""
    if not path.is_file():
        raise InputError(f"{path} not found: expected a RecBole index file (external id<TAB>index)")
    mapping = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise InputError(f"{path}:{number}: expected 'external id<TAB>index', got {line.strip()[:60]!r}")
            mapping[parts[1]] = parts[0]
    return mapping


def _texts(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        fh.readline()  # header: item_id:token<TAB>text:token_seq
        return dict(line.rstrip("\n").split("\t", 1) for line in fh if "\t" in line)


def _item_from_text(text: str | None) -> dict:
    """Split RecBole's 'title. categories. brand.' text; the whole text is kept as the description."""
    if not text or not text.strip():
        return item_record()
    parts = [p.strip() for p in text.strip().rstrip(".").split(". ")]
    if len(parts) < 3:
        return item_record(title=text.strip(), description=text.strip())
    title = ". ".join(parts[:-2]) or None
    brand, categories = parts[-1] or None, [parts[-2]] if parts[-2] else None
    return item_record(title=title, brand=brand, categories=categories, description=text.strip())
