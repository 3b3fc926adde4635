"""Beyond-log generation speed: users per second against denoising steps, batch size and threads.

The denoiser has the default architecture (``model.*``) over a catalogue of
``--catalog`` items (Amazon Beauty has 12,101); its weights are untrained,
which changes what is generated but not the work done (every step runs the
whole denoiser, whatever it commits). Histories are random, 5 to 40 items.
``scored`` compares scoring only the generated block (what ``generate`` does)
with scoring every position (the pipeline reads only the block), side by side
in one run.

    python bench/beyond_log_speed.py --users 1024 --threads 1 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

import numpy as np
import torch


def main() -> None:
    from llm_enrich import beyond_log
    from models import build_model
    from reaflow.settings import ModelSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=int, default=12101)
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("diffusion", ModelSettings(), args.catalog).eval()
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(1, args.catalog + 1), size=int(rng.integers(5, 41)), replace=False)
                 for _ in range(args.users)]
    rows = []
    block_only = beyond_log.PipelineDenoiser

    class AllPositions(block_only):
        def __init__(self, model, last=None):
            super().__init__(model, None)

    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch_size in args.batch_sizes:
            for steps in args.steps:
                for scored in ("block", "all"):
                    beyond_log.PipelineDenoiser = AllPositions if scored == "all" else block_only
                    beyond_log.generate(model, histories[:batch_size], args.items, steps=steps, batch_size=batch_size)  # warm-up
                    started = time.perf_counter()
                    out = beyond_log.generate(model, histories, args.items, steps=steps, batch_size=batch_size)
                    seconds = time.perf_counter() - started
                    beyond_log.PipelineDenoiser = block_only
                    row = {"threads": threads, "batch_size": batch_size, "steps": steps, "scored": scored,
                           "users_per_second": round(len(histories) / seconds, 1),
                           "mean_items": round(float(np.mean([len(x) for x in out.items])), 2)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        gaps = [np.where(rng.random(len(h)) < 0.2, beyond_log.MISSING, h) for h in histories]
        started = time.perf_counter()
        beyond_log.infill(model, gaps, steps=5, batch_size=256)
        row = {"threads": threads, "infill_users_per_second_steps5": round(len(gaps) / (time.perf_counter() - started), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"date": dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                      "catalog": args.catalog, "users": args.users, "items": args.items}))


if __name__ == "__main__":
    main()
