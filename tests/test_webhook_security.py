"""The webhook receiver under hostile input: bounded reads, timestamped signatures, replays, slow clients.

Each test talks to a real receiver over loopback; requests whose headers must be malformed are written
byte by byte on a raw socket. Nothing here reaches Kafka: the receiver gets a writer that records
what it was given (the Kafka path is covered by test_connectors.py).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import string
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import pytest

from connectors.testing import ListSink
from connectors.webhook import MAX_BODY_BYTES, WebhookReceiver, signature, signed_headers
from core.config import Settings

SECRET = "s3cret"
GOOD = json.dumps([{"id": "webhook:1", "source": "webhook", "text": "Bitte ruft mich zurück"}]).encode()


@contextmanager
def running(settings: Settings, mode: str = "hmac", writer: Optional[ListSink] = None,
            **options: Any) -> Iterator[tuple[WebhookReceiver, ListSink]]:
    """The receiver serving on a free port (its own server loop, polling for shutdown every 50 ms, not 0.5 s)."""
    writer = writer or ListSink()
    receiver = WebhookReceiver("127.0.0.1", 0, SECRET, mode, settings.kafka, writer, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver, writer
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)


def request_bytes(body: bytes, headers: dict[str, str], path: str = "/posts") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def exchange(port: int, data: bytes, close_write: bool = True, timeout: float = 5.0) -> tuple[int, dict, dict]:
    """Send raw bytes, read the answer to EOF: (status, JSON body, headers with lower-case names)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict, dict]:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/"), f"no HTTP answer: {raw[:200]!r}"
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers.get("content-type") == "application/json"
    return int(lines[0].split()[1]), json.loads(body), headers


def signed(body: bytes, now: Optional[float] = None, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "Content-Length": str(len(body)), **signed_headers(secret, body, now)}


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000." + b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("k", b'{"a":1}', 1700000000) == f"sha256={expected}"
    assert signed_headers("k", b'{"a":1}', now=1700000000.9) == {
        "X-Triage-Timestamp": "1700000000", "X-Triage-Signature": f"sha256={expected}"}


@pytest.mark.parametrize("mode", ["hmac", "bearer"])
def test_content_length_that_is_missing_negative_or_not_a_number_is_refused_before_reading(
        settings: Settings, mode: str) -> None:
    auth = signed(GOOD) if mode == "hmac" else {"Authorization": f"Bearer {SECRET}"}
    auth = {k: v for k, v in auth.items() if k != "Content-Length"}
    with running(settings, mode) as (receiver, writer):
        cases = [({"Content-Length": "-1"}, 400, "non-negative"), ({"Content-Length": "abc"}, 400, "non-negative"),
                 ({"Content-Length": "+5"}, 400, "non-negative"), ({"Content-Length": "1e3"}, 400, "non-negative"),
                 ({"Content-Length": "١٢"}, 400, "non-negative"),  # Arabic-Indic digits: str.isdigit() says yes
                 ({}, 411, "Content-Length is required"),
                 ({"Transfer-Encoding": "chunked"}, 411, "Transfer-Encoding"),
                 ({"Content-Length": str(len(GOOD)), "Transfer-Encoding": "chunked"}, 411, "Transfer-Encoding")]
        for extra, status, reason in cases:
            got, answer, _ = exchange(receiver.port, request_bytes(GOOD, {**auth, **extra}))
            assert (got, reason in answer["error"]) == (status, True), extra
        data = request_bytes(GOOD, auth).replace(b"\r\n\r\n", f"\r\nContent-Length: {len(GOOD)}\r\n"
                                                               f"Content-Length: {len(GOOD) + 1}\r\n\r\n".encode(), 1)
        assert exchange(receiver.port, data)[:2] == (400, {"error": "conflicting Content-Length headers"})
        assert writer.batches == []


def test_a_body_declared_too_large_gets_413_at_once_without_being_read(settings: Settings) -> None:
    with running(settings) as (receiver, writer):
        for length in (str(MAX_BODY_BYTES + 1), str(100 * 1024 * 1024), "9" * 40, "9" * 5000):
            headers = {"Content-Type": "application/json", "Content-Length": length}
            started = time.monotonic()
            # the client sends the headers only and keeps its side open: an answer proves nothing was awaited
            status, answer, _ = exchange(receiver.port, request_bytes(b"", headers), close_write=False)
            assert status == 413 and "larger than" in answer["error"]
            assert time.monotonic() - started < 2
        # the limit itself is fine
        assert receiver.handle("/posts", signed(GOOD), GOOD)[0] == 202
        assert writer.batches and len(writer.batches) == 1


