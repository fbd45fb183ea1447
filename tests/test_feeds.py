"""The RSS/Atom connector (connectors/rss.py) on real-world feed shapes, through the real runner.

Every feed in tests/fixtures/feeds/ is written in the shape of a real publisher (WordPress, Drupal,
Craigslist RDF, Blogger Atom 0.3, Reddit, YouTube, GitHub, Mastodon, Discourse, feeds in Big5 or
UTF-16, broken ones) and served by FakeHttpServer with the Content-Type such a server sends.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import feedparser
import pytest

from cli.main import main
from connectors import feed_check
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient
from connectors.rss import FeedSource
from connectors.testing import ListSink, poll
from connectors.text import html_to_text
from core.config import Settings
from core.records import DeadLetter
from fake_apis import FakeHttpServer, Request

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"
CONTENT_TYPES = {  # what the publisher's server sends; the rest is served as application/xml, no charset
    "latin1-charset-in-http-only.xml": "application/rss+xml; charset=ISO-8859-1",
    "koi8r-charset-in-http-only.xml": "text/xml; charset=KOI8-R",
    "text-xml-no-charset.xml": "text/xml",
    "not-a-feed.html": "text/html; charset=utf-8",
    "blog-rss.xml": "application/xml; charset=utf-8",
    "youtube-channel.xml": "text/xml; charset=UTF-8",
    "github-releases.atom": "application/atom+xml; charset=utf-8",
}
# Entries that are dead letters on purpose: everything else in the corpus must become a post or a skip.
EXPECTED_DEAD_LETTERS = {"blog-rss.xml": 1, "one-broken-entry.xml": 2, "not-a-feed.html": 1, "truncated.xml": 1}


class FeedServer:
    """Serves the fixture feeds (or a replacement body per name), with ETags unless `etags` is off."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.etags = True
        self.server = FakeHttpServer({"GET /": self.feed})
        self.url = self.server.url

    def body(self, name: str) -> bytes:
        return self.bodies.get(name) or (FEEDS / name).read_bytes()

    def feed(self, request: Request) -> None:
        name = request.route.lstrip("/")
        body = self.body(name)
        headers = {"Content-Type": CONTENT_TYPES.get(name, "application/xml")}
        if self.etags:
            headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:12]}"'
            if request.headers.get("If-None-Match") == headers["ETag"]:
                return request.respond(304)
        request.respond(200, body, headers)


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.server.close()


class Reader:
    """One feed source polled through the real runner into a ListSink, with its own checkpoints."""

    def __init__(self, feeds: FeedServer, name: str, settings: Settings, tmp_path: Path,
                 store: Optional[CheckpointStore] = None) -> None:
        self.url = f"{feeds.url}/{name}"
        self.source = FeedSource(name.replace(".", "-"), self.url, 0, HttpClient("test", max_retries=0))
        self.store = store or CheckpointStore(str(tmp_path / f"{name}.sqlite"))
        self.kafka = settings.kafka

    def poll(self) -> tuple[dict[str, dict], list[DeadLetter], int]:
        """One poll: the posts by id, the dead letters and the skip count it delivered."""
        sink = ListSink()
        done = poll(self.source, sink, self.kafka, self.store)
        return {p["id"]: p for p in sink.posts}, sink.dead_letters, done.skipped


Read = Callable[[str], tuple[dict[str, dict], list[DeadLetter], int]]


@pytest.fixture
def read(feeds: FeedServer, settings: Settings, tmp_path: Path) -> Read:
    """read(name) -> (posts by id, dead letters, skipped) of a first poll of that fixture feed."""
    return lambda name: Reader(feeds, name, settings, tmp_path).poll()


@pytest.mark.parametrize("name, expected", [
    ("rss091-netscape.xml", {"rss:https://hilfe.stadtwerke.example/frage/881":
                             "Mein Zählerstand wurde falsch übernommen, die Abrechnung ist viel zu hoch."}),
    ("rss092-userland.xml", {"rss:https://kundenstimmen.example/s/3": "Warum kostet die Hotline Geld?"}),
    ("craigslist-rss10.rdf", {"rss:https://berlin.craigslist.example/ele/d/modem/7712002.html":
                              "Works fine, switched provider. Pick-up in Neukölln."}),
    ("wordpress-comments.xml", {"rss:https://blog.telco.example/?p=410#comment-9912":
                                "Zum dritten Mal in zwei Jahren teurer. Ich kündige zum Jahresende."}),
    ("atom03-blogger.xml", {"rss:tag:blogger.com,1999:blog-1.post-5":
                            "Fünfter Tag ohne Festnetz. Der Techniker kam wieder nicht."}),
    ("forum-atom.xml", {"rss:tag:forum.example.org,2026:post-5001":
                        "Mein Router blinkt seit heute morgen rot, kein Internet."}),
])
def test_every_feed_format_becomes_posts(read: Read, name: str, expected: dict[str, str]) -> None:
    posts, letters, skipped = read(name)
    entries = len(feedparser.parse(io.BytesIO((FEEDS / name).read_bytes())).entries)
    assert (len(posts), letters, skipped) == (entries, [], 0)
    for post_id, text in expected.items():
        assert posts[post_id]["text"] == text


