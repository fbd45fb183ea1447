"""How a post becomes its redacted and private documents: no raw id or personal field on the analysts' side;
what an edit and a deletion change."""
from __future__ import annotations

import json

from core.documents import (ANALYST_AGENT_FIELDS, IDENTIFIER_FIELDS, PRIVATE_AGENT_FIELDS, PartialUpdate,
                            analyst_document, deletion_updates, doc_key, joined, private_document)
from core.records import Deletion

POST = {"id": "webhook:max.mustermann@example.com", "source": "webhook", "text": "Meine IBAN DE89370400440532013000",
        "title": "Frage", "url": "https://example.com/p/1", "author": {"name": "Max", "followers": 12},
        "thread_id": "webhook:thread-max.mustermann@example.com", "reply_to_id": "webhook:anna@example.org",
        "metadata": {"email": "max.mustermann@example.com"}, "text_redacted": "Meine IBAN [IBAN]",
        "pii": {"found": True, "types": ["iban"], "spans": [{"type": "iban", "start": 11, "end": 33}]},
        "_produced_ms": 1}


def test_the_analysts_document_carries_no_raw_id_and_no_personal_field() -> None:
    doc = analyst_document(POST)
    text = json.dumps(doc)
    assert "@" not in text and "DE89" not in text and "Max" not in text
    assert doc["id"] == doc_key(POST["id"]) and doc["thread_id"] == doc_key(POST["thread_id"])
    assert doc["reply_to_id"] == doc_key(POST["reply_to_id"])
    assert doc["author"] == {"followers": 12} and doc["pii"] == {"found": True, "types": ["iban"], "count": 1}
    assert "_produced_ms" not in doc


def test_the_document_key_is_stable_and_opaque() -> None:
    assert doc_key("x:1") == doc_key("x:1") != doc_key("x:2")
    assert len(doc_key(POST["id"])) == 32 and "@" not in doc_key(POST["id"])


def test_agents_see_the_raw_post_and_its_ids_again() -> None:
    private = private_document(POST)
    assert private["id"] == POST["id"] and private["pii_spans"] == POST["pii"]["spans"]
    view = joined(analyst_document(POST), private)
    assert view["id"] == POST["id"] and view["thread_id"] == POST["thread_id"] and view["text"] == POST["text"]
    assert joined(analyst_document(POST), None)["id"] == doc_key(POST["id"])


# --- edits and deletions ----------------------------------------------------------------------------------------

EDIT = {**POST, "text": "Erledigt, danke", "text_redacted": "Erledigt, danke", "edited_at": "2026-11-03T10:00:00Z",
        "author": {"name": "Max", "followers": 12, "is_brand": False, "role": "moderator"},
        "pii": {"found": False, "types": [], "spans": []}}


def test_an_edit_is_a_whole_new_version_that_leaves_the_agents_fields_alone() -> None:
    """Each write replaces a document except its agent fields (pipeline/io/elasticsearch.py): so an edit's
    documents must carry the new text, labels and edited_at, and no agent field that would overwrite a claim."""
    doc, private = analyst_document(EDIT), private_document(EDIT)
    assert doc["text_redacted"] == "Erledigt, danke" and doc["pii"] == {"found": False, "types": [], "count": 0}
    assert doc["edited_at"] == private["edited_at"] == "2026-11-03T10:00:00Z"
    assert private["text"] == "Erledigt, danke" and private["pii_spans"] == []
    assert not set(doc) & set(ANALYST_AGENT_FIELDS) and not set(private) & set(PRIVATE_AGENT_FIELDS)


def test_analysts_see_whether_the_brand_wrote_a_post_but_not_who() -> None:
    assert analyst_document(EDIT)["author"] == {"followers": 12, "is_brand": False}
    assert private_document(EDIT)["author"]["role"] == "moderator"


def _apply(doc: dict, update: PartialUpdate) -> dict:
    """What the index does with a PartialUpdate (pipeline/io/elasticsearch.py's script)."""
    return {**{k: v for k, v in doc.items() if k not in update.remove}, **update.set}


def test_a_deletion_removes_the_authors_words_and_personal_data_and_keeps_the_rest() -> None:
    deletion = Deletion(POST["id"], "webhook", "2026-11-04T08:00:00Z")
    analyst_update, private_update = deletion_updates(deletion)
    private = _apply({**private_document(POST), "agent_notes": [{"by": "mia", "note": "called back"}]}, private_update)
    assert "@example.com" not in json.dumps({k: v for k, v in private.items() if k not in IDENTIFIER_FIELDS})
    assert not {"text", "title", "url", "author", "metadata", "pii_spans"} & set(private)
    assert private["deleted_at"] == "2026-11-04T08:00:00Z" and private["id"] == POST["id"]
    assert private["agent_notes"] == [{"by": "mia", "note": "called back"}]
    analyst = _apply({**analyst_document({**POST, "title_redacted": "Frage"}), "agent": {"status": "claimed"}},
                     analyst_update)
    assert "text_redacted" not in analyst and "title_redacted" not in analyst
    assert analyst["deleted_at"] == "2026-11-04T08:00:00Z" and analyst["agent"] == {"status": "claimed"}
    assert analyst["pii"]["types"] == ["iban"] and analyst["id"] == doc_key(POST["id"])  # labels stay for the figures
