"""Khoros Community, Apple App Store reviews and Google Play reviews against local stand-ins of their APIs.

Each stand-in (a FakeHttpServer route) serves fixtures written in the API's documented format
(tests/fixtures/apis/{khoros,app_store,google_play}.json) three a page with the API's own paging: a
LiQL `CURSOR`, the feed's page number, Play's `token`. A first poll reads the newest page(s); after new
items appear, the next poll walks back through several pages to exactly where the last one stopped.
"""
from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import parse_qs, unquote

import google.auth.jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors import config as connect_config
from connectors.base import Source
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient, SourceUnavailable
from connectors.run import polling_sources
from connectors.testing import ListSink, poll
from core.config import Settings
from fake_apis import FIXTURES, PAGE, FakeHttpServer, Request

KHOROS_TOKEN, PLAY_TOKEN = "khoros-test-token", "ya29.play-test-token"
KHOROS_DENIED = {"status": "error", "message": "You are not authorized to make this request.", "http_code": 401,
                 "data": {"type": "error_data", "code": 203, "developer_message": "", "more_info": ""}, "metadata": {}}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


class Stand:
    """One API's stand-in: `visible` items newest first, `publish` puts the fixture's later ones on top,
    `fail_next` queues error answers (status, headers)."""

    def __init__(self, name: str) -> None:
        self.data = fixture(name)
        self.visible: list[Any] = copy.deepcopy(self.data["initial"])
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.server = FakeHttpServer()
        self.url = self.server.url

    def publish(self) -> None:
        self.visible = copy.deepcopy(self.data["later"]) + self.visible

    def fail_next(self, status: int, headers: Optional[dict[str, str]] = None, times: int = 1) -> None:
        self.failures += [(status, headers or {})] * times

    def failed(self, request: Request, body: Callable[[int], Any]) -> bool:
        """Answer with the next queued failure, in the API's error shape (`body(status)`), if there is one."""
        if not self.failures:
            return False
        status, headers = self.failures.pop(0)
        request.json(body(status), status, headers)
        return True

    def page(self, start: int) -> tuple[list[Any], Optional[int]]:
        """PAGE items from `start`, and where the next page starts (None at the end)."""
        return self.visible[start:start + PAGE], (start + PAGE if start + PAGE < len(self.visible) else None)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests


@pytest.fixture
def stands() -> Iterator[dict[str, Stand]]:
    made: dict[str, Stand] = {}

    def make(name: str) -> Stand:
        made[name] = Stand(name)
        return made[name]
    yield make  # type: ignore[misc]
    for stand in made.values():
        stand.server.close()


def build(entry: dict[str, Any], sleeps: Optional[list[float]] = None) -> list[Source]:
    cfg = connect_config.ConnectConfig.model_validate({"sources": [entry]}).sources[0]
    http = HttpClient("triage-tests", max_retries=2, backoff_s=0.01, sleep=(sleeps if sleeps is not None else []).append)
    return polling_sources(cfg, http)


class Poller:
    """Polls one source through the real runner into a ListSink, with its own checkpoint file."""

    def __init__(self, source: Source, settings: Settings, tmp_path: Path) -> None:
        self.source, self.kafka = source, settings.kafka
        self.store = CheckpointStore(str(tmp_path / f"checkpoints-{source.name.replace('/', '_')}.sqlite"))

    def poll(self) -> tuple[list[dict[str, Any]], list[Any], int]:
        """One pass: the posts and dead letters it delivered, and how many listed items it skipped."""
        sink = ListSink()
        done = poll(self.source, sink, self.kafka, self.store)
        letters = sink.dead_letters
        assert not [d for d in letters if d.reason.startswith("not a valid Post")], letters  # every post fits the schema
        return sink.posts, letters, done.skipped


# -- Khoros -------------------------------------------------------------------------------------------------------

