"""Elasticsearch: setup, idempotent indexing by post id, rejections and retries."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from conftest import SAMPLES
from fake_apis import FakeHttpServer, Request
from cli.main import main
from core.clients import elasticsearch_client
from core.config import Settings
from core.documents import doc_key
from core.provision import first_index_name, setup_all
from pipeline.io.elasticsearch import ElasticsearchBulkWriter, IndexUnavailable


@pytest.mark.integration
def test_setup_is_idempotent_and_creates_versioned_index_behind_aliases(live: Settings, es) -> None:
    again = setup_all(live)
    assert any("exists" in line for line in again)
    cfg = live.elasticsearch
    aliases = es.indices.get_alias(name=f"{cfg.read_alias},{cfg.write_alias}").body
    index = first_index_name(cfg)
    assert set(aliases) == {index}
    assert aliases[index]["aliases"][cfg.write_alias].get("is_write_index") is True
    mapping = es.indices.get_mapping(index=index).body[index]["mappings"]["properties"]
    assert mapping["text_redacted"]["fields"]["de"]["analyzer"] == "german"
    assert mapping["pii"]["properties"]["types"]["type"] == "keyword"
    assert "text" not in mapping
    private = es.indices.get_mapping(index=cfg.private_index).body[cfg.private_index]["mappings"]["properties"]
    assert private["text"]["fields"]["de"]["analyzer"] == "german"


@pytest.mark.integration
@pytest.mark.models
def test_indexing_uses_post_ids_and_reruns_do_not_duplicate(live: Settings, es, indexed_samples: int) -> None:
    alias = live.elasticsearch.read_alias
    assert es.count(index=alias)["count"] == indexed_samples
    assert main(["batch", "--input", str(SAMPLES), "--output", "es"]) == 0
    es.indices.refresh(index=alias)
    assert es.count(index=alias)["count"] == indexed_samples
    first = json.loads(SAMPLES.read_text(encoding="utf-8").splitlines()[0])
    doc = es.get(index=alias, id=doc_key(first["id"]))["_source"]
    assert doc["language"]["code"] in ("de", "en", "und")
    assert doc["agent"] == {"status": "new"}
    assert "text" not in doc and "text_redacted" in doc
    assert es.get(index=live.elasticsearch.private_index, id=doc_key(first["id"]))["_source"]["text"] == first["text"]


@pytest.mark.integration
@pytest.mark.models
def test_a_redelivered_post_keeps_the_agents_fields(live: Settings, es, indexed_samples: int) -> None:
    alias = live.elasticsearch.read_alias
    first = json.loads(SAMPLES.read_text(encoding="utf-8").splitlines()[1])
    es.update(index=alias, id=doc_key(first["id"]), doc={"agent": {"status": "claimed", "assignee": "mia"}}, refresh=True)
    try:
        assert ElasticsearchBulkWriter(es, live.elasticsearch).write([{**first, "text_redacted": "neu"}]) == []
        es.indices.refresh(index=alias)
        doc = es.get(index=alias, id=doc_key(first["id"]))["_source"]
        assert doc["agent"] == {"status": "claimed", "assignee": "mia"}
        assert doc["text_redacted"] == "neu"
    finally:
        es.update(index=alias, id=doc_key(first["id"]), doc={"agent": {"status": "new", "assignee": None}}, refresh=True)


@pytest.mark.integration
def test_a_post_id_written_twice_ends_as_exactly_its_last_version(live: Settings, es) -> None:
    cfg = live.elasticsearch
    first = {"id": "test:dup-1", "source": "forum", "text": "Erste Fassung", "title": "Alter Titel",
             "url": "https://forum.example/t/1", "author": {"name": "Max", "handle": "max"},
             "text_redacted": "Erste Fassung", "created_at": "2026-11-02T10:00:00Z"}
    second = {"id": "test:dup-1", "source": "forum", "text": "Zweite Fassung", "text_redacted": "Zweite Fassung",
              "created_at": "2026-11-02T10:05:00Z"}
    key = doc_key(first["id"])
    writer = ElasticsearchBulkWriter(es, cfg)
    assert writer.write([first, second]) == []  # both versions in one bulk request
    es.indices.refresh(index=[cfg.read_alias, cfg.private_index])
    private = es.get(index=cfg.private_index, id=key)["_source"]
    assert private["text"] == "Zweite Fassung" and not {"title", "url", "author"} & set(private)
    assert es.get(index=cfg.read_alias, id=key)["_source"]["text_redacted"] == "Zweite Fassung"
    es.update(index=cfg.read_alias, id=key, doc={"agent": {"status": "claimed", "assignee": "mia"}}, refresh=True)
    es.update(index=cfg.private_index, id=key, doc={"agent_notes": [{"by": "mia", "note": "angerufen"}]}, refresh=True)
    assert writer.write([first]) == []  # and again in a later one: the agents' fields stay, the rest is replaced
    es.indices.refresh(index=[cfg.read_alias, cfg.private_index])
    analyst, private = es.get(index=cfg.read_alias, id=key)["_source"], es.get(index=cfg.private_index, id=key)["_source"]
    assert analyst["agent"] == {"status": "claimed", "assignee": "mia"} and analyst["created_at"] == first["created_at"]
    assert private["title"] == "Alter Titel" and private["agent_notes"] == [{"by": "mia", "note": "angerufen"}]


@pytest.mark.integration
def test_rejected_documents_come_back_with_a_reason_without_the_value(live: Settings, es) -> None:
    writer = ElasticsearchBulkWriter(es, live.elasticsearch)
    good = {"id": "test:good-1", "source": "twitter", "text": "ok", "created_at": "2026-11-02T10:00:00Z"}
    bad = {"id": "test:bad-1", "source": "twitter", "text": "ok", "created_at": "not-a-date-XYZ"}
    rejected = writer.write([good, bad])
    assert [r.post["id"] for r in rejected] == ["test:bad-1"]
    assert "created_at" in rejected[0].reason or "parse" in rejected[0].reason
    assert "XYZ" not in rejected[0].reason
    es.indices.refresh(index=live.elasticsearch.read_alias)
    assert es.exists(index=live.elasticsearch.read_alias, id=doc_key("test:good-1"))
    es.delete(index=live.elasticsearch.write_alias, id=doc_key("test:good-1"), refresh=True)


class ThrottlingElasticsearch:
    """Answers bulk calls like Elasticsearch: the first `throttled` get 429, later ones succeed per item."""

    def __init__(self, throttled: int = 1) -> None:
        self.throttled = throttled
        self.server = FakeHttpServer({"/": self.bulk})
        self.url = self.server.url

    @property
    def calls(self) -> int:
        return len(self.server.requests)

    def bulk(self, request: Request) -> None:
        headers = {"X-Elastic-Product": "Elasticsearch"}
        if self.calls <= self.throttled:
            return request.json({"error": {"type": "es_rejected_execution_exception"}, "status": 429}, 429, headers)
        actions = [json.loads(line) for line in request.body.decode().splitlines()[::2]]
        request.json({"errors": False, "took": 1, "items": [
            {op: {"_id": meta["_id"], "status": 201, "result": "created"}}
            for action in actions for op, meta in action.items()]}, 200, headers)


@pytest.fixture
def throttling_server() -> Iterator[tuple[str, ThrottlingElasticsearch]]:
    fake = ThrottlingElasticsearch()
    yield fake.url, fake
    fake.server.close()


def test_throttling_is_retried_then_succeeds(settings: Settings, throttling_server) -> None:
    url, handler = throttling_server
    cfg = settings.elasticsearch.model_copy(update={"url": url, "max_retries": 3, "retry_backoff_s": 0.01})
    writer = ElasticsearchBulkWriter(elasticsearch_client(cfg), cfg)
    assert writer.write([{"id": "a:1", "text": "x"}, {"id": "a:2", "text": "y"}]) == []
    assert handler.calls == 2


def test_retries_are_bounded(settings: Settings, throttling_server) -> None:
    url, handler = throttling_server
    handler.throttled = 100
    cfg = settings.elasticsearch.model_copy(update={"url": url, "max_retries": 2, "retry_backoff_s": 0.01})
    writer = ElasticsearchBulkWriter(elasticsearch_client(cfg), cfg)
    with pytest.raises(IndexUnavailable, match="after 2 retries"):
        writer.write([{"id": "a:1", "text": "x"}])
    assert handler.calls == 3


@pytest.mark.integration
@pytest.mark.models
def test_reprocessing_reads_posts_back_from_the_index_with_a_query(live: Settings, indexed_samples: int,
                                                                  enriched_samples: list[dict], tmp_path) -> None:
    out = tmp_path / "reprocessed.jsonl"
    assert main(["batch", "--input", "es", "--query", "source:twitter", "--output", str(out)]) == 0
    reprocessed = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    twitter = {p["id"]: p for p in enriched_samples if p["source"] == "twitter"}
    assert sorted(p["id"] for p in reprocessed) == sorted(twitter)
    for post in reprocessed:  # the Post fields survive the round trip; enrichment is recomputed
        assert post["text"] == twitter[post["id"]]["text"]
        assert post["pii"] == twitter[post["id"]]["pii"]