def test_a_body_shorter_than_its_content_length_is_refused(settings: Settings) -> None:
    with running(settings) as (receiver, writer):
        headers = {**signed(GOOD), "Content-Length": str(len(GOOD) + 10)}
        assert exchange(receiver.port, request_bytes(GOOD, headers))[:2] == (
            400, {"error": "body shorter than Content-Length"})
        assert writer.batches == []


@pytest.mark.parametrize("header", [b"X-Triage-Signature: sha256=\xc3\xa9\xff" + b"0" * 60,
                                    b"X-Triage-Signature: \xe2\x82\xac",
                                    b"X-Triage-Timestamp: 17\xd9\xa1\xd9\xa2"])
def test_non_ascii_signature_headers_get_401_with_a_reason(settings: Settings, header: bytes) -> None:
    name = header.split(b":")[0].decode()
    with running(settings) as (receiver, writer):
        headers = {k: v for k, v in signed(GOOD).items() if k != name}
        data = request_bytes(GOOD, headers).replace(b"\r\n\r\n", b"\r\n" + header + b"\r\n\r\n", 1)
        status, answer, _ = exchange(receiver.port, data)
        assert status == 401 and f"malformed {name} header" in answer["error"]
        assert "\\u" not in json.dumps(answer) and "\u20ac" not in answer["error"]  # the value is not echoed
        assert writer.batches == []


def test_a_non_ascii_bearer_token_gets_401(settings: Settings) -> None:
    with running(settings, "bearer") as (receiver, writer):
        data = request_bytes(GOOD, {"Content-Length": str(len(GOOD))}).replace(
            b"\r\n\r\n", b"\r\nAuthorization: Bearer s3cr\xc3\xa9t\r\n\r\n", 1)
        assert exchange(receiver.port, data)[:2] == (401, {"error": "missing or wrong bearer token"})
        ok = request_bytes(GOOD, {"Content-Length": str(len(GOOD)), "Authorization": f"Bearer {SECRET}"})
        assert exchange(receiver.port, ok)[:2] == (202, {"accepted": 1})


@pytest.mark.parametrize("body", [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                                  json.dumps({"id": "webhook:d", "source": "webhook", "text": "x",
                                              "metadata": json.loads("[" * 100 + "]" * 100)}).encode()])
def test_deeply_nested_signed_json_is_refused_with_400(settings: Settings, body: bytes) -> None:
    with running(settings) as (receiver, writer):
        status, answer, _ = exchange(receiver.port, request_bytes(body, signed(body)))
        assert status == 400 and "nested deeper than" in answer["error"]
        shallow = json.dumps({"id": "webhook:s", "source": "webhook", "text": "x",
                              "metadata": {"a": {"b": [1, {"c": None}]}}}).encode()
        assert exchange(receiver.port, request_bytes(shallow, signed(shallow)))[:2] == (202, {"accepted": 1})
        assert len(writer.batches) == 1


@pytest.mark.parametrize("body,reason", [(b"[" + b"1" * 5000 + b"]", "too many digits"), (b"[NaN]", "NaN"),
                                         (b'{"a": Infinity}', "Infinity"), (b"\xff\xfe\xfa", "not JSON"),
                                         (b'{"id": "webhook:u", "source": "webhook", "text": "\\ud800"}', "surrogate")])
def test_numbers_and_bytes_json_cannot_carry_are_refused_with_400(settings: Settings, body: bytes,
                                                                  reason: str) -> None:
    with running(settings) as (receiver, writer):
        status, answer, _ = exchange(receiver.port, request_bytes(body, signed(body)))
        assert status == 400 and reason in answer["error"]


def test_a_captured_request_cannot_be_replayed(settings: Settings) -> None:
    with running(settings) as (receiver, writer):
        captured = request_bytes(GOOD, signed(GOOD))
        assert exchange(receiver.port, captured)[:2] == (202, {"accepted": 1})
        for _ in range(3):
            assert exchange(receiver.port, captured)[:2] == (401, {"error": "replayed request"})
        # two copies at the same moment: exactly one gets in
        fresh = request_bytes(GOOD, signed(GOOD, now=time.time() - 1))
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(exchange(receiver.port, fresh)[0]))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(results) == [202, 401, 401, 401]
        assert len(writer.batches) == 2


