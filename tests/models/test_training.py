"""Trainer, evaluation, data sources, MLflow tracking and the served model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch

from models import Batch, build_model
from models.data import DataError, EvalSet, leave_one_out, load_benchmark, load_lake_splits, position_weights, train_batches
from models.evaluate import evaluate, long_tail_items, ranking_metrics, state_breakdown, target_ranks
from models.train import TrainingError, _decays_now, _fingerprint_changes, _parameter_groups, train
from tests.conftest import SHARED_DATA

TINY_MODEL = {"hidden_size": 16, "heads": 2, "layers": 1, "inner_size": 32, "max_len": 10, "dropout": 0.1}


def write_sequences(path, users: int = 120, items: int = 40, seed: int = 0) -> str:
    """S3-Rec style file: users walk one of a few item cycles with some noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, users + 1):
        start = int(rng.integers(1, items + 1))
        step = int(rng.choice([1, 3]))
        seq = [((start - 1 + step * j) % items) + 1 for j in range(int(rng.integers(4, 14)))]
        lines.append(" ".join(map(str, [u, *seq])))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def tiny_file(tmp_path):
    return write_sequences(tmp_path / "tiny.txt")


@pytest.fixture
def tiny_settings(make_settings):
    return make_settings(model=TINY_MODEL, training={"max_epochs": 3, "patience": 5, "batch_size": 32, "learning_rate": 5e-3, "threads": 1})


def test_ranking_metrics_equal_a_hand_computed_example():
    ranks = np.array([0, 3, 12, 6])  # 0-based
    got = ranking_metrics(ranks, [5, 10])
    assert got["hr_5"] == pytest.approx(2 / 4)
    assert got["hr_10"] == pytest.approx(3 / 4)
    assert got["ndcg_5"] == pytest.approx((1 / np.log2(2) + 1 / np.log2(5)) / 4)
    assert got["ndcg_10"] == pytest.approx((1 / np.log2(2) + 1 / np.log2(5) + 1 / np.log2(8)) / 4)


