"""How one enriched post becomes two Elasticsearch documents: a redacted one and a private one.

Analysts and dashboards read the posts index, which must never hold personal data: it gets the
redacted text and title, the labels, the routing and the agents' workflow fields. The raw post
(text, title, url, author identity, source metadata) and the personal-data spans go to a separate
private index that only agents and the pipeline may read (schemas/elasticsearch/roles.json). Both
documents share the post id, so the agents' tools join them with one mget.
"""
from __future__ import annotations

from typing import Any, Optional

from pipeline.records import POST_FIELDS, public

Document = dict[str, Any]

# Post fields that may carry personal data; they exist only in the private index.
PRIVATE_POST_FIELDS = ("text", "title", "url", "metadata", "author")
NEW_POST_AGENT_FIELDS = {"status": "new"}


def analyst_document(post: Document) -> Document:
    """The redacted document: everything an analyst may see, and nothing else."""
    doc = {k: v for k, v in public(post).items() if k not in PRIVATE_POST_FIELDS}
    followers = (post.get("author") or {}).get("followers")
    if followers is not None:
        doc["author"] = {"followers": followers}
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
    raw = {k: v for k, v in private.items() if k in PRIVATE_POST_FIELDS}
    return {**analyst, **raw, "pii_spans": private.get("pii_spans", []),
            "agent_notes": private.get("agent_notes", [])}