def test_a_request_kafka_did_not_take_can_be_retried_with_the_same_headers(settings: Settings) -> None:
    sink = ListSink()
    sink.fail_next(1)  # Kafka down for one write
    with running(settings, writer=sink) as (receiver, writer):
        captured = request_bytes(GOOD, signed(GOOD))
        status, answer, headers = exchange(receiver.port, captured)
        assert status == 503 and headers["retry-after"] == "1"
        assert exchange(receiver.port, captured)[:2] == (202, {"accepted": 1})
        assert exchange(receiver.port, captured)[:2] == (401, {"error": "replayed request"})


def test_timestamps_outside_the_tolerance_window_are_refused(settings: Settings) -> None:
    with running(settings, tolerance_s=60) as (receiver, writer):
        for skew in (-61, 61, -86_400, 10 ** 9):
            data = request_bytes(GOOD, signed(GOOD, now=time.time() + skew))
            status, answer, _ = exchange(receiver.port, data)
            assert status == 401 and "tolerance window" in answer["error"], skew
        headers = {**signed(GOOD), "X-Triage-Timestamp": "0"}  # a signature for another time does not fit
        assert exchange(receiver.port, request_bytes(GOOD, headers))[1]["error"] == "timestamp outside the 60 s tolerance window"
        ts = str(int(time.time()))
        headers = {**signed(GOOD), "X-Triage-Timestamp": ts, "X-Triage-Signature": signature(SECRET, GOOD, int(ts) - 1)}
        assert exchange(receiver.port, request_bytes(GOOD, headers))[:2] == (401, {"error": "wrong signature"})
        assert exchange(receiver.port, request_bytes(GOOD, signed(GOOD, now=time.time() - 50)))[0] == 202
        assert len(writer.batches) == 1


def test_the_replay_cache_is_bounded_and_forgets_what_left_the_window(settings: Settings) -> None:
    receiver = WebhookReceiver("127.0.0.1", 0, SECRET, "hmac", settings.kafka, ListSink(),  # type: ignore[arg-type]
                               tolerance_s=10, replay_cache_size=2)
    try:
        now = 1_800_000_000.0
        bodies = [json.dumps({"id": f"webhook:{i}", "source": "webhook", "text": "t"}).encode() for i in range(4)]
        assert receiver.handle("/posts", signed(bodies[0], now), bodies[0], now=now)[0] == 202
        assert receiver.handle("/posts", signed(bodies[1], now), bodies[1], now=now)[0] == 202
        # full of signatures still inside the window: refused (retry later), not let through unchecked
        status, answer = receiver.handle("/posts", signed(bodies[2], now), bodies[2], now=now)
        assert status == 503 and "replays" in answer["error"]
        later = now + 11  # the first two left the window: their entries go, and their replays are stale anyway
        assert receiver.handle("/posts", signed(bodies[2], later), bodies[2], now=later)[0] == 202
        assert receiver.handle("/posts", signed(bodies[0], now), bodies[0], now=later)[0] == 401
        assert receiver.handle("/posts", signed(bodies[3], later), bodies[3], now=later)[0] == 202
    finally:
        receiver.server.server_close()


def test_slow_clients_time_out_without_blocking_others(settings: Settings) -> None:
    with running(settings, max_workers=4, socket_timeout_s=1.0, request_deadline_s=2.5) as (receiver, writer):
        started = time.monotonic()
        idle = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
        idle.sendall(b"POST /posts HTTP/1.1\r\nContent-Le")  # and then nothing
        body_wait = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
        body_wait.sendall(request_bytes(GOOD[:10], signed(GOOD)))  # promises more body than it sends
        slow = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
        dribble_stop = threading.Event()

        def dribble() -> None:  # a byte every 0.3 s: never idle for 1 s, but past the 2.5 s deadline
            try:
                for byte in request_bytes(GOOD, signed(GOOD, now=time.time() + 1)):
                    if dribble_stop.wait(0.3):
                        return
                    slow.send(bytes([byte]))
            except OSError:
                pass
        threading.Thread(target=dribble, daemon=True).start()
        time.sleep(0.05)
        assert exchange(receiver.port, request_bytes(GOOD, signed(GOOD)))[:2] == (202, {"accepted": 1})
        assert time.monotonic() - started < 0.9  # served while all three slow ones were still held
        for sock, error in ((idle, "request not received in time"), (body_wait, "request body not received in time")):
            assert read_answer(sock)[:2] == (408, {"error": error})
            assert 0.9 < time.monotonic() - started < 2.2
            sock.close()
        assert read_answer(slow)[:2] == (408, {"error": "request not received in time"})
        assert 2.4 < time.monotonic() - started < 4.5
        dribble_stop.set()
        slow.close()


