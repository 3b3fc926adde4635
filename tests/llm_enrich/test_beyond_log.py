"""Beyond-log generation: what the diffusers pipeline emits, what a tiny denoiser learns, the daily task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_enrich.beyond_log import calibration, evaluate_lists, generate, popularity_lists
from models import build_model
from models.data import EvalSet, SequenceData
from models.train import train
from reaflow.settings import ModelSettings, load_settings

CATALOG = 30


def cycle(start: int, length: int) -> np.ndarray:
    """Items of a strict cycle over the catalogue: start+1, start+2, ... (wrapping)."""
    return np.asarray([(start + k) % CATALOG + 1 for k in range(length)], dtype=np.int64)


def cycle_data(users: int = 600, seed: int = 0) -> SequenceData:
    rng = np.random.default_rng(seed)
    train_seqs = [cycle(int(rng.integers(CATALOG)), int(rng.integers(6, 15))) for _ in range(users)]
    histories = [cycle(s, 6) for s in range(CATALOG)]
    futures = [cycle(s + 6, 4) for s in range(CATALOG)]
    held_out = EvalSet(histories, np.asarray([f[0] for f in futures]), futures)
    return SequenceData("cycles", CATALOG, train_seqs, held_out, held_out)


def tiny_settings(tmp_path, **training):
    # Epochs picked on seen-kept NDCG@10: on strict cycles the seen-removed score reaches 1.0 by about epoch 30 and
    # ties from there, which would keep that early epoch (80% of generated lists exact, against 100% at epoch 58).
    return load_settings(
        lake_root=str(tmp_path / "lake"), state_dir=str(tmp_path / "state"),
        model={"hidden_size": 32, "layers": 2, "heads": 2, "inner_size": 64, "dropout": 0.0, "max_len": 16,
               "diffusion_response_items": 4},
        training={"max_epochs": 60, "patience": 60, "batch_size": 64, "learning_rate": 3e-3, "warmup_steps": 0,
                  "selection_metric": "ndcg_10", **training})


@pytest.fixture(scope="module")
def cycle_denoiser(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("denoiser")
    return train(tiny_settings(folder), "diffusion", cycle_data(), folder / "run", track=False, progress=False).model


def test_a_tiny_denoiser_learns_strict_cycles_and_generates_them(cycle_denoiser):
    histories = [cycle(s, 6) for s in range(CATALOG)]
    out = generate(cycle_denoiser, histories, 4, steps=4)
    exact = [set(items.tolist()) == set(cycle(s + 6, 4).tolist()) for s, items in enumerate(out.items)]
    assert np.mean(exact) >= 0.9
    for conf in out.confidences:
        assert np.all((conf > 0) & (conf <= 1)) and np.all(np.diff(conf) <= 0)  # most confident first


def test_generation_is_deterministic_for_a_seed(cycle_denoiser):
    histories = [cycle(s, 5) for s in range(CATALOG)]
    greedy = [generate(cycle_denoiser, histories, 4, steps=2, batch_size=7) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(greedy[0].items, greedy[1].items, strict=True))
    sampled = [generate(cycle_denoiser, histories, 4, steps=2, temperature=2.0, seed=s) for s in (7, 7, 8)]
    assert all(np.array_equal(a, b) for a, b in zip(sampled[0].items, sampled[1].items, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(sampled[0].items, sampled[2].items, strict=True))


def test_generation_never_emits_padding_mask_or_seen_items():
    torch.manual_seed(1)
    cfg = ModelSettings(hidden_size=16, layers=1, heads=2, inner_size=32, max_len=12)
    model = build_model("diffusion", cfg, 9).eval()  # untrained: its picks are arbitrary
    rng = np.random.default_rng(2)
    histories = [rng.choice(np.arange(1, 10), size=int(rng.integers(0, 8)), replace=False) for _ in range(40)]
    for temperature in (0.0, 5.0):
        out = generate(model, histories, 5, steps=3, temperature=temperature, seed=3)
        for history, items in zip(histories, out.items, strict=True):
            assert np.all((items >= 1) & (items <= 9)), items
            assert not set(items.tolist()) & set(history.tolist())
            assert len(set(items.tolist())) == len(items) <= min(5, 9 - len(history))
    with pytest.raises(ValueError, match="no room"):
        generate(model, histories, 12, steps=1)
    # Histories longer than the window the denoiser reads (12 - 5 = 7 items): older items stay forbidden.
    wide = build_model("diffusion", cfg, 40).eval()
    long = [rng.choice(np.arange(1, 41), size=30, replace=False) for _ in range(20)]
    out = generate(wide, long, 5, steps=5)
    for history, items in zip(long, out.items, strict=True):
        assert not set(items.tolist()) & set(history.tolist()) and len(items) == 5  # one commit a step: no repeats


def test_list_metrics_match_a_hand_computed_example():
    counts = np.asarray([0, 50, 30, 10, 5, 1, 1, 1, 1, 1, 0])  # items 1-2 are the head at head_share 0.2
    data = EvalSet([np.asarray([1]), np.asarray([2]), np.asarray([3])], np.asarray([4, 5, 3]),
                   [np.asarray([4, 6]), np.asarray([5]), np.asarray([3])])
    lists = [np.asarray([6, 2]), np.asarray([7, 8]), np.asarray([4, 5])]
    conf = [np.asarray([0.9, 0.1]), np.asarray([0.5, 0.5]), np.asarray([0.2, 0.2])]
    out = evaluate_lists(lists, data, counts, head_share=0.2, confidences=conf, bins=2)
    # User 3's only future item was in the history: left out of the accuracy figures.
    assert out["users"] == 2 and out["users_without_new_items"] == 1
    assert out["hit_2"] == 0.5 and out["precision_2"] == 0.25 and out["recall_2"] == 0.25
    assert out["ndcg_2"] == pytest.approx((1 / (1 + 1 / np.log2(3))) / 2)
    assert out["next_hr_2"] == 0.0  # the first targets (4 and 5) are not in the lists
    assert out["long_tail_share"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert out["coverage"] == pytest.approx(6 / 10)
    # Calibration over the 4 confidences of the 2 evaluated users: [0.1 miss, 0.5 miss] and [0.5 miss, 0.9 hit].
    assert out["ece"] == pytest.approx(0.5 * 0.3 + 0.5 * abs(0.5 - 0.7))
    assert popularity_lists(counts, [np.asarray([1, 3])], 3)[0].tolist() == [2, 4, 5]
    # A list shorter than the cut-off is judged against a full ideal list: one hit at rank 1 of 2 relevant items.
    short = evaluate_lists([np.asarray([4])], EvalSet([np.asarray([1])], np.asarray([4]), [np.asarray([4, 6])]), counts,
                           head_share=0.2, n=2)
    assert short["ndcg_2"] == pytest.approx(1 / (1 + 1 / np.log2(3))) and short["precision_2"] == 0.5
    assert calibration(np.asarray([]), np.asarray([]))["ece"] != calibration(np.asarray([0.5]), np.asarray([1.0]))["ece"]


def test_list_diversity_uses_the_given_vectors():
    vectors = np.asarray([[0, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    data = EvalSet([np.asarray([], dtype=np.int64)] * 2, np.asarray([1, 1]))
    same = evaluate_lists([np.asarray([1, 2]), np.asarray([1, 2])], data, np.asarray([0, 1, 1, 1]), head_share=0.3, vectors=vectors)
    apart = evaluate_lists([np.asarray([1, 3]), np.asarray([1, 3])], data, np.asarray([0, 1, 1, 1]), head_share=0.3, vectors=vectors)
    assert same["ild"] == pytest.approx(0.0, abs=1e-6) and apart["ild"] == pytest.approx(1.0)


def write_cycle_lake(settings, ds: str, users: int = 120) -> None:
    """Curated sequences, loo splits and the item vocabulary of users walking the cycle, as build_sequences writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reaflow.lake import Dataset, Lake

    lake = Lake.from_settings(settings)
    rng = np.random.default_rng(4)
    sequences = [cycle(int(rng.integers(CATALOG)), int(rng.integers(5, 12))) for _ in range(users)]
    with lake.atomic_dir(lake.path(Dataset.CURATED_SEQUENCES, ds)) as out:
        pq.write_table(pa.table({"user_idx": list(range(1, users + 1)), "user_id": [f"u{u}" for u in range(1, users + 1)],
                                 "items": [s.tolist() for s in sequences], "length": [len(s) for s in sequences]}), out / "part.parquet")
    rows = []
    for u, s in enumerate(sequences, start=1):
        rows += [("loo", "train", u, s[:-2].tolist(), None), ("loo", "valid", u, s[:-2].tolist(), int(s[-2])),
                 ("loo", "test", u, s[:-1].tolist(), int(s[-1]))]
    with lake.atomic_dir(lake.path(Dataset.CURATED_SPLITS, ds)) as out:
        pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(["protocol", "split", "user_idx", "history", "target"])}),
                       out / "part.parquet")
    with lake.atomic_dir(lake.path(Dataset.CURATED_VOCAB, None, "items")) as out:
        pq.write_table(pa.table({"external_id": [f"i{i}" for i in range(1, CATALOG + 1)], "idx": list(range(1, CATALOG + 1)),
                                 "first_ds": [ds] * CATALOG}), out / "part.parquet")


