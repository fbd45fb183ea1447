"""What analysts ask of the posts index: trends and what angers customers.

Shared by `triage query`, the notebooks and the tests, so that every place shows the same numbers.
Everything reads the redacted posts index (read alias): aggregations and `text_redacted` only, of
customers' posts: the brand's own replies (`author.is_brand`) are never in these figures (apps/query.py
`customer_query`). Posts their authors deleted still count (what customers said does not change afterwards).
The service level (answered, overdue, first-response times) is a figure of cases, not posts: apps/service_level.py.
"""
from __future__ import annotations

import re
from collections import Counter

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from apps.query import FACETS, QueryFilters, customer_query

_WORD = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


def over_time(es: Elasticsearch, index: str, filters: QueryFilters, by: str, interval: str = "day") -> dict[str, dict[str, int]]:
    """Posts per interval, split by one facet (source, language, sentiment, intent, topic, queue, ...)."""
    response = es.search(index=index, query=customer_query(filters), size=0, track_total_hits=False, aggs={"t": {
        "date_histogram": {"field": "created_at", "calendar_interval": interval, "min_doc_count": 1},
        "aggs": {"by": {"terms": {"field": FACETS[by], "size": 50}}}}})
    return {bucket["key_as_string"][:10 if interval != "hour" else 13]:
            {b["key"]: b["doc_count"] for b in bucket["by"]["buckets"]}
            for bucket in response["aggregations"]["t"]["buckets"]}


def shares(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """The same table as fractions of each interval's total (e.g. sentiment share per day)."""
    return {k: {label: round(n / sum(row.values()), 4) for label, n in row.items()} for k, row in counts.items()}


def _stop_words() -> set[str]:
    from spacy.lang.de.stop_words import STOP_WORDS as GERMAN
    from spacy.lang.en.stop_words import STOP_WORDS as ENGLISH
    return {w.casefold() for w in GERMAN | ENGLISH}


def top_terms(es: Elasticsearch, index: str, filters: QueryFilters, size: int = 20, sample: int = 5000) -> list[tuple[str, int]]:
    """The most frequent words of matching posts (default: negative ones), without stop words or placeholders.

    Counted in Python over up to `sample` redacted texts: Elasticsearch's significant_terms needs
    field data on text fields, which is expensive, and not every compatible server has it.
    """
    stop, counts = _stop_words(), Counter()
    hits = scan(es, index=index, query={"query": customer_query(filters), "_source": ["text_redacted"]}, size=500)
    for i, hit in enumerate(hits):
        if i >= sample:
            break
        text = _PLACEHOLDER.sub(" ", hit["_source"].get("text_redacted", ""))
        words = {w.casefold() for w in _WORD.findall(text)}  # once per post: how many posts mention it
        counts.update(w for w in words if w not in stop and not w.startswith(("http", "www")))
    return counts.most_common(size)
