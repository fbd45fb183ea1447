"""`triage reply CASE_ID`: answer a case on its own channel, at most once, never with personal data in public.

The reply goes to the case's `last_customer_post_id` through the API of the post's source (connectors/replies/),
as a brand account of sources.yaml. Three promises:

* **The private-channel guard.** Every public text runs through the personal-data detector the pipeline uses
  (models/pii.py, configured like pipeline/steps/pii.py); one with personal data is refused, the error names the
  types, never the values. For a case with `private_channel`, the public reply is the rules' invitation in the
  case's language, and the agent's words go as a direct message where the API has them (X, Mastodon, Reddit);
  elsewhere the case is marked `continue_in_private_channel` for the helpdesk.
* **At most once on the channel** (connectors/replies/ledger.py): a key is recorded before the request leaves;
  a retry after a crash or a 5xx looks the reply up in the thread before sending it again.
* **The case learns it was us.** The reply's Post id, exactly as the connector will deliver it, is appended to
  the case's `product_reply_ids` with optimistic concurrency, so when the brand post comes back the case writer
  records the answer as `answered_via: product`. The case is not marked answered here: that is measured from
  the channel itself, whatever tool answered.

Cases are read and updated through `CaseStore` (Elasticsearch in production; tests pass a fake).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from connectors import config as sources_config
from connectors.http import HttpClient
from connectors.replies import choose_source, client_for
from connectors.replies.base import Recipient, ReplyClient, ReplyError, Target
from connectors.replies.ledger import Delivery, ReplyLedger, deliver, idempotency_key
from core.config import ElasticsearchSettings, Settings
from core.timestamps import utc_now
from models.pii import PiiDetector
from triage.routing import Rules, load_rules

_ATTEMPTS = 5
Case = dict[str, Any]


class CaseStore(Protocol):
    """Where cases live: read one, read a post's author (private data), change one with optimistic concurrency."""

    def case(self, case_id: str) -> Optional[Case]: ...

    def author(self, post_id: str) -> Optional[dict[str, Any]]: ...

    def change(self, case_id: str, decide: Callable[[Case], Optional[Case]]) -> None:
        """Apply `decide(case) -> fields to set` (None: nothing to change), re-deciding on a conflict."""


class ElasticsearchCases:
    """Cases in the cases index (read alias), authors in the private posts index; updates guarded by
    `if_seq_no`/`if_primary_term` and retried on 409, so the case writer's changes and ours never overwrite."""

    def __init__(self, es: Any, cfg: ElasticsearchSettings, refresh: Any = "wait_for") -> None:
        """`refresh`: of each update; "wait_for" lets the next search see it (the desk's), False does not wait (the
        handoff reads with get, which is real-time, and would otherwise wait up to a refresh interval per write)."""
        self.es, self.cfg, self.refresh = es, cfg, refresh

    def case(self, case_id: str) -> Optional[Case]:
        from elasticsearch import NotFoundError
        try:
            return self.es.get(index=self.cfg.cases_read_alias, id=case_id)["_source"]
        except NotFoundError:
            return None

    def author(self, post_id: str) -> Optional[dict[str, Any]]:
        from elasticsearch import NotFoundError

        from core.documents import doc_key
        try:
            found = self.es.get(index=self.cfg.private_index, id=doc_key(post_id), source_includes=["author"])
        except NotFoundError:
            return None
        return found["_source"].get("author")

    def change(self, case_id: str, decide: Callable[[Case], Optional[Case]]) -> None:
        from elasticsearch import ConflictError, NotFoundError
        for _ in range(_ATTEMPTS):
            try:
                current = self.es.get(index=self.cfg.cases_read_alias, id=case_id)
            except NotFoundError:
                raise ReplyError(f"case {case_id} disappeared while replying; the reply was sent") from None
            fields = decide(current["_source"])
            if not fields:
                return
            try:
                self.es.update(index=current["_index"], id=case_id, doc=fields, refresh=self.refresh,
                               if_seq_no=current["_seq_no"], if_primary_term=current["_primary_term"])
                return
            except ConflictError:
                continue  # the case writer changed it since we read it: read again, decide again
        raise ReplyError(f"case {case_id} keeps changing under us; the reply was sent, run the command again "
                         "to record it on the case")


@dataclass(frozen=True)
class Plan:
    """What goes out: the public text, the agent's words as a direct message, or a mark for the helpdesk."""
    public_text: str
    direct_text: Optional[str]
    continue_private: bool


@dataclass(frozen=True)
class Outcome:
    case_id: str
    source: str
    account: str
    public: Delivery
    direct: Optional[Delivery]
    continue_private: bool


def plan_reply(case: Case, text: str, rules: Rules, detector: PiiDetector, direct_messages: bool) -> Plan:
    """Apply the private-channel guard; raises ReplyError when the public text carries personal data.

    A private case gets the rules' invitation in public; the agent's own words (when they are not the invitation
    itself) go as a direct message where the API has them. Where no direct message goes out, the case is marked
    to continue privately."""
    if not case.get("private_channel"):
        _guard(detector, text)
        return Plan(text, None, False)
    replies = rules.private_channel.replies
    invitation = replies.get(str(case.get("language") or "")) or replies["en"]
    _guard(detector, invitation)
    words = text if text.strip() != invitation.strip() else None
    if words and direct_messages:
        return Plan(invitation, words, False)
    return Plan(invitation, None, True)


