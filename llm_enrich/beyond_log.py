"""ReaSeq implicit reasoning: beyond-log behaviours inferred by the masked-diffusion denoiser.

Generation runs through diffusers' masked-token machinery: ``LLaDA2Pipeline``
with ``BlockRefinementScheduler``. A history (left-padded, at most
``max_len - n`` items) is followed by ``n`` mask slots (one block); each step
the denoiser scores every slot, the scheduler samples a token per slot and
commits the most confident ones (an even share of the block per step). The
denoiser seen by the pipeline (``PipelineDenoiser``) forbids, per row, the
padding and mask tokens, every item of the user's whole history (also what is
older than the window the denoiser reads) and every committed slot, so a user
never gets an item they had, and a later step never repeats an earlier one.
Two slots committed in the same step can still agree; the later duplicate is
dropped, so a user gets up to ``n`` items. The
confidence of an item is the probability the denoiser gave it when it was
committed. ``infill`` fills gaps inside a history the same way, with the
scheduler driven directly.

The daily task (``generate_beyond_log``) trains the denoiser on the day's
training sequences without their newest item (so that items generated for a
training prefix are honest inputs for the recommenders: the denoiser never saw
what followed), generates for every user's current history, maps commit
confidences to the chance of coming true (``Calibrator``, fitted on the
validation users), evaluates what it generated for the test histories against
what the users did next, and writes ``enrich/beyond_log/ds=.../users/`` (one
row per user, calibrated and raw confidences, ready for Feast) and,
when the recommenders read beyond-log inputs (``training.beyond_log``),
``.../splits/`` (rows for the training prefixes and the evaluation histories).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from models.data import BEYOND_LOG_SPLITS as SPLITS
from models.data import EvalSet, SequenceData
from reaflow.settings import Settings

#: Folders of a ``enrich/beyond_log`` partition.
USERS = "users"


@dataclass
class Generated:
    """Per user, the generated item indices (most confident first) and their confidences."""

    items: list[np.ndarray]
    confidences: list[np.ndarray]
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.items)


class PipelineDenoiser(nn.Module):
    """The denoiser as ``LLaDA2Pipeline`` calls it: ``model(ids, attention_mask=, position_ids=).logits``.

    Positions come from the denoiser itself (counted back from the last slot),
    so leading columns that are padding in every row are cut before the call.
    Forbidden tokens get the lowest finite logit, not -inf, so that a row with
    nothing left to pick still has a defined softmax (what it picks then is
    dropped afterwards).
    """

    def __init__(self, model, last: int | None = None):
        super().__init__()
        self.model = model
        self.last = last  # score only the newest positions (the generated block); the pipeline reads no others
        #: [B, N + 2] items each row of the current batch must never get (its whole history, beyond the window too).
        self.forbidden: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:  # diffusers places its tensors by the components' ``device``
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def forward(self, input_ids: torch.Tensor, attention_mask=None, position_ids=None):
        real = (input_ids > 0).any(0)
        first = int(real.nonzero()[0]) if real.any() else input_ids.shape[1] - 1
        first = max(first, input_ids.shape[1] - self.model.cfg.max_len)
        logits = self.model.denoise(input_ids[:, first:], self.last)
        floor = torch.finfo(logits.dtype).min
        present = torch.zeros(input_ids.shape[0], logits.shape[-1], dtype=torch.bool, device=logits.device)
        present.scatter_(1, input_ids, True)
        present[:, [0, self.model.mask_id]] = True  # -inf from the denoiser: made finite here
        if self.forbidden is not None:
            present |= self.forbidden.to(present.device)
        logits.masked_fill_(present[:, None, :], floor)
        if self.last is None and first:
            logits = torch.cat([logits.new_full((logits.shape[0], first, logits.shape[-1]), floor), logits], dim=1)
        return SimpleNamespace(logits=logits)


@torch.no_grad()
def generate(model, histories: list[np.ndarray], n: int, *, steps: int, temperature: float = 0.0, seed: int = 0,
             batch_size: int = 256, progress: bool | None = False) -> Generated:
    """Up to ``n`` unseen items per history, by ``steps`` rounds of confidence-ordered unmasking."""
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline
    from tqdm.auto import tqdm

    if n < 1 or steps < 1:
        raise ValueError(f"generation needs n >= 1 and steps >= 1 (got n={n}, steps={steps})")
    model.eval()
    device = next(model.parameters()).device
    keep = model.cfg.max_len - n
    if keep < 1:
        raise ValueError(f"{n} generated items leave no room for history in max_len {model.cfg.max_len}")
    prompt_length = -(-keep // n) * n  # a whole number of blocks, so the generated slots are exactly one block
    scheduler = BlockRefinementScheduler(block_length=n, num_inference_steps=min(steps, n), threshold=1.0,
                                         editing_threshold=None)
    denoiser = PipelineDenoiser(model, last=n)
    pipe = LLaDA2Pipeline(model=denoiser, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    items: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(histories)
    confidences: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(histories)
    order = np.argsort([min(len(h), keep) for h in histories], kind="stable")
    started = time.perf_counter()
    batches = range(0, len(order), batch_size)
    for number, start in enumerate(tqdm(batches, desc="beyond-log generation", unit="batch", disable=progress is False)):
        rows = order[start:start + batch_size]
        prompt = torch.zeros(len(rows), prompt_length, dtype=torch.long)
        for r, i in enumerate(rows):
            h = np.asarray(histories[i][-keep:], dtype=np.int64)
            if len(h):
                prompt[r, prompt_length - len(h):] = torch.from_numpy(h)
        committed = torch.zeros(len(rows), n)
        denoiser.forbidden = seen_matrix([histories[i] for i in rows], model.num_items + 2)

        def record(pipeline, global_step, step, tensors):
            committed[tensors["transfer_index"]] = tensors["sampled_probs"][tensors["transfer_index"]].float().cpu()
            return {}

        generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + number)
        out = pipe(input_ids=prompt.to(device), attention_mask=(prompt > 0).long().to(device), gen_length=n,
                   block_length=n, num_inference_steps=min(steps, n), temperature=temperature,
                   sampling_method="multinomial" if temperature > 0 else "greedy", threshold=1.0,
                   editing_threshold=None, eos_early_stop=False, mask_token_id=model.mask_id, generator=generator,
                   output_type="seq", callback_on_step_end=record,
                   callback_on_step_end_tensor_inputs=["transfer_index", "sampled_probs"])
        tokens = out.sequences.cpu().numpy()
        conf = committed.numpy()
        for r, i in enumerate(rows):
            items[i], confidences[i] = _clean(tokens[r], conf[r], histories[i], model.num_items)
    return Generated(items, confidences, time.perf_counter() - started)


#: Marks a position to fill in ``infill``.
MISSING = -1


@torch.no_grad()
def infill(model, sequences: list[np.ndarray], *, steps: int, temperature: float = 0.0, seed: int = 0,
           batch_size: int = 256) -> Generated:
    """Fill the ``MISSING`` positions inside histories (behaviours the log did not see), most confident first.

    Runs ``BlockRefinementScheduler`` over the whole sequence; its schedule is
    sized to the most gaps in the batch, so each step commits an even share of
    them. Returns the completed sequences and per position the confidence of
    a filled item (NaN where the item was given). The denoiser reads a
    sequence's newest ``max_len`` positions; gaps older than that stay as given.
    """
    from diffusers import BlockRefinementScheduler

    model.eval()
    device = next(model.parameters()).device
    denoiser = PipelineDenoiser(model)
    limit = model.cfg.max_len
    filled: list[np.ndarray] = []
    confidences: list[np.ndarray] = []
    started = time.perf_counter()
    for number, start in enumerate(range(0, len(sequences), batch_size)):
        chunk = [np.asarray(s[-limit:], dtype=np.int64) for s in sequences[start:start + batch_size]]
        length = max(1, max(len(s) for s in chunk))
        x = torch.zeros(len(chunk), length, dtype=torch.long)
        for r, s in enumerate(chunk):
            if len(s):
                x[r, length - len(s):] = torch.from_numpy(np.where(s == MISSING, model.mask_id, s))
        denoiser.forbidden = seen_matrix(sequences[start:start + batch_size], model.num_items + 2)
        gaps = int((x == model.mask_id).sum(1).max())
        conf = torch.full(x.shape, float("nan"))
        if gaps:
            scheduler = BlockRefinementScheduler(block_length=length, num_inference_steps=min(steps, gaps), threshold=1.0,
                                                 editing_threshold=None)
            scheduler.set_timesteps(min(steps, gaps), block_length=gaps)
            generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + number)
            x = x.to(device)
            for step in range(min(steps, gaps)):
                out = scheduler.step(denoiser(x).logits, step, x, mask_token_id=model.mask_id, temperature=temperature,
                                     sampling_method="multinomial" if temperature > 0 else "greedy", threshold=1.0,
                                     generator=generator)
                conf[out.transfer_index.cpu()] = out.sampled_probs[out.transfer_index].float().cpu()
                x = out.prev_sample
        rows = x.cpu().numpy()
        for r, (s, whole) in enumerate(zip(chunk, sequences[start:start + batch_size], strict=True)):
            older = np.asarray(whole[: len(whole) - len(s)], dtype=np.int64)  # beyond the window: kept as given
            filled.append(np.concatenate([older, rows[r, length - len(s):] if len(s) else s]))
            confidences.append(np.concatenate([np.full(len(older), np.nan, dtype=np.float32),
                                               conf[r, length - len(s):].numpy() if len(s) else np.zeros(0, dtype=np.float32)]))
    return Generated(filled, confidences, time.perf_counter() - started)


def seen_matrix(histories: list[np.ndarray], width: int) -> torch.Tensor:
    """[B, width] True at every item of each history (the ``MISSING`` marker and out-of-range ids ignored)."""
    seen = torch.zeros(len(histories), width, dtype=torch.bool)
    for r, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        h = h[(h > 0) & (h < width)]
        seen[r, torch.from_numpy(h)] = True
    return seen


def _clean(tokens: np.ndarray, conf: np.ndarray, history: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Items only (no padding, mask or seen items, no repeats), most confident first."""
    seen = set(np.asarray(history).tolist())
    kept: dict[int, float] = {}
    for token, c in zip(tokens.tolist(), conf.tolist(), strict=True):
        if 1 <= token <= num_items and token not in seen and token not in kept:
            kept[token] = c
    ranked = sorted(kept.items(), key=lambda kv: -kv[1])
    return (np.asarray([k for k, _ in ranked], dtype=np.int64), np.asarray([c for _, c in ranked], dtype=np.float32))


