"""Does LLM item knowledge help? SASRec and PLR with id-only items, metadata text embeddings and LLM-knowledge embeddings.

Per dataset (ml-100k under the time split, Amazon Scientific leave-one-out),
in that dataset's own lake under ``--out``:

1. the catalog is enriched by the configured LLM (default: the bundled
   SmolLM2-135M), most popular items first, under ``--max-items`` /
   ``--max-seconds``; records are cached, so a rerun carries on where the
   budget stopped and a larger budget adds coverage;
2. raw metadata and usable records are encoded with the sentence model;
3. every (model, representation, seed) trains on the same split with the
   same seeds; items without a vector of the representation get zeros (the
   coverage is reported with the table).

The table gives NDCG@10 (seen items kept and removed) over all test users and
over rare targets (fewer than ``training.rare_below`` = 5 training
interactions, cold items included), mean ± std over seeds.

    python bench/knowledge_experiment.py --data-root ../shared/data --max-items 300 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

from tables import mean_std

DS = "2024-01-01"  # logical date of the experiment's lake partitions
REPRESENTATIONS = ("id", "metadata", "knowledge")


def load_dataset(name: str, data_root: Path):
    """(SequenceData with external item ids, catalog rows with ``item_id``)."""
    from jobs.ingest.amazon import read_recbole
    from jobs.ingest.movielens import read_ml100k
    from models.data import leave_one_out_items, load_benchmark

    if name == "ml-100k":
        _, items = read_ml100k(data_root / "ml-100k")
        data = load_benchmark("ml-100k", data_root, protocol="time")
    elif name == "amazon-scientific":
        events, items = read_recbole(data_root / "amazon-scientific", "scientific", dt.date(2024, 1, 1), 30)
        by_user: dict[str, list[str]] = {}
        for event in events:  # in each user's order
            by_user.setdefault(event["user_id"], []).append(event["item_id"])
        data = leave_one_out_items(name, [seq for _, seq in sorted(by_user.items())])
    else:
        raise SystemExit(f"unknown dataset {name!r}: ml-100k or amazon-scientific")
    return data, [dict(meta, item_id=item_id) for item_id, meta in items.items()]


def experiment_settings(out: Path, dataset: str, args, **sections):
    from reaflow.settings import load_settings

    return load_settings(lake_root=str(out / dataset / "lake"), state_dir=str(out / "state"),
                         llm={"batch_size": args.llm_batch_size},
                         enrich={"judge": args.judge, "max_items": max(args.max_items, 0), "max_seconds": args.max_seconds},
                         **sections)


def prepare(dataset: str, args, out: Path) -> dict:
    """Enrich (within the budget) and encode one dataset's catalog; returns the coverage figures."""
    import numpy as np

    from llm_enrich.embeddings import embed_catalog
    from llm_enrich.enrich import enrich_catalog
    from models.data import DataError, item_vectors

    data, items = load_dataset(dataset, Path(args.data_root))
    settings = experiment_settings(out, dataset, args)
    counts = data.item_counts()
    popularity = {data.item_ids[i]: int(counts[i]) for i in range(1, data.num_items + 1)}
    report: dict = {"data": data.summary(), "catalog_items": len(items)}
    if args.max_items >= 0:
        report["enrich"] = enrich_catalog(settings, items, popularity, DS, progress=True)
        print(json.dumps(report["enrich"]), flush=True)
    report["embed"] = embed_catalog(settings, items, DS)
    rare = counts[data.test.targets] < settings.training.rare_below
    for kind in ("metadata", "knowledge"):
        try:
            matrix, coverage = item_vectors(settings, data.item_ids, kind)
        except DataError as exc:  # no vectors of this kind yet: its rows are left out
            report[kind] = {"error": str(exc)}
            continue
        has = np.abs(matrix).sum(1) > 0
        report[kind] = {"items": round(coverage, 4), "test_targets": round(float(has[data.test.targets].mean()), 4),
                        "rare_test_targets": round(float(has[data.test.targets[rare]].mean()), 4) if rare.any() else None,
                        "interactions": round(float((counts * has).sum() / counts.sum()), 4)}
    report["rare_test_targets"] = int(rare.sum())
    (out / dataset / "prepare.json").write_text(json.dumps(report, indent=2))
    return report