LIQL = re.compile(r"^SELECT (?P<fields>.+) FROM messages WHERE board\.id = '(?P<board>[^']+)' ORDER BY post_time DESC "
                  r"LIMIT (?P<limit>\d+)(?: CURSOR '(?P<cursor>[^']+)')?$")


def khoros_stand(make) -> Stand:  # type: ignore[no-untyped-def]
    stand = make("khoros")

    def search(request: Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {KHOROS_TOKEN}":
            return request.json(KHOROS_DENIED, 401)
        if stand.failed(request, lambda status: {**KHOROS_DENIED, "message": "scripted failure", "http_code": status}):
            return None
        query = LIQL.match(unquote(request.path.split("?q=", 1)[1]))
        assert query, request.path
        start = int(base64.b64decode(query["cursor"]).decode().split(":")[1]) if query["cursor"] else 0
        items, following = stand.page(start)
        data: dict[str, Any] = {"type": "messages", "list_item_type": "message", "size": len(items), "items": items}
        if following is not None:
            data["next_cursor"] = base64.b64encode(f"offset:{following}".encode()).decode()  # opaque, like Khoros's
        request.json({"status": "success", "message": "", "http_code": 200, "data": data, "metadata": {}})

    stand.server.route("GET /khoros/api/2.0/search", search)
    return stand


def khoros_entry(stand: Stand, **changes: Any) -> dict[str, Any]:
    return {"type": "khoros", "name": "telco-forum", "url": f"{stand.url}/khoros", "boards": ["mobilfunk"],
            "token_env": "T_KHOROS_TOKEN", **changes}


@pytest.fixture
def khoros(stands, monkeypatch: pytest.MonkeyPatch) -> Stand:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("T_KHOROS_TOKEN", KHOROS_TOKEN)
    return khoros_stand(stands)


def test_khoros_walks_the_liql_cursor_and_a_second_round_reads_only_new_messages(
        khoros: Stand, settings: Settings, tmp_path: Path) -> None:
    [source] = build(khoros_entry(khoros, backfill_pages=3))
    assert source.name == "telco-forum/mobilfunk"
    poller = Poller(source, settings, tmp_path)
    posts, letters, skipped = poller.poll()
    assert [p["id"].rsplit("/", 1)[1] for p in posts] == ["2290305", "2290260", "2290210", "2290180", "2290150", "2290100"]
    assert (letters, skipped) == ([], 1)  # the message without a body (an attachment) is not a post
    queries = [unquote(r.path.split("?q=", 1)[1]) for r in khoros.requests]
    assert len(queries) == 3 and all(LIQL.match(q)["limit"] == "100" for q in queries)  # type: ignore[index]
    assert "CURSOR" not in queries[0] and "CURSOR '" in queries[1]
    assert "kudos.sum(weight)" in queries[0] and "conversation.solved" in queries[0]

    khoros.publish()
    khoros.requests.clear()
    posts, letters, _ = poller.poll()
    assert [p["id"].rsplit("/", 1)[1] for p in posts] == ["2290520", "2290480", "2290430", "2290400"]
    assert len(khoros.requests) == 3  # walked back to the last round's newest message, not further
    assert [d.origin for d in letters] == [f"khoros:{khoros.url}/khoros/board/mobilfunk"]  # the one without post_time
    assert b"2290511" in letters[0].payload
    assert poller.poll()[0] == []


def test_khoros_maps_thread_parent_staff_rank_kudos_and_solution(khoros: Stand, settings: Settings,
                                                                  tmp_path: Path) -> None:
    [source] = build(khoros_entry(khoros, backfill_pages=3))
    posts = {p["id"].rsplit("/", 1)[1]: p for p in Poller(source, settings, tmp_path).poll()[0]}
    host = khoros.url.split("//")[1]
    answer, moved, complaint, topic = posts["2290305"], posts["2290260"], posts["2290210"], posts["2290100"]
    assert answer["id"] == f"khoros:{host}/2290305" and answer["source"] == "khoros"
    assert answer["thread_id"] == f"khoros:{host}/2290100" and answer["reply_to_id"] == f"khoros:{host}/2290210"
    assert answer["author"] == {"id": "1200", "handle": "Telco_Lena", "name": "Telco_Lena", "is_brand": True,
                                "role": "employee"}
    assert answer["metadata"] | {"board": "mobilfunk"} == {
        "community": host, "board": "mobilfunk", "rank": "Employee", "kudos": 4, "is_solution": True,
        "thread_solved": True, "depth": 2}
    assert answer["title"] is None and answer["created_at"] == "2026-11-05T09:41:12Z"
    assert moved["author"]["is_brand"] is True and moved["author"]["role"] == "moderator"
    assert complaint["author"]["is_brand"] is False and complaint["author"]["role"] is None
    assert complaint["metadata"]["rank"] == "Neuling" and complaint["metadata"]["is_solution"] is False
    assert complaint["text"] == "Immer noch kein Netz, weder LTE noch 5G. 😡\nIch brauche das Handy für die Arbeit!"
    assert complaint["edited_at"] == "2026-11-05T09:03:10Z"
    assert topic["title"] == "Kein Netz seit Montag in 50667 Köln" and topic["reply_to_id"] is None
    assert topic["thread_id"] == topic["id"] and topic["edited_at"] is None
    assert topic["url"].endswith("/m-p/2290100#M2290100")


def test_khoros_staff_ranks_are_configurable_and_a_session_key_is_sent(khoros: Stand, settings: Settings,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_KHOROS_SESSION", "session-key-1")
    [source] = build(khoros_entry(khoros, staff_ranks=["Kenner"], session_key_env="T_KHOROS_SESSION"))
    posts = {p["id"].rsplit("/", 1)[1]: p for p in Poller(source, settings, tmp_path).poll()[0]}
    assert posts["2290305"]["author"]["is_brand"] is False  # "Employee" is not named any more
    assert khoros.requests[0].headers["li-api-session-key"] == "session-key-1"
    assert khoros.requests[0].headers["Authorization"] == f"Bearer {KHOROS_TOKEN}"


def test_khoros_errors_fail_clearly_and_keep_the_checkpoint(khoros: Stand, settings: Settings, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    [source] = build(khoros_entry(khoros), sleeps)
    poller = Poller(source, settings, tmp_path)
    poller.poll()
    before = poller.store.state(source.name)
    khoros.publish()

    khoros.fail_next(429, {"Retry-After": "7"}, times=3)  # more than the client's 2 retries
    with pytest.raises(SourceUnavailable, match=r"GET .*/khoros/api/2.0/search failed after 2 retries \(HTTP 429\)"):
        poller.poll()
    assert sleeps == [7.0, 7.0]  # waited as long as Retry-After said, each time
    assert poller.store.state(source.name) == before

    monkeypatch.setenv("T_KHOROS_TOKEN", "revoked")
    [revoked] = build(khoros_entry(khoros))
    with pytest.raises(SourceUnavailable, match="answered HTTP 401: .*not authorized.*check the credentials"):
        Poller(revoked, settings, tmp_path).poll()
    assert poller.store.state(source.name) == before

    posts, _, _ = poller.poll()  # the API is back: nothing was lost
    assert [p["id"].rsplit("/", 1)[1] for p in posts] == ["2290520", "2290480", "2290430", "2290400"]


# -- App Store ----------------------------------------------------------------------------------------------------

FEED_PATH = re.compile(r"^/apple/(?P<country>[a-z]{2})/rss/customerreviews/page=(?P<page>\d+)/id=(?P<app>\d+)/"
                       r"sortby=mostrecent/json$")


@pytest.fixture
def apple(stands) -> Stand:  # type: ignore[no-untyped-def]
    stand = stands("app_store")

    def feed(request: Request) -> None:
        if stand.failed(request, lambda status: {"errorMessage": "scripted failure"}):
            return None
        match = FEED_PATH.match(request.route)
        assert match and match["app"] == stand.data["app_id"], request.path
        page = int(match["page"])
        entries, _ = stand.page((page - 1) * PAGE)
        body = dict(stand.data["feed"])
        if entries:  # the feed leaves "entry" out when a page is empty, and sends one entry as an object
            body["entry"] = entries[0] if len(entries) == 1 else entries
        request.json({"feed": body})

    stand.server.route("GET /apple/", feed)
    return stand


def apple_entry(stand: Stand, **changes: Any) -> dict[str, Any]:
    return {"type": "app_store", "name": "ios", "app_id": stand.data["app_id"], "countries": ["de"],
            "feed_url": f"{stand.url}/apple", **changes}


def test_app_store_reads_pages_of_the_feed_and_then_only_new_reviews(apple: Stand, settings: Settings,
                                                                     tmp_path: Path) -> None:
    [source] = build(apple_entry(apple, backfill_pages=10))
    assert source.name == "ios/de"
    poller = Poller(source, settings, tmp_path)
    posts, letters, skipped = poller.poll()
    assert [p["id"] for p in posts] == [f"app_store:1100000000{n}" for n in (6, 5, 4, 3, 1)]
    assert skipped == 1 and len(letters) == 1 and letters[0].reason == "review has no id or updated time"
    # page 3 holds one review (sent as an object); page 4 is empty and ends the walk
    assert [FEED_PATH.match(r.route)["page"] for r in apple.requests] == ["1", "2", "3", "4"]  # type: ignore[index]

    apple.publish()
    apple.requests.clear()
    posts, letters, _ = poller.poll()
    assert [p["id"] for p in posts] == [f"app_store:1100000000{n}" for n in (9, 8, 7)]
    assert letters == [] and len(apple.requests) == 2  # page 2 starts with the last round's newest review


def test_app_store_maps_rating_version_title_and_an_unknown_reply_state(apple: Stand, settings: Settings,
                                                                        tmp_path: Path) -> None:
    [source] = build(apple_entry(apple))
    posts, _, _ = Poller(source, settings, tmp_path).poll()
    review = posts[0]
    assert review == {
        "id": "app_store:11000000006", "source": "app_store", "title": "Abo nicht kündbar",
        "text": "Seit dem Update finde ich die Kündigung nicht mehr. Ich will mein Abo beenden!",
        "url": "https://apps.apple.com/de/app/id1234567890?see-all=reviews",
        "author": {"name": "Kunde2026", "is_brand": False}, "created_at": "2026-11-05T09:10:00Z",
        "thread_id": "app_store:11000000006",
        "metadata": {"app_id": "1234567890", "country": "de", "rating": 1, "app_version": "5.2.1",
                     "reply_state": "unknown"}}
    assert [p["metadata"]["rating"] for p in posts] == [1, 2, 5]


def test_app_store_stops_at_the_tenth_page_and_reports_feed_errors(apple: Stand, settings: Settings,
                                                                   tmp_path: Path) -> None:
    [source] = build(apple_entry(apple))
    assert source.listing("10", None).older is None  # type: ignore[attr-defined]
    # an empty page ends the walk too
    assert source.listing("9", None).older is None  # type: ignore[attr-defined]
    poller = Poller(source, settings, tmp_path)
    apple.fail_next(503, times=3)
    with pytest.raises(SourceUnavailable, match=r"customerreviews/page=1/id=1234567890/sortby=mostrecent/json failed "
                                                r"after 2 retries \(HTTP 503\)"):
        poller.poll()
    assert poller.store.state(source.name) == {}
    assert len(poller.poll()[0]) == 3


# -- Google Play --------------------------------------------------------------------------------------------------

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
PLAY_ERRORS = {401: ("Request had invalid authentication credentials.", "UNAUTHENTICATED"),
               429: ("Quota exceeded for quota metric 'Queries'.", "RESOURCE_EXHAUSTED")}


@pytest.fixture
def play(stands, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stand:  # type: ignore[no-untyped-def]
    stand = stands("google_play")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a throwaway service-account key
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token_uri = f"{stand.url}/oauth2/token"
    key_file = tmp_path / "play-service-account.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "telco-triage", "private_key_id": "k1",
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": "triage@telco-triage.iam.gserviceaccount.com", "client_id": "1000",
        "token_uri": token_uri}))
    monkeypatch.setenv("T_PLAY_KEY_FILE", str(key_file))
    stand.grants: list[dict[str, Any]] = []  # type: ignore[attr-defined]

    def token(request: Request) -> None:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        # signed with the key file's key; google-auth names Google's token endpoint as audience wherever it posts
        claims = google.auth.jwt.decode(form["assertion"], certs=public.decode(), audience=GOOGLE_TOKEN_AUDIENCE)
        stand.grants.append({"grant_type": form["grant_type"], **claims})  # type: ignore[attr-defined]
        request.json({"access_token": PLAY_TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    def reviews(request: Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {PLAY_TOKEN}":
            return request.json({"error": {"code": 401, "message": PLAY_ERRORS[401][0], "status": PLAY_ERRORS[401][1]}},
                                401)
        if stand.failed(request, lambda status: {"error": {"code": status, "message": PLAY_ERRORS[status][0],
                                                           "status": PLAY_ERRORS[status][1]}}):
            return None
        assert request.route == f"/play/androidpublisher/v3/applications/{stand.data['package_name']}/reviews"
        start = int(request.query["token"].removeprefix("next-")) if "token" in request.query else 0
        items, following = stand.page(start)
        answer: dict[str, Any] = {"reviews": items, "pageInfo": {"totalResults": len(items), "resultPerPage": PAGE,
                                                                 "startIndex": start}}
        if following is not None:
            answer["tokenPagination"] = {"nextPageToken": f"next-{following}"}
        request.json(answer)

    stand.server.route("POST /oauth2/token", token)
    stand.server.route("GET /play/", reviews)
    return stand


def play_entry(stand: Stand, **changes: Any) -> dict[str, Any]:
    return {"type": "google_play", "name": "android", "package_name": stand.data["package_name"],
            "service_account_file_env": "T_PLAY_KEY_FILE", "api_url": f"{stand.url}/play", **changes}


def test_google_play_gets_a_service_account_token_and_pages_with_next_page_token(
        play: Stand, settings: Settings, tmp_path: Path) -> None:
    [source] = build(play_entry(play, backfill_pages=2, translation_language="de"))
    poller = Poller(source, settings, tmp_path)
    posts, letters, _ = poller.poll()
    assert [p["id"] for p in posts] == [f"google_play:gp:AOqpTOH-100{n}" for n in (6, "5/reply", 5, 4, "2/reply", 2, 1)]
    assert [d.reason for d in letters] == ["review has no reviewId or userComment.lastModified"]
    [grant] = play.grants  # type: ignore[attr-defined]  # one token for both pages
    assert grant["grant_type"] == JWT_BEARER and grant["scope"] == "https://www.googleapis.com/auth/androidpublisher"
    assert grant["iss"] == "triage@telco-triage.iam.gserviceaccount.com"
    listed = [r for r in play.requests if r.route.endswith("/reviews")]
    assert [r.query.get("token") for r in listed] == [None, "next-3"]
    assert all(r.query["translationLanguage"] == "de" and r.headers["Authorization"] == f"Bearer {PLAY_TOKEN}"
               for r in listed)

    play.publish()
    posts, _, _ = poller.poll()
    assert [p["id"] for p in posts] == [f"google_play:gp:AOqpTOH-100{n}" for n in (9, "8/reply", 8, 7)]
    assert len(play.grants) == 1  # type: ignore[attr-defined]  # the token is reused until it expires


def test_google_play_maps_stars_version_device_and_the_developer_reply(play: Stand, settings: Settings,
                                                                       tmp_path: Path) -> None:
    [source] = build(play_entry(play, backfill_pages=2))
    posts = {p["id"].rsplit("-", 1)[1]: p for p in Poller(source, settings, tmp_path).poll()[0]}
    crash, answered, english, edited, regional = posts["1006"], posts["1005"], posts["1004"], posts["1002"], posts["1001"]
    assert crash["text"] == "Die App stürzt seit dem letzten Update beim Start ab. 😡" and crash["title"] is None
    assert crash["created_at"] == "2025-11-05T08:50:00Z" and crash["lang_hint"] == "de"
    assert crash["author"] == {"name": "Andreas Müller", "is_brand": False}
    assert {k: crash["metadata"][k] for k in ("rating", "app_version", "app_version_code", "device",
                                               "android_os_version", "developer_reply", "answered_at", "reply_state")} == {
        "rating": 1, "app_version": "7.4.0", "app_version_code": 740, "device": "a52q", "android_os_version": 33,
        "developer_reply": None, "answered_at": None, "reply_state": "unanswered"}
    assert answered["title"] == "Rechnung doppelt" and answered["text"] == "Mir wurde im Oktober zweimal abgebucht."
    assert answered["metadata"]["developer_reply"] == {
        "text": "Hallo Petra, das tut uns leid. Bitte schreib uns per DM, wir erstatten den Betrag.",
        "at": "2025-11-05T08:40:00Z"}
    assert answered["metadata"]["answered_at"] == "2025-11-05T08:40:00Z"
    assert answered["metadata"]["reply_state"] == "answered" and answered["edited_at"] is None
    assert english["author"]["name"] is None and english["lang_hint"] == "en" and english["metadata"]["rating"] == 5
    assert edited["edited_at"] == edited["created_at"] == "2025-11-05T07:36:40Z"  # changed after the reply
    assert edited["metadata"]["reply_state"] == "answered"
    assert regional["lang_hint"] == "de"  # "de_DE"
    # The developer's reply is also the brand's own post in the review's thread: it answers the review's case.
    reply = posts["1005/reply"]
    assert reply["text"] == answered["metadata"]["developer_reply"]["text"]
    assert reply["author"] == {"name": "developer", "is_brand": True, "role": "developer"}
    assert reply["thread_id"] == reply["reply_to_id"] == answered["id"] and reply["created_at"] == "2025-11-05T08:40:00Z"


def test_google_play_renews_the_token_once_on_401_then_fails_clearly(play: Stand, settings: Settings,
                                                                      tmp_path: Path) -> None:
    [source] = build(play_entry(play))
    poller = Poller(source, settings, tmp_path)
    poller.poll()
    before = poller.store.state(source.name)
    play.publish()
    play.fail_next(401)
    posts, _, _ = poller.poll()  # a revoked token: renewed once, the page read
    assert len(posts) == 4 and len(play.grants) == 2  # type: ignore[attr-defined]  # 3 reviews, 1 developer reply
    assert poller.store.state(source.name) != before

    before = poller.store.state(source.name)
    play.fail_next(401, times=2)
    with pytest.raises(SourceUnavailable, match="google_play de.example.telco.app answered HTTP 401: Request had "
                                                "invalid authentication credentials.*check the credentials"):
        poller.poll()
    assert poller.store.state(source.name) == before


def test_google_play_429_waits_as_told_and_keeps_the_checkpoint(play: Stand, settings: Settings,
                                                                 tmp_path: Path) -> None:
    sleeps: list[float] = []
    [source] = build(play_entry(play), sleeps)
    poller = Poller(source, settings, tmp_path)
    poller.poll()
    before = poller.store.state(source.name)
    play.publish()
    play.fail_next(429, {"Retry-After": "30"}, times=3)
    with pytest.raises(SourceUnavailable, match=r"failed after 2 retries \(HTTP 429\)"):
        poller.poll()
    assert sleeps == [30.0, 30.0] and poller.store.state(source.name) == before
    assert [p["id"].split("-")[-1] for p in poller.poll()[0]] == ["1009", "1008/reply", "1008", "1007"]


def test_google_play_a_bad_key_file_stops_the_source_with_a_clear_error(play: Stand, settings: Settings,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PLAY_KEY_FILE", str(tmp_path / "missing.json"))
    [source] = build(play_entry(play))  # building reads nothing: other sources of the process still start
    with pytest.raises(SourceUnavailable, match="cannot read the service-account key file.*missing.json"):
        Poller(source, settings, tmp_path).poll()


def test_google_play_a_refused_token_grant_is_reported_with_googles_reason(play: Stand, settings: Settings,
                                                                           tmp_path: Path) -> None:
    play.server.route("POST /oauth2/token", lambda request: request.json(
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400))
    [source] = build(play_entry(play))
    with pytest.raises(SourceUnavailable, match="token request failed .*invalid_grant: Invalid JWT Signature.*"
                                                "Play Console permissions"):
        Poller(source, settings, tmp_path).poll()
    assert not [r for r in play.requests if r.route.endswith("/reviews")]  # no request without a token


# -- configuration --------------------------------------------------------------------------------------------------

def test_sources_file_accepts_the_three_types_and_names_their_mistakes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import _source_types
    assert {"khoros", "app_store", "google_play"} <= set(_source_types())  # `triage connect --help` lists them
    monkeypatch.setenv("T_KEY", "/secrets/play.json")
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n"
                    "  - {type: khoros, name: forum, url: https://community.example.de, boards: [mobilfunk, festnetz]}\n"
                    "  - {type: app_store, name: ios, app_id: '1234567890', countries: [de, at]}\n"
                    "  - {type: google_play, name: android, package_name: de.example.app, service_account_file_env: T_KEY}\n")
    cfg = connect_config.load(str(path))
    http = HttpClient("triage-tests")
    assert [[s.name for s in polling_sources(c, http)] for c in cfg.sources] == [
        ["forum/mobilfunk", "forum/festnetz"], ["ios/de", "ios/at"], ["android"]]
    path.write_text("sources:\n"
                    "  - {type: khoros, name: forum, url: https://community.example.de, boards: [\"x' OR '1'='1\"]}\n"
                    "  - {type: app_store, name: ios, app_id: abc}\n"
                    "  - {type: google_play, name: android, package_name: de.example.app}\n")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(connect_config.ConnectConfigError) as err:
        connect_config.load(str(path))
    message = str(err.value)
    assert "sources.0.khoros.boards.0" in message and "sources.1.app_store.app_id" in message


def test_a_review_answered_by_the_developer_is_an_answered_case(play: Stand, settings: Settings,
                                                                 tmp_path: Path) -> None:
    """The conversations issue counts a developer reply as the answer, like a brand reply on any channel."""
    from triage.cases import merge
    [source] = build(play_entry(play, backfill_pages=2))
    posts = {p["id"].rsplit("-", 1)[1]: p for p in Poller(source, settings, tmp_path).poll()[0]}
    case = None
    for post in (posts["1005"], posts["1005/reply"]):  # the pipeline routes the customer's review; the reply is the brand's
        case = merge(case, {**post, "triage": {"queue": "social", "priority": "P3", "due_at": "2025-11-05T16:00:00Z"}}
                     if not post["author"]["is_brand"] else post)
    assert case is not None and case["status"] == "answered" and case["answered_via"] == "channel"
    assert [p["role"] for p in case["posts"]] == ["customer", "brand"] and case["first_response_seconds"] >= 0
