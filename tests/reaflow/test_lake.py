import os
import signal
import subprocess
import sys
import textwrap

import pytest

from reaflow.errors import InputError
from reaflow.lake import SUCCESS_MARKER, Dataset, Lake, ds_str


def test_paths_follow_the_layout(tmp_path):
    lake = Lake(tmp_path)
    assert lake.path(Dataset.RAW_EVENTS, "2024-01-02") == f"{tmp_path}/raw/events/ds=2024-01-02"
    assert lake.path(Dataset.QUARANTINE_EVENTS, "2024-01-02") == f"{tmp_path}/quarantine/events/ds=2024-01-02"
    assert lake.path(Dataset.CURATED_VOCAB) == f"{tmp_path}/curated/vocab"
    assert lake.path(Dataset.REPORTS, "2024-01-02", "ingest.json") == f"{tmp_path}/reports/ds=2024-01-02/ingest.json"
    assert Lake("s3://bucket/lake/").path(Dataset.RAW_ITEMS, "2024-01-02") == "s3://bucket/lake/raw/items/ds=2024-01-02"


@pytest.mark.parametrize("bad", ["2024-13-01", "20240101x", "yesterday", ""])
def test_ds_must_be_a_date(bad):
    with pytest.raises(InputError, match="is not YYYY-MM-DD"):
        ds_str(bad)


def test_atomic_dir_replaces_whole_partition(tmp_path):
    lake = Lake(tmp_path)
    target = lake.path(Dataset.RAW_EVENTS, "2024-01-01")
    with lake.atomic_dir(target) as staging:
        (staging / "a.jsonl").write_text("1\n")
        (staging / "b.jsonl").write_text("2\n")
    with lake.atomic_dir(target) as staging:
        (staging / "a.jsonl").write_text("3\n")
    assert sorted(os.listdir(target)) == [SUCCESS_MARKER, "a.jsonl"]
    assert open(f"{target}/a.jsonl").read() == "3\n"
    assert lake.partitions(Dataset.RAW_EVENTS) == ["2024-01-01"]
    assert [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".")] == []


def test_failed_write_keeps_old_partition(tmp_path):
    lake = Lake(tmp_path)
    target = lake.path(Dataset.RAW_EVENTS, "2024-01-01")
    with lake.atomic_dir(target) as staging:
        (staging / "a.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError):
        with lake.atomic_dir(target) as staging:
            (staging / "a.jsonl").write_text("new, half")
            raise RuntimeError("boom")
    assert open(f"{target}/a.jsonl").read() == "old\n"
    assert [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".")] == []


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from reaflow.lake import Lake, Dataset
    lake = Lake(sys.argv[1])
    with lake.atomic_dir(lake.path(Dataset.RAW_EVENTS, "2024-01-01")) as staging:
        with open(staging / "part-00000.jsonl", "w") as fh:
            fh.write("half a partition\\n")
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """
)


@pytest.mark.parametrize("had_old_version", [False, True])
def test_write_killed_midway_leaves_no_partial_partition(tmp_path, had_old_version):
    lake = Lake(tmp_path)
    target = lake.path(Dataset.RAW_EVENTS, "2024-01-01")
    if had_old_version:
        with lake.atomic_dir(target) as staging:
            (staging / "part-00000.jsonl").write_text("complete\n")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    if had_old_version:
        assert open(f"{target}/part-00000.jsonl").read() == "complete\n"
        assert lake.partitions(Dataset.RAW_EVENTS) == ["2024-01-01"]
    else:
        assert not os.path.exists(target)
        assert lake.partitions(Dataset.RAW_EVENTS) == []
    # Only a hidden staging folder is left, and the next write clears it.
    leftovers = [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".")]
    assert len(leftovers) == 1 and ".staging-" in leftovers[0]
    with lake.atomic_dir(target) as staging:
        (staging / "part-00000.jsonl").write_text("rerun\n")
    assert [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".")] == []
    assert open(f"{target}/part-00000.jsonl").read() == "rerun\n"


def test_swap_cut_between_renames_restores_old_copy(tmp_path):
    """A writer killed after moving the old partition aside, before moving the new one in."""
    lake = Lake(tmp_path)
    target = lake.path(Dataset.RAW_EVENTS, "2024-01-01")
    with lake.atomic_dir(target) as staging:
        (staging / "a.jsonl").write_text("old\n")
    os.rename(target, f"{os.path.dirname(target)}/.ds=2024-01-01.old-999999999-deadbeef")
    with lake.atomic_dir(lake.path(Dataset.RAW_EVENTS, "2024-01-02")):
        pass
    assert not os.path.exists(target)
    with pytest.raises(RuntimeError):
        with lake.atomic_dir(target):
            raise RuntimeError("the rerun fails too")
    assert open(f"{target}/a.jsonl").read() == "old\n"


def test_atomic_file_and_json_roundtrip(tmp_path):
    lake = Lake(tmp_path)
    location = lake.path(Dataset.REPORTS, "2024-01-01", "ingest.json")
    lake.write_json(location, {"rows": 3})
    lake.write_json(location, {"rows": 4})
    assert lake.read_json(location) == {"rows": 4}
    assert os.listdir(os.path.dirname(location)) == ["ingest.json"]
    with pytest.raises(InputError, match="not found"):
        lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "ingest.json"))
    with pytest.raises(InputError, match="missing or incomplete"):
        lake.require_complete(lake.path(Dataset.RAW_EVENTS, "2024-01-01"))


def test_object_store_lake_writes_marker_last():
    import fsspec

    lake = Lake("memory://reaflow-test-lake")
    target = lake.path(Dataset.RAW_EVENTS, "2024-01-01")
    for content in ("first\n", "second\n"):
        with lake.atomic_dir(target) as staging:
            (staging / "part-00000.jsonl").write_text(content)
            (staging / "sub").mkdir()
            (staging / "sub" / "x.txt").write_text("x")
    fs = fsspec.filesystem("memory")
    assert fs.cat(f"{target}/part-00000.jsonl".removeprefix("memory://")) == b"second\n"
    assert lake.partitions(Dataset.RAW_EVENTS) == ["2024-01-01"]
    lake.write_json(lake.path(Dataset.REPORTS, "2024-01-01", "r.json"), {"ok": True})
    assert lake.read_json(lake.path(Dataset.REPORTS, "2024-01-01", "r.json")) == {"ok": True}
    fs.rm("/reaflow-test-lake", recursive=True)
