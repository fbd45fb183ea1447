"""Topics (which team owns a post) by embedding similarity: configured per company, no training.

Each topic in the YAML file has a name, a description and example phrases. A post gets the topic
whose description or examples are most similar to it, if that similarity reaches the threshold;
otherwise its topic label is null. The optional `no_topic` phrases (greetings, chat) own nothing: a post
nearest to one of them gets null too, which a threshold alone cannot do for short posts that sit close
to everything. Changing topics means editing the file, not retraining.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.yaml_config import ConfigFileError, Loc, load_yaml
from models.encoder import TextEncoder
from schemas import shipped_or_path


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    examples: list[str]


@dataclass(frozen=True)
class TopicsConfig:
    topics: list[Topic]
    threshold: float
    no_topic: list[str]  # phrases no team owns


BUILTIN_DIR = Path(__file__).resolve().parent / "topics"


def resolve_topics_file(name: str) -> Path:
    """'builtin:telecom' and 'builtin:rail' name the examples shipped in models/topics/; anything else is a path."""
    return shipped_or_path(name, BUILTIN_DIR, "topics file", TopicsError)


class TopicsError(ConfigFileError):
    """The topics file is invalid; each problem names the file, the line and the key."""

    what = "topics file"


class _TopicEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    name: str = Field(min_length=1)
    description: str = ""
    examples: list[str] = Field(min_length=1)

    @field_validator("examples", mode="before")
    @classmethod
    def _phrases_as_before(cls, value: Any) -> Any:
        # An unquoted phrase holding ': ' reads as a mapping (telecom.yaml's "Umzug: Wann wird ..."); it has always
        # been used as its str(), and the shipped scores were measured so. Quote such phrases in new files.
        return [e if isinstance(e, str) else str(e) for e in value] if isinstance(value, list) else value


class _TopicsFile(BaseModel):
    """The format of a topics file (models/topics/*.yaml)."""
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    threshold: float = Field(default=0.82, gt=0, lt=1)
    topics: list[_TopicEntry] = Field(min_length=1)
    no_topic: list[str] = []  # phrases no team owns

    @field_validator("no_topic", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("no_topic must be a list of phrases")
        return value


def _explain(loc: Loc, message: str) -> str:
    """The old wording for a topic without a name or examples, and for a file without topics."""
    entry = len(loc) in (2, 3) and loc[0] == "topics" and isinstance(loc[1], int)
    if entry and loc[2:] in ((), ("name",), ("examples",)):
        return f"topic #{loc[1] + 1} needs a name and a non-empty list of examples ({message})"
    if loc == ("topics",) and message.startswith(("List should have at least", "Field required")):
        return f"no topics defined ({message})"
    return message


def read_topics(path: str | Path) -> TopicsConfig:
    """Parse and check a topics file; errors are TopicsError (a ValueError) naming the file, line and key."""
    path = resolve_topics_file(str(path))
    parsed, _ = load_yaml(path, _TopicsFile, TopicsError, what="topics file", explain=_explain, empty={})
    return TopicsConfig([Topic(t.name, t.description, list(t.examples)) for t in parsed.topics], parsed.threshold,
                        list(parsed.no_topic))


class TopicMatcher:
    def __init__(self, config: TopicsConfig, encoder: TextEncoder, threshold: Optional[float] = None,
                 corrected: Optional[tuple[list[str], torch.Tensor]] = None) -> None:
        """threshold overrides the file's (evaluation measures the phrases without it). `corrected`: topics and
        similarity vectors of posts agents gave a topic (models/artifacts/topic-examples.safetensors), which count
        as more example phrases of the topics this file defines."""
        self.threshold = config.threshold if threshold is None else threshold
        phrases: list[str] = []
        owners: list[Optional[str]] = []
        for topic in config.topics:
            for phrase in ([topic.description] if topic.description else []) + topic.examples:
                phrases.append(phrase)
                owners.append(topic.name)
        phrases += config.no_topic
        owners += [None] * len(config.no_topic)
        vectors = encoder.similarity_part(encoder.embed(phrases))
        if corrected:
            defined = {topic.name for topic in config.topics}
            keep = [i for i, topic in enumerate(corrected[0]) if topic in defined]
            owners += [corrected[0][i] for i in keep]
            vectors = torch.cat([vectors, corrected[1][keep].float()])
        self._owners = owners
        self._phrases = torch.nn.functional.normalize(vectors, dim=-1)

    @classmethod
    def from_file(cls, path: str | Path, encoder: TextEncoder,
                  corrected: Optional[tuple[list[str], torch.Tensor]] = None) -> "TopicMatcher":
        return cls(read_topics(path), encoder, corrected=corrected)

    def assign(self, vectors: torch.Tensor) -> list[dict[str, Any]]:
        """{label, score} per similarity vector (`TextEncoder.similarity_part`): the nearest phrase's topic,
        or label None below the threshold or when the nearest phrase is a no_topic one."""
        similarity = torch.nn.functional.normalize(vectors, dim=-1) @ self._phrases.T
        best_score, best = similarity.max(dim=1)
        results = []
        for score, index in zip(best_score.tolist(), best.tolist()):
            label: Optional[str] = self._owners[index] if score >= self.threshold else None
            results.append({"label": label, "score": round(score, 4)})
        return results
