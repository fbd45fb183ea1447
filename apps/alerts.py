"""`triage alerts`: spot spikes and overdue urgent cases, and tell the team in Slack or Teams.

Two signals, each compared with the same hour of the previous days (social traffic has a strong
daily rhythm, so "more than usual at this hour" is the honest baseline), counted over customers'
posts only (the brand's own replies are not traffic):
- volume of a topic in the last hour against its mean in the baseline hours;
- share of negative posts in the last hour against the baseline share.
And, with `--overdue P1`, open cases of those priorities past their due time (the cases index): the
ones a team lead must hear about before the customer escalates. Each case is sent once per due time
(a re-opened case that goes overdue again is news again), by one `Watch` that remembers what it sent.
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

from apps.query import BRAND_POSTS
from apps.service_level import OPEN, duration_text
from core.config import AlertSettings
from core.terminal import printable
from core.timestamps import utc_iso

log = logging.getLogger(__name__)
MAX_OVERDUE = 100  # cases per check, most recently overdue first: a backlog is one message, not a flood


@dataclass(frozen=True)
class Alert:
    kind: str  # topic_volume | negative_share | overdue_case
    key: str  # the topic, 'all', or the case id
    hour: str  # start of the hour looked at, UTC; for a case its due time
    observed: float  # for a case: minutes past due
    baseline: float
    posts: int  # for a case: its customer posts
    queue: Optional[str] = None  # cases only
    priority: Optional[str] = None  # cases only

    def message(self) -> str:
        """For people (the terminal, the chat message): names from the data are shown through printable()."""
        if self.kind == "overdue_case":
            return (f"Overdue {printable(self.priority)} case {printable(self.key)} in queue '{printable(self.queue)}': "
                    f"due {self.hour}, {duration_text(self.observed * 60)} ago ({self.posts} customer post(s) in the case)")
        if self.kind == "topic_volume":
            return (f"Spike in topic '{printable(self.key)}': {int(self.observed)} posts in the hour from {self.hour} "
                    f"(usually {self.baseline:.1f} at this hour)")
        return (f"Negative posts up: {self.observed:.0%} of {self.posts} posts in the hour from {self.hour} "
                f"(usually {self.baseline:.0%})")


def _window(end: datetime) -> dict[str, Any]:
    return {"range": {"created_at": {"gte": utc_iso(end - timedelta(hours=1)), "lt": utc_iso(end)}}}


Counts = dict[str, Any]  # one hour's customer posts: {"posts": n, "negative": n, "topics": {topic: n}}


def _counts(bucket: dict[str, Any]) -> Counts:
    return {"posts": bucket["doc_count"], "negative": bucket["negative"]["doc_count"],
            "topics": {t["key"]: t["doc_count"] for t in bucket["topic"]["buckets"]}}


_HOUR_AGGS = {"topic": {"terms": {"field": "topic.label", "size": 100}},
              "negative": {"filter": {"term": {"sentiment.label": "negative"}}}}


def spikes(current: Counts, past: list[Counts], hour: str, cfg: AlertSettings) -> list[Alert]:
    """The alerts for one hour's counts against the same hour of the previous days (`past`, one per day)."""
    alerts = []
    for topic, count in current["topics"].items():
        usual = sum(day["topics"].get(topic, 0) for day in past) / len(past) if past else 0.0
        if count >= cfg.min_posts and count >= cfg.volume_factor * max(usual, 1.0):
            alerts.append(Alert("topic_volume", topic, hour, count, usual, count))
    posts, past_posts = current["posts"], sum(day["posts"] for day in past)
    if posts >= cfg.min_posts and past_posts:
        share = current["negative"] / posts
        usual_share = sum(day["negative"] for day in past) / past_posts
        if share - usual_share >= cfg.negative_share_rise:
            alerts.append(Alert("negative_share", "all", hour, share, usual_share, posts))
    return alerts


