"""`triage helpdesk-events`: hear back from the helpdesks cases were handed to (answered, closed, reassigned).

One HTTP receiver, `POST /hooks/<target name>` for each target of handoff.yaml, checks each helpdesk's own
signature or shared secret with the target's `webhook_secret_env`, turns the helpdesk's payload into events and
writes them into the case (triage/cases.py: `record_helpdesk_answer`, `close_from_helpdesk`,
`assign_from_helpdesk`) with optimistic concurrency. What each helpdesk sends, as documented:

* **Zammad** (admin documentation 6.x, "Webhook Payload"): a trigger's webhook POSTs `{"ticket": {...},
  "article": {...}}`, signed when the webhook has an "HMAC SHA1 Signature Token": `X-Hub-Signature:
  sha1=<hex HMAC-SHA1 of the body>`; `X-Zammad-Delivery` is a random id per delivery. No timestamp is signed, so
  there is no time window: a replay is caught by the delivery id and by the case itself (every change below is
  idempotent). An article with `sender: Agent` and `internal: false` is a public answer; `ticket.state`
  `closed` a close; `ticket.owner_id` the assignee (1, Zammad's system user, means nobody).
* **Zendesk** (webhooks, "Verifying webhook authenticity"; ticket event types, zendesk_event_version 2022-11-06):
  `X-Zendesk-Webhook-Signature = base64(HMAC-SHA256(secret, timestamp + body))` with the timestamp (ISO 8601)
  in `X-Zendesk-Webhook-Signature-Timestamp`. A webhook subscribed to ticket events sends `{"type":
  "zen:event-type:ticket.<event>", "id", "time", "detail": {"id", "external_id", ...}, "event": {...}}`:
  `comment_added` with a public comment by staff is an answer, `status_changed` to SOLVED or CLOSED a close,
  `agent_assignment_changed` the assignee. `detail.external_id` is the case id the handoff set.
* **Freshdesk** (automation rules, "Trigger webhook" action): Freshdesk does not sign webhooks. The rule sends
  the shared secret in a custom header, `X-Triage-Secret: <secret>`, and a JSON body built from placeholders:
  `{"event": "agent_reply" | "resolved" | "closed" | "assigned", "ticket_id": "{{ticket.id}}", "case_id":
  "{{ticket.cf_triage_case_id}}" (the target's `case_id_field`), "agent": "{{ticket.agent.email}}"}`.
  Without an event id or a timestamp, an answer's key is the customer post it answers: one helpdesk answer per
  round of the conversation, and a replay while that round lasts changes nothing; a close is taken as happening
  when it arrives, and a body cannot be told from a changed one (keep the endpoint on TLS).
* **Chatwoot** (signed since pull request #13573, February 2026): `X-Chatwoot-Signature: sha256=<hex
  HMAC-SHA256 of "<timestamp>.<body>">`, `X-Chatwoot-Timestamp` (unix seconds), `X-Chatwoot-Delivery` (kept
  across retries), keyed with the webhook's secret. Events: `message_created` of an outgoing, non-private
  message from a user (agent) is an answer; `conversation_status_changed` to `resolved` a close;
  `conversation_updated` whose `changed_attributes` hold `assignee_id` the assignee. The case id is the
  conversation's custom attribute the target names (`case_id_attribute`, default `triage_case_id`). Older
  Chatwoot versions send no signature: upgrade (and see chatwoot issue #13809 on which secret signs).
* **The generic webhook**: our own scheme (connectors/webhook.py): `X-Triage-Timestamp` (unix seconds),
  `X-Triage-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, `X-Triage-Delivery`; the body
  `{"event": "answered" | "closed" | "reassigned", "event_id", "ticket_id", "case_id", "at", "agent"}`.

Signatures are compared in constant time; where a timestamp is signed, one more than `tolerance_s` (300 s) off
is refused, and a delivery id (or the signature) already applied within that window is answered 200 without
touching the case. The case is the payload's external reference (the case id the handoff gave the ticket) or
else the case whose `handoff.<target>.ticket_id` is the ticket.

Answers: 200 `{"changed": true|false}` only after Elasticsearch acknowledged the write (the helpdesk retries
anything else); 401 a missing or wrong signature or secret, or a timestamp out of the window; 400 a body that is
not JSON of the documented shape; 404 an unknown target or a ticket of no case; 413 a body over MAX_BODY_BYTES;
503 when the cases index cannot be written now. Nothing changes on a refusal. Logs name the target, event kinds,
ticket and case ids, never the secret or any text.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Optional, Protocol

from apps.reply import ElasticsearchCases
from connectors.config import secret
from connectors.helpdesks.config import ChatwootTarget, HandoffConfig, TargetConfig
from connectors.webhook import BoundedServer, ReplayCache, signature as triage_signature
from core import safe_json
from core.timestamps import utc_iso, utc_now
from triage.cases import Case, assign_from_helpdesk, close_from_helpdesk, record_helpdesk_answer

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
FRESHDESK_SECRET_HEADER = "X-Triage-Secret"


@dataclass(frozen=True)
class Event:
    """One thing a helpdesk reported of a ticket. `key`: the event's stable id there (None: the answered round)."""
    kind: str  # "answered" | "closed" | "assigned"
    at: str  # RFC 3339
    agent: Optional[str] = None  # answered: who answered; assigned: the new assignee (None: nobody)
    key: Optional[str] = None


