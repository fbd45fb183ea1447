"""What flows into the pipeline (raw bytes with their origin) and what falls out of it (dead letters).

Every source, file, Kafka or Elasticsearch, hands the pipeline RawRecords, so parsing, validation
and the dead-letter policy exist once. A dead letter keeps the original bytes untouched: whoever
fixes the cause can replay exactly what arrived.

The raw topic carries two kinds of record, both keyed by the post id: posts, and deletion records
(`"kind": "deletion"`, schemas/deletion.v1.schema.json) by which a source says a post it delivered was
deleted or removed. A deletion parses to a Deletion, which is never enriched: it only marks the post's
documents (core/documents.py).
"""
from __future__ import annotations

import base64
import json
from typing import Any, NamedTuple, Optional

import schemas
from core import safe_json
from core.timestamps import utc_now


class RawRecord(NamedTuple):
    payload: bytes
    origin: str  # where it came from: "file:PATH", "kafka:TOPIC/PARTITION/OFFSET", "es:INDEX/ID"
    produced_ms: Optional[int] = None  # when it was written to Kafka, for end-to-end latency
    # > 0: workers stopped this many times while processing it (pipeline/io/kafka_stream.py); not processed again
    failed_attempts: int = 0


# The fields of the Post schema: what a source delivers and what reprocessing reads back.
POST_FIELDS = tuple(schemas.load_json(schemas.POST_SCHEMA)["$defs"]["post"]["properties"])

# Keys starting with this travel with a post inside the pipeline but are never written out.
INTERNAL_PREFIX = "_"


def public(post: dict[str, Any]) -> dict[str, Any]:
    """The post without pipeline-internal keys: what sinks write."""
    return {k: v for k, v in post.items() if not k.startswith(INTERNAL_PREFIX)}


class DeadLetter(NamedTuple):
    reason_code: str  # short and stable, for counting: invalid_json, schema_violation, index_rejected, ...
    reason: str  # one readable line; never contains field values
    origin: str
    payload: bytes
    failed_at: str

    def to_json(self) -> str:
        return json.dumps({
            "reason_code": self.reason_code, "reason": self.reason, "origin": self.origin,
            "failed_at": self.failed_at, "payload_base64": base64.b64encode(self.payload).decode("ascii"),
        })

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        return [("triage.reason_code", self.reason_code.encode()), ("triage.reason", self.reason.encode()),
                ("triage.origin", self.origin.encode()), ("triage.failed_at", self.failed_at.encode())]


class Deletion(NamedTuple):
    """A post withdrawn at its source: the pipeline marks its documents deleted and drops its raw text."""
    post_id: str
    source: str
    deleted_at: str  # when the source says it was deleted, else when the pipeline read the record

    def payload(self) -> bytes:
        """The deletion record it stands for (schemas/deletion.v1.schema.json), e.g. for a dead letter."""
        return json.dumps({"schema_version": 1, "kind": "deletion", "id": self.post_id, "source": self.source,
                           "deleted_at": self.deleted_at}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dead_letter(reason_code: str, reason: str, record: RawRecord) -> DeadLetter:
    return DeadLetter(reason_code, reason, record.origin, record.payload, utc_now())


def post_payload(post: dict[str, Any]) -> bytes:
    """The bytes a post is carried as: compact UTF-8 JSON of its public fields."""
    return json.dumps(public(post), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_post(record: RawRecord, max_record_bytes: int,
               max_text_chars: int) -> dict[str, Any] | Deletion | DeadLetter:
    """Decode and validate one raw record as a Post or a Deletion, or say exactly why it is neither."""
    if record.failed_attempts >= 1:  # a poison pill: processing it again would stop another worker
        return dead_letter("poison_record",
                           f"a worker stopped {record.failed_attempts} times while processing this record", record)
    size = len(record.payload)
    if size > max_record_bytes:
        return dead_letter("oversized_record", f"record is {size} bytes, limit is {max_record_bytes}", record)
    try:
        text = record.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead_letter("invalid_utf8", f"not UTF-8: byte {exc.start} cannot be decoded", record)
    try:
        post = safe_json.loads(text)
    except safe_json.JsonTooDeep as exc:
        return dead_letter("nested_too_deep", str(exc), record)
    except safe_json.JsonInputError as exc:
        return dead_letter("invalid_json", str(exc), record)
    if not isinstance(post, dict):
        return dead_letter("not_an_object", f"expected a JSON object, got {type(post).__name__}", record)
    if post.get("kind") == "deletion":
        return _deletion(post, record)
    if isinstance(post.get("text"), str) and not post["text"].strip():
        return dead_letter("empty_text", "text is empty or only whitespace", record)
    error: Optional[str] = schemas.first_error(schemas.POST_SCHEMA, post)
    if error:
        return dead_letter("schema_violation", error, record)
    for name in ("text", "title"):  # every step's cost, PII detection's included, is bounded by this
        if len(post.get(name) or "") > max_text_chars:
            return dead_letter(f"{name}_too_long", f"{name} has {len(post[name])} characters, limit is {max_text_chars}",
                               record)
    if record.produced_ms is not None:
        post["_produced_ms"] = record.produced_ms
    return post


def _deletion(value: dict[str, Any], record: RawRecord) -> Deletion | DeadLetter:
    """A deletion record, validated like a post: a bad one is a dead letter that names the field and rule.

    Without a `deleted_at` from the source, the time the pipeline read it is the best there is; the index
    needs a time to filter and sort by."""
    error: Optional[str] = schemas.first_error(schemas.DELETION_SCHEMA, value)
    if error:
        return dead_letter("schema_violation", error, record)
    return Deletion(value["id"], value["source"], value.get("deleted_at") or utc_now())