def test_rdf_and_atom_03_keep_their_dates_and_authors(read: Read) -> None:
    rdf, _, _ = read("craigslist-rss10.rdf")
    assert rdf["rss:https://berlin.craigslist.example/ele/d/router/7712001.html"]["created_at"] == "2026-11-02T17:04:11Z"
    atom03, _, _ = read("atom03-blogger.xml")
    post = atom03["rss:tag:blogger.com,1999:blog-1.post-5"]
    assert (post["created_at"], post["author"], post["title"]) == ("2026-11-01T08:30:00Z", {"name": "Heike"},
                                                                    "Tag 5 ohne Festnetz")


@pytest.mark.parametrize("name, post_id, text", [
    ("leading-whitespace.xml", "rss:shop-review-77", "Die Lieferung kam zwei Tage zu spät, sonst alles gut."),
    ("utf8-bom.xml", "rss:stoerung-2026-11-02", "Störung im Mobilfunknetz in Wien-Favoriten, Techniker sind unterwegs."),
    ("html-entities.xml", "rss:fr-3001", "Impossible de résilier mon abonnement\xa0: le formulaire plante… Merci\xa0!"),
    ("latin1-charset-in-http-only.xml", "rss:ch-12", "Mein Anschluss ist seit Dienstag tot. Grüße, Jürg"),
    ("koi8r-charset-in-http-only.xml", "rss:ru-501", "Третий день нет интернета, поддержка не отвечает."),
    ("text-xml-no-charset.xml", "rss:old-1", "Funkloch in der Müllerstraße, seit Wochen."),
    ("windows-1252-smart-quotes.xml", "rss:uk-7", "I’ve been charged £45 – twice – for a “free” upgrade…"),
    ("big5-news.xml", "rss:tw-88", "我家的網路已經斷線三天了，客服一直沒有回覆。"),
    ("euc-kr-news.xml", "rss:kr-41", "인터넷이 사흘째 끊겼는데 고객센터는 답이 없습니다."),
    ("gb2312-news.xml", "rss:cn-17", "我家的宽带已经断了三天，客服一直没有回复。"),
    ("utf16-feed.xml", "rss:urn:x-feed:utf16:1",
     "Ich habe vor vier Wochen gekündigt und noch keine Bestätigung – Grüße, Ömer"),
    ("bogus-encoding.xml", "rss:cms-1", "The app shows error 503 since this morning. Grüße"),
])
def test_bytes_entities_and_encodings_of_real_servers_are_read(read: Read, name: str, post_id: str, text: str) -> None:
    posts, letters, _ = read(name)
    assert posts[post_id]["text"] == text
    assert letters == []


def test_html_entities_give_a_readable_title(read: Read) -> None:
    posts, _, _ = read("html-entities.xml")
    assert posts["rss:fr-3001"]["title"] == "Résiliation impossible"
    assert posts["rss:fr-3002"]["text"] == "Ma facture de novembre est «\xa0en attente\xa0» depuis 10 jours."


def test_a_recovered_problem_is_one_warning_per_change(feeds: FeedServer, settings: Settings, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    feeds.etags = False  # the server sends the same body again and again
    caplog.set_level(logging.DEBUG, logger="connectors.rss")
    reader = Reader(feeds, "bogus-encoding.xml", settings, tmp_path)

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "connectors.rss" and r.levelno == logging.WARNING]

    assert len(reader.poll()[0]) == 1 and len(warnings()) == 1
    assert "x-no-such-charset" in warnings()[0].fields["problem"]  # type: ignore[attr-defined]
    assert reader.poll()[0] == {}  # the same post again is a duplicate, the same problem no new warning
    assert len(warnings()) == 1
    feeds.bodies["bogus-encoding.xml"] = (FEEDS / "html-entities.xml").read_bytes()
    assert len(reader.poll()[0]) == 2 and len(warnings()) == 2


