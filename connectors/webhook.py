"""A webhook receiver: other tools POST posts as JSON to /posts; they land in the raw topic once Kafka has them.

Authentication, one of:
- HMAC (the default; the scheme Stripe and Slack use): two headers,
    X-Triage-Timestamp: <unix seconds, an integer>
    X-Triage-Signature: sha256=<hex HMAC-SHA256, keyed with the shared secret, of "<timestamp>.<raw body>">
  `signed_headers(secret, body)` builds both. The signature covers the timestamp and the exact bytes
  of the body. A timestamp more than `tolerance_s` (default 300 s) away from the receiver's clock is
  refused, and so is a signature already accepted within that window (an in-memory replay cache of
  at most `replay_cache_size` entries; when it is full of unexpired entries new requests get 503
  instead of being let through unchecked). Signatures are compared in constant time. Only accepted
  requests (202) enter the cache, so one that Kafka did not take (503) can be retried with the same
  headers while they are fresh; a sender that retries later re-signs with a new timestamp.
- a shared secret: `Authorization: Bearer <secret>`, for tools that cannot sign (no replay protection).

Limits, checked before the body is read or verified: it needs `Content-Length` (missing -> 411;
negative, non-numeric or conflicting -> 400; chunked transfer encoding -> 411) of at most
MAX_BODY_BYTES (else 413, without reading the body). A verified body must be UTF-8 JSON nested at most
MAX_JSON_DEPTH levels, without NaN/Infinity or lone surrogates (else 400).
Each connection serves one request, must go idle no longer than `socket_timeout_s` (10 s) between
bytes and must be done within `request_deadline_s` (30 s) (else 408). At most `max_workers` requests
(8) are handled at a time; a connection that finds them all busy waits up to `queue_wait_s` (0.25 s)
for one and then gets 503 with Retry-After: 1 -- a fast refusal the sender retries, rather than a
queue that slow or hostile clients could grow without bound.

A request is all-or-nothing: every item is validated first, and a bad one gets 400 with the reason
per item (never the values). Every refusal is a JSON object {"error": <reason>} that never echoes
what was sent: 4xx for faults of the request, 503 (Retry-After: 1) when the receiver or Kafka cannot
take it now, 500 for an unexpected failure -- never a dropped connection. 202 is answered only after
Kafka acknowledged; if Kafka is down the answer is 503, so the sender retries and nothing is lost.
"""
from __future__ import annotations

import hashlib
import heapq
import hmac
import io
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

import schemas
from connectors.base import post_with_clean_url
from core import safe_json
from core.config import KafkaSettings
from core.kafka_writer import KafkaWriter

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = safe_json.MAX_DEPTH
TIMESTAMP_HEADER = "X-Triage-Timestamp"
SIGNATURE_HEADER = "X-Triage-Signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # str patterns: [0-9] is ASCII only, unlike str.isdigit()
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def signature(secret: str, body: bytes, timestamp: Union[int, str]) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the value of the X-Triage-Signature header."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: Optional[float] = None) -> dict[str, str]:
    """The two headers that authenticate `body` at time `now` (default: the current time)."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, body, timestamp)}


class ReplayCache:
    """Signatures accepted within the tolerance window, each kept until its timestamp leaves the window."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expiry, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expiry:
                del self._expiry[key]

    def seen(self, key: bytes) -> bool:
        with self._lock:
            return key in self._expiry

    def claim(self, key: bytes, expiry: float, now: float) -> Optional[str]:
        """None when `key` is new (and now recorded), else "replayed" or "full"."""
        with self._lock:
            if key in self._expiry:
                return "replayed"
            self._purge(now)
            if len(self._expiry) >= self.capacity:
                return "full"
            self._expiry[key] = expiry
            heapq.heappush(self._heap, (expiry, key))
            if len(self._heap) > 2 * self.capacity:  # released keys leave stale heap entries behind
                self._heap = [(e, k) for e, k in self._heap if self._expiry.get(k) == e]
                heapq.heapify(self._heap)
            return None

    def release(self, key: bytes) -> None:
        with self._lock:
            self._expiry.pop(key, None)


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, each read waiting at most `idle_s` and none past the connection's deadline."""

    def __init__(self, sock: socket.socket, idle_s: float, deadline_s: float) -> None:
        self._sock, self._idle_s = sock, idle_s
        self._deadline = time.monotonic() + deadline_s
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(min(self._idle_s, remaining))
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise


