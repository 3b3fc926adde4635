"""Streaming, atomic writer for one raw partition (JSON lines)."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from reaflow.lake import Dataset, Lake

#: Name of the sidecar that records what a source delivered into a partition.
MANIFEST = "_manifest.json"


class RawPartitionWriter:
    """Write JSON lines into ``raw/<dataset>/ds=...`` without holding them in memory.

    Lines go to ``part-NNNNN.jsonl`` files in a staging folder; the partition
    appears whole, with its manifest and ``_SUCCESS``, only when the block exits
    without an error. Lines are bytes so that a source can deliver them exactly
    as it got them (including broken ones).
    """

    def __init__(self, lake: Lake, dataset: Dataset, ds: str, *, source: str, lines_per_file: int = 1_000_000):
        self.lake = lake
        self.location = lake.path(dataset, ds)
        self.ds = ds
        self.source = source
        self.lines_per_file = lines_per_file
        self.lines = 0
        self.extra: dict[str, Any] = {}
        self._staging_cm = None
        self._staging: Path | None = None
        self._file = None
        self._files = 0

    def __enter__(self) -> RawPartitionWriter:
        self._staging_cm = self.lake.atomic_dir(self.location)
        self._staging = self._staging_cm.__enter__()
        return self

    def write_line(self, line: bytes) -> None:
        """Write one line as is; a trailing newline is added."""
        if self._file is None or self.lines % self.lines_per_file == 0 and self.lines:
            self._roll()
        self._file.write(line)
        self._file.write(b"\n")
        self.lines += 1

    def write_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write_line(line)

    def write_record(self, record: dict[str, Any]) -> None:
        self.write_line(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    def _roll(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self._staging / f"part-{self._files:05d}.jsonl", "wb", buffering=1 << 20)
        self._files += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()
        if exc_type is None:
            if self._files == 0:  # an empty day is still a delivered day
                self._roll()
                self._file.close()
            manifest = {"ds": self.ds, "source": self.source, "lines": self.lines, "files": self._files, **self.extra}
            (self._staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self._staging_cm.__exit__(exc_type, exc, tb)
