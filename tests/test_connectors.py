"""Connectors against local HTTP servers serving recorded-format fixtures, into the local Kafka."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import consume_all, own_names
from fake_apis import FakeHttpServer, Request
from connectors.http import HttpClient, rate_limit_wait_s, retry_after_s
from connectors.text import html_to_text
from connectors.webhook import signature
from cli.main import main
from core.config import Settings

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"


class FeedStandIn:
    """Serves the fixture feeds with ETags; a script of failures can be queued per path."""

    def __init__(self) -> None:
        self.failures: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.extra: dict[str, bytes] = {}
        self.server = FakeHttpServer({"GET /": self.feed})
        self.url = self.server.url

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(feed, If-None-Match) of every request so far."""
        return [(r.route.lstrip("/"), r.headers.get("If-None-Match", "")) for r in self.server.requests]

    def feed(self, request: Request) -> None:
        name = request.route.lstrip("/")
        script = self.failures.get(name)
        if script:
            status, headers = script.pop(0)
            return request.respond(status, headers=headers)
        body = self.extra.get(name) or (FEEDS / name).read_bytes()
        etag = f'"{hash(body) & 0xffffffff:x}"'
        if request.headers.get("If-None-Match") == etag:
            return request.respond(304)
        request.respond(200, body, {"Content-Type": "application/xml; charset=utf-8", "ETag": etag})


@pytest.fixture(scope="module")
def connect_live(live: Settings, run_id: str) -> Iterator[Settings]:
    """The live services with topics of this module's own: other tests count what is in theirs."""
    with own_names({f"TRIAGE_KAFKA__TOPICS__{topic.upper()}": f"test-{run_id}-connect.{topic}"
                    for topic in ("raw", "enriched", "dead_letter")}, elasticsearch=False) as settings:
        yield settings


@pytest.fixture
def feed_server() -> Iterator[tuple[str, FeedStandIn]]:
    feeds = FeedStandIn()
    yield feeds.url, feeds
    feeds.server.close()


def test_html_becomes_text_with_paragraphs_and_without_scripts() -> None:
    text = html_to_text("<p>Seit <b>drei</b> Wochen&nbsp;kein Netz.</p><script>x()</script><p>Ärgerlich &amp; teuer</p>")
    assert text == "Seit drei Wochen\xa0kein Netz.\nÄrgerlich & teuer"


def test_retry_after_and_rate_limit_headers_are_understood() -> None:
    assert retry_after_s("7", now=0) == 7
    assert retry_after_s("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480) == 5
    assert rate_limit_wait_s({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000030"}, now=1700000000) == 30
    assert rate_limit_wait_s({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "12"}, now=1700000000) == 12
    assert rate_limit_wait_s({"x-ratelimit-remaining": "3", "x-ratelimit-reset": "12"}, now=0) is None


def test_http_client_honours_retry_after_and_retries_server_errors(feed_server) -> None:  # type: ignore[no-untyped-def]
    url, handler = feed_server
    handler.failures["blog-rss.xml"] = [(429, {"Retry-After": "2"}), (503, {})]
    slept: list[float] = []
    client = HttpClient("test", backoff_s=0.01, sleep=slept.append)
    assert client.get(f"{url}/blog-rss.xml").status == 200
    assert slept[0] == 2 and len(slept) == 2


def test_every_request_carries_the_configured_user_agent_beside_its_own_headers() -> None:
    """urllib3 drops a pool's default headers once a request names any: Reddit then refuses the generic agent."""
    from fake_apis import FakeHttpServer
    with FakeHttpServer({"GET /feed": lambda request: request.json({"ok": True}),
                         "POST /token": lambda request: request.json({"ok": True})}) as server:
        client = HttpClient("triage-test/1.0 (care team)")
        client.get(f"{server.url}/feed", {"Authorization": "Bearer t"})
        client.get(f"{server.url}/feed")
        client.request("POST", f"{server.url}/token", fields={"grant_type": "client_credentials"})
        assert [r.headers["User-Agent"] for r in server.requests] == ["triage-test/1.0 (care team)"] * 3
        assert server.requests[0].headers["Authorization"] == "Bearer t"


def _offsets(settings: Settings, topic: str) -> set[tuple[int, int]]:
    return {(m.partition, m.offset) for m in consume_all(settings, topic, 100_000, timeout_ms=2000)}


def _since(settings: Settings, topic: str, known: set[tuple[int, int]]) -> list:
    """Records written after `known` was taken, in produce-time order (the topic has several partitions)."""
    records = [m for m in consume_all(settings, topic, 100_000, timeout_ms=3000) if (m.partition, m.offset) not in known]
    return sorted(records, key=lambda m: (m.timestamp, m.partition, m.offset))


def _sources_file(tmp_path: Path, sources: list[dict]) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"checkpoint_db": str(tmp_path / "checkpoints.sqlite"), "sources": sources}))
    return path


