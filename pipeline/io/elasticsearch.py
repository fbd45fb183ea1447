"""Bulk indexing of enriched posts and deletions with deterministic ids, bounded retries and per-document rejections.

Each post becomes two documents (core/documents.py): a redacted one in the posts write alias and
a raw one in the private index. Both use a hash of the post id as _id (documents.doc_key), so a re-run
or a redelivery overwrites instead of duplicating. Each write replaces the whole document except the
agents' fields (`agent.*`, `agent_notes`), which survive a redelivery or a reprocess: a post id sent
twice ends as exactly its last version (a partial update would have kept the first version's title,
author or url), and a new post starts as status 'new'. An edit is such a new version.
A deletion (core.records.Deletion) is a partial update of both documents (documents.deletion_updates)
that never upserts: a deletion of a post that is not indexed (yet) creates nothing, and its
document_missing answer (404) counts as done, not as a rejection. Once applied it holds: a later write of the
same post (a redelivery, a replay, the post and its deletion in one stream bundle) is a no-op.
Throttling (429) and server errors (5xx) are retried with backoff, the whole request or just the
documents that failed; any other per-document error is a rejection returned to the caller with a
reason that names the field and the error type but never the value.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, NamedTuple, Sequence

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from core.config import ElasticsearchSettings
from core.documents import (ANALYST_AGENT_FIELDS, NEW_POST_AGENT_FIELDS, PRIVATE_AGENT_FIELDS, PartialUpdate,
                            analyst_document, deletion_updates, doc_key, private_document)
from core.records import Deletion
from core.redact import redact_url
from core.retry import backoff_delays

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# Replace the document, keeping the fields named in params.keep (the agents' own) as they are. A deleted post stays
# deleted: a redelivery, a replay or a post written after its deletion in the same stream bundle changes nothing.
_REPLACE_KEEPING = ("if (ctx._source.containsKey('deleted_at') && ctx._source.deleted_at != null) { ctx.op = 'noop'; } "
                    "else { Map kept = new HashMap(); for (String f : params.keep) { if (ctx._source.containsKey(f)) "
                    "{ kept.put(f, ctx._source.get(f)); } } ctx._source.clear(); ctx._source.putAll(params.doc); "
                    "ctx._source.putAll(kept); }")
# Change a document in place: set params.set, remove params.remove.
_SET_AND_REMOVE = "ctx._source.putAll(params.set); for (String f : params.remove) { ctx._source.remove(f); }"
_DONE = {"status": 200}


def _replace(index: str, key: str, doc: dict[str, Any], keep: tuple[str, ...], upsert: dict[str, Any]) -> list[str]:
    """The two bulk lines that write `doc` whole, keeping the agents' fields, or create it as `upsert`."""
    return [json.dumps({"update": {"_index": index, "_id": key}}),
            json.dumps({"script": {"source": _REPLACE_KEEPING, "params": {"doc": doc, "keep": list(keep)}},
                        "upsert": upsert}, ensure_ascii=False)]


def _update(index: str, key: str, update: PartialUpdate) -> list[str]:
    """The two bulk lines that change an existing document; without an upsert, a missing one stays missing."""
    return [json.dumps({"update": {"_index": index, "_id": key}}),
            json.dumps({"script": {"source": _SET_AND_REMOVE,
                                   "params": {"set": update.set, "remove": list(update.remove)}}})]


def _missing(result: dict[str, Any]) -> bool:
    return result["status"] == 404 and result.get("error", {}).get("type") == "document_missing_exception"


Item = dict[str, Any] | Deletion  # what the writer writes: an enriched post or a deletion


class Rejection(NamedTuple):
    post: Item
    reason: str


class IndexUnavailable(RuntimeError):
    """Elasticsearch did not accept the batch within the retry budget."""


def _rejection_reason(error: dict[str, Any]) -> str:
    reason = str(error.get("reason", ""))
    # Elasticsearch appends "Preview of field's value: '...'" - personal data must not travel into logs.
    reason = reason.split("Preview of field's value")[0].strip().rstrip(".")
    return f"{error.get('type', 'error')}: {reason[:200]}"


def _sleep(delay_s: float) -> None:
    time.sleep(delay_s)


class ElasticsearchBulkWriter:
    """`wait(delay_s)` is how the writer waits between retries: time.sleep, or in the streaming job
    the Kafka source's backpressure (pipeline/io/kafka_stream.keep_membership), which keeps polling."""

    def __init__(self, es: Elasticsearch, cfg: ElasticsearchSettings, index: str | None = None,
                 wait: Callable[[float], None] | None = None) -> None:
        # This writer owns retries (per document, bounded, with backoff): switch off the client's own.
        self.es = es.options(max_retries=0, retry_on_status=())
        self.cfg = cfg
        self.index = index or cfg.write_alias
        self.wait = wait or _sleep

    def _operations(self, item: Item) -> list[str]:
        """Four bulk lines: the item's analysts' document, then its private one."""
        if isinstance(item, Deletion):
            key = doc_key(item.post_id)
            analyst, private = deletion_updates(item)
            return _update(self.index, key, analyst) + _update(self.cfg.private_index, key, private)
        key, doc, private_doc = doc_key(item["id"]), analyst_document(item), private_document(item)
        return (_replace(self.index, key, doc, ANALYST_AGENT_FIELDS, {**doc, "agent": NEW_POST_AGENT_FIELDS})
                + _replace(self.cfg.private_index, key, private_doc, PRIVATE_AGENT_FIELDS, private_doc))

    def _bulk(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """One result per item: the worse of its two documents' results (a deletion's missing document is done)."""
        operations = [line for item in items for line in self._operations(item)]
        response = self.es.bulk(operations="\n".join(operations) + "\n")
        results = [next(iter(entry.values())) for entry in response["items"]]
        pairs = zip(items, results[::2], results[1::2])
        return [max((_DONE if isinstance(item, Deletion) and _missing(r) else r for r in (first, second)),
                    key=lambda r: r["status"]) for item, first, second in pairs]

    def write(self, posts: Sequence[Item]) -> list[Rejection]:
        """Index posts and apply deletions; return the rejected ones. Raises IndexUnavailable when retries run out."""
        pending, rejected = list(posts), []
        delays = backoff_delays(self.cfg.max_retries, self.cfg.retry_backoff_s)
        while pending:
            try:
                results = self._bulk(pending)
            except (TransportConnectionError, ConnectionTimeout, ApiError) as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(exc, ApiError) and status not in RETRYABLE_STATUS:
                    raise IndexUnavailable(f"bulk request refused: HTTP {status} {exc.error}") from exc
                cause = f"HTTP {status}" if status else type(exc).__name__
            else:
                retry = []
                for post, result in zip(pending, results):
                    if result["status"] in RETRYABLE_STATUS:
                        retry.append(post)
                    elif result["status"] >= 300:
                        rejected.append(Rejection(post, _rejection_reason(result.get("error", {}))))
                if not retry:
                    return rejected
                pending, cause = retry, f"{len(retry)} documents throttled or failed"
            delay = next(delays, None)
            if delay is None:
                raise IndexUnavailable(f"Elasticsearch at {redact_url(self.cfg.url)} did not accept {len(pending)} documents "
                                       f"after {self.cfg.max_retries} retries ({cause})")
            log.warning("elasticsearch bulk retry", extra={"fields": {"cause": cause, "delay_s": round(delay, 2),
                                                                      "documents": len(pending)}})
            self.wait(delay)
        return rejected
