"""The simulator: determinism, the noise it promises, and structure worth learning."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jobs.ingest.simulator import MALFORMED_KINDS, Simulator, simulate
from reaflow.contracts import EVENTS, ITEMS, classify_line, format_ts, parse_ts
from reaflow.lake import Dataset, Lake

SMALL = {"days": 3, "users": 3_000, "items": 1_500, "categories": 20, "events": 60_000, "seed": 7}


def _lines(lake: Lake, dataset: Dataset, ds: str) -> list[bytes]:
    folder = Path(lake.path(dataset, ds))
    return [line.rstrip(b"\n") for part in sorted(folder.glob("part-*.jsonl")) for line in part.open("rb")]


def _manifest(lake: Lake, ds: str) -> dict:
    return json.loads((Path(lake.path(Dataset.RAW_EVENTS, ds)) / "_manifest.json").read_text())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three simulated days with heavier noise, so rates can be checked on a small sample."""
    from reaflow.settings import load_settings

    root = tmp_path_factory.mktemp("lake")
    noise = {"malformed_rate": 0.03, "duplicate_rate": 0.02, "late_rate": 0.02, "bot_user_rate": 0.01}
    settings = load_settings(lake_root=str(root), simulator={**SMALL, "noise": noise})
    summary = simulate(settings)
    return settings, Lake(root), summary


def test_same_seed_same_bytes_and_days_generate_alone(make_settings, tmp_path):
    first = make_settings(lake_root=str(tmp_path / "a"), simulator=SMALL)
    second = make_settings(lake_root=str(tmp_path / "b"), simulator=SMALL)
    simulate(first)
    simulate(second, ds_from="2024-01-03", ds_to="2024-01-03")  # the last day alone
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    day3 = {k: v for k, v in a.items() if "ds=2024-01-03" in k}
    assert day3 and day3 == b
    simulate(first)  # a rerun replaces each partition with the same bytes
    assert _tree_bytes(tmp_path / "a") == a
    other = make_settings(lake_root=str(tmp_path / "c"), simulator={**SMALL, "seed": 8})
    simulate(other, ds_from="2024-01-03", ds_to="2024-01-03")
    assert _tree_bytes(tmp_path / "c") != b


def test_every_line_has_the_reason_the_manifest_promises(world):
    settings, lake, summary = world
    known: set[str] = set()
    for ds in summary["days"]:
        items = [json.loads(line) for line in _lines(lake, Dataset.RAW_ITEMS, ds)]
        assert all(ITEMS.check(item) is None for item in items)
        known.update(item["item_id"] for item in items)
        lines = _lines(lake, Dataset.RAW_EVENTS, ds)
        manifest = _manifest(lake, ds)
        assert manifest["lines"] == len(lines) == Simulator(settings.simulator).quota(0)
        found = Counter()
        for line in lines:
            violation = classify_line(line, EVENTS, ds=ds, known_items=known)
            found[violation.reason.value if violation else "valid"] += 1
        expected = {k: v for k, v in manifest["simulator"]["malformed"].items() if v}
        assert {k: v for k, v in found.items() if k != "valid"} == expected
        sim = manifest["simulator"]
        assert found["valid"] == sim["valid_events"] + sim["duplicates"] + sim["near_duplicates"]
        assert set(expected) == {k.value for k in MALFORMED_KINDS}  # every kind shows up at this rate


def test_noise_rates_within_tolerance(world):
    settings, lake, summary = world
    noise = settings.simulator.noise
    totals = Counter()
    for ds in summary["days"]:
        sim = _manifest(lake, ds)["simulator"]
        totals["lines"] += _manifest(lake, ds)["lines"]
        totals["malformed"] += sum(sim["malformed"].values())
        for key in ("duplicates", "late", "valid_events", "offset_ts", "bot_events"):
            totals[key] += sim[key]
    # Binomial counts: allow 5 standard deviations.
    def within(count, n, rate):
        sd = (n * rate * (1 - rate)) ** 0.5
        return abs(count - n * rate) <= 5 * sd

    # Bot traffic is clean JSON; the malformed rate applies to the other lines.
    assert within(totals["malformed"], totals["lines"] - totals["bot_events"], noise.malformed_rate), totals
    assert totals["duplicates"] > 0 and totals["late"] > 0 and totals["offset_ts"] > 0 and totals["bot_events"] > 0