def _json_response(status: int, answer: dict[str, Any], extra: Optional[dict[str, str]] = None) -> bytes:
    data = json.dumps(answer).encode()
    phrase = BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    head = [f"HTTP/1.0 {status} {phrase}", "Content-Type: application/json", f"Content-Length: {len(data)}",
            "Connection: close", *(f"{k}: {v}" for k, v in (extra or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


class BoundedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose requests run on a fixed pool of `max_workers` threads.

    ThreadingHTTPServer starts a thread per connection, without bound. Here a semaphore counts the
    connections in hand (running or queued in the pool); a new one waits up to `queue_wait_s` for a
    slot -- enough to absorb a burst, since a request normally takes milliseconds -- and otherwise is
    answered 503 with Retry-After at once, without reading it, and closed.
    """

    request_queue_size = 64  # the listen backlog (socketserver's default is 5)

    def __init__(self, address: tuple[str, int], handler: type, max_workers: int, queue_wait_s: float) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_workers)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="webhook")
        self._queue_wait_s = queue_wait_s

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(timeout=self._queue_wait_s):
            self._refuse_busy(request)
            return
        try:
            self._pool.submit(self._work, request, client_address)
        except RuntimeError:  # the pool was shut down: the server is stopping
            self._slots.release()
            self.shutdown_request(request)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(_json_response(503, {"error": "the receiver is busy; retry later"}, {"Retry-After": "1"}))
            request.setblocking(False)
            for _ in range(4):  # drain a little of what already arrived, so the close does not reset the answer
                if not request.recv(65536):
                    break
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("webhook connection failed", exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class WebhookReceiver:
    def __init__(self, host: str, port: int, secret: str, mode: str, kafka: KafkaSettings, writer: KafkaWriter, *,
                 tolerance_s: float = 300.0, replay_cache_size: int = 100_000, max_workers: int = 8,
                 socket_timeout_s: float = 10.0, request_deadline_s: float = 30.0, queue_wait_s: float = 0.25,
                 clock: Callable[[], float] = time.time) -> None:
        if mode not in ("hmac", "bearer"):
            raise ValueError("mode must be 'hmac' or 'bearer'")
        if tolerance_s <= 0 or replay_cache_size < 1 or max_workers < 1:
            raise ValueError("tolerance_s, replay_cache_size and max_workers must be positive")
        self.secret, self.mode, self.kafka, self.writer = secret, mode, kafka, writer
        self.tolerance_s, self.clock = tolerance_s, clock
        self._replays = ReplayCache(replay_cache_size)
        self._lock = threading.Lock()  # one producer, many request threads
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version, sys_version = "triage-webhook", ""
            timeout = socket_timeout_s  # applied to the socket in setup(), before the request line is read

            def setup(self) -> None:
                super().setup()
                self._answered = False
                self.command, self.requestline, self.request_version = "", "", "HTTP/1.0"  # until parsed
                self._reader = _DeadlineReader(self.connection, socket_timeout_s, request_deadline_s)
                self.rfile.close()  # the socket's own file object; ours reads the same socket
                self.rfile = io.BufferedReader(self._reader, 65536)

            def handle(self) -> None:
                super().handle()  # http.server answers nothing when the request line or headers time out
                if self._reader.timed_out and not self._answered:
                    self._answer(408, {"error": "request not received in time"})

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.close_connection = True
                try:
                    status, answer = self._post()
                except TimeoutError:
                    status, answer = 408, {"error": "request body not received in time"}
                except Exception as exc:
                    log.error("webhook request failed", extra={"fields": {"error": type(exc).__name__}})
                    status, answer = 500, {"error": "internal error; nothing was stored"}
                self._answer(status, answer)

            def _post(self) -> tuple[int, dict[str, Any]]:
                if self.path.split("?")[0].rstrip("/") != "/posts":
                    return 404, {"error": "POST posts to /posts"}
                if self.headers.get("Transfer-Encoding") is not None:
                    return 411, {"error": "Transfer-Encoding is not supported; send the body with Content-Length"}
                lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
                if not lengths:
                    return 411, {"error": "Content-Length is required"}
                if len(lengths) > 1:
                    return 400, {"error": "conflicting Content-Length headers"}
                text = lengths.pop()
                if not re.fullmatch(r"[0-9]+", text):
                    return 400, {"error": "Content-Length must be a non-negative decimal integer"}
                if len(text) > 18 or int(text) > MAX_BODY_BYTES:
                    return 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
                length = int(text)
                body = self.rfile.read(length)
                if len(body) < length:
                    return 400, {"error": "body shorter than Content-Length"}
                return receiver.handle(self.path, {k: str(v) for k, v in self.headers.items()}, body)

            def _answer(self, status: int, answer: dict[str, Any]) -> None:
                if self._answered:
                    return
                self._answered = True
                self.close_connection = True
                if self.request_version == "HTTP/0.9":  # a request line too broken to name a version
                    self.request_version = "HTTP/1.0"  # (HTTP/0.9 answers have no status line)
                data = json.dumps(answer).encode()
                try:
                    self.connection.settimeout(socket_timeout_s)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Cache-Control", "no-store")
                    if status == 503:
                        self.send_header("Retry-After", "1")
                    if status == 405:
                        self.send_header("Allow", "POST")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    pass  # the client is gone

            def _not_allowed(self) -> None:
                self.close_connection = True
                self._answer(405, {"error": "only POST is supported"})

            do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

            def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
                """http.server's refusals (bad request line, long headers, ...) as JSON, without echoing input."""
                reasons = {400: "malformed request line or headers", 414: "request line too long",
                           431: "header line too long or too many headers", 501: "method not supported; POST to /posts",
                           505: "HTTP version not supported"}
                self._answer(code, {"error": reasons.get(code, self.responses.get(code, ("refused",))[0])})

            def log_message(self, *args: object) -> None:
                pass

        self.server = BoundedServer((host, port), Handler, max_workers, queue_wait_s)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def _check_signature(self, lowered: dict[str, str], body: bytes, now: float) -> tuple[Optional[str], bytes, float]:
        """(reason for refusing or None, replay key, replay-cache expiry)."""
        timestamp, sent = lowered.get("x-triage-timestamp"), lowered.get("x-triage-signature")
        if timestamp is None or sent is None:
            return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header", b"", 0.0
        timestamp, sent = timestamp.strip(), sent.strip()
        if not _TIMESTAMP.fullmatch(timestamp):
            return f"malformed {TIMESTAMP_HEADER} header (unix seconds expected)", b"", 0.0
        match = _SIGNATURE.fullmatch(sent)
        if not match:
            return f"malformed {SIGNATURE_HEADER} header (sha256=<64 hex digits> expected)", b"", 0.0
        if abs(now - int(timestamp)) > self.tolerance_s:
            return f"timestamp outside the {self.tolerance_s:g} s tolerance window", b"", 0.0
        expected = signature(self.secret, body, timestamp).encode("ascii")
        if not hmac.compare_digest(("sha256=" + match.group(1).lower()).encode("ascii"), expected):
            return "wrong signature", b"", 0.0
        return None, bytes.fromhex(match.group(1)), int(timestamp) + self.tolerance_s

    def handle(self, path: str, headers: dict[str, str], body: Optional[bytes],
               now: Optional[float] = None) -> tuple[int, dict[str, Any]]:
        """The answer to one POST, as (status, JSON object); headers as sent (any case), body as read."""
        now = self.clock() if now is None else now
        if path.split("?")[0].rstrip("/") != "/posts":
            return 404, {"error": "POST posts to /posts"}
        if body is None or len(body) > MAX_BODY_BYTES:
            return 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        replay_key, expiry = b"", 0.0
        if self.mode == "hmac":
            reason, replay_key, expiry = self._check_signature(lowered, body, now)
            if reason is None and self._replays.seen(replay_key):
                reason = "replayed request"
            if reason:
                return 401, {"error": reason}
        else:
            sent = lowered.get("authorization", "").encode("utf-8", "surrogatepass")
            if not hmac.compare_digest(sent, f"Bearer {self.secret}".encode("utf-8", "surrogatepass")):
                return 401, {"error": "missing or wrong bearer token"}
        try:
            payload = safe_json.loads(body, max_depth=MAX_JSON_DEPTH)
        except safe_json.JsonInputError as exc:
            return 400, {"error": f"body is not JSON we accept: {exc}"}
        posts = payload if isinstance(payload, list) else [payload]
        posts = [post_with_clean_url("webhook", p)[0] if isinstance(p, dict) else p for p in posts]  # a link never costs a post
        problems = {i: schemas.first_error(schemas.POST_SCHEMA, p) for i, p in enumerate(posts)}
        problems = {i: e for i, e in problems.items() if e}
        if problems:
            return 400, {"error": "invalid posts, none accepted", "items": {str(i): e for i, e in problems.items()}}
        if replay_key:
            refused = self._replays.claim(replay_key, expiry, now)
            if refused == "replayed":
                return 401, {"error": "replayed request"}
            if refused == "full":
                log.error("webhook replay cache full", extra={"fields": {"capacity": self._replays.capacity}})
                return 503, {"error": "too many recent requests to guard against replays; retry later"}
        try:
            with self._lock:
                self.writer.write_posts(self.kafka.topics.raw, posts)
        except Exception as exc:
            if replay_key:
                self._replays.release(replay_key)  # the sender may retry with the same headers
            log.error("webhook could not reach Kafka", extra={"fields": {"error": type(exc).__name__}})
            return 503, {"error": "could not store the posts now; retry later"}
        return 202, {"accepted": len(posts)}

    def serve(self, stop: threading.Event) -> None:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        log.info("webhook receiver listening", extra={"fields": {"port": self.port}})
        stop.wait()
        self.server.shutdown()
        self.server.server_close()
