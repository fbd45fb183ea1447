"""Keyed, acknowledged writes to Kafka for enriched posts and dead letters."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from kafka import KafkaProducer

from core.clients import kafka_options
from core.config import KafkaSettings
from core.records import DeadLetter, post_payload

MAX_RECORD_BYTES = 8 * 1024 * 1024  # matches max.message.bytes of the raw and dead-letter topics


def _delivery_timeout_s(cfg: KafkaSettings) -> float:
    """How long a send keeps being retried (leader moves, a broker restart) before it fails: 4 request timeouts."""
    return 4 * cfg.request_timeout_s


def producer(cfg: KafkaSettings) -> KafkaProducer:
    """acks=all and idempotence: a write is done once every in-sync replica has it, and retries never duplicate.

    Retries are bounded by time (delivery_timeout_ms), not by count, as in the Java client: a count of
    a few retries 100 ms apart gives up within a second, while a broker restart takes several.
    """
    return KafkaProducer(**kafka_options(cfg), acks="all", enable_idempotence=True, linger_ms=5,
                         delivery_timeout_ms=int(_delivery_timeout_s(cfg) * 1000),
                         max_in_flight_requests_per_connection=5, max_request_size=MAX_RECORD_BYTES)


class KafkaWriter:
    def __init__(self, cfg: KafkaSettings) -> None:
        self._producer = producer(cfg)
        self._timeout_s = _delivery_timeout_s(cfg)

    def write_posts(self, topic: str, posts: Sequence[dict[str, Any]]) -> None:
        self.write_records(topic, ((post["id"].encode("utf-8"), post_payload(post)) for post in posts))

    def write_records(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Keyed raw records, sent as they are; returns how many the broker acknowledged."""
        futures = [self._producer.send(topic, key=key, value=value) for key, value in records]
        self._wait(futures)
        return len(futures)

    def write_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        futures = [self._producer.send(topic, value=letter.payload, headers=letter.kafka_headers()) for letter in letters]
        self._wait(futures)

    def _wait(self, futures: list[Any]) -> None:
        self._producer.flush(timeout=self._timeout_s)
        for future in futures:
            future.get(timeout=self._timeout_s)  # raises the broker's error, if any

    def close(self) -> None:
        self._producer.close(timeout=self._timeout_s)