def test_duplicates_late_events_and_bots_are_real(world):
    _, lake, summary = world
    ds = summary["days"][1]
    records = []
    for line in _lines(lake, Dataset.RAW_EVENTS, ds):
        if classify_line(line, EVENTS) is None:
            records.append(json.loads(line))
    ids = Counter(r["event_id"] for r in records)
    sim = _manifest(lake, ds)["simulator"]
    assert sum(n - 1 for n in ids.values()) == sim["duplicates"]
    late = {r["event_id"] for r in records if format_ts(parse_ts(r["event_ts"])) < ds}
    assert len(late) == sim["late"]
    bots = set(sim["bot_users"])
    bot_rows = [r for r in records if r["user_id"] in bots]
    assert len(bot_rows) >= sim["bot_events"] > 0
    assert {r["event_type"] for r in bot_rows} == {"view"}
    per_session = Counter(r["session_id"] for r in records)
    bot_sessions = {r["session_id"] for r in bot_rows}
    human = [n for s, n in per_session.items() if s not in bot_sessions]
    assert min(per_session[s] for s in bot_sessions) > sorted(human)[len(human) // 2]


def test_catalog_grows_and_popularity_is_skewed(world):
    _, lake, summary = world
    days = summary["days"]
    first = [json.loads(line) for line in _lines(lake, Dataset.RAW_ITEMS, days[0])]
    later = [json.loads(line) for line in _lines(lake, Dataset.RAW_ITEMS, days[1])]
    assert len(first) > len(later) > 0
    views = Counter()
    for ds in days:
        for line in _lines(lake, Dataset.RAW_EVENTS, ds):
            if classify_line(line, EVENTS) is None:
                record = json.loads(line)
                if record["event_type"] == "view":
                    views[record["item_id"]] += 1
    counts = sorted(views.values(), reverse=True)
    top_decile = sum(counts[: len(counts) // 10]) / sum(counts)
    assert top_decile > 0.5, top_decile
    assert counts[0] > 20 * counts[len(counts) // 2]


def test_a_markov_model_beats_popularity_on_next_items(world):
    """Leave-last-out on click sequences: first-order transitions vs most popular, HR@10."""
    _, lake, summary = world
    sequences = defaultdict(list)
    for ds in summary["days"]:
        for line in _lines(lake, Dataset.RAW_EVENTS, ds):
            if classify_line(line, EVENTS) is None:
                r = json.loads(line)
                if r["event_type"] == "click" and r["event_ts"].endswith("Z"):
                    sequences[r["user_id"]].append((r["event_ts"], r["event_id"], r["item_id"]))
    transitions, popularity, held_out = defaultdict(Counter), Counter(), []
    for events in sequences.values():
        items = [i for _, _, i in sorted(events)]
        if len(items) < 3:
            continue
        for a, b in zip(items[:-2], items[1:-1]):
            transitions[a][b] += 1
        popularity.update(items[:-1])
        held_out.append((items[-2], items[-1]))
    top = [i for i, _ in popularity.most_common(10)]

    def markov(prev):
        ranked = [i for i, _ in transitions[prev].most_common(10)]
        return ranked + [i for i in top if i not in ranked][: 10 - len(ranked)]

    assert len(held_out) > 500
    hr_pop = sum(t in top for _, t in held_out) / len(held_out)
    hr_markov = sum(t in markov(p) for p, t in held_out) / len(held_out)
    assert hr_markov > hr_pop + 0.05, (hr_markov, hr_pop)


def test_hundred_thousand_users(make_settings):
    settings = make_settings(simulator={"users": 100_000, "items": 2_000, "events": 20_000, "days": 1})
    summary = simulate(settings)
    assert summary["lines"] == 20_000
    users = set()
    for line in _lines(Lake(settings.lake_root), Dataset.RAW_EVENTS, summary["days"][0]):
        if classify_line(line, EVENTS) is None:
            users.add(json.loads(line)["user_id"])
    assert len(users) > 2_000 and max(users) <= "u0099999"


def test_days_before_start_are_refused(make_settings):
    from reaflow.errors import InputError

    with pytest.raises(InputError, match="before the simulator's start_date"):
        simulate(make_settings(simulator=SMALL), ds_from="2023-12-31", ds_to="2023-12-31")