# -- baselines ----------------------------------------------------------------

def popularity_lists(item_counts: np.ndarray, histories: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The ``n`` most popular training items each user has not seen."""
    ranked = np.argsort(-item_counts[1:], kind="stable") + 1
    out = []
    for h in histories:
        seen = set(np.asarray(h).tolist())
        out.append(np.asarray([i for i in ranked[: n + len(seen)] if i not in seen][:n], dtype=np.int64))
    return out


# -- evaluation ---------------------------------------------------------------

def evaluate_lists(lists: list[np.ndarray], data: EvalSet, item_counts: np.ndarray, *, head_share: float, n: int | None = None,
                   confidences: list[np.ndarray] | None = None, vectors: np.ndarray | None = None,
                   bins: int = 10) -> dict[str, float]:
    """How well per-user item lists anticipate what users did next, and what kind of items they hold.

    Relevant items: everything the user did in the evaluation period that is
    not in their history (``data.futures``; the single target when the split
    has no period). Users with nothing new to find are left out (counted).
    ``next_*`` scores the first target alone, comparable with the sequence
    models' HR/NDCG. Novelty: share of long-tail items and mean self-information
    of the items' training popularity; ``ild``: intra-list diversity (1 - mean
    pairwise cosine of ``vectors``); ``coverage``: share of the catalogue in
    any list. ``n`` is the cut-off (default: the longest list): it names the
    keys, divides the precision and sizes the ideal list of NDCG, so a shorter
    list (``mean_list_length``) earns no advantage. With confidences: expected
    calibration error over equal-count bins (does an item given p come true
    with frequency p?).
    """
    from models.evaluate import long_tail_items

    futures = data.futures if data.futures is not None else [np.asarray([t]) for t in data.targets]
    tail = long_tail_items(item_counts, head_share)
    total = max(int(item_counts.sum()), 1)
    information = -np.log2((item_counts + 1) / (total + len(item_counts)))
    n_cut = n or max((len(x) for x in lists), default=0)
    discounts = 1 / np.log2(np.arange(2, n_cut + 2))
    hits, precision, recall, ndcg, next_hit, next_ndcg = [], [], [], [], [], []
    tail_share, novelty, ild, conf_all, hit_all = [], [], [], [], []
    skipped = 0
    listed = set()
    for u, items in enumerate(lists):
        items = items[:n_cut]
        seen = set(np.asarray(data.histories[u]).tolist())
        relevant = set(np.asarray(futures[u]).tolist()) - seen
        listed.update(items.tolist())
        if len(items):
            tail_share.append(float(tail[items].mean()))
            novelty.append(float(information[items].mean()))
            if vectors is not None and len(items) > 1:
                v = vectors[items]
                v = v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
                sim = v @ v.T
                ild.append(float(1 - (sim.sum() - np.trace(sim)) / (len(items) * (len(items) - 1))))
        if not relevant:
            skipped += 1
            continue
        gains = np.asarray([i in relevant for i in items.tolist()], dtype=np.float64)
        ideal = discounts[: min(len(relevant), n_cut)].sum()  # a short list is judged against a full one
        hits.append(float(gains.any()))
        precision.append(float(gains.sum() / max(n_cut, 1)))
        recall.append(float(gains.sum() / len(relevant)))
        ndcg.append(float((gains * discounts[: len(items)]).sum() / ideal) if ideal else 0.0)
        first = int(data.targets[u])
        where = np.flatnonzero(items == first)
        next_hit.append(float(len(where) > 0))
        next_ndcg.append(float(1 / np.log2(where[0] + 2)) if len(where) else 0.0)
        if confidences is not None:
            conf_all.extend(confidences[u].tolist())
            hit_all.extend(gains.tolist())
    n = n_cut
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")
    out = {f"hit_{n}": mean(hits), f"precision_{n}": mean(precision), f"recall_{n}": mean(recall), f"ndcg_{n}": mean(ndcg),
           f"next_hr_{n}": mean(next_hit), f"next_ndcg_{n}": mean(next_ndcg), "long_tail_share": mean(tail_share),
           "novelty_bits": mean(novelty), "ild": mean(ild), "coverage": len(listed - {0}) / max(len(item_counts) - 1, 1),
           "mean_list_length": mean([len(x) for x in lists]), "users": len(hits), "users_without_new_items": skipped}
    if confidences is not None:
        out.update(calibration(np.asarray(conf_all), np.asarray(hit_all), bins))
    return out


def list_hits(lists: list[np.ndarray], data: EvalSet) -> list[np.ndarray]:
    """Per user and listed item: did the user do it in the evaluated period (``data.futures``, else the target)?"""
    futures = data.futures if data.futures is not None else [np.asarray([t]) for t in data.targets]
    return [np.isin(items, future).astype(np.float64) for items, future in zip(lists, futures, strict=True)]


@dataclass
class Calibrator:
    """A monotone map from commit confidence to the observed chance that the item comes true (isotonic regression).

    Fitted on validation users: the raw confidence is the probability of one
    slot, not of the item being among the user's next behaviours, so it is
    usually far too low (or too high) as that probability.
    """

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, confidence: np.ndarray, hit: np.ndarray) -> Calibrator:
        if len(confidence) == 0:
            return cls(np.asarray([0.0, 1.0]), np.asarray([0.0, 1.0]))
        order = np.argsort(confidence, kind="stable")
        blocks: list[list[float]] = []  # [sum of hits, count, largest confidence]
        for c, h in zip(confidence[order].tolist(), hit[order].tolist(), strict=True):
            blocks.append([h, 1.0, c])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
                h2, n2, c2 = blocks.pop()
                blocks[-1] = [blocks[-1][0] + h2, blocks[-1][1] + n2, c2]
        return cls(np.asarray([b[2] for b in blocks]), np.asarray([b[0] / b[1] for b in blocks]))

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        return np.interp(confidence, self.x, self.y).astype(np.float32)

    def summary(self) -> dict:
        return {"points": len(self.x), "confidence": self.x.round(6).tolist()[:50], "probability": self.y.round(6).tolist()[:50]}


def calibration(confidence: np.ndarray, hit: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Expected calibration error over equal-count confidence bins, and the mean confidence against the hit rate."""
    if len(confidence) == 0:
        return {"ece": float("nan"), "mean_confidence": float("nan"), "hit_rate": float("nan")}
    order = np.argsort(confidence, kind="stable")
    ece = 0.0
    for part in np.array_split(order, min(bins, len(order))):
        ece += len(part) / len(order) * abs(float(hit[part].mean()) - float(confidence[part].mean()))
    return {"ece": ece, "mean_confidence": float(confidence.mean()), "hit_rate": float(hit.mean())}


