"""`triage alerts`: spot spikes and tell the team in Slack or Teams.

Two signals, each compared with the same hour of the previous days (social traffic has a strong
daily rhythm, so "more than usual at this hour" is the honest baseline):
- volume of a topic in the last hour against its mean in the baseline hours;
- share of negative posts in the last hour against the baseline share.
A message goes to an incoming-webhook URL as `{"text": ...}`, which Slack and Teams both accept.
"""
from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from elasticsearch import Elasticsearch

from core.config import AlertSettings
from core.terminal import printable
from core.timestamps import utc_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    kind: str  # topic_volume | negative_share
    key: str  # the topic, or 'all'
    hour: str  # start of the hour looked at, UTC
    observed: float
    baseline: float
    posts: int

    def message(self) -> str:
        """For people (the terminal, the chat message): the topic name is shown through printable()."""
        if self.kind == "topic_volume":
            return (f"Spike in topic '{printable(self.key)}': {int(self.observed)} posts in the hour from {self.hour} "
                    f"(usually {self.baseline:.1f} at this hour)")
        return (f"Negative posts up: {self.observed:.0%} of {self.posts} posts in the hour from {self.hour} "
                f"(usually {self.baseline:.0%})")


def _window(end: datetime) -> dict[str, Any]:
    return {"range": {"created_at": {"gte": utc_iso(end - timedelta(hours=1)), "lt": utc_iso(end)}}}


def detect(es: Elasticsearch, index: str, cfg: AlertSettings, now: Optional[datetime] = None) -> list[Alert]:
    """Alerts for the hour before `now` (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    windows = {"current": _window(now)}
    windows.update({f"day-{d}": _window(now - timedelta(days=d)) for d in range(1, cfg.baseline_days + 1)})
    response = es.search(index=index, size=0, aggs={"w": {"filters": {"filters": windows}, "aggs": {
        "topic": {"terms": {"field": "topic.label", "size": 100}},
        "negative": {"filter": {"term": {"sentiment.label": "negative"}}}}}})
    buckets = response["aggregations"]["w"]["buckets"]
    current, past = buckets["current"], [buckets[k] for k in windows if k != "current"]
    hour = (now - timedelta(hours=1)).isoformat(timespec="minutes")
    alerts = []
    for topic in current["topic"]["buckets"]:
        usual = sum(next((t["doc_count"] for t in day["topic"]["buckets"] if t["key"] == topic["key"]), 0)
                    for day in past) / len(past)
        if topic["doc_count"] >= cfg.min_posts and topic["doc_count"] >= cfg.volume_factor * max(usual, 1.0):
            alerts.append(Alert("topic_volume", topic["key"], hour, topic["doc_count"], usual, topic["doc_count"]))
    posts = current["doc_count"]
    past_posts = sum(day["doc_count"] for day in past)
    if posts >= cfg.min_posts and past_posts:
        share = current["negative"]["doc_count"] / posts
        usual_share = sum(day["negative"]["doc_count"] for day in past) / past_posts
        if share - usual_share >= cfg.negative_share_rise:
            alerts.append(Alert("negative_share", "all", hour, share, usual_share, posts))
    return alerts


def post_to_webhook(url: str, alerts: list[Alert], timeout_s: float = 10.0) -> None:
    """One message with every alert; raises on a non-2xx answer so the caller knows it was not delivered."""
    text = "\n".join(f"• {a.message()}" for a in alerts)
    body = json.dumps({"text": f"Social care alerts:\n{text}", "alerts": [a.__dict__ for a in alerts]}).encode()
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the URL is configured)
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")
    except (ValueError, http.client.InvalidURL):  # urllib quotes a malformed URL, and the URL is the secret
        raise ValueError("the alerts webhook URL is not a valid http(s) URL") from None


def run(es: Elasticsearch, index: str, cfg: AlertSettings, every_s: Optional[float] = None,
        now: Optional[datetime] = None) -> int:
    """Check once (or every `every_s` seconds until interrupted); each alert is sent once per hour."""
    sent: set[tuple[str, str, str]] = set()
    while True:
        alerts = [a for a in detect(es, index, cfg, now) if (a.kind, a.key, a.hour) not in sent]
        for alert in alerts:
            print(alert.message())
        if alerts and cfg.webhook_url:
            post_to_webhook(cfg.webhook_url.get_secret_value(), alerts)
            log.info("alerts sent", extra={"fields": {"count": len(alerts)}})
        sent.update((a.kind, a.key, a.hour) for a in alerts)
        if not alerts:
            print("no spikes")
        if every_s is None:
            return len(alerts)
        time.sleep(every_s)
