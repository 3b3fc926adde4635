"""Training and evaluation data: where sequences come from, and how they become batches.

Two sources give the same ``SequenceData``: the lake's curated splits (the
daily pipeline) and benchmark files read directly (S3-Rec sequence files such
as Amazon Beauty, MovieLens ``u.data``), split leave-one-out as published
numbers are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.base import Batch
from reaflow.errors import ReaflowError

#: Named benchmark datasets under the shared data folder.
BENCHMARKS = {
    "amazon-beauty": "amazon-beauty/Beauty.txt",
    "amazon-sports": "amazon-sports/Sports_and_Outdoors.txt",
    "ml-100k": "ml-100k/u.data",
}


class DataError(ReaflowError):
    """Training data missing or unusable."""


@dataclass
class EvalSet:
    histories: list[np.ndarray]
    targets: np.ndarray
    #: Per user, every item of the evaluated period in order (the target first), where the split has a period.
    futures: list[np.ndarray] | None = None
    #: Per user, generated beyond-log items read after the history as marked inputs (``with_beyond_log``).
    context: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, n: int, seed: int) -> EvalSet:
        """A fixed random subset of ``n`` users (all of them if there are fewer)."""
        if n >= len(self):
            return self
        rows = np.sort(np.random.default_rng([seed, n]).choice(len(self), n, replace=False))
        pick = lambda values: None if values is None else [values[i] for i in rows]
        return EvalSet(pick(self.histories), self.targets[rows], pick(self.futures), pick(self.context))


@dataclass
class SequenceData:
    """Item indices 1..num_items (0 pads); one training sequence per user; validation and test (history, target) pairs."""

    name: str
    num_items: int
    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    #: External id of each item index (entry 0 is padding), when known.
    item_ids: list[str] | None = None
    #: How the data was read and split (a file's ``skipped_lines``, a time split's period starts); in the logged summary.
    meta: dict = field(default_factory=dict)
    #: Per training sequence, generated beyond-log items read after all but its newest item (``with_beyond_log``).
    train_context: list[np.ndarray] | None = None

    def digest(self) -> str:
        """A content hash of everything the model sees (logged with each run)."""
        h = hashlib.sha256(f"{self.name}|{self.num_items}".encode())
        parts = [self.train, self.valid.histories, self.test.histories]
        parts += [p for p in (self.train_context, self.valid.context, self.test.context) if p is not None]
        for part in parts:
            for seq in part:
                h.update(np.asarray(seq).astype(np.int64).tobytes())
                h.update(b"|")
        h.update(self.valid.targets.astype(np.int64).tobytes())
        h.update(self.test.targets.astype(np.int64).tobytes())
        return h.hexdigest()[:16]

    def item_counts(self) -> np.ndarray:
        """Training interactions per item index (the popularity used for head/tail breakdowns)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for seq in self.train:
            np.add.at(counts, seq, 1)
        counts[0] = 0
        return counts

    def summary(self) -> dict:
        return {"dataset": self.name, "items": self.num_items, "train_sequences": len(self.train),
                "train_interactions": int(sum(len(s) for s in self.train)),
                "valid_users": len(self.valid), "test_users": len(self.test), "digest": self.digest(), **self.meta}


def without_newest(data: SequenceData) -> SequenceData:
    """The training sequences without their newest item (validation and test unchanged).

    What the beyond-log denoiser trains on: items it then generates for a
    training prefix cannot copy what followed that prefix.
    """
    train = [s[:-1] for s in data.train if len(s) >= 3]
    if not train:
        raise DataError(f"{data.name}: no training sequence has 3 or more items; too short to hold one out")
    return SequenceData(f"{data.name}:without-newest", data.num_items, train, data.valid, data.test, data.item_ids, dict(data.meta))


def with_beyond_log(data: SequenceData, train: list[np.ndarray], valid: list[np.ndarray], test: list[np.ndarray]) -> SequenceData:
    """``data`` whose models also read generated items: per training sequence (generated from all but its newest
    item) and per validation and test history."""
    for label, got, want in (("train", train, data.train), ("valid", valid, data.valid.histories), ("test", test, data.test.histories)):
        if len(got) != len(want):
            raise DataError(f"{data.name}: {len(got)} generated {label} rows for {len(want)} {label} sequences")
    evals = [EvalSet(e.histories, e.targets, e.futures, [np.asarray(c, dtype=np.int64) for c in ctx])
             for e, ctx in ((data.valid, valid), (data.test, test))]
    return SequenceData(f"{data.name}+beyond-log", data.num_items, data.train, *evals, data.item_ids, dict(data.meta),
                        [np.asarray(c, dtype=np.int64) for c in train])


