"""What the care team is judged by: service-level figures of cases, the overdue-case alert, the case gauges,
the analysts' figures without the brand's own posts, and the demo's conversation.

Hand-built case documents (the shared interface of the cases index) go into the local Elasticsearch;
every expected figure below is worked out by hand in the comments, at NOW = 2026-11-20 12:00 UTC.
Tests that use the services are marked `integration` by conftest (they use the `live` fixture).
"""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

import schemas
from conftest import own_names
from fake_apis import FakeHttpServer
from apps import alerts, query, service_level
from apps.query import QueryFilters
from cli import demo_live
from cli.main import main
from connectors.run import run as run_connectors
from connectors.testing import ListSink
from core.clients import elasticsearch_client
from core.config import Settings
from core.services import free_port
from pipeline.io.elasticsearch import ElasticsearchBulkWriter
from triage import cases as conversation

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def _case(n: int, source: str, queue: str, priority: str, status: str, opened: str, due: Optional[str],
          answered: Optional[str] = None, via: Optional[str] = None, first_post: Optional[str] = None) -> dict[str, Any]:
    """A case document with the interface's fields; times are 2026-11-DDTHH:MM."""
    def at(value: Optional[str]) -> Optional[str]:
        return f"2026-{value}:00.000Z" if value else None
    opened_at, answered_at, reply = at(opened), at(answered), f"{source}:{n}-reply"
    first = at(first_post) or opened_at
    seconds = (datetime.fromisoformat(answered_at[:-1]) - datetime.fromisoformat(opened_at[:-1])).total_seconds() \
        if answered_at else None
    within = None if not (answered_at and due) else answered_at <= at(due)  # type: ignore[operator]
    return {"case_id": f"case:{n:024x}", "source": source, "thread_id": f"{source}:thread-{n}", "grouping": "thread",
            "status": status, "queue": queue, "priority": priority, "priority_reasons": ["rule"],
            "private_channel": False, "suggested_reply": None, "language": "de", "intent": "complaint",
            "sentiment": "negative", "topic": "network", "first_post_at": first, "last_post_at": answered_at or opened_at,
            "opened_at": opened_at, "due_at": at(due), "last_customer_post_id": f"{source}:{n}",
            "last_customer_post_at": opened_at,
            "posts": [{"id": f"{source}:{n}", "role": "customer", "at": opened_at, "priority": priority}] + (
                [{"id": reply, "role": "brand", "at": answered_at, "priority": None, "by": "@TelcoHilfe"}]
                if answered_at else []),
            "product_reply_ids": [reply] if via == "product" else [], "customer_posts": 1,
            "brand_posts": 1 if answered_at else 0, "answered_at": answered_at,
            "first_response_seconds": seconds, "within_sla": within, "answered_by": "@TelcoHilfe" if via else None,
            "answered_via": via, "reopened": 0, "agent": {"assignee": None, "claimed_at": None},
            "updated_at": answered_at or opened_at}


