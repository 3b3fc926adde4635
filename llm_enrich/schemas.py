"""What the agents must answer: pydantic models, whose JSON schemas also constrain decoding.

Every field is bounded (list lengths, string lengths) so that a small model
cannot ramble past its token budget, and the ``reasoning`` field comes first:
the model thinks step by step before it commits to the structured fields.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=48)]


def _phrases(most: int, least: int = 0):
    """A required list (no default: the schema makes the model write every field, and a missing one is an error)."""
    return Field(min_length=least, max_length=most)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def json_schema(cls) -> dict:
        return cls.model_json_schema()

    @classmethod
    def shape(cls) -> str:
        """A compact description of the fields, for prompts: ``{"name": type, ...}``."""
        parts = []
        for name, prop in cls.model_json_schema()["properties"].items():
            if prop.get("type") == "array":
                kind = f"[up to {prop.get('maxItems', 'n')} short phrases]"
            elif "enum" in prop:
                kind = " | ".join(json.dumps(v) for v in prop["enum"])
            else:
                kind = f"text, at most {prop.get('maxLength', 'n')} characters"
            parts.append(f'"{name}": {kind}')
        return "{" + ", ".join(parts) + "}"


class CategoryGuidance(_Answer):
    """The planner's answer, once per category: what matters when describing its items."""

    reasoning: str = Field(max_length=240)
    important_attributes: list[Phrase] = _phrases(6, 1)
    guidance: str = Field(min_length=1, max_length=300)


class ItemKnowledge(_Answer):
    """The analyst's answer, once per item: structured knowledge distilled from its metadata."""

    reasoning: str = Field(max_length=240)
    category_path: list[Phrase] = _phrases(4, 1)
    functions: list[Phrase] = _phrases(4)
    audience: list[Phrase] = _phrases(3)
    scenarios: list[Phrase] = _phrases(3)
    key_attributes: list[Phrase] = _phrases(5)
    complements: list[Phrase] = _phrases(3)
    substitutes: list[Phrase] = _phrases(3)
    summary: str = Field(min_length=1, max_length=160)

    def text(self) -> str:
        """The record as one passage for the sentence encoder (the reasoning left out: it is the route, not the knowledge)."""
        parts = [self.summary, "Category: " + " > ".join(self.category_path)]
        for label, values in (("Functions", self.functions), ("Audience", self.audience), ("Scenarios", self.scenarios),
                              ("Attributes", self.key_attributes), ("Goes with", self.complements), ("Instead of", self.substitutes)):
            if values:
                parts.append(f"{label}: {', '.join(values)}")
        return ". ".join(parts)


class Verdict(_Answer):
    """The judge's answer: is the record faithful to the metadata?"""

    reasoning: str = Field(max_length=200)
    decision: Literal["accept", "revise", "reject"]
    problems: list[Annotated[str, StringConstraints(max_length=120)]] = _phrases(3)
