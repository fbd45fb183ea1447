"""One helpdesk API's requests, with its answers turned into the handoff's terms (base.py's errors).

Why one place: every client must treat a failure the same way. A creating request goes out once (`send`,
`HttpClient.send_once`): the handoff, not the client, decides whether to send it again, after looking the ticket up.
A lookup (`read`) is safe to repeat, so it uses `HttpClient.request` with its retries. Then: no answer, 5xx or 429
-> HelpdeskUnavailable (with the wait a 429 asked for: Retry-After or the rate-limit reset); 401/403 ->
HelpdeskRejected naming the environment variable that holds the credential (never its value); any other 4xx ->
HelpdeskRejected with the API's own reason.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

import urllib3

from connectors.helpdesks.base import HelpdeskRejected, HelpdeskUnavailable
from connectors.helpdesks.config import TargetConfig
from connectors.http import HttpClient, Response, SourceUnavailable, api_message, rate_limit_wait_s, retry_after_s
from core import safe_json

Reason = Callable[[bytes], str]


class HelpdeskApi:
    """Requests to one target: `base` is its URL, `headers` its auth headers, `reason` reads its error bodies."""

    def __init__(self, http: HttpClient, target: TargetConfig, headers: dict[str, str], credential: str,
                 reason: Reason = api_message) -> None:
        self.http, self.target, self.reason = http, target, reason
        self.base = target.url.rstrip("/")
        self.headers = {"Accept": "application/json", **headers}
        self.credential = credential  # the variable (or variables) to fix on 401/403, e.g. "ZENDESK_TOKEN"

    def send(self, method: str, path: str, what: str, body: Any = None, headers: Optional[dict[str, str]] = None,
             expect_json: bool = True) -> Any:
        """One attempt of a request that writes (never repeated here); the JSON of its 2xx answer (`body`: JSON to
        encode, or bytes sent as they are; `expect_json=False`: a 2xx answer that is not JSON is None)."""
        try:
            response = self.http.send_once(method, self.base + path, self._headers(body, headers),
                                           body=_encode(body))
        except urllib3.exceptions.HTTPError as exc:
            raise HelpdeskUnavailable(f"{self._what(what)}: no answer ({type(exc).__name__})") from None
        return self.answer(response, what, expect_json)

    def read(self, path: str, what: str, method: str = "GET", body: Any = None) -> Any:
        """A lookup, retried by HttpClient on 429/5xx/no answer; the JSON of its 2xx answer. With an HttpClient
        that does not retry (the caller waits failures out itself), one attempt that keeps a 429's wait."""
        if not self.http.max_retries:
            return self.send(method, path, what, body)
        try:
            response = self.http.request(method, self.base + path, self._headers(body, None), body=_encode(body))
        except SourceUnavailable as exc:
            raise HelpdeskUnavailable(f"{self._what(what)}: {exc}") from None
        return self.answer(response, what)

    def answer(self, response: Response, what: str, expect_json: bool = True) -> Any:
        """The parsed 2xx answer (None when empty), or the error it means."""
        status = response.status
        if 200 <= status < 300:
            if not response.body.strip():
                return None
            try:
                return response.json()
            except ValueError:
                if not expect_json:
                    return None
                raise HelpdeskUnavailable(f"{self._what(what)}: the answer is not JSON") from None
        if status == 429 or status >= 500:
            now = time.time()
            wait = retry_after_s(response.headers.get("retry-after"), now) or rate_limit_wait_s(response.headers, now)
            raise HelpdeskUnavailable(f"{self._what(what)} answered HTTP {status}", retry_after_s=wait)
        reason = self.reason(response.body)
        if status in (401, 403):
            reason = f"{reason} (check the credentials in {self.credential} for target {self.target.name})"
        raise HelpdeskRejected(status, f"{self._what(what)}: {reason}")

    def _headers(self, body: Any, headers: Optional[dict[str, str]]) -> dict[str, str]:
        content = {"Content-Type": "application/json"} if body is not None else {}
        return {**self.headers, **content, **(headers or {})}

    def _what(self, what: str) -> str:
        return f"{self.target.kind} target {self.target.name}: {what}"


def _encode(body: Any) -> Optional[bytes]:
    if body is None or isinstance(body, bytes):
        return body
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def json_reason(*keys: str) -> Reason:
    """A reader for error bodies whose reason is under one of `keys` (first found), else connectors.http's reader."""
    def reason(body: bytes) -> str:
        try:
            data = safe_json.loads(body)
        except ValueError:
            return api_message(body)
        if isinstance(data, dict):
            for key in keys:
                if data.get(key):
                    return str(data[key])
        return api_message(body)
    return reason


class NamedIds:
    """Ids the mapping may give by name (groups, teams): an id passes as it is, a name is looked up in a listing
    read once (`load`: name -> id), an unknown name is refused with the names there are."""

    def __init__(self, target: TargetConfig, what: str, load: Callable[[], dict[str, int]]) -> None:
        self.target, self.what, self.load = target, what, load
        self.ids: Optional[dict[str, int]] = None

    def __call__(self, value: str) -> int:
        if value.isdigit():
            return int(value)
        if self.ids is None:
            self.ids = self.load()
        if value not in self.ids:
            raise HelpdeskRejected(404, f"{self.target.kind} target {self.target.name}: no {self.what} named "
                                        f"{value!r} (mapping.groups; there: {', '.join(sorted(self.ids)) or 'none'})")
        return self.ids[value]