@dataclass(frozen=True)
class Report:
    """A payload's events, the ticket they concern and the case id the payload names (its external reference)."""
    ticket_id: str
    case_id: Optional[str]
    events: list[Event]


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class HelpdeskCases(Protocol):
    """The cases index as the receiver and the poller need it (tests pass a fake)."""

    def case(self, case_id: str) -> Optional[Case]: ...

    def change(self, case_id: str, decide: Callable[[Case], Optional[Case]]) -> None: ...

    def case_of_ticket(self, target: str, ticket_id: str) -> Optional[str]: ...

    def handed_off(self, target: str, after: Optional[str], size: int) -> list[Case]: ...


class HelpdeskCasesIndex(ElasticsearchCases):
    """ElasticsearchCases plus the two queries on the handoff mapping (`handoff` is a flattened field)."""

    def case_of_ticket(self, target: str, ticket_id: str) -> Optional[str]:
        hits = self.es.search(index=self.cfg.cases_read_alias, size=1, source=False,
                              query={"term": {f"handoff.{target}.ticket_id": ticket_id}})["hits"]["hits"]
        return hits[0]["_id"] if hits else None

    def handed_off(self, target: str, after: Optional[str], size: int) -> list[Case]:
        """Cases with a ticket in `target` that are not closed, by case id after `after` (a page of `size`)."""
        query = {"bool": {"filter": [{"term": {f"handoff.{target}.state": "created"}}],
                          "must_not": [{"term": {"status": "closed"}}]}}
        found = self.es.search(index=self.cfg.cases_read_alias, size=size, query=query, sort=[{"case_id": "asc"}],
                               **({"search_after": [after]} if after else {}))["hits"]["hits"]
        return [hit["_source"] for hit in found]


# ---- reading the helpdesks' payloads -------------------------------------------------------------------------