def run_one(job: dict) -> dict:
    import torch

    from models.data import item_vectors
    from models.train import train

    torch.set_num_threads(1)
    args = argparse.Namespace(**job["args"])
    out = Path(args.out)
    folder = out / job["dataset"] / "runs" / f"{job['model']}-{job['representation']}-seed{job['seed']}"
    if (folder / "result.json").exists():
        return {**job, "result": json.loads((folder / "result.json").read_text())}
    settings = experiment_settings(out, job["dataset"], args, model={"loss": "full"},
                                   training={"seed": job["seed"], "max_epochs": args.epochs, "patience": args.patience,
                                             "learning_rate": args.lr, "batch_size": args.batch_size,
                                             "warmup_steps": args.warmup_steps, "threads": 1, "valid_users": 0})
    data, _ = load_dataset(job["dataset"], Path(args.data_root))
    knowledge = None
    if job["representation"] != "id":
        matrix, _ = item_vectors(settings, data.item_ids, job["representation"])
        knowledge = torch.from_numpy(matrix)
    train(settings, job["model"], data, folder, knowledge=knowledge, track=False, progress=False)
    return {**job, "result": json.loads((folder / "result.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-scientific"])
    parser.add_argument("--models", nargs="+", default=["sasrec", "plr"])
    parser.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS), choices=REPRESENTATIONS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64, help="Small: these datasets give few steps an epoch.")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--max-items", type=int, default=300, help="Items enriched per dataset this run (0: all; -1: no enrichment).")
    parser.add_argument("--max-seconds", type=float, default=0, help="Enrichment time budget per dataset (0: none).")
    parser.add_argument("--llm-batch-size", type=int, default=16)
    parser.add_argument("--judge", action="store_true", help="Let the judge agent check each record.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench/out/knowledge")
    args = parser.parse_args()
    out = Path(args.out)

    prepared = {}
    for dataset in args.datasets:
        (out / dataset).mkdir(parents=True, exist_ok=True)
        prepared[dataset] = prepare(dataset, args, out)
        print(dataset, json.dumps({k: prepared[dataset].get(k) for k in ("metadata", "knowledge", "rare_test_targets")}), flush=True)

    jobs = [{"dataset": d, "model": m, "representation": r, "seed": s, "args": vars(args)}
            for s in args.seeds for d in args.datasets for m in args.models for r in args.representations
            if r == "id" or "error" not in prepared[d].get(r, {})]
    results: dict[tuple, list[dict]] = {}
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for done in pool.imap_unordered(run_one, jobs):
            test = done["result"]["test"]
            results.setdefault((done["dataset"], done["model"], done["representation"]), []).append(test)
            print(f"done {done['dataset']} {done['model']} {done['representation']} seed {done['seed']}: "
                  f"ndcg_10 {test['ndcg_10']:.4f}, rare {test.get('rare_ndcg_10', float('nan')):.4f}", flush=True)

    lines = []
    for dataset in args.datasets:
        info = prepared[dataset]
        lines.append(f"\n{dataset}: {info['data']['test_users']} test users, {info['rare_test_targets']} with a rare target; "
                     f"coverage {json.dumps({k: info.get(k) for k in ('metadata', 'knowledge')})}\n")
        lines.append("| model | items | seeds | NDCG@10 | NDCG@10 seen rm | HR@10 | rare NDCG@10 | rare HR@10 |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for model in args.models:
            for rep in args.representations:
                tests = results.get((dataset, model, rep), [])
                if tests:
                    lines.append(f"| {model} | {rep} | {len(tests)} | " + " | ".join(
                        mean_std([t[k] for t in tests if k in t]) for k in
                        ("ndcg_10", "ndcg_10_seen_removed", "hr_10", "rare_ndcg_10", "rare_hr_10")) + " |")
    table = "\n".join(lines)
    (out / "summary.json").write_text(json.dumps({"prepared": prepared, "settings": vars(args),
                                                  "results": {"/".join(k): v for k, v in results.items()}}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
