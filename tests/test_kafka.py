"""Kafka: publishing posts, batch over topic ranges, enriched and dead-letter topics."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import SAMPLES, consume_all
from connectors.jsonl_publisher import publish
from cli.main import main
from core.config import Settings

pytestmark = pytest.mark.integration
POISON = [b"\x00\x01 not json at all", b'{"id": "k:empty", "source": "twitter", "text": ""}']


@pytest.fixture(scope="module")
def published(live: Settings, tmp_path_factory: pytest.TempPathFactory) -> int:
    poison_file = tmp_path_factory.mktemp("poison") / "poison.jsonl"
    poison_file.write_bytes(b"\n".join(POISON) + b"\n")
    return publish(live.kafka, [str(SAMPLES), str(poison_file)])


def test_batch_reads_the_whole_topic_and_dead_letters_go_to_their_topic(live: Settings, published: int,
                                                                         tmp_path: Path) -> None:
    samples = sum(1 for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip())
    assert published == samples + len(POISON)
    out = tmp_path / "from-kafka.jsonl"
    assert main(["batch", "--input", "kafka", "--output", str(out), "--dead-letters", "kafka",
                 "--from", "earliest", "--to", "latest"]) == 0
    enriched = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(enriched) == samples
    assert len({post["id"] for post in enriched}) == samples

    letters = consume_all(live, live.kafka.topics.dead_letter, len(POISON))
    assert sorted(m.value for m in letters) == sorted(POISON)
    for message in letters:
        headers = dict(message.headers)
        assert headers["triage.reason_code"] in (b"invalid_utf8", b"invalid_json", b"empty_text")
        assert headers["triage.origin"].startswith(f"kafka:{live.kafka.topics.raw}/".encode())


def test_batch_over_an_empty_range_reads_nothing(live: Settings, published: int, tmp_path: Path) -> None:
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    for bounds in (["--from", "latest"], ["--from", future]):
        out = tmp_path / "empty.jsonl"
        assert main(["batch", "--input", "kafka", "--output", str(out), *bounds]) == 0
        assert out.read_text() == ""


def test_batch_writes_enriched_posts_keyed_by_id_to_kafka(live: Settings, tmp_path: Path) -> None:
    source = tmp_path / "few.jsonl"
    source.write_text("\n".join(SAMPLES.read_text(encoding="utf-8").splitlines()[:25]) + "\n", encoding="utf-8")
    assert main(["batch", "--input", str(source), "--output", "kafka"]) == 0
    messages = consume_all(live, live.kafka.topics.enriched, 25)
    assert len(messages) == 25
    for message in messages:
        post = json.loads(message.value)
        assert message.key == post["id"].encode()
        assert "language" in post and "pii" in post
