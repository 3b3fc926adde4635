"""Each reasoning state of finished grid runs ranked alone on the test users, and the per-user oracle over them.

Reads the runs a ``bench/models_grid.py`` command finished under
``--out``/``--data`` (its ``summary.json`` gives their settings), loads each
run's best weights through the trainer (nothing is trained again), and
reports, with seen items removed, every state of ``named_states`` (base,
steps, streams, the scored one) and the ``oracle`` that picks each user's
best state. A run's figures are also written to ``states.json`` in its folder.

    python bench/reasoning_states.py --data amazon-beauty --data-root ../shared/data --out bench/out/models_grid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models_grid import job_settings

REASONING = ("rearec-erl", "rearec-prl", "plr")
CUTOFFS = (10, 20)


def run_states(folder: Path, model_name: str, seed: int, grid: dict, data) -> dict[str, dict[str, float]]:
    """The state breakdown of one finished run folder ``<out>/<setting>/<model>-seed<N>``."""
    import torch

    from models.evaluate import state_breakdown
    from models.train import train

    torch.set_num_threads(1)
    setting = grid[folder.parent.name]
    settings = job_settings(str(folder.parent.parent), setting["model"], setting["training"], seed)
    model = train(settings, model_name, data, folder, track=False, progress=False).model
    return state_breakdown(model, data.test, CUTOFFS)


def table(rows: list[tuple[str, str, dict]]) -> str:
    header = "| run | state | NDCG@10 seen rm | NDCG@20 seen rm | HR@10 seen rm | HR@20 seen rm | best for (share of users) |"
    lines = [header, "|" + "---|" * 7]
    for run, state, m in rows:
        lines.append(f"| {run} | {state} | {m['ndcg_10']:.4f} | {m['ndcg_20']:.4f} | {m['hr_10']:.4f} | {m['hr_20']:.4f} | "
                     f"{m['best_share']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    from models.data import load_benchmark
    from reaflow.errors import ReaflowError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--out", default="bench/out/models_grid", help="The --out of the grid command.")
    args = parser.parse_args()

    out = Path(args.out) / args.data
    summary = out / "summary.json"
    if not summary.exists():
        sys.exit(f"no {summary}: run the grid command to its end first (it writes the runs' settings there)")
    grid = json.loads(summary.read_text()).get("grid", {})
    runs = sorted(p.parent for p in out.glob("*/*-seed*/result.json") if p.parent.parent.name in grid)
    runs = [r for r in runs if r.name.rsplit("-seed", 1)[0] in REASONING]
    if not runs:
        sys.exit(f"no finished reasoning-model runs under {out}")
    try:
        data = load_benchmark(args.data, args.data_root)
    except ReaflowError as exc:
        sys.exit(f"cannot load {args.data}: {exc}")
    rows = []
    for folder in runs:
        model_name, seed = folder.name.rsplit("-seed", 1)
        try:
            states = run_states(folder, model_name, int(seed), grid, data)
        except ReaflowError as exc:
            print(f"skipped {folder}: {exc}", file=sys.stderr)
            continue
        (folder / "states.json").write_text(json.dumps(states, indent=2))
        rows += [(f"{folder.parent.name}/{folder.name}", name, metrics) for name, metrics in states.items()]
    print(table(rows))


if __name__ == "__main__":
    main()
