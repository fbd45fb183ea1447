"""`triage web`: logins, CSRF, roles, the analysts' allow-list, the audit record, claims and proxy mode.

Flask's test client against the live local Elasticsearch stand-in (tests/conftest.py). Each test seeds its own
case: a customer post with an IBAN and a name in it (redacted in the posts index, raw in the private index), so
a test can check exactly where the personal data may and may not appear. Browser tests are elsewhere.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from apps import case_desk, desk
from apps.reply import ElasticsearchCases
from apps.web.app import create_app
from apps.web.users import add_user
from connectors.config import ConnectConfig
from core.config import Settings, TrustedProxySettings, WebSettings
from core.documents import doc_key
from fake_apis import FakeChannels
from test_reply import sources_file_data

IBAN = "DE89370400440532013000"
NAME = "Max Mustermann"
HANDLE = "@max_kunde_4711"
RAW = f"Meine IBAN ist {IBAN}, bitte erstattet mir die doppelte Abbuchung. {NAME}"
REDACTED = "Meine IBAN ist [IBAN], bitte erstattet mir die doppelte Abbuchung. [PERSON]"
PASSWORD = "correct horse battery"
USERS = {"anna": "agent", "ben": "agent", "sara": "supervisor", "alex": "analyst", "otto": "agent"}


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "users.yaml"
    for name, role in USERS.items():
        add_user(path, name, role, PASSWORD)
    return path


def web_settings(users_file: Path, **changes: Any) -> WebSettings:
    return WebSettings(users_file=str(users_file), insecure_cookies=True,
                       audit_log=str(users_file.parent / "audit.jsonl"), **changes)


@pytest.fixture(scope="module")
def app(live: Settings, es: Any, users_file: Path) -> Any:
    return create_app(live, web_settings(users_file), es=es)


@pytest.fixture
def case_id(live: Settings, es: Any) -> str:
    """One open case with one customer post (IBAN and name: raw in the private index, redacted in the posts
    index) on X, answerable through the fake X API."""
    cfg = live.elasticsearch
    tweet = str(1859000000000000000 + uuid.uuid4().int % 10**12)
    post_id, new_case = f"twitter:{tweet}", "case:" + uuid.uuid4().hex[:24]
    at, due = "2026-12-02T08:00:00Z", "2026-12-02T12:00:00Z"
    es.index(index=cfg.private_index, id=doc_key(post_id), refresh=True, document={
        "id": post_id, "source": "twitter", "text": RAW, "author": {"id": "4711", "handle": HANDLE, "name": NAME},
        "pii_spans": [{"type": "iban", "start": 15, "end": 37}]})
    es.index(index=cfg.write_alias, id=doc_key(post_id), refresh=True, document={
        "id": doc_key(post_id), "source": "twitter", "created_at": at, "text_redacted": REDACTED,
        "language": {"code": "de", "score": 0.99}, "sentiment": {"label": "negative", "score": 0.91},
        "intent": {"label": "complaint", "score": 0.84}, "topic": {"label": "billing", "score": 0.88},
        "pii": {"found": True, "types": ["iban", "person"], "count": 2}, "author": {"followers": 12},
        "triage": {"queue": "billing", "priority": "P2", "due_at": due, "reasons": ["IBAN im Beitrag"]},
        "agent": {"status": "new"}})
    es.index(index=cfg.cases_write_alias, id=new_case, refresh=True, document={
        "case_id": new_case, "source": "twitter", "thread_id": post_id, "grouping": "thread", "status": "new",
        "queue": "billing", "priority": "P2", "priority_reasons": ["IBAN im Beitrag"], "private_channel": False,
        "suggested_reply": None, "language": "de", "intent": "complaint", "sentiment": "negative", "topic": "billing",
        "first_post_at": at, "last_post_at": at, "opened_at": at, "due_at": due, "last_customer_post_id": post_id,
        "last_customer_post_at": at, "customer_posts": 1, "brand_posts": 0, "reopened": 0, "product_reply_ids": [],
        "posts": [{"id": post_id, "role": "customer", "at": at, "priority": "P2", "queue": "billing", "due_at": due,
                   "reasons": ["IBAN im Beitrag"], "language": "de", "intent": "complaint",
                   "sentiment": "negative", "topic": "billing"}],
        "agent": {"assignee": None, "claimed_at": None}, "updated_at": at})
    return new_case


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "every form carries a csrf_token"
    return found.group(1)


def login(app: Any, name: str, password: str = PASSWORD, address: str = "127.0.0.1") -> Any:
    client = app.test_client()
    token = csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": name, "password": password, "csrf_token": token},
                environ_base={"REMOTE_ADDR": address})
    return client


def page(client: Any, url: str) -> str:
    return client.get(url).get_data(as_text=True)


def act(client: Any, case: str, action: str, **form: str) -> str:
    token = csrf(page(client, f"/cases/{case}"))
    response = client.post(f"/cases/{case}/{action}", data={"csrf_token": token, **form}, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def flash(html: str, kind: str) -> list[str]:
    return re.findall(rf'data-testid="flash-{kind}"[^>]*>([^<]*)<', html)


# ---- logins -------------------------------------------------------------------------------------------------

def test_a_right_password_logs_in_and_each_role_lands_on_its_page(app: Any) -> None:
    for name, home in (("anna", "/queue"), ("sara", "/supervisor"), ("alex", "/search")):
        client = login(app, name)
        assert client.get("/").headers["Location"] == home
    cookie = login(app, "anna").get_cookie("triage_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_the_session_cookie_is_secure_unless_insecure_cookies_is_set(live: Settings, es: Any, users_file: Path) -> None:
    secure = create_app(live, web_settings(users_file).model_copy(update={"insecure_cookies": False}), es=es)
    response = secure.test_client().get("/login")
    assert "Secure" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]


def test_a_wrong_password_is_refused_and_repeated_tries_are_rate_limited(app: Any) -> None:
    client = app.test_client()
    for attempt in range(5):
        token = csrf(page(client, "/login"))
        response = client.post("/login", data={"username": "otto", "password": f"wrong-{attempt}", "csrf_token": token})
        assert response.status_code == 401 and 'data-testid="login-error"' in response.get_data(as_text=True)
        assert client.get("/queue").status_code == 302  # still not logged in: back to the login page
    token = csrf(page(client, "/login"))
    response = client.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 429, "the sixth try within five minutes is refused, even with the right password"
    assert 'data-testid="login-error"' in response.get_data(as_text=True)
    assert client.get("/queue").status_code == 302
    assert login(app, "otto", address="10.1.2.3").get("/queue").status_code == 200  # per user and address


def test_a_post_without_a_valid_csrf_token_is_refused(app: Any, case_id: str, es: Any, live: Settings) -> None:
    client = login(app, "anna")
    assert client.post(f"/cases/{case_id}/claim").status_code == 400
    assert client.post(f"/cases/{case_id}/claim", data={"csrf_token": "forged"}).status_code == 400
    assert app.test_client().post("/login", data={"username": "anna", "password": PASSWORD}).status_code == 400
    case = es.get(index=live.elasticsearch.cases_read_alias, id=case_id)["_source"]
    assert case["status"] == "new" and case["agent"]["assignee"] is None


# ---- what each role may see ------------------------------------------------------------------------------------

def test_an_analyst_gets_403_and_nothing_of_the_case(app: Any, case_id: str) -> None:
    client = login(app, "alex")
    for url in (f"/cases/{case_id}", f"/api/cases/{case_id}", f"/api/cases/{case_id}/raw"):
        response = client.get(url)
        body = response.get_data(as_text=True)
        assert response.status_code == 403, url
        for secret in (IBAN, NAME, HANDLE, "[IBAN]", "doppelte Abbuchung", case_id, "billing"):
            assert secret not in body, (url, secret)


def test_a_supervisor_sees_the_redacted_text_and_no_raw_api(app: Any, case_id: str) -> None:
    client = login(app, "sara")
    html = page(client, f"/cases/{case_id}")
    assert REDACTED in html and IBAN not in html and NAME not in html and 'data-testid="raw-text"' not in html
    assert client.get(f"/api/cases/{case_id}/raw").status_code == 403
    assert IBAN not in client.get(f"/api/cases/{case_id}").get_data(as_text=True)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_an_analyst_search_never_returns_raw_text_author_or_personal_data(app: Any, case_id: str) -> None:
    client = login(app, "alex")
    result = client.get("/api/search?q=Abbuchung&queue=billing").get_json()
    texts = [post.get("text_redacted") for post in result["posts"]]
    assert REDACTED in texts, "the post is found, redacted"
    strings = set(_strings(result))
    assert not {"text", "title", "url", "handle", "name", "metadata", "pii_spans", "raw"} & strings
    assert not any(IBAN in s or NAME in s or HANDLE in s for s in strings)
    for post in result["posts"]:
        assert set(post.get("author", {})) <= {"is_brand"}
    assert result["facets"]["queue"].get("billing", 0) >= 1
    html = page(client, "/search?q=Abbuchung")
    assert 'data-testid="search-result"' in html and 'data-testid="facet-topic"' in html
    assert IBAN not in html and NAME not in html and HANDLE not in html


def test_an_agent_sees_the_raw_text_and_the_audit_log_records_it_without_the_text(app: Any, case_id: str) -> None:
    client = login(app, "anna")
    html = page(client, f"/cases/{case_id}")
    assert re.search(r'data-testid="raw-text"[^>]*>[^<]*' + IBAN, html)
    assert 'data-testid="case-post" data-role="customer"' in html and "0.91" in html and "iban, person" in html
    assert IBAN in json.dumps(client.get(f"/api/cases/{case_id}/raw").get_json())
    log = Path(app.extensions["triage"].web.audit_log).read_text(encoding="utf-8")
    records = [json.loads(line) for line in log.splitlines()]
    assert sum(1 for r in records if (r["user"], r["action"], r["case_id"]) == ("anna", "view_raw", case_id)) == 2
    assert IBAN not in log and NAME not in log and "Abbuchung" not in log


# ---- actions --------------------------------------------------------------------------------------------------

def test_of_two_agents_claiming_one_case_the_second_is_refused(app: Any, case_id: str) -> None:
    anna, ben = login(app, "anna"), login(app, "ben")
    assert flash(act(anna, case_id, "claim"), "ok")
    assert flash(act(ben, case_id, "claim"), "error") == ["already claimed by anna"]
    assert 'data-testid="case-status">claimed (anna)' in page(ben, f"/cases/{case_id}")
    mine = login(app, "anna").get("/api/queue?mine=1").get_json()["cases"]
    assert case_id in [c["case_id"] for c in mine] and all(c["assignee"] == "anna" for c in mine)


def test_of_four_agents_claiming_at_once_exactly_one_wins(live: Settings, es: Any, case_id: str) -> None:
    store, outcomes, start = ElasticsearchCases(es, live.elasticsearch), {}, threading.Barrier(4)

    def claim(agent: str) -> None:
        start.wait()
        try:
            case_desk.claim(store, case_id, agent)
            outcomes[agent] = "won"
        except case_desk.CaseActionError as exc:
            outcomes[agent] = str(exc)
    threads = [threading.Thread(target=claim, args=(f"agent{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [agent for agent, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1
    assert store.case(case_id)["agent"]["assignee"] == winners[0]


def test_close_and_private_are_recorded_on_the_case(app: Any, case_id: str, es: Any, live: Settings) -> None:
    client = login(app, "anna")
    assert flash(act(client, case_id, "private"), "ok")
    assert flash(act(client, case_id, "close"), "ok")
    case = es.get(index=live.elasticsearch.cases_read_alias, id=case_id)["_source"]
    assert case["status"] == "closed" and case["continue_in_private_channel"] is True
    assert case["agent"]["closed_by"] == "anna"
    assert case_id not in [c["case_id"] for c in client.get("/api/queue").get_json()["cases"]]


def test_a_relabelled_case_feeds_export_labels(app: Any, case_id: str, es: Any, live: Settings) -> None:
    client = login(app, "anna")
    assert flash(act(client, case_id, "relabel", intent="cancellation", sentiment="", topic="contract"), "ok")
    post_id = es.get(index=live.elasticsearch.cases_read_alias, id=case_id)["_source"]["last_customer_post_id"]
    rows = {row["id"]: row for row in desk.corrected_labels(es, live.elasticsearch)}
    row = rows[doc_key(post_id)]
    assert (row["label"], row["sentiment"], row["topic"]) == ("cancellation", "negative", "contract")
    assert row["text"] == REDACTED


def test_a_reply_goes_out_through_the_product_path_and_personal_data_is_refused(
        live: Settings, es: Any, users_file: Path, case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_REPLY_TOKEN", "x-user-token")
    settings = live.model_copy(update={"replies": live.replies.model_copy(
        update={"ledger_db": str(tmp_path / "replies.sqlite")})})
    with FakeChannels() as channels:
        sources = ConnectConfig.model_validate(sources_file_data(channels.url))
        client = login(create_app(settings, web_settings(users_file), sources, es=es), "anna")
        refused = flash(act(client, case_id, "reply", text=f"Bitte überweise an {IBAN}"), "error")
        assert len(refused) == 1 and "personal data (iban)" in refused[0] and IBAN not in refused[0]
        assert not channels.published.get("x")
        assert flash(act(client, case_id, "reply", text="Danke, wir prüfen die Abbuchung."), "ok")
        assert [item["text"] for item in channels.published["x"]] == ["Danke, wir prüfen die Abbuchung."]
    case = es.get(index=live.elasticsearch.cases_read_alias, id=case_id)["_source"]
    assert len(case["product_reply_ids"]) == 1


def test_the_queue_is_ordered_by_priority_then_due_time(app: Any, case_id: str) -> None:
    cases = login(app, "anna").get("/api/queue").get_json()["cases"]
    keys = [(c["priority"] or "P9", c["due_at"] or "9999") for c in cases]
    assert keys == sorted(keys) and case_id in [c["case_id"] for c in cases]
    html = page(login(app, "anna"), "/queue?queue=billing")
    assert f'data-testid="queue-row" data-case-id="{case_id}" data-priority="P2"' in html


def test_the_interface_speaks_german_by_browser_language_and_by_switch(app: Any) -> None:
    client = app.test_client()
    assert "Anmelden" in client.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9"}).get_data(as_text=True)
    client.get("/lang/en?next=/login")
    assert "Log in" in client.get("/login", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert client.get("/lang/de?next=//evil.example").headers["Location"] == "/"


def test_the_supervisor_page_draws_its_charts(app: Any, case_id: str) -> None:
    html = page(login(app, "sara"), "/supervisor")
    for chart in ("chart-open-overdue", "chart-sla-over-time", "chart-sla-by-channel", "chart-volume",
                  "chart-agents-load"):
        assert f'data-testid="{chart}"' in html
    assert login(app, "anna").get("/supervisor").status_code == 403


# ---- single sign-on through a trusted proxy ---------------------------------------------------------------------

def test_proxy_mode_accepts_the_headers_only_from_the_trusted_address(live: Settings, es: Any, users_file: Path) -> None:
    proxy = TrustedProxySettings(enabled=True, addresses=["10.0.0.5"])
    client = create_app(live, web_settings(users_file, trusted_proxy=proxy), es=es).test_client()
    headers = {"X-Forwarded-User": "sso-agent", "X-Forwarded-Role": "agent"}
    assert client.get("/api/queue", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 200
    assert client.get("/api/queue", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403
    analyst = {"X-Forwarded-User": "sso-analyst", "X-Forwarded-Role": "analyst"}
    assert client.get("/api/queue", headers=analyst, environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 403
    assert client.get("/api/queue", environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 401
