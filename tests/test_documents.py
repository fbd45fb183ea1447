"""How a post becomes its redacted and private documents: no raw id or personal field on the analysts' side."""
from __future__ import annotations

import json

from core.documents import analyst_document, doc_key, joined, private_document

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
