"""Training and inference speed of every model on one benchmark, side by side in one process.

Per model: one full training epoch (sequences/s, seconds, and the
floating-point operations of a training step, forward and backward, over
its first batches), inference latency
at batch 1 (p50, p99 over ``--requests`` test histories: encode, reason,
score every item, top-10) and throughput at batch 256 over all test users
(best of ``--repeats`` passes), and the floating-point operations of that pass;
the overhead of each reasoning model against SASRec at batch 256, in time
and in FLOPs (the floor a CPU, which is compute-bound here, cannot beat).
The models are timed interleaved (each training batch, each request and each
throughput pass goes through every model in turn), so load from anything
else sharing the machine falls on all of them alike and the ratios hold.
On a GPU (``--device cuda``) every timer waits for the device, and
``--big-batch`` adds throughput at a batch large enough to fill it.
``--compile`` adds, beside each model, its scoring path compiled by
``torch.compile`` (dynamic shapes; compilation before the timers), timed
interleaved with the eager ones.
``--random-batches`` also times each model's epoch with batches drawn at
random (``training.batch_by_length`` false) beside the default batches by
length, on a copy of the model, and counts the padded positions of each.

    python bench/models_speed.py --data amazon-beauty --data-root ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import Batch, build_model
from models.data import history_batches, load_benchmark, train_batches
from reaflow.settings import ModelSettings


DEVICE = torch.device("cpu")


def clock() -> float:
    """Wall time once the device has finished what was queued (GPU kernels run asynchronously)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter()