class FixedScores(torch.nn.Module):
    """Scores depend only on the newest history item: a known table, to check the ranking arithmetic."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float)
        self.cfg = type("cfg", (), {"max_len": 5})()

    def score(self, batch: Batch):
        scores = self.table[batch.items[:, -1]].clone()
        scores[:, 0] = float("-inf")
        return scores


def test_full_ranking_with_and_without_seen_items():
    # Items 1..4. After item 1 the model scores 4 > 3 > 2 > 1; after item 2: 1 > 2 > 3 > 4.
    table = [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4], [0, 4, 3, 2, 1]]
    data = EvalSet([np.array([1]), np.array([3, 2]), np.array([2, 1])], np.array([3, 4, 1]))
    model = FixedScores(table + [[0, 1, 1, 1, 1]])
    kept, removed = target_ranks(model, data)
    # user 0: history [1], target 3: 4 beats it -> rank 1; item 1 removed changes nothing.
    # user 1: history [3, 2] (newest 2): target 4 is last (rank 3); 3 and 2 removed -> 1 beats it -> rank 1.
    # user 2: history [2, 1] (newest 1): target 1 is seen -> removed ranks below everything (5 columns).
    assert kept.tolist() == [1, 3, 3]
    assert removed.tolist() == [1, 1, 5]
    metrics = evaluate(model, data, [1, 2])
    assert metrics["hr_2"] == pytest.approx(1 / 3) and metrics["hr_2_seen_removed"] == pytest.approx(2 / 3)


class TwoFixedStates(FixedScores):
    """Two named states with known tables: ``scored`` (the table above) and ``other``."""

    def __init__(self, table, other):
        super().__init__(table)
        self.other = FixedScores(other)

    def eval(self):
        return self

    def score_each_state(self, batch: Batch):
        return {"scored": self.score(batch), "other": self.other.score(batch)}


def test_state_breakdown_ranks_each_state_and_the_per_user_best():
    table = [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4], [0, 4, 3, 2, 1], [0, 1, 1, 1, 1]]
    # "other" scores the other way round after item 1 (1 > 2 > 3 > 4) and after item 2 (4 > 3 > 2 > 1).
    other = [[0, 0, 0, 0, 0], [0, 4, 3, 2, 1], [0, 1, 2, 3, 4], [0, 1, 1, 1, 1]]
    data = EvalSet([np.array([1]), np.array([3, 2]), np.array([2, 1])], np.array([3, 4, 1]))
    got = state_breakdown(TwoFixedStates(table, other), data, [1, 2])
    # Seen removed. scored: ranks 1, 1, 5 (as above). other: user 0 (history [1], target 3): 2 beats it
    # (1 removed) -> 1; user 1 (history [3, 2], newest 2): 4 tops -> 0; user 2: its target is seen -> 5.
    assert got["scored"]["hr_2"] == pytest.approx(2 / 3) and got["scored"]["hr_1"] == 0
    assert got["other"]["hr_1"] == pytest.approx(1 / 3)
    # The oracle takes user 1's rank from "other": 1, 0, 5.
    assert got["oracle"]["hr_1"] == pytest.approx(1 / 3) and got["oracle"]["hr_2"] == pytest.approx(2 / 3)
    assert got["oracle"]["ndcg_2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    # Best for: scored ties on users 0 and 2, other is best on all three.
    assert got["scored"]["best_share"] == pytest.approx(2 / 3) and got["other"]["best_share"] == 1.0


@pytest.mark.parametrize("name", ["rearec-erl", "plr"])
def test_a_trained_reasoning_model_s_scored_state_matches_its_evaluation(tiny_file, tiny_settings, name, tmp_path):
    data = load_benchmark(tiny_file)
    model = train(tiny_settings, name, data, tmp_path / "run", track=False, progress=False, max_epochs=1).model
    got = state_breakdown(model, data.test, [10])
    plain = evaluate(model, data.test, [10])
    assert got["scored"]["ndcg_10"] == pytest.approx(plain["ndcg_10_seen_removed"])
    assert all(got["oracle"]["ndcg_10"] >= m["ndcg_10"] for m in got.values())
    assert {"base", "oracle"} <= set(got)


def test_rare_targets_are_those_with_few_training_interactions():
    table = [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4], [0, 4, 3, 2, 1]]
    data = EvalSet([np.array([1]), np.array([3, 2]), np.array([2, 1])], np.array([3, 4, 1]))
    model = FixedScores(table + [[0, 1, 1, 1, 1]])
    counts = np.array([0, 9, 9, 4, 0])  # item 3 seen 4 times, item 4 never: both rare below 5; item 1 is not
    metrics = evaluate(model, data, [1, 2], item_counts=counts, rare_below=5, breakdowns=True)
    # ranks kept: user 0 (target 3) rank 1, user 1 (target 4) rank 3 -> of the two rare targets one hits @2
    assert metrics["rare_users"] == 2 and metrics["rare_hr_2"] == pytest.approx(0.5)
    assert metrics["rare_ndcg_2"] == pytest.approx(0.5 / np.log2(3))
    assert evaluate(model, data, [1, 2], item_counts=counts, rare_below=1, breakdowns=True)["rare_users"] == 1


def test_long_tail_is_everything_outside_the_popular_head():
    counts = np.array([0, 50, 1, 30, 2, 3, 1, 1, 1, 1, 1])
    tail = long_tail_items(counts, 0.2)
    assert tail.tolist() == [False, False, True, False, True, True, True, True, True, True, True]


def test_leave_one_out_split_and_batches():
    data = leave_one_out("x", [np.array([1, 2, 3, 4, 5]), np.array([6, 7]), np.array([8])], 8)
    assert [s.tolist() for s in data.train] == [[1, 2, 3], [6, 7]]
    assert [h.tolist() for h in data.valid.histories] == [[1, 2, 3]] and data.valid.targets.tolist() == [4]
    assert [h.tolist() for h in data.test.histories] == [[1, 2, 3, 4]] and data.test.targets.tolist() == [5]
    batches = train_batches(data.train, 8, 50, seed=0, epoch=0)
    assert sum(int((b.targets > 0).sum()) for b in batches) == 3  # 1->2, 2->3, 6->7
    again = train_batches(data.train, 8, 50, seed=0, epoch=0)
    assert all(torch.equal(a.items, b.items) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize("by_length", [True, False])
def test_batches_cover_every_sequence_once_and_group_by_length_only_when_asked(by_length):
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.repeat([2, 30], 64))
    sequences = [np.arange(1, n + 1) + 100 * i for i, n in enumerate(lengths)]
    batches = train_batches(sequences, 16, 50, seed=1, epoch=0, by_length=by_length)
    firsts = sorted(int(row[row > 0][0]) for b in batches for row in b.items)
    assert firsts == sorted(int(s[0]) for s in sequences)  # each sequence exactly once
    mixed = sum(len({int((row > 0).sum()) for row in b.items}) > 1 for b in batches)
    # 128 sequences of two lengths in one window of 50 batches: sorted, only the batch at the boundary mixes them
    assert mixed <= 1 if by_length else mixed >= 4


def test_position_weights_make_every_position_weigh_the_same_over_an_epoch():
    rng = np.random.default_rng(0)
    sequences = [np.arange(1, n + 1) for n in rng.permutation(np.repeat([2, 3, 30], 40))]
    batches = train_batches(sequences, 16, 50, seed=1, epoch=0)
    weights = position_weights(batches)
    assert np.mean(weights) == pytest.approx(1.0) and max(weights) > 5 * min(weights)
    # A per-position value (its target): batch means weighted this way average to the mean over all positions.
    means = [float(b.targets[b.targets > 0].float().mean()) for b in batches]
    every = torch.cat([b.targets[b.targets > 0] for b in batches]).float().mean()
    assert np.mean([w * m for w, m in zip(weights, means, strict=True)]) == pytest.approx(float(every))
    assert np.mean(means) != pytest.approx(float(every), rel=0.05)  # unweighted, short histories count for more


@pytest.mark.parametrize("batch_size", [8, 512])
def test_the_trainer_weighs_batches_by_positions_only_when_asked(tiny_file, make_settings, tmp_path, batch_size):
    """With one batch per epoch its weight is 1 and nothing changes; with many, the weights change the steps."""
    same = _same_weights_either_way(tiny_file, make_settings, tmp_path, "sasrec", "weight_batches_by_positions", batch_size)
    assert same == (batch_size == 512)


@pytest.mark.parametrize("name", ["sasrec", "rearec-erl"])
def test_the_trainer_leaves_per_sequence_terms_unweighted_only_when_asked(tiny_file, make_settings, tmp_path, name):
    """SASRec has no per-sequence term, so the setting changes nothing for it; ERL's divergence it does."""
    same = _same_weights_either_way(tiny_file, make_settings, tmp_path, name, "weight_sequence_terms_by_positions", 8)
    assert same == (name == "sasrec")


