"""`triage handoff`: every routed case becomes exactly one ticket in each helpdesk of the handoff file, and each
further customer post one follow-up on it.

**How it runs.** The case writer (triage/case_writer.py, in batch, stream and reprocess) announces each case it
wrote on `kafka.topics.case_updates` (`{"case_id", "updated_at"}`, keyed by case id) before the stream commits
its offsets, but only with `handoff.targets_file` set. `triage handoff` consumes that topic with one consumer
group per target (`<handoff.group_id>-<target name>`), one thread per target, so a helpdesk that is down never
holds back another; it scales like `triage stream`: more processes in the groups (`--workers N`, or more
hosts), Kafka spreads the partitions. It is its own process rather than part of the stream so that a slow or
absent helpdesk never slows the enrichment. For every update it reads the case as it is now (the message is only
a trigger) and skips what is no routed customer case (no customer post, or no queue).

**Exactly once.** Where a case's ticket is lives in the case document, `handoff.<target>`: `{state:
creating|created|pending|failed, ticket_id, ticket_url, posts, sending, reason, updated_at}`, written with
optimistic concurrency (apps/reply.py ElasticsearchCases.change; the case writer keeps fields it does not derive).
`state: creating` is recorded before the create request leaves; a case found with an entry but no ticket id (a
crash, or an uncertain answer such as a timeout or a 5xx) is first looked up in the helpdesk by its case id
(`find_ticket`, the external reference) and only created when none is there. Follow-ups work the same way with
`sending: <post id>` and `find_followup`. The offsets are committed after the cases were handled, so a crash
means redelivery, which finds everything recorded and changes nothing. The generic webhook has nothing to look
up: it is at-least-once, and its receiver deduplicates by the delivery id (case id and post id), which is the
same for every retry.

**Failures.** HelpdeskUnavailable (down, 5xx, 429): the case gets `state: pending` with the reason (visible in
`triage handoff --status`), the worker waits (the Retry-After it was given, else backoff from
`handoff.retry_backoff_s` up to `handoff.max_backoff_s`) and tries the same case again, without committing past
it: nothing is lost and nothing skipped; meanwhile it keeps polling with its partitions paused, so it stays in
its group. HelpdeskRejected (another 4xx): `state: failed` with the helpdesk's reason, a dead letter
`handoff_rejected` (target, case id, reason) on the dead-letter topic, and the worker moves on.

**Personal data.** The raw text is read from the private posts index and sent only to the helpdesk's internal
side (apps/handoff_draft.py); nothing of it is written to the case or the posts index, and logs carry ids,
states and counts only.
"""
from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol

from apps.handoff_draft import customer_post_ids, draft, message
from apps.reply import ElasticsearchCases
from connectors.helpdesks.base import HelpdeskClient, HelpdeskRejected, HelpdeskUnavailable, Ticket, first_post
from connectors.helpdesks.config import HandoffConfig, TargetConfig
from connectors.replies.base import ReplyError
from core.config import HandoffSettings, Settings
from core.records import DeadLetter, RawRecord, dead_letter
from core.retry import backoff_delays
from core.timestamps import utc_now
from triage.cases import instant

log = logging.getLogger("triage.handoff")
REASON_CODE = "handoff_rejected"
# How long a helpdesk's lookup by external reference may lag its writes (their search indices, see the clients'
# docstrings): after an uncertain create, "not found" is only believed once the attempt is this old.
SEARCH_LAG_S = {"zammad": 10.0, "freshdesk": 180.0}
STOP = threading.Event()
Case = dict[str, Any]
Entry = dict[str, Any]


class _CreatedMeanwhile(Exception):
    """Another worker (during a rebalance) recorded the ticket between our read and our `creating`."""

    def __init__(self, entry: Entry) -> None:
        super().__init__("created meanwhile")
        self.entry = entry


class _SearchLag(HelpdeskUnavailable):
    """Our own wait for a lagging search index; the entry keeps its time (the create attempt's) and reason."""