def train_epoch_seconds(models: dict, data, batch_size: int, random_too: bool = False) -> dict[tuple[str, str], tuple[float, int, int, float]]:
    """Per (model, batch order): seconds for one epoch, sequences and padded positions in it, and GFLOP per
    training step (mean of the warm-up steps).

    Orders: ``length`` (``training.batch_by_length``, the default) and, with ``random_too``, ``random`` on a copy
    of each model. Every batch index is a step of each (model, order) in turn (the order rotating), so each one's
    seconds are summed over the same stretch of time."""
    any_model = next(iter(models.values()))
    orders = {order: train_batches(data.train, batch_size, any_model.cfg.max_len, seed=0, epoch=0, by_length=order == "length")
              for order in (("length", "random") if random_too else ("length",))}  # the same number of batches each
    runs = {(name, order): model if order == "length" else copy.deepcopy(model) for name, model in models.items() for order in orders}
    optimizers, step_gflop = {}, {}
    for key, model in runs.items():
        optimizers[key] = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        model.epoch = 10  # past every warm-up: all loss terms on
        warmup = orders[key[1]][:3]  # allocator, kernels: outside the timer
        with FlopCounterMode(display=False) as counter:
            for batch in warmup:
                model.loss(batch.to(DEVICE))[0].backward()
        optimizers[key].zero_grad(set_to_none=True)
        step_gflop[key] = counter.get_total_flops() / 1e9 / len(warmup)
    seconds = dict.fromkeys(runs, 0.0)
    keys = list(runs)
    for i in range(len(orders["length"])):
        moved = {order: batches[i].to(DEVICE) for order, batches in orders.items()}  # once per batch, not per model
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            model, optimizer = runs[key], optimizers[key]
            started = clock()
            loss, _ = model.loss(moved[key[1]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seconds[key] += clock() - started
    sequences = sum(b.items.shape[0] for b in orders["length"])  # every order holds every sequence once
    positions = {order: sum(b.items.numel() for b in batches) for order, batches in orders.items()}
    return {key: (seconds[key], sequences, positions[key[1]], step_gflop[key]) for key in runs}


@torch.no_grad()
def latency_ms(models: dict, histories, requests: int) -> dict[str, list[float]]:
    """Per model, milliseconds per request; each request goes through every model in turn."""
    times = {name: [] for name in models}
    for model in models.values():
        model.eval()
    for history in histories[:requests]:
        for name, model in models.items():
            batch = Batch(torch.as_tensor(history[-model.cfg.max_len:])[None])
            started = clock()
            model.score(batch.to(DEVICE)).topk(10)
            times[name].append((clock() - started) * 1000)
    return times


@torch.no_grad()
def throughput(models: dict, histories, batch_size: int = 256, repeats: int = 3) -> dict[str, float]:
    """Per model, users scored per second over all histories: the best of ``repeats`` passes (the least disturbed),
    the passes of the models interleaved."""
    any_model = next(iter(models.values()))
    batches = [batch.to(DEVICE) for _, batch in history_batches(histories, batch_size, any_model.cfg.max_len)]
    best = dict.fromkeys(models, float("inf"))
    for model in models.values():
        model.eval()
    for _ in range(repeats):
        for name, model in models.items():
            started = clock()
            for batch in batches:
                model.score(batch).topk(10)
            best[name] = min(best[name], clock() - started)
    return {name: len(histories) / best[name] for name in models}


def compiled_scoring(model):
    """The model sharing its weights, its ``score`` compiled (shapes marked dynamic: histories vary in length and batch)."""
    # The four models' ``score`` is one function to dynamo: each model type, and each shape family, is a recompile.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    twin = copy.copy(model)
    twin.score = torch.compile(model.score, dynamic=True)
    twin.eval()
    with torch.no_grad():
        for length in (1, 7, model.cfg.max_len):  # compile now, not inside a timer
            twin.score(Batch(torch.ones(2, length, dtype=torch.long, device=DEVICE)))
    return twin


@torch.no_grad()
def gflops(model, histories, batch_size: int = 256) -> float:
    """Floating-point operations of one scoring pass over all histories (matrix products and attention)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        for _, batch in history_batches(histories, batch_size, model.cfg.max_len):
            model.score(batch.to(DEVICE))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--models", nargs="+", default=["sasrec", "rearec-erl", "rearec-prl", "plr"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loss", choices=["full", "sampled"], default="sampled")
    parser.add_argument("--model-settings", default="{}", help="JSON of extra model settings (e.g. hidden_size).")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="Throughput passes per model (the best counts).")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--random-batches", action="store_true",
                        help="Also time each model's epoch with batches drawn at random (training.batch_by_length false).")
    parser.add_argument("--long", type=int, default=20, help="Also measure throughput on histories of at least this many items.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--big-batch", type=int, default=0, help="Also measure throughput at this batch size (0: no).")
    parser.add_argument("--compile", action="store_true", help="Also time each model's scoring compiled by torch.compile.")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    data = load_benchmark(args.data, args.data_root)
    rng = np.random.default_rng(0)
    sample = [data.test.histories[i] for i in rng.permutation(len(data.test))[: args.requests]]
    settings = {"loss": args.loss, **json.loads(args.model_settings)}
    models = {}
    for name in args.models:
        torch.manual_seed(0)
        models[name] = build_model(name, ModelSettings(**settings), data.num_items).to(DEVICE)
    rows = {name: {} for name in models}
    if not args.skip_training:
        for (name, order), (seconds, sequences, positions, step_gflop) in train_epoch_seconds(
                models, data, 256, args.random_batches).items():
            suffix = "" if order == "length" else f"_{order}"
            rows[name].update({f"epoch_seconds{suffix}": seconds, f"train_sequences_per_s{suffix}": sequences / seconds,
                               f"train_step_gflop{suffix}": step_gflop, f"padded_positions{suffix}": positions})
    if args.compile:
        models |= {f"{name}+compile": compiled_scoring(model) for name, model in models.items()}
        rows |= {name: {} for name in models if name not in rows}
    latency_ms(models, sample, 20)  # warm-up
    long_histories = [h for h in data.test.histories if len(h) >= args.long]
    times = latency_ms(models, sample, args.requests)
    rates = {"batch256_users_per_s": throughput(models, data.test.histories, repeats=args.repeats),
             "batch256_long_users_per_s": throughput(models, long_histories, repeats=args.repeats)}
    if args.big_batch:
        rates["big_batch_users_per_s"] = throughput(models, data.test.histories, args.big_batch, args.repeats)
    for name, model in models.items():
        row = rows[name]
        row.update(p50_ms=statistics.median(times[name]), p99_ms=float(np.percentile(times[name], 99)),
                   **{key: per_model[name] for key, per_model in rates.items()},
                   batch256_gflop=rows[name.removesuffix("+compile")].get("batch256_gflop") or gflops(model, data.test.histories))
        print(name, json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)

    def base_of(name):
        """Each row's SASRec: the compiled one for a compiled row."""
        return rows.get("sasrec+compile" if name.endswith("+compile") else "sasrec")

    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else platform.processor() or platform.machine()
    print(f"\n{args.data}, {json.dumps(settings)}, {args.threads} thread(s), torch {torch.__version__}, {where}")
    print(f"| model | train seq/s | s/epoch | train GFLOP/step | p50 ms (batch 1) | p99 ms | users/s (batch 256) | overhead vs SASRec | GFLOP (batch 256, all users) | FLOP overhead | users/s, histories >= {args.long} | overhead vs SASRec |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def overhead(name, key):
        base = base_of(name)
        return f"{(base[key] / rows[name][key] - 1) * 100:+.1f}%" if base else "n/a"

    def flop_overhead(name):
        base = base_of(name)
        return f"{(rows[name]['batch256_gflop'] / base['batch256_gflop'] - 1) * 100:+.1f}%" if base else "n/a"

    for name, row in rows.items():
        train_cells = (f"{row['train_sequences_per_s']:.0f} | {row['epoch_seconds']:.1f} | {row['train_step_gflop']:.1f}"
                       if "epoch_seconds" in row else "- | - | -")
        print(f"| {name} | {train_cells} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['batch256_users_per_s']:.0f} | "
              f"{overhead(name, 'batch256_users_per_s')} | {row['batch256_gflop']:.1f} | {flop_overhead(name)} | {row['batch256_long_users_per_s']:.0f} | {overhead(name, 'batch256_long_users_per_s')} |")
    if args.random_batches and not args.skip_training:
        print("\n| model | s/epoch, batches by length | s/epoch, at random | ratio | padded positions, by length | at random |")
        print("|---|---|---|---|---|---|")
        for name, row in ((name, row) for name, row in rows.items() if "epoch_seconds_random" in row):
            print(f"| {name} | {row['epoch_seconds']:.1f} | {row['epoch_seconds_random']:.1f} | "
                  f"{row['epoch_seconds_random'] / row['epoch_seconds']:.2f} | {row['padded_positions']} | {row['padded_positions_random']} |")
    if args.big_batch:
        print(f"\n| model | users/s (batch {args.big_batch}) | overhead vs SASRec |\n|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['big_batch_users_per_s']:.0f} | {overhead(name, 'big_batch_users_per_s')} |")


if __name__ == "__main__":
    main()