def _same_weights_either_way(tiny_file, make_settings, tmp_path, name: str, switch: str, batch_size: int) -> bool:
    """Whether one epoch ends with bit-identical weights with the training setting ``switch`` off and on."""
    data = load_benchmark(tiny_file)
    runs = []
    for on in (False, True):
        settings = make_settings(model=TINY_MODEL, training={"max_epochs": 1, "batch_size": batch_size, "threads": 1, switch: on})
        train(settings, name, data, tmp_path / f"run-{on}", track=False, progress=False)
        runs.append(torch.load(tmp_path / f"run-{on}" / "checkpoint.pt", weights_only=False)["model"])
    return all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_time_split_never_trains_on_the_evaluated_periods(tmp_path):
    # 20 ratings at times 1..20; holdout 0.1 -> validation from t=17, test from t=19.
    rows = [("u1", "a", t) for t in (1, 3, 5)] + [("u1", "b", 17), ("u1", "c", 19), ("u1", "d", 20)]
    rows += [("u2", "b", t) for t in (2, 4)] + [("u2", "e", 18)]
    rows += [("u3", "a", t) for t in (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)]
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t5\t{t}\n" for u, i, t in rows))
    data = load_benchmark(str(tmp_path / "u.data"), protocol="time")
    idx = {item: n for n, item in enumerate(data.item_ids)}
    assert data.meta["valid_start"] == 17 and data.meta["test_start"] == 19
    assert max(len(s) for s in data.train) == 11 and all(set(s.tolist()) <= {idx["a"], idx["b"]} for s in data.train)
    # u1 and u2 are validated on the first item of the validation period, after their training items only
    assert sorted(data.valid.targets.tolist()) == [idx["b"], idx["e"]]
    # u1 alone is tested: on c (the first test item), after everything before t=19 (the validation item b included)
    assert data.test.targets.tolist() == [idx["c"]] and data.test.histories[0].tolist() == [idx["a"]] * 3 + [idx["b"]]
    assert data.item_counts()[idx["e"]] == 0  # e first appears in validation: a cold item
    with pytest.raises(DataError, match="no timestamps"):
        (tmp_path / "seq.txt").write_text("u1 a b c\n")
        load_benchmark(str(tmp_path / "seq.txt"), protocol="time")


