"""Accuracy grid: models x seeds on a benchmark (leave-one-out, full ranking), resumable.

Every (model, seed) trains in its own run folder under ``--out`` with the
project's trainer (checkpoint each epoch): rerun the same command after an
interruption and finished runs are skipped, unfinished ones resume; rerun
with a larger ``--epochs`` and ``--extend`` and runs that did not stop early
carry on. Runs go
to ``--workers`` processes with one torch thread each. The summary (mean and
std over seeds of the test metrics, seen items kept and removed) is printed
as a Markdown table and written to ``summary.json``.

    python bench/models_grid.py --data amazon-beauty --data-root ../shared/data \\
        --models sasrec rearec-erl rearec-prl plr --seeds 1 2 3 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from pathlib import Path

METRICS = ("ndcg_10", "ndcg_20", "hr_10", "hr_20")


def run_one(job: dict) -> dict:
    import torch

    from models.data import load_benchmark
    from models.train import train
    from reaflow.errors import ReaflowError
    from reaflow.settings import load_settings

    torch.set_num_threads(1)
    folder = Path(job["out"]) / f"{job['model']}-seed{job['seed']}"
    done = folder / "result.json"
    if done.exists() and not job["extend"]:
        return json.loads(done.read_text())
    # With --extend, a run stopped by a lower --epochs carries on to the new limit (finished runs return at once).
    settings = load_settings(state_dir=job["out"], model=job["model_settings"],
                             training={**job["training"], "seed": job["seed"], "threads": 1})
    data = load_benchmark(job["data"], job["data_root"])
    try:
        train(settings, job["model"], data, folder, track=False, progress=False)
    except ReaflowError as exc:  # one bad run (e.g. a stale checkpoint) must not stop the others
        return {"model": job["model"], "seed": job["seed"], "error": str(exc)}
    return json.loads(done.read_text())


def summarise(out: Path, models: list[str]) -> tuple[str, dict]:
    rows, summary = [], {}
    header = "| model | seeds | epochs (best) | s/epoch | " + " | ".join(
        f"{m.upper().replace('_', '@')}{suffix}" for suffix in ("", " seen rm") for m in METRICS) + " |"
    rows.append(header)
    rows.append("|" + "---|" * (header.count("|") - 1))
    for model in models:
        results = [json.loads(p.read_text()) for p in sorted(out.glob(f"{model}-seed*/result.json"))]
        if not results:
            continue
        cells, entry = [], {"seeds": len(results)}
        for suffix in ("", "_seen_removed"):
            for metric in METRICS:
                values = [r["test"][metric + suffix] for r in results]
                mean = statistics.fmean(values)
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                entry[metric + suffix] = {"mean": mean, "std": std, "values": values}
                cells.append(f"{mean:.4f} ± {std:.4f}")
        per_epoch = [r["seconds"] / max(r["epochs"], 1) for r in results]
        entry["seconds_per_epoch"] = statistics.fmean(per_epoch)
        entry["epochs"] = [r["epochs"] for r in results]
        entry["best_epochs"] = [r["best_epoch"] for r in results]
        summary[model] = entry
        epochs = "/".join(f"{r['epochs']}({r['best_epoch']})" for r in results)
        rows.append(f"| {model} | {len(results)} | {epochs} | {entry['seconds_per_epoch']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--models", nargs="+", default=["sasrec", "rearec-erl", "rearec-prl", "plr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=5000, help="Validation users read for early stopping (0: all).")
    parser.add_argument("--loss", choices=["full", "sampled"], default="sampled")
    parser.add_argument("--model-settings", default="{}", help="JSON of extra model settings.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extend", action="store_true", help="Carry finished runs on to a larger --epochs.")
    parser.add_argument("--out", default="bench/out/models_grid")
    args = parser.parse_args()

    out = Path(args.out) / args.data
    out.mkdir(parents=True, exist_ok=True)
    model_settings = {"loss": args.loss, **json.loads(args.model_settings)}
    training = {"max_epochs": args.epochs, "patience": args.patience, "learning_rate": args.lr, "batch_size": args.batch_size,
                "warmup_steps": args.warmup_steps, "valid_users": args.valid_users}
    jobs = [{"model": m, "seed": s, "data": args.data, "data_root": args.data_root, "out": str(out),
             "model_settings": model_settings, "training": training, "extend": args.extend}
            for s in args.seeds for m in args.models]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            if "error" in result:
                print(f"failed {result['model']} seed {result['seed']}: {result['error']}", flush=True)
                continue
            print(f"done {result['model']} best epoch {result['best_epoch']} test ndcg_10 {result['test']['ndcg_10']:.4f}", flush=True)
    table, summary = summarise(out, args.models)
    (out / "summary.json").write_text(json.dumps({"settings": {"model": model_settings, "training": training}, "models": summary}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
