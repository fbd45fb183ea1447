"""Local stand-ins for the helpdesk APIs the handoff writes to: Zendesk, Zammad, Freshdesk, Chatwoot, and a generic
signed-webhook receiver, each on its own `FakeHttpServer`, holding tickets and their articles in memory.

Each follows its API's documented requests and answers (paths, JSON shapes, status codes, error bodies) for the
endpoints connectors/helpdesks/ uses, and checks the API's auth header (401 with the API's own error body when it
is wrong). Use one as a context manager; `target(name, **settings)` gives the handoff.yaml entry pointing at it and
sets the environment variable it names to the fake's token (keys of `Mapping` go into the mapping, the others,
such as `raw_text`, into the target):

    with FakeZendesk() as zd:
        client = client_for(zd.target("zd", priorities={"P1": "urgent"}), http)
        ...
        assert zd.tickets()[0]["priority"] == "urgent"

Knobs, the same on every fake:
- `down()` / `up()`: while down, every request is answered 503 with `Retry-After: 30` (the API's maintenance
  answer, in its error shape; the webhook receiver sends no Retry-After) or, with `down(hang_up=True)`, the
  connection is closed without an answer (what a crashed helpdesk looks like).
- `fail_next(status, headers=None, commit=False)`: the next request is answered with `status` and the API's
  documented error body for it (429 with e.g. {"Retry-After": "7"}, 422 validation, 401, 503); with `commit=True`
  the request is carried out first and only its answer is lost (a gateway error after the write: the uncertain
  case the handoff must look up before sending again). Several calls queue up, one request each.
- `lose_create_answer(status=502)`: the next ticket-creating request is carried out and answered `status` (the
  same uncertain case, aimed past the customer lookups that come before it).
- `tickets()`, `articles(ticket_id)`: what the helpdesk holds, in the API's own shapes.
- `reply(ticket_id, text, at=None)`: an agent answers the customer publicly; `set_status(ticket_id, status)`: an
  agent changes the ticket's status (in the API's own values). Both feed `ticket_state` polling.
- `requests`: every request the fake saw (FakeHttpServer.Request), for asserting on what was sent.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import threading
import time
from datetime import datetime
from typing import Any, Optional
from urllib.parse import urlsplit

from connectors.helpdesks.config import ChatwootTarget, FreshdeskTarget, Mapping, WebhookTarget, ZammadTarget, \
    ZendeskTarget
from fake_apis import FakeHttpServer, Request

NOW = "2026-11-05T09:00:00Z"


class _Fake:
    """What every fake shares: the server, the knobs, ids, and the auth check."""

    token_env = ""
    token = ""
    CREATE: tuple[str, ...] = ()  # the paths of the ticket-creating request

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._failures: list[tuple[int, dict[str, str], bool]] = []
        self._down: Optional[str] = None
        self._lose_create: Optional[int] = None
        self._tickets: dict[int, dict[str, Any]] = {}
        self._articles: dict[int, list[dict[str, Any]]] = {}
        self.server = FakeHttpServer({"/": self._handle})
        self.url = self.server.url

    # ---- knobs ------------------------------------------------------------------------------------------

    def down(self, hang_up: bool = False) -> None:
        self._down = "hang_up" if hang_up else "503"

    def up(self) -> None:
        self._down = None

    def fail_next(self, status: int, headers: Optional[dict[str, str]] = None, commit: bool = False) -> None:
        with self._lock:
            self._failures.append((status, headers or {}, commit))

    def lose_create_answer(self, status: int = 502) -> None:
        self._lose_create = status

    def tickets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(t)) for t in self._tickets.values()]

    def articles(self, ticket_id: Any) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._articles.get(int(ticket_id), [])))

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def close(self) -> None:
        self.server.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _target(self, cls: type, name: str, settings: dict[str, Any], **fixed: Any) -> Any:
        """The config object for this fake; Mapping's keys in `settings` go into the mapping."""
        os.environ[self.token_env] = self.token
        mapping = {k: settings.pop(k) for k in list(settings) if k in Mapping.model_fields}
        return cls(name=name, mapping=Mapping(**mapping), url=self.url, **fixed, **settings)

    # ---- dispatch ---------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> None:
        if self._down == "hang_up":
            return request.hang_up()
        if self._down == "503":
            return request.json(self._error(503, "Service Unavailable"), 503, {"Retry-After": "30"})
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure and not failure[2]:
            return request.json(self._error(failure[0], "scripted failure"), failure[0], failure[1])
        if not self._authorized(request):
            return request.json(self._error(401, ""), 401)
        with self._lock:
            status, body, headers = self._route(request)
        if failure:  # commit=True: carried out, the answer lost
            return request.json(self._error(failure[0], "scripted failure"), failure[0], failure[1])
        if self._lose_create and request.method == "POST" and request.route in self.CREATE:
            lost, self._lose_create = self._lose_create, None
            return request.json(self._error(lost, "scripted failure"), lost)
        request.json(body, status, headers)

    def _next_id(self) -> int:
        return next(self._ids)

    def _authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def _route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def _error(self, status: int, detail: str) -> Any:
        raise NotImplementedError


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _not_found(what: str) -> tuple[int, Any, dict[str, str]]:
    return 404, {"error": f"{what} not found"}, {}