def test_bad_training_data_gives_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no sequences"):
        load_benchmark(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="data-root"):
        load_benchmark("amazon-beauty")


def test_unusable_lines_are_skipped_and_counted(tmp_path):
    (tmp_path / "seq.txt").write_text("u1 a b c\nu2\n\nu3 a c b d\nu4\n")
    data = load_benchmark(str(tmp_path / "seq.txt"))
    assert len(data.test) == 2 and data.meta == {"skipped_lines": 2, "skipped_because": "a user id without items"}
    (tmp_path / "u.data").write_text("u1\ta\t5\t1\nu1\tb\t5\t2\nu1\tc\t5\tlater\ntruncated\n\nu1\td\t4\t3\n")
    data = load_benchmark(str(tmp_path / "u.data"))
    assert data.test.targets.tolist() == [data.item_ids.index("d")] and data.meta["skipped_lines"] == 2
    assert data.summary()["skipped_lines"] == 2  # logged with the run's data summary
    (tmp_path / "clean.txt").write_text("u1 a b c\n")
    assert load_benchmark(str(tmp_path / "clean.txt")).meta == {"skipped_lines": 0}


def test_lake_splits_become_training_data(make_settings, lake_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reaflow.lake import Dataset, Lake

    settings = make_settings()
    lake = Lake.from_settings(settings)
    rows = [("loo", "train", 1, [1, 2, 3], None), ("loo", "valid", 1, [1, 2, 3], 4), ("loo", "test", 1, [1, 2, 3, 4], 5),
            ("time", "train", 1, [1, 2], None)]
    with lake.atomic_dir(lake.path(Dataset.CURATED_SPLITS, "2024-01-02")) as out:
        pq.write_table(pa.table({k: [r[i] for r in rows] for i, k in enumerate(["protocol", "split", "user_idx", "history", "target"])}), out / "part.parquet")
    with lake.atomic_dir(lake.path(Dataset.CURATED_VOCAB, None, "items")) as out:
        pq.write_table(pa.table({"external_id": ["a", "b", "c", "d", "e", "f"], "idx": [1, 2, 3, 4, 5, 6],
                                 "first_ds": ["2024-01-01"] * 5 + ["2024-01-03"]}), out / "part.parquet")
    data = load_lake_splits(settings, "2024-01-02", "loo")
    assert data.num_items == 5 and data.item_ids == ["", "a", "b", "c", "d", "e"]
    assert [s.tolist() for s in data.train] == [[1, 2, 3]] and data.valid.targets.tolist() == [4]
    with pytest.raises(DataError, match="missing or incomplete"):
        load_lake_splits(settings, "2024-01-05", "loo")


def test_training_learns_and_reports(tiny_file, tiny_settings, tmp_path):
    data = load_benchmark(tiny_file)
    result = train(tiny_settings, "sasrec", data, tmp_path / "run", track=False, progress=False)
    assert result.epochs_run == 3 and 1 <= result.best_epoch <= 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    popularity = data.item_counts()
    random_ndcg = ranking_metrics(np.arange(data.num_items), [10])["ndcg_10"]
    assert result.test["ndcg_10"] > random_ndcg
    assert {"tail_users", "head_users", "rare_users", "len_1_4_users"} <= set(result.test)
    assert popularity.sum() == sum(len(s) for s in data.train)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test"]["ndcg_10"] == pytest.approx(result.test["ndcg_10"])


@pytest.mark.parametrize("metric", ["ndcg_10", "ndcg_10_seen_removed", "hr_10_seen_removed"])
def test_the_best_epoch_is_the_best_on_the_selection_metric(tiny_file, make_settings, metric, tmp_path):
    settings = make_settings(model=TINY_MODEL, training={"max_epochs": 4, "patience": 5, "batch_size": 32, "learning_rate": 5e-3,
                                                         "threads": 1, "selection_metric": metric})
    result = train(settings, "sasrec", load_benchmark(tiny_file), tmp_path / "run", track=False, progress=False)
    scores = [row[f"valid_{metric}"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert result.valid[metric] == pytest.approx(max(scores))  # the kept weights are that epoch's


def test_a_checkpoint_of_another_run_is_refused(tiny_file, tiny_settings, make_settings, tmp_path):
    data = load_benchmark(tiny_file)
    train(tiny_settings, "sasrec", data, tmp_path / "run", track=False, progress=False, max_epochs=1)
    other = make_settings(model={**TINY_MODEL, "hidden_size": 32}, training={"max_epochs": 2, "threads": 1})
    with pytest.raises(TrainingError, match="other settings or data") as refused:
        train(other, "sasrec", data, tmp_path / "run", track=False, progress=False)
    assert f"model.hidden_size: {TINY_MODEL['hidden_size']} -> 32" in str(refused.value)  # says what changed


def test_a_refused_checkpoint_names_a_setting_it_lacks():
    """A run saved before a setting existed is told apart by name, so the user can see why it will not resume."""
    saved = json.dumps({"model": "plr", "config": {"hidden_size": 64}, "training": {"learning_rate": 0.001}, "data": "d1"})
    now = json.dumps({"model": "plr", "config": {"hidden_size": 64, "input_norm": True}, "training": {"learning_rate": 0.002},
                      "data": "d1"})
    assert _fingerprint_changes(saved, now) == "model.input_norm: absent -> true; training.learning_rate: 0.001 -> 0.002"
    assert _fingerprint_changes("not json", now) == "the checkpoint's settings cannot be read"


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_a_finished_run_given_more_epochs_ends_as_a_longer_run(tiny_file, make_settings, weight_average, tmp_path):
    """It carries on from its last weights (and their running average), not from the best ones it kept."""
    settings = make_settings(model=TINY_MODEL, training={"max_epochs": 3, "patience": 5, "batch_size": 32, "learning_rate": 5e-3,
                                                         "threads": 1, "weight_average": weight_average})
    data = load_benchmark(tiny_file)
    train(settings, "rearec-erl", data, tmp_path / "extended", track=False, progress=False, max_epochs=1)
    extended = train(settings, "rearec-erl", data, tmp_path / "extended", track=False, progress=False)
    straight = train(settings, "rearec-erl", data, tmp_path / "straight", track=False, progress=False)
    assert extended.epochs_run == straight.epochs_run == 3
    assert extended.test == pytest.approx(straight.test, abs=1e-9)


def test_a_stalled_run_lowers_its_learning_rate_and_a_resumed_one_keeps_it(tiny_file, make_settings, tmp_path):
    """Steps too small to move any ranking: every epoch after the first stalls, and each stall halves the rate."""
    settings = make_settings(model=TINY_MODEL, training={"max_epochs": 4, "patience": 10, "batch_size": 32, "learning_rate": 1e-12,
                                                         "warmup_steps": 0, "threads": 1, "lr_decay_patience": 1})
    data = load_benchmark(tiny_file)
    train(settings, "sasrec", data, tmp_path / "resumed", track=False, progress=False, max_epochs=2)
    resumed = train(settings, "sasrec", data, tmp_path / "resumed", track=False, progress=False)
    straight = train(settings, "sasrec", data, tmp_path / "straight", track=False, progress=False)
    assert straight.best_epoch == 1
    for run in (straight, resumed):
        assert [row["learning_rate"] / 1e-12 for row in run.history] == pytest.approx([1, 1, 0.5, 0.25])


def test_the_rate_steps_down_every_few_stalled_epochs_but_not_at_the_stop():
    assert [_decays_now(bad, 2, 5) for bad in range(6)] == [False, False, True, False, True, False]
    assert not any(_decays_now(bad, 0, 5) for bad in range(6))


@pytest.mark.parametrize("scope", ["all", "matrices"])
def test_weight_decay_scope_spares_layer_norms_and_biases(scope, make_settings):
    """One AdamW step with zero gradients is pure decay: it shrinks exactly the parameters in scope."""
    model = build_model("rearec-erl", make_settings(model=TINY_MODEL).model, 40)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(_parameter_groups(model, 0.5, scope), lr=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        decayed = scope == "all" or p.ndim >= 2
        assert torch.allclose(p, before[name] * (0.5 if decayed else 1.0)), name
    names = {name for name, p in model.named_parameters() if p.ndim < 2}
    assert any("norm" in name for name in names) and any(name.endswith("bias") for name in names)


def test_the_trainer_builds_its_optimiser_from_the_settings(tiny_file, make_settings, tmp_path):
    settings = make_settings(model=TINY_MODEL, training={"max_epochs": 1, "batch_size": 32, "threads": 1, "weight_decay": 0.3,
                                                         "weight_decay_scope": "matrices", "adam_beta2": 0.98})
    train(settings, "sasrec", load_benchmark(tiny_file), tmp_path / "run", track=False, progress=False)
    groups = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.3, 0.0]
    assert all(g["betas"] == (0.9, 0.98) for g in groups)


def test_the_weight_average_is_what_is_validated_and_kept(tiny_file, make_settings, tmp_path):
    settings = make_settings(model=TINY_MODEL, training={"max_epochs": 2, "patience": 5, "batch_size": 32, "learning_rate": 5e-3,
                                                         "threads": 1, "weight_average": 0.9})
    data = load_benchmark(tiny_file)
    result = train(settings, "sasrec", data, tmp_path / "run", track=False, progress=False)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    average = build_model("sasrec", settings.model, data.num_items)
    average.load_state_dict({k.removeprefix("module."): v for k, v in saved["averaged"].items() if k.startswith("module.")})
    last = build_model("sasrec", settings.model, data.num_items)
    last.load_state_dict(saved["model"])
    assert evaluate(average, data.valid, [10])["ndcg_10"] == pytest.approx(result.history[-1]["valid_ndcg_10"])
    assert not torch.equal(average.backbone.items.ids.weight, last.backbone.items.ids.weight)
    kept = result.model.state_dict()
    expected = saved["state"]["best_state"]
    assert all(torch.equal(kept[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the CLI after its first checkpoint, run it again: same metrics as a run never killed."""
    data = write_sequences(tmp_path / "data.txt", users=1500, items=300, seed=1)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"state_dir": str(tmp_path / "state"), "model": TINY_MODEL,
                                  "training": {"max_epochs": 4, "patience": 10, "batch_size": 16, "threads": 1, "seed": 7}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REAFLOW_")}
    command = [sys.executable, "-m", "reaflow.cli", "train", "--model", "rearec-erl", "--data", data, "--config", str(config)]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([*command, "--run-dir", str(killed_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (killed_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make the data larger"
    assert not (killed_dir / "result.json").exists()

    resumed = subprocess.run([*command, "--run-dir", str(killed_dir)], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run([*command, "--run-dir", str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    a = json.loads((killed_dir / "result.json").read_text())
    b = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert a["epochs"] == b["epochs"] == 4
    assert a["test"] == pytest.approx(b["test"], abs=1e-9) and a["valid"] == pytest.approx(b["valid"], abs=1e-9)
    # The resumed MLflow run is the one the killed process opened.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reaflow"], output_format="list")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert a["run_id"] in {r.info.run_id for r in runs}


def test_cli_train_errors_are_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REAFLOW_")}
    env["REAFLOW_STATE_DIR"] = str(tmp_path / "state")
    for args, message in ((["--model", "gru4rec", "--data", "x"], "unknown model"),
                          (["--model", "sasrec", "--data", str(tmp_path / "nope.txt")], "does not exist"),
                          (["--model", "sasrec"], "give --data")):
        done = subprocess.run([sys.executable, "-m", "reaflow.cli", "train", *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_logged_model_returns_the_in_memory_top_k(tiny_file, tiny_settings, tmp_path):
    import mlflow

    from models.serving import recommend

    data = load_benchmark(tiny_file)
    result = train(tiny_settings, "plr", data, tmp_path / "run", progress=False)
    mlflow.set_tracking_uri(tiny_settings.mlflow_tracking_uri)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model"] == "plr" and "test_ndcg_10" in run.data.metrics
    assert run.data.tags["data.digest"] == data.digest()
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert "plots/learning_curves.png" in artifacts
    assert run.data.metrics["stream_spread_step_1"] > 0
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "valid_ndcg_10")
    assert [m.step for m in history] == [1, 2, 3]

    served = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    histories = [["1", "2", "3"], ["7", "8"], ["unknown-item", "5"], []]
    import pandas as pd

    out = served.predict(pd.DataFrame({"history": histories}), params={"k": 5})
    model = build_model("plr", tiny_settings.model, data.num_items)
    model.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]["best_state"])
    model.eval()
    ids, scores, _ = recommend(model, data.item_ids, histories, 5)
    assert out["item_ids"].map(list).tolist() == ids
    assert np.allclose(np.array(out["scores"].map(list).tolist()), np.array(scores), atol=1e-5)
    assert out["unknown_items"].tolist() == [0, 0, 1, 0]
    assert not set(ids[0]) & {"1", "2", "3"}  # seen items are not recommended again


@pytest.fixture
def postgres_uri():
    psycopg = pytest.importorskip("psycopg")
    name = f"reaflow_mlflow_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({exc.__class__.__name__}); start it to run this test")
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.mark.slow
def test_tracking_in_postgresql(tiny_file, make_settings, postgres_uri, tmp_path):
    import mlflow

    settings = make_settings(model=TINY_MODEL, mlflow={"tracking_uri": postgres_uri},
                             training={"max_epochs": 1, "batch_size": 32, "threads": 1})
    result = train(settings, "sasrec", load_benchmark(tiny_file), tmp_path / "run", progress=False)
    mlflow.set_tracking_uri(postgres_uri)
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_ndcg_10"] == pytest.approx(result.test["ndcg_10"])


@pytest.mark.skipif(not (SHARED_DATA / "amazon-beauty" / "Beauty.txt").exists(), reason=f"shared data not found at {SHARED_DATA}")
def test_beauty_loads_with_the_published_counts():
    data = load_benchmark("amazon-beauty", SHARED_DATA)
    assert data.num_items == 12101 and len(data.test) == 22363
    assert sum(len(s) for s in data.train) + 2 * len(data.test) == 198502


@pytest.mark.skipif(not (SHARED_DATA / "ml-100k" / "u.data").exists(), reason=f"shared data not found at {SHARED_DATA}")
def test_movielens_orders_by_time():
    data = load_benchmark("ml-100k", SHARED_DATA)
    assert data.num_items == 1682 and len(data.test) == 943


def test_sweeps_are_logged_with_their_plot(make_settings):
    import mlflow

    from models.tracking import log_sweep

    settings = make_settings()
    rows = [{"model": "rearec-erl", "K": k, "ndcg_10": 0.01 * k} for k in (1, 2, 3)]
    run_id = log_sweep(settings, rows, "K", "ndcg_10", "reasoning-steps")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    paths = {a.path for folder in ("plots", "sweeps") for a in mlflow.MlflowClient().list_artifacts(run_id, folder)}
    assert paths == {"plots/reasoning-steps.png", "sweeps/reasoning-steps.json"}


@pytest.mark.skipif(not (SHARED_DATA / "amazon-sports" / "Sports_and_Outdoors.txt").exists(), reason=f"shared data not found at {SHARED_DATA}")
def test_sports_loads_with_the_published_counts():
    data = load_benchmark("amazon-sports", SHARED_DATA)
    assert data.num_items == 18357 and len(data.test) == 35598


def test_generated_items_follow_the_history_as_marked_inputs():
    from models.data import history_batches

    sequences = [np.asarray([1, 2, 3, 4]), np.asarray([5, 6, 7])]
    contexts = [np.asarray([8, 9]), np.asarray([], dtype=np.int64)]
    batch = train_batches(sequences, 2, 50, 0, 0, contexts)[0]
    rows = {tuple(r[r > 0].tolist()): i for i, r in enumerate(batch.items)}
    first, second = rows[(1, 2, 3, 8, 9)], rows[(5, 6)]
    # All but the newest item, then the generated items; the last of them predicts the newest item (4).
    assert batch.items[first].tolist() == [1, 2, 3, 8, 9] and batch.targets[first].tolist() == [2, 3, 4, 0, 4]
    assert batch.token_types[first].tolist() == [0, 0, 0, 1, 1]
    assert batch.targets[second][-2:].tolist() == [6, 7] and batch.token_types[second].sum() == 0  # nothing generated
    # Scoring: the generated items after the history; the window keeps them and drops the oldest history items.
    [(order, scored)] = history_batches([np.asarray([1, 2, 3, 4, 5])], 8, 4, [np.asarray([8, 9])])
    assert scored.items[0].tolist() == [4, 5, 8, 9] and scored.token_types[0].tolist() == [0, 0, 1, 1]
