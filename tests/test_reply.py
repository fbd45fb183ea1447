"""`triage reply`: the documented request per API, the private-channel guard, at most once on the channel.

The six APIs are tests/fake_apis.py::FakeChannels (their documented request and answer formats, fixtures in
tests/fixtures/apis/replies/). Cases come from an in-memory CaseStore, or, for the command line, from a small
fake of the Elasticsearch document API (`FakeCasesIndex`: get, and update with if_seq_no/if_primary_term); one
integration test uses the local Elasticsearch stand-in.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from apps import reply as replies
from connectors.config import ConnectConfig
from connectors.replies.base import CannotReply, ReplyError
from core.config import RepliesSettings, Settings
from models.pii import PiiDetector
from fake_apis import FakeChannels, FakeHttpServer, Request

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {"X_REPLY_TOKEN": "x-user-token", "MASTODON_REPLY_TOKEN": "masto-user-token",
          "REDDIT_REPLY_TOKEN": "reddit-user-token", "FB_PAGE_TOKEN": "fb-page-token",
          "YOUTUBE_REPLY_TOKEN": "yt-oauth-token", "DISCOURSE_REPLY_KEY": "discourse-api-key"}
TEXT = "Danke für deine Geduld! Die Störung in deinem Gebiet ist seit 10:40 behoben."
INVITATION_DE = ("Danke für deine Nachricht! Damit wir uns das genau ansehen können, schreib uns bitte eine "
                 "Direktnachricht. Bitte poste keine Kunden- oder Vertragsnummern, Adressen oder Bankdaten öffentlich.")
NO_WAIT: Callable[[float], None] = lambda seconds: None  # noqa: E731


# ---- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(["DE", "AT", "CH", "GB", "US"])


@pytest.fixture
def channels() -> Any:
    with FakeChannels() as fake:
        yield fake


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def reply_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"replies": RepliesSettings(ledger_db=str(tmp_path / "replies.sqlite"))})


def sources_file_data(url: str) -> dict[str, Any]:
    return {"sources": [
        {"type": "x", "name": "x", "query": "@TelcoHilfe", "bearer_token_env": "X_BEARER_TOKEN", "api_url": f"{url}/x",
         "brand_accounts": ["@TelcoHilfe"], "reply_accounts": [{"account": "@TelcoHilfe", "token_env": "X_REPLY_TOKEN"}]},
        {"type": "mastodon", "name": "masto", "url": f"{url}/mastodon", "hashtags": ["telco"],
         "reply_accounts": [{"account": "telco_hilft@social.example", "token_env": "MASTODON_REPLY_TOKEN"}]},
        {"type": "reddit", "name": "reddit", "subreddits": ["telekom"], "client_id_env": "REDDIT_CLIENT_ID",
         "client_secret_env": "REDDIT_CLIENT_SECRET", "api_url": f"{url}/reddit",
         "reply_accounts": [{"account": "TelcoHilfe", "token_env": "REDDIT_REPLY_TOKEN"}]},
        {"type": "facebook", "name": "fb", "page_id": "104200000000", "page_token_env": "FB_PAGE_TOKEN",
         "api_url": f"{url}/graph", "reply_accounts": [{"account": "104200000000", "token_env": "FB_PAGE_TOKEN"}]},
        {"type": "youtube", "name": "yt", "channel_id": "UCtelco0000000000000000", "api_key_env": "YOUTUBE_API_KEY",
         "api_url": f"{url}/youtube", "reply_accounts": [{"account": "@telco", "token_env": "YOUTUBE_REPLY_TOKEN"}]},
        {"type": "discourse", "name": "forum", "url": f"{url}/discourse",
         "reply_accounts": [{"account": "telco_support", "token_env": "DISCOURSE_REPLY_KEY"}]},
        {"type": "rss", "name": "blog", "url": "https://blog.example.org/comments/feed"},
        {"type": "replay", "name": "demo", "path": "data/samples/posts.jsonl"},
    ]}


def host_of(url: str) -> str:
    return urlsplit(url).netloc


def customer_post(api: str, url: str) -> tuple[str, str, str]:
    """(Post source, the customer post a case answers, its thread) as the connectors name them."""
    host = host_of(url)
    return {
        "x": ("twitter", "twitter:1859000000000000123", "twitter:1859000000000000100"),
        "mastodon": ("mastodon", f"mastodon:{host}:109000000000000777", f"mastodon:{host}:109000000000000700"),
        "reddit": ("reddit", "reddit:t1_kx2a9b1", "reddit:t3_1h0abcd"),
        "facebook": ("facebook", "facebook:104200000000_987654321", "facebook:104200000000_987654321"),
        "youtube": ("youtube", "youtube:UgzCustomerThread01.AZreply9", "youtube:UgzCustomerThread01"),
        "discourse": ("discourse", f"discourse:{host}/t/42/3", f"discourse:{host}/t/42/1"),
    }[api]


def case_doc(source: str, post_id: str, thread_id: str, private: bool = False, language: str = "de",
             suggested: Optional[str] = None, case_id: str = "case:0123456789abcdef01234567") -> dict[str, Any]:
    """A case document as the interface describes it (no raw text, no author names)."""
    return {"case_id": case_id, "source": source, "thread_id": thread_id, "grouping": "thread", "status": "new",
            "queue": "technical", "priority": "P2", "priority_reasons": ["Störung"], "private_channel": private,
            "suggested_reply": suggested, "language": language, "intent": "complaint", "sentiment": "negative",
            "topic": "network", "first_post_at": "2026-12-02T08:00:00.000Z", "last_post_at": "2026-12-02T08:00:00.000Z",
            "opened_at": "2026-12-02T08:00:00.000Z", "due_at": "2026-12-02T12:00:00.000Z",
            "last_customer_post_id": post_id, "last_customer_post_at": "2026-12-02T08:00:00.000Z",
            "posts": [{"id": post_id, "role": "customer", "at": "2026-12-02T08:00:00.000Z", "priority": "P2"}],
            "customer_posts": 1, "brand_posts": 0, "answered_at": None, "first_response_seconds": None,
            "within_sla": None, "answered_by": None, "answered_via": None, "reopened": 0,
            "product_reply_ids": [], "agent": {"assignee": None, "claimed_at": None},
            "updated_at": "2026-12-02T08:00:00.000Z"}


class MemoryCases:
    """The CaseStore interface in memory."""

    def __init__(self, *cases: dict[str, Any], authors: Optional[dict[str, dict[str, Any]]] = None) -> None:
        self.cases = {c["case_id"]: copy.deepcopy(c) for c in cases}
        self.authors = authors or {}

    def case(self, case_id: str) -> Optional[dict[str, Any]]:
        return copy.deepcopy(self.cases.get(case_id))

    def author(self, post_id: str) -> Optional[dict[str, Any]]:
        return self.authors.get(post_id)

    def change(self, case_id: str, decide: Callable[[dict[str, Any]], Optional[dict[str, Any]]]) -> None:
        fields = decide(copy.deepcopy(self.cases[case_id]))
        if fields:
            self.cases[case_id].update(fields)


def run_reply(settings: Settings, channels: FakeChannels, cases: MemoryCases, detector: PiiDetector,
              case_id: str = "case:0123456789abcdef01234567", text: Optional[str] = TEXT, **options: Any) -> replies.Outcome:
    sources = ConnectConfig.model_validate(sources_file_data(channels.url))
    return replies.reply(settings, cases, sources, case_id, text, sleep=options.pop("sleep", NO_WAIT),
                         detector=detector, **options)


def one_case(api: str, channels: FakeChannels, **fields: Any) -> MemoryCases:
    return MemoryCases(case_doc(*customer_post(api, channels.url), **fields))


# ---- the documented request of each API --------------------------------------------------------------------

def _form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}


EXPECTED = {  # api -> (channel, path, how the body is read, body, auth headers)
    "x": ("x", "/x/2/tweets", Request.json_body,
          {"text": TEXT, "reply": {"in_reply_to_tweet_id": "1859000000000000123"}},
          {"Authorization": "Bearer x-user-token"}),
    "mastodon": ("mastodon", "/mastodon/api/v1/statuses", Request.json_body,
                 {"status": TEXT, "in_reply_to_id": "109000000000000777", "visibility": "public"},
                 {"Authorization": "Bearer masto-user-token"}),
    "reddit": ("reddit", "/reddit/api/comment", _form, {"api_type": "json", "thing_id": "t1_kx2a9b1", "text": TEXT},
               {"Authorization": "bearer reddit-user-token"}),
    "facebook": ("graph", "/graph/104200000000_987654321/comments", _form, {"message": TEXT},
                 {"Authorization": "Bearer fb-page-token"}),
    "youtube": ("youtube", "/youtube/youtube/v3/comments?part=snippet", Request.json_body,
                {"snippet": {"parentId": "UgzCustomerThread01", "textOriginal": TEXT}},
                {"Authorization": "Bearer yt-oauth-token"}),
    "discourse": ("discourse", "/discourse/posts.json", Request.json_body,
                  {"topic_id": 42, "reply_to_post_number": 3, "raw": TEXT},
                  {"Api-Key": "discourse-api-key", "Api-Username": "telco_support"}),
}


def delivered_post_id(api: str, channels: FakeChannels) -> str:
    """The Post id the connector will give the published reply when it reads it back."""
    item = channels.published[EXPECTED[api][0]][0]
    host = host_of(channels.url)
    return {"x": lambda: f"twitter:{item['id']}", "mastodon": lambda: f"mastodon:{host}:{item['id']}",
            "reddit": lambda: f"reddit:{item['data']['name']}", "facebook": lambda: f"facebook:{item['id']}",
            "youtube": lambda: f"youtube:{item['id']}",
            "discourse": lambda: f"discourse:{host}/t/42/{item['post_number']}"}[api]()


@pytest.mark.parametrize("api", list(EXPECTED))
def test_each_source_sends_the_documented_request(api: str, channels: FakeChannels, tokens: None,
                                                  reply_settings: Settings, detector: PiiDetector) -> None:
    cases = one_case(api, channels)
    outcome = run_reply(reply_settings, channels, cases, detector)

    channel, path, read, body, headers = EXPECTED[api]
    [request] = channels.posts()
    assert (request.method, request.path, read(request)) == ("POST", path, body)
    assert {name: request.headers.get(name) for name in headers} == headers
    assert len(channels.published[channel]) == 1
    assert outcome.public.how == "sent"
    assert cases.cases[outcome.case_id]["product_reply_ids"] == [delivered_post_id(api, channels)]
    assert outcome.public.sent.post_id == delivered_post_id(api, channels)


def test_the_same_reply_again_is_not_posted_twice(channels: FakeChannels, tokens: None, reply_settings: Settings,
                                                  detector: PiiDetector) -> None:
    cases = one_case("x", channels)
    run_reply(reply_settings, channels, cases, detector)
    again = run_reply(reply_settings, channels, cases, detector)
    assert again.public.how == "already sent"
    assert len(channels.published["x"]) == 1 and len(channels.posts()) == 1
    assert cases.cases[again.case_id]["product_reply_ids"] == [delivered_post_id("x", channels)]


# ---- the private-channel guard -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, value", [
    ("Wir erstatten den Betrag auf DE89 3704 0044 0532 0130 00, bitte kurz bestätigen.", "iban", "DE89"),
    ("Ruf uns gern an: +49 171 2345678, wir helfen dir sofort.", "phone", "2345678"),
])
def test_a_public_reply_with_personal_data_is_refused(text: str, kind: str, value: str, channels: FakeChannels,
                                                      tokens: None, reply_settings: Settings,
                                                      detector: PiiDetector) -> None:
    cases = one_case("x", channels)
    with pytest.raises(ReplyError) as refused:
        run_reply(reply_settings, channels, cases, detector, text=text)
    assert kind in str(refused.value) and "public" in str(refused.value)
    assert value not in str(refused.value)
    assert channels.requests == [] and cases.cases["case:0123456789abcdef01234567"]["product_reply_ids"] == []


PRIVATE_TEXT = "Deine IBAN DE89 3704 0044 0532 0130 00 ist bei uns hinterlegt; die Gutschrift kommt morgen."


@pytest.mark.parametrize("api, dm_channel", [("x", "x_dm"), ("mastodon", "mastodon"), ("reddit", "reddit_pm")])
def test_a_private_case_gets_the_invitation_publicly_and_the_text_as_a_direct_message(
        api: str, dm_channel: str, channels: FakeChannels, tokens: None, reply_settings: Settings,
        detector: PiiDetector) -> None:
    source, post_id, thread = customer_post(api, channels.url)
    cases = MemoryCases(case_doc(source, post_id, thread, private=True),
                        authors={post_id: {"id": "5005", "handle": "kunde_42", "name": "Kim Kunde"}})
    outcome = run_reply(reply_settings, channels, cases, detector, text=PRIVATE_TEXT)

    public = [p for p in channels.published[EXPECTED[api][0]] if p.get("visibility", "public") == "public"]
    texts = {"x": lambda p: p["text"], "mastodon": lambda p: p["content"], "reddit": lambda p: p["data"]["body"]}[api]
    assert [texts(p) for p in public] in ([INVITATION_DE], [f"<p>{INVITATION_DE}</p>"])
    direct = [p for p in channels.published[dm_channel] if p.get("visibility", "direct") == "direct"]
    assert len(direct) == 1
    body = json.dumps(direct[0], ensure_ascii=False)
    assert "DE89 3704 0044 0532 0130 00" in body  # the private words went privately, to the customer
    assert {"x": "5005", "mastodon": "@kunde_42", "reddit": "kunde_42"}[api] in body
    assert outcome.direct is not None and not outcome.continue_private
    assert cases.cases[outcome.case_id]["product_reply_ids"] == [outcome.public.sent.post_id]
    assert "continue_in_private_channel" not in cases.cases[outcome.case_id]


@pytest.mark.parametrize("api, dm_channel", [("x", "x_dm"), ("mastodon", "mastodon"), ("reddit", "reddit_pm")])
def test_a_direct_message_the_api_published_before_a_5xx_is_not_sent_twice(
        api: str, dm_channel: str, channels: FakeChannels, tokens: None, reply_settings: Settings,
        detector: PiiDetector) -> None:
    source, post_id, thread = customer_post(api, channels.url)
    cases = MemoryCases(case_doc(source, post_id, thread, private=True),
                        authors={post_id: {"id": "5005", "handle": "kunde_42", "name": "Kim Kunde"}})
    channels.script(EXPECTED[api][0], ("ok",), ("publish_then", 503))  # the invitation, then the direct message
    outcome = run_reply(reply_settings, channels, cases, detector, text=PRIVATE_TEXT)
    assert outcome.direct is not None and outcome.direct.how == "found in the thread"
    assert len([p for p in channels.published[dm_channel] if p.get("visibility", "direct") == "direct"]) == 1
    assert len(channels.posts()) == 2


def test_a_private_case_without_direct_messages_is_marked_for_the_helpdesk(
        channels: FakeChannels, tokens: None, reply_settings: Settings, detector: PiiDetector) -> None:
    cases = one_case("facebook", channels, private=True, language="fr")  # no French invitation: the English one
    outcome = run_reply(reply_settings, channels, cases, detector, text=PRIVATE_TEXT)
    assert [c["message"] for c in channels.published["graph"]] == [
        "Thanks for reaching out! So that we can look into this, please send us a direct message. Please don't "
        "post customer or contract numbers, addresses or bank details publicly."]
    assert outcome.continue_private and outcome.direct is None
    assert cases.cases[outcome.case_id]["continue_in_private_channel"] is True


def test_the_suggested_reply_is_the_default_after_confirmation(channels: FakeChannels, tokens: None,
                                                               reply_settings: Settings, detector: PiiDetector) -> None:
    suggestion = "Danke für den Hinweis! Wir prüfen das und melden uns."
    cases = one_case("discourse", channels, suggested=suggestion)
    shown: list[tuple[str, str]] = []
    with pytest.raises(ReplyError, match="not sent"):
        run_reply(reply_settings, channels, cases, detector, text=None,
                  confirm=lambda text, language: shown.append((text, language)) or False)
    assert shown == [(suggestion, "de")] and channels.posts() == []
    run_reply(reply_settings, channels, cases, detector, text=None, confirm=lambda text, language: True)
    assert [p["raw"] for p in channels.published["discourse"]] == [suggestion]


def test_no_text_and_no_suggested_reply_is_an_error(channels: FakeChannels, tokens: None, reply_settings: Settings,
                                                     detector: PiiDetector) -> None:
    with pytest.raises(ReplyError, match="no suggested reply; give the reply with --text"):
        run_reply(reply_settings, channels, one_case("x", channels), detector, text=None)


def test_what_reply_writes_on_a_case_follows_the_case_schema(channels: FakeChannels, tokens: None,
                                                               reply_settings: Settings, detector: PiiDetector) -> None:
    from jsonschema import Draft202012Validator, FormatChecker

    from schemas import load_json
    schema = Draft202012Validator(load_json("case.v1.schema.json"), format_checker=FormatChecker())
    cases = one_case("facebook", channels, private=True)
    schema.validate(cases.cases["case:0123456789abcdef01234567"])
    run_reply(reply_settings, channels, cases, detector)
    after = cases.cases["case:0123456789abcdef01234567"]
    assert after["continue_in_private_channel"] is True and len(after["product_reply_ids"]) == 1
    schema.validate(after)


# ---- bad input and bad days ------------------------------------------------------------------------------

def test_an_unknown_case_id_is_a_clear_error(channels: FakeChannels, tokens: None, reply_settings: Settings,
                                            detector: PiiDetector) -> None:
    with pytest.raises(ReplyError, match="no case with id case:ffffffffffffffffffffffff"):
        run_reply(reply_settings, channels, one_case("x", channels), detector, case_id="case:ffffffffffffffffffffffff")
    assert channels.requests == []


@pytest.mark.parametrize("source, post_id, name, message", [
    ("rss", "rss:https://blog.example.org/p/1#comment-3", None, "posts from rss cannot be answered from triage: a feed"),
    ("webhook", "webhook:abc", None, "posts from webhook cannot be answered"),
    ("twitter", "twitter:1859000000000000123", "demo", "source demo (replay) cannot reply"),
    ("forum", "forum:77", None, "posts from forum cannot be answered from triage"),
])
def test_a_source_that_cannot_reply_says_so(source: str, post_id: str, name: Optional[str], message: str,
                                            channels: FakeChannels, tokens: None, reply_settings: Settings,
                                            detector: PiiDetector) -> None:
    cases = MemoryCases(case_doc(source, post_id, post_id))
    with pytest.raises(CannotReply, match=re.escape(message)):
        run_reply(reply_settings, channels, cases, detector, source_name=name)
    assert channels.requests == []


@pytest.mark.parametrize("api", list(EXPECTED))
def test_expired_credentials_are_a_clear_error_and_a_later_retry_sends_once(
        api: str, channels: FakeChannels, tokens: None, reply_settings: Settings, detector: PiiDetector) -> None:
    channel = EXPECTED[api][0]
    status = 403 if api == "discourse" else 401  # Discourse answers a bad key with 403
    channels.script(channel, ("refuse", status))
    cases = one_case(api, channels)
    with pytest.raises(ReplyError) as refused:
        run_reply(reply_settings, channels, cases, detector)
    message = str(refused.value)
    env = [name for name, value in TOKENS.items() if value in json.dumps(EXPECTED[api][4])][0]
    assert f"HTTP {status}" in message and env in message and "renew it" in message
    assert TOKENS[env] not in message  # the variable's name, never the token
    assert channels.published[channel] == []
    run_reply(reply_settings, channels, cases, detector)  # the token renewed: refused means not sent, so send now
    assert len(channels.published[channel]) == 1


def test_a_429_waits_as_long_as_retry_after_says(channels: FakeChannels, tokens: None, reply_settings: Settings,
                                                 detector: PiiDetector) -> None:
    waited: list[float] = []
    channels.script("mastodon", ("refuse", 429, {"Retry-After": "7"}))
    outcome = run_reply(reply_settings, channels, one_case("mastodon", channels), detector, sleep=waited.append)
    assert waited and 7 <= waited[0] <= 8
    assert len(channels.posts()) == 2 and len(channels.published["mastodon"]) == 1
    assert outcome.public.how == "sent"


def test_reddit_rate_limit_inside_a_200_is_a_refusal(channels: FakeChannels, tokens: None, reply_settings: Settings,
                                                     detector: PiiDetector) -> None:
    channels.script("reddit", ("refuse", 200, {}, "ratelimit_in_200"))
    with pytest.raises(ReplyError, match="Reddit refused it: RATELIMIT"):
        run_reply(reply_settings, channels, one_case("reddit", channels), detector)
    assert channels.published["reddit"] == []


def test_a_5xx_storm_gives_up_clearly_and_the_next_run_posts_once(channels: FakeChannels, tokens: None,
                                                                  reply_settings: Settings, detector: PiiDetector) -> None:
    channels.script("discourse", *[("refuse", 503)] * 4)
    cases = one_case("discourse", channels)
    with pytest.raises(ReplyError) as gave_up:
        run_reply(reply_settings, channels, cases, detector)
    assert "HTTP 503" in str(gave_up.value) and "Nothing was posted twice" in str(gave_up.value)
    assert len(channels.posts()) == 4 and channels.published["discourse"] == []
    gets = [r for r in channels.requests if r.method == "GET"]
    assert len(gets) == 4  # every unconfirmed attempt was looked up before the next
    outcome = run_reply(reply_settings, channels, cases, detector)
    assert outcome.public.how == "sent" and len(channels.published["discourse"]) == 1


def test_a_reply_in_a_case_grouped_by_author_is_found_by_the_tweet_it_answers(
        channels: FakeChannels, tokens: None, reply_settings: Settings, detector: PiiDetector) -> None:
    channels.script("x", ("publish_then", 504))
    cases = MemoryCases(case_doc("twitter", "twitter:1859000000000000123", "author:5005@2026-12-02T08:00:00.000Z"))
    outcome = run_reply(reply_settings, channels, cases, detector)
    assert outcome.public.how == "found in the thread" and len(channels.published["x"]) == 1
    [search] = [r for r in channels.requests if r.method == "GET"]
    assert search.query["query"] == "in_reply_to_tweet_id:1859000000000000123 from:TelcoHilfe"


@pytest.mark.parametrize("api", list(EXPECTED))
def test_a_5xx_after_the_api_published_is_found_not_posted_again(api: str, channels: FakeChannels, tokens: None,
                                                                 reply_settings: Settings, detector: PiiDetector) -> None:
    channel = EXPECTED[api][0]
    channels.script(channel, ("publish_then", 502))
    cases = one_case(api, channels)
    outcome = run_reply(reply_settings, channels, cases, detector)
    assert outcome.public.how == "found in the thread"
    assert len(channels.published[channel]) == 1 and len(channels.posts()) == 1
    assert cases.cases[outcome.case_id]["product_reply_ids"] == [delivered_post_id(api, channels)]


# ---- the command line: a fake of the Elasticsearch document API, kill -9 -----------------------------------

class FakeCasesIndex:
    """Elasticsearch's get and update (with if_seq_no/if_primary_term) for the cases and private indices."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.seq = 0
        self.server = FakeHttpServer({"/": self._handle})
        self.url = self.server.url

    def put(self, index: str, doc_id: str, source: dict[str, Any]) -> None:
        self.seq += 1
        self.docs[(index, doc_id)] = {"_source": copy.deepcopy(source), "_seq_no": self.seq}

    def source(self, index: str, doc_id: str) -> dict[str, Any]:
        return self.docs[(index, doc_id)]["_source"]

    def _handle(self, request: Request) -> None:
        index, _, rest = request.route.lstrip("/").partition("/")
        action, _, doc_id = rest.partition("/")
        key = (unquote(index), unquote(doc_id))
        product = {"X-Elastic-Product": "Elasticsearch"}
        concrete = f"{key[0]}-000001"
        if request.method == "GET" and action == "_doc":
            doc = self.docs.get(key)
            if doc is None:
                return request.json({"_index": concrete, "_id": key[1], "found": False}, 404, product)
            return request.json({"_index": concrete, "_id": key[1], "_version": doc["_seq_no"], "_seq_no": doc["_seq_no"],
                                 "_primary_term": 1, "found": True, "_source": doc["_source"]}, 200, product)
        if request.method == "POST" and action == "_update":
            alias = (key[0].removesuffix("-000001"), key[1])
            doc = self.docs[alias]
            if int(request.query["if_seq_no"]) != doc["_seq_no"]:
                return request.json({"error": {"type": "version_conflict_engine_exception"}, "status": 409}, 409, product)
            doc["_source"].update(request.json_body()["doc"])
            self.seq += 1
            doc["_seq_no"] = self.seq
            return request.json({"_index": concrete, "_id": key[1], "_version": self.seq, "result": "updated",
                                 "_seq_no": self.seq, "_primary_term": 1}, 200, product)
        request.json({"error": f"not faked: {request.method} {request.path}"}, 400, product)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def command_line(tmp_path: Path, channels: FakeChannels) -> Any:
    """A config and sources file for `triage reply` against the fake channels and the fake cases index."""
    index = FakeCasesIndex()
    config = tmp_path / "triage.yaml"
    config.write_text(yaml.safe_dump({
        "elasticsearch": {"url": index.url, "index_prefix": "t-reply"},
        "replies": {"ledger_db": str(tmp_path / "replies.sqlite")}, "logging": {"level": "WARNING", "format": "text"}}))
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump(sources_file_data(channels.url)))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}, **TOKENS,
           "TRIAGE_CONFIG": str(config)}  # no TRIAGE_ES_URL of the session: the fake index answers
    command = [sys.executable, "-m", "cli", "--config", str(config), "reply", "--sources", str(sources)]
    yield index, command, env
    index.close()