class Stopped(Exception):
    """SIGTERM/SIGINT while waiting for a helpdesk: leave without committing the case in hand."""


class HandoffStore(Protocol):
    """The cases (read, change with optimistic concurrency: apps/reply.py CaseStore) and the posts' texts."""

    def case(self, case_id: str) -> Optional[Case]: ...

    def change(self, case_id: str, decide: Callable[[Case], Optional[Case]]) -> None: ...

    def posts(self, post_ids: list[str]) -> dict[str, dict[str, Any]]:
        """post id -> core.documents.joined view (redacted fields, and the raw ones when readable)."""


class ElasticsearchHandoffStore(ElasticsearchCases):
    """Cases in the cases index; posts joined from the analysts' index and the private index (one mget each)."""

    def posts(self, post_ids: list[str]) -> dict[str, dict[str, Any]]:
        from core.documents import doc_key, joined
        if not post_ids:
            return {}
        keys = [doc_key(pid) for pid in post_ids]
        analyst = self.es.mget(index=self.cfg.read_alias, ids=keys)["docs"]
        private = self.es.mget(index=self.cfg.private_index, ids=keys)["docs"]
        return {pid: joined(a.get("_source") or {}, p.get("_source") if p.get("found") else None)
                for pid, a, p in zip(post_ids, analyst, private) if a.get("found") or p.get("found")}


def routed(case: Optional[Case]) -> bool:
    """A case the helpdesk should see: it has customer posts and routing gave it a queue (brand-only cases and
    posts the rules did not route are no tickets)."""
    return bool(case and case.get("customer_posts") and case.get("queue") and customer_post_ids(case))


@dataclass(frozen=True)
class Outcome:
    """What handling one case did in one target: skipped | unchanged | created | found | followups | failed."""
    case_id: str
    result: str
    ticket_id: Optional[str] = None
    added: int = 0