def test_xhtml_content_and_media_descriptions_are_the_text(read: Read) -> None:
    reddit, _, _ = read("reddit-atom-xhtml.xml")
    assert [p["text"] for p in reddit.values()] == [
        "Three weeks since the fiber install was cancelled without notice.\nAnyone got a number that works?",
        "Is the new modem worth the upgrade fee?"]
    youtube, letters, skipped = read("youtube-channel.xml")
    video = youtube["rss:yt:video:aB3dE5gH7jK"]
    assert video["text"] == "So startet ihr euren Router richtig neu, wenn das Internet hängt."
    assert (video["url"], video["created_at"]) == ("https://www.youtube.example/watch?v=aB3dE5gH7jK",
                                                   "2026-11-03T15:00:06Z")
    assert (list(youtube), letters, skipped) == (["rss:yt:video:aB3dE5gH7jK"], [], 1)  # the short has no description


def test_relative_links_resolve_against_xml_base_or_the_feed_url(read: Read, feeds: FeedServer) -> None:
    github, letters, _ = read("github-releases.atom")
    release = github["rss:tag:github.com,2008:Repository/1234/v2.4.1"]
    assert release["url"] == f"{feeds.url}/telco/router-fw/releases/tag/v2.4.1"
    assert (release["text"], letters) == ("Fixes the WLAN drop after 60 minutes. See #88.", [])
    based, _, _ = read("xml-base-relative.xml")
    assert sorted(p["url"] for p in based.values()) == ["https://community.example.net/forum/threads/4411",
                                                        "https://community.example.net/help/roaming"]
    links, _, _ = read("link-only-items.xml")
    assert f"rss:{feeds.url}/beschwerden/2026/11/04/2" in links  # an item known by a relative link only


def test_dates_become_rfc3339_utc(read: Read) -> None:
    dated, _, _ = read("dates-rfc822-rfc3339.xml")
    assert {i: p["created_at"] for i, p in dated.items()} == {
        "rss:d-gmt": "2026-11-03T09:15:00Z", "rss:d-est": "2026-11-03T09:15:00Z", "rss:d-noday": "2026-11-03T09:15:00Z",
        "rss:d-3339": "2026-11-03T09:15:00Z", "rss:d-frac": "2026-11-03T09:15:00Z", "rss:d-none": None}
    drupal, letters, _ = read("dc-date-rss20.xml")
    assert letters == []
    post = drupal["rss:314%20at%20https://verein.example"]  # Drupal's guid, its spaces encoded
    assert (post["created_at"], post["author"]) == ("2026-11-03T08:15:00Z", {"name": "kassenwart"})


def test_entries_with_only_a_title_or_an_image_are_skipped_not_dead_letters(read: Read) -> None:
    posts, letters, skipped = read("title-only-and-images.xml")
    assert (letters, skipped) == ([], 3)
    assert {i: p["text"] for i, p in posts.items()} == {
        "rss:ig-3": "Router mit rot blinkender LED, kein Internet seit heute",
        "rss:ig-4": "Screenshot der Rechnung mit doppelter Abbuchung"}
    mastodon, _, _ = read("mastodon-account.rss")
    assert [p["text"] for p in mastodon.values()] == [
        "Störung in #Hamburg behoben.", "Karte: Ausfallgebiet Hamburg-Nord, grün = wieder online",
        "Neue Ausfallkarte für Bremen."]  # the status's words win over its image's description


def test_one_broken_entry_never_costs_the_rest(read: Read, feeds: FeedServer) -> None:
    posts, letters, _ = read("one-broken-entry.xml")
    assert sorted(posts) == ["rss:hm-1", "rss:hm-2", "rss:hm-5"]
    assert posts["rss:hm-2"]["text"] == "AT&T & Vodafone both < 10 Mbit here"  # markup broken, words kept
    assert [d.reason for d in letters] == ["entry has neither id/guid nor link",
                                           "not a valid Post: id: must satisfy maxLength=512"]
    assert letters[0].origin == f"rss:{feeds.url}/one-broken-entry.xml#entry-2"