def leave_one_out(name: str, sequences: list[np.ndarray], num_items: int, item_ids: list[str] | None = None) -> SequenceData:
    """Last item = test, second last = validation, the rest = training (users with fewer than 3 items train only)."""
    train, valid_h, valid_t, test_h, test_t = [], [], [], [], []
    for seq in sequences:
        if len(seq) >= 3:
            train.append(seq[:-2])
            valid_h.append(seq[:-2])
            valid_t.append(seq[-2])
            test_h.append(seq[:-1])
            test_t.append(seq[-1])
        elif len(seq) == 2:
            train.append(seq)
    return SequenceData(name, num_items, [s for s in train if len(s) >= 2],
                        EvalSet(valid_h, np.asarray(valid_t, dtype=np.int64)),
                        EvalSet(test_h, np.asarray(test_t, dtype=np.int64)), item_ids)


def time_split(name: str, timed: list[list[tuple[int, str]]], holdout: float = 0.1) -> SequenceData:
    """Global temporal split, as the pipeline's ``time`` protocol: no training interaction is later than any evaluated one.

    The last ``holdout`` share of all interactions (by time) is the test
    period, the share before it validation. Training holds every interaction
    before the validation period; a user active in a period is evaluated on
    the first item of that period, after everything they did before it (the
    validation period's items are history for the test, never training).
    Items are indexed over the whole log, so an item first seen in the test
    period is a cold target the model can still rank.
    """
    if not 0 < holdout < 0.5:
        raise DataError(f"holdout {holdout} must be in (0, 0.5): it is the share of interactions in each of validation and test")
    stamps = np.sort(np.fromiter((ts for seq in timed for ts, _ in seq), dtype=np.int64))
    if len(stamps) < 10:
        raise DataError(f"{name}: {len(stamps)} interactions are too few for a time split")
    valid_start, test_start = (int(stamps[int(len(stamps) * (1 - share))]) for share in (2 * holdout, holdout))
    externals, index = _item_index(item for seq in timed for _, item in seq)
    train, valid_h, valid_t, test_h, test_t, valid_f, test_f = [], [], [], [], [], [], []
    for seq in timed:
        before_valid = [index[i] for ts, i in seq if ts < valid_start]
        if not before_valid:
            continue
        in_valid = [index[i] for ts, i in seq if valid_start <= ts < test_start]
        before_test = [index[i] for ts, i in seq if ts < test_start]
        in_test = [index[i] for ts, i in seq if ts >= test_start]
        train.append(np.asarray(before_valid, dtype=np.int64))
        if in_valid:
            valid_h.append(train[-1])
            valid_t.append(in_valid[0])
            valid_f.append(np.asarray(in_valid, dtype=np.int64))
        if in_test:
            test_h.append(np.asarray(before_test, dtype=np.int64))
            test_t.append(in_test[0])
            test_f.append(np.asarray(in_test, dtype=np.int64))
    return SequenceData(name, len(externals), [s for s in train if len(s) >= 2],
                        EvalSet(valid_h, np.asarray(valid_t, dtype=np.int64), valid_f),
                        EvalSet(test_h, np.asarray(test_t, dtype=np.int64), test_f), [""] + externals,
                        {"protocol": "time", "valid_start": valid_start, "test_start": test_start})


