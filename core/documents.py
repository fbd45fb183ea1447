"""How one enriched post becomes two Elasticsearch documents: a redacted one and a private one.

Analysts and dashboards read the posts index, which must never hold personal data: it gets the
redacted text and title, the labels, the routing and the agents' workflow fields. The raw post
(text, title, url, author identity, source metadata) and the personal-data spans go to a separate
private index that only agents and the pipeline may read (schemas/elasticsearch/roles.json). Both
documents share one document id, so the agents' tools join them with one mget.

That document id, and every post id the analysts' document carries (id, thread_id, reply_to_id),
is a hash of the post id, never the id itself: ids are made by sources and senders and can carry
personal data (a webhook id with an e-mail address, a forum thread named after a customer). The
hash is stable, so redelivery still overwrites and threads still group; the raw ids live only in
the private document. It is a hash, not encryption: someone who guesses a whole id can confirm it.

An edited post comes again under its id and replaces both documents like any redelivery (the agents'
fields stay). A deleted post (core.records.Deletion) is a partial update of both documents instead:
`deleted_at` is set and the author's words and personal data are removed, because the author withdrew
them; the labels, routing and the agents' fields stay, so counts, SLA figures and the record of what
the agents did are unchanged. The analysts' document is kept, marked, rather than deleted: it holds the
agents' workflow fields, and dashboards of past weeks must not shrink when authors delete posts.
"""
from __future__ import annotations

import hashlib
from typing import Any, NamedTuple, Optional

from core.records import POST_FIELDS, Deletion, public

Document = dict[str, Any]

# Post fields that may carry personal data; they exist only in the private index.
PRIVATE_POST_FIELDS = ("text", "title", "url", "metadata", "author")
# Post ids: hashed in the analysts' document, raw in the private one.
IDENTIFIER_FIELDS = ("id", "thread_id", "reply_to_id")
NEW_POST_AGENT_FIELDS = {"status": "new"}
# Fields the agents own in each document: a new version of a post replaces everything else.
ANALYST_AGENT_FIELDS = ("agent",)
PRIVATE_AGENT_FIELDS = ("agent_notes",)
# Author fields an analyst may see: how big an audience, and whether the brand itself wrote it - never who.
ANALYST_AUTHOR_FIELDS = ("followers", "is_brand")
# What a deletion removes from each document: the author's words and everything that points at a person.
ANALYST_WITHDRAWN_FIELDS = ("text_redacted", "title_redacted")
PRIVATE_WITHDRAWN_FIELDS = (*PRIVATE_POST_FIELDS, "pii_spans")


class PartialUpdate(NamedTuple):
    """A change to a document that exists: fields to set and fields to remove. Never creates a document."""
    set: Document
    remove: tuple[str, ...]


def doc_key(post_id: str) -> str:
    """The Elasticsearch _id of a post in both indices (and its id on the analysts' side)."""
    return hashlib.sha256(post_id.encode("utf-8")).hexdigest()[:32]


def analyst_document(post: Document) -> Document:
    """The redacted document: everything an analyst may see, and nothing else."""
    doc = {k: v for k, v in public(post).items() if k not in PRIVATE_POST_FIELDS}
    for name in IDENTIFIER_FIELDS:
        if isinstance(doc.get(name), str):
            doc[name] = doc_key(doc[name])
    author = {k: v for k, v in (post.get("author") or {}).items() if k in ANALYST_AUTHOR_FIELDS and v is not None}
    if author:
        doc["author"] = author
    if "pii" in post:
        doc["pii"] = {"found": post["pii"]["found"], "types": post["pii"]["types"],
                      "count": len(post["pii"].get("spans", []))}
    return doc


def private_document(post: Document) -> Document:
    """The raw post and where its personal data is: for agents answering the customer."""
    doc = {k: v for k, v in post.items() if k in POST_FIELDS}
    doc["pii_spans"] = post.get("pii", {}).get("spans", [])
    return doc


def joined(analyst: Document, private: Optional[Document]) -> Document:
    """An agent's view of a post: the analyst fields plus the raw text and author (when readable)."""
    if not private:
        return dict(analyst)
    raw = {k: v for k, v in private.items() if k in PRIVATE_POST_FIELDS + IDENTIFIER_FIELDS}
    return {**analyst, **raw, "pii_spans": private.get("pii_spans", []),
            "agent_notes": private.get("agent_notes", [])}


def deletion_updates(deletion: Deletion) -> tuple[PartialUpdate, PartialUpdate]:
    """(analysts' update, private update) for a post its author deleted: both marked with `deleted_at`."""
    marks = {"deleted_at": deletion.deleted_at}
    return PartialUpdate(marks, ANALYST_WITHDRAWN_FIELDS), PartialUpdate(marks, PRIVATE_WITHDRAWN_FIELDS)
