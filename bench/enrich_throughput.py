"""Item enrichment throughput of the bundled LLM: one request at a time against batched, float32 against int8, and a fully cached rerun.

Each configuration (weights x batch size) enriches the same real items
(ml-100k titles and genres) into its own fresh lake with the analyst only
(``--judge`` adds the judge), so the rows compare the same work; then it
runs again on its lake, where every item is cached.

    python bench/enrich_throughput.py --data-root ../shared/data --items 16 --batch-sizes 1 8 --quantize none int8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--quantize", nargs="+", default=["int8"], choices=["none", "int8"])
    args = parser.parse_args()

    from jobs.ingest.movielens import read_ml100k
    from llm_enrich.backends import LocalBackend, prepare_local_model
    from llm_enrich.enrich import enrich_catalog
    from reaflow.settings import load_settings

    _, movies = read_ml100k(Path(args.data_root) / "ml-100k")
    items = [dict(movies[k], item_id=k) for k in sorted(movies, key=int)[: args.items]]
    work = Path(tempfile.mkdtemp(prefix="enrich-bench-"))
    base = load_settings(lake_root=str(work / "lake"), state_dir=str(work / "state"))
    started = time.perf_counter()
    folder, model_id = prepare_local_model(base)
    print(f"model ready in {time.perf_counter() - started:.1f} s ({model_id})", flush=True)

    rows = []
    for quantize, batch_size in ((q, b) for q in args.quantize for b in args.batch_sizes):
        backend = LocalBackend(folder, model_id, batch_size=batch_size, threads=args.threads, quantize=quantize)
        settings = load_settings(lake_root=str(work / f"lake-{quantize}-b{batch_size}"), state_dir=str(work / "state"),
                                 llm={"batch_size": batch_size, "quantize": quantize},
                                 enrich={"judge": args.judge, "max_items": 0, "max_seconds": 0})
        summary = enrich_catalog(settings, items, {}, "2024-01-01", backend=backend)
        rows.append({"weights": "float32" if quantize == "none" else quantize, "batch_size": batch_size, **{k: summary[k] for k in (
            "processed", "accepted", "quarantined", "seconds", "items_per_minute", "llm_calls", "prompt_tokens",
            "completion_tokens", "completion_tokens_per_s")}})
        print(json.dumps(rows[-1]), flush=True)
        rerun_started = time.perf_counter()
        cached = enrich_catalog(settings, items, {}, "2024-01-01", backend=backend)
        rows[-1]["cached_rerun_seconds"] = round(time.perf_counter() - rerun_started, 3)
        assert cached["processed"] == 0 and backend.usage.calls == summary["llm_calls"]

    print(f"\n{len(items)} ml-100k items, judge {'on' if args.judge else 'off'}, torch threads {args.threads or 'default'}")
    print("| weights | batch | items/min | completion tokens/s | prompt tokens | completion tokens | LLM calls | accepted | quarantined | s | cached rerun s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['weights']} | {r['batch_size']} | {r['items_per_minute']:.2f} | {r['completion_tokens_per_s']:.1f} | {r['prompt_tokens']} | "
              f"{r['completion_tokens']} | {r['llm_calls']} | {r['accepted']} | {r['quarantined']} | {r['seconds']:.1f} | {r['cached_rerun_seconds']:.2f} |")


if __name__ == "__main__":
    main()