CASES = [
    # answered within SLA on the channel after 30 min
    _case(1, "twitter", "billing", "P2", "answered", "11-20T08:00", "11-20T10:00", "11-20T08:30", "channel"),
    # answered from the product after 60 min, 30 min late
    _case(2, "twitter", "billing", "P1", "answered", "11-20T09:00", "11-20T09:30", "11-20T10:00", "product"),
    # open P1, due 11:00: overdue
    _case(3, "twitter", "billing", "P1", "new", "11-20T10:00", "11-20T11:00"),
    # answered after 30 h, late
    _case(4, "mastodon", "technical", "P3", "answered", "11-18T12:00", "11-18T20:00", "11-19T18:00", "channel"),
    # claimed P1, due tomorrow (not overdue) but waiting 30 h: unanswered after 24 h
    _case(5, "mastodon", "technical", "P1", "claimed", "11-19T06:00", "11-21T06:00"),
    # open, 1 h old, due 15:00: undecided for both rates
    _case(6, "mastodon", "technical", "P2", "new", "11-20T11:00", "11-20T15:00"),
    # closed without an answer (spam): a case, in no rate
    _case(7, "twitter", "social", "P4", "closed", "11-19T15:00", "11-20T15:00"),
    # answered by the helpdesk after 20 min, in time
    _case(8, "twitter", "technical", "P2", "answered", "11-19T10:00", "11-19T11:00", "11-19T10:20", "helpdesk"),
    # answered on the channel after 10 min, no due time (no SLA for it)
    _case(9, "facebook", "social", "P4", "waiting", "11-20T07:00", None, "11-20T07:10", "channel"),
    # re-opened P1: asked 04:00, first answer 05:00 (in time), asked again 11:30, due 11:45: open and overdue again
    {**_case(10, "mastodon", "billing", "P1", "new", "11-20T11:30", "11-20T11:45", first_post="11-20T04:00"),
     "answered_at": "2026-11-20T05:00:00.000Z", "first_response_seconds": 3600.0, "within_sla": True,
     "answered_by": "@TelcoHilfe", "answered_via": "channel", "reopened": 1, "customer_posts": 2, "brand_posts": 1,
     "posts": [{"id": "mastodon:10-first", "role": "customer", "at": "2026-11-20T04:00:00.000Z", "priority": "P2"},
               {"id": "mastodon:10-reply", "role": "brand", "at": "2026-11-20T05:00:00.000Z", "priority": None,
                "by": "@TelcoHilfe"},
               {"id": "mastodon:10", "role": "customer", "at": "2026-11-20T11:30:00.000Z", "priority": "P1"}]},
    # brand posts only (a reply read before what it answers): no customer case, in no figure
    {**_case(11, "twitter", "billing", "P1", "closed", "11-20T09:00", None), "customer_posts": 0, "brand_posts": 1,
     "queue": None, "priority": None, "last_customer_post_id": None, "last_customer_post_at": None, "opened_at": None,
     "posts": [{"id": "twitter:11", "role": "brand", "at": "2026-11-20T09:00:00.000Z", "priority": None, "by": "@TelcoHilfe"}]},
]


def test_the_hand_built_cases_follow_the_case_schema() -> None:
    assert [schemas.first_error("case.v1.schema.json", case) for case in CASES] == [None] * len(CASES)


@pytest.fixture(scope="module")
def cases(live: Settings, run_id: str) -> Iterator[Settings]:
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-sla"}, kafka=False) as settings:
        cfg = settings.elasticsearch
        es = elasticsearch_client(cfg)  # `triage setup` made the cases index and its aliases
        for case in CASES:
            es.index(index=cfg.cases_write_alias, id=case["case_id"], document=case)
        es.indices.refresh(index=cfg.cases_read_alias)
        yield settings
        es.close()


@pytest.fixture(scope="module")
def es(cases: Settings):  # type: ignore[no-untyped-def]  # this module's client (the conftest one is the session's)
    client = elasticsearch_client(cases.elasticsearch)
    yield client
    client.close()


def _figures(es: Any, settings: Settings, **filters: Any) -> dict[str, Any]:
    return service_level.service_level(es, settings.elasticsearch.cases_read_alias, QueryFilters(**filters), NOW)


def test_the_overall_figures_are_the_hand_computed_ones(cases: Settings, es: Any) -> None:
    f = _figures(es, cases)
    # 11 is no customer case; open 3 5 6 10; overdue 3 10; a first response 1 2 4 8 9 10
    assert (f["cases"], f["open"], f["overdue"], f["answered"]) == (10, 4, 2, 6)
    # decided by the due time: unanswered past due 3 + answered with a due time 1, 2, 4, 8, 10; in time: 1, 8, 10
    assert f["unanswered_by_due"] == {"of": 6, "count": 3, "rate": 0.5}
    # decided after 24 h: unanswered for 24 h (5) + answered (1, 2, 4, 8, 9, 10); within 24 h: 1, 2, 8, 9, 10
    assert f["unanswered_24h"] == {"of": 7, "count": 2, "rate": 0.2857}
    # first responses 600, 1200, 1800, 3600, 3600, 108000 s: nearest rank 3 of 6 and 6 of 6
    assert (f["first_response_p50_s"], f["first_response_p90_s"]) == (1800, 108000)
    assert f["within_sla_share"] == 0.6  # 1, 8, 10 of 1, 2, 4, 8, 10 (9 had no due time)
    assert f["answered_via"] == {"channel": 4, "product": 1, "helpdesk": 1}