# -- the daily task -----------------------------------------------------------

def generate_beyond_log(settings: Settings, ds: str, progress: bool | None = False) -> dict:
    """Train the denoiser on the day's splits, generate each user's beyond-log items, evaluate, write the lake."""
    from models.data import item_knowledge, load_lake_splits, without_newest
    from models.train import train
    from reaflow.errors import SettingsError
    from reaflow.lake import Dataset, Lake, ds_str

    ds = ds_str(ds)
    cfg = settings.beyond_log
    if not cfg.enabled:
        return {"ds": ds, "skipped": "beyond_log.enabled is false"}
    if cfg.items >= settings.model.max_len:
        raise SettingsError(f"invalid settings: beyond_log.items {cfg.items} leaves no room for the history in "
                            f"model.max_len {settings.model.max_len}; generate fewer items")
    lake = Lake.from_settings(settings)
    data = load_lake_splits(settings, ds, settings.training.protocol)
    knowledge, coverage = item_knowledge(settings, data)
    threads = cfg.threads or torch.get_num_threads()  # before the trainer sets training.threads
    result = train(settings, "diffusion", without_newest(data), settings.state_dir / "beyond_log" / ds, knowledge=knowledge,
                   progress=progress, max_epochs=cfg.max_epochs, experiment_suffix="beyond-log")
    model = result.model
    torch.set_num_threads(threads)
    options = {"steps": cfg.steps, "temperature": cfg.temperature, "seed": settings.training.seed,
               "batch_size": cfg.batch_size, "progress": progress}

    users = current_histories(settings, ds)
    served = generate(model, users["histories"], cfg.items, **options)
    sample = 0 if settings.training.beyond_log else cfg.eval_users
    valid, test = (split.sample(sample, settings.training.seed) if sample else split for split in (data.valid, data.test))
    validated = generate(model, valid.histories, cfg.items, **options)
    tested = generate(model, test.histories, cfg.items, **options)
    calibrator = Calibrator.fit(np.concatenate([np.zeros(0), *validated.confidences]),
                                np.concatenate([np.zeros(0), *list_hits(validated.items, valid)]))
    counts = data.item_counts()
    vectors = model.backbone.items.table()[: data.num_items + 1].detach().cpu().numpy()
    evaluated = {"head_share": settings.training.head_share, "n": cfg.items, "vectors": vectors}
    quality = {"diffusion": evaluate_lists(tested.items, test, counts, confidences=tested.confidences, **evaluated),
               "diffusion_calibrated": evaluate_lists(tested.items, test, counts,
                                                      confidences=[calibrator(c) for c in tested.confidences], **evaluated),
               "popularity": evaluate_lists(popularity_lists(counts, test.histories, cfg.items), test, counts, **evaluated)}
    with lake.atomic_dir(lake.path(Dataset.BEYOND_LOG, ds)) as staging:
        _write_users(staging / USERS, ds, users, served, calibrator, data.item_ids, result.run_id)
        if settings.training.beyond_log:
            prefixes = generate(model, [s[:-1] for s in data.train], cfg.items, **options)
            _write_splits(staging / SPLITS, data, {"train": prefixes, "valid": validated, "test": tested})
    summary = {"ds": ds, "users": len(served), "users_with_items": sum(len(x) > 0 for x in served.items),
               "items_per_user": float(np.mean([len(x) for x in served.items])) if len(served) else 0.0,
               "users_per_second": len(served) / max(served.seconds, 1e-9), "denoiser": result.summary(),
               "knowledge_coverage": coverage, "test_quality": quality, "calibration": calibrator.summary(),
               "splits_written": settings.training.beyond_log}
    lake.write_json(lake.path(Dataset.REPORTS, ds, "generate_beyond_log.json"), summary)
    if result.run_id:
        _track(settings, result.run_id, summary)
    return {k: v for k, v in summary.items() if k not in ("test_quality", "calibration")} | {
        "test_hit": quality["diffusion"][f"hit_{cfg.items}"], "popularity_test_hit": quality["popularity"][f"hit_{cfg.items}"]}


