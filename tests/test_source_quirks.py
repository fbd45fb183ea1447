"""What each social API does differently, and what agents need from it: readable text, skipped empty posts,
the brand's own voice, the whole conversation, edits and deletions.

Every API serves its `quirks` fixture items (tests/fixtures/apis/*.json, in that API's documented format)
through the local stand-in (tests/fake_apis.py); the connectors run through the real runner into a ListSink.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Callable

import pytest

from connectors.base import Deletion, Source
from connectors.http import SourceUnavailable
from connectors.mastodon import MastodonHashtagStream, MastodonTimeline
from fake_apis import FIXTURES, FakeApis
from test_source_apis import Poller, apis, build, make_poller  # noqa: F401  (fixtures)

PollerFactory = Callable[[Source], Poller]


def serve_quirks(apis: FakeApis, listing: str) -> None:  # noqa: F811  (the fixture name)
    """Replace a listing's items with its fixture's `quirks` items."""
    fixture = {"reddit/new": apis.fixtures["reddit"]["posts"], "reddit/comments": apis.fixtures["reddit"]["comments"],
               "graph": apis.fixtures["facebook"]["posts"], "graph/comments": apis.fixtures["facebook"]["comments"]
               }.get(listing) or apis.fixtures[listing]
    apis.visible[listing] = copy.deepcopy(fixture["quirks"])


def read_all(poller: Poller) -> tuple[dict[str, dict[str, Any]], int, list[Deletion]]:
    """One pass: the posts by native id (the part after the source), how many were skipped, the deletions."""
    posts, bad, skipped = poller.poll()
    assert bad == []  # nothing in the quirks is malformed: an empty or deleted post is not a dead letter
    return {p["id"].split(":")[-1].split("/t/")[-1]: p for p in posts}, skipped, poller.deletions


def test_x_text_is_what_a_person_reads(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "x")
    posts, skipped, _ = read_all(make_poller(build(apis, "x", backfill_pages=5)[0]))

    assert posts["1987000000000000005"]["text"] == \
        "Preise & Leistungen <3 > alles andere: https://telco.example/tarife?a=1&b=2"  # the photo's own link is gone
    long_post = apis.fixtures["x"]["quirks"][2]["note_tweet"]["text"]
    assert posts["1987000000000000004"]["text"] == long_post.replace("https://t.co/belege1",
                                                                     "https://files.example/belege.pdf")
    assert len(posts["1987000000000000004"]["text"]) > 280
    quoted = posts["1987000000000000003"]
    assert quoted["text"] == "Genau so geht es mir auch!"
    assert quoted["metadata"]["quoted_text"] == "Seit drei Tagen kein Internet in 50667 Köln. Wann kommt endlich der Techniker?"
    assert posts["1987000000000000002"]["text"] == "Speedtest: 2 Mbit/s statt 250 Mbit/s"  # an image: its alt text
    assert "1987000000000000001" not in posts and skipped == 1  # an image without alt text

    edit = posts["1986000000000000003"]  # the edit (id ...006) replaces the post it edits
    assert edit["text"].startswith("Korrektur") and edit["edited_at"] == "2026-11-06T09:06:00.000Z"
    assert edit["url"].endswith("/status/1987000000000000006")
    assert all(p["edited_at"] is None for i, p in posts.items() if i != "1986000000000000003")

    search = next(r for r in apis.requests if r.route.endswith("/2/tweets/search/recent"))
    assert {"entities", "note_tweet", "edit_history_tweet_ids"} <= set(search.query["tweet.fields"].split(","))
    assert "referenced_tweets.id" in search.query["expansions"].split(",")


def test_x_stream_passes_on_compliance_deletions(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    stream = make_poller(build(apis, "x", stream=True)[0])
    stream.poll(pages=1)
    with pytest.raises(SourceUnavailable, match="closed by the server"):
        for _ in range(20):
            stream.poll(pages=1)
    assert stream.deletions == [Deletion("twitter:1986000000000000002", "twitter", "2026-11-05T09:14:00.000Z")]


def test_discourse_staff_topic_titles_edits_images_and_deletions(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "discourse")
    posts, skipped, deletions = read_all(make_poller(build(apis, "discourse", backfill_pages=5)[0]))

    assert sorted(posts) == ["50/1", "50/2", "51/1"]
    staff = posts["50/2"]
    assert staff["author"]["is_brand"] is True and staff["author"]["role"] == "moderator"
    assert staff["text"] == "Wir schauen uns das an"  # an emoji is not words
    assert staff["edited_at"] == "2026-11-06T09:30:00.000Z"  # version 2
    assert staff["metadata"]["topic_title"] == "Router blinkt rot (50)"  # a reply says what it is about
    opening = posts["50/1"]
    assert opening["author"]["is_brand"] is None and opening["author"]["role"] is None and opening["edited_at"] is None
    assert opening["title"] == "Router blinkt rot (50)"
    assert posts["51/1"]["text"] == "Fehlermeldung: Keine Verbindung (Code 651)"  # the alt text, not the lightbox caption
    assert skipped == 2  # an empty opening post, an image without alt text: not dead letters
    assert [(d.post_id.split("/t/")[-1], d.deleted_at) for d in deletions] == [
        ("50/4", "2026-11-06T10:00:00.000Z"), ("50/3", None)]


def test_reddit_moderators_thread_titles_edits_and_removals(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "reddit/new")
    serve_quirks(apis, "reddit/comments")
    new, comments = build(apis, "reddit", backfill_pages=5)
    posts, _, removed = read_all(make_poller(new))
    replies, _, deleted = read_all(make_poller(comments))

    pinned = posts["t3_2cd04"]
    assert pinned["author"]["is_brand"] is True and pinned["author"]["role"] == "moderator"
    assert pinned["edited_at"] == "2025-11-06T10:30:00Z"  # `edited`: the epoch time of the edit
    assert posts["t3_2cd03"]["edited_at"] is None and posts["t3_2cd03"]["author"]["is_brand"] is None
    assert [d.post_id for d in removed] == ["reddit:t3_2cd05"]  # removed by a moderator

    answer = replies["t1_8yy03"]
    assert answer["author"]["role"] == "admin" and answer["author"]["is_brand"] is True
    assert answer["thread_id"] == "reddit:t3_2cd03" and answer["metadata"]["link_title"] == "Router blinkt rot"
    assert replies["t1_8yy01"]["edited_at"] == "2025-11-06T12:10:00Z"
    assert [d.post_id for d in deleted] == ["reddit:t1_8yy02"]


def test_mastodon_thread_roots_image_descriptions_edits(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "mastodon")
    posts, skipped, _ = read_all(make_poller(build(apis, "mastodon", backfill_pages=5)[0]))

    root = "114000000000000001"
    for reply in ("114000000000000004", "114000000000000005", "114000000000000006"):
        assert posts[reply]["thread_id"] == posts[root]["id"]  # not the parent: the conversation's start
    assert posts["114000000000000005"]["reply_to_id"] == posts["114000000000000004"]["id"]
    assert posts[root]["thread_id"] == posts[root]["id"]
    contexts = [r for r in apis.requests if r.route.endswith("/context")]
    assert len(contexts) == 2  # one per parent: the two replies to ...04 share one lookup

    assert posts[root]["edited_at"] == "2026-11-06T10:20:00.000Z"
    assert posts["114000000000000003"]["text"] == "Screenshot der Rechnung: 89,99 € statt 29,99 €"
    assert "114000000000000002" not in posts and skipped == 1  # an image without a description


def test_mastodon_stream_delete_events_become_deletions(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    stream = make_poller(build(apis, "mastodon", stream=True, streaming_url=f"{apis.url}/mastodon")[0])
    stream.poll(pages=1)
    mark = stream.store.state(stream.source.name)["mark"]
    stream.poll(pages=2)  # the heartbeat, then the delete event
    host = apis.url.split("//")[1]
    assert stream.deletions == [Deletion(f"mastodon:{host}:113400000000000001", "mastodon")]
    assert stream.store.state(stream.source.name)["mark"] == mark  # a deletion does not move the stream's mark


def test_youtube_reads_every_reply_and_knows_the_channel_owner(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "youtube")
    posts, _, _ = read_all(make_poller(build(apis, "youtube")[0]))

    replies = sorted(i for i in posts if i.startswith("UgzThread020.r"))
    assert replies == [f"UgzThread020.r{i}" for i in range(7)]  # 7 of 7, though the thread listed 2
    assert len([r for r in apis.requests if r.route.endswith("/youtube/v3/comments")]) == 3  # paged, 3 a page
    owner = posts["UgzThread020.r2"]
    assert owner["author"]["is_brand"] is True and owner["author"]["role"] == "owner"
    assert owner["reply_to_id"] == "youtube:UgzThread020" and owner["thread_id"] == "youtube:UgzThread020"
    assert posts["UgzThread020.r0"]["author"]["is_brand"] is None
    pinned = posts["UgzThread019"]
    assert pinned["author"]["role"] == "owner" and pinned["edited_at"] == "2026-11-06T09:00:00Z"
    assert posts["UgzThread020"]["edited_at"] is None


def test_facebook_page_voice_and_edited_posts(apis: FakeApis, make_poller: PollerFactory) -> None:  # noqa: F811
    serve_quirks(apis, "graph")
    serve_quirks(apis, "graph/comments")
    page_posts, comments = build(apis, "facebook")
    posts, _, _ = read_all(make_poller(page_posts))
    answers, _, _ = read_all(make_poller(comments))

    assert posts["104200000000_920"]["edited_at"] == "2026-11-06T07:45:00Z"
    assert posts["104200000000_919"]["edited_at"] is None  # updated_time = created_time: never edited
    assert posts["104200000000_920"]["author"]["role"] == "owner"
    assert answers["920_7102"]["author"]["is_brand"] is True and answers["920_7102"]["reply_to_id"] == "facebook:920_7101"
    assert answers["920_7101"]["author"]["is_brand"] is None and answers["920_7101"]["author"]["role"] is None


@pytest.mark.parametrize("listing,config,index,empty", [
    ("discourse", "discourse", 0, 2), ("mastodon", "mastodon", 0, 1), ("x", "x", 0, 1),
    ("reddit/new", "reddit", 0, 0), ("youtube", "youtube", 0, 0), ("graph", "facebook", 0, 0)])
def test_empty_posts_are_skipped_and_counted_never_dead_lettered(apis: FakeApis, make_poller: PollerFactory,  # noqa: F811
                                                                 listing: str, config: str, index: int, empty: int) -> None:
    serve_quirks(apis, listing)
    extra = {"id": "empty", "message": "  ", "created_time": "2026-11-06T08:00:00+0000"} if listing == "graph" else None
    if listing == "youtube":
        blank = copy.deepcopy(apis.visible["youtube"][1])
        blank["id"] = blank["snippet"]["topLevelComment"]["id"] = "UgzThread018"
        blank["snippet"]["topLevelComment"]["snippet"].update(textOriginal=" ", textDisplay=" ", publishedAt="2026-11-06T08:01:00Z")
        extra = blank
    if listing == "reddit/new":  # a post whose author deleted the account: no one to answer
        gone = copy.deepcopy(apis.visible["reddit/new"][2])
        gone["data"].update(id="2cd01", name="t3_2cd01", author="[deleted]")
        extra = gone
    apis.visible[listing] += [extra] if extra else []
    poller = make_poller(build(apis, config, backfill_pages=5)[index])
    posts, bad, skipped = poller.poll()
    assert bad == [] and posts
    assert skipped == empty + (1 if extra else 0)


class _Events:
    """An HttpClient stand-in whose stream sends the given server-sent event lines."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def lines(self, url: str, headers: dict[str, str]) -> Any:
        return iter(self._lines)


def test_mastodon_stream_reads_edits_and_malformed_deletes() -> None:
    fixture = json.loads((FIXTURES / "mastodon.json").read_text(encoding="utf-8"))
    status = {**fixture["initial"][0], "edited_at": "2026-11-06T11:00:00.000Z"}
    http = _Events([b"event: status.update", b"data: " + json.dumps(status).encode(), b"",
                    b"event: delete", b"data: not-an-id", b""])
    rest = MastodonTimeline("m/tag:telco", "https://social.example", "tag:telco", 60, http)  # type: ignore[arg-type]
    (mark, edited), (no_mark, bad) = list(MastodonHashtagStream(rest, 5).connect())
    assert mark == int(status["id"]) and edited["edited_at"] == "2026-11-06T11:00:00.000Z"
    assert no_mark is None and bad.reason == "delete event has no status id"