def instant_of(value: Any) -> str:
    """A helpdesk's time (ISO 8601 with any fraction and zone, or unix seconds) as RFC 3339 UTC; else Refused."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return utc_iso(datetime.fromtimestamp(value, timezone.utc))
    if isinstance(value, str) and value.strip():
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00").replace(" UTC", "+00:00"))
        try:
            return utc_iso(datetime.fromisoformat(text))
        except ValueError:
            pass
    raise Refused(400, "a time in the payload is not ISO 8601 or unix seconds")


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused(400, f"{name} must be a JSON object")
    return value


def _id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise Refused(400, f"{name} must be a non-empty id")
    return str(value).strip()


def _optional_id(value: Any) -> Optional[str]:
    return str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip() \
        else None


def parse_zammad(payload: dict[str, Any], now: str) -> Report:
    ticket = _object(payload.get("ticket"), "ticket")
    at = instant_of(ticket.get("updated_at") or now)
    events = []
    article = payload.get("article")
    if isinstance(article, dict) and article.get("sender") == "Agent" and article.get("internal") is False:
        key = f"article-{_id(article.get('id'), 'article.id')}"
        events.append(Event("answered", instant_of(article.get("created_at") or at),
                            _optional_id(article.get("created_by_id")), key))
    if ticket.get("state") == "closed":
        events.append(Event("closed", at))
    if "owner_id" in ticket:
        owner = _optional_id(ticket.get("owner_id"))
        events.append(Event("assigned", at, None if owner in (None, "1") else owner))
    return Report(_id(ticket.get("id"), "ticket.id"), None, events)


def parse_zendesk(payload: dict[str, Any], now: str) -> Report:
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise Refused(400, "type must name the Zendesk event")
    detail, event = _object(payload.get("detail"), "detail"), _object(payload.get("event", {}), "event")
    at = instant_of(payload.get("time") or now)
    events = []
    if kind == "zen:event-type:ticket.comment_added":
        comment = _object(event.get("comment"), "event.comment")
        author = _object(comment.get("author", {}), "event.comment.author")
        if comment.get("is_public") is True and author.get("is_staff") is True:
            events.append(Event("answered", at, _optional_id(author.get("id")),
                                f"comment-{_id(comment.get('id'), 'event.comment.id')}"))
    elif kind == "zen:event-type:ticket.status_changed":
        if str(event.get("current", "")).upper() in ("SOLVED", "CLOSED"):
            events.append(Event("closed", at))
    elif kind == "zen:event-type:ticket.agent_assignment_changed":
        events.append(Event("assigned", at, _optional_id(event.get("current"))))
    return Report(_id(detail.get("id"), "detail.id"), _optional_id(detail.get("external_id")), events)


def parse_freshdesk(payload: dict[str, Any], now: str) -> Report:
    kind = payload.get("event")
    if kind not in ("agent_reply", "resolved", "closed", "assigned"):
        raise Refused(400, "event must be agent_reply, resolved, closed or assigned")
    agent = _optional_id(payload.get("agent"))
    event = {"agent_reply": Event("answered", now, agent), "assigned": Event("assigned", now, agent)}.get(
        kind, Event("closed", now))
    return Report(_id(payload.get("ticket_id"), "ticket_id"), _optional_id(payload.get("case_id")), [event])


def parse_chatwoot(payload: dict[str, Any], now: str, case_attribute: str = "triage_case_id") -> Report:
    kind = payload.get("event")
    if not isinstance(kind, str):
        raise Refused(400, "event must name the Chatwoot event")
    if kind == "message_created":
        conversation = _object(payload.get("conversation"), "conversation")
        sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
        outgoing = payload.get("message_type") in ("outgoing", 1)
        events = []
        if outgoing and payload.get("private") is False and sender.get("type") == "user":
            events.append(Event("answered", instant_of(payload.get("created_at") or now),
                                _optional_id(sender.get("id")), f"message-{_id(payload.get('id'), 'id')}"))
    else:
        conversation = payload
        at = instant_of(payload.get("updated_at") or now)
        events = []
        if kind == "conversation_status_changed" and payload.get("status") == "resolved":
            events.append(Event("closed", at))
        changes = payload.get("changed_attributes") if kind == "conversation_updated" else None
        for change in changes if isinstance(changes, list) else []:
            assignee = change.get("assignee_id") if isinstance(change, dict) else None
            if isinstance(assignee, dict):
                events.append(Event("assigned", at, _optional_id(assignee.get("current_value"))))
    attributes = conversation.get("custom_attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    return Report(_id(conversation.get("id"), "conversation id"), _optional_id(attributes.get(case_attribute)), events)


def parse_webhook(payload: dict[str, Any], now: str) -> Report:
    kinds = {"answered": "answered", "closed": "closed", "reassigned": "assigned"}
    kind = kinds.get(str(payload.get("event")))
    if kind is None:
        raise Refused(400, "event must be answered, closed or reassigned")
    key = _id(payload.get("event_id"), "event_id") if kind == "answered" else None
    event = Event(kind, instant_of(payload.get("at") or now), _optional_id(payload.get("agent")), key)
    return Report(_id(payload.get("ticket_id"), "ticket_id"), _optional_id(payload.get("case_id")), [event])


PARSERS: dict[str, Callable[..., Report]] = {
    "zammad": parse_zammad, "zendesk": parse_zendesk, "freshdesk": parse_freshdesk, "chatwoot": parse_chatwoot,
    "webhook": parse_webhook}


# ---- checking who sent it ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verified:
    """A delivery whose signature or secret checked out: its replay key (None: nothing identifies a delivery, the
    case's own idempotence is all there is) and how long to remember it."""
    replay_key: Optional[bytes]
    until: float


def _same(sent: Optional[str], expected: str) -> bool:
    return sent is not None and hmac.compare_digest(sent.strip().encode("utf-8", "surrogatepass"),
                                                    expected.encode("utf-8"))


def _fresh(timestamp: float, now: float, tolerance_s: float) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise Refused(401, f"timestamp outside the {tolerance_s:g} s tolerance window")


def _unix(value: Optional[str], header: str) -> float:
    if value is None or not re.fullmatch(r"[0-9]{1,12}", value.strip()):
        raise Refused(401, f"missing or malformed {header} header (unix seconds expected)")
    return float(value.strip())


def _key(*parts: Optional[str]) -> bytes:
    return hashlib.sha256("\x00".join(p or "" for p in parts).encode("utf-8", "surrogatepass")).digest()


def verify(kind: str, key: str, headers: dict[str, str], body: bytes, now: float, tolerance_s: float) -> Verified:
    """Check the delivery as the helpdesk `kind` signs it (see the module docstring); raises Refused(401)."""
    h = {k.lower(): v for k, v in headers.items()}
    remember = now + 24 * 3600.0  # without a signed time, a delivery id is remembered a day
    if kind == "zammad":
        expected = "sha1=" + hmac.new(key.encode(), body, hashlib.sha1).hexdigest()
        if not _same((h.get("x-hub-signature") or "").lower() or None, expected):
            raise Refused(401, "missing or wrong X-Hub-Signature")
        return Verified(_key(kind, h.get("x-zammad-delivery") or expected), remember)
    if kind == "zendesk":
        stamp = h.get("x-zendesk-webhook-signature-timestamp")
        if not stamp:
            raise Refused(401, "missing X-Zendesk-Webhook-Signature-Timestamp header")
        try:
            sent_at = datetime.fromisoformat(instant_of(stamp).replace("Z", "+00:00")).timestamp()
        except Refused:
            raise Refused(401, "malformed X-Zendesk-Webhook-Signature-Timestamp header") from None
        digest = hmac.new(key.encode(), stamp.encode("utf-8") + body, hashlib.sha256).digest()
        if not _same(h.get("x-zendesk-webhook-signature"), base64.b64encode(digest).decode("ascii")):
            raise Refused(401, "missing or wrong X-Zendesk-Webhook-Signature")
        _fresh(sent_at, now, tolerance_s)
        return Verified(_key(kind, stamp, h.get("x-zendesk-webhook-signature")), sent_at + tolerance_s)
    if kind == "freshdesk":
        if not _same(h.get(FRESHDESK_SECRET_HEADER.lower()), key):
            raise Refused(401, f"missing or wrong {FRESHDESK_SECRET_HEADER} header")
        return Verified(None, 0.0)  # the same body may be a new event (the next round's reply)
    if kind in ("chatwoot", "webhook"):
        prefix = "x-chatwoot-" if kind == "chatwoot" else "x-triage-"
        stamp = h.get(prefix + "timestamp")
        sent_at = _unix(stamp, prefix + "timestamp")
        expected = triage_signature(key, body, str(stamp).strip())
        if not _same((h.get(prefix + "signature") or "").lower() or None, expected):
            raise Refused(401, f"missing or wrong {prefix}signature header")
        _fresh(sent_at, now, tolerance_s)
        return Verified(_key(kind, h.get(prefix + "delivery") or h.get(prefix + "signature")), sent_at + tolerance_s)
    raise Refused(404, f"unknown helpdesk kind {kind}")


# ---- changing the case ---------------------------------------------------------------------------------------

def apply_events(case: Case, target: str, events: list[Event]) -> Case:
    """The case with `events` of helpdesk `target` applied; the same object when none changes anything."""
    for event in events:
        if event.kind == "answered":
            key = event.key or f"reply-after:{case.get('last_customer_post_id')}"
            case = record_helpdesk_answer(case, target, key, event.at, event.agent)
        elif event.kind == "closed":
            case = close_from_helpdesk(case, target, event.at)
        else:
            case = assign_from_helpdesk(case, target, event.agent, event.at)
    return case


def write_events(cases: HelpdeskCases, case_id: str, target: str, events: list[Event]) -> bool:
    """Apply `events` to the stored case with optimistic concurrency; True when the case changed."""
    changed = False

    def decide(case: Case) -> Optional[Case]:
        nonlocal changed
        after = apply_events(case, target, events)
        changed = after is not case
        if not changed:
            return None
        return {**{k: v for k, v in after.items() if case.get(k) != v}, "updated_at": utc_now()}

    cases.change(case_id, decide)
    return changed


class HelpdeskEvents:
    """The receiver's logic, without the HTTP server: `handle(path, headers, body)` -> (status, JSON answer)."""

    def __init__(self, config: HandoffConfig, cases: HelpdeskCases, tolerance_s: float = 300.0,
                 replay_cache_size: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.targets: dict[str, TargetConfig] = {t.name: t for t in config.targets}
        self.cases, self.tolerance_s, self.clock = cases, tolerance_s, clock
        self._replays = ReplayCache(replay_cache_size)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        match = re.fullmatch(r"/hooks/([^/?]+)/?(\?.*)?", path)
        target = self.targets.get(match.group(1)) if match else None
        if target is None:
            return 404, {"error": "no such hook; POST to /hooks/<target name of the handoff file>"}
        fields: dict[str, Any] = {"target": target.name, "kind": target.kind}
        try:
            status, answer = self._handle(target, headers, body, fields)
        except Refused as refused:
            status, answer = refused.status, {"error": refused.reason}
        except Exception as exc:  # the cases index: nothing was written, the helpdesk sends it again
            fields["error"] = type(exc).__name__
            status, answer = 503, {"error": "could not record the event now; retry later"}
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "helpdesk event", extra={"fields": {**fields, "status": status}})
        return status, answer

    def _handle(self, target: TargetConfig, headers: dict[str, str], body: bytes,
                fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
        key = secret(target, "webhook_secret_env")
        if not key:
            raise Refused(404, f"target {target.name} has no webhook_secret_env: it is not heard back by webhooks")
        now = self.clock()
        verified = verify(target.kind, key, headers, body, now, self.tolerance_s)
        if verified.replay_key and self._replays.seen(verified.replay_key):
            fields["replayed"] = True
            return 200, {"changed": False}
        try:
            payload = safe_json.loads(body)
        except safe_json.JsonInputError as exc:
            raise Refused(400, f"body is not JSON we accept: {exc}") from None
        received = utc_iso(datetime.fromtimestamp(now, timezone.utc))
        try:
            extra = {"case_attribute": target.case_id_attribute} if isinstance(target, ChatwootTarget) else {}
            report = PARSERS[target.kind](_object(payload, "the body"), received, **extra)
        except (TypeError, AttributeError, KeyError, ValueError, OverflowError):  # a shape no documentation gives
            raise Refused(400, f"the body is not a {target.kind} payload of the documented shape") from None
        fields.update(ticket_id=report.ticket_id, events=[e.kind for e in report.events])
        case_id = self._case_id(target.name, report)
        fields["case_id"] = case_id
        changed = write_events(self.cases, case_id, target.name, report.events) if report.events else False
        fields["changed"] = changed
        if verified.replay_key:  # a full cache only loses this shortcut: the case's idempotence still holds
            self._replays.claim(verified.replay_key, verified.until, now)
        return 200, {"changed": changed}

    def _case_id(self, target: str, report: Report) -> str:
        if report.case_id and self.cases.case(report.case_id) is not None:
            return report.case_id
        found = self.cases.case_of_ticket(target, report.ticket_id)
        if found is None:
            raise Refused(404, f"ticket {report.ticket_id} of {target} belongs to no case")
        return found


class _Handler(BaseHTTPRequestHandler):
    """One POST per connection: Content-Length required, at most MAX_BODY_BYTES, answered as JSON."""
    server_version, sys_version = "triage-helpdesk-events", ""
    timeout = 10.0
    events: HelpdeskEvents  # set on the subclass the server uses

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.close_connection = True
        length = (self.headers.get("Content-Length") or "").strip()
        if self.headers.get("Transfer-Encoding") is not None or not re.fullmatch(r"[0-9]{1,18}", length):
            return self._answer(411, {"error": "send the body with a Content-Length"})
        if int(length) > MAX_BODY_BYTES:
            return self._answer(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            return self._answer(408, {"error": "request body not received in time"})
        if len(body) < int(length):
            return self._answer(400, {"error": "body shorter than Content-Length"})
        self._answer(*self.events.handle(self.path, {k: str(v) for k, v in self.headers.items()}, body))

    def _not_allowed(self) -> None:
        self._answer(405, {"error": "only POST is supported"})

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class HelpdeskEventsServer:
    """The receiver on HOST:PORT, on a bounded pool of worker threads (connectors/webhook.py's server)."""

    def __init__(self, events: HelpdeskEvents, host: str, port: int, max_workers: int = 8) -> None:
        handler = type("Handler", (_Handler,), {"events": events})
        self.server = BoundedServer((host, port), handler, max_workers, queue_wait_s=0.25)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def __enter__(self) -> "HelpdeskEventsServer":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        log.info("helpdesk receiver listening", extra={"fields": {"port": self.port}})
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(events: HelpdeskEvents, host: str, port: int, stop: threading.Event) -> None:
    """Serve until `stop` is set."""
    with HelpdeskEventsServer(events, host, port):
        stop.wait()