def test_kill_9_between_sending_and_recording_leaves_exactly_one_reply(channels: FakeChannels,
                                                                      command_line: Any) -> None:
    index, command, env = command_line
    source, post_id, thread = customer_post("x", channels.url)
    case = case_doc(source, post_id, thread)
    index.put("t-reply-cases", case["case_id"], case)
    channels.script("x", ("publish_then_hang",))  # the API posts, then the answer never comes
    argv = [*command, case["case_id"], "--text", TEXT]
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not channels.published["x"] and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert channels.published["x"], first.communicate(timeout=5)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=10)
    assert index.source("t-reply-cases", case["case_id"])["product_reply_ids"] == []  # never recorded

    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert len(channels.published["x"]) == 1 and len(channels.posts()) == 1  # looked up, not posted again
    reply_id = f"twitter:{channels.published['x'][0]['id']}"
    assert index.source("t-reply-cases", case["case_id"])["product_reply_ids"] == [reply_id]
    assert "already on the channel" in second.stdout and reply_id in second.stdout


def test_the_command_line_names_an_unknown_case_and_asks_to_confirm(channels: FakeChannels, command_line: Any) -> None:
    index, command, env = command_line
    unknown = subprocess.run([*command, "case:ffffffffffffffffffffffff", "--text", TEXT], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 1
    assert "triage reply: no case with id case:ffffffffffffffffffffffff in t-reply-cases" in unknown.stderr
    source, post_id, thread = customer_post("x", channels.url)
    case = case_doc(source, post_id, thread, suggested="Danke, wir schauen uns das an!")
    index.put("t-reply-cases", case["case_id"], case)
    unconfirmed = subprocess.run([*command, case["case_id"]], cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=120, stdin=subprocess.DEVNULL)
    assert unconfirmed.returncode == 1 and "Danke, wir schauen uns das an!" in unconfirmed.stdout
    assert "--yes" in unconfirmed.stderr and channels.posts() == []


# ---- one integration test: the cases index of the local Elasticsearch stand-in ---------------------------

@pytest.mark.integration
def test_the_reply_is_recorded_on_the_case_without_losing_a_concurrent_change(
        es: Any, live: Settings, channels: FakeChannels, tokens: None, tmp_path: Path, detector: PiiDetector) -> None:
    cfg = live.elasticsearch
    created = None
    if not es.indices.exists_alias(name=cfg.cases_read_alias):  # `triage setup` makes it once the cases work is in
        created = f"{cfg.cases_read_alias}-000001"
        es.indices.create(index=created, aliases={cfg.cases_read_alias: {},
                                                  cfg.cases_write_alias: {"is_write_index": True}})
    source, post_id, thread = customer_post("x", channels.url)
    case = case_doc(source, post_id, thread, case_id="case:00000000000000000000beef")
    es.index(index=cfg.cases_write_alias, id=case["case_id"], document=case, refresh=True)
    try:
        index = es.get(index=cfg.cases_read_alias, id=case["case_id"])["_index"]
        reads: list[str] = []

        def get_then_race(**kwargs: Any) -> Any:  # the case writer changes the case between our read and our write
            found = es.get(**kwargs)
            reads.append(kwargs["index"])
            if reads.count(cfg.cases_read_alias) == 2:  # 1: the case is loaded; 2: read before the update
                es.update(index=index, id=case["case_id"], doc={"brand_posts": 1, "status": "answered"}, refresh=True)
            return found
        store = replies.ElasticsearchCases(type("Racing", (), {"get": staticmethod(get_then_race),
                                                               "update": staticmethod(es.update)})(), cfg)
        settings = live.model_copy(update={"replies": RepliesSettings(ledger_db=str(tmp_path / "replies.sqlite"))})
        outcome = replies.reply(settings, store, ConnectConfig.model_validate(sources_file_data(channels.url)),
                                case["case_id"], TEXT, sleep=NO_WAIT, detector=detector)
        stored = es.get(index=cfg.cases_read_alias, id=case["case_id"])["_source"]
        assert stored["product_reply_ids"] == [outcome.public.sent.post_id]
        assert (stored["brand_posts"], stored["status"]) == (1, "answered")  # the case writer's change is kept
        assert reads.count(cfg.cases_read_alias) == 3  # the 409 made it read again and decide again
    finally:
        es.delete(index=cfg.cases_write_alias, id=case["case_id"], refresh=True)
        if created:
            es.indices.delete(index=created)
