"""Beyond-log behaviours from the masked-diffusion denoiser: are they right, how fast, and do they help the recommenders?

Per dataset and seed (``--out``/<dataset>/seed<k>/, checkpointed, so a rerun
carries on; removing ``prepare.json`` re-evaluates the lists with the saved
``generated.npz``):

1. the denoiser trains on the training sequences without their newest item
   (``models.data.without_newest``), early stopping on validation NDCG@10 of
   one masked slot;
2. for the test histories it generates ``--items`` items at each number of
   denoising steps in ``--steps``: users per second, and the lists' hit rate,
   precision, recall and NDCG against everything the user did in the test
   period (time split) or the held-out item (leave-one-out), novelty,
   intra-list diversity, coverage and calibration; beside them the same
   figures for the most popular unseen items and for SASRec's top-N; the
   confidences also after isotonic calibration fitted on validation users;
3. with the default steps it generates for every training prefix, validation
   and test history, and SASRec and PLR train with and without those items
   as marked inputs (same seeds), reported overall and for short histories.

    python bench/beyond_log_experiment.py --datasets ml-100k --seeds 1 2 3
    python bench/beyond_log_experiment.py --datasets amazon-beauty --seeds 1 --eval-users 2000 --default-steps 5 \
        --loss sampled --prepare-threads 2 --epochs 15 --patience 3 --denoiser-epochs 30 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from tables import mean_std


def load(name: str, args):
    from models.data import _read_s3rec, leave_one_out_items, load_benchmark

    if name == "ml-100k":
        return load_benchmark("ml-100k", args.data_root, protocol="time")
    if name == "amazon-beauty":
        sequences, _ = _read_s3rec(Path(args.data_root) / "amazon-beauty" / "Beauty.txt")
        if args.users:
            rows = np.sort(np.random.default_rng(0).choice(len(sequences), min(args.users, len(sequences)), replace=False))
            sequences = [sequences[i] for i in rows]
        return leave_one_out_items(f"amazon-beauty-{len(sequences)}u", sequences)
    raise SystemExit(f"unknown dataset {name!r}: ml-100k or amazon-beauty")


def settings_for(args, folder: Path, seed: int, **model):
    from reaflow.settings import load_settings

    return load_settings(lake_root=str(folder / "lake"), state_dir=str(folder / "state"),
                         model={"loss": args.loss, **model},
                         training={"seed": seed, "max_epochs": args.epochs, "patience": args.patience, "learning_rate": args.lr,
                                   "batch_size": args.batch_size, "warmup_steps": args.warmup_steps, "threads": 1})


def prepare(job: dict) -> dict:
    """Denoiser, generation quality by steps, and the generated items for the downstream runs."""
    import torch

    from llm_enrich.beyond_log import Calibrator, evaluate_lists, generate, list_hits, popularity_lists
    from models.data import without_newest
    from models.train import train

    args = argparse.Namespace(**job["args"])
    torch.set_num_threads(args.prepare_threads)
    folder = Path(args.out) / job["dataset"] / f"seed{job['seed']}"
    done = folder / "prepare.json"
    if done.exists():
        return json.loads(done.read_text())
    data = load(job["dataset"], args)
    settings = settings_for(args, folder, job["seed"])
    settings.training.max_epochs = args.denoiser_epochs
    result = train(settings, "diffusion", without_newest(data), folder / "denoiser", track=False, progress=False)
    torch.set_num_threads(args.prepare_threads)  # the trainer set training.threads
    model = result.model
    test = data.test.sample(args.eval_users, job["seed"]) if args.eval_users else data.test
    counts = data.item_counts()
    vectors = model.backbone.items.table()[: data.num_items + 1].detach().numpy()
    quality = {}
    for steps in args.steps:
        out = generate(model, test.histories, args.items, steps=steps, seed=job["seed"])
        quality[f"diffusion-steps{steps}"] = {
            **evaluate_lists(out.items, test, counts, head_share=settings.training.head_share, n=args.items,
                             confidences=out.confidences, vectors=vectors),
            "users_per_second": len(out) / out.seconds}
    quality["popularity"] = evaluate_lists(popularity_lists(counts, test.histories, args.items), test, counts,
                                           head_share=settings.training.head_share, n=args.items, vectors=vectors)
    contexts, confidences = {}, {}
    saved = np.load(folder / "generated.npz") if (folder / "generated.npz").exists() else None
    for split, histories in (("train", [s[:-1] for s in data.train]), ("valid", data.valid.histories),
                             ("test", data.test.histories)):
        if saved is not None:  # a re-evaluation: the same items as the downstream runs read
            contexts[split] = [saved[f"{split}_{i}"] for i in range(len(histories))]
            confidences[split] = [saved[f"{split}_{i}_confidence"] for i in range(len(histories))]
            continue
        out = generate(model, histories, args.items, steps=args.default_steps, seed=job["seed"])
        contexts[split], confidences[split] = out.items, out.confidences
    calibrator = Calibrator.fit(np.concatenate([np.zeros(0), *confidences["valid"]]),
                                np.concatenate([np.zeros(0), *list_hits(contexts["valid"], data.valid)]))
    quality[f"diffusion-steps{args.default_steps}-calibrated"] = evaluate_lists(
        contexts["test"], data.test, counts, head_share=settings.training.head_share, n=args.items,
        confidences=[calibrator(c) for c in confidences["test"]], vectors=vectors)  # every test user
    if saved is None:
        np.savez(folder / "generated.npz", **{f"{split}_{i}": c for split, rows in contexts.items() for i, c in enumerate(rows)},
                 **{f"{split}_{i}_confidence": c for split, rows in confidences.items() for i, c in enumerate(rows)})
    report = {"dataset": job["dataset"], "seed": job["seed"], "data": data.summary(), "denoiser": result.summary(),
              "quality": quality}
    done.write_text(json.dumps(report, indent=2))
    return report


def downstream(job: dict) -> dict:
    """One recommender with or without the generated items; SASRec without them also gives its top-N lists."""
    import torch

    from llm_enrich.beyond_log import evaluate_lists
    from models.data import with_beyond_log
    from models.serving import top_k
    from models.train import train

    torch.set_num_threads(1)
    args = argparse.Namespace(**job["args"])
    folder = Path(args.out) / job["dataset"] / f"seed{job['seed']}"
    run = folder / f"{job['model']}-{job['variant']}"
    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())
    data = load(job["dataset"], args)
    if job["variant"] == "beyond-log":
        saved = np.load(folder / "generated.npz")
        sizes = {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
        data = with_beyond_log(data, *([saved[f"{s}_{i}"] for i in range(sizes[s])] for s in ("train", "valid", "test")))
    settings = settings_for(args, folder, job["seed"])
    started = time.perf_counter()
    result = train(settings, job["model"], data, run, track=False, progress=False)
    summary = {**{k: job[k] for k in ("dataset", "seed", "model", "variant")}, "test": result.test,
               "epochs": result.epochs_run, "seconds": time.perf_counter() - started}
    if job["model"] == "sasrec" and job["variant"] == "plain":
        test = data.test.sample(args.eval_users, job["seed"]) if args.eval_users else data.test  # the users of the steps table
        lists = top_k(result.model.eval(), test.histories, args.items)[0]
        vectors = result.model.backbone.items.table().detach().numpy()
        summary["lists"] = evaluate_lists(lists, test, data.item_counts(), head_share=settings.training.head_share,
                                          n=args.items, vectors=vectors)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--users", type=int, default=0, help="Amazon Beauty: a fixed random sample of this many users (0: all).")
    parser.add_argument("--models", nargs="+", default=["sasrec", "plr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--default-steps", type=int, default=10, help="Steps of the items the recommenders read.")
    parser.add_argument("--eval-users", type=int, default=0, help="Test users of the steps table, a fixed sample (0: all).")
    parser.add_argument("--loss", choices=["full", "sampled"], default="full", help="The recommenders' loss (model.loss).")
    parser.add_argument("--prepare-threads", type=int, default=1, help="torch threads of the denoiser and its generation.")
    parser.add_argument("--denoiser-epochs", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench/out/beyond_log")
    args = parser.parse_args()
    common = {"args": vars(args)}
    with mp.get_context("spawn").Pool(args.workers) as pool:
        prepared = pool.map(prepare, [{"dataset": d, "seed": s, **common} for d in args.datasets for s in args.seeds])
        for p in prepared:
            print(f"prepared {p['dataset']} seed {p['seed']}: denoiser {p['denoiser']['epochs']} epochs, "
                  f"valid ndcg_10 {p['denoiser']['valid_ndcg_10']:.4f}", flush=True)
        jobs = [{"dataset": d, "seed": s, "model": m, "variant": v, **common}
                for s in args.seeds for d in args.datasets for m in args.models for v in ("plain", "beyond-log")]
        runs = []
        for done in pool.imap_unordered(downstream, jobs):
            runs.append(done)
            print(f"done {done['dataset']} {done['model']} {done['variant']} seed {done['seed']}: "
                  f"ndcg_10 {done['test']['ndcg_10']:.4f} ({done['epochs']} epochs, {done['seconds']:.0f} s)", flush=True)

    lines = []
    for dataset in args.datasets:
        mine = [p for p in prepared if p["dataset"] == dataset]
        lines.append(f"\n{dataset}: {mine[0]['data']['test_users']} test users, {mine[0]['data']['items']} items, "
                     f"seeds {args.seeds}\n")
        n = args.items
        keys = (f"hit_{n}", f"precision_{n}", f"recall_{n}", f"ndcg_{n}", f"next_hr_{n}", "long_tail_share", "novelty_bits",
                "ild", "coverage", "mean_list_length", "mean_confidence", "ece", "users_per_second")
        lines.append("| lists | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        methods = list(mine[0]["quality"])
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(mean_std([p["quality"][method].get(k, float('nan')) for p in mine]) for k in keys) + " |")
        sasrec_lists = [r["lists"] for r in runs if r["dataset"] == dataset and "lists" in r]
        if sasrec_lists:
            lines.append("| sasrec top-N | " + " | ".join(mean_std([x.get(k, float('nan')) for x in sasrec_lists]) for k in keys) + " |")
        lines.append("\n| model | inputs | NDCG@10 | HR@10 | NDCG@10 seen rm | history 1-4 NDCG@10 (users) | history 5-9 NDCG@10 |")
        lines.append("|---|---|---|---|---|---|---|")
        for model in args.models:
            for variant in ("plain", "beyond-log"):
                tests = [r["test"] for r in runs if r["dataset"] == dataset and r["model"] == model and r["variant"] == variant]
                short_users = tests[0].get("len_1_4_users", 0) if tests else 0
                lines.append(f"| {model} | {variant} | {mean_std([t['ndcg_10'] for t in tests])} | {mean_std([t['hr_10'] for t in tests])} | "
                             f"{mean_std([t['ndcg_10_seen_removed'] for t in tests])} | "
                             f"{mean_std([t.get('len_1_4_ndcg_10', float('nan')) for t in tests])} ({short_users}) | "
                             f"{mean_std([t.get('len_5_9_ndcg_10', float('nan')) for t in tests])} |")
    table = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"summary-{'-'.join(args.datasets)}.json").write_text(
        json.dumps({"settings": vars(args), "prepared": prepared, "runs": runs}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
