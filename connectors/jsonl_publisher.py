"""Publish Post records from JSONL files into the raw-posts topic, keyed by post id.

Lines are sent byte for byte: the pipeline, not the publisher, decides what is valid, so a bad line
reaches the dead-letter topic with its reason instead of silently disappearing here.
"""
from __future__ import annotations

import glob
from typing import Iterator

from core.config import KafkaSettings
from core.kafka_writer import KafkaWriter
from core import safe_json


def _lines(patterns: list[str]) -> Iterator[bytes]:
    for pattern in patterns:
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise FileNotFoundError(f"no input file matches {pattern}")
        for path in paths:
            with open(path, "rb") as handle:
                yield from (line.rstrip(b"\r\n") for line in handle if line.strip())


def _key(line: bytes) -> bytes | None:
    try:
        post_id = safe_json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return post_id.encode("utf-8") if isinstance(post_id, str) else None


def publish(cfg: KafkaSettings, patterns: list[str], topic: str | None = None) -> int:
    """Send every non-blank line; returns how many the broker acknowledged."""
    writer = KafkaWriter(cfg)
    try:
        return writer.write_records(topic or cfg.topics.raw, ((_key(line), line) for line in _lines(patterns)))
    finally:
        writer.close()
