"""A webhook receiver: other tools POST posts as JSON; they land in the raw topic once Kafka has them.

Authentication, one of:
- HMAC: `X-Triage-Signature: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>`
  (the scheme GitHub and many SaaS webhooks use; compared in constant time);
- a shared secret: `Authorization: Bearer <secret>`, for tools that cannot sign.
A request is all-or-nothing: every item is validated first, and a bad one gets 400 with the reason
per item (never the values). 202 is answered only after Kafka acknowledged; if Kafka is down the
answer is 503, so the sender retries and nothing is lost.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import schemas
from pipeline.config import KafkaSettings
from pipeline.sinks.kafka import KafkaWriter

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    def __init__(self, host: str, port: int, secret: str, mode: str, kafka: KafkaSettings, writer: KafkaWriter) -> None:
        self.secret, self.mode, self.kafka, self.writer = secret, mode, kafka, writer
        self._lock = threading.Lock()  # one producer, many request threads
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                status, answer = receiver.handle(self.path, dict(self.headers.items()), self._body())
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Optional[bytes]:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length <= MAX_BODY_BYTES else None

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def _authorised(self, headers: dict[str, str], body: bytes) -> bool:
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.mode == "hmac":
            return hmac.compare_digest(lowered.get("x-triage-signature", ""), signature(self.secret, body))
        return hmac.compare_digest(lowered.get("authorization", ""), f"Bearer {self.secret}")

    def handle(self, path: str, headers: dict[str, str], body: Optional[bytes]) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != "/posts":
            return 404, {"error": "POST posts to /posts"}
        if body is None:
            return 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
        if not self._authorised(headers, body):
            return 401, {"error": "missing or wrong signature" if self.mode == "hmac" else "missing or wrong bearer token"}
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        posts = payload if isinstance(payload, list) else [payload]
        problems = {i: schemas.first_error(schemas.POST_SCHEMA, p) for i, p in enumerate(posts)}
        problems = {i: e for i, e in problems.items() if e}
        if problems:
            return 400, {"error": "invalid posts, none accepted", "items": {str(i): e for i, e in problems.items()}}
        try:
            with self._lock:
                self.writer.write_posts(self.kafka.topics.raw, posts)
        except Exception as exc:
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