@pytest.mark.integration
def test_feeds_reach_kafka_once_across_restarts_and_malformed_items_are_dead_letters(
        connect_live: Settings, feed_server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    url, handler = feed_server
    handler.failures["forum-atom.xml"] = [(500, {})]  # one bad minute: retried, not fatal
    sources = _sources_file(tmp_path, [{"type": "rss", "name": "blog", "url": f"{url}/blog-rss.xml"},
                                       {"type": "rss", "name": "forum", "url": f"{url}/forum-atom.xml"}])
    topics = connect_live.kafka.topics
    before, dead_before = _offsets(connect_live, topics.raw), _offsets(connect_live, topics.dead_letter)
    assert main(["connect", "--sources", str(sources), "--once"]) == 0
    assert main(["connect", "--sources", str(sources), "--once"]) == 0  # a restart: 304s and known ids
    posts = [json.loads(m.value) for m in _since(connect_live, topics.raw, before)]
    assert sorted(p["id"] for p in posts) == ["rss:blog-c-101", "rss:blog-c-102",
                                              "rss:tag:forum.example.org,2026:post-5001",
                                              "rss:tag:forum.example.org,2026:post-5002"]
    by_id = {p["id"]: p for p in posts}
    blog = by_id["rss:blog-c-101"]
    assert blog["text"] == "Seit drei Wochen warte ich auf den Techniker.\nDas ist einfach nur ärgerlich! 😡"
    assert (blog["author"]["name"], blog["created_at"]) == ("Jürgen M.", "2026-11-03T08:15:00Z")
    reply = by_id["rss:tag:forum.example.org,2026:post-5002"]
    assert reply["reply_to_id"] == "rss:tag:forum.example.org,2026:post-5001"
    assert [r for r in handler.requests if r[0] == "blog-rss.xml"][1][1]  # the second poll was conditional
    letters = _since(connect_live, topics.dead_letter, dead_before)
    reasons = sorted(dict(m.headers)["triage.reason"].decode() for m in letters)
    assert reasons == ["entry has neither id/guid nor link"]  # the title-only entry is skipped, not a dead letter
    assert all(dict(m.headers)["triage.origin"].decode().startswith(f"rss:{url}/blog-rss.xml#entry-") for m in letters)

    # New items appear: only they are delivered.
    feed = (FEEDS / "blog-rss.xml").read_text(encoding="utf-8")
    handler.extra["blog-rss.xml"] = feed.replace("<item>", "<item><title>Neu</title><guid isPermaLink=\"false\">blog-c-200</guid>"
                                                 "<description>Danke für die schnelle Hilfe!</description></item><item>",
                                                 1).encode()
    before_new = _offsets(connect_live, topics.raw)
    assert main(["connect", "blog", "--sources", str(sources), "--once"]) == 0
    assert [json.loads(m.value)["id"] for m in _since(connect_live, topics.raw, before_new)] == ["rss:blog-c-200"]


@pytest.mark.integration
def test_webhook_accepts_signed_posts_and_refuses_bad_ones_with_reasons(connect_live: Settings, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.webhook import WebhookReceiver
    from core.kafka_writer import KafkaWriter
    writer = KafkaWriter(connect_live.kafka)
    receiver = WebhookReceiver("127.0.0.1", 0, "s3cret", "hmac", connect_live.kafka, writer)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.serve, args=(stop,), daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{receiver.port}/posts"

    def post(body: bytes, sig: str | None, timestamp: int | None = None) -> tuple[int, dict]:
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/json",
                   **({"X-Triage-Timestamp": str(timestamp), "X-Triage-Signature": sig} if sig else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(endpoint, body, headers, method="POST")) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        before = _offsets(connect_live, connect_live.kafka.topics.raw)
        good = json.dumps([{"id": "webhook:1", "source": "webhook", "text": "Bitte ruft mich zurück"},
                           {"id": "webhook:2", "source": "webhook", "text": "Danke!"}]).encode()
        now = int(time.time())
        assert post(good, signature("s3cret", good, now), now) == (202, {"accepted": 2})
        assert post(good, signature("s3cret", good, now), now) == (401, {"error": "replayed request"})
        assert post(good, signature("wrong", good, now + 1), now + 1) == (401, {"error": "wrong signature"})
        assert post(good, signature("s3cret", good, now - 3600), now - 3600)[0] == 401  # stale
        assert post(good, None)[0] == 401
        bad = json.dumps([{"id": "webhook:3", "source": "webhook", "text": "ok"},
                          {"id": "webhook:4", "source": "webhook"}]).encode()
        status, answer = post(bad, signature("s3cret", bad, now), now)
        assert status == 400 and "required" in answer["items"]["1"] and "text" in answer["items"]["1"]
        garbage = b"{not json"
        assert post(garbage, signature("s3cret", garbage, now), now)[0] == 400
        received = _since(connect_live, connect_live.kafka.topics.raw, before)
        assert sorted(m.key for m in received) == [b"webhook:1", b"webhook:2"]  # nothing of the refused requests
    finally:
        stop.set()
        thread.join(5)
        writer.close()


@pytest.mark.integration
def test_replay_keeps_the_order_and_scales_the_pace(connect_live: Settings, tmp_path: Path) -> None:
    rows = [{"id": f"replay:{i}", "source": "twitter", "text": f"Post {i}",
             "created_at": f"2026-11-05T10:00:{i * 10:02d}Z"} for i in (3, 0, 2, 1)]
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = _sources_file(tmp_path, [{"type": "replay", "name": "replay", "path": str(path), "speed": 20}])
    before = _offsets(connect_live, connect_live.kafka.topics.raw)
    started = time.monotonic()
    assert main(["connect", "--sources", str(sources), "--once"]) == 0
    elapsed = time.monotonic() - started
    assert elapsed >= 1.4  # 30 s of recorded time at 20x = 1.5 s
    received = _since(connect_live, connect_live.kafka.topics.raw, before)
    assert [m.key.decode() for m in received] == ["replay:0", "replay:1", "replay:2", "replay:3"]


def test_a_bad_sources_file_is_refused_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    config_file: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"type": "rss", "name": "Blog!", "url": "ftp://x"}]}))
    assert main(["connect", "--sources", str(path), "--once"]) == 2
    err = capsys.readouterr().err
    assert "sources.0.rss.name" in err and "sources.0.rss.url" in err
    path.write_text(yaml.safe_dump({"sources": [{"type": "webhook", "name": "hook", "secret_env": "NOPE_NOT_SET"}]}))
    assert main(["connect", "--sources", str(path)]) == 2
    assert "NOPE_NOT_SET is not set" in capsys.readouterr().err


