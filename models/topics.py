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
import yaml

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
    return shipped_or_path(name, BUILTIN_DIR, "topics file")


def read_topics(path: str | Path) -> TopicsConfig:
    """Parse and check a topics file; errors name the topic and the key."""
    path = resolve_topics_file(str(path))
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    threshold = data.get("threshold", 0.82)
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"{path}: threshold must be a number between 0 and 1")
    topics = []
    for i, entry in enumerate(data.get("topics") or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not name or not isinstance(entry.get("examples"), list) or not entry["examples"]:
            raise ValueError(f"{path}: topic #{i + 1} needs a name and a non-empty list of examples")
        topics.append(Topic(str(name), str(entry.get("description", "")), [str(e) for e in entry["examples"]]))
    if not topics:
        raise ValueError(f"{path}: no topics defined")
    no_topic = data.get("no_topic") or []
    if not isinstance(no_topic, list):
        raise ValueError(f"{path}: no_topic must be a list of phrases")
    return TopicsConfig(topics, float(threshold), [str(phrase) for phrase in no_topic])


class TopicMatcher:
    def __init__(self, config: TopicsConfig, encoder: TextEncoder, threshold: Optional[float] = None) -> None:
        """threshold overrides the file's (evaluation measures the phrases without it)."""
        self.threshold = config.threshold if threshold is None else threshold
        phrases: list[str] = []
        owners: list[Optional[str]] = []
        for topic in config.topics:
            for phrase in ([topic.description] if topic.description else []) + topic.examples:
                phrases.append(phrase)
                owners.append(topic.name)
        phrases += config.no_topic
        owners += [None] * len(config.no_topic)
        self._owners = owners
        self._phrases = torch.nn.functional.normalize(encoder.similarity_part(encoder.embed(phrases)), dim=-1)

    @classmethod
    def from_file(cls, path: str | Path, encoder: TextEncoder) -> "TopicMatcher":
        return cls(read_topics(path), encoder)

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
