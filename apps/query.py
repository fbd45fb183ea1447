"""`triage query`: search the posts index and summarise it, for analysts.

Results show `text_redacted`, never the raw text: analysts see what customers said without the
personal data in it. Posts their authors deleted stay in results and counts (past figures do not
change) but are marked "deleted", and their text is gone (core/documents.py).
The brand's own posts (`author.is_brand`, its replies on the channel) are listed by a search, marked
"brand", but never counted: every count and aggregation is of customers' posts (`customer_query`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from elasticsearch import Elasticsearch

from core.terminal import printable

# The redacted text and title with their German and English subfields (schemas/elasticsearch/posts.index-template.json);
# the posts index holds no raw `title` or `text`.
SEARCH_FIELDS = [f"{name}{language}" for name in ("text_redacted", "title_redacted") for language in ("", ".de", ".en")]
FACETS = {"source": "source", "language": "language.code", "sentiment": "sentiment.label",
          "intent": "intent.label", "topic": "topic.label", "pii_type": "pii.types", "queue": "triage.queue",
          "priority": "triage.priority", "status": "agent.status"}
RESULT_FIELDS = ["id", "source", "created_at", "language", "sentiment", "intent", "topic", "pii.types", "title_redacted",
                 "text_redacted", "triage.queue", "triage.priority", "agent.status", "deleted_at", "author.is_brand"]
BRAND_POSTS = {"term": {"author.is_brand": True}}  # the brand's own replies: answers, never customer figures


@dataclass
class QueryFilters:
    text: Optional[str] = None
    source: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    sentiment: list[str] = field(default_factory=list)
    intent: list[str] = field(default_factory=list)
    topic: list[str] = field(default_factory=list)
    pii_type: list[str] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    priority: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    pii: Optional[bool] = None
    since: Optional[str] = None  # anything Elasticsearch date math accepts: 2026-11-01, now-7d
    until: Optional[str] = None


def build_query(filters: QueryFilters, facets: Mapping[str, str] = FACETS, time_field: str = "created_at") -> dict[str, Any]:
    """The filters as an Elasticsearch query; `facets` and `time_field` name the fields of the index asked
    (the posts index by default; apps/service_level.py passes the cases index's)."""
    must: list[dict[str, Any]] = []
    if filters.text:
        must.append({"simple_query_string": {"query": filters.text, "fields": SEARCH_FIELDS,
                                             "default_operator": "and"}})
    clauses = [{"terms": {facets[name]: values}} for name in facets
               if (values := getattr(filters, name))]
    if filters.pii is not None:
        clauses.append({"term": {"pii.found": filters.pii}})
    if filters.since or filters.until:
        bounds = {k: v for k, v in (("gte", filters.since), ("lte", filters.until)) if v}
        clauses.append({"range": {time_field: bounds}})
    return {"bool": {"must": must or [{"match_all": {}}], "filter": clauses}}


def customer_query(filters: QueryFilters) -> dict[str, Any]:
    """`build_query` over customers' posts only: what every count, trend and alert uses. The brand's replies
    are posts in the index (they answer cases), but counting them would inflate volumes and dilute the
    negative share with the team's own friendly words."""
    query = build_query(filters)
    query["bool"]["must_not"] = [BRAND_POSTS]
    return query


def search(es: Elasticsearch, index: str, filters: QueryFilters, size: int = 20) -> dict[str, Any]:
    """Matching posts, newest first, with the total count."""
    response = es.search(index=index, query=build_query(filters), size=size, source=RESULT_FIELDS,
                         sort=[{"created_at": {"order": "desc", "missing": "_last"}}], track_total_hits=True)
    return {"total": response["hits"]["total"]["value"], "posts": [hit["_source"] for hit in response["hits"]["hits"]]}


def summarize(es: Elasticsearch, index: str, filters: QueryFilters, interval: str = "day") -> dict[str, Any]:
    """Counts by facet and a date histogram of the matching customers' posts (brand posts never count)."""
    aggs: dict[str, Any] = {name: {"terms": {"field": path, "size": 20}} for name, path in FACETS.items()}
    aggs["pii_found"] = {"filter": {"term": {"pii.found": True}}}
    aggs["over_time"] = {"date_histogram": {"field": "created_at", "calendar_interval": interval,
                                            "min_doc_count": 1}}
    response = es.search(index=index, query=customer_query(filters), size=0, aggs=aggs, track_total_hits=True)
    result = response["aggregations"]
    return {
        "total": response["hits"]["total"]["value"],
        "pii_found": result["pii_found"]["doc_count"],
        **{name: {b["key"]: b["doc_count"] for b in result[name]["buckets"]} for name in FACETS},
        "over_time": {b["key_as_string"][:10]: b["doc_count"] for b in result["over_time"]["buckets"]},
    }


def format_posts(result: dict[str, Any], width: int = 100) -> str:
    lines = [f"{result['total']} matching posts" + (f", showing {len(result['posts'])}" if result["posts"] else "")]
    for post in result["posts"]:
        labels = [post.get("source", "?"), post.get("language", {}).get("code", "?")]
        labels += [post[k]["label"] for k in ("sentiment", "intent") if k in post]
        if post.get("pii", {}).get("types"):
            labels.append("pii:" + ",".join(post["pii"]["types"]))
        if post.get("deleted_at"):
            labels.append("deleted")
        if (post.get("author") or {}).get("is_brand"):
            labels.append("brand")
        text = " ".join(f"{post.get('title_redacted') or ''} {post.get('text_redacted') or ''}".split())
        # Every cell comes from the post: shown through printable(), so its control characters cannot act.
        lines.append(f"{printable(str(post.get('created_at') or '')[:16]):<16}  "
                     f"{printable(' '.join(map(str, labels))):<40}  {printable(text, limit=width)}")
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['total']} posts, {summary['pii_found']} with personal data"]
    for name in [*FACETS, "over_time"]:
        if summary[name]:
            lines.append(f"\n{name}:")
            lines += [f"  {printable(key):<24} {count:>7}" for key, count in summary[name].items()]
    return "\n".join(lines)
