"""Mastodon replies: `POST /api/v1/statuses` with `in_reply_to_id`, public for the reply and `visibility: direct`
with the customer's @mention for a direct message, with the account's user token. Mastodon honours an
`Idempotency-Key` header (for an hour), so the ledger's key travels with every post. A published reply is found
again among the target's descendants (`/api/v1/statuses/:id/context`), written by our account with our words.
"""
from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote, urlsplit

from connectors.config import MastodonConfig
from connectors.replies.base import Recipient, ReplyClient, ReplyError, Sent, Target, handle_of, same_text


class MastodonReplies(ReplyClient):
    kind = "mastodon"
    direct_messages = True
    config: MastodonConfig

    @property
    def host(self) -> str:
        return urlsplit(self.config.url).netloc

    def reply(self, target: Target, text: str, key: str) -> Sent:
        return self._status(target, text, "public", key, "mastodon reply")

    def direct(self, target: Target, recipient: Recipient, text: str, key: str) -> Sent:
        if not recipient.handle:
            raise ReplyError("mastodon direct message: the customer's handle is not known (no private post document)")
        sent = self._status(target, f"@{recipient.handle.lstrip('@')} {text}", "direct", key, "mastodon direct message")
        return Sent(sent.remote_id, None)  # not public: no connector reads it

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        return self._find(target, text, "public")

    def find_direct(self, target: Target, recipient: Recipient, text: str) -> Optional[Sent]:
        found = self._find(target, text, "direct")
        return Sent(found.remote_id, None) if found else None

    def _status(self, target: Target, text: str, visibility: str, key: str, what: str) -> Sent:
        body = {"status": text, "in_reply_to_id": self._native(target), "visibility": visibility}
        status = self.post(f"{self.config.url.rstrip('/')}/api/v1/statuses", what,
                           {**self.bearer(), "Idempotency-Key": key}, body=body)
        if not isinstance(status, dict) or not status.get("id"):
            raise ReplyError(f"{what}: the answer has no status id")
        return Sent(str(status["id"]), f"mastodon:{self.host}:{status['id']}")

    def _find(self, target: Target, text: str, visibility: str) -> Optional[Sent]:
        native = self._native(target)
        context = self.get(f"{self.config.url.rstrip('/')}/api/v1/statuses/{quote(native)}/context",
                           "mastodon reply lookup", self.bearer())
        for status in (context or {}).get("descendants") or []:
            if self._ours(status, native, visibility) and same_text(str(status.get("content") or ""), text, markup=True):
                return Sent(str(status["id"]), f"mastodon:{self.host}:{status['id']}")
        return None

    def _ours(self, status: Any, native: str, visibility: str) -> bool:
        account = (status.get("account") or {}) if isinstance(status, dict) else {}
        return (bool(status.get("id")) and str(status.get("in_reply_to_id")) == native
                and status.get("visibility", visibility) == visibility
                and handle_of(str(account.get("acct") or "")) == handle_of(self.account))

    def _native(self, target: Target) -> str:
        host, _, status_id = target.native(self.kind).rpartition(":")
        if host != self.host or not status_id:
            raise ReplyError(f"post {target.post_id} is not on {self.host}, the server of this mastodon source")
        return status_id
