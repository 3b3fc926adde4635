"""The three agents (planner, analyst, judge) and the validate-repair loop they share.

Hierarchical, so that reasoning shared by many items is done once: the
planner reasons once per category and writes guidance; the analyst reasons
over one item under that guidance and fills an ``ItemKnowledge`` record; the
judge checks the record against the metadata and accepts it, asks for one
revision, or rejects it. Every answer is validated with pydantic; an invalid
one is asked again with a repair prompt, then given up with its reason. All
requests of a stage go to the backend together (batched). A backend that
fails (unreachable, HTTP errors) stops the run with ``BackendError``: the
items wait for the next run instead of being quarantined for good.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from llm_enrich import prompts
from llm_enrich.backends import BackendError, ChatRequest, LLMBackend
from llm_enrich.schemas import CategoryGuidance, ItemKnowledge, Verdict

#: Token budgets per answer (the schemas bound every field, so these are rarely reached).
MAX_TOKENS = {CategoryGuidance: 256, ItemKnowledge: 384, Verdict: 160}


@dataclass
class Answer:
    """A validated answer, or the reason there is none."""

    value: BaseModel | None
    raw: str
    messages: list[dict[str, str]]
    error: str | None = None
    repairs: int = 0


def ask(backend: LLMBackend, conversations: list[list[dict[str, str]]], model: type[BaseModel], repair_attempts: int) -> list[Answer]:
    """One batched question per conversation; invalid answers are repaired up to ``repair_attempts`` times."""
    answers: list[Answer | None] = [None] * len(conversations)
    pending = list(range(len(conversations)))
    current = list(conversations)
    for attempt in range(repair_attempts + 1):
        if not pending:
            break
        requests = [ChatRequest(current[i], model.json_schema(), MAX_TOKENS[model]) for i in pending]
        still = []
        completions = backend.complete(requests)
        failed = [c.error for c in completions if c.error]
        if failed:  # an outage is not the item's fault: stop (finished batches are kept) rather than quarantine it for good
            raise BackendError(f"LLM backend {backend.model_id} failed on {len(failed)} of {len(requests)} requests: {failed[0]}")
        for i, completion in zip(pending, completions, strict=True):
            value, error = parse(completion.text, model)
            if value is None and completion.finish_reason == "length":
                error = f"cut at {MAX_TOKENS[model]} tokens; {error}"
            answers[i] = Answer(value, completion.text, current[i], error, attempt)
            if value is None and attempt < repair_attempts:
                current[i] = prompts.repair_messages(current[i], completion.text, error)
                still.append(i)
        pending = still
    return answers  # type: ignore[return-value]


def parse(text: str, model: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """The answer as ``model``; tolerates code fences and text around one JSON object."""
    candidate = text.strip()
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    start, end = candidate.find("{"), candidate.rfind("}")
    if start < 0 or end <= start:
        return None, "no JSON object in the answer"
    try:
        return model.model_validate(json.loads(candidate[start:end + 1])), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at character {exc.pos})"
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        return None, f"schema: {where}: {first['msg']} ({exc.error_count()} problem(s))"


@dataclass
class ItemOutcome:
    """What happened to one item: its record (if any) and the route it took."""

    item_id: str
    status: str  # accepted | revised | rejected | quarantined
    record: ItemKnowledge | None
    reason: str | None = None
    verdicts: list[str] = field(default_factory=list)
    repairs: int = 0


def plan_categories(backend: LLMBackend, categories: dict[str, list[dict]], repair_attempts: int) -> dict[str, Answer]:
    """The planner: one guidance per category (from a few example items of it)."""
    names = sorted(categories)
    answers = ask(backend, [prompts.planner_messages(name, categories[name][:3]) for name in names], CategoryGuidance, repair_attempts)
    return dict(zip(names, answers, strict=True))


def analyse_items(backend: LLMBackend, items: list[tuple[str, dict, CategoryGuidance | None]], *, judge: bool,
                  repair_attempts: int) -> list[ItemOutcome]:
    """The analyst (and the judge): ``items`` are (item id, cleaned metadata, its category's guidance)."""
    answers = ask(backend, [prompts.analyst_messages(meta, guidance) for _, meta, guidance in items], ItemKnowledge, repair_attempts)
    outcomes: list[ItemOutcome | None] = [None] * len(items)
    for i, ((item_id, _, _), answer) in enumerate(zip(items, answers, strict=True)):
        if answer.value is None:
            outcomes[i] = ItemOutcome(item_id, "quarantined", None, f"analyst: {answer.error}", repairs=answer.repairs)
        elif not judge:
            outcomes[i] = ItemOutcome(item_id, "accepted", answer.value, repairs=answer.repairs)
    if not judge:
        return outcomes  # type: ignore[return-value]

    judged = [i for i, o in enumerate(outcomes) if o is None]
    verdicts = ask(backend, [prompts.judge_messages(items[i][1], answers[i].value) for i in judged], Verdict, repair_attempts)
    to_revise = []
    for i, verdict in zip(judged, verdicts, strict=True):
        item_id, record = items[i][0], answers[i].value
        if verdict.value is None:  # no usable verdict: the record stands unjudged, and says so
            outcomes[i] = ItemOutcome(item_id, "accepted", record, f"judge: {verdict.error}", ["none"], answers[i].repairs)
        elif verdict.value.decision == "accept":
            outcomes[i] = ItemOutcome(item_id, "accepted", record, None, ["accept"], answers[i].repairs)
        elif verdict.value.decision == "reject":
            outcomes[i] = ItemOutcome(item_id, "rejected", None, "judge: " + ("; ".join(verdict.value.problems) or "rejected"),
                                      ["reject"], answers[i].repairs)
        else:
            to_revise.append((i, verdict.value))
    if to_revise:
        revised = ask(backend, [prompts.revise_messages(answers[i].messages, answers[i].raw, v.problems) for i, v in to_revise],
                      ItemKnowledge, repair_attempts)
        for (i, _), answer in zip(to_revise, revised, strict=True):
            item_id = items[i][0]
            if answer.value is None:
                outcomes[i] = ItemOutcome(item_id, "quarantined", None, f"revision: {answer.error}", ["revise"], answers[i].repairs + answer.repairs)
            else:
                outcomes[i] = ItemOutcome(item_id, "revised", answer.value, None, ["revise"], answers[i].repairs + answer.repairs)
    return outcomes  # type: ignore[return-value]
