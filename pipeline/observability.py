"""Prometheus metrics of the streaming job, served on /metrics by each worker.

The job runs Beam's FnApiRunner in-process, so DoFns update these process-wide metrics directly;
Beam's own counters still feed the batch summary.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS_IN = Counter("triage_records_in_total", "Records read from Kafka", ["topic"])
POSTS_INDEXED = Counter("triage_posts_indexed_total", "Enriched posts acknowledged by Elasticsearch")
POSTS_PUBLISHED = Counter("triage_posts_published_total", "Enriched posts written to the enriched topic")
DEAD_LETTERS = Counter("triage_dead_letters_total", "Records sent to the dead-letter topic", ["reason_code"])
CONSUMER_LAG = Gauge("triage_consumer_lag", "Records behind the end of each assigned partition",
                     ["topic", "partition"])
END_TO_END_SECONDS = Histogram(
    "triage_end_to_end_seconds", "From the write to the raw topic to the Elasticsearch acknowledgement",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0))
STEP_POSTS = Counter("triage_step_posts_total", "Posts through each enrichment step", ["step"])
STEP_BATCH_SIZE = Histogram("triage_step_batch_size", "Posts per model call of each enrichment step", ["step"],
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_SIZE = Histogram("triage_index_batch_size", "Posts per Elasticsearch bulk request",
                       buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000))
ASSIGNED_PARTITIONS = Gauge("triage_assigned_partitions", "Partitions this worker holds in its consumer group")
GROUP_LAG = Gauge("triage_group_lag", "Records behind the end of the topic for the whole consumer group", ["topic"])
UNASSIGNED_SECONDS = Gauge("triage_unassigned_seconds",
                           "How long this worker has held no partitions while its group had lag (0 when fine)")
COMMITS = Counter("triage_offset_commits_total", "Offset commits after acknowledged writes", ["result"])
INDEX_RETRIES = Counter("triage_index_retry_rounds_total", "Rounds of waiting for Elasticsearch to come back")


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on host:port (0 disables); loopback unless configured otherwise."""
    if port:
        start_http_server(port, addr=host)