class TargetHandoff:
    """One target: a case id in, its ticket ensured (see the module docstring). `dead_letters` receives the
    dead letters of rejected payloads; `wait(seconds)` is how a worker waits for an unavailable helpdesk."""

    def __init__(self, target: TargetConfig, client: HelpdeskClient, store: HandoffStore,
                 dead_letters: Callable[[DeadLetter], None], settings: HandoffSettings,
                 wait: Callable[[float], None] = time.sleep) -> None:
        self.target, self.client, self.store = target, client, store
        self.dead_letters, self.settings, self.wait = dead_letters, settings, wait

    def hand_off_patiently(self, case_id: str, origin: bytes = b"") -> Outcome:
        """`hand_off`, waiting through HelpdeskUnavailable until it succeeds (or STOP: raises Stopped)."""
        delays = self._delays()
        while True:
            try:
                return self.hand_off(case_id, origin)
            except HelpdeskUnavailable as exc:
                delay = next(delays, self.settings.max_backoff_s)
                if exc.retry_after_s is not None:
                    delay = min(max(exc.retry_after_s, 0.0), self.settings.max_backoff_s)
                log.warning("helpdesk unavailable, waiting", extra={"fields": {
                    "target": self.target.name, "case_id": case_id, "reason": str(exc), "wait_s": round(delay, 2)}})
                if STOP.is_set():
                    raise Stopped() from None
                self.wait(delay)
                if STOP.is_set():
                    raise Stopped() from None

    def _delays(self) -> Iterator[float]:
        return backoff_delays(32, self.settings.retry_backoff_s, self.settings.max_backoff_s)

    def hand_off(self, case_id: str, origin: bytes = b"") -> Outcome:
        """One try. Raises HelpdeskUnavailable after recording `pending`; a rejection is recorded, dead-lettered
        and returned as `failed`."""
        case = self.store.case(case_id)
        if not routed(case):
            return Outcome(case_id, "skipped")
        assert case is not None
        entry = self._entry(case)
        if entry.get("state") == "failed":
            return Outcome(case_id, "failed", entry.get("ticket_id"))
        try:
            ticket, result = self._ticket(case, entry)
            if result != "unchanged":  # _ticket recorded posts/sending: read them back (a known ticket wrote none)
                entry = self._entry(self.store.case(case_id) or case)
            added = self._followups(case, ticket, entry)
        except HelpdeskRejected as exc:
            self._reject(case_id, exc, origin)
            return Outcome(case_id, "failed")
        except HelpdeskUnavailable as exc:
            if not isinstance(exc, _SearchLag):
                self._set(case_id, state="pending", reason=f"helpdesk unavailable: {exc}")
            raise
        if added and result == "unchanged":
            result = "followups"
        return Outcome(case_id, result, ticket.id, added)

    def _entry(self, case: Case) -> Entry:
        return dict(((case.get("handoff") or {}).get(self.target.name)) or {})

    def _ticket(self, case: Case, entry: Entry) -> tuple[Ticket, str]:
        """The case's ticket: known, found after an interrupted create, or created now (recorded first)."""
        if entry.get("ticket_id"):
            if entry.get("state") != "created":  # pending after a follow-up failed: the ticket is fine
                self._set(case["case_id"], state="created", reason=None)
            return Ticket(str(entry["ticket_id"]), entry.get("ticket_url")), "unchanged"
        first = customer_post_ids(case)[0]
        ticket_draft = draft(case, self.store.posts([first]), self.target)
        if entry:  # creating (or pending) before: the request may have reached the helpdesk
            found = self.client.find_ticket(case["case_id"])
            if found is not None:
                # A ticket whose first post has an internal note (the raw text) may have been cut off between
                # the ticket and its note: the first post is then looked up like a follow-up being sent.
                noted = first_post(ticket_draft)[1] is not None
                self._set(case["case_id"], state="created", ticket_id=found.id, ticket_url=found.url,
                          posts=[] if noted else [first], sending=first if noted else None, reason=None)
                log.info("ticket found after an interrupted create", extra={"fields": {
                    "target": self.target.name, "case_id": case["case_id"], "ticket_id": found.id}})
                return found, "found"
            lag = SEARCH_LAG_S.get(self.client.kind, 0.0) - _age_s(entry.get("updated_at"))
            if lag > 0:
                raise _SearchLag(f"an earlier create may not be searchable in {self.client.kind} yet; "
                                 f"looking again in {lag:.0f} s before creating", retry_after_s=lag)
        try:
            self._set(case["case_id"], state="creating", ticket_id=None, ticket_url=None, posts=[], sending=None,
                      reason=None)
        except _CreatedMeanwhile as meanwhile:
            return Ticket(str(meanwhile.entry["ticket_id"]), meanwhile.entry.get("ticket_url")), "found"
        ticket = self.client.create_ticket(ticket_draft)
        self._set(case["case_id"], state="created", ticket_id=ticket.id, ticket_url=ticket.url, posts=[first],
                  sending=None, reason=None)
        log.info("ticket created", extra={"fields": {"target": self.target.name, "case_id": case["case_id"],
                                                     "ticket_id": ticket.id, "private": ticket_draft.private_channel}})
        return ticket, "created"

    def _followups(self, case: Case, ticket: Ticket, entry: Entry) -> int:
        """Each customer post not on the ticket yet, once, in time order; returns how many were added."""
        done = list(entry.get("posts") or [])
        todo = [pid for pid in customer_post_ids(case) if pid not in done]
        views = self.store.posts(todo) if todo else {}
        added = 0
        for post_id in todo:
            found = self.client.find_followup(ticket, post_id) if entry.get("sending") == post_id else None
            if found is None:
                self._set(case["case_id"], sending=post_id)
                self.client.add_followup(ticket, message(post_id, views.get(post_id)), self.target.raw_text)
                added += 1
            done.append(post_id)
            self._set(case["case_id"], posts=list(done), sending=None)
            entry = {**entry, "sending": None}
        if added:
            log.info("follow-ups added", extra={"fields": {"target": self.target.name, "case_id": case["case_id"],
                                                           "ticket_id": ticket.id, "added": added}})
        return added

    def _reject(self, case_id: str, exc: HelpdeskRejected, origin: bytes) -> None:
        reason = f"HTTP {exc.status}: {exc.reason}"
        self._set(case_id, state="failed", reason=reason, sending=None)
        payload = origin or json.dumps({"case_id": case_id}).encode("utf-8")
        self.dead_letters(dead_letter(REASON_CODE, f"target {self.target.name}: case {case_id}: {reason}",
                                      RawRecord(payload, f"handoff:{self.target.name}/{case_id}")))
        log.warning("helpdesk refused the case", extra={"fields": {"target": self.target.name, "case_id": case_id,
                                                                   "status": exc.status}})

    def _set(self, case_id: str, **changes: Any) -> None:
        """Record `changes` in `handoff.<target>` of the case (optimistic concurrency, re-decided on a conflict)."""
        name = self.target.name

        def decide(case: Case) -> Optional[Case]:
            before = self._entry(case)
            if changes.get("state") == "creating" and before.get("ticket_id"):
                raise _CreatedMeanwhile(before)
            after = {"state": None, "ticket_id": None, "ticket_url": None, "posts": [], "sending": None,
                     "reason": None, **before, **changes}
            if {k: after.get(k) for k in changes} == {k: before.get(k) for k in changes} and before:
                return None  # already so (a redelivery): no write
            return {"handoff": {name: {**after, "updated_at": utc_now()}}}
        try:
            self.store.change(case_id, decide)
        except ReplyError as exc:  # the case kept changing (or vanished): the helpdesk call is not made/recorded
            raise HelpdeskUnavailable(f"the case could not be updated: {exc}") from None


