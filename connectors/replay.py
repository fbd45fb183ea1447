"""Replay JSONL or CSV posts into the raw topic at their original pace times a speed factor.

For demos and load tests: a day of recorded posts at `speed: 1440` plays in a minute. Posts are
sent in `created_at` order; the pause before each is the gap to the previous one divided by the
speed (capped, so a quiet night does not stall a demo). Posts without a time go out at once.
"""
from __future__ import annotations

import csv
import threading
from datetime import datetime
from typing import Any, Iterator, Optional

from core.config import KafkaSettings
from core.records import POST_FIELDS
from core.kafka_writer import KafkaWriter
from core import safe_json

MAX_GAP_S = 5.0


def read_posts(path: str) -> Iterator[dict[str, Any]]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield {k: (v if v != "" else None) for k, v in row.items() if k in POST_FIELDS}
        return
    with open(path, encoding="utf-8") as handle:
        yield from (safe_json.loads(line) for line in handle if line.strip())


def _time(post: dict[str, Any]) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(str(post.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return None


def replay(path: str, speed: float, kafka: KafkaSettings, writer: KafkaWriter, stop: threading.Event,
           batch: int = 50) -> int:
    posts = sorted(read_posts(path), key=lambda p: (_time(p) is not None, _time(p) or datetime.min.replace(tzinfo=None)))
    sent, pending, previous = 0, [], None
    for post in posts:
        when = _time(post)
        if when is not None and previous is not None and speed > 0:
            gap = min((when - previous).total_seconds() / speed, MAX_GAP_S)
            if gap > 0.001:
                if pending:
                    writer.write_posts(kafka.topics.raw, pending)
                    sent, pending = sent + len(pending), []
                if stop.wait(gap):
                    break
        previous = when or previous
        pending.append(post)
        if len(pending) >= batch:
            writer.write_posts(kafka.topics.raw, pending)
            sent, pending = sent + len(pending), []
    if pending:
        writer.write_posts(kafka.topics.raw, pending)
        sent += len(pending)
    return sent
