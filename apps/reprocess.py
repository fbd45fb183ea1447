"""`triage reprocess`: re-enrich the whole posts index with today's models and rules, without downtime.

1. Create the next index version (`<prefix>-000002`, ...) from the template.
2. Run the batch pipeline from the current index (raw posts from the private index) into the new one,
   while agents keep working on the current index and the stream keeps writing to it.
3. Swap both aliases in one atomic request: readers and the pipeline move to the new version together.
4. Catch up on what happened in the old index during step 2: posts the stream wrote there are
   re-enriched into the new version, and the agents' fields (status, assignee, answers, corrected
   labels) are copied over unless an agent already changed the post in the new version. Documents
   that cannot be re-enriched (their raw post is gone) are copied unchanged: nothing is lost.

The old index is kept for rollback; the summary says how to delete it. The cases index is not versioned
with the posts: the batch run of step 2 maintains it with the same code as every run (triage/case_writer.py),
and since a post already in its case changes nothing, reprocessing never double-counts a post or moves a case
back; only a post no case had yet (one the stream wrote while the case writer was failing) is added.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from elasticsearch import ConflictError, Elasticsearch
from elasticsearch.helpers import scan

from pipeline.batch import METRICS, BatchJob, Summary
from pipeline.batch import run as run_batch
from core.clients import elasticsearch_client
from core.config import ElasticsearchSettings, Settings
from pipeline.io.sources import pages
from pipeline.steps.registry import StepClass
from core.redact import redact_url

log = logging.getLogger(__name__)
_VERSION = re.compile(r"^(.*-)(\d{6})$")
_PAGE = 500


@dataclass
class ReprocessReport:
    old_index: str
    new_index: str
    enriched: int
    caught_up: int
    agent_fields_copied: int
    copied_unchanged: int
    dead_letters: int
    dead_letters_path: str
    cases_updated: Optional[int] = 0  # None: the runner collects no metrics (the DaskRunner), so not counted


def next_index(current: str) -> str:
    match = _VERSION.match(current)
    if not match:
        raise ValueError(f"index {current} is not versioned like <prefix>-000001; run `triage setup` first")
    return f"{match.group(1)}{int(match.group(2)) + 1:06d}"


def write_index(es: Elasticsearch, cfg: ElasticsearchSettings) -> str:
    """The concrete index behind the write alias."""
    aliases = es.indices.get_alias(name=cfg.write_alias).body
    writers = [name for name, spec in aliases.items() if spec["aliases"][cfg.write_alias].get("is_write_index", True)]
    if len(writers) != 1:
        raise ValueError(f"write alias {cfg.write_alias} points at {sorted(aliases)}; expected one write index")
    return writers[0]


def swap_aliases(es: Elasticsearch, cfg: ElasticsearchSettings, old: str, new: str) -> None:
    """Move the read and the write alias from `old` to `new` in one atomic request."""
    es.indices.update_aliases(actions=[
        {"remove": {"index": old, "alias": cfg.read_alias}},
        {"remove": {"index": old, "alias": cfg.write_alias}},
        {"add": {"index": new, "alias": cfg.read_alias}},
        {"add": {"index": new, "alias": cfg.write_alias, "is_write_index": True}},
    ])


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("updated_at") or "") > (b.get("updated_at") or "")


def carry_over(es: Elasticsearch, old: str, new: str) -> tuple[int, int]:
    """Copy agent fields, and documents missing from `new`, from `old`. Returns (agent fields, documents)."""
    agent_copies = documents = 0
    for page in pages(scan(es, index=old, query={"query": {"match_all": {}}}, size=_PAGE), _PAGE):
        found = {d["_id"]: d for d in es.mget(index=new, ids=[h["_id"] for h in page])["docs"] if d.get("found")}
        for hit in page:
            target = found.get(hit["_id"])
            if target is None:
                es.index(index=new, id=hit["_id"], document=hit["_source"], op_type="create")
                documents += 1
                continue
            old_agent = hit["_source"].get("agent") or {}
            if old_agent.get("updated_at") and _newer(old_agent, target["_source"].get("agent") or {}):
                agent_copies += _copy_agent(es, new, hit["_id"], old_agent, target)
    return agent_copies, documents


def _copy_agent(es: Elasticsearch, index: str, post_id: str, agent: dict[str, Any], target: dict[str, Any]) -> int:
    for _ in range(5):
        try:
            es.update(index=index, id=post_id, doc={"agent": agent},
                      if_seq_no=target["_seq_no"], if_primary_term=target["_primary_term"])
            return 1
        except ConflictError:  # an agent or the stream touched it just now: look again
            target = es.get(index=index, id=post_id)
            if not _newer(agent, target["_source"].get("agent") or {}):
                return 0
    raise RuntimeError(f"could not copy the agent fields of {post_id}")


def reprocess(settings: Settings, workdir: str = ".triage/reprocess", beam_args: Optional[list[str]] = None,
              steps: Optional[list[StepClass]] = None) -> ReprocessReport:
    """`beam_args` choose the runner of the re-enrichment (e.g. the DaskRunner), as for `triage batch`; `steps`
    replace enrichment.steps (`triage bench scale` re-enriches with cheap fakes)."""
    cfg = settings.elasticsearch
    es = elasticsearch_client(cfg)
    try:
        old = write_index(es, cfg)
        new = next_index(old)
        if es.indices.exists(index=new):
            raise ValueError(f"index {new} exists already (an interrupted reprocess?); delete it and run again")
        es.indices.create(index=new)
        started = datetime.now(timezone.utc).isoformat()
        Path(workdir).mkdir(parents=True, exist_ok=True)
        dead_path = str(Path(workdir) / f"{new}.dead-letters.jsonl")
        log.info("reprocessing", extra={"fields": {"from": old, "to": new}})
        full = _enrich(settings, old, new, "*", dead_path, beam_args or [], steps)
        # Searchable before readers move to it: real Elasticsearch shows writes only after a refresh, so a swap
        # onto an unrefreshed index would show readers fewer posts for up to a refresh interval.
        es.indices.refresh(index=new)
        swap_aliases(es, cfg, old, new)
        es.indices.refresh(index=old)
        # Posts the stream wrote into the old index while step 2 ran.
        late = es.count(index=old, query={"range": {"processed_at": {"gte": started}}})["count"]
        catch_up = _enrich(settings, old, new, f'processed_at:>="{started}"',
                           str(Path(workdir) / f"{new}.late.dead-letters.jsonl"), beam_args or [],
                           steps) if late else None
        es.indices.refresh(index=new)
        agent_copies, unchanged = carry_over(es, old, new)
        es.indices.refresh(index=new)
        dead = full.count("dead_letters") + (catch_up.count("dead_letters") if catch_up else 0)
        cases = (full.count("cases_updated") + (catch_up.count("cases_updated") if catch_up else 0)
                 if full.counted_from == METRICS else None)
        return ReprocessReport(old, new, full.count("enriched"), catch_up.count("enriched") if catch_up else 0,
                               agent_copies, unchanged, dead, dead_path, cases)
    finally:
        es.close()


def _enrich(settings: Settings, source: str, target: str, query: str, dead_path: str, beam_args: list[str],
            steps: Optional[list[StepClass]] = None) -> Summary:
    job = BatchJob(inputs=[f"es:{source}"], output=f"es:{target}", dead_letters=dead_path, query=query,
                   beam_args=beam_args, steps=steps)
    return run_batch(settings, job)


def format_report(report: ReprocessReport, cfg: ElasticsearchSettings) -> str:
    lines = [f"Reprocessed {report.old_index} -> {report.new_index}: {report.enriched} posts re-enriched",
             f"  aliases {cfg.read_alias} and {cfg.write_alias} now point at {report.new_index}",
             f"  written to the old index during the run and caught up: {report.caught_up}",
             f"  agents' fields carried over: {report.agent_fields_copied}",
             f"  copied unchanged (raw post missing): {report.copied_unchanged}",
             f"  cases updated: " + ("not counted (this runner collects no metrics)" if report.cases_updated is None
                                     else f"{report.cases_updated} (a post already in its case changes nothing)"),
             f"  dead letters: {report.dead_letters}" + (f" -> {report.dead_letters_path}" if report.dead_letters else ""),
             f"  the old index {report.old_index} is kept for rollback; delete it with "
             f"curl -X DELETE {redact_url(cfg.url)}/{report.old_index}"]
    return "\n".join(lines)