def test_the_daily_task_writes_feast_ready_rows_and_feeds_the_candidates(tmp_path):
    import mlflow
    import pyarrow.parquet as pq

    from llm_enrich.beyond_log import generate_beyond_log
    from models.candidates import train_candidate
    from models.data import DataError, beyond_log_contexts, load_lake_splits
    from reaflow.lake import Dataset, Lake

    ds = "2024-01-02"
    settings = tiny_settings(tmp_path, max_epochs=2, beyond_log=True)
    settings.beyond_log.items = 3
    settings.beyond_log.max_epochs = 15
    write_cycle_lake(settings, ds)
    summary = generate_beyond_log(settings, ds)
    assert summary["users"] == 120 and summary["users_with_items"] == 120 and summary["splits_written"]
    lake = Lake.from_settings(settings)
    users = pq.read_table(lake.path(Dataset.BEYOND_LOG, ds, "users")).to_pylist()
    sequences = {r["user_idx"]: r["items"] for r in pq.read_table(lake.path(Dataset.CURATED_SEQUENCES, ds)).to_pylist()}
    for row in users:
        assert 1 <= len(row["item_idx"]) <= 3 and len(row["confidences"]) == len(row["raw_confidences"]) == len(row["item_idx"])
        assert all(0 <= c <= 1 for c in row["confidences"])
        assert not set(row["item_idx"]) & set(sequences[row["user_idx"]])
        assert row["item_ids"] == [f"i{i}" for i in row["item_idx"]]
        assert str(row["event_timestamp"]) == "2024-01-03 00:00:00+00:00"
    report = lake.read_json(lake.path(Dataset.REPORTS, ds, "generate_beyond_log.json"))
    quality = report["test_quality"]
    assert quality["diffusion"]["hit_3"] > quality["popularity"]["hit_3"]  # cycles are learnable, popularity is flat
    assert quality["diffusion_calibrated"]["hit_3"] == quality["diffusion"]["hit_3"] and report["calibration"]["points"] >= 1
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    [run] = mlflow.search_runs(experiment_names=["reaflow-beyond-log"], output_format="list")
    assert run.info.run_id == users[0]["denoiser_run_id"] and "diffusion_test_hit_3" in run.data.metrics
    settings.beyond_log.steps = 1  # generating again with other settings reuses the trained denoiser and its run
    assert generate_beyond_log(settings, ds)["denoiser"]["run_id"] == run.info.run_id
    settings.beyond_log.steps = 10

    # The candidates read the generated items as marked inputs.
    trained = train_candidate(settings, ds, "sasrec")
    assert trained["beyond_log"] and trained["epochs"] == 2
    data = load_lake_splits(settings, ds, "loo")
    train_ctx, valid_ctx, test_ctx = beyond_log_contexts(settings, ds, data)
    assert len(train_ctx) == len(data.train) and all(len(c) <= 3 for c in train_ctx + valid_ctx + test_ctx)
    write_cycle_lake(settings, ds, users=100)  # the splits change: the old generated rows no longer fit
    with pytest.raises(DataError, match="generated for other splits"):
        beyond_log_contexts(settings, ds, load_lake_splits(settings, ds, "loo"))