def _api_sources(tmp_path: Path, apis) -> Path:  # type: ignore[no-untyped-def]
    from test_source_apis import entries
    chosen = entries(apis.url)
    return _sources_file(tmp_path, [chosen["reddit"], chosen["discourse"]])


EXPECTED_FIRST = {"reddit:t3_1ab04", "reddit:t3_1ab03", "reddit:t3_1ab02", "reddit:t1_9zz04", "reddit:t1_9zz03",
                  "reddit:t1_9zz02", "/t/40/2", "/t/40/1", "/t/39/1"}
EXPECTED_LATER = {"reddit:t3_1ab11", "reddit:t3_1ab09", "reddit:t3_1ab07", "reddit:t3_1ab06", "reddit:t1_9zz11",
                  "reddit:t1_9zz10", "reddit:t1_9zz08", "reddit:t1_9zz07", "/t/42/3", "/t/42/2", "/t/42/1"}


DELETED = {"reddit:t3_1ab10", "reddit:t1_9zz09", "/t/40/3"}  # removed at the source: deletion records, not posts


def _ids(records: list, kind: str = "post") -> list[str]:
    """The short ids of the posts (or, with kind="deletion", of the deletion records) among `records`."""
    keys = [m.key.decode() for m in records if (json.loads(m.value).get("kind") == "deletion") == (kind == "deletion")]
    return [key if key.startswith("reddit:") else key[key.index("/t/"):] for key in keys]


