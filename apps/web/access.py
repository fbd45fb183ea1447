"""Who is asking and what they may do: sessions, CSRF, login rate limiting, trusted-proxy identity, roles,
and the allow-list of what an analyst may receive.

Everything is decided here, on the server: a page never hides data a role must not see, it never receives it.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import defaultdict, deque
from functools import wraps
from typing import Any, Callable, Optional, TypeVar

from flask import abort, g, request, session

from core.config import TrustedProxySettings
from apps.web.users import ROLES

F = TypeVar("F", bound=Callable[..., Any])

# What an analyst may receive of a post from the posts index (apps/query.py RESULT_FIELDS, minus nothing that
# names a person): redacted text, labels, routing and counts. Anything else is dropped before it is sent.
ANALYST_POST_FIELDS = {
    "id": True, "source": True, "created_at": True, "title_redacted": True, "text_redacted": True,
    "deleted_at": True, "language": {"code": True, "score": True}, "sentiment": {"label": True, "score": True},
    "intent": {"label": True, "score": True}, "topic": {"label": True, "score": True}, "pii": {"types": True},
    "triage": {"queue": True, "priority": True}, "agent": {"status": True}, "author": {"is_brand": True},
}


def allowed(document: Any, allow: Any = ANALYST_POST_FIELDS) -> Any:
    """`document` cut down to the allow-list (nested mappings: only the keys listed, recursively)."""
    if allow is True:
        return document
    if not isinstance(document, dict):
        return None
    kept = {key: allowed(document[key], rule) for key, rule in allow.items() if key in document}
    return {key: value for key, value in kept.items() if value is not None}


class LoginLimiter:
    """At most `attempts` failed logins per user name and address within `window_s` seconds (in memory, per
    process: a restart forgets, which is acceptable for slowing guessing down)."""

    def __init__(self, attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.window_s, self.clock = attempts, window_s, clock
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        failures, oldest = self._failures[key], self.clock() - self.window_s
        while failures and failures[0] < oldest:
            failures.popleft()
        return failures

    def blocked(self, user: str, address: str) -> bool:
        key = (user.casefold(), address)
        with self._lock:
            count = len(self._recent(key))
            if not count:
                del self._failures[key]  # nothing recent: forget the key, so guessed names do not pile up
            return count >= self.attempts

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            self._recent((user.casefold(), address)).append(self.clock())

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop((user.casefold(), address), None)


def csrf_token() -> str:
    """The session's CSRF token (made on first use), for every form's hidden `csrf_token`."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf() -> None:
    """Every request that changes something carries the session's token (form field or X-CSRF-Token): 400 if not."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        abort(400, description="csrf")


def _trusted(address: Optional[str], proxies: list[str]) -> bool:
    if not address:
        return False
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def identify(proxy: TrustedProxySettings) -> None:
    """Set `g.user` and `g.role`: from the proxy's headers in proxy mode (only from its addresses: anyone else is
    refused, 403), else from the session."""
    g.user = g.role = None
    if proxy.enabled:
        if not _trusted(request.remote_addr, proxy.addresses):
            abort(403, description="proxy")
        user, role = request.headers.get(proxy.user_header, ""), request.headers.get(proxy.role_header, "")
        if user and role in ROLES:
            g.user, g.role = user, role
        return
    if session.get("user") and session.get("role") in ROLES:
        g.user, g.role = session["user"], session["role"]


def roles(*allowed_roles: str) -> Callable[[F], F]:
    """Only these roles: anyone else gets 403 (an anonymous visitor: 401, the login page for HTML)."""
    def wrap(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if g.role is None:
                abort(401)
            if g.role not in allowed_roles:
                abort(403)
            return view(*args, **kwargs)
        return guarded  # type: ignore[return-value]
    return wrap