def test_the_worker_pool_is_bounded_and_refuses_fast_when_full(settings: Settings) -> None:
    with running(settings, max_workers=2, socket_timeout_s=3, queue_wait_s=0.05) as (receiver, writer):
        before = threading.active_count()
        holders = [socket.create_connection(("127.0.0.1", receiver.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        started = time.monotonic()
        extra = [socket.create_connection(("127.0.0.1", receiver.port), timeout=5) for _ in range(10)]
        answers = [read_answer(sock) for sock in extra]
        assert all(a[:2] == (503, {"error": "the receiver is busy; retry later"}) for a in answers)
        assert all(a[2]["retry-after"] == "1" for a in answers)
        assert time.monotonic() - started < 2.5  # refused at once, not after the holders timed out
        assert threading.active_count() <= before + 2
        for sock in holders + extra:
            sock.close()
        time.sleep(0.2)
        assert exchange(receiver.port, request_bytes(GOOD, signed(GOOD)))[:2] == (202, {"accepted": 1})


def test_an_unexpected_failure_is_a_500_json_answer_not_a_dropped_connection(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with running(settings) as (receiver, writer):
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom: a bug")
        monkeypatch.setattr(receiver, "handle", broken)
        status, answer, _ = exchange(receiver.port, request_bytes(GOOD, signed(GOOD)))
        assert (status, answer) == (500, {"error": "internal error; nothing was stored"})


def test_other_methods_paths_and_broken_request_lines_get_json_4xx(settings: Settings) -> None:
    with running(settings) as (receiver, writer):
        assert exchange(receiver.port, b"GET /posts HTTP/1.1\r\nHost: x\r\n\r\n")[:2] == (
            405, {"error": "only POST is supported"})
        assert exchange(receiver.port, request_bytes(GOOD, signed(GOOD), path="/admin"))[0] == 404
        assert exchange(receiver.port, b"POST /posts HTTP/1.1 extra words\r\n\r\n")[:2] == (
            400, {"error": "malformed request line or headers"})
        assert exchange(receiver.port, b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")[0] == 414
        many = b"".join(b"X-%d: y\r\n" % i for i in range(150))
        assert exchange(receiver.port, b"POST /posts HTTP/1.1\r\n" + many + b"\r\n")[0] == 431
        assert writer.batches == []


# -- fuzzing: the hypothesis package is not installed, so a seeded generator of bounded size -----------------

def _random_text(rng: random.Random, size: int) -> str:
    alphabet = string.printable + "éü€١\u200b\udc80\x00\x7f" + "".join(chr(c) for c in range(0x80, 0x100, 7))
    return "".join(rng.choice(alphabet) for _ in range(size))


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 5 else 4)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2 ** 70, 1.5, float("1e308")])
    if kind == 1:
        return _random_text(rng, rng.randrange(12))
    if kind == 2:
        return {"id": rng.choice(["webhook:f", "", "a b", 7]), "source": rng.choice(["webhook", "X", None]),
                "text": rng.choice(["hi", " ", "", None])}
    if kind == 3:
        return {"id": "webhook:ok", "source": "webhook", "text": "ok",
                "metadata": rng.choice([None, {"k": [1, 2]}, "s"])}
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_text(rng, 3): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _random_body(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if choice == 1:
        depth = rng.choice([10, 63, 64, 65, 999, 1001, 5000])
        return b"[" * depth + b"]" * depth
    if choice == 2:
        return rng.choice([b"NaN", b"[-Infinity]", b"1" * 4400, b"", b"{", b'"\\ud800"', b"\xef\xbb\xbf[]",
                           b'{"id": "webhook:u", "source": "webhook", "text": "\\udc80"}'])
    text = json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def _random_headers(rng: random.Random, body: bytes, now: float, mode: str = "hmac") -> dict[str, str]:
    headers: dict[str, str] = {}
    if rng.random() < 0.6:  # properly authenticated (or nearly), so the body gets parsed
        if mode == "hmac":
            headers.update(signed_headers(rng.choice([SECRET, "other"]), body, now + rng.choice([0, 0, 0, -301, 299, 1e6])))
        else:
            headers["Authorization"] = rng.choice([f"Bearer {SECRET}", f"Bearer {SECRET}", f"bearer {SECRET}"])
    for _ in range(rng.randrange(4)):
        name = rng.choice(["X-Triage-Timestamp", "X-Triage-Signature", "x-triage-signature", "Authorization",
                           "Content-Type", _random_text(rng, 5)])
        headers[name] = rng.choice([_random_text(rng, rng.randrange(80)), "sha256=" + "0" * 64, "sha256=" + "g" * 64,
                                    str(int(now)), "-1", "1" * 30, f"Bearer {SECRET}", f"Bearer {SECRET}\u00e9"])
    return headers


@pytest.mark.parametrize("mode", ["hmac", "bearer"])
def test_fuzzed_headers_and_bodies_always_get_a_2xx_or_4xx_json_answer(settings: Settings, mode: str) -> None:
    rng = random.Random(20261122)
    receiver = WebhookReceiver("127.0.0.1", 0, SECRET, mode, settings.kafka, ListSink(),  # type: ignore[arg-type]
                               replay_cache_size=10_000)
    started = time.monotonic()
    seen: dict[int, int] = {}
    try:
        for example in range(200):
            body = _random_body(rng)
            now = 1_800_000_000.0 + example
            headers = _random_headers(rng, body, now, mode)
            path = rng.choice(["/posts"] * 6 + ["/posts/", "/posts?x=1", "/", "/pöst", _random_text(rng, 6)])
            status, answer = receiver.handle(path, headers, body, now=now)
            assert 200 <= status < 500, (example, status, answer)
            assert isinstance(answer, dict) and (status < 300 or "error" in answer)
            json.dumps(answer)
            for value in headers.values():
                assert len(value) < 16 or value not in json.dumps(answer, ensure_ascii=False)
            seen[status] = seen.get(status, 0) + 1
    finally:
        receiver.server.server_close()
    assert time.monotonic() - started < 10
    assert {202, 400, 401}.issubset(seen) and seen.get(404)  # the generator reaches every stage


def test_fuzzed_raw_requests_over_the_socket_always_get_a_2xx_or_4xx_json_answer(settings: Settings) -> None:
    rng = random.Random(7)
    started = time.monotonic()
    with running(settings, socket_timeout_s=0.5, request_deadline_s=2) as (receiver, writer):
        statuses = []
        for _ in range(80):
            body = _random_body(rng)
            headers = {**_random_headers(rng, body, time.time()), "Content-Length": str(len(body))}
            for _ in range(rng.randrange(3)):
                name = rng.choice(["Content-Length", "Transfer-Encoding", "Connection", "Expect"])
                headers[name] = rng.choice(["-1", "abc", "", " 5", str(len(body) + 3), "0", "chunked",
                                            "keep-alive", "100-continue", "99999999999999999999"])
            lines = [rng.choice(["POST /posts HTTP/1.1", "POST /posts HTTP/1.0", "POST /posts/ HTTP/1.1"])]
            for name, value in headers.items():
                clean = "".join(c for c in value if c not in "\r\n").lstrip() or "x"
                lines.append(f"{name.strip(' :') or 'X'}: {clean}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
            status, answer, _ = exchange(receiver.port, head + body)
            assert 200 <= status < 500, (status, answer)
            assert status < 300 or isinstance(answer.get("error"), str)
            statuses.append(status)
    assert time.monotonic() - started < 10
    assert {400, 401, 411}.issubset(statuses)


def test_a_permalink_with_non_ascii_letters_is_encoded_and_a_garbage_one_dropped_not_the_post(
        settings: Settings) -> None:
    posts = [{"id": "forum:1", "source": "forum", "text": "Kündigung geht nicht",
              "url": "https://forum.example/t/kündigung_bei_xyz/1"},
             {"id": "forum:2", "source": "forum", "text": "Hallo?", "url": "javascript:alert(1)"}]
    body = json.dumps(posts).encode()
    with running(settings) as (receiver, writer):
        assert exchange(receiver.port, request_bytes(body, signed(body)))[:2] == (202, {"accepted": 2})
    assert [(p["id"], p["url"]) for p in writer.posts] == [
        ("forum:1", "https://forum.example/t/k%C3%BCndigung_bei_xyz/1"), ("forum:2", None)]