def test_gaps_inside_a_history_are_filled_with_the_missing_items(cycle_denoiser):
    from llm_enrich.beyond_log import MISSING, infill

    sequences, wanted = [], []
    for s in range(CATALOG):
        seq = cycle(s, 8)
        wanted.append(seq.copy())
        seq[[2, 5]] = MISSING
        sequences.append(seq)
    sequences.append(cycle(3, 5))  # nothing to fill: returned as given
    older = np.concatenate([[MISSING], cycle(0, 16)])  # longer than the window (16): the oldest gap stays
    sequences.append(older)
    out = infill(cycle_denoiser, sequences, steps=2)
    assert np.array_equal(out.items[-1][1:], older[1:]) and out.items[-1][0] == MISSING and len(out.items[-1]) == 17
    out.items.pop(), out.confidences.pop()
    exact = [np.array_equal(out.items[s], wanted[s]) for s in range(CATALOG)]
    assert np.mean(exact) >= 0.9
    assert np.array_equal(out.items[-1], cycle(3, 5)) and np.isnan(out.confidences[-1]).all()
    for s in range(CATALOG):
        conf = out.confidences[s]
        assert np.isfinite(conf[[2, 5]]).all() and np.isnan(np.delete(conf, [2, 5])).all()
        assert len(set(out.items[s].tolist())) == 8  # a fill never repeats an item of the row


