"""Accuracy grid: models x settings x seeds on a benchmark (leave-one-out, full ranking), resumable.

Every (setting, model, seed) trains in its own run folder under ``--out`` with
the project's trainer (checkpoint each epoch): rerun the same command after an
interruption and finished runs are skipped, unfinished ones resume; rerun
with a larger ``--epochs`` and ``--extend`` and runs that did not stop early
carry on. A setting is one learning rate and one dropout (``--lr`` and
``--dropout`` take several: every model gets the same search); jobs go
seed by seed, so a grid stopped early still has every setting at its first
seeds. Runs go to ``--workers`` processes with one torch thread each, on
``--device``. The summary (mean and std over seeds of the test metrics, seen
items kept and removed, per setting; then each model at the setting with the
best mean validation NDCG@10) is printed as Markdown and written to
``summary.json``.

    python bench/models_grid.py --data amazon-beauty --data-root ../shared/data \\
        --models sasrec rearec-erl rearec-prl plr --seeds 1 2 3 --epochs 12
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import signal
import statistics
import sys
from pathlib import Path
from typing import get_args

METRICS = ("ndcg_10", "ndcg_20", "hr_10", "hr_20")


def run_one(job: dict) -> dict:
    import torch

    from models.data import load_benchmark
    from models.train import train
    from reaflow.errors import ReaflowError

    torch.set_num_threads(1)
    folder = Path(job["out"]) / job["setting"] / f"{job['model']}-seed{job['seed']}"
    done = folder / "result.json"
    if done.exists() and not job["extend"]:
        return {**json.loads(done.read_text()), "setting": job["setting"], "seed": job["seed"]}
    # With --extend, a run stopped by a lower --epochs carries on to the new limit (finished runs return at once).
    settings = job_settings(job["out"], job["model_settings"], job["training"], job["seed"])
    data = load_benchmark(job["data"], job["data_root"])
    try:
        train(settings, job["model"], data, folder, track=False, progress=False)
    except ReaflowError as exc:  # one bad run (e.g. a stale checkpoint) must not stop the others
        return {"model": job["model"], "seed": job["seed"], "setting": job["setting"], "error": str(exc)}
    return {**json.loads(done.read_text()), "setting": job["setting"], "seed": job["seed"]}


def job_settings(out: str, model_settings: dict, training: dict, seed: int):
    """The settings of one run of the grid (``bench/reasoning_states.py`` rebuilds a finished run from them)."""
    from reaflow.settings import load_settings

    return load_settings(state_dir=out, model=model_settings, training={**training, "seed": seed, "threads": 1})


def setting_name(lr: float, dropout: float | None) -> str:
    return f"lr{lr:g}" + ("" if dropout is None else f"-do{dropout:g}")


def summarise_runs(results: list[dict]) -> dict:
    entry = {"seeds": len(results)}
    for split, suffixes in (("test", ("", "_seen_removed")), ("valid", ("", "_seen_removed"))):
        for suffix in suffixes:
            for metric in METRICS:
                values = [r[split][metric + suffix] for r in results]
                entry[f"{split}_{metric}{suffix}"] = {"mean": statistics.fmean(values),
                                                      "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                                      "values": values}
    entry["seconds_per_epoch"] = statistics.fmean(r["seconds"] / max(r["epochs"], 1) for r in results)
    entry["epochs"] = [r["epochs"] for r in results]
    entry["best_epochs"] = [r["best_epoch"] for r in results]
    return entry


def column(metric: str) -> str:
    """Table heading of a metric key: ``hr_10_seen_removed`` -> ``HR@10 seen rm``."""
    base = metric.removesuffix("_seen_removed")
    return base.upper().replace("_", "@") + (" seen rm" if base != metric else "")


def summarise(out: Path, models: list[str], settings: list[str], selection: str = "ndcg_10") -> tuple[str, dict]:
    """Tables of every setting and of each model's best, settings compared on the validation ``selection`` metric."""
    header = f"| model | setting | seeds | epochs (best) | s/epoch | valid {column(selection)} | " + " | ".join(
        column(m + suffix) for suffix in ("", "_seen_removed") for m in METRICS) + " |"
    rule = "|" + "---|" * (header.count("|") - 1)

    def row(model: str, setting: str, entry: dict) -> str:
        cells = [f"{entry[f'test_{m}{s}']['mean']:.4f} ± {entry[f'test_{m}{s}']['std']:.4f}"
                 for s in ("", "_seen_removed") for m in METRICS]
        epochs = "/".join(f"{e}({b})" for e, b in zip(entry["epochs"], entry["best_epochs"]))
        valid = entry[f"valid_{selection}"]["mean"]
        return (f"| {model} | {setting} | {entry['seeds']} | {epochs} | {entry['seconds_per_epoch']:.1f} | "
                f"{valid:.4f} | " + " | ".join(cells) + " |")

    summary: dict = {"settings": {}, "best": {}}
    all_rows, best_rows = [header, rule], [header, rule]
    for model in models:
        for setting in settings:
            results = [json.loads(p.read_text()) for p in sorted((out / setting).glob(f"{model}-seed*/result.json"))]
            if results:
                summary["settings"].setdefault(setting, {})[model] = summarise_runs(results)
                all_rows.append(row(model, setting, summary["settings"][setting][model]))
        tried = {s: per[model] for s, per in summary["settings"].items() if model in per}
        if tried:
            best = max(tried, key=lambda s: tried[s][f"valid_{selection}"]["mean"])
            summary["best"][model] = {"setting": best, **tried[best]}
            best_rows.append(row(model, best, tried[best]))
    table = ("All settings:\n\n" + "\n".join(all_rows) +
             f"\n\nEach model at its best setting (mean valid {column(selection)} over its seeds):\n\n" + "\n".join(best_rows))
    return table, summary