def _guard(detector: PiiDetector, public_text: str) -> None:
    found = sorted({span.type for span in detector.detect(public_text).spans})
    if found:
        raise ReplyError(f"refused: the reply contains personal data ({', '.join(found)}) and would be public. "
                         "Remove it, or answer in a private channel")


def reply(settings: Settings, cases: CaseStore, sources: sources_config.ConnectConfig, case_id: str,
          text: Optional[str], as_account: Optional[str] = None, source_name: Optional[str] = None,
          confirm: Callable[[str, str], bool] = lambda text, language: True,
          sleep: Callable[[float], None] = time.sleep, detector: Optional[PiiDetector] = None) -> Outcome:
    """Answer a case (see the module docstring). `text` None: the case's suggested reply, if `confirm` accepts it."""
    case = cases.case(case_id)
    if case is None:
        raise ReplyError(f"no case with id {case_id} in {settings.elasticsearch.cases_read_alias}")
    target_post = case.get("last_customer_post_id")
    if not target_post:
        raise ReplyError(f"case {case_id} has no customer post to answer")
    if text is None:
        text = case.get("suggested_reply")
        if not text:
            raise ReplyError(f"case {case_id} has no suggested reply; give the reply with --text")
        if not confirm(text, str(case.get("language") or "und")):
            raise ReplyError("not sent")
    if not text.strip():
        raise ReplyError("the reply text is empty")
    source = choose_source(sources, str(case.get("source")), target_post, source_name)
    client = client_for(source, HttpClient(sources.user_agent, sleep=sleep), as_account, sleep)
    detector = detector or PiiDetector(settings.pii.phone_regions, settings.pii.person_names_model)
    plan = plan_reply(case, text, load_rules(settings.routing.rules_file), detector, client.direct_messages)
    target = Target(target_post, case.get("thread_id"))
    recipient = _recipient(cases, target_post) if plan.direct_text else None  # before anything is published
    ledger = ReplyLedger(settings.replies.ledger_db)
    try:
        public = _once(ledger, client, case_id, target, plan.public_text, None, sleep)
        _record(cases, case_id, public, plan.continue_private)
        direct = _once(ledger, client, case_id, target, plan.direct_text, recipient, sleep) if plan.direct_text else None
    finally:
        ledger.close()
    return Outcome(case_id, source.name, client.account, public, direct, plan.continue_private)


def _recipient(cases: CaseStore, post_id: str) -> Recipient:
    author = cases.author(post_id) or {}
    if not author.get("id") and not author.get("handle"):
        raise ReplyError(f"the author of {post_id} is not in the private posts index; cannot write to them privately")
    return Recipient(author.get("id"), author.get("handle"))


def _once(ledger: ReplyLedger, client: ReplyClient, case_id: str, target: Target, text: str,
          recipient: Optional[Recipient], sleep: Callable[[float], None]) -> Delivery:
    """One message, at most once: a public reply, or (with a recipient) a direct message."""
    if recipient is None:
        key = idempotency_key(case_id, target.post_id, text)
        return deliver(ledger, key, lambda: client.reply(target, text, key), lambda: client.find_reply(target, text),
                       sleep=sleep)
    key = idempotency_key(case_id, f"dm:{target.post_id}", text)
    return deliver(ledger, key, lambda: client.direct(target, recipient, text, key),
                   lambda: client.find_direct(target, recipient, text), sleep=sleep)


def _record(cases: CaseStore, case_id: str, public: Delivery, continue_private: bool) -> None:
    """Append the reply's Post id to `product_reply_ids` (once), and mark the private hand-over."""
    post_id = public.sent.post_id

    def decide(case: Case) -> Optional[Case]:
        ids = list(case.get("product_reply_ids") or [])
        fields: Case = {}
        if post_id and post_id not in ids:
            fields["product_reply_ids"] = ids + [post_id]
        if continue_private and not case.get("continue_in_private_channel"):
            fields["continue_in_private_channel"] = True
        return {**fields, "updated_at": utc_now()} if fields else None
    cases.change(case_id, decide)


def format_outcome(outcome: Outcome) -> str:
    how = {"sent": "sent", "found in the thread": "already on the channel (an earlier attempt had posted it)",
           "already sent": "already sent before, not posted again"}
    lines = [f"{outcome.case_id}: reply via {outcome.source} as {outcome.account}: {how[outcome.public.how]}"
             + (f" ({outcome.public.sent.post_id})" if outcome.public.sent.post_id else "")]
    if outcome.direct:
        lines.append(f"  direct message to the customer: {how[outcome.direct.how]}")
    if outcome.continue_private:
        lines.append("  the customer was invited to a private channel; the case is marked continue_in_private_channel "
                     "for the helpdesk (no direct message was sent from here)")
    return "\n".join(lines)
