"""Cost of the sampled-softmax loss against how many positions share one draw of negatives (``model.negative_group``).

One forward and backward pass of ``recommendation_loss`` over random states
(as many positions as a Beauty batch of 256 sequences holds), one torch
thread, best of ``--repeats`` timings of ``--steps`` passes each.

    python bench/negative_groups_speed.py --items 12101 --positions 1500
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--positions", type=int, default=1500, help="Training positions in one batch.")
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 64, 32, 8, 1])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from models import build_model
    from reaflow.settings import ModelSettings

    torch.set_num_threads(1)
    torch.manual_seed(0)
    states = torch.randn(args.positions, args.hidden, requires_grad=True)
    targets = torch.randint(1, args.items + 1, (args.positions,))
    print("| positions per draw | negatives drawn per batch | ms per loss (forward + backward) |")
    print("|---|---|---|")
    for group in args.groups:
        cfg = ModelSettings(hidden_size=args.hidden, loss="sampled", negatives=args.negatives, negative_group=group)
        model = build_model("sasrec", cfg, args.items)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            for _ in range(args.steps):
                model.recommendation_loss(states, targets).backward()
            best = min(best, (time.perf_counter() - started) / args.steps)
        draws = 1 if group == 0 else -(-args.positions // group)
        label = "all (0)" if group == 0 else str(group)
        print(f"| {label} | {draws * args.negatives:,} | {best * 1000:.1f} |")


if __name__ == "__main__":
    main()