def main() -> None:
    from reaflow.settings import TrainingSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--models", nargs="+", default=["sasrec", "rearec-erl", "rearec-prl", "plr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", nargs="+", type=float, default=[3e-3], help="Learning rates searched.")
    parser.add_argument("--dropout", nargs="+", type=float, default=None,
                        help="Dropouts searched (default: the model settings' dropout).")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=5000, help="Validation users read for early stopping (0: all).")
    parser.add_argument("--loss", choices=["full", "sampled"], default="sampled")
    parser.add_argument("--select-on", choices=get_args(TrainingSettings.model_fields["selection_metric"].annotation), default="ndcg_10",
                        help="Validation metric that picks the best epoch (training.selection_metric).")
    parser.add_argument("--model-settings", default="{}", help="JSON of extra model settings.")
    parser.add_argument("--training-settings", default="{}", help="JSON of extra training settings (e.g. weight_average).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (every worker shares it).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extend", action="store_true", help="Carry finished runs on to a larger --epochs.")
    parser.add_argument("--out", default="bench/out/models_grid")
    args = parser.parse_args()

    out = Path(args.out) / args.data
    out.mkdir(parents=True, exist_ok=True)
    base_model = {"loss": args.loss, **json.loads(args.model_settings)}
    training = {"max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size,
                "warmup_steps": args.warmup_steps, "valid_users": args.valid_users, "device": args.device,
                "selection_metric": args.select_on, **json.loads(args.training_settings)}
    grid = {setting_name(lr, do): ({**base_model, **({} if do is None else {"dropout": do})},
                                   {**training, "learning_rate": lr})
            for lr, do in itertools.product(args.lr, args.dropout or [None])}
    jobs = [{"model": m, "seed": s, "setting": name, "data": args.data, "data_root": args.data_root, "out": str(out),
             "model_settings": model_settings, "training": train_settings, "extend": args.extend}
            for s in args.seeds for name, (model_settings, train_settings) in grid.items() for m in args.models]
    # A plain SIGTERM (kill, pkill) would end this process and orphan the workers, still training; as an
    # exception it leaves the pool's block, which terminates them (each run resumes from its last epoch).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            where = f"{result['model']} {result['setting']} seed {result['seed']}"
            if "error" in result:
                print(f"failed {where}: {result['error']}", flush=True)
                continue
            print(f"done {where}: best epoch {result['best_epoch']}, valid ndcg_10 {result['valid']['ndcg_10']:.4f}, "
                  f"test ndcg_10 seen rm {result['test']['ndcg_10_seen_removed']:.4f}", flush=True)
    table, summary = summarise(out, args.models, list(grid), args.select_on)
    summary["grid"] = {name: {"model": m, "training": t} for name, (m, t) in grid.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table)


if __name__ == "__main__":
    main()
