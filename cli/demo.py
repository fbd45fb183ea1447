"""`triage demo`: everything a newcomer needs to see the product work, on local services, re-runnable."""
from __future__ import annotations

from pathlib import Path

from apps import query
from cli import report
from core import services
from pipeline.batch import BatchJob, run as run_batch
from core.clients import elasticsearch_client
from core.config import Settings
from core.provision import setup_all
from core.redact import redact_url


def run(settings: Settings, samples: str, start_services: bool = True) -> int:
    if start_services:
        print("\n".join(services.up(settings.services)))
    print("\n".join(setup_all(settings)))
    dead_letters = Path(settings.services.data_dir) / "demo" / "dead-letters.jsonl"
    dead_letters.parent.mkdir(parents=True, exist_ok=True)
    summary = run_batch(settings, BatchJob(inputs=[samples], output="es", dead_letters=str(dead_letters)))
    print("\n" + report.format_batch_summary(summary))
    es = elasticsearch_client(settings.elasticsearch)
    try:
        es.indices.refresh(index=settings.elasticsearch.read_alias)
        indexed = query.summarize(es, settings.elasticsearch.read_alias, query.QueryFilters())
    finally:
        es.close()
    print(f"\nThe index '{settings.elasticsearch.read_alias}' at {redact_url(settings.elasticsearch.url)} now holds "
          f"{indexed['total']} posts ({indexed['pii_found']} with personal data).")
    print("""
Try:
  .venv/bin/triage query kündigung --language de        full text, German stemming, redacted text
  .venv/bin/triage query --pii --source twitter          posts with personal data from one source
  .venv/bin/triage query --summary                       counts by source, language, PII type and day
  .venv/bin/triage query --sla                           service level of the cases: open, overdue, unanswered,
                                                         first-response p50/p90, within SLA, per queue/channel/day
  curl -s 'localhost:%d/%s/_search?q=internet&size=1'   the index itself
Stop the local services with `make services-down` (data is kept for the next run).""" % (
        settings.services.es_port, settings.elasticsearch.read_alias))
    return 0