def test_the_calibrator_is_monotone_and_matches_observed_rates():
    from llm_enrich.beyond_log import Calibrator, list_hits

    rng = np.random.default_rng(5)
    raw = rng.random(20_000) * 0.02  # per-slot probabilities: far below the real chance of a hit
    hit = (rng.random(20_000) < raw * 20).astype(float)  # the true chance is 20x the raw confidence
    calibrator = Calibrator.fit(raw, hit)
    mapped = calibrator(np.linspace(0, 0.02, 50))
    assert np.all(np.diff(mapped) >= 0)
    assert calibration(calibrator(raw), hit)["ece"] < 0.02 < calibration(raw, hit)["ece"]
    assert calibrator(np.asarray([0.01]))[0] == pytest.approx(0.2, abs=0.03)
    assert Calibrator.fit(np.asarray([]), np.asarray([]))(np.asarray([0.3]))[0] == pytest.approx(0.3)
    data = EvalSet([np.asarray([1])], np.asarray([4]), [np.asarray([4, 6])])
    assert list_hits([np.asarray([6, 2, 4])], data)[0].tolist() == [1.0, 0.0, 1.0]


def test_without_beyond_log_inputs_the_task_evaluates_a_sample_and_writes_no_split_rows(tmp_path):
    from llm_enrich.beyond_log import generate_beyond_log
    from reaflow.lake import Dataset, Lake

    ds = "2024-01-02"
    settings = tiny_settings(tmp_path)
    settings.beyond_log.items, settings.beyond_log.max_epochs, settings.beyond_log.eval_users = 3, 2, 30
    write_cycle_lake(settings, ds)
    summary = generate_beyond_log(settings, ds)
    assert summary["users"] == 120 and not summary["splits_written"]
    lake = Lake.from_settings(settings)
    report = lake.read_json(lake.path(Dataset.REPORTS, ds, "generate_beyond_log.json"))
    evaluated = report["test_quality"]["diffusion"]
    assert evaluated["users"] + evaluated["users_without_new_items"] == 30
    assert lake.files(lake.path(Dataset.BEYOND_LOG, ds, "splits"), ".parquet") == []
