"""Local HTTP stand-ins for external APIs: `FakeHttpServer`, the one small server every test uses (routes ->
handler, every request recorded), and `FakeApis`, Discourse, Mastodon, Reddit, X, the Graph API and YouTube on it;
`FakeChannels` serves the same six APIs' reply endpoints (`triage reply`), publishing what is posted.

    server = FakeHttpServer({"POST /hooks": lambda request: request.json({"ok": True})})
    ...  # point the code under test at server.url
    assert [r.json_body() for r in server.requests] == [...]
    server.close()

FakeApis:

Each API serves its fixture items (tests/fixtures/apis/*.json, written in that API's documented
format) newest first, PAGE items a page, with that API's own pagination: Discourse `before`,
Mastodon `max_id` in a Link header, Reddit `after`, X `since_id`/`next_token`, Graph `paging.next`,
YouTube `pageToken`. `publish` makes an API's later items appear, `fail_next` queues error answers,
and the two streaming endpoints send their fixture events, then close the connection. Mastodon's status
context, YouTube's replies (`comments?parentId=`) and X's `includes` (quoted tweets, media) are answered
from the same fixtures. `add_author` gives Mastodon or X an account whose own posts are read only by naming it:
Mastodon's account timeline (`accounts/lookup`, then `accounts/:id/statuses`), X's `from:USERNAME` in the query.
"""
from __future__ import annotations

import copy
import html
import json
import re
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apis"
PAGE = 3
TOKENS = {"x": "x-test-token", "graph": "fb-test-token", "youtube": "yt-test-key", "reddit": "reddit-issued-token"}


