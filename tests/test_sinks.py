"""The write transforms of batch and stream (pipeline/io/write.py) in Beam pipelines against live services."""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import consume_all
from core.config import Settings
from core.documents import doc_key
from core.provision import create_topics
from core.records import RawRecord, dead_letter
from pipeline.io.elasticsearch import ElasticsearchBulkWriter
from pipeline.io.write import REJECTED_TAG, WRITTEN_TAG, WriteToElasticsearch, WriteToKafka

pytestmark = pytest.mark.integration
BULK_SIZES: list[int] = []  # posts per bulk call, recorded in-process (FnApiRunner runs DoFns in this process)
WAITS: list[float] = []  # delays the sink asked its `wait` hook for


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner="FnApiRunner", blocking=True)


def _post(post_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": post_id, "source": "twitter", "text": "Kein Netz seit heute früh", "text_redacted": "Kein Netz",
            "created_at": "2026-11-02T10:00:00Z", **extra}


def record_wait(delay_s: float) -> None:
    WAITS.append(delay_s)


@pytest.fixture
def count_bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    original = ElasticsearchBulkWriter.write
    BULK_SIZES.clear()

    def write(self: ElasticsearchBulkWriter, posts: Any) -> Any:
        BULK_SIZES.append(len(posts))
        return original(self, posts)
    monkeypatch.setattr(ElasticsearchBulkWriter, "write", write)
    return BULK_SIZES


def test_rejected_posts_come_out_tagged_with_the_reason_and_written_ones_pass_on(live: Settings, es) -> None:
    run = uuid.uuid4().hex[:8]
    good = [_post(f"sink-{run}:good-{i}") for i in range(3)]
    bad = _post(f"sink-{run}:bad", created_at="not-a-date-XYZ")
    with _pipeline() as p:
        out = p | beam.Create([*good, bad]) | WriteToElasticsearch(live.elasticsearch)
        assert_that(out[WRITTEN_TAG] | "WrittenIds" >> beam.Map(lambda post: post["id"]),
                    equal_to([post["id"] for post in good]), label="Written")
        assert_that(out[REJECTED_TAG] | "RejectedFields" >> beam.Map(
            lambda letter: (letter.reason_code, letter.origin, "created_at" in letter.reason, "XYZ" in letter.reason,
                            json.loads(letter.payload)["id"])),
            equal_to([("index_rejected", f"post:{bad['id']}", True, False, bad["id"])]), label="Rejected")
    es.indices.refresh(index=live.elasticsearch.read_alias)
    for post in good:
        assert es.exists(index=live.elasticsearch.read_alias, id=doc_key(post["id"]))
    assert not es.exists(index=live.elasticsearch.read_alias, id=doc_key(bad["id"]))
    for post in good:
        es.delete(index=live.elasticsearch.write_alias, id=doc_key(post["id"]), refresh=True)


def test_posts_are_flushed_every_flush_every_and_at_the_end_of_the_bundle(live: Settings, es,
                                                                         count_bulk_calls: list[int]) -> None:
    run = uuid.uuid4().hex[:8]
    posts = [_post(f"sink-{run}:{i}") for i in range(7)]
    with _pipeline() as p:
        out = p | beam.Create(posts) | WriteToElasticsearch(live.elasticsearch, flush_every=3)
        assert_that(out[WRITTEN_TAG] | beam.Map(lambda post: post["id"]), equal_to([post["id"] for post in posts]))
    assert sum(count_bulk_calls) == 7 and max(count_bulk_calls) <= 3
    assert sorted(count_bulk_calls) == [1, 3, 3], "one bundle: two full flushes and the rest at its end"
    es.indices.refresh(index=live.elasticsearch.read_alias)
    assert all(es.exists(index=live.elasticsearch.read_alias, id=doc_key(post["id"])) for post in posts)
    for post in posts:
        es.delete(index=live.elasticsearch.write_alias, id=doc_key(post["id"]), refresh=True)