@pytest.fixture
def api_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from fake_apis import FakeApis
    from test_source_apis import SECRETS
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    apis = FakeApis()
    yield apis
    apis.close()


@pytest.mark.integration
def test_a_connector_killed_mid_round_resumes_without_gaps_or_duplicates(
        connect_live: Settings, api_stand_in, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    apis, sources = api_stand_in, _api_sources(tmp_path, api_stand_in)
    before = _offsets(connect_live, connect_live.kafka.topics.raw)
    assert main(["connect", "--sources", str(sources), "--once"]) == 0
    for listing in ("reddit/new", "reddit/comments", "discourse"):
        apis.publish(listing)
    apis.hold_after("reddit", 2)  # the round's second reddit page never comes: the process dies waiting for it
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "connect", "--sources", str(sources), "--once"],
                               env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert apis.holding.wait(60), "the connector never reached the held request"
        time.sleep(2)  # the other sources finish what they were doing; the kill lands in a waiting request
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    apis.hold = None
    apis.release.set()
    assert main(["connect", "--sources", str(sources), "--once"]) == 0  # the restart
    records = _since(connect_live, connect_live.kafka.topics.raw, before)
    assert sorted(_ids(records)) == sorted(EXPECTED_FIRST | EXPECTED_LATER)  # every post, each once
    assert sorted(_ids(records, "deletion")) == sorted(DELETED)  # every deletion, each once


@pytest.mark.integration
def test_the_broker_going_away_and_coming_back_loses_nothing(
        connect_live: Settings, api_stand_in, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from connectors.run import run
    from core import services
    from core.config import load_settings
    if os.environ.get("TRIAGE_KAFKA_BOOTSTRAP") or connect_live.services.kafka_server != "noida":
        pytest.skip("stops and restarts the local noida-db broker (tansu keeps no data; an external Kafka is not ours)")
    apis, sources = api_stand_in, _api_sources(tmp_path, api_stand_in)
    text = yaml.safe_load(sources.read_text())
    for source in text["sources"]:
        source["every_s"] = 1
    sources.write_text(yaml.safe_dump(text))
    monkeypatch.setenv("TRIAGE_KAFKA__REQUEST_TIMEOUT_S", "2")  # a write then gives up after 8 s (4 request timeouts)
    settings = load_settings()
    before = _offsets(connect_live, connect_live.kafka.topics.raw)
    stop = threading.Event()
    connector = threading.Thread(target=run, args=(settings, str(sources)), kwargs={"stop": stop}, daemon=True)
    connector.start()
    try:
        deadline = time.monotonic() + 60
        while len(_since(connect_live, connect_live.kafka.topics.raw, before)) < len(EXPECTED_FIRST):
            assert time.monotonic() < deadline, "the first round never reached Kafka"
        services.noida_control(connect_live.services, "stop", "kafka")
        try:
            for listing in ("reddit/new", "reddit/comments", "discourse"):
                apis.publish(listing)
            polls = len(apis.requests)
            time.sleep(12)  # polls go on while the broker is away; their writes time out (after 8 s each)
            assert len(apis.requests) > polls + 2
        finally:
            services.noida_control(connect_live.services, "start", "kafka")
        deadline = time.monotonic() + 120
        while set(_ids(_since(connect_live, connect_live.kafka.topics.raw, before))) != EXPECTED_FIRST | EXPECTED_LATER:
            assert time.monotonic() < deadline, "posts polled during the outage never reached Kafka"
            time.sleep(1)
    finally:
        stop.set()
        connector.join(30)
    assert not connector.is_alive()