def load_benchmark(name_or_path: str, data_root: str | Path | None = None, protocol: str = "loo",
                   holdout: float = 0.1) -> SequenceData:
    """A named benchmark (``amazon-beauty``, ``amazon-sports``, ``ml-100k``) under ``data_root``, or a file path.

    Files: S3-Rec sequence text (``user item item ...`` per line) or
    MovieLens ``u.data`` (user, item, rating, time; tab separated).
    ``protocol``: ``loo`` (leave-one-out, as published numbers) or ``time``
    (``time_split``; needs timestamps, so MovieLens only).
    """
    if name_or_path in BENCHMARKS:
        if data_root is None:
            raise DataError(f"benchmark {name_or_path!r} needs the data folder (--data-root)")
        path = Path(data_root) / BENCHMARKS[name_or_path]
        name = name_or_path
    else:
        path = Path(name_or_path)
        name = path.stem
    if not path.is_file():
        raise DataError(f"training data {path} does not exist")
    if protocol not in ("loo", "time"):
        raise DataError(f"protocol {protocol!r} is not one of loo, time")
    if protocol == "time" and not path.name.endswith(".data"):
        raise DataError(f"{path} holds no timestamps (S3-Rec order only): use protocol 'loo'")
    if path.name.endswith(".data"):
        timed, skipped = _read_movielens(path)
        data = (time_split(name, timed, holdout) if protocol == "time"
                else leave_one_out_items(name, [[item for _, item in seq] for seq in timed]))
        because = "not user<TAB>item<TAB>rating<TAB>time with an integer time"
    else:
        raw, skipped = _read_s3rec(path)
        data = leave_one_out_items(name, raw)
        because = "a user id without items"
    data.meta["skipped_lines"] = skipped
    if skipped:
        data.meta["skipped_because"] = because
    return data


def leave_one_out_items(name: str, raw: list[list[str]]) -> SequenceData:
    """``leave_one_out`` over sequences of external item ids, indexed densely (``_item_index``)."""
    externals, index = _item_index(item for seq in raw for item in seq)
    sequences = [np.fromiter((index[i] for i in seq), dtype=np.int64, count=len(seq)) for seq in raw]
    return leave_one_out(name, sequences, len(externals), [""] + externals)


def _item_index(items) -> tuple[list[str], dict[str, int]]:
    """Dense indices 1..n in the natural order of the external ids (numbers numerically): stable across runs."""
    externals = sorted(set(items), key=_natural)
    return externals, {item: i for i, item in enumerate(externals, start=1)}


def _natural(token: str):
    return (0, int(token), "") if token.isdigit() else (1, 0, token)


def _read_s3rec(path: Path) -> tuple[list[list[str]], int]:
    """Per user, item ids in order, and how many lines were skipped (a user id without items)."""
    sequences, bad = [], 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) < 2:
                bad += int(bool(parts))
                continue
            sequences.append(parts[1:])
    if not sequences:
        raise DataError(f"{path} holds no sequences (expected 'user item item ...' per line; {bad} unusable lines)")
    return sequences, bad


def _read_movielens(path: Path) -> tuple[list[list[tuple[int, str]]], int]:
    """Per user, (time, item) in time order, and how many lines were skipped (too few fields or no integer time)."""
    rows, bad = {}, 0
    with path.open(encoding="latin-1") as handle:
        for line in handle:
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 4 or not parts[3].strip().isdigit():
                bad += 1
                continue
            rows.setdefault(parts[0], []).append((int(parts[3]), parts[1]))
    if not rows:
        raise DataError(f"{path} holds no ratings (expected user<TAB>item<TAB>rating<TAB>time; {bad} unusable lines)")
    return [sorted(events, key=lambda e: (e[0], _natural(e[1]))) for _, events in sorted(rows.items())], bad


def load_lake_splits(settings, ds: str, protocol: str) -> SequenceData:
    """The curated splits of ``ds`` (written by ``jobs.sequences``) for one protocol."""
    import pyarrow.dataset as pads

    from reaflow.lake import Dataset, Lake

    lake = Lake.from_settings(settings)
    splits = lake.path(Dataset.CURATED_SPLITS, ds)
    vocab = lake.path(Dataset.CURATED_VOCAB, None, "items")
    for location in (splits, vocab):
        if not lake.is_complete(location):
            raise DataError(f"{location} is missing or incomplete; run build_sequences for {ds} first")
    table = pads.dataset(splits, format="parquet").to_table(
        filter=pads.field("protocol") == protocol, columns=["split", "history", "target"])
    items = pads.dataset(vocab, format="parquet").to_table(columns=["external_id", "idx", "first_ds"]).to_pylist()
    items = [row for row in items if row["first_ds"] <= ds]
    num_items = max((row["idx"] for row in items), default=0)
    item_ids = [""] * (num_items + 1)
    for row in items:
        item_ids[row["idx"]] = row["external_id"]
    split = table.column("split").to_pylist()
    history = table.column("history").to_pylist()
    target = table.column("target").to_pylist()
    rows = {"train": [], "valid": [], "test": []}
    for s, h, t in zip(split, history, target, strict=True):
        rows[s].append((np.asarray(h, dtype=np.int64), t))
    train = [h for h, _ in rows["train"] if len(h) >= 2]
    evals = {s: EvalSet([h for h, t in rows[s] if len(h) > 0], np.asarray([t for h, t in rows[s] if len(h) > 0], dtype=np.int64))
             for s in ("valid", "test")}
    if not train or not len(evals["valid"]):
        raise DataError(f"the {protocol} splits of {ds} have {len(train)} training sequences and {len(evals['valid'])} validation users; too few to train")
    return SequenceData(f"lake:{ds}:{protocol}", num_items, train, evals["valid"], evals["test"], item_ids, {"ds": ds})