class _UnavailableThenUp(BaseHTTPRequestHandler):
    """Elasticsearch that answers 503 to the first `failing` bulk calls, then accepts every document."""
    failing = 0
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).calls += 1
        if type(self).calls <= type(self).failing:
            status, payload = 503, {"error": {"type": "unavailable_shards_exception"}, "status": 503}
        else:
            actions = [json.loads(line) for line in body.splitlines()[::2]]
            status, payload = 200, {"errors": False, "took": 1, "items": [
                {op: {"_id": meta["_id"], "status": 201, "result": "created"}}
                for action in actions for op, meta in action.items()]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_PUT = do_POST  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_elasticsearch() -> Iterator[tuple[str, type[_UnavailableThenUp]]]:
    handler = type("Handler", (_UnavailableThenUp,), {"calls": 0, "failing": 7})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_an_outage_waits_through_the_wait_hook_until_elasticsearch_is_back(settings: Settings,
                                                                           flaky_elasticsearch) -> None:
    url, handler = flaky_elasticsearch
    cfg = settings.elasticsearch.model_copy(update={"url": url, "max_retries": 2, "retry_backoff_s": 0.01})
    WAITS.clear()
    posts = [_post(f"flaky:{i}") for i in range(4)]
    with _pipeline() as p:
        out = p | beam.Create(posts) | WriteToElasticsearch(cfg, wait=record_wait, max_outage_s=60)
        assert_that(out[WRITTEN_TAG] | beam.Map(lambda post: post["id"]), equal_to([post["id"] for post in posts]))
    assert handler.calls == 8  # 7 refused, then accepted
    # the writer's own retries (2 per round) and the outage rounds between them, all through the hook
    assert len(WAITS) == 7 and sum(WAITS) < 60


def test_an_outage_longer_than_max_outage_fails_the_write(settings: Settings, flaky_elasticsearch) -> None:
    url, handler = flaky_elasticsearch
    handler.failing = 10 ** 6
    cfg = settings.elasticsearch.model_copy(update={"url": url, "max_retries": 1, "retry_backoff_s": 0.01})
    with pytest.raises(Exception, match="did not accept"):
        with _pipeline() as p:
            _ = p | beam.Create([_post("flaky:never")]) | WriteToElasticsearch(cfg, wait=record_wait,
                                                                                max_outage_s=0.5)


@pytest.fixture
def own_topics(live: Settings) -> Settings:
    run = uuid.uuid4().hex[:8]
    topics = live.kafka.topics.model_copy(update={"raw": f"sinks-{run}.raw", "enriched": f"sinks-{run}.enriched",
                                                  "dead_letter": f"sinks-{run}.dead"})
    kafka = live.kafka.model_copy(update={"topics": topics})
    create_topics(kafka)
    return live.model_copy(update={"kafka": kafka})


def test_write_to_kafka_writes_posts_keyed_by_id_and_dead_letters_with_their_reason(own_topics: Settings) -> None:
    topics = own_topics.kafka.topics
    posts = [_post(f"kafka-sink:{i}") for i in range(5)]
    letters = [dead_letter("index_rejected", "mapper_parsing_exception: created_at",
                           RawRecord(b'{"id": "x"}', "post:x"))]
    with _pipeline() as p:
        _ = p | "Posts" >> beam.Create(posts) | "WritePosts" >> WriteToKafka(own_topics.kafka, topics.enriched,
                                                                             kind="posts", flush_every=2)
        _ = p | "Letters" >> beam.Create(letters) | "WriteLetters" >> WriteToKafka(own_topics.kafka,
                                                                                   topics.dead_letter,
                                                                                   kind="dead_letters")
    published = consume_all(own_topics, topics.enriched, len(posts))
    assert sorted(m.key.decode() for m in published) == sorted(post["id"] for post in posts)
    assert {json.loads(m.value)["id"] for m in published} == {post["id"] for post in posts}
    dead = consume_all(own_topics, topics.dead_letter, 1)
    assert len(dead) == 1 and dead[0].value == b'{"id": "x"}'
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["triage.reason_code"] == "index_rejected" and headers["triage.origin"] == "post:x"


def test_write_to_kafka_says_what_it_writes(settings: Settings) -> None:
    with pytest.raises(ValueError, match="posts"):
        WriteToKafka(settings.kafka, "topic", kind="records")  # type: ignore[arg-type]