@dataclass
class Request:
    """One request as the fake server saw it, with the means to answer it (once)."""
    method: str
    path: str  # with the query string
    headers: Message
    body: bytes
    _handler: Optional[BaseHTTPRequestHandler] = field(default=None, repr=False, compare=False)
    answered: bool = field(default=False, compare=False)

    @property
    def route(self) -> str:
        """The path without the query string."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def json_body(self) -> Any:
        return json.loads(self.body)

    def respond(self, status: int = 200, body: bytes = b"", headers: Optional[Mapping[str, str]] = None) -> None:
        assert self._handler is not None and not self.answered, "answered twice"
        self.answered = True
        self._handler.send_response(status)
        for key, value in (headers or {}).items():
            self._handler.send_header(key, value)
        self._handler.send_header("Content-Length", str(len(body)))
        self._handler.end_headers()
        if body:
            self._handler.wfile.write(body)

    def json(self, data: Any, status: int = 200, headers: Optional[Mapping[str, str]] = None) -> None:
        self.respond(status, json.dumps(data, ensure_ascii=False).encode(),
                     {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def stream(self, chunks: list[bytes]) -> None:
        """A chunked 200 answer, then the connection is closed (how a streaming API drops its clients)."""
        assert self._handler is not None and not self.answered
        self.answered = True
        handler = self._handler
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for chunk in chunks:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    def hang_up(self) -> None:
        """Close the connection without an answer."""
        assert self._handler is not None
        self.answered = True
        self._handler.close_connection = True


Handler = Callable[[Request], None]


class FakeHttpServer:
    """A local HTTP server on a free port for tests: routes -> handler, every request recorded in `requests`.

    A route is a path prefix ("/hooks"), optionally after a method ("POST /hooks"); the longest matching
    one handles a request, which answers through `request.respond` / `json` / `stream` (an unanswered
    request gets an empty 200, an unrouted one a JSON 404). Use it as a context manager or call `close`.
    """

    def __init__(self, routes: Optional[Mapping[str, Handler]] = None, protocol: str = "HTTP/1.1") -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        for key, handler in (routes or {}).items():
            self.route(key, handler)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        handler_class = type("Handler", (_ServerHandler,), {"server_of_test": self, "protocol_version": protocol})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def route(self, key: str, handler: Handler) -> None:
        method, _, prefix = key.rpartition(" ")
        self.routes[(method.upper() or "*", prefix)] = handler

    def _handler_for(self, request: Request) -> Optional[Handler]:
        path = request.route
        matching = [(len(prefix), handler) for (method, prefix), handler in self.routes.items()
                    if method in ("*", request.method) and path.startswith(prefix)]
        return max(matching, key=lambda m: m[0])[1] if matching else None

    def handle(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
        handler = self._handler_for(request)
        if handler is None:
            return request.json({"error": f"no route for {request.method} {request.route}"}, 404)
        handler(request)
        if not request.answered:
            request.respond(200)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHttpServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ServerHandler(BaseHTTPRequestHandler):
    server_of_test: FakeHttpServer

    def log_message(self, *args: object) -> None:
        pass

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server_of_test.handle(Request(self.command, self.path, self.headers, body, self))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # noqa: N815


def _load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _page(items: list, key, cursor: Optional[str]) -> tuple[list, Optional[str]]:  # type: ignore[no-untyped-def]
    """The PAGE items after the one whose key is `cursor`, and the cursor of the page after them."""
    start = 0
    if cursor:
        keys = [key(i) for i in items]
        start = keys.index(cursor) + 1 if cursor in keys else len(items)
    page = items[start:start + PAGE]
    keyed = [key(i) for i in page if key(i)]
    return page, (keyed[-1] if keyed and start + PAGE < len(items) else None)


class FakeApis:
    def __init__(self) -> None:
        self.fixtures = {name: _load(name) for name in ("discourse", "mastodon", "reddit", "x", "facebook", "youtube")}
        f = self.fixtures
        self.visible: dict[str, Any] = {
            "discourse": copy.deepcopy(f["discourse"]["initial"]), "mastodon": copy.deepcopy(f["mastodon"]["initial"]),
            "reddit/new": copy.deepcopy(f["reddit"]["posts"]["initial"]),
            "reddit/comments": copy.deepcopy(f["reddit"]["comments"]["initial"]), "x": copy.deepcopy(f["x"]["initial"]),
            "graph": copy.deepcopy(f["facebook"]["posts"]["initial"]),
            "graph/comments": copy.deepcopy(f["facebook"]["comments"]["initial"]),
            "youtube": copy.deepcopy(f["youtube"]["initial"])}
        self.failures: list[tuple[str, int, dict[str, str]]] = []
        self.rules: list[dict[str, str]] = [{"id": "1", "value": "old query", "tag": "x"}]
        self.authors: dict[str, dict[str, tuple[dict, list]]] = {"mastodon": {}, "x": {}}  # see add_author
        self.lock = threading.Lock()
        self.hold: Optional[tuple[str, int]] = None  # (api, after this many more requests): answer nothing
        self.holding, self.release = threading.Event(), threading.Event()
        self.server = FakeHttpServer({"/": lambda request: _ApiCall(self, request).handle()})
        self.url = self.server.url

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def publish(self, api: str, items: Optional[list] = None) -> None:
        """Put the fixture's later items (or `items`) on top of an API's listing, as if just written."""
        with self.lock:
            if api == "graph/comments":
                for post, comments in (items or self.fixtures["facebook"]["comments"]["later"]).items():
                    self.visible[api][post] = comments + self.visible[api].get(post, [])
                return
            later = {"reddit/new": self.fixtures["reddit"]["posts"]["later"],
                     "reddit/comments": self.fixtures["reddit"]["comments"]["later"],
                     "graph": self.fixtures["facebook"]["posts"]["later"]}.get(api) or self.fixtures[api]["later"]
            self.visible[api] = copy.deepcopy(items if items is not None else later) + self.visible[api]

    def add_author(self, api: str, account: dict[str, Any], posts: list[dict[str, Any]]) -> None:
        """A Mastodon Account (by `acct`) or X User (by `username`) and its own posts, newest first."""
        with self.lock:
            self.authors[api][account["acct" if api == "mastodon" else "username"].casefold()] = (account, copy.deepcopy(posts))

    def fail_next(self, api: str, status: int, headers: Optional[dict[str, str]] = None) -> None:
        self.failures.append((api, status, headers or {}))

    def hold_after(self, api: str, requests: int) -> None:
        """Let `requests` more requests to `api` through, then keep the next one waiting until `release`
        is set: a connector process can be killed in the middle of a round at a known point."""
        self.hold = (api, requests)

    def close(self) -> None:
        self.release.set()
        self.server.close()


class _ApiCall:
    """One request to one of the APIs."""

    def __init__(self, apis: FakeApis, request: Request) -> None:
        self.apis, self.request = apis, request
        self.headers, self.command, self.path = request.headers, request.method, request.path

    def handle(self) -> None:
        api, _, rest = self.request.route.lstrip("/").partition("/")
        query, body = self.request.query, self.request.body
        if self.apis.hold and self.apis.hold[0] == api:
            if self.apis.hold[1] == 0:
                self.apis.holding.set()
                self.apis.release.wait(60)
                return self.request.hang_up()
            self.apis.hold = (api, self.apis.hold[1] - 1)
        failure = next((f for f in self.apis.failures if f[0] == api), None)
        if failure:
            self.apis.failures.remove(failure)
            return self._json({"error": "scripted failure"}, failure[1], failure[2])
        refusal = self._refused(api)
        if refusal:
            return self._json(*refusal)
        with self.apis.lock:
            getattr(self, f"_{api}")(rest, query, body)

    def _refused(self, api: str) -> Optional[tuple[dict, int]]:
        auth, expected = self.headers.get("Authorization", ""), TOKENS.get(api)
        if api == "youtube" and self.headers.get("X-Goog-Api-Key") != expected:
            return {"error": {"code": 403, "message": "API key not valid.", "errors": [{"reason": "forbidden"}]}}, 403
        if api in ("x", "graph") and auth != f"Bearer {expected}":
            return ({"title": "Unauthorized", "detail": "Unauthorized", "status": 401}, 401) if api == "x" else (
                {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}, 400)
        return None

    def _json(self, data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> None:
        self.request.json(data, status, headers)

    def _stream(self, chunks: list[bytes]) -> None:
        self.request.stream(chunks)

    def _base(self, api: str) -> str:
        return f"{self.apis.url}/{api}"

    def _discourse(self, rest: str, query: dict, body: bytes) -> None:
        page, _ = _page(self.apis.visible["discourse"], lambda p: str(p.get("id")), query.get("before"))
        self._json({"latest_posts": page})

    def _mastodon(self, rest: str, query: dict, body: bytes) -> None:
        if rest.startswith("api/v1/accounts/lookup"):
            author = self.apis.authors["mastodon"].get((query.get("acct") or "").casefold())
            return self._json(author[0] if author else {"id": "901", "acct": query.get("acct")})
        if rest.startswith("api/v1/streaming/hashtag"):
            events = [b":thump\n", b"event: delete\ndata: 113400000000000001\n\n"] + [
                b"event: update\ndata: " + json.dumps(s).encode() + b"\n\n" for s in self.apis.fixtures["mastodon"]["streamed"]]
            return self._stream(events)
        if rest.startswith("api/v1/statuses/") and rest.endswith("/context"):
            return self._json(self._mastodon_context(rest.split("/")[3]))
        own = {f"api/v1/accounts/{a['id']}/statuses": statuses for a, statuses in self.apis.authors["mastodon"].values()}
        page, following = _page(own.get(rest, self.apis.visible["mastodon"]), lambda s: s.get("id"), query.get("max_id"))
        path = urlsplit(self.path).path
        link = f'<{self.apis.url}{path}?limit=40&max_id={following}>; rel="next"' if following else ""
        self._json(page, headers={"Link": link, "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299",
                                  "X-RateLimit-Reset": "2026-11-05T12:00:00.000Z"})

    def _mastodon_context(self, status_id: str) -> dict[str, list]:
        """`GET /api/v1/statuses/:id/context`: the chain of parents up to the first status, oldest first."""
        statuses = {s.get("id"): s for s in self.apis.visible["mastodon"]}
        statuses.update({s.get("id"): s for _, own in self.apis.authors["mastodon"].values() for s in own})
        ancestors, parent = [], (statuses.get(status_id) or {}).get("in_reply_to_id")
        while parent and parent in statuses and len(ancestors) < len(statuses):
            ancestors.insert(0, statuses[parent])
            parent = statuses[parent].get("in_reply_to_id")
        return {"ancestors": ancestors, "descendants": []}

    def _reddit(self, rest: str, query: dict, body: bytes) -> None:
        if rest == "api/v1/access_token":
            ok = self.headers.get("Authorization", "").startswith("Basic ") and b"grant_type=client_credentials" in body
            return self._json({"access_token": TOKENS["reddit"], "token_type": "bearer", "expires_in": 86400,
                               "scope": "*"} if ok else {"error": "invalid_grant"}, 200 if ok else 401)
        if self.headers.get("Authorization") != f"bearer {TOKENS['reddit']}":
            return self._json({"message": "Unauthorized", "error": 401}, 401)
        listing = "reddit/new" if rest.endswith("/new") else "reddit/comments"
        page, following = _page(self.apis.visible[listing], lambda c: c["data"].get("name"), query.get("after"))
        self._json({"kind": "Listing", "data": {"after": following, "dist": len(page), "children": page, "before": None}},
                   headers={"x-ratelimit-used": "1", "x-ratelimit-remaining": "99.0", "x-ratelimit-reset": "420"})

    def _x(self, rest: str, query: dict, body: bytes) -> None:
        users = {u["id"]: u for u in self.apis.fixtures["x"]["users"]}
        named = [self.apis.authors["x"].get(n.casefold()) for n in re.findall(r"\bfrom:(\w+)", query.get("query") or "")]
        users.update({user["id"]: user for user, _ in filter(None, named)})
        if rest == "2/tweets/search/stream/rules":
            if self.command == "POST":
                change = json.loads(body)
                deleted = set((change.get("delete") or {}).get("ids") or [])
                self.apis.rules = [r for r in self.apis.rules if r["id"] not in deleted] + [
                    {"id": str(100 + i), **r} for i, r in enumerate(change.get("add") or [])]
                return self._json({"meta": {"sent": "2026-11-05T09:00:00.000Z"}}, 201 if change.get("add") else 200)
            return self._json({"data": self.apis.rules, "meta": {"result_count": len(self.apis.rules)}})
        if rest == "2/tweets/search/stream":
            lines = [b"\r\n"]
            for tweet in self.apis.fixtures["x"]["streamed"]:
                tags = [{"id": r["id"], "tag": r["tag"]} for r in self.apis.rules]
                lines.append(json.dumps({"data": tweet, "includes": {"users": [users[tweet["author_id"]]]},
                                         "matching_rules": tags}).encode() + b"\r\n")
            lines += [json.dumps(event).encode() + b"\r\n" for event in self.apis.fixtures["x"].get("stream_compliance", [])]
            return self._stream(lines)
        since = int(query.get("since_id") or 0)
        pool = self.apis.visible["x"] + [t for _, tweets in filter(None, named) for t in tweets]
        newer = [t for t in (sorted(pool, key=lambda t: -int(t["id"])) if any(named) else pool) if int(t["id"]) > since]
        page, following = _page(newer, lambda t: t["id"], query.get("next_token"))
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta.update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
        if following:
            meta["next_token"] = following
        answer: dict[str, Any] = {"meta": meta}
        if page:
            answer["data"] = page
            answer["includes"] = {"users": [users[a] for a in {t.get("author_id") for t in page} if a in users]}
            answer["includes"].update(self._x_includes(page))
        self._json(answer, headers={"x-rate-limit-limit": "450", "x-rate-limit-remaining": "449",
                                    "x-rate-limit-reset": "1762336800"})

    def _x_includes(self, page: list) -> dict[str, list]:
        """The referenced tweets and media of a page (expansions `referenced_tweets.id`, `attachments.media_keys`)."""
        pool = self.apis.fixtures["x"].get("includes") or {}
        referenced = {r.get("id") for t in page for r in t.get("referenced_tweets") or []}
        keys = {k for t in page for k in (t.get("attachments") or {}).get("media_keys") or []}
        found = {"tweets": [t for t in pool.get("tweets") or [] if t["id"] in referenced],
                 "media": [m for m in pool.get("media") or [] if m["media_key"] in keys]}
        return {part: items for part, items in found.items() if items}

    def _graph(self, rest: str, query: dict, body: bytes) -> None:
        node, _, edge = rest.partition("/")
        items = self.apis.visible["graph"] if edge == "feed" else self.apis.visible["graph/comments"].get(node, [])
        page, following = _page(items, lambda p: p.get("id"), query.get("after"))
        paging: dict[str, Any] = {"cursors": {"before": "MAZDZD", "after": following or "MTAZD"}}
        if following:
            paging["next"] = f"{self._base('graph')}/{rest}?" + urlencode({**query, "after": following,
                                                                          "access_token": "leaked-if-stored"})
        self._json({"data": page, "paging": paging})

    def _youtube(self, rest: str, query: dict, body: bytes) -> None:
        if rest == "youtube/v3/comments":  # comments.list?parentId=: the replies to one comment
            replies = (self.apis.fixtures["youtube"].get("replies") or {}).get(query.get("parentId"), [])
            page, following = _page(replies, lambda c: c.get("id"), query.get("pageToken"))
            return self._json({"kind": "youtube#commentListResponse", "items": page,
                               **({"nextPageToken": following} if following else {})})
        page, following = _page(self.apis.visible["youtube"], lambda t: t.get("id"), query.get("pageToken"))
        answer = {"kind": "youtube#commentThreadListResponse", "etag": "x", "items": page,
                  "pageInfo": {"totalResults": len(page), "resultsPerPage": PAGE}}
        if following:
            answer["nextPageToken"] = following
        self._json(answer)


class FakeChannels:
    """The reply endpoints of the six APIs (`triage reply`) on one FakeHttpServer, under /x, /mastodon, /reddit,
    /graph, /youtube and /discourse.

    An accepted POST publishes the reply on its channel (`published[api]`, the API's own objects from
    tests/fixtures/apis/replies/*.json, filled in), and the lookups (X search and DM events, Mastodon context,
    Reddit comment tree and sent messages, Graph and YouTube comment lists, Discourse topic posts) answer from what
    was published. `script(api, *actions)` decides the next POSTs of an API, one action each:
    ("refuse", status, headers[, fixture key]) answers that error (the API's error body, or that fixture) and
    publishes nothing;
    ("publish_then", status) publishes and then answers that error (a gateway 502 after the backend wrote it);
    ("publish_then_hang",) publishes and never answers (the kill -9 test). Then POSTs are accepted again.
    Mastodon also serves what its connector reads, so a reply can be read back: the statuses in
    `mastodon_timeline` (customers' statuses a test adds) and the replies published, public ones only, one page newest
    first, on the tag timeline (those with the tag) and the account timeline (`accounts/lookup` knows the brand's
    account and the customers'), as `GET /api/v1/timelines/tag/:hashtag` and `/api/v1/accounts/:id/statuses` do.
    """

    APIS = ("x", "mastodon", "reddit", "graph", "youtube", "discourse")
    BRAND = {"x": "TelcoHilfe", "mastodon": "telco_hilft", "reddit": "TelcoHilfe", "graph": "104200000000",
             "youtube": "UCtelco0000000000000000", "discourse": "telco_support"}

    def __init__(self) -> None:
        self.fixtures = {api: _load(f"replies/{'facebook' if api == 'graph' else api}") for api in self.APIS}
        self.published: dict[str, list[dict[str, Any]]] = {api: [] for api in (*self.APIS, "x_dm", "reddit_pm")}
        self.scripts: dict[str, list[tuple]] = {api: [] for api in self.APIS}
        self.idempotency: dict[str, dict[str, Any]] = {}
        self.mastodon_timeline: list[dict[str, Any]] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._next = 1000
        self.server = FakeHttpServer({f"/{api}": self._handle for api in self.APIS})
        self.url = self.server.url

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def posts(self, api: Optional[str] = None) -> list[Request]:
        """The POST requests (attempts to publish), of one API or all."""
        return [r for r in self.requests if r.method == "POST" and (api is None or r.route.startswith(f"/{api}/"))]

    def script(self, api: str, *actions: tuple) -> None:
        self.scripts[api].extend(actions)

    def close(self) -> None:
        self.released.set()
        self.server.close()

    def __enter__(self) -> "FakeChannels":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- dispatch ---------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> None:
        api, _, rest = request.route.lstrip("/").partition("/")
        if request.method == "GET":
            return getattr(self, f"_{api}_get")(request, rest)
        with self._lock:
            action = self.scripts[api].pop(0) if self.scripts[api] else ("ok",)
        if action[0] == "refuse":
            status, headers = action[1], (action[2] if len(action) > 2 else {})
            error = action[3] if len(action) > 3 else \
                {401: "unauthorized", 403: "unauthorized", 429: "rate_limited"}.get(status, "unavailable")
            return request.json(self.fixtures[api][error], status, headers)
        answer = getattr(self, f"_{api}_post")(request, rest)
        if action[0] == "publish_then":
            return request.json(self.fixtures[api]["unavailable"], action[1])
        if action[0] == "publish_then_hang":
            self.released.wait()
            return request.hang_up()
        status, body = answer
        request.json(body, status)

    def _id(self) -> str:
        with self._lock:
            self._next += 1
            return str(self._next)

    def _publish(self, channel: str, item: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.published[channel].append(item)
        return item

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}

    # ---- X ----------------------------------------------------------------------------------------------

    def _x_post(self, request: Request, rest: str) -> tuple[int, Any]:
        body, fixture = request.json_body(), self.fixtures["x"]
        if rest.startswith("2/dm_conversations/with/"):
            event = self._publish("x_dm", {"id": f"187{self._id()}", "event_type": "MessageCreate", "text": body["text"],
                                           "participant_id": rest.split("/")[3], "sender_id": "1234567890"})
            return 201, {"data": {**fixture["dm_created"]["data"], "dm_event_id": event["id"]}}
        answered = body["reply"]["in_reply_to_tweet_id"]
        conversation = next((t["conversation_id"] for t in fixture["tweets"] if t["id"] == answered), answered)
        tweet = self._publish("x", {"id": f"187{self._id()}", "text": body["text"], "conversation_id": conversation,
                                    "author": self.BRAND["x"], "in_reply_to": answered})
        return 201, {"data": {"id": tweet["id"], "text": tweet["text"], "edit_history_tweet_ids": [tweet["id"]]}}

    def _x_get(self, request: Request, rest: str) -> None:
        if rest.startswith("2/dm_conversations/with/"):
            participant = rest.split("/")[3]
            events = [{k: e[k] for k in ("id", "event_type", "text", "sender_id")}
                      for e in self.published["x_dm"] if e["participant_id"] == participant]
            return request.json({"data": events, "meta": {"result_count": len(events)}} if events
                                else {"meta": {"result_count": 0}})
        terms = dict(term.split(":", 1) for term in request.query["query"].split())
        found = [{"id": t["id"], "text": t["text"], "conversation_id": t["conversation_id"]} for t in self.published["x"]
                 if terms.get("from", "").lower() == t["author"].lower()
                 and (t["conversation_id"] == terms.get("conversation_id") or t["in_reply_to"] == terms.get("in_reply_to_tweet_id"))]
        meta = {**self.fixtures["x"]["search_meta"], "result_count": len(found),
                "newest_id": found[-1]["id"] if found else None, "oldest_id": found[0]["id"] if found else None}
        request.json({"data": found[::-1], "meta": meta} if found else {"meta": {"result_count": 0}})

    # ---- Mastodon ---------------------------------------------------------------------------------------

    def _mastodon_post(self, request: Request, rest: str) -> tuple[int, Any]:
        key, body = request.headers.get("Idempotency-Key"), request.json_body()
        if key in self.idempotency:  # Mastodon answers a repeated key with the status it made the first time
            return 200, self.idempotency[key]
        native = f"1135{self._id()}"
        status = self._publish("mastodon", {
            **copy.deepcopy(self.fixtures["mastodon"]["status"]), "id": native, "in_reply_to_id": body["in_reply_to_id"],
            "visibility": body.get("visibility", "public"), "content": f"<p>{_html_escape(body['status'])}</p>",
            "uri": f"https://social.example/users/telco_hilft/statuses/{native}",
            "url": f"https://social.example/@telco_hilft/{native}"})
        self.idempotency[key] = status
        return 200, status

    def _mastodon_get(self, request: Request, rest: str) -> None:
        public = sorted((s for s in self.mastodon_timeline + self.published["mastodon"] if s["visibility"] == "public"),
                        key=lambda s: int(s["id"]), reverse=True)
        if rest.startswith("api/v1/timelines/tag/"):
            tag = rest.split("/")[4].casefold()
            return request.json([s for s in public if tag in {t["name"].casefold() for t in s.get("tags") or []}])
        if rest == "api/v1/accounts/lookup":
            accounts = [self.fixtures["mastodon"]["status"]["account"]] + [s["account"] for s in self.mastodon_timeline]
            acct = request.query.get("acct", "").casefold()
            found = next((a for a in accounts if a["acct"].casefold() == acct), None)
            return request.json(found or {"error": "Record not found"}, 200 if found else 404)
        if rest.startswith("api/v1/accounts/"):  # api/v1/accounts/:id/statuses
            return request.json([s for s in public if s["account"]["id"] == rest.split("/")[3]])
        status_id = rest.split("/")[3]  # api/v1/statuses/:id/context
        request.json({"ancestors": [], "descendants": [s for s in self.published["mastodon"]
                                                       if s["in_reply_to_id"] == status_id]})

    # ---- Reddit -----------------------------------------------------------------------------------------

    def _reddit_post(self, request: Request, rest: str) -> tuple[int, Any]:
        form, fixture = self._form(request), self.fixtures["reddit"]
        if rest == "api/compose":
            native = self._id()
            self._publish("reddit_pm", {**copy.deepcopy(fixture["message"]), "data": {
                **fixture["message"]["data"], "id": native, "name": f"t4_{native}", "dest": form["to"],
                "subject": form["subject"], "body": form["text"]}})
            return 200, fixture["compose_ok"]
        parent = form["thing_id"]
        link = parent if parent.startswith("t3_") else fixture["things"][parent]["data"]["link_id"]
        native = f"m{self._id()}"
        comment = self._publish("reddit", {"kind": "t1", "data": {
            **fixture["comment"]["data"], "id": native, "name": f"t1_{native}", "parent_id": parent, "link_id": link,
            "body": form["text"], "permalink": f"/r/telekom/comments/{link[3:]}/_/{native}/"}})
        return 200, {"json": {"errors": [], "data": {"things": [comment]}}}

    def _reddit_get(self, request: Request, rest: str) -> None:
        things = self.fixtures["reddit"]["things"]
        if rest == "api/info":
            wanted = request.query["id"]
            return request.json({"kind": "Listing", "data": {"children": [things[wanted]] if wanted in things else []}})
        if rest == "message/sent":
            return request.json({"kind": "Listing", "data": {"children": self.published["reddit_pm"][::-1]}})
        article = f"t3_{rest.split('/')[1]}"  # comments/{article}
        replies_to = lambda name: {"kind": "Listing", "data": {"children": [  # noqa: E731
            c for c in self.published["reddit"] if c["data"]["parent_id"] == name]}}
        focus = f"t1_{request.query['comment']}" if "comment" in request.query else None
        comments = [{"kind": "t1", "data": {**things[focus]["data"], "replies": replies_to(focus)}}] if focus \
            else replies_to(article)["data"]["children"]
        request.json([{"kind": "Listing", "data": {"children": [things[article]]}},
                      {"kind": "Listing", "data": {"children": comments}}])

    # ---- Graph (Facebook) -------------------------------------------------------------------------------

    def _graph_post(self, request: Request, rest: str) -> tuple[int, Any]:
        node = rest.split("/")[0]
        comment = self._publish("graph", {**copy.deepcopy(self.fixtures["graph"]["comment"]),
                                          "id": f"{node.split('_')[0]}_{self._id()}", "parent": node,
                                          "message": self._form(request)["message"],
                                          "from": {"id": self.BRAND["graph"], "name": "Telco Deutschland"}})
        return 200, {**self.fixtures["graph"]["created"], "id": comment["id"]}

    def _graph_get(self, request: Request, rest: str) -> None:
        node = rest.split("/")[0]
        comments = [{k: v for k, v in c.items() if k != "parent"} for c in self.published["graph"] if c["parent"] == node]
        request.json({"data": comments, "paging": self.fixtures["graph"]["paging"]})

    # ---- YouTube ----------------------------------------------------------------------------------------

    def _youtube_post(self, request: Request, rest: str) -> tuple[int, Any]:
        snippet = request.json_body()["snippet"]
        template = copy.deepcopy(self.fixtures["youtube"]["comment"])
        comment = self._publish("youtube", {**template, "id": f"{snippet['parentId']}.AZ{self._id()}", "snippet": {
            **template["snippet"], "parentId": snippet["parentId"], "textOriginal": snippet["textOriginal"],
            "textDisplay": _html_escape(snippet["textOriginal"]), "authorChannelId": {"value": self.BRAND["youtube"]},
            "channelId": self.BRAND["youtube"]}})
        return 200, comment

    def _youtube_get(self, request: Request, rest: str) -> None:
        items = [c for c in self.published["youtube"] if c["snippet"]["parentId"] == request.query.get("parentId")]
        request.json({**self.fixtures["youtube"]["list"], "items": items})

    # ---- Discourse --------------------------------------------------------------------------------------

    def _discourse_post(self, request: Request, rest: str) -> tuple[int, Any]:
        body = request.json_body()
        numbers = [p["post_number"] for p in self.published["discourse"] if p["topic_id"] == body["topic_id"]]
        number = max(numbers + [body.get("reply_to_post_number") or 1, 5]) + 1
        post = self._publish("discourse", {**copy.deepcopy(self.fixtures["discourse"]["post"]), "id": int(self._id()),
                                           "topic_id": body["topic_id"], "post_number": number,
                                           "reply_to_post_number": body.get("reply_to_post_number"),
                                           "raw": body["raw"], "cooked": f"<p>{_html_escape(body['raw'])}</p>",
                                           "username": request.headers.get("Api-Username")})
        return 200, post

    def _discourse_get(self, request: Request, rest: str) -> None:
        topic = int(rest.split("/")[1])  # t/{id}/posts.json
        posts = [p if request.query.get("include_raw") else {k: v for k, v in p.items() if k != "raw"}
                 for p in self.published["discourse"] if p["topic_id"] == topic]
        request.json({**self.fixtures["discourse"]["topic_posts"], "id": topic, "post_stream": {"posts": posts}})


def _html_escape(text: str) -> str:
    return html.escape(text, quote=False)