def item_vectors(settings, item_ids: list[str], kind: str) -> tuple[np.ndarray, float]:
    """Item vectors of ``kind`` (``enrich/item_embeddings/<kind>``, written by ``llm_enrich``) aligned with a model's items.

    Row 0 (padding) and items without a vector are zeros; each item takes its
    most recent vector (a changed item keeps its last one until it is encoded
    again). Returns the matrix and the share of items that have one.
    """
    import pyarrow.parquet as pq

    from reaflow.lake import Dataset, Lake

    lake = Lake.from_settings(settings)
    latest: dict[str, tuple[str, list[float]]] = {}
    for part in lake.files(lake.path(Dataset.ITEM_EMBEDDINGS, None, kind), ".parquet"):
        with lake.open(part) as fh:
            table = pq.read_table(fh, columns=["item_id", "vector", "created_at"])
        for item_id, vector, created in zip(*(table.column(c).to_pylist() for c in ("item_id", "vector", "created_at")), strict=True):
            if item_id not in latest or created > latest[item_id][0]:
                latest[item_id] = (created, vector)
    if not latest:
        raise DataError(f"no {kind} item embeddings in the lake; run enrich_items and embed_items first, or train with item_representation 'id'")
    matrix = np.zeros((len(item_ids), len(next(iter(latest.values()))[1])), dtype=np.float32)
    found = 0
    for row, item_id in enumerate(item_ids):
        if row and item_id in latest:
            matrix[row] = latest[item_id][1]
            found += 1
    return matrix, found / max(len(item_ids) - 1, 1)


#: ``enrich/beyond_log/ds=.../splits``: generated items for the rows of one day's splits (written by ``llm_enrich``).
BEYOND_LOG_SPLITS = "splits"


def beyond_log_contexts(settings, ds: str, data: SequenceData) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The generated items of ``ds`` for each training sequence, validation and test history of ``data`` (in order).

    They were written for splits with the same digest; anything else (the
    splits were rebuilt since, another protocol) is refused.
    """
    import pyarrow.parquet as pq

    from reaflow.lake import Dataset, Lake

    lake = Lake.from_settings(settings)
    location = lake.path(Dataset.BEYOND_LOG, ds)
    if not lake.is_complete(location) or not lake.files(lake.path(Dataset.BEYOND_LOG, ds, BEYOND_LOG_SPLITS), ".parquet"):
        raise DataError(f"no beyond-log items for the splits of {ds} in {location}; run generate_beyond_log with "
                        "training.beyond_log on, or turn training.beyond_log off")
    rows = {"train": {}, "valid": {}, "test": {}}
    for part in lake.files(lake.path(Dataset.BEYOND_LOG, ds, BEYOND_LOG_SPLITS), ".parquet"):
        with lake.open(part) as fh:
            table = pq.read_table(fh, columns=["split", "row", "item_idx", "splits_digest"])
        for split, row, items, digest in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
            if digest != data.digest():
                raise DataError(f"the beyond-log items of {ds} were generated for other splits (digest {digest}, "
                                f"now {data.digest()}); run generate_beyond_log for {ds} again")
            rows[split][row] = np.asarray(items, dtype=np.int64)
    sizes = {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
    empty = np.zeros(0, dtype=np.int64)
    return tuple([rows[s].get(i, empty) for i in range(sizes[s])] for s in ("train", "valid", "test"))


def item_knowledge(settings, data: SequenceData) -> tuple[torch.Tensor | None, float | None]:
    """The models' ``knowledge`` input under ``training.item_representation`` and the share of items that have one."""
    kind = settings.training.item_representation
    if kind == "id":
        return None, None
    matrix, coverage = item_vectors(settings, data.item_ids, kind)
    return torch.from_numpy(matrix), coverage


