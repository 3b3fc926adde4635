"""The lake: every path is built here, and every write goes through here.

Layout (``ds`` is the logical date, ``YYYY-MM-DD``)::

    raw/events/ds=.../            as delivered (JSON lines)
    raw/items/ds=.../             catalog snapshot or changes
    quarantine/events/ds=.../     rejected rows with a reason
    quarantine/items/ds=.../      rejected catalog rows with a reason
    curated/events/ds=.../        typed, deduplicated parquet
    curated/sequences/ds=.../     per-user item sequences as of ds
    curated/vocab/                stable id maps (users/, items/)
    curated/items/ds=.../         the item catalog as of ds
    curated/item_stats/ds=.../    item popularity and counts as of ds
    curated/user_stats/ds=.../    user counts as of ds
    curated/splits/ds=.../        leave-one-out and time splits
    quarantine/item_knowledge/ds=.../  items the agents gave no usable record, with a reason
    enrich/item_knowledge/        LLM item knowledge records and category guidance (a cache)
    enrich/item_embeddings/       sentence embeddings of records and of raw metadata (a cache)
    enrich/beyond_log/ds=.../     generated behaviours
    reports/ds=.../               validation and gate reports

A partition is complete when it holds ``_SUCCESS``: writers stage the whole
partition in a hidden sibling folder and swap it in at the end, so a reader
never sees half a partition and a rerun replaces the old one whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from reaflow.errors import InputError

SUCCESS_MARKER = "_SUCCESS"


class Dataset(str, Enum):
    """The lake's datasets; the value is the folder under the root."""

    RAW_EVENTS = "raw/events"
    RAW_ITEMS = "raw/items"
    QUARANTINE_EVENTS = "quarantine/events"
    QUARANTINE_ITEMS = "quarantine/items"
    QUARANTINE_KNOWLEDGE = "quarantine/item_knowledge"
    CURATED_EVENTS = "curated/events"
    CURATED_SEQUENCES = "curated/sequences"
    CURATED_VOCAB = "curated/vocab"
    CURATED_ITEMS = "curated/items"
    CURATED_ITEM_STATS = "curated/item_stats"
    CURATED_USER_STATS = "curated/user_stats"
    CURATED_SPLITS = "curated/splits"
    ITEM_KNOWLEDGE = "enrich/item_knowledge"
    ITEM_EMBEDDINGS = "enrich/item_embeddings"
    BEYOND_LOG = "enrich/beyond_log"
    REPORTS = "reports"


def ds_str(ds: str | dt.date) -> str:
    """Normalise a logical date to ``YYYY-MM-DD``, rejecting anything else."""
    if isinstance(ds, dt.datetime):
        ds = ds.date()
    if isinstance(ds, dt.date):
        return ds.isoformat()
    try:
        return dt.date.fromisoformat(str(ds)).isoformat()
    except ValueError:
        raise InputError(f"logical date {ds!r} is not YYYY-MM-DD") from None