def detect(es: Elasticsearch, index: str, cfg: AlertSettings, now: Optional[datetime] = None) -> list[Alert]:
    """Alerts for the hour before `now` (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    windows = {"current": _window(now)}
    windows.update({f"day-{d}": _window(now - timedelta(days=d)) for d in range(1, cfg.baseline_days + 1)})
    # Only the windows' posts are read (the filters aggregation alone would visit every post of the index).
    in_windows = {"bool": {"should": list(windows.values()), "minimum_should_match": 1}}
    response = es.search(index=index, size=0, track_total_hits=False,
                         query={"bool": {"filter": [in_windows], "must_not": [BRAND_POSTS]}},
                         aggs={"w": {"filters": {"filters": windows}, "aggs": _HOUR_AGGS}})
    buckets = response["aggregations"]["w"]["buckets"]
    past = [_counts(buckets[k]) for k in windows if k != "current"]
    return spikes(_counts(buckets["current"]), past, (now - timedelta(hours=1)).isoformat(timespec="minutes"), cfg)


def hourly_spikes(es: Elasticsearch, index: str, cfg: AlertSettings, start: datetime,
                  end: datetime) -> list[tuple[datetime, Counts, list[Alert]]]:
    """Each hour with customer posts from `start` to `end`: its counts and the spikes `detect` finds in it, from
    ONE request (an hourly histogram reaching `baseline_days` further back), not one request per hour."""
    start = start.replace(minute=0, second=0, microsecond=0)
    response = es.search(index=index, size=0, track_total_hits=False,
                         query={"bool": {"filter": [{"range": {"created_at": {
                             "gte": utc_iso(start - timedelta(days=cfg.baseline_days)), "lt": utc_iso(end)}}}],
                             "must_not": [BRAND_POSTS]}},
                         aggs={"h": {"date_histogram": {"field": "created_at", "fixed_interval": "1h",
                                                        "min_doc_count": 1}, "aggs": _HOUR_AGGS}})
    by_hour = {datetime.fromtimestamp(b["key"] / 1000, timezone.utc): _counts(b)
               for b in response["aggregations"]["h"]["buckets"]}
    empty: Counts = {"posts": 0, "negative": 0, "topics": {}}
    hours = []
    for hour, counts in sorted(by_hour.items()):
        if hour >= start:
            past = [by_hour.get(hour - timedelta(days=d), empty) for d in range(1, cfg.baseline_days + 1)]
            hours.append((hour, counts, spikes(counts, past, hour.isoformat(timespec="minutes"), cfg)))
    return hours


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


def overdue_cases(es: Elasticsearch, cases_index: str, priorities: list[str],
                  now: Optional[datetime] = None) -> list[Alert]:
    """Open cases of these priorities past their due time, the most recently overdue first."""
    now = now or datetime.now(timezone.utc)
    response = es.search(index=cases_index, size=MAX_OVERDUE, sort=[{"due_at": {"order": "desc"}}],
                         source=["case_id", "queue", "priority", "due_at", "customer_posts"],
                         query={"bool": {"filter": [OPEN, {"terms": {"priority": priorities}},
                                                    {"range": {"due_at": {"lt": utc_iso(now)}}}]}})
    alerts = []
    for hit in response["hits"]["hits"]:
        case = hit["_source"]
        due = datetime.fromisoformat(case["due_at"].replace("Z", "+00:00"))
        alerts.append(Alert("overdue_case", case.get("case_id") or hit["_id"], case["due_at"],
                            round((now - due).total_seconds() / 60, 1), 0.0, int(case.get("customer_posts") or 0),
                            queue=case.get("queue"), priority=case.get("priority")))
    return alerts


class Watch:
    """One alerting process: checks, prints and sends what is new, and remembers it, so a spike is sent once per
    hour and an overdue case once per due time however often the check runs."""

    def __init__(self, es: Elasticsearch, index: str, cfg: AlertSettings, cases_index: Optional[str] = None,
                 overdue: tuple[str, ...] = ()) -> None:
        if overdue and not cases_index:
            raise ValueError("alerting on overdue cases needs the cases index")
        self.es, self.index, self.cfg, self.cases_index, self.overdue = es, index, cfg, cases_index or "", list(overdue)
        self.sent: set[tuple[str, str, str]] = set()

    def check(self, now: Optional[datetime] = None) -> list[Alert]:
        """The alerts not sent before, as of `now` (default: the current time); posted to the webhook in one message."""
        found = detect(self.es, self.index, self.cfg, now)
        if self.overdue:
            found += overdue_cases(self.es, self.cases_index, self.overdue, now)
        alerts = [a for a in found if (a.kind, a.key, a.hour) not in self.sent]
        for alert in alerts:
            print(alert.message())
        if alerts and self.cfg.webhook_url:
            post_to_webhook(self.cfg.webhook_url.get_secret_value(), alerts)
            log.info("alerts sent", extra={"fields": {"count": len(alerts)}})
        self.sent.update((a.kind, a.key, a.hour) for a in alerts)
        if not alerts:
            print("no spikes" + (f", no new overdue {'/'.join(self.overdue)} cases" if self.overdue else ""))
        return alerts


def run(es: Elasticsearch, index: str, cfg: AlertSettings, every_s: Optional[float] = None,
        now: Optional[datetime] = None, cases_index: Optional[str] = None, overdue: tuple[str, ...] = ()) -> int:
    """Check once (or every `every_s` seconds until interrupted); `overdue`: priorities whose overdue cases alert."""
    watch = Watch(es, index, cfg, cases_index, overdue)
    while True:
        alerts = watch.check(now)
        if every_s is None:
            return len(alerts)
        time.sleep(every_s)
