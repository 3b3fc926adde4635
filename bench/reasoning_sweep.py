"""Metrics against reasoning depth and width: ReaRec over steps K, PLR over streams M; plots logged to MLflow.

Trains each setting with the project's trainer (resumable run folders under
``--out``), then logs one MLflow run per sweep holding the table and a plot of
test NDCG@10 against K (ReaRec-ERL, ReaRec-PRL) and against M (PLR).

    python bench/reasoning_sweep.py --data ml-100k --data-root ../shared/data --epochs 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.data import load_benchmark
from models.tracking import log_sweep
from models.train import train
from reaflow.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--depth-models", nargs="+", default=["rearec-erl", "rearec-prl"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench/out/reasoning_sweep")
    parser.add_argument("--state-dir", default="var/state", help="Where the MLflow SQLite store lives (as in settings).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_benchmark(args.data, args.data_root)
    out = Path(args.out) / args.data
    training = {"max_epochs": args.epochs, "patience": 4, "learning_rate": 3e-3, "warmup_steps": 100, "seed": args.seed, "threads": 1}
    settings = load_settings(state_dir=args.state_dir, training=training)

    def run(model: str, **model_settings) -> dict:
        tag = "-".join(f"{k}{v}" for k, v in model_settings.items())
        s = load_settings(state_dir=args.state_dir, training=training, model={"loss": "sampled", "prl_cl_warmup_epochs": 0, **model_settings})
        result = train(s, model, data, out / f"{model}-{tag}", track=False, progress=False)
        row = {"model": model, **model_settings, **{k: result.test[k] for k in ("ndcg_10", "hr_10", "ndcg_10_seen_removed")}}
        print(json.dumps(row), flush=True)
        return row

    depth = [run(model, reasoning_steps=k) for model in args.depth_models for k in args.steps]
    width = [run("plr", plr_streams=m) for m in args.streams]
    # PLR's open choice: train on base + reasoning, as inference scores (default), or on the reasoning alone.
    alternative = run("plr", plr_streams=2, plr_train_with_base=False)
    print("plr trained on the reasoning alone:", json.dumps(alternative))
    depth = [{**r, "K": r.pop("reasoning_steps")} for r in depth]
    width = [{**r, "M": r.pop("plr_streams")} for r in width]
    print("depth run", log_sweep(settings, depth, "K", "ndcg_10", f"{args.data}-reasoning-steps"))
    print("width run", log_sweep(settings, width, "M", "ndcg_10", f"{args.data}-plr-streams"))


if __name__ == "__main__":
    main()
