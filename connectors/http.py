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
from typing import Any, Callable, Optional

import urllib3

from pipeline.sinks.retry import backoff_delays

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
        return json.loads(self.body)


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
    if remaining is None or reset is None or float(remaining) > 0:
        return None
    reset_value = float(reset)
    # Epoch seconds (GitHub, X, Mastodon-like) or seconds from now (Reddit).
    return max(0.0, reset_value - now) if reset_value > 10**9 else reset_value


class HttpClient:
    def __init__(self, user_agent: str, timeout_s: float = 30.0, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.pool = urllib3.PoolManager(headers={"User-Agent": user_agent}, retries=False,
                                        timeout=urllib3.Timeout(total=timeout_s))
        self.max_retries, self.backoff_s, self.sleep = max_retries, backoff_s, sleep

    def get(self, url: str, headers: Optional[dict[str, str]] = None) -> Response:
        """GET with retries on 429/5xx/network errors; pauses when the rate-limit budget is spent."""
        delays = backoff_delays(self.max_retries, self.backoff_s)
        while True:
            try:
                raw = self.pool.request("GET", url, headers=headers or {}, redirect=True)
                response = Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, raw.data)
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
                raise SourceUnavailable(f"GET {url.split('?')[0]} failed after {self.max_retries} retries ({cause})")
            told = retry_after_s(response.headers.get("retry-after"), time.time()) if response else None
            wait = min(max(delay, told or 0.0), MAX_WAIT_S)
            log.warning("source retry", extra={"fields": {"cause": cause, "delay_s": round(wait, 2)}})
            self.sleep(wait)
