"""What every reply client shares: the target of a reply, the errors, and one POST that is never repeated blindly.

Reading an API is safe to retry; publishing is not. A POST answered with 5xx, or not answered at all, may have
been published (the gateway timed out after the backend wrote it), so a client never re-sends it on its own: it
raises `Uncertain`, and the caller (connectors/replies/ledger.py::deliver) first looks the reply up in the thread.
A 429 is different: the API refused the request, nothing was published, so it is waited out (Retry-After or the
rate-limit reset, as the connectors do: connectors/http.py) and sent again. Every other 4xx is a `ReplyError`
that says what the API answered, and on 401/403 which token to renew; nothing was published.
"""
from __future__ import annotations

import html
import json
import logging
import re
import time
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional

import urllib3

from connectors.http import MAX_WAIT_S, HttpClient, Response, SourceUnavailable, api_message, json_body, \
    rate_limit_wait_s, retry_after_s
from connectors.text import html_to_text
from core.retry import backoff_delays

log = logging.getLogger(__name__)
RATE_LIMIT_ATTEMPTS = 4  # a 429 is waited out this many times before the reply gives up (nothing was published)


class ReplyError(RuntimeError):
    """The reply was not published; the message says why in the agent's words (never a token, never the text)."""


class CannotReply(ReplyError):
    """The source has no API to answer through (a feed, a webhook, a file replay, review stores)."""


class Uncertain(RuntimeError):
    """The API may have published the reply (5xx, or no answer): look it up before sending it again."""


@dataclass(frozen=True)
class Recipient:
    """Whom a direct message goes to: the customer's native account id and handle (from the private index)."""
    id: Optional[str]
    handle: Optional[str]


@dataclass(frozen=True)
class Target:
    """The post a reply answers and its thread, as Post ids ('<source>:<native id>')."""
    post_id: str
    thread_id: Optional[str] = None

    def native(self, kind: str) -> str:
        return native_id(self.post_id, kind)

    def thread_native(self, kind: str) -> Optional[str]:
        """The thread's native id, when the case is a thread of this source (not an author's posts in a window)."""
        if self.thread_id and self.thread_id.startswith(f"{kind}:"):
            return native_id(self.thread_id, kind)
        return None


@dataclass(frozen=True)
class Sent:
    """A published reply: the API's id, and its Post id exactly as the connector will deliver it (None for a
    direct message, which no connector reads)."""
    remote_id: str
    post_id: Optional[str]


def native_id(post_id: str, kind: str) -> str:
    prefix = f"{kind}:"
    if not post_id.startswith(prefix) or len(post_id) == len(prefix):
        raise ReplyError(f"post {post_id} is not a {kind} post id ({prefix}...)")
    return post_id[len(prefix):]


def _words(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def same_text(published: str, text: str, markup: bool = False) -> bool:
    """Whether a reply read back from the API is the one we sent: the API may add a @mention in front, escape
    entities (X), or return HTML (Mastodon, Discourse `cooked`), so the sent words must appear in it, in order."""
    readable = html_to_text(published) if markup else html.unescape(published)
    return bool(text.strip()) and _words(text) in _words(readable)


def handle_of(account: str) -> str:
    """`@TelcoHilfe` -> `telcohilfe`; `telco_hilft@social.example` -> `telco_hilft` (compared case-insensitively)."""
    return account.lstrip("@").split("@")[0].casefold()


class ReplyClient(ABC):
    """One API's replies. `kind` is the Post `source` it answers; `direct_messages` whether it can write privately."""
    kind = "source"
    direct_messages = False

    def __init__(self, config: Any, http: HttpClient, account: str, token: str, token_env: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`config`: the source's entry in sources.yaml; `account`/`token`: the brand account that replies."""
        self.config, self.http, self.account, self.sleep = config, http, account, sleep
        self._token, self._token_env = token, token_env

    @abstractmethod
    def reply(self, target: Target, text: str, key: str) -> Sent:
        """Publish `text` as a public reply to the target post (raises Uncertain / ReplyError)."""

    @abstractmethod
    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        """Our account's reply with this text in the thread, if it was published."""

    def direct(self, target: Target, recipient: Recipient, text: str, key: str) -> Sent:
        raise CannotReply(f"{self.kind} has no direct messages triage can send")

    def find_direct(self, target: Target, recipient: Recipient, text: str) -> Optional[Sent]:
        return None

    def get(self, url: str, what: str, headers: dict[str, str]) -> Any:
        """A lookup: reads are retried by the HTTP client like the connectors' (429, 5xx, Retry-After)."""
        try:
            return json_body(self.http.get(url, headers), what)
        except SourceUnavailable as exc:
            raise ReplyError(self._explained(str(exc))) from None

    def post(self, url: str, what: str, headers: dict[str, str], body: Optional[Any] = None,
             fields: Optional[dict[str, str]] = None) -> Any:
        """One publishing request: JSON `body` or form `fields`. A 429 is waited out and sent again (nothing was
        published); a 5xx or a lost connection raises Uncertain; other errors raise ReplyError."""
        delays = backoff_delays(RATE_LIMIT_ATTEMPTS, 1.0)
        while True:
            response = self._send(url, what, headers, body, fields)
            if response.status == 429:
                delay = next(delays, None)
                told = retry_after_s(response.headers.get("retry-after"), time.time()) \
                    or rate_limit_wait_s(response.headers, time.time())
                wait = max(delay or 0.0, told or 0.0)
                if delay is None or wait > MAX_WAIT_S:
                    raise ReplyError(f"{what}: rate-limited (HTTP 429{f', retry after {round(told)} s' if told else ''}); "
                                     "nothing was posted, try again later")
                log.warning("reply rate-limited, waiting", extra={"fields": {"api": self.kind, "seconds": round(wait, 1)}})
                self.sleep(wait)
                continue
            if response.status >= 500:
                raise Uncertain(f"{what} answered HTTP {response.status}: {api_message(response.body)}")
            try:
                return json_body(response, what)
            except SourceUnavailable as exc:
                raise ReplyError(self._explained(str(exc))) from None

    def _send(self, url: str, what: str, headers: dict[str, str], body: Optional[Any],
              fields: Optional[dict[str, str]]) -> Response:
        payload = None if fields is not None else json.dumps(body).encode()
        if payload is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            return self.http.send_once("POST", url, headers, fields=fields, body=payload)
        except urllib3.exceptions.HTTPError as exc:
            raise Uncertain(f"{what}: no answer ({type(exc).__name__})") from None

    def _explained(self, message: str) -> str:
        """An API error; on 401/403 it names the variable whose token to renew (never the token)."""
        if re.search(r"HTTP 40[13]\b", message):
            message = re.sub(r" \(check the credentials sources.yaml names\)$", "", message)
            return (f"{message}: the token in {self._token_env} (reply_accounts of the source, account "
                    f"{self.account}) is expired, revoked or may not post; renew it")
        return message

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}
