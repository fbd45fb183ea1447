"""Bulk indexing of enriched posts with deterministic ids, bounded retries and per-document rejections.

Each post becomes two documents (pipeline/documents.py): a redacted one in the posts write alias and
a raw one in the private index. Both use the post id as _id, so a re-run or a redelivery overwrites
instead of duplicating. Both are upserts that only replace the pipeline's fields: the agents' fields
(`agent.*`, `agent_notes`) survive a redelivery or a reprocess, and a new post starts as status 'new'.
Throttling (429) and server errors (5xx) are retried with backoff, the whole request or just the
documents that failed; any other per-document error is a rejection returned to the caller with a
reason that names the field and the error type but never the value.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, NamedTuple, Sequence

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from pipeline.config import ElasticsearchSettings
from pipeline.documents import NEW_POST_AGENT_FIELDS, analyst_document, private_document
from pipeline.redact import redact_url
from pipeline.sinks.retry import backoff_delays

log = logging.getLogger(__name__)
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class Rejection(NamedTuple):
    post: dict[str, Any]
    reason: str


class IndexUnavailable(RuntimeError):
    """Elasticsearch did not accept the batch within the retry budget."""


def _rejection_reason(error: dict[str, Any]) -> str:
    reason = str(error.get("reason", ""))
    # Elasticsearch appends "Preview of field's value: '...'" - personal data must not travel into logs.
    reason = reason.split("Preview of field's value")[0].strip().rstrip(".")
    return f"{error.get('type', 'error')}: {reason[:200]}"


class ElasticsearchBulkWriter:
    def __init__(self, es: Elasticsearch, cfg: ElasticsearchSettings, index: str | None = None) -> None:
        # This writer owns retries (per document, bounded, with backoff): switch off the client's own.
        self.es = es.options(max_retries=0, retry_on_status=())
        self.cfg = cfg
        self.index = index or cfg.write_alias

    def _bulk(self, posts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per post: the worse of its two documents' results."""
        operations: list[str] = []
        for post in posts:
            doc = analyst_document(post)
            operations.append(json.dumps({"update": {"_index": self.index, "_id": post["id"]}}))
            operations.append(json.dumps({"doc": doc, "upsert": {**doc, "agent": NEW_POST_AGENT_FIELDS}},
                                         ensure_ascii=False))
            operations.append(json.dumps({"update": {"_index": self.cfg.private_index, "_id": post["id"]}}))
            operations.append(json.dumps({"doc": private_document(post), "doc_as_upsert": True}, ensure_ascii=False))
        response = self.es.bulk(operations="\n".join(operations) + "\n")
        results = [next(iter(item.values())) for item in response["items"]]
        return [max(pair, key=lambda r: r["status"]) for pair in zip(results[::2], results[1::2])]

    def write(self, posts: Sequence[dict[str, Any]]) -> list[Rejection]:
        """Index posts; return the rejected ones. Raises IndexUnavailable when retries run out."""
        pending, rejected = list(posts), []
        delays = backoff_delays(self.cfg.max_retries, self.cfg.retry_backoff_s)
        while pending:
            try:
                results = self._bulk(pending)
            except (TransportConnectionError, ConnectionTimeout, ApiError) as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(exc, ApiError) and status not in _RETRYABLE_STATUS:
                    raise IndexUnavailable(f"bulk request refused: HTTP {status} {exc.error}") from exc
                cause = f"HTTP {status}" if status else type(exc).__name__
            else:
                retry = []
                for post, result in zip(pending, results):
                    if result["status"] in _RETRYABLE_STATUS:
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
            time.sleep(delay)
        return rejected
