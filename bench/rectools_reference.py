"""RecTools' own SASRec on our leave-one-out split: is the published 256-negative figure reachable here?

The 256-negative SASRec and eSASRec references in bench/RESULTS.md were
produced with RecTools. Our SASRec, given their setting, stays below their
figures, so this script trains RecTools' implementation itself on exactly the
split our benchmarks read (``models.data.load_benchmark``: each user's last
item is the test target, the one before it the validation target, the rest
is training), picks the epoch on validation HR@10 (as the eSASRec repository
does), and prints one JSON line per epoch and the test figures in our
metrics (``models.evaluate.ranking_metrics``), seen items removed and kept.
An epoch takes minutes here; ``kill -USR1 <pid>`` ends training after the
current epoch and tests the best one.

RecTools is not a dependency of the project: run this from the repository
root in an environment of its own (pydantic-settings is what reading our
split needs there), e.g.

    python3.11 -m venv /tmp/rt && /tmp/rt/bin/pip install torch==2.13.0 'rectools[torch]' pydantic-settings
    PYTHONPATH=. /tmp/rt/bin/python bench/rectools_reference.py ../shared/data/amazon-beauty/Beauty.txt \\
        --out bench/out/rectools_beauty --epochs 60
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from models.data import DataError, load_benchmark
from models.evaluate import ranking_metrics


def interactions(histories: list[np.ndarray]):
    """RecTools' input: user ``u`` (the split's row) read ``histories[u]`` in order, one second apart."""
    import pandas as pd
    from rectools import Columns

    rows = [
        (user, int(item), 1.0, pd.Timestamp(0) + pd.Timedelta(seconds=position))
        for user, items in enumerate(histories)
        for position, item in enumerate(items)
    ]
    return pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Weight, Columns.Datetime])


def target_metrics(model, dataset, targets: np.ndarray, filter_viewed: bool) -> dict[str, float]:
    """Our HR/NDCG@{10,20} of user ``u``'s ``targets[u]`` in RecTools' top 20 (rank 20 stands for not in it)."""
    from rectools import Columns

    k = 20
    reco = model.recommend(users=list(range(len(targets))), dataset=dataset, k=k, filter_viewed=filter_viewed)
    rank_of = {
        (user, item): rank - 1 for user, item, rank in zip(reco[Columns.User], reco[Columns.Item], reco[Columns.Rank])
    }
    ranks = np.array([rank_of.get((user, int(target)), k) for user, target in enumerate(targets)])
    return ranking_metrics(ranks, (10, k))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="S3-Rec style sequence file, e.g. Beauty.txt")
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-epoch log and result.json")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=50, help="epochs without a better validation HR@10")
    parser.add_argument("--factors", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--loss", default="sampled_softmax")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        data = load_benchmark(str(args.data))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import torch
    from pytorch_lightning import seed_everything
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True)
    train_set = Dataset.construct(interactions(data.valid.histories))
    test_history = Dataset.construct(interactions(data.test.histories))

    model = SASRecModel(
        n_blocks=args.blocks, n_heads=args.heads, n_factors=args.factors, dropout_rate=args.dropout,
        session_max_len=args.max_len, loss=args.loss, n_negatives=args.negatives, lr=1e-3,
        batch_size=args.batch_size, epochs=1, deterministic=True, recommend_torch_device="cpu",
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "epochs.jsonl").open("w")
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))  # finish this epoch, then test the best one
    best, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        model.fit_partial(train_set, min_epochs=1, max_epochs=1)
        seconds = time.perf_counter() - started
        valid = target_metrics(model, train_set, data.valid.targets, filter_viewed=True)
        row = {"epoch": epoch, "train_seconds": round(seconds, 1), **{f"valid_{k}": v for k, v in valid.items()}}
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()
        if valid["hr_10"] > best:
            best, best_epoch = valid["hr_10"], epoch
            best_state = copy.deepcopy(model.lightning_model.torch_model.state_dict())
        if stop or epoch - best_epoch >= args.patience:
            break
    model.lightning_model.torch_model.load_state_dict(best_state)
    result = {
        "epochs": epoch,
        "best_epoch": best_epoch,
        "valid_hr_10_seen_removed": best,
        "test_seen_removed": target_metrics(model, test_history, data.test.targets, filter_viewed=True),
        "test_seen_kept": target_metrics(model, test_history, data.test.targets, filter_viewed=False),
        "settings": {key: str(value) for key, value in vars(args).items()},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
