"""HTTP for polling connectors: conditional requests, rate limits and bounded backoff in one place.

Every source API differs in payload but agrees on manners: answer 304 to a repeated conditional
request, say 429 with `Retry-After` when we are too fast, announce the remaining budget in
`X-RateLimit-*` headers, and have bad minutes (5xx). A connector that runs for days must respect all
of it, so no source module handles them itself.
"""
from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Optional

import urllib3

from core.retry import backoff_delays
from core import safe_json

log = logging.getLogger(__name__)
_RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_WAIT_S = 900.0  # never sleep longer than this on one Retry-After or rate-limit reset


class SourceUnavailable(RuntimeError):
    """The source kept failing after the retry budget; the connector tries again at its next poll."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return safe_json.loads(self.body)


def retry_after_s(value: Optional[str], now: float) -> Optional[float]:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def rate_limit_wait_s(headers: dict[str, str], now: float) -> Optional[float]:
    """How long to pause when the announced budget is spent (X-RateLimit-Remaining: 0)."""
    remaining = headers.get("x-ratelimit-remaining") or headers.get("x-rate-limit-remaining")
    reset = headers.get("x-ratelimit-reset") or headers.get("x-rate-limit-reset")
    if remaining is None or reset is None or float(remaining) >= 1:  # Reddit counts in fractions
        return None
    try:
        reset_value = float(reset)
    except ValueError:  # Mastodon: an ISO 8601 time
        try:
            return max(0.0, datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - now)
        except ValueError:
            return None
    # Epoch seconds (X, GitHub) or seconds from now (Reddit).
    return max(0.0, reset_value - now) if reset_value > 10**9 else reset_value


class HttpClient:
    def __init__(self, user_agent: str, timeout_s: float = 30.0, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self.user_agent = user_agent
        self.max_retries, self.backoff_s, self.sleep = max_retries, backoff_s, sleep

    def get(self, url: str, headers: Optional[dict[str, str]] = None) -> Response:
        return self.request("GET", url, headers)

    def send_once(self, method: str, url: str, headers: Optional[dict[str, str]] = None,
                  fields: Optional[dict[str, str]] = None, body: Optional[bytes] = None) -> Response:
        """One attempt, no retry: for a request that must not be repeated blindly (publishing a reply).
        `fields` are sent form-encoded (OAuth token requests), `body` as it is. Raises urllib3's HTTPError when no
        answer came."""
        if fields is not None:
            raw = self.pool.request_encode_body(method, url, fields=fields, headers=self._with_user_agent(headers),
                                                encode_multipart=False)
        else:
            raw = self.pool.request(method, url, headers=self._with_user_agent(headers), body=body, redirect=True)
        return Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, raw.data)

    def _with_user_agent(self, headers: Optional[dict[str, str]]) -> dict[str, str]:
        """Our User-Agent on every request (urllib3 drops a pool's default headers once a request names any;
        Reddit and others refuse the generic one), plus the request's own."""
        return {"User-Agent": self.user_agent, **(headers or {})}

    def request(self, method: str, url: str, headers: Optional[dict[str, str]] = None,
                fields: Optional[dict[str, str]] = None, body: Optional[bytes] = None) -> Response:
        """`send_once` with retries on 429/5xx/network errors; pauses when the rate-limit budget is spent."""
        delays = backoff_delays(self.max_retries, self.backoff_s)
        while True:
            try:
                response = self.send_once(method, url, headers, fields, body)
            except urllib3.exceptions.HTTPError as exc:
                response, cause = None, type(exc).__name__
            else:
                if response.status not in _RETRY_STATUS:
                    pause = rate_limit_wait_s(response.headers, time.time())
                    if pause:
                        log.info("rate-limit budget spent, pausing", extra={"fields": {"seconds": round(pause, 1)}})
                        self.sleep(min(pause, MAX_WAIT_S))
                    return response
                cause = f"HTTP {response.status}"
            delay = next(delays, None)
            if delay is None:
                raise SourceUnavailable(f"{method} {url.split('?')[0]} failed after {self.max_retries} retries ({cause})")
            told = None
            if response:  # Retry-After, or (X, Reddit) the rate-limit reset sent with the 429
                told = retry_after_s(response.headers.get("retry-after"), time.time()) \
                    or rate_limit_wait_s(response.headers, time.time())
            wait = min(max(delay, told or 0.0), MAX_WAIT_S)
            log.warning("source retry", extra={"fields": {"cause": cause, "delay_s": round(wait, 2)}})
            self.sleep(wait)

    def lines(self, url: str, headers: Optional[dict[str, str]] = None, read_timeout_s: float = 90.0) -> Iterator[bytes]:
        """The lines of a long-lived response (server-sent events, newline-delimited JSON), as they arrive.

        Raises SourceUnavailable when the stream cannot be opened; a stalled stream (no byte, not even a
        heartbeat, for `read_timeout_s`) raises a urllib3 timeout, and the caller reconnects."""
        raw = self.pool.request("GET", url, headers=self._with_user_agent(headers), preload_content=False,
                                timeout=urllib3.Timeout(connect=10.0, read=read_timeout_s))
        if raw.status != 200:
            raw.drain_conn()
            raise SourceUnavailable(f"stream {url.split('?')[0]} answered HTTP {raw.status}")
        try:
            pending = b""
            while chunk := raw.read1(65536):
                *complete, pending = (pending + chunk).split(b"\n")
                yield from (line.rstrip(b"\r") for line in complete)
        finally:
            raw.release_conn()


def json_body(response: Response, what: str) -> Any:
    """The JSON of a 2xx answer; otherwise an error that says what the API answered (never the request's secrets)."""
    if 200 <= response.status < 300:
        try:
            return response.json()
        except ValueError as exc:
            raise SourceUnavailable(f"{what}: the answer is not JSON ({exc})") from None
    hint = " (check the credentials sources.yaml names)" if response.status in (401, 403) else ""
    raise SourceUnavailable(f"{what} answered HTTP {response.status}: {api_message(response.body)}{hint}")


def api_message(body: bytes) -> str:
    """The error text of the usual API error shapes (Graph/YouTube, X, Mastodon, Discourse), else the body's start."""
    try:
        data = safe_json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        error, errors = data.get("error"), data.get("errors")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(errors, list) and errors:
            first = errors[0]
            return str(first.get("message") or first.get("detail") or first) if isinstance(first, dict) else str(first)
        if data.get("detail") or data.get("title"):
            return str(data.get("detail") or data.get("title"))
    return json.dumps(data)[:200]
