"""`triage alerts` finds spikes against the same hour of previous days and posts them to a webhook."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from conftest import own_names
from fake_apis import FakeHttpServer
from cli.main import main
from core.clients import elasticsearch_client
from core.config import Settings
from pipeline.io.elasticsearch import ElasticsearchBulkWriter

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)


def _post(i: str, at: datetime, topic: str, negative: bool) -> dict:
    return {"id": f"alert:{i}", "source": "twitter", "text": "x", "text_redacted": "x",
            "created_at": at.isoformat(), "topic": {"label": topic, "score": 0.9},
            "sentiment": {"label": "negative" if negative else "neutral", "score": 0.9}}


@pytest.fixture(scope="module")
def alert_settings(live: Settings, run_id: str) -> Iterator[Settings]:
    """Seven quiet days (2 network and 2 billing posts at 10-11 UTC, 6 of 28 negative), then a busy hour."""
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-alerts"}, kafka=False) as settings:
        posts = []
        for day in range(1, 8):
            at = NOW - timedelta(days=day, minutes=30)
            posts += [_post(f"{day}-{topic}-{k}", at, topic, negative=(k == 0 and day % 2 == 0))
                      for topic in ("network", "billing") for k in range(2)]
        posts += [_post(f"now-network-{k}", NOW - timedelta(minutes=20), "network", negative=k < 9) for k in range(12)]
        posts += [_post(f"now-billing-{k}", NOW - timedelta(minutes=20), "billing", negative=False) for k in range(2)]
        es = elasticsearch_client(settings.elasticsearch)
        assert ElasticsearchBulkWriter(es, settings.elasticsearch).write(posts) == []
        es.indices.refresh(index=settings.elasticsearch.read_alias)
        es.close()
        yield settings


@pytest.fixture
def receiver() -> Iterator[tuple[str, FakeHttpServer]]:
    with FakeHttpServer({"POST /hooks/care": lambda request: request.respond(200, b"ok")}) as hook:
        yield f"{hook.url}/hooks/care", hook


def test_the_webhook_gets_one_json_message_and_a_refusal_is_an_error() -> None:
    from apps.alerts import Alert, post_to_webhook
    alert = Alert("topic_volume", "network", "2026-11-20T10:00:00Z", 12, 2.0, 12)
    with FakeHttpServer({"POST /hooks/care": lambda request: request.respond(200, b"ok"),
                         "POST /hooks/gone": lambda request: request.json({"error": "no such hook"}, 404)}) as hook:
        post_to_webhook(f"{hook.url}/hooks/care", [alert])
        with pytest.raises(Exception, match="404"):
            post_to_webhook(f"{hook.url}/hooks/gone", [alert])
    message = hook.requests[0].json_body()
    assert hook.requests[0].headers["Content-Type"] == "application/json"
    assert message["alerts"] == [alert.__dict__] and "Spike in topic 'network'" in message["text"]


@pytest.mark.integration
def test_a_topic_spike_and_a_rise_in_negative_posts_reach_the_webhook(
        alert_settings: Settings, receiver: tuple[str, FakeHttpServer], capsys: pytest.CaptureFixture) -> None:
    url, hook = receiver
    assert main(["alerts", "--webhook", url, "--now", NOW.isoformat()]) == 0
    received = [request.json_body() for request in hook.requests]
    assert len(received) == 1
    message = received[0]
    assert message["text"].startswith("Social care alerts:")
    kinds = {(a["kind"], a["key"]) for a in message["alerts"]}
    assert kinds == {("topic_volume", "network"), ("negative_share", "all")}  # billing is as usual
    volume = next(a for a in message["alerts"] if a["kind"] == "topic_volume")
    assert (volume["observed"], volume["baseline"]) == (12, 2.0)
    negative = next(a for a in message["alerts"] if a["kind"] == "negative_share")
    assert negative["observed"] == pytest.approx(9 / 14) and negative["baseline"] == pytest.approx(6 / 28)
    assert "Spike in topic 'network'" in capsys.readouterr().out


@pytest.mark.integration
def test_a_quiet_hour_sends_nothing(alert_settings: Settings, receiver: tuple[str, FakeHttpServer],
                                    capsys: pytest.CaptureFixture) -> None:
    url, hook = receiver
    assert main(["alerts", "--webhook", url, "--now", (NOW - timedelta(days=1)).isoformat()]) == 0
    assert hook.requests == []
    assert "no spikes" in capsys.readouterr().out


@pytest.mark.integration
def test_the_workspace_hourly_view_finds_the_same_spike_in_one_request(alert_settings: Settings) -> None:
    """The supervisor page marks spikes per hour over two days: one histogram request, and the same verdict as
    `triage alerts` for the busy hour (and none for the quiet hours before it)."""
    from apps.alerts import hourly_spikes
    es = elasticsearch_client(alert_settings.elasticsearch)
    try:
        hours = hourly_spikes(es, alert_settings.elasticsearch.read_alias, alert_settings.alerts,
                              NOW - timedelta(days=2), NOW)
    finally:
        es.close()
    flagged = [(hour, {(a.kind, a.key) for a in found}) for hour, _, found in hours if found]
    busy = (NOW - timedelta(minutes=20)).replace(minute=0, second=0, microsecond=0)
    assert flagged == [(busy, {("topic_volume", "network"), ("negative_share", "all")})]
    assert next(counts for hour, counts, _ in hours if hour == busy)["posts"] == 14