def current_histories(settings: Settings, ds: str) -> dict:
    """Every user's positives as of ``ds`` (``curated/sequences``), consecutive repeats of an item collapsed as in the splits."""
    import pyarrow.dataset as pads

    from models.data import DataError
    from reaflow.lake import Dataset, Lake

    lake = Lake.from_settings(settings)
    location = lake.path(Dataset.CURATED_SEQUENCES, ds)
    if not lake.is_complete(location):
        raise DataError(f"{location} is missing or incomplete; run build_sequences for {ds} first")
    table = pads.dataset(location, format="parquet").to_table(columns=["user_id", "user_idx", "items"]).sort_by("user_idx")
    histories = []
    for items in table.column("items").to_pylist():
        seq = np.asarray(items or [], dtype=np.int64)
        if len(seq):
            seq = seq[np.concatenate([[True], seq[1:] != seq[:-1]])]
        histories.append(seq)
    return {"user_id": table.column("user_id").to_pylist(), "user_idx": table.column("user_idx").to_pylist(),
            "histories": histories}


def _write_users(folder, ds: str, users: dict, generated: Generated, calibrator: Calibrator, item_ids: list[str],
                 run_id: str | None) -> None:
    """One row per user: the generated items (external and dense ids), calibrated and raw confidences, stamped for Feast."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    available = dt.datetime.combine(dt.date.fromisoformat(ds) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    n = len(generated)
    table = pa.table({
        "user_id": pa.array(users["user_id"], pa.string()),
        "user_idx": pa.array(users["user_idx"], pa.int64()),
        "item_ids": pa.array([[item_ids[i] for i in items.tolist()] for items in generated.items], pa.list_(pa.string())),
        "item_idx": pa.array([items.tolist() for items in generated.items], pa.list_(pa.int64())),
        "confidences": pa.array([calibrator(c).tolist() for c in generated.confidences], pa.list_(pa.float32())),
        "raw_confidences": pa.array([c.tolist() for c in generated.confidences], pa.list_(pa.float32())),
        "history_length": pa.array([len(h) for h in users["histories"]], pa.int32()),
        # Feast's event time: the day's logs are complete at the end of ds.
        "event_timestamp": pa.array([available] * n, pa.timestamp("us", tz="UTC")),
        "created_at": pa.array([dt.datetime.now(dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "denoiser_run_id": pa.array([run_id or ""] * n, pa.string()),
    })
    pq.write_table(table, folder / "part-00000.parquet")


def _write_splits(folder, data: SequenceData, generated: dict[str, Generated]) -> None:
    """Generated items for each training prefix (all but the newest item) and each validation and test history."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    columns = {"split": [], "row": [], "item_idx": [], "confidences": []}
    for split, out in generated.items():
        columns["split"] += [split] * len(out)
        columns["row"] += list(range(len(out)))
        columns["item_idx"] += [x.tolist() for x in out.items]
        columns["confidences"] += [c.tolist() for c in out.confidences]
    table = pa.table({"split": pa.array(columns["split"], pa.string()), "row": pa.array(columns["row"], pa.int64()),
                      "item_idx": pa.array(columns["item_idx"], pa.list_(pa.int64())),
                      "confidences": pa.array(columns["confidences"], pa.list_(pa.float32())),
                      "splits_digest": pa.array([data.digest()] * len(columns["row"]), pa.string())})
    pq.write_table(table, folder / "part-00000.parquet")


def _track(settings: Settings, run_id: str, summary: dict) -> None:
    """Generation figures in the denoiser's MLflow run (settings as tags: a rerun with other steps may overwrite them)."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({f"beyond_log.{k}": str(v) for k, v in settings.beyond_log.model_dump(mode="json").items()})
        numbers = {f"generate_{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for method, metrics in summary["test_quality"].items():
            numbers.update({f"{method}_test_{k}": float(v) for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics(numbers)
        mlflow.log_dict(summary, "beyond_log/summary.json")