def train_batches(sequences: list[np.ndarray], batch_size: int, max_len: int, seed: int, epoch: int,
                  contexts: list[np.ndarray] | None = None, by_length: bool = True) -> list[Batch]:
    """One epoch of (input, next-item) batches; order depends only on (seed, epoch), so a resumed run replays it.

    ``by_length``: sequences of similar length share a batch (sorted within
    shuffled windows of 50 batches); otherwise batches are random. Each batch
    is padded only to its own longest input.
    With ``contexts``, sequence i's generated items follow all but its newest
    item, marked as type 1; the last of them predicts that newest item, which
    the positions before them predict too (with and without the hint).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sequences))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        if by_length:
            chunk = chunk[np.argsort([min(len(sequences[i]), max_len + 1) for i in chunk], kind="stable")]
        for b in range(0, len(chunk), batch_size):
            batches.append(chunk[b:b + batch_size])
    rng.shuffle(batches)
    out = []
    for idx in batches:
        rows = [_training_row(sequences[i], None if contexts is None else contexts[i], max_len) for i in idx]
        length = max(len(r[0]) for r in rows)
        items = np.zeros((len(rows), length), dtype=np.int64)
        targets = np.zeros((len(rows), length), dtype=np.int64)
        types = np.zeros((len(rows), length), dtype=np.int64) if contexts is not None else None
        for row, (inputs, nexts, kinds) in enumerate(rows):
            items[row, length - len(inputs):] = inputs
            targets[row, length - len(inputs):] = nexts
            if types is not None:
                types[row, length - len(inputs):] = kinds
        out.append(Batch(torch.from_numpy(items), torch.from_numpy(targets), None if types is None else torch.from_numpy(types)))
    return out


def position_weights(batches: list[Batch]) -> list[float]:
    """Each batch's target positions over the mean per batch (``training.weight_batches_by_positions``)."""
    counts = [int((b.targets > 0).sum()) for b in batches]
    mean = sum(counts) / max(len(counts), 1)
    return [c / mean if mean else 1.0 for c in counts]


def _training_row(seq: np.ndarray, context: np.ndarray | None, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, next items and token types of one training sequence (at most ``max_len`` inputs)."""
    m = 0 if context is None else min(len(context), max_len - 1)
    seq = seq[-(max_len - m + 1):]
    inputs, nexts = seq[:-1], seq[1:]
    kinds = np.zeros(len(inputs), dtype=np.int64)
    if m:
        hint = np.zeros(m, dtype=np.int64)
        hint[-1] = seq[-1]
        inputs = np.concatenate([inputs, np.asarray(context[:m], dtype=np.int64)])
        nexts = np.concatenate([nexts, hint])
        kinds = np.concatenate([kinds, np.ones(m, dtype=np.int64)])
    return inputs, nexts, kinds


def history_batches(histories: list[np.ndarray], batch_size: int, max_len: int,
                    contexts: list[np.ndarray] | None = None) -> list[tuple[np.ndarray, Batch]]:
    """Histories grouped by length for scoring; each batch carries the row numbers it holds.

    With ``contexts``, each history is followed by its generated items, marked as type 1.
    """
    if contexts is not None:
        inputs = [_scoring_row(h, c, max_len) for h, c in zip(histories, contexts, strict=True)]
    else:
        inputs = [(np.asarray(h[-max_len:], dtype=np.int64), None) for h in histories]
    lengths = np.fromiter((len(x) for x, _ in inputs), dtype=np.int64, count=len(inputs))
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        length = max(1, int(lengths[rows].max()))
        items = np.zeros((len(rows), length), dtype=np.int64)
        types = np.zeros((len(rows), length), dtype=np.int64) if contexts is not None else None
        for r, i in enumerate(rows):
            x, kinds = inputs[i]
            if len(x):
                items[r, length - len(x):] = x
                if types is not None:
                    types[r, length - len(x):] = kinds
        out.append((rows, Batch(torch.from_numpy(items), token_types=None if types is None else torch.from_numpy(types))))
    return out


def _scoring_row(history: np.ndarray, context: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    m = min(len(context), max_len - 1)
    h = np.asarray(history[-(max_len - m):], dtype=np.int64)
    return (np.concatenate([h, np.asarray(context[:m], dtype=np.int64)]),
            np.concatenate([np.zeros(len(h), dtype=np.int64), np.ones(m, dtype=np.int64)]))