# ---- the consumer: one thread per target, one consumer group per target --------------------------------------

def _consumer(settings: Settings, target: TargetConfig, instance: str) -> Any:
    from kafka import KafkaConsumer

    from core.clients import kafka_options
    cfg = settings.handoff
    return KafkaConsumer(settings.kafka.topics.case_updates, **kafka_options(settings.kafka),
                         group_id=f"{cfg.group_id}-{target.name}", group_instance_id=f"{instance}-{target.name}",
                         enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=cfg.max_poll_records,
                         session_timeout_ms=10_000, heartbeat_interval_ms=3_000)


class _PausedWait:
    """Waits while the consumer stays in its group: partitions paused, polls go on (no records come)."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer

    def __call__(self, delay_s: float) -> None:
        paused = list(self.consumer.assignment())
        self.consumer.pause(*paused)
        try:
            deadline = time.monotonic() + delay_s
            while not STOP.is_set() and time.monotonic() < deadline:
                self.consumer.poll(timeout_ms=int(min(1.0, max(0.0, deadline - time.monotonic())) * 1000))
        finally:
            self.consumer.resume(*paused)


def run_target(settings: Settings, target: TargetConfig, client: HelpdeskClient, store: HandoffStore,
               dead_letters: Callable[[DeadLetter], None], instance: str, once: bool = False) -> int:
    """Consume case updates for one target until STOP (or, with `once`, until the topic is drained)."""
    from kafka import OffsetAndMetadata
    consumer = _consumer(settings, target, instance)
    handoff = TargetHandoff(target, client, store, dead_letters, settings.handoff, _PausedWait(consumer))
    counts: dict[str, int] = {}
    idle_rounds = 0
    try:
        while not STOP.is_set():
            polled = consumer.poll(timeout_ms=settings.handoff.poll_timeout_ms)
            if not polled:
                idle_rounds += 1
                if once and idle_rounds >= 3 and consumer.assignment():
                    break
                continue
            idle_rounds = 0
            done: set[str] = set()
            commits = {}
            for tp, messages in polled.items():
                for record in messages:
                    case_id = _case_id(record.value)
                    if case_id and case_id not in done:
                        outcome = handoff.hand_off_patiently(case_id, record.value)
                        counts[outcome.result] = counts.get(outcome.result, 0) + 1
                        done.add(case_id)
                    commits[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
            consumer.commit(commits)
            log.info("case updates handled", extra={"fields": {"target": target.name, "cases": len(done),
                                                               **counts}})
    except Stopped:
        log.info("stopped while waiting for the helpdesk; the case in hand is handled after the restart",
                 extra={"fields": {"target": target.name}})
    finally:
        consumer.close()
    return 0


def _age_s(at: Optional[str]) -> float:
    """Seconds since an RFC 3339 time (infinite when there is none)."""
    if not at:
        return float("inf")
    return time.time() - instant(at).timestamp()


def _case_id(value: Optional[bytes]) -> Optional[str]:
    from core import safe_json
    try:
        update = safe_json.loads((value or b"").decode("utf-8"))
    except (UnicodeDecodeError, safe_json.JsonInputError):
        update = None
    case_id = update.get("case_id") if isinstance(update, dict) else None
    if not isinstance(case_id, str) or not case_id.startswith("case:"):
        log.warning("case update without a case id skipped", extra={"fields": {"bytes": len(value or b"")}})
        return None
    return case_id


def _stop(signum: int, _frame: Any) -> None:
    if not STOP.is_set():
        log.info("stopping: finishing the case in hand, committing, exiting", extra={"fields": {"signal": signum}})
    STOP.set()


def run_worker(settings: Settings, config: HandoffConfig, instance: str, once: bool = False) -> int:
    """Every target of the file, one thread each, in this process; until SIGTERM/SIGINT (or drained, `once`)."""
    from connectors.helpdesks import client_for
    from connectors.http import HttpClient
    from core.clients import elasticsearch_client
    from core.kafka_writer import KafkaWriter
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    es = elasticsearch_client(settings.elasticsearch)
    writer = KafkaWriter(settings.kafka)
    lock = threading.Lock()

    def dead_letters(letter: DeadLetter) -> None:
        with lock:
            writer.write_dead_letters(settings.kafka.topics.dead_letter, [letter])

    store = ElasticsearchHandoffStore(es, settings.elasticsearch, refresh=False)  # reads are gets: real-time
    codes: dict[str, int] = {}

    def run_one(target: TargetConfig) -> None:
        try:
            # No retries inside the client: waiting is the handoff's, with the consumer paused (it stays in its group).
            client = client_for(target, HttpClient(config.user_agent, max_retries=0))
            codes[target.name] = run_target(settings, target, client, store, dead_letters, instance, once)
        except Exception:
            log.exception("handoff worker failed", extra={"fields": {"target": target.name}})
            codes[target.name] = 1
            STOP.set()  # one target failing stops the process: its supervisor restarts it from committed offsets

    threads = [threading.Thread(target=run_one, args=(t,), name=f"handoff-{t.name}") for t in config.targets]
    log.info("handoff started", extra={"fields": {"targets": [t.name for t in config.targets],
                                                  "instance": instance}})
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    es.close()
    return max(codes.values(), default=0)


def run(settings: Settings, config: HandoffConfig, workers: int, worker_argv: list[str],
        instance_id: Optional[str] = None, once: bool = False) -> int:
    """One worker here, or `workers` supervised processes (each restarted when it dies), like `triage stream`.
    Each worker's static group membership id is `<instance or hostname>-<index>`, so a restarted worker takes
    its partitions back at once."""
    base = instance_id or socket.gethostname()
    if workers == 1:
        return run_worker(settings, config, instance_id or f"{base}-0", once)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "cli.main", *worker_argv, "--workers", "1",
                                 "--instance-id", f"{base}-{i}"])

    procs = {i: spawn(i) for i in range(workers)}
    while not STOP.is_set():
        for i, proc in list(procs.items()):
            if proc.poll() is not None:
                log.warning("handoff worker exited, restarting", extra={"fields": {"worker": i,
                                                                                   "code": proc.returncode}})
                time.sleep(2)
                procs[i] = spawn(i)
        time.sleep(0.5)
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    return max((proc.wait() for proc in procs.values()), default=0)
