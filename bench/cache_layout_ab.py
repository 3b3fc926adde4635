"""What laying the sequence cache out once per reasoning chain saves, measured in one process.

``SequenceCache.contiguous`` copies the cached keys and values into a
[B, heads, L, head_dim] layout before a chain's first step. Without it each
step's matrix products copy the strided views again. Here the method is
swapped for the identity ("strided") and back ("laid out") between passes,
the two interleaved (the order alternating) over the same batches, so load
from elsewhere falls on both; the medians over ``--rounds`` are printed.
SASRec never runs a chain: its two columns differ by noise only.

    python bench/cache_layout_ab.py --data ml-100k --data-root ../shared/data --mode infer
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from models import build_model
from models.backbone import SequenceCache
from models.data import history_batches, load_benchmark, train_batches
from reaflow.settings import ModelSettings

LAID_OUT = SequenceCache.contiguous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--mode", choices=["infer", "train"], default="infer",
                        help="infer: score every test user at batch 256; train: forward and backward of 12 training batches.")
    parser.add_argument("--models", nargs="+", default=["sasrec", "rearec-erl", "plr"])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_benchmark(args.data, args.data_root)
    models = {}
    for name in args.models:
        torch.manual_seed(0)
        models[name] = build_model(name, ModelSettings(loss="full"), data.num_items)

    if args.mode == "infer":
        batches = [batch for _, batch in history_batches(data.test.histories, 256, 50)]

        def one_pass(model):
            model.eval()
            with torch.inference_mode():
                for batch in batches:
                    model.score(batch).topk(10)
    else:
        every = train_batches(data.train, 256, 50, seed=0, epoch=0, by_length=True)
        picked = np.random.default_rng(0).choice(len(every), min(12, len(every)), replace=False)
        batches = [every[i] for i in picked]

        def one_pass(model):
            model.train()
            model.epoch = 10  # past every warm-up: all loss terms on
            for batch in batches:
                model.loss(batch)[0].backward()
            model.zero_grad(set_to_none=True)

    seconds = {(name, laid_out): [] for name in models for laid_out in (False, True)}
    try:
        for round_ in range(args.rounds):
            for name, model in models.items():
                for laid_out in ((False, True) if round_ % 2 else (True, False)):
                    SequenceCache.contiguous = LAID_OUT if laid_out else (lambda cache: cache)
                    started = time.perf_counter()
                    one_pass(model)
                    seconds[(name, laid_out)].append(time.perf_counter() - started)
    finally:
        SequenceCache.contiguous = LAID_OUT
    median = {key: statistics.median(values) for key, values in seconds.items()}
    print(f"{args.data}, {args.mode}, median of {args.rounds} passes each, torch {torch.__version__}")
    print("| model | s, strided | s, laid out | change | vs SASRec, strided | vs SASRec, laid out |")
    print("|---|---|---|---|---|---|")
    for name in models:
        before, after = median[(name, False)], median[(name, True)]
        against = (f"{before / median[('sasrec', False)] - 1:+.1%} | {after / median[('sasrec', True)] - 1:+.1%}"
                   if "sasrec" in models else "n/a | n/a")
        print(f"| {name} | {before:.3f} | {after:.3f} | {after / before - 1:+.1%} | {against} |")


if __name__ == "__main__":
    main()
