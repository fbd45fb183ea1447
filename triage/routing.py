"""Routing rules: which queue answers a post, how urgently (P1-P4), by when, and why.

Rules live in a YAML file (triage/rules/telecom-de.yaml is the shipped default) so that a care
team changes routing without touching code. The file is validated once when loaded; every error
names the YAML line. Evaluation is a pure function of the enriched post and the rules: the time a
rule sees is the post's own `created_at`, never the wall clock, so batch reprocessing and the
stream route a post identically.

Semantics, in the order a rule is applied:
- `when`: every condition given must hold; a list condition holds when any of its values matches.
- `then.queue`: the first firing rule that names a queue decides it (order rules by importance).
- `then.priority`: the most urgent priority of all firing rules wins; `raise_priority` then moves it
  up by that many steps (never above P1).
- `then.private_channel`, and the `private_channel` section, move the conversation private.
- `then.stop`: later rules are not evaluated.
- A post the model is unsure of (`needs_review`, models/calibration.py) is never put in a queue nobody answers
  (`no_sla`, e.g. spam): a rule that would do so is skipped, stop included, and the reasons say so;
  `when.needs_review` routes such posts explicitly.

The brand's own posts (`author.is_brand`, set by the connectors) are never routed: they answer customers,
nobody has to answer them, so `route` gives them no queue, priority or deadline, only the mark
`{"brand": true}` (triage/cases.py counts them as answers).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, time as clock, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import schemas
from core.labels import INTENT_LABELS, SENTIMENT_LABELS
from core.yaml_config import ConfigFileError, parse_yaml, validate
from core.timestamps import utc_iso

log = logging.getLogger(__name__)
PII_TYPES = schemas.load_json(schemas.ENRICHED_POST_SCHEMA)["$defs"]["pii_type"]["enum"]
BUILTIN_DIR = Path(__file__).resolve().parent / "rules"
PRIORITIES = ("P1", "P2", "P3", "P4")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
Priority = Literal["P1", "P2", "P3", "P4"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class RulesError(ConfigFileError):
    """The rules file is invalid; the message names the file, the line and the problem."""

    what = "rules file"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusinessHours(_Strict):
    days: list[Weekday] = Field(min_length=1)
    start: clock
    end: clock
    holidays: list[date] = []

    @model_validator(mode="after")
    def _start_before_end(self) -> "BusinessHours":
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Queue(_Strict):
    description: str = ""
    hours: Literal["business", "around_the_clock"] = "business"
    sla_minutes: Optional[dict[Priority, int]] = None  # overrides the global SLA for this queue
    no_sla: bool = False  # e.g. spam: nobody has to answer


class Conditions(_Strict):
    intent: Optional[list[str]] = None
    min_intent_score: Optional[float] = Field(default=None, ge=0, le=1)
    sentiment: Optional[list[str]] = None
    min_sentiment_score: Optional[float] = Field(default=None, ge=0, le=1)
    topic: Optional[list[Optional[str]]] = None
    relevance: Optional[list[str]] = None
    language: Optional[list[str]] = None
    source: Optional[list[str]] = None
    pii: Optional[bool] = None
    pii_types: Optional[list[str]] = None
    min_followers: Optional[int] = Field(default=None, ge=0)
    keywords: Optional[list[str]] = None  # case-insensitive substrings of the text ("kündig" finds "Kündigung")
    hours: Optional[str] = None  # local time of the post, "HH:MM-HH:MM", may wrap midnight
    days: Optional[list[Weekday]] = None
    needs_review: Optional[bool] = None  # the model's intent or sentiment is uncertain (calibrated score)

    @field_validator("intent", "sentiment", "pii_types")
    @classmethod
    def _known_labels(cls, value: Optional[list[str]], info: Any) -> Optional[list[str]]:
        known = {"intent": INTENT_LABELS, "sentiment": SENTIMENT_LABELS, "pii_types": PII_TYPES}[info.field_name]
        unknown = [v for v in value or [] if v not in known]
        if unknown:
            raise ValueError(f"unknown {info.field_name} {', '.join(unknown)}; known: {', '.join(known)}")
        return value

    @field_validator("hours")
    @classmethod
    def _hours_format(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _HOURS.match(value):
            raise ValueError("hours must look like '22:00-06:00'")
        return value


class Action(_Strict):
    queue: Optional[str] = None
    priority: Optional[Priority] = None
    raise_priority: int = Field(default=0, ge=0, le=3)
    private_channel: bool = False
    reason: Optional[str] = None
    stop: bool = False


class Rule(_Strict):
    name: str = Field(min_length=1)
    when: Conditions
    then: Action


class PrivateChannel(_Strict):
    when_pii_found: bool = True
    intents: list[str] = []
    topics: list[str] = []
    replies: dict[str, str] = Field(min_length=1)  # language code -> first public reply; 'en' is the fallback

    @field_validator("replies")
    @classmethod
    def _has_fallback(cls, value: dict[str, str]) -> dict[str, str]:
        if "en" not in value:
            raise ValueError("replies needs an 'en' entry, used for languages without their own reply")
        return value


class Defaults(_Strict):
    queue: str
    priority: Priority


class Rules(_Strict):
    version: str = Field(min_length=1)
    timezone: str
    business_hours: BusinessHours
    sla_minutes: dict[Priority, int]
    queues: dict[str, Queue] = Field(min_length=1)
    default: Defaults
    private_channel: PrivateChannel
    rules: list[Rule]

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("sla_minutes")
    @classmethod
    def _every_priority(cls, value: dict[str, int]) -> dict[str, int]:
        missing = [p for p in PRIORITIES if p not in value]
        if missing:
            raise ValueError(f"sla_minutes needs every priority; missing {', '.join(missing)}")
        return value

    def undefined_queues(self) -> list[tuple[tuple[Any, ...], str]]:
        """(location, problem) for every queue named but not defined under `queues`."""
        named = [(("default", "queue"), self.default.queue)] + [
            (("rules", i, "then", "queue"), rule.then.queue) for i, rule in enumerate(self.rules) if rule.then.queue]
        return [(loc, f"queue {queue!r} is not defined under queues ({', '.join(self.queues)})")
                for loc, queue in named if queue not in self.queues]


# ---- loading ---------------------------------------------------------------------------------------

def resolve_rules_file(name: str) -> Path:
    """'builtin:telecom-de' names a file shipped in triage/rules/; anything else is a path."""
    return schemas.shipped_or_path(name, BUILTIN_DIR, "rules file", RulesError)


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Validate rules text; raises RulesError naming `source`, the line and every problem."""
    document = parse_yaml(text, source, RulesError)
    rules = validate(Rules, document.data, document.locations(), RulesError)
    undefined = rules.undefined_queues()
    if undefined:
        raise RulesError([f"{document.where(loc)}: {'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in undefined])
    return rules


def load_rules(name: str) -> Rules:
    path = resolve_rules_file(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    return parse_rules(text, str(path))


class ReloadingRules:
    """The current rules, re-read when the file changes (checked at most every `check_every_s`).

    This is how the streaming job picks up edited rules without a restart. A broken edit is logged
    and ignored: the job keeps routing with the last valid rules rather than stopping.
    """

    def __init__(self, name: str, check_every_s: float) -> None:
        self.path = resolve_rules_file(name)
        self.check_every_s = check_every_s
        self.rules = load_rules(name)
        self._mtime = self.path.stat().st_mtime_ns
        self._checked = time.monotonic()

    def current(self) -> Rules:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    self.rules = load_rules(str(self.path))
                    log.info("routing rules reloaded", extra={"fields": {"version": self.rules.version}})
                except RulesError as exc:
                    log.error("routing rules not reloaded, keeping the previous ones",
                              extra={"fields": {"error": str(exc)}})
        return self.rules


# ---- evaluation ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    queue: str
    priority: str
    due_at: Optional[str]
    reasons: list[str]
    private_channel: bool
    suggested_reply: Optional[str]
    rules_version: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _label(post: dict[str, Any], field: str) -> Optional[str]:
    return (post.get(field) or {}).get("label")


def _in_hours(local: datetime, spec: str) -> bool:
    start_h, start_m, end_h, end_m = (int(g) for g in _HOURS.match(spec).groups())  # type: ignore[union-attr]
    start, end, now = clock(start_h, start_m), clock(end_h, end_m), local.time()
    return start <= now < end if start <= end else (now >= start or now < end)


def matches(when: Conditions, post: dict[str, Any], local: datetime) -> bool:
    """True when every condition of `when` holds for the post (posted at local time `local`)."""
    sentiment = post.get("sentiment") or {}
    intent = post.get("intent") or {}
    pii = post.get("pii") or {}
    followers = (post.get("author") or {}).get("followers")
    checks = [
        when.intent is None or _label(post, "intent") in when.intent,
        when.min_intent_score is None or intent.get("score", 0.0) >= when.min_intent_score,
        when.sentiment is None or sentiment.get("label") in when.sentiment,
        when.min_sentiment_score is None or sentiment.get("score", 0.0) >= when.min_sentiment_score,
        when.topic is None or _label(post, "topic") in when.topic,
        when.relevance is None or _label(post, "relevance") in when.relevance,
        when.language is None or (post.get("language") or {}).get("code") in when.language,
        when.source is None or post.get("source") in when.source,
        when.pii is None or bool(pii.get("found")) == when.pii,
        when.pii_types is None or bool(set(pii.get("types", [])) & set(when.pii_types)),
        when.min_followers is None or (followers is not None and followers >= when.min_followers),
        when.keywords is None or any(k.casefold() in post.get("text", "").casefold() for k in when.keywords),
        when.hours is None or _in_hours(local, when.hours),
        when.days is None or WEEKDAYS[local.weekday()] in when.days,
        when.needs_review is None or bool(post.get("needs_review")) == when.needs_review,
    ]
    return all(checks)


def _business_deadline(start: datetime, minutes: int, hours: BusinessHours) -> datetime:
    """`minutes` of business time after `start` (a local, zone-aware time)."""
    remaining = timedelta(minutes=minutes)
    current = start
    for _ in range(3660):  # at most ten years of days: a guard against calendars with no open day
        day_open = (WEEKDAYS[current.weekday()] in hours.days and current.date() not in hours.holidays)
        opens = current.replace(hour=hours.start.hour, minute=hours.start.minute, second=0, microsecond=0)
        closes = current.replace(hour=hours.end.hour, minute=hours.end.minute, second=0, microsecond=0)
        if day_open and current < closes:
            current = max(current, opens)
            if current + remaining <= closes:
                return current + remaining
            remaining -= closes - current
        current = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    raise RulesError("business_hours has no open day")


def due_at(rules: Rules, queue: str, priority: str, posted: datetime) -> Optional[datetime]:
    """The answer deadline: the queue's (or global) SLA from the post time, in business hours if the queue keeps them."""
    spec = rules.queues[queue]
    if spec.no_sla:
        return None
    minutes = (spec.sla_minutes or {}).get(priority, rules.sla_minutes[priority])  # type: ignore[call-overload]
    local = posted.astimezone(ZoneInfo(rules.timezone))
    if spec.hours == "around_the_clock":
        return local + timedelta(minutes=minutes)
    return _business_deadline(local, minutes, rules.business_hours)


def _posted_at(post: dict[str, Any], now: datetime) -> datetime:
    created = post.get("created_at")
    if created:
        return datetime.fromisoformat(created.replace("Z", "+00:00"))
    return now


def is_brand(post: dict[str, Any]) -> bool:
    """Written by the brand itself or its staff (connectors set `author.is_brand` from sources.yaml and native flags)."""
    return bool((post.get("author") or {}).get("is_brand"))


BRAND_REASON = "the brand's own post: an answer, not routed"
UNANSWERED_QUEUE_SKIPPED = "needs_review posts never go to a queue without an SLA"


def route(rules: Rules, post: dict[str, Any], now: Optional[datetime] = None) -> dict[str, Any]:
    """The post's `triage` field: the decision for a customer's post, only a mark for the brand's own."""
    if is_brand(post):
        return {"brand": True, "reasons": [BRAND_REASON], "rules_version": rules.version}
    return decide(rules, post, now).as_dict()


def decide(rules: Rules, post: dict[str, Any], now: Optional[datetime] = None) -> Decision:
    """Route one enriched post. `now` stands in for a missing created_at (default: the current time)."""
    posted = _posted_at(post, now or datetime.now(timezone.utc))
    local = posted.astimezone(ZoneInfo(rules.timezone))
    queue: Optional[str] = None
    priorities: list[str] = []
    raise_by = 0
    private = False
    reasons: list[str] = []
    for rule in rules.rules:
        if not matches(rule.when, post, local):
            continue
        action = rule.then
        if post.get("needs_review") and action.queue and rules.queues[action.queue].no_sla:
            reasons.append(f"{rule.name}: not applied, the model is unsure ({UNANSWERED_QUEUE_SKIPPED})")
            continue
        reasons.append(action.reason or rule.name)
        queue = queue or action.queue
        if action.priority:
            priorities.append(action.priority)
        raise_by += action.raise_priority
        private = private or action.private_channel
        if action.stop:
            break
    base = min(priorities or [rules.default.priority])
    priority = PRIORITIES[max(0, PRIORITIES.index(base) - raise_by)]
    queue = queue or rules.default.queue
    pii = post.get("pii") or {}
    channel = rules.private_channel
    if channel.when_pii_found and pii.get("found"):
        private = True
        reasons.append("personal data in the post: " + ", ".join(pii.get("types", [])))
    elif _label(post, "intent") in channel.intents or _label(post, "topic") in channel.topics:
        private = True
        reasons.append("needs account data: answer in a private channel")
    language = (post.get("language") or {}).get("code", "en")
    deadline = due_at(rules, queue, priority, posted)
    return Decision(
        queue=queue, priority=priority,
        due_at=utc_iso(deadline) if deadline else None,
        reasons=reasons or ["no rule matched: default queue and priority"], private_channel=private,
        suggested_reply=(channel.replies.get(language) or channel.replies["en"]) if private else None,
        rules_version=rules.version)