class Lake:
    """Paths and atomic writes under one root (a local folder or an fsspec URI)."""

    def __init__(self, root: str | Path):
        self.root = str(root).rstrip("/") or "/"
        self.is_local = "://" not in self.root

    @classmethod
    def from_settings(cls, settings: Any) -> Lake:
        return cls(settings.lake_root)

    # ---- paths -------------------------------------------------------------
    def path(self, dataset: Dataset, ds: str | dt.date | None = None, *parts: str) -> str:
        """The location of a dataset, or of one of its ``ds`` partitions."""
        segments = [self.root, dataset.value]
        if ds is not None:
            segments.append(f"ds={ds_str(ds)}")
        segments.extend(parts)
        return "/".join(segments)

    def partitions(self, dataset: Dataset) -> list[str]:
        """The ``ds`` values of the complete partitions of a dataset, in order."""
        base = self.path(dataset)
        fs, base_path = self._fs(base)
        if not fs.exists(base_path):
            return []
        found = []
        for entry in fs.ls(base_path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("ds=") and fs.exists(f"{entry.rstrip('/')}/{SUCCESS_MARKER}"):
                found.append(name[3:])
        return sorted(found)

    def latest_before(self, dataset: Dataset, ds: str | dt.date) -> str | None:
        """The last complete partition strictly before ``ds``, if any."""
        earlier = [p for p in self.partitions(dataset) if p < ds_str(ds)]
        return earlier[-1] if earlier else None

    def exists(self, location: str) -> bool:
        fs, path = self._fs(location)
        return fs.exists(path)

    def is_complete(self, location: str) -> bool:
        fs, path = self._fs(location)
        return fs.exists(f"{path}/{SUCCESS_MARKER}")

    def require_complete(self, location: str) -> None:
        if not self.is_complete(location):
            raise InputError(f"{location} is missing or incomplete (no {SUCCESS_MARKER}); run the stage that writes it first")

    def check_parquet(self, location: str) -> None:
        """Fail with the file's name if any parquet file of a complete partition is unreadable."""
        import pyarrow.parquet as pq

        self.require_complete(location)
        fs, path = self._fs(location)
        for file in sorted(fs.find(path)):
            if not file.endswith(".parquet"):
                continue
            try:
                with fs.open(file, "rb") as fh:
                    pq.read_metadata(fh)
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise InputError(f"{file} is not a readable parquet file ({exc.__class__.__name__}: {exc})") from None

    def files(self, location: str, suffix: str = "") -> list[str]:
        """Files under ``location`` (recursively) whose name ends with ``suffix``, sorted; none if it is absent.

        Names starting with a dot (a writer's temporary files) are left out.
        """
        fs, path = self._fs(location)
        if not fs.exists(path):
            return []
        found = [f for f in fs.find(path) if f.endswith(suffix) and not f.rsplit("/", 1)[-1].startswith(".")]
        return sorted(found if self.is_local else [f"{location.split('://', 1)[0]}://{f}" for f in found])

    def open(self, location: str, mode: str = "rb"):
        """A file handle for reading ``location`` (local or remote)."""
        fs, path = self._fs(location)
        if not fs.exists(path):
            raise InputError(f"{location} not found")
        return fs.open(path, mode)

    def read_text(self, location: str) -> str:
        fs, path = self._fs(location)
        if not fs.exists(path):
            raise InputError(f"{location} not found")
        with fs.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()

    # ---- writes ------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_dir(self, location: str) -> Iterator[Path]:
        """Yield an empty local folder; on success its content replaces ``location`` whole.

        On an exception (or a killed process) ``location`` keeps its old content;
        the hidden staging folder is cleared by the next write.
        """
        if self.is_local:
            with _local_atomic_dir(Path(location)) as staging:
                yield staging
        else:
            with self._remote_atomic_dir(location) as staging:
                yield staging

    @contextlib.contextmanager
    def spark_output(self, location: str) -> Iterator[str]:
        """Where a Spark job writes ``location`` (with ``mode("overwrite")``).

        Locally: a staging folder swapped in whole on success, as ``atomic_dir``.
        On an object store, executors cannot reach a driver-local folder, so
        Spark writes in place and its committer writes ``_SUCCESS`` last.
        """
        if self.is_local:
            with self.atomic_dir(location) as staging:
                yield str(staging)
        else:
            yield location

    @contextlib.contextmanager
    def atomic_file(self, location: str) -> Iterator[Path]:
        """Yield a local temporary path; on success it becomes ``location``."""
        if self.is_local:
            target = Path(location)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            try:
                yield Path(tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with tempfile.TemporaryDirectory() as tmpdir:
                tmp = Path(tmpdir) / "file"
                yield tmp
                fs, path = self._fs(location)
                fs.put_file(str(tmp), path)

    def write_json(self, location: str, payload: Any) -> str:
        with self.atomic_file(location) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        return location

    def read_json(self, location: str) -> Any:
        fs, path = self._fs(location)
        if not fs.exists(path):
            raise InputError(f"{location} not found")
        with fs.open(path, "rt", encoding="utf-8") as fh:
            try:
                return json.load(fh)
            except json.JSONDecodeError as exc:
                raise InputError(f"{location} is not valid JSON: {exc}") from None

    # ---- internals ---------------------------------------------------------
    def _fs(self, location: str):
        if self.is_local:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem(), location
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        return fs, path

    @contextlib.contextmanager
    def _remote_atomic_dir(self, location: str) -> Iterator[Path]:
        # Object stores have no rename: upload everything, then the marker last,
        # so readers that check the marker never see a partial partition.
        fs, path = self._fs(location)
        with tempfile.TemporaryDirectory() as staging:
            yield Path(staging)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            for file in sorted(Path(staging).rglob("*")):
                if file.is_file():
                    fs.put_file(str(file), f"{path}/{file.relative_to(staging).as_posix()}")
            fs.pipe_file(f"{path}/{SUCCESS_MARKER}", b"")


@contextlib.contextmanager
def _local_atomic_dir(target: Path) -> Iterator[Path]:
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    staging = parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        (staging / SUCCESS_MARKER).touch()
        if target.exists():
            old = parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _recover(target: Path) -> None:
    """Clear what a killed writer left beside ``target``; restore an old copy if the swap was cut."""
    prefix = f".{target.name}."
    for leftover in sorted(target.parent.glob(f"{prefix}*")):
        kind, _, rest = leftover.name[len(prefix):].partition("-")
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another writer is still at work
        if kind == "old" and not target.exists():
            os.rename(leftover, target)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
