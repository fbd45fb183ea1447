"""Posts deleted at their source: deletion records parse to Deletions, leave the graph before enrichment
("SplitDeletions") and reach the index as partial updates that never create a document; a deletion of a post
that is not indexed is done, not an error. The last test runs the whole path with `triage batch` against the
local Elasticsearch stand-in: posts, an edit and deletions in, the edited text and the marked posts out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from fake_apis import FakeHttpServer, Request
from cli.main import main
from core.clients import elasticsearch_client
from core.config import Settings
from core.documents import doc_key
from core.records import DeadLetter, Deletion, RawRecord, parse_post, utc_now
from pipeline.enrich import EnrichPosts
from pipeline.io.elasticsearch import ElasticsearchBulkWriter
from pipeline.io.write import REJECTED_TAG, WRITTEN_TAG, WriteToElasticsearch
from pipeline.testing import FAKE_STEPS

LIMITS = {"max_record_bytes": 2000, "max_text_chars": 500}
SECRET = "max.mustermann@example.com"


def _deletion_record(post_id: str = "forum:42", **fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "deletion", "id": post_id, "source": post_id.split(":")[0],
            "deleted_at": "2026-11-04T08:00:00Z", **fields}


def _raw(value: dict[str, Any], origin: str = "kafka:raw/0/3") -> RawRecord:
    return RawRecord(json.dumps(value, ensure_ascii=False).encode(), origin)


# --- parsing ------------------------------------------------------------------------------------------------

def test_a_deletion_record_becomes_a_deletion_not_a_post() -> None:
    assert parse_post(_raw(_deletion_record()), **LIMITS) == Deletion("forum:42", "forum", "2026-11-04T08:00:00Z")


def test_a_deletion_without_a_time_is_dated_when_it_is_read() -> None:
    before = utc_now()
    parsed = parse_post(_raw(_deletion_record(deleted_at=None)), **LIMITS)
    assert isinstance(parsed, Deletion) and before <= parsed.deleted_at <= utc_now()


@pytest.mark.parametrize("record,field", [
    ({"schema_version": 1, "kind": "deletion", "source": "forum"}, "id"),
    (_deletion_record(text=f"Bitte löschen: {SECRET}"), "has keys the schema does not allow"),
    (_deletion_record(deleted_at=f"gestern {SECRET}"), "deleted_at"),
    (_deletion_record(id=f"forum:{SECRET} 42"), "id"),
    (_deletion_record(schema_version=2), "schema_version"),
])
def test_a_bad_deletion_record_is_a_dead_letter_that_names_the_field_not_the_value(record: dict, field: str) -> None:
    raw = _raw(record)
    letter = parse_post(raw, **LIMITS)
    assert isinstance(letter, DeadLetter) and letter.reason_code == "schema_violation"
    assert field in letter.reason and SECRET not in letter.reason
    assert (letter.origin, letter.payload) == (raw.origin, raw.payload)


# --- the graph: deletions skip the enrichment steps ---------------------------------------------------------

def test_deletions_leave_before_enrichment_and_come_out_apart(settings: Settings) -> None:
    posts = [{"id": f"forum:{i}", "source": "forum", "text": f"Kein Netz seit {i} Tagen"} for i in range(3)]
    records = [_raw(post, f"file:a#{i}") for i, post in enumerate(posts)]
    records += [_raw(_deletion_record("forum:1"), "file:a#3"), _raw(_deletion_record(deleted_at="bald"), "file:a#4")]
    with TestPipeline() as p:
        out = p | beam.Create(records) | EnrichPosts(settings, steps=FAKE_STEPS)
        letters = tuple(out["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
        # A Deletion handed to a fake step would fail its batch (it is no dict): so no enrichment_failed here.
        assert_that(out["enriched"] | beam.Map(lambda post: (post["id"], post["triage"]["queue"])),
                    equal_to([(post["id"], "general") for post in posts]), label="PostsEnriched")
        assert_that(out["deletions"], equal_to([Deletion("forum:1", "forum", "2026-11-04T08:00:00Z")]),
                    label="DeletionsApart")
        assert_that(letters | beam.Map(lambda letter: (letter.reason_code, letter.origin)),
                    equal_to([("schema_violation", "file:a#4")]), label="OnlyTheBadDeletion")


# --- the index writes, against a stand-in for Elasticsearch's bulk API ---------------------------------------

class BulkStandIn:
    """Answers `_bulk` like Elasticsearch for update actions: `present` documents are updated, an absent one is
    created only when the action carries an upsert, else 404 document_missing_exception; ids in `refuse` get a
    400 mapper_parsing_exception. Every action is kept in `actions` as (metadata, body)."""

    def __init__(self, present: set[str] = frozenset(), refuse: set[str] = frozenset()) -> None:
        self.present, self.refuse = set(present), set(refuse)
        self.actions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.server = FakeHttpServer({"/_bulk": self.bulk})
        self.url = self.server.url

    def bulk(self, request: Request) -> None:
        lines = [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
        items = []
        for action, body in zip(lines[::2], lines[1::2]):
            meta = action["update"]
            self.actions.append((meta, body))
            where = {"_index": meta["_index"], "_id": meta["_id"]}
            if meta["_id"] in self.refuse:
                items.append({"update": {**where, "status": 400, "error": {
                    "type": "mapper_parsing_exception", "reason": "failed to parse field [deleted_at] of type [date]"}}})
            elif meta["_id"] in self.present or "upsert" in body:
                self.present.add(meta["_id"])
                items.append({"update": {**where, "status": 200, "result": "updated"}})
            else:
                items.append({"update": {**where, "status": 404, "error": {
                    "type": "document_missing_exception", "reason": f"[{meta['_id']}]: document missing"}}})
        request.json({"took": 1, "errors": any("error" in i["update"] for i in items), "items": items},
                     headers={"X-Elastic-Product": "Elasticsearch"})


@pytest.fixture
def stand_in() -> Iterator[BulkStandIn]:
    fake = BulkStandIn(present={doc_key("forum:1")}, refuse={doc_key("forum:bad")})
    yield fake
    fake.server.close()


def _cfg(settings: Settings, url: str):  # type: ignore[no-untyped-def]
    return settings.elasticsearch.model_copy(update={"url": url, "max_retries": 0})


def test_a_deletion_marks_both_documents_in_place_and_never_creates_one(settings: Settings,
                                                                        stand_in: BulkStandIn) -> None:
    """A deletion that comes before its post (a replay, a source that reports deletions of posts never
    delivered): nothing is created and it is not an error. The post, when it comes later, is indexed like any
    post (the last record of a post id wins; there is no tombstone)."""
    cfg = _cfg(settings, stand_in.url)
    writer = ElasticsearchBulkWriter(elasticsearch_client(cfg), cfg)
    assert writer.write([Deletion("forum:1", "forum", "2026-11-04T08:00:00Z"),
                         Deletion("forum:never-indexed", "forum", "2026-11-04T08:00:00Z")]) == []
    assert [meta["_index"] for meta, _ in stand_in.actions] == [cfg.write_alias, cfg.private_index] * 2
    assert all("upsert" not in body for _, body in stand_in.actions)
    assert doc_key("forum:never-indexed") not in stand_in.present
    (_, analyst), (_, private) = stand_in.actions[:2]
    assert analyst["script"]["params"]["set"] == private["script"]["params"]["set"] == {
        "deleted_at": "2026-11-04T08:00:00Z"}
    assert {"text_redacted", "title_redacted"} == set(analyst["script"]["params"]["remove"])
    assert {"text", "title", "url", "author", "metadata", "pii_spans"} == set(private["script"]["params"]["remove"])

    post = {"id": "forum:never-indexed", "source": "forum", "text": "Jetzt doch", "text_redacted": "Jetzt doch"}
    assert writer.write([post]) == [] and doc_key("forum:never-indexed") in stand_in.present


def test_the_sink_passes_on_applied_deletions_and_dead_letters_a_refused_one(settings: Settings,
                                                                           stand_in: BulkStandIn) -> None:
    deletions = [Deletion("forum:1", "forum", "2026-11-04T08:00:00Z"),
                 Deletion("forum:bad", "forum", "2026-11-04T08:00:00Z")]
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(deletions) | WriteToElasticsearch(_cfg(settings, stand_in.url))
        assert_that(out[WRITTEN_TAG], equal_to(deletions[:1]), label="Applied")
        # The dead letter keeps the deletion record itself, so replaying it after the fix applies it again.
        assert_that(out[REJECTED_TAG] | beam.Map(lambda letter: (
            letter.reason_code, letter.origin, "mapper_parsing_exception" in letter.reason,
            parse_post(RawRecord(letter.payload, "replay"), **LIMITS))),
            equal_to([("index_rejected", "deletion:forum:bad", True, deletions[1])]), label="Refused")


# --- integration: `triage batch` into the local Elasticsearch stand-in --------------------------------------

def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _get(es, index: str, post_id: str) -> Optional[dict[str, Any]]:  # type: ignore[no-untyped-def]
    found = es.options(ignore_status=404).get(index=index, id=doc_key(post_id))
    return found["_source"] if found.get("found") else None


@pytest.mark.integration
def test_a_batch_run_applies_an_edit_and_deletions_to_the_index(live: Settings, es, tmp_path: Path, run_id: str,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    from conftest import own_names
    monkeypatch.setenv("TRIAGE_ENRICHMENT__STEPS", "[language, pii]")  # no model to load: regexes and langid
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-deletions"}, kafka=False) as own:  # counts elsewhere stay
        _edit_and_deletions(own.elasticsearch, es, tmp_path, capsys)


def _edit_and_deletions(cfg, es, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from apps import desk
    author = {"id": "u-17", "handle": "maxm", "name": "Max Mustermann", "followers": 3, "is_brand": False,
              "role": None}
    edited = {"id": "forum:edited", "source": "forum", "author": author, "created_at": "2026-11-03T09:00:00Z",
              "text": "Mein Router ist seit drei Tagen kaputt und niemand von Ihnen hilft mir, das ist unglaublich"}
    deleted = {"id": "forum:deleted", "source": "forum", "author": author, "title": "Kündigung",
               "text": f"Ich kündige zum Monatsende, bitte bestätigen Sie an {SECRET}", "url": "https://forum.example/t/9"}
    assert main(["batch", "--input", str(_jsonl(tmp_path / "first.jsonl", [edited, deleted])), "--output", "es"]) == 0
    es.indices.refresh(index=f"{cfg.read_alias},{cfg.private_index}")
    desk.claim(es, cfg, "forum:edited", "mia")
    desk.claim(es, cfg, "forum:deleted", "mia")
    desk.add_note(es, cfg, "forum:deleted", "mia", "Rückruf vereinbart")

    edit = {**edited, "edited_at": "2026-11-03T11:00:00Z",
            "text": "Update: the router works again since this morning, thank you very much for the quick help"}
    late = {"id": "forum:late", "source": "forum", "text": f"Bitte löschen, schreibt an {SECRET}", "author": author}
    second = [_deletion_record("forum:late"),  # before its post in the file: a run applies deletions after its posts
              edit, _deletion_record("forum:deleted"), _deletion_record("forum:never-indexed"), late]
    assert main(["batch", "--input", str(_jsonl(tmp_path / "second.jsonl", second)), "--output", "es",
                 "--summary-json", str(tmp_path / "summary.json")]) == 0
    es.indices.refresh(index=f"{cfg.read_alias},{cfg.private_index}")
    assert "deletions: 3 posts deleted at their source marked in the index" in capsys.readouterr().out
    counters = json.loads((tmp_path / "summary.json").read_text())["counters"]
    assert counters["deletions"] == 3 and counters.get("dead_letters", 0) == 0

    analyst, private = _get(es, cfg.read_alias, edit["id"]), _get(es, cfg.private_index, edit["id"])
    assert private["text"] == edit["text"] and analyst["text_redacted"] == edit["text"]
    assert analyst["edited_at"] == private["edited_at"] == "2026-11-03T11:00:00Z"
    assert analyst["language"]["code"] == "en"  # the labels are the edit's (the first version was German)
    assert analyst["agent"]["status"] == "claimed" and analyst["agent"]["assignee"] == "mia"
    assert "deleted_at" not in analyst

    for post_id in ("forum:deleted", "forum:late"):
        analyst, private = _get(es, cfg.read_alias, post_id), _get(es, cfg.private_index, post_id)
        assert analyst["deleted_at"] == private["deleted_at"] == "2026-11-04T08:00:00Z", post_id
        assert not {"text_redacted", "title_redacted"} & set(analyst), post_id
        assert not {"text", "title", "url", "author", "metadata", "pii_spans"} & set(private), post_id
        assert SECRET not in json.dumps(private) and "Mustermann" not in json.dumps(private), post_id
        assert analyst["pii"]["found"] is True and "language" in analyst, post_id  # the labels stay
    assert _get(es, cfg.read_alias, "forum:deleted")["agent"]["assignee"] == "mia"
    assert [n["text"] for n in _get(es, cfg.private_index, "forum:deleted")["agent_notes"]] == ["Rückruf vereinbart"]
    assert _get(es, cfg.read_alias, "forum:never-indexed") is None  # no broken document
    assert _get(es, cfg.private_index, "forum:never-indexed") is None

    queue_ids = {post["id"] for post in desk.queue(es, cfg, size=500)["posts"]}
    assert edit["id"] in queue_ids and not {"forum:deleted", "forum:late"} & queue_ids

    # A replay of the deleted post (or the post landing after its deletion in one stream bundle) does not revive it.
    assert main(["batch", "--input", str(_jsonl(tmp_path / "replay.jsonl", [deleted])), "--output", "es"]) == 0
    es.indices.refresh(index=f"{cfg.read_alias},{cfg.private_index}")
    private = _get(es, cfg.private_index, "forum:deleted")
    assert private["deleted_at"] == "2026-11-04T08:00:00Z" and "text" not in private and SECRET not in json.dumps(private)
    assert "text_redacted" not in _get(es, cfg.read_alias, "forum:deleted")