# ---- Zendesk ---------------------------------------------------------------------------------------------------

class FakeZendesk(_Fake):
    """Zendesk Support API v2: users/create_or_update, tickets (create, show, list by `external_id`, update with a
    comment), ticket comments, groups. 422 bodies are Zendesk's RecordInvalid shape; 401 "Couldn't authenticate you".
    `groups`: name -> id of the groups that exist."""

    token_env = "TRIAGE_TEST_ZENDESK_TOKEN"
    token = "zd-test-token"
    email = "triage@telco.example"
    PRIORITIES = ("low", "normal", "high", "urgent")
    CREATE = ("/api/v2/tickets.json", "/api/v2/tickets")

    def __init__(self, groups: Optional[dict[str, int]] = None) -> None:
        super().__init__()
        self.groups = groups or {"Social Media": 360001, "Billing": 360002}
        self.users: dict[int, dict[str, Any]] = {}

    def target(self, name: str, **settings: Any) -> ZendeskTarget:
        return self._target(ZendeskTarget, name, settings, kind="zendesk", email=self.email, token_env=self.token_env)

    def reply(self, ticket_id: Any, text: str, at: Optional[str] = None) -> None:
        with self._lock:
            self._comment(int(ticket_id), {"body": text, "public": True}, author_id=1, at=at or NOW)
            self._tickets[int(ticket_id)]["status"] = "pending"

    def set_status(self, ticket_id: Any, status: str) -> None:
        with self._lock:
            self._tickets[int(ticket_id)]["status"] = status

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == _basic(f"{self.email}/token", self.token)

    def _error(self, status: int, detail: str) -> Any:
        if status == 401:
            return {"error": "Couldn't authenticate you"}
        if status == 422:
            return {"error": "RecordInvalid", "description": "Record validation errors",
                    "details": {"base": [{"description": detail or "Invalid", "error": "InvalidValue"}]}}
        if status == 429:
            return {"error": "TooManyRequests", "description": "You have exceeded the rate limit"}
        return {"error": "ServiceUnavailable", "description": detail}

    def _invalid(self, description: str) -> tuple[int, Any, dict[str, str]]:
        return 422, self._error(422, description), {}

    def _route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        route, method = request.route.removesuffix(".json"), request.method
        if route == "/api/v2/users/create_or_update" and method == "POST":
            return self._upsert_user(request.json_body().get("user") or {})
        if route == "/api/v2/groups" and method == "GET":
            return 200, {"groups": [{"id": i, "name": n, "deleted": False} for n, i in self.groups.items()],
                         "next_page": None, "previous_page": None, "count": len(self.groups)}, {}
        if route == "/api/v2/tickets" and method == "POST":
            return self._create(request.json_body().get("ticket") or {})
        if route == "/api/v2/tickets" and method == "GET":
            found = [t for t in self._tickets.values()
                     if "external_id" in request.query and t["external_id"] == request.query["external_id"]]
            return 200, {"tickets": found, "next_page": None, "previous_page": None, "count": len(found)}, {}
        match = re.fullmatch(r"/api/v2/tickets/(\d+)(/comments)?", route)
        if not match or int(match[1]) not in self._tickets:
            return 404, {"error": "RecordNotFound", "description": "Not found"}, {}
        ticket_id = int(match[1])
        if match[2] and method == "GET":
            comments = self._articles[ticket_id]
            return 200, {"comments": comments, "next_page": None, "previous_page": None, "count": len(comments)}, {}
        if method == "GET":
            return 200, {"ticket": self._tickets[ticket_id]}, {}
        if method == "PUT":
            return self._update(ticket_id, request.json_body().get("ticket") or {})
        return 404, {"error": "InvalidEndpoint", "description": "Not found"}, {}

    def _upsert_user(self, user: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not user.get("name"):
            return self._invalid("Name: is too short (minimum one character)")
        existing = next((u for u in self.users.values() if user.get("external_id")
                         and u["external_id"] == user["external_id"]), None)
        if existing:
            existing["name"] = user["name"]
            return 200, {"user": existing}, {}
        created = {"id": self._next_id(), "name": user["name"], "external_id": user.get("external_id"),
                   "email": user.get("email"), "role": "end-user", "created_at": NOW}
        self.users[created["id"]] = created
        return 201, {"user": created}, {}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        comment = body.get("comment") or {}
        if not (comment.get("body") or comment.get("html_body")):
            return self._invalid("Description: cannot be blank")
        if body.get("priority") not in (None, *self.PRIORITIES):
            return self._invalid(f"Priority: {body['priority']} is not a valid priority")
        if body.get("due_at") and body.get("type") != "task":
            return self._invalid("Due date: can only be set on tasks")
        if body.get("group_id") is not None and body["group_id"] not in self.groups.values():
            return self._invalid(f"Group: {body['group_id']} is not valid")
        if any(not isinstance(f.get("id"), int) for f in body.get("custom_fields") or []):
            return self._invalid("Custom fields: the id must be a number")
        if body.get("requester_id") is not None and body["requester_id"] not in self.users:
            return self._invalid("Requester: is invalid")
        ticket_id = self._next_id()
        ticket = {"id": ticket_id, "url": f"{self.url}/api/v2/tickets/{ticket_id}.json",
                  "external_id": body.get("external_id"), "subject": body.get("subject"),
                  "raw_subject": body.get("subject"), "description": comment.get("body"),
                  "priority": body.get("priority"), "status": body.get("status", "new"), "type": body.get("type"),
                  "group_id": body.get("group_id"), "requester_id": body.get("requester_id"), "submitter_id": 1,
                  "assignee_id": None, "due_at": body.get("due_at"), "tags": sorted(set(body.get("tags") or [])),
                  "custom_fields": body.get("custom_fields") or [], "created_at": NOW, "updated_at": NOW}
        self._tickets[ticket_id] = ticket
        self._articles[ticket_id] = []
        self._comment(ticket_id, comment, author_id=comment.get("author_id") or 1, at=NOW)
        return 201, {"ticket": ticket}, {"Location": ticket["url"]}

    def _update(self, ticket_id: int, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        ticket, events = self._tickets[ticket_id], []
        comment = body.get("comment")
        if comment is not None:
            if not (comment.get("body") or comment.get("html_body")):
                return self._invalid("Comment: cannot be blank")
            events.append(self._comment(ticket_id, comment, author_id=comment.get("author_id") or 1, at=NOW))
        for key in ("status", "priority", "group_id", "assignee_id"):
            if key in body:
                ticket[key] = body[key]
        ticket["updated_at"] = NOW
        return 200, {"ticket": ticket, "audit": {"id": self._next_id(), "ticket_id": ticket_id, "created_at": NOW,
                                                 "author_id": 1, "events": events}}, {}

    def _comment(self, ticket_id: int, comment: dict[str, Any], author_id: int, at: str) -> dict[str, Any]:
        body = comment.get("body") or comment.get("html_body")
        made = {"id": self._next_id(), "type": "Comment", "author_id": author_id, "body": body, "html_body": body,
                "plain_body": body, "public": comment.get("public", True), "attachments": [], "created_at": at}
        self._articles[ticket_id].append(made)
        return made


# ---- Zammad ----------------------------------------------------------------------------------------------------

class FakeZammad(_Fake):
    """Zammad REST API v1: tickets (create with `group`/`priority`/`state` by name, `customer_id: "guess:<e-mail>"`,
    a first `article` and comma-separated `tags`; show with `expand=true`; search by `tags:"..."`), ticket articles
    (create, by_ticket). Errors are Zammad's {"error", "error_human"}. `groups` exist by name."""

    token_env = "TRIAGE_TEST_ZAMMAD_TOKEN"
    token = "zammad-test-token"
    PRIORITIES = {"1 low": 1, "2 normal": 2, "3 high": 3}
    CREATE = ("/api/v1/tickets",)
    STATES = {"new": 1, "open": 2, "pending reminder": 3, "closed": 4, "merged": 5, "pending close": 7}

    def __init__(self, groups: Optional[list[str]] = None) -> None:
        super().__init__()
        self.groups = {name: i for i, name in enumerate(groups or ["Users", "Social Media", "Billing"], start=1)}
        self.customers: dict[str, dict[str, Any]] = {}

    def target(self, name: str, **settings: Any) -> ZammadTarget:
        return self._target(ZammadTarget, name, settings, kind="zammad", token_env=self.token_env)

    def reply(self, ticket_id: Any, text: str, at: Optional[str] = None) -> None:
        with self._lock:
            ticket = self._tickets[int(ticket_id)]
            self._article(ticket, {"body": text, "type": "email", "internal": False}, "Agent", at or NOW)
            ticket["first_response_at"] = ticket["first_response_at"] or at or NOW
            ticket["state_id"], ticket["state"] = self.STATES["open"], "open"

    def set_status(self, ticket_id: Any, status: str) -> None:
        with self._lock:
            ticket = self._tickets[int(ticket_id)]
            ticket["state_id"], ticket["state"] = self.STATES[status], status

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") in (f"Token token={self.token}", f"Bearer {self.token}")

    def _error(self, status: int, detail: str) -> Any:
        if status == 401:
            return {"error": "Invalid token!", "error_human": "Invalid token!"}
        if status == 429:
            return {"error": "Too many requests", "error_human": "Too many requests"}
        return {"error": detail or "Unprocessable Entity", "error_human": detail or "Unprocessable Entity"}

    def _invalid(self, message: str) -> tuple[int, Any, dict[str, str]]:
        return 422, {"error": message, "error_human": message}, {}

    def _route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        route, method = request.route, request.method
        if route == "/api/v1/tickets" and method == "POST":
            return self._create(request.json_body())
        if route == "/api/v1/tickets/search" and method == "GET":
            return self._search(request.query.get("query", ""), int(request.query.get("limit", 10)))
        if route == "/api/v1/ticket_articles" and method == "POST":
            body = request.json_body()
            ticket = self._tickets.get(int(body.get("ticket_id") or 0))
            if ticket is None:
                return self._invalid("Need ticket_id!")
            if not body.get("body"):
                return self._invalid("Need body!")
            return 201, self._article(ticket, body, body.get("sender", "Agent"), NOW), {}
        match = re.fullmatch(r"/api/v1/ticket_articles/by_ticket/(\d+)", route)
        if match and method == "GET":
            return (200, self._articles[int(match[1])], {}) if int(match[1]) in self._tickets \
                else _not_found("Ticket")
        match = re.fullmatch(r"/api/v1/tickets/(\d+)", route)
        if match and method == "GET" and int(match[1]) in self._tickets:
            ticket = dict(self._tickets[int(match[1])])
            if request.query.get("expand") != "true":
                for name in ("group", "priority", "state", "customer", "tags"):
                    ticket.pop(name, None)
            return 200, ticket, {}
        return 404, {"error": "No route matches", "error_human": "Not found"}, {}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not body.get("title"):
            return self._invalid("Missing required attribute 'title'")
        if body.get("group") not in self.groups:
            return self._invalid(f"No lookup value found for 'group': {json.dumps(body.get('group'))}")
        priority = body.get("priority", "2 normal")
        if priority not in self.PRIORITIES:
            return self._invalid(f"No lookup value found for 'priority': {json.dumps(priority)}")
        customer = str(body.get("customer_id") or "")
        if not customer.startswith("guess:") or "@" not in customer:
            return self._invalid("No such customer, use guess:<email> or an id")
        email = customer[len("guess:"):]
        account = self.customers.setdefault(email, {"id": self._next_id(), "email": email, "role": "Customer"})
        article = body.get("article") or {}
        if not article.get("body"):
            return self._invalid("Need at least an article body!")
        ticket_id = self._next_id()
        ticket = {"id": ticket_id, "number": str(31000 + ticket_id), "title": body["title"],
                  "group_id": self.groups[body["group"]], "group": body["group"],
                  "priority_id": self.PRIORITIES[priority], "priority": priority,
                  "state_id": self.STATES[body.get("state", "new")], "state": body.get("state", "new"),
                  "customer_id": account["id"], "customer": email, "owner_id": 1, "first_response_at": None,
                  "tags": [t.strip() for t in str(body.get("tags") or "").split(",") if t.strip()],
                  "created_at": NOW, "updated_at": NOW, "article_ids": []}
        ticket.update({k: v for k, v in body.items() if k not in ticket and k not in ("article", "customer_id")})
        self._tickets[ticket_id] = ticket
        self._articles[ticket_id] = []
        self._article(ticket, article, article.get("sender", "Customer"), NOW)
        return 201, ticket, {}

    def _article(self, ticket: dict[str, Any], body: dict[str, Any], sender: str, at: str) -> dict[str, Any]:
        made = {"id": self._next_id(), "ticket_id": ticket["id"], "body": body["body"],
                "content_type": body.get("content_type", "text/plain"), "subject": body.get("subject"),
                "type": body.get("type", "note"), "internal": bool(body.get("internal", False)), "sender": sender,
                "created_at": at, "updated_at": at}
        self._articles[ticket["id"]].append(made)
        ticket["article_ids"].append(made["id"])
        return made

    def _search(self, query: str, limit: int) -> tuple[int, Any, dict[str, str]]:
        """Only the `tags:"<tag>"` form the client sends (Zammad's Elasticsearch query syntax)."""
        match = re.fullmatch(r'tags:"([^"]+)"', query.strip())
        if not match:
            return 200, {"tickets": [], "tickets_count": 0, "assets": {}}, {}
        found = [t for t in self._tickets.values() if match[1] in t["tags"]][:limit]
        return 200, {"tickets": [t["id"] for t in found], "tickets_count": len(found),
                     "assets": {"Ticket": {str(t["id"]): t for t in found}}}, {}


# ---- Freshdesk -------------------------------------------------------------------------------------------------

class FakeFreshdesk(_Fake):
    """Freshdesk API v2: tickets (create, view with `include=stats`), search (`query="cf_...:'...'"`), notes,
    conversations, groups. Validation errors are 400 {"description": "Validation failed", "errors": [...]};
    401 {"code": "invalid_credentials", ...}. `groups`: name -> id."""

    token_env = "TRIAGE_TEST_FRESHDESK_KEY"
    token = "fd-test-key"
    CREATE = ("/api/v2/tickets",)

    def __init__(self, groups: Optional[dict[str, int]] = None) -> None:
        super().__init__()
        self.groups = groups or {"Social Media": 43000001, "Billing": 43000002}
        self.contacts: dict[str, dict[str, Any]] = {}

    def target(self, name: str, **settings: Any) -> FreshdeskTarget:
        return self._target(FreshdeskTarget, name, settings, kind="freshdesk", token_env=self.token_env)

    def reply(self, ticket_id: Any, text: str, at: Optional[str] = None) -> None:
        with self._lock:
            ticket = self._tickets[int(ticket_id)]
            self._conversation(ticket["id"], {"body": text, "private": False}, incoming=False, source=0, at=at or NOW)
            stats = ticket["stats"]
            stats["first_responded_at"] = stats["first_responded_at"] or at or NOW
            stats["agent_responded_at"] = at or NOW
            ticket["status"] = 3

    def set_status(self, ticket_id: Any, status: int) -> None:
        with self._lock:
            ticket = self._tickets[int(ticket_id)]
            ticket["status"] = status
            if status == 5:
                ticket["stats"]["closed_at"] = NOW

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == _basic(self.token, "X")

    def _error(self, status: int, detail: str) -> Any:
        if status == 401:
            return {"code": "invalid_credentials", "message": "You have to be logged in to perform this action."}
        if status in (400, 422):
            return {"description": "Validation failed",
                    "errors": [{"field": "description", "message": detail or "It should not be blank",
                                "code": "invalid_value"}]}
        if status == 429:
            return {"code": "too_many_requests", "message": "You have exceeded the limit of requests per minute"}
        return {"code": "service_unavailable", "message": detail}

    def _invalid(self, field: str, message: str, code: str = "invalid_value") -> tuple[int, Any, dict[str, str]]:
        return 400, {"description": "Validation failed",
                     "errors": [{"field": field, "message": message, "code": code}]}, {}

    def _route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        route, method = request.route, request.method
        if route == "/api/v2/tickets" and method == "POST":
            return self._create(request.json_body())
        if route == "/api/v2/groups" and method == "GET":
            return 200, [{"id": i, "name": n} for n, i in self.groups.items()], {}
        if route == "/api/v2/search/tickets" and method == "GET":
            return self._search(request.query.get("query", ""))
        match = re.fullmatch(r"/api/v2/tickets/(\d+)(/notes|/conversations)?", route)
        if not match or int(match[1]) not in self._tickets:
            return 404, {"code": "access_denied", "message": "You are not authorized to perform this action."}, {}
        ticket = self._tickets[int(match[1])]
        if match[2] == "/notes" and method == "POST":
            body = request.json_body()
            if not body.get("body"):
                return self._invalid("body", "It should not be blank", "missing_field")
            return 201, self._conversation(ticket["id"], body, incoming=bool(body.get("incoming")), source=2,
                                           at=NOW), {}
        if match[2] == "/conversations" and method == "GET":
            return 200, self._articles[ticket["id"]], {}
        if not match[2] and method == "GET":
            shown = {k: v for k, v in ticket.items() if k != "stats" or request.query.get("include") == "stats"}
            return 200, shown, {}
        return 405, {"code": "method_not_allowed", "message": "Method not allowed"}, {}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not any(body.get(k) for k in ("requester_id", "email", "phone", "twitter_id", "facebook_id",
                                          "unique_external_id")):
            return self._invalid("requester_id", "Please fill at least 1 of requester_id, phone, email, twitter_id, "
                                                 "facebook_id, unique_external_id fields", "missing_field")
        if body.get("phone") or body.get("unique_external_id"):
            if not body.get("name"):
                return self._invalid("name", "It should be a/an String", "missing_field")
        for key in ("subject", "description"):
            if not body.get(key):
                return self._invalid(key, "It should not be blank", "missing_field")
        if body.get("priority", 1) not in (1, 2, 3, 4):
            return self._invalid("priority", "It should be one of these values: '1,2,3,4'")
        if body.get("group_id") is not None and body["group_id"] not in self.groups.values():
            return self._invalid("group_id", "There is no group matching the given group_id")
        if bool(body.get("due_by")) != bool(body.get("fr_due_by")):
            return self._invalid("due_by", "Both due_by and fr_due_by must be given")
        if body.get("due_by") and body["fr_due_by"] > body["due_by"]:
            return self._invalid("fr_due_by", "fr_due_by should be less than or equal to due_by")
        unknown = [k for k in body.get("custom_fields") or {} if not k.startswith("cf_")]
        if unknown:
            return self._invalid(unknown[0], "Unexpected/invalid field in request", "invalid_field")
        contact_key = body.get("unique_external_id") or body.get("email") or body.get("phone") or ""
        contact = self.contacts.setdefault(contact_key, {"id": self._next_id(), "name": body.get("name")})
        ticket_id = self._next_id()
        ticket = {"id": ticket_id, "subject": body["subject"], "description": body["description"],
                  "description_text": re.sub(r"<[^>]+>", "", body["description"]), "status": body.get("status", 2),
                  "priority": body.get("priority", 1), "source": body.get("source", 2), "type": body.get("type"),
                  "group_id": body.get("group_id"), "responder_id": None, "requester_id": contact["id"],
                  "due_by": body.get("due_by"), "fr_due_by": body.get("fr_due_by"), "tags": body.get("tags") or [],
                  "custom_fields": body.get("custom_fields") or {}, "created_at": NOW, "updated_at": NOW,
                  "stats": {"agent_responded_at": None, "requester_responded_at": None, "first_responded_at": None,
                            "status_updated_at": NOW, "reopened_at": None, "resolved_at": None, "closed_at": None,
                            "pending_since": None}}
        self._tickets[ticket_id] = ticket
        self._articles[ticket_id] = []
        return 201, {k: v for k, v in ticket.items() if k != "stats"}, \
            {"Location": f"{self.url}/api/v2/tickets/{ticket_id}"}

    def _conversation(self, ticket_id: int, body: dict[str, Any], incoming: bool, source: int,
                      at: str) -> dict[str, Any]:
        made = {"id": self._next_id(), "ticket_id": ticket_id, "body": body["body"],
                "body_text": re.sub(r"<[^>]+>", "", body["body"]), "private": bool(body.get("private", True)),
                "incoming": incoming, "source": source, "user_id": 1, "created_at": at, "updated_at": at}
        self._articles[ticket_id].append(made)
        return made

    def _search(self, query: str) -> tuple[int, Any, dict[str, str]]:
        """Freshdesk's filter query: the value enclosed in double quotes, string values in single quotes."""
        match = re.fullmatch(r"\"(cf_\w+):'([^']*)'\"", query.strip())
        if not match:
            return self._invalid("query", "It should be in the 'query' format enclosed in double quotes",
                                 "invalid_value")
        found = [{k: v for k, v in t.items() if k != "stats"} for t in self._tickets.values()
                 if t["custom_fields"].get(match[1]) == match[2]]
        return 200, {"results": found, "total": len(found)}, {}


# ---- Chatwoot --------------------------------------------------------------------------------------------------

class FakeChatwoot(_Fake):
    """Chatwoot application API (v1, one account): contacts (create, search), conversations (create with
    `inbox_id`/`contact_id`/`custom_attributes`/`team_id`, show, filter by a custom attribute), labels,
    toggle_priority, assignments, messages, teams. Errors: 401 {"errors": [...]},
    422 {"message": ..., "attributes": ...}.
    `teams`: id -> name; `account_id`, `inbox_id` are the only ones that exist."""

    token_env = "TRIAGE_TEST_CHATWOOT_TOKEN"
    token = "cw-test-token"
    account_id, inbox_id = 7, 3
    PRIORITIES = ("urgent", "high", "medium", "low", None)
    CREATE = (f"/api/v1/accounts/{account_id}/conversations",)

    def __init__(self, teams: Optional[dict[int, str]] = None) -> None:
        super().__init__()
        self.teams = teams or {11: "social media", 12: "billing"}
        self.contacts: dict[int, dict[str, Any]] = {}

    def target(self, name: str, **settings: Any) -> ChatwootTarget:
        return self._target(ChatwootTarget, name, settings, kind="chatwoot", token_env=self.token_env,
                            account_id=self.account_id, inbox_id=self.inbox_id)

    def reply(self, ticket_id: Any, text: str, at: Optional[str] = None) -> None:
        with self._lock:
            conversation = self._tickets[int(ticket_id)]
            stamp = _epoch(at or NOW)
            self._message(conversation, {"content": text, "message_type": "outgoing"}, stamp)
            conversation["first_reply_created_at"] = conversation["first_reply_created_at"] or stamp

    def set_status(self, ticket_id: Any, status: str) -> None:
        with self._lock:
            self._tickets[int(ticket_id)]["status"] = status

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("api_access_token") == self.token

    def _error(self, status: int, detail: str) -> Any:
        if status == 401:
            return {"errors": ["You need to sign in or sign up before continuing."]}
        if status == 422:
            return {"message": detail or "Validation failed", "attributes": []}
        return {"error": detail or "Too many requests"}

    def _route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        base = f"/api/v1/accounts/{self.account_id}"
        route, method = request.route, request.method
        if not route.startswith(base + "/"):
            return 404, {"error": "Resource could not be found"}, {}
        rest = route[len(base):]
        if rest == "/contacts" and method == "POST":
            return self._create_contact(request.json_body())
        if rest == "/contacts/search" and method == "GET":
            q = request.query.get("q", "")
            found = [c for c in self.contacts.values() if q and q in (c["identifier"] or "", c["name"] or "")]
            return 200, {"meta": {"count": len(found), "current_page": "1"}, "payload": found}, {}
        if rest == "/teams" and method == "GET":
            return 200, [{"id": i, "name": n, "allow_auto_assign": True} for i, n in self.teams.items()], {}
        if rest == "/conversations" and method == "POST":
            return self._create_conversation(request.json_body())
        if rest == "/conversations/filter" and method == "POST":
            return self._filter(request.json_body().get("payload") or [])
        match = re.fullmatch(r"/conversations/(\d+)(/\w+)?", rest)
        if not match or int(match[1]) not in self._tickets:
            return 404, {"error": "Resource could not be found"}, {}
        conversation, action = self._tickets[int(match[1])], match[2]
        if action is None and method == "GET":
            return 200, conversation, {}
        if action == "/messages" and method == "GET":
            messages = self._articles[conversation["id"]]
            return 200, {"meta": {"labels": conversation["labels"]}, "payload": messages}, {}
        if action == "/messages" and method == "POST":
            body = request.json_body()
            if not body.get("content"):
                return 422, self._error(422, "Content can't be blank"), {}
            return 200, self._message(conversation, body, time.time()), {}
        if action == "/labels" and method == "POST":
            conversation["labels"] = sorted(set(request.json_body().get("labels") or []))
            return 200, {"payload": conversation["labels"]}, {}
        if action == "/toggle_priority" and method == "POST":
            priority = request.json_body().get("priority")
            if priority not in (*self.PRIORITIES, "none"):
                return 422, self._error(422, f"Priority '{priority}' is not a valid priority"), {}
            conversation["priority"] = None if priority == "none" else priority
            return 200, {}, {}
        if action == "/assignments" and method == "POST":
            team_id = request.json_body().get("team_id")
            if team_id not in self.teams:
                return 404, {"error": "Resource could not be found"}, {}
            conversation["meta"]["team"] = {"id": team_id, "name": self.teams[team_id]}
            return 200, conversation["meta"]["team"], {}
        return 404, {"error": "Resource could not be found"}, {}

    def _create_contact(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if body.get("inbox_id") not in (None, self.inbox_id):
            return 422, self._error(422, "Inbox does not exist"), {}
        if body.get("identifier") and any(c["identifier"] == body["identifier"] for c in self.contacts.values()):
            return 422, {"message": "Identifier has already been taken", "attributes": ["identifier"]}, {}
        contact = {"id": self._next_id(), "name": body.get("name"), "identifier": body.get("identifier"),
                   "email": body.get("email"), "phone_number": body.get("phone_number"),
                   "custom_attributes": body.get("custom_attributes") or {}, "created_at": int(time.time())}
        self.contacts[contact["id"]] = contact
        return 200, {"payload": {"contact": contact, "contact_inbox": {
            "inbox": {"id": self.inbox_id, "name": "Social"}, "source_id": f"src-{contact['id']}"}}}, {}

    def _create_conversation(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if body.get("inbox_id") != self.inbox_id:
            return 422, self._error(422, "Inbox does not exist"), {}
        if body.get("contact_id") not in self.contacts:
            return 422, self._error(422, "Contact does not exist"), {}
        if body.get("team_id") is not None and body["team_id"] not in self.teams:
            return 422, self._error(422, "Team does not exist"), {}
        conversation_id = self._next_id()
        team = {"id": body["team_id"], "name": self.teams[body["team_id"]]} if body.get("team_id") else None
        conversation = {"id": conversation_id, "account_id": self.account_id, "inbox_id": self.inbox_id,
                        "status": body.get("status", "open"), "custom_attributes": body.get("custom_attributes") or {},
                        "labels": [], "priority": None, "first_reply_created_at": None,
                        "meta": {"sender": self.contacts[body["contact_id"]], "assignee": None, "team": team},
                        "created_at": int(time.time()), "timestamp": int(time.time())}
        self._tickets[conversation_id] = conversation
        self._articles[conversation_id] = []
        if (body.get("message") or {}).get("content"):
            self._message(conversation, {"content": body["message"]["content"], "message_type": "incoming"},
                          time.time())
        return 200, conversation, {}

    def _message(self, conversation: dict[str, Any], body: dict[str, Any], at: float) -> dict[str, Any]:
        kinds = {"incoming": 0, "outgoing": 1}
        made = {"id": self._next_id(), "conversation_id": conversation["id"], "content": body["content"],
                "message_type": kinds.get(body.get("message_type", "outgoing"), 1),
                "private": bool(body.get("private", False)), "content_attributes": body.get("content_attributes") or {},
                "created_at": int(at)}
        self._articles[conversation["id"]].append(made)
        return made

    def _filter(self, conditions: list[dict[str, Any]]) -> tuple[int, Any, dict[str, str]]:
        found = list(self._tickets.values())
        for condition in conditions:
            if condition.get("filter_operator") != "equal_to":
                return 422, self._error(422, f"Invalid operator {condition.get('filter_operator')}"), {}
            key, values = condition.get("attribute_key"), [str(v) for v in condition.get("values") or []]
            found = [c for c in found if str(c.get(key, c["custom_attributes"].get(key))) in values]
        return 200, {"meta": {"mine_count": 0, "unassigned_count": len(found), "all_count": len(found)},
                     "payload": found}, {}


def _epoch(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


# ---- generic webhook -------------------------------------------------------------------------------------------

class FakeWebhookReceiver:
    """A receiver for the generic signed webhook: checks `X-Triage-Signature: sha256=<hex HMAC-SHA256 of
    "<X-Triage-Timestamp>.<body>">` with the shared secret (401 when wrong or older than `max_age_s`), dedupes on
    `X-Triage-Delivery` (a repeat is answered like the first and not recorded again), and answers
    {"ticket_id": ...} for a new case (or nothing with `answer_ids=False`). Same knobs as the API fakes;
    `deliveries()` holds the accepted JSON bodies, once each."""

    secret_env = "TRIAGE_TEST_WEBHOOK_SECRET"
    secret = "webhook-test-secret"

    def __init__(self, answer_ids: bool = True, max_age_s: float = 300.0) -> None:
        self.answer_ids, self.max_age_s = answer_ids, max_age_s
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._failures: list[tuple[int, dict[str, str], bool]] = []
        self._down: Optional[str] = None
        self._seen: dict[str, Any] = {}
        self._deliveries: list[dict[str, Any]] = []
        self.server = FakeHttpServer({"/": self._handle})
        self.url = self.server.url + "/triage/hook"

    down, up, fail_next, close, __enter__, __exit__ = (_Fake.down, _Fake.up, _Fake.fail_next, _Fake.close,
                                                       _Fake.__enter__, _Fake.__exit__)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def target(self, name: str, **settings: Any) -> WebhookTarget:
        os.environ[self.secret_env] = self.secret
        mapping = {k: settings.pop(k) for k in list(settings) if k in Mapping.model_fields}
        return WebhookTarget(name=name, kind="webhook", url=self.url, secret_env=self.secret_env,
                             mapping=Mapping(**mapping), **settings)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._deliveries))

    def _handle(self, request: Request) -> None:
        if self._down == "hang_up":
            return request.hang_up()
        if self._down == "503":
            return request.json({"error": "unavailable"}, 503)
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure and not failure[2]:
            return request.json({"error": "scripted failure"}, failure[0], failure[1])
        if request.method != "POST" or urlsplit(self.url).path != request.route:
            return request.json({"error": "not found"}, 404)
        stamp, signature = request.headers.get("X-Triage-Timestamp", ""), request.headers.get("X-Triage-Signature", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), stamp.encode() + b"." + request.body,
                                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return request.json({"error": "bad signature"}, 401)
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > self.max_age_s:
            return request.json({"error": "stale timestamp"}, 401)
        delivery = request.headers.get("X-Triage-Delivery")
        if not delivery:
            return request.json({"error": "X-Triage-Delivery is missing"}, 400)
        try:
            body = json.loads(request.body)
        except ValueError:
            return request.json({"error": "body is not JSON"}, 400)
        with self._lock:
            if delivery not in self._seen:
                self._deliveries.append(body)
                self._seen[delivery] = {"ticket_id": f"WH-{next(self._ids)}"} if self.answer_ids else {}
            answer = self._seen[delivery]
        if failure:
            return request.json({"error": "scripted failure"}, failure[0], failure[1])
        request.json(answer, 200)