def test_per_channel_queue_and_day(cases: Settings, es: Any) -> None:
    f = _figures(es, cases)
    twitter = f["by_channel"]["twitter"]  # 1, 2, 3, 7, 8
    assert (twitter["cases"], twitter["open"], twitter["overdue"], twitter["answered"]) == (5, 1, 1, 3)
    assert (twitter["first_response_p50_s"], twitter["first_response_p90_s"]) == (1800, 3600)  # 1200, 1800, 3600
    assert twitter["unanswered_by_due"] == {"of": 4, "count": 2, "rate": 0.5}  # 3 + 1, 2, 8; in time 1, 8
    assert twitter["answered_via"] == {"channel": 1, "product": 1, "helpdesk": 1}
    mastodon = f["by_channel"]["mastodon"]  # 4, 5, 6, 10
    assert (mastodon["open"], mastodon["overdue"], mastodon["answered"]) == (3, 1, 2)
    assert (mastodon["first_response_p50_s"], mastodon["first_response_p90_s"]) == (3600, 108000)
    assert mastodon["unanswered_24h"] == {"of": 3, "count": 2, "rate": 0.6667}  # 5 waited a day, 4 took 30 h, 10 1 h
    assert f["by_channel"]["facebook"]["within_sla_share"] is None  # answered, but never had a due time
    billing = f["by_queue"]["billing"]  # 1, 2, 3, 10
    assert (billing["cases"], billing["open"], billing["overdue"], billing["answered"]) == (4, 2, 2, 3)
    assert billing["unanswered_by_due"] == {"of": 4, "count": 2, "rate": 0.5}  # 3 + 1, 2, 10; in time 1, 10
    assert billing["within_sla_share"] == 0.6667
    day = f["by_day"]["2026-11-19"]  # first posts that day: 5, 7, 8
    assert (day["cases"], day["open"], day["answered"], day["first_response_p50_s"]) == (3, 1, 1, 1200)
    assert set(f["by_day"]) == {"2026-11-18", "2026-11-19", "2026-11-20"}


def test_filters_narrow_the_cases(cases: Settings, es: Any) -> None:
    assert _figures(es, cases, queue=["billing"])["cases"] == 4
    assert _figures(es, cases, source=["twitter"], priority=["P1"])["cases"] == 2
    assert _figures(es, cases, since="2026-11-20")["cases"] == 6  # first posts on the 20th: 1, 2, 3, 6, 9, 10
    with pytest.raises(ValueError, match="no text"):
        _figures(es, cases, text="kündigung")