def test_an_unreadable_feed_is_reported_once_per_change(feeds: FeedServer, settings: Settings, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    feeds.etags = False
    caplog.set_level(logging.DEBUG, logger="connectors.rss")
    reader = Reader(feeds, "feed.xml", settings, tmp_path)
    feeds.bodies["feed.xml"] = (FEEDS / "not-a-feed.html").read_bytes()
    _, letters, _ = reader.poll()
    assert [(d.origin, d.reason.split(":")[0]) for d in letters] == [(f"rss:{reader.url}", "feed cannot be read")]
    assert letters[0].payload.startswith(b"<!DOCTYPE html>")
    assert reader.poll() == ({}, [], 0)  # the same broken body: nothing new
    assert any(r.levelno == logging.DEBUG and "already reported" in r.getMessage() for r in caplog.records)
    truncated = (FEEDS / "truncated.xml").read_bytes()
    feeds.bodies["feed.xml"] = truncated
    assert [d.reason for d in reader.poll()[1]] == [
        "feed cannot be read: SAXParseException: <unknown>:4:42: no element found"]
    feeds.bodies["feed.xml"] = truncated.replace(b"<channel>", b"<channel>\n<title>News</title>")
    assert reader.poll() == ({}, [], 0)  # cut off at another place: the same problem
    feeds.bodies["feed.xml"] = (FEEDS / "forum-atom.xml").read_bytes()
    assert len(reader.poll()[0]) == 2  # repaired
    feeds.bodies["feed.xml"] = b"<html><body>Maintenance until 10:00</body></html>"
    assert len(reader.poll()[1]) == 1  # broken again, another way: a new incident


def test_an_empty_feed_is_not_a_broken_one(read: Read) -> None:
    assert read("empty-channel.xml") == ({}, [], 0)


def test_unchanged_feed_costs_one_304(feeds: FeedServer, settings: Settings, tmp_path: Path) -> None:
    reader = Reader(feeds, "blog-rss.xml", settings, tmp_path)
    assert len(reader.poll()[0]) == 2
    assert reader.poll() == ({}, [], 0)
    first, second = feeds.server.requests
    assert not first.headers.get("If-None-Match") and second.headers.get("If-None-Match")
    assert reader.store.state(reader.source.name)["etag"] == second.headers["If-None-Match"]


def test_atom_threading_links_replies_and_every_post_names_its_feed(read: Read, feeds: FeedServer) -> None:
    posts, _, _ = read("atom-threading-comments.xml")
    reply = posts["rss:tag:status.example,2026:c-2"]
    assert (reply["thread_id"], reply["reply_to_id"]) == ("rss:tag:status.example,2026:c-1",) * 2
    assert posts["rss:tag:status.example,2026:c-1"]["reply_to_id"] == "rss:tag:status.example,2026:post-9"
    assert reply["metadata"] == {"feed": f"{feeds.url}/atom-threading-comments.xml"}
    assert reply["created_at"] == "2026-11-04T10:05:00Z"


def test_corpus_every_entry_feedparser_finds_is_accounted_for(feeds: FeedServer, settings: Settings,
                                                              tmp_path: Path) -> None:
    rows, unexpected = [], {}
    names = sorted(p.name for p in FEEDS.iterdir())
    store = CheckpointStore(str(tmp_path / "corpus.sqlite"))  # one per feed would cost more than the reading
    for name in names:
        reference = feedparser.parse(io.BytesIO(feeds.body(name)), response_headers={
            "content-type": CONTENT_TYPES.get(name, "application/xml"), "content-location": f"{feeds.url}/{name}"})
        posts, letters, skipped = Reader(feeds, name, settings, tmp_path, store).poll()
        entry_letters = [d for d in letters if "#entry-" in d.origin or d.reason.startswith("not a valid Post")]
        rows.append(feed_check.FeedCheck(name, len(reference.entries), len(posts), skipped, len(entry_letters)))
        if len(letters) != EXPECTED_DEAD_LETTERS.get(name, 0):
            unexpected[name] = [d.reason for d in letters]
    print("\n" + feed_check.format_table(rows))
    assert len(names) >= 30
    assert [r.feed for r in rows if not r.complete] == []
    assert sum(r.reference for r in rows) == sum(r.read for r in rows) > 60
    assert unexpected == {}


def test_feeds_check_command_prints_the_table_and_fails_below_100(
        feeds: FeedServer, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["feeds-check", str(FEEDS), f"{feeds.url}/forum-atom.xml"]) == 0
    out = capsys.readouterr().out
    assert f"{feeds.url}/forum-atom.xml" in out and "youtube-channel.xml" in out
    assert out.rstrip().endswith("(100.0 %)")

    real = feed_check.read_feed

    def losing(body: bytes, headers: dict, url: str, kind: str = "rss") -> Any:
        reading = real(body, headers, url, kind)
        reading.items = reading.items[1:]  # a regression that drops an entry without a word
        return reading

    monkeypatch.setattr(feed_check, "read_feed", losing)
    assert main(["feeds-check", str(FEEDS / "forum-atom.xml")]) == 1
    out = capsys.readouterr().out
    assert "LOST ENTRIES" in out and "read 1 of 2 entries (50.0 %)" in out


def test_html_to_text_keeps_alt_text_and_drops_markup_only_bodies() -> None:
    assert html_to_text('<p>Kein Netz</p><img src="a.png" alt="Screenshot: Fehler 651"><img src="b.png">') == \
        "Kein Netz\nScreenshot: Fehler 651"
    assert html_to_text('<p> </p><figure><img src="a.png"></figure>') == ""
    assert html_to_text("Tarif &amp;  Nummer\n\n behalten") == "Tarif & Nummer\nbehalten"