def test_triage_query_sla_prints_a_table_and_json(cases: Settings, capsys: pytest.CaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRIAGE_ES_INDEX_PREFIX", cases.elasticsearch.index_prefix)
        capsys.readouterr()
        assert main(["query", "--sla", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert main(["query", "--sla"]) == 0
        table = capsys.readouterr().out
        assert main(["query", "--sla", "kündigung"]) == 2
    # the figures that do not depend on the current time
    assert (shown["cases"], shown["answered"], shown["first_response_p90_s"]) == (10, 6, 108000)
    assert set(shown["by_channel"]) == {"twitter", "mastodon", "facebook"}
    assert "FRT p50" in table and "by channel:" in table
    assert re.search(r"^\s+all\s+10\s+4\s", table, re.MULTILINE)
    assert re.search(r"^\s+twitter .* 30m\s+1h00m\s", table, re.MULTILINE)  # p50 1800 s, p90 3600 s


def test_the_overdue_p1_alert_fires_once_per_case(cases: Settings, es: Any) -> None:
    with FakeHttpServer({"POST /hooks/care": lambda request: request.respond(200, b"ok")}) as hook:
        from pydantic import SecretStr
        cfg = cases.alerts.model_copy(update={"webhook_url": SecretStr(f"{hook.url}/hooks/care")})
        watch = alerts.Watch(es, cases.elasticsearch.read_alias, cfg, cases.elasticsearch.cases_read_alias, ("P1",))
        first = watch.check(NOW)
        again = watch.check(NOW)
    assert again == [] and len(hook.requests) == 1
    sent = hook.requests[0].json_body()["alerts"]
    # P1 and open past due: 3 (due 11:00) and 10 (due 11:45); 5 is P1 but due tomorrow, 2 is answered
    assert [(a["kind"], a["key"], a["observed"]) for a in sent] == [
        ("overdue_case", "case:" + f"{10:024x}", 15.0), ("overdue_case", "case:" + f"{3:024x}", 60.0)]
    assert [a.message() for a in first][1] == (f"Overdue P1 case case:{3:024x} in queue 'billing': due "
                                               "2026-11-20T11:00:00.000Z, 1h00m ago (1 customer post(s) in the case)")


def test_the_gauges_show_open_and_overdue_cases_per_queue(cases: Settings, es: Any) -> None:
    registry = CollectorRegistry()
    registry.register(service_level.CaseGauges(es, cases.elasticsearch.cases_read_alias))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:  # what a Prometheus scrape gets
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            scraped = answer.read().decode()
    finally:
        server.shutdown()
        thread.join(5)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
               if line.startswith("triage_cases")}
    # open: billing 3 and 10, technical 5 and 6; all four are overdue at the real current time (after every due time)
    assert samples == {"triage_cases_up": 1.0,
                       'triage_cases_open{queue="billing"}': 2.0, 'triage_cases_open{queue="social"}': 0.0,
                       'triage_cases_open{queue="technical"}': 2.0, 'triage_cases_overdue{queue="billing"}': 2.0,
                       'triage_cases_overdue{queue="social"}': 0.0, 'triage_cases_overdue{queue="technical"}': 2.0}
    unreadable = CollectorRegistry()
    unreadable.register(service_level.CaseGauges(es, f"{cases.elasticsearch.index_prefix}-missing"))
    assert b"triage_cases_up 0.0" in generate_latest(unreadable)


def test_brand_posts_are_never_in_the_customer_figures(cases: Settings, es: Any) -> None:
    def post(n: int, brand: bool) -> dict[str, Any]:
        return {"id": f"twitter:{n}", "source": "twitter", "text": "x", "text_redacted": "Danke für die Geduld",
                "created_at": "2026-11-20T10:00:00Z", "author": {"id": f"u{n}", "is_brand": brand},
                "sentiment": {"label": "positive" if brand else "negative", "score": 0.9}}
    assert ElasticsearchBulkWriter(es, cases.elasticsearch).write([post(1, False), post(2, False), post(3, True)]) == []
    index = cases.elasticsearch.read_alias
    es.indices.refresh(index=index)
    summary = query.summarize(es, index, QueryFilters())
    assert (summary["total"], summary["sentiment"]) == (2, {"negative": 2})
    from apps import analytics
    assert analytics.over_time(es, index, QueryFilters(), "sentiment") == {"2026-11-20": {"negative": 2}}
    listed = query.search(es, index, QueryFilters(), size=10)
    assert listed["total"] == 3 and "brand" in query.format_posts(listed)  # a search still shows the reply, marked


def _read(settings: Settings, sources: str, sink: ListSink, count: int) -> None:
    """Run the sources until `count` posts were delivered in all (at most 10 s)."""
    stop = threading.Event()
    reader = threading.Thread(target=run_connectors, args=(settings, sources), kwargs={"stop": stop, "sink": sink})
    reader.start()
    deadline = time.monotonic() + 10
    while len(sink.posts) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    reader.join(5)


def test_the_demo_channel_gives_one_case_answered_on_the_channel(settings: Settings, tmp_path: Path) -> None:
    """The demo's fake Mastodon, read by the real connector with the demo's brand account: the customer's post and
    the brand's reply form one case, answered via the channel, with the reply's delay as first-response time."""
    channel = demo_live.FakeMastodon()
    sources, sink = tmp_path / "sources.yaml", ListSink()
    sources.write_text(json.dumps({"checkpoint_db": str(tmp_path / "checkpoints.sqlite"), "sources": [
        {"type": "mastodon", "name": "demo-mastodon", "url": channel.url, "hashtags": [demo_live.TAG], "every_s": 0.1,
         "brand_accounts": [f"@{demo_live.BRAND}"]}]}))
    try:
        question = channel.publish(demo_live.CUSTOMER, demo_live.QUESTION)
        _read(settings, str(sources), sink, 1)
        time.sleep(0.05)  # the reply comes later than the question
        channel.publish(demo_live.BRAND_ACCOUNT, demo_live.ANSWER, reply_to=question["id"])
        _read(settings, str(sources), sink, 2)
    finally:
        channel.close()
    asked, answer = sink.posts
    assert (asked["author"].get("is_brand"), answer["author"]["is_brand"]) == (None, True)
    assert answer["thread_id"] == asked["thread_id"] == f"mastodon:{urlsplit(channel.url).netloc}:{question['id']}"
    case = conversation.merge(conversation.merge(None, asked), answer)
    assert (case["status"], case["answered_via"], case["answered_by"]) == ("answered", "channel", demo_live.BRAND)
    delay = (conversation.instant(answer["created_at"]) - conversation.instant(asked["created_at"])).total_seconds()
    assert case["first_response_seconds"] == pytest.approx(delay) and delay > 0
