"""The web workspace in a real browser: headless Debian chromium (Playwright) against `triage web` on the live local
services with the sample posts (tests/browser.py). What a user would check: the queue's order, claiming, a reply that
reaches the channel and answers the case, a second agent refused, an analyst who never sees raw text or a case,
logins refused and rate-limited, German on request. With TRIAGE_SCREENSHOTS=docs/screenshots (`make screenshots`)
they also take the README's screenshots, so those show the pages as they are.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import pytest

from core.documents import doc_key
from browser import (CUSTOMER_TEXT, PASSWORD, Workspace, chromium, log_in, open_page,  # noqa: F401 (fixtures)
                     screenshot, workspace)

pytestmark = [pytest.mark.integration, pytest.mark.models]
PHONE_POST = "twitter:2389215780"  # a sample: "Please call me back on 07700 900123, ..." by ivan_8553
PHONE, PHONE_AUTHOR = "07700 900123", "ivan_8553"
ORDER = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}


def _due(value: str) -> float:
    """A due time as a number to sort by; a case without one comes last."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("inf")


def test_an_agent_claims_a_case_from_the_queue_replies_and_sees_it_answered(
        open_page: Callable[..., Any], workspace: Workspace) -> None:
    page = open_page("anna")
    assert page.url.endswith("/queue")
    page.get_by_test_id("filter-channel").fill("mastodon")
    with page.expect_navigation():
        page.get_by_test_id("filter-button").click()
    rows = page.get_by_test_id("queue-row")
    listed = rows.evaluate_all("rows => rows.map(r => [r.dataset.caseId, r.dataset.priority, r.dataset.due])")
    assert len(listed) > 10 and {row[0] for row in listed}
    keys = [(ORDER.get(priority, 9), _due(due)) for _, priority, due in listed]
    assert keys == sorted(keys)  # by priority, then due time
    assert page.locator("[data-testid=queue-row] [data-testid=due].overdue").count() > 0  # the samples are weeks old
    case = workspace.case_of(workspace.customer_post_id)
    row = page.locator(f'[data-testid=queue-row][data-case-id="{case["case_id"]}"]')
    assert row.count() == 1 and "overdue" not in (row.get_by_test_id("due").get_attribute("class") or "")
    screenshot(page, "queue")

    row.get_by_role("link").click()
    page.wait_for_url(f"**/cases/{case['case_id']}")
    assert page.get_by_test_id("case-status").inner_text().startswith("new")
    assert CUSTOMER_TEXT in page.get_by_test_id("raw-text").inner_text()
    assert page.get_by_test_id("reply-text").input_value() == (case.get("suggested_reply") or "")
    page.get_by_test_id("claim-button").click()
    assert page.get_by_test_id("flash-ok").is_visible()
    assert page.get_by_test_id("case-status").inner_text() == "claimed (anna)"

    other = open_page("ben")
    other.goto(f"/cases/{case['case_id']}")
    other.get_by_test_id("claim-button").click()
    assert "anna" in other.get_by_test_id("flash-error").inner_text()
    assert other.get_by_test_id("case-status").inner_text() == "claimed (anna)"

    page.get_by_test_id("reply-text").fill("Schick uns deine IBAN DE89 3704 0044 0532 0130 00, dann erstatten wir.")
    page.get_by_test_id("reply-button").click()
    assert page.get_by_test_id("flash-error").is_visible()  # the personal-data guard: nothing public with an IBAN
    assert workspace.channels.published["mastodon"] == []

    answer = "Danke für deine Geduld! Die Störung in Köln-Ehrenfeld ist seit 10:40 behoben."
    page.get_by_test_id("reply-text").fill(answer)
    page.get_by_test_id("reply-button").click()
    assert page.get_by_test_id("flash-ok").is_visible()
    [published] = workspace.channels.published["mastodon"]
    assert published["in_reply_to_id"] == workspace.customer_post_id.rsplit(":", 1)[1]
    assert answer in published["content"]

    # The fake's Status has a fixed time; a real server stamps the moment it was posted.
    published["created_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    workspace.read_back()
    page.reload()
    assert page.get_by_test_id("case-status").inner_text().startswith("answered")
    posts = page.get_by_test_id("case-post")
    assert posts.evaluate_all("posts => posts.map(p => p.dataset.role)") == ["customer", "brand"]
    assert answer in posts.nth(1).inner_text()
    assert workspace.case_of(workspace.customer_post_id)["answered_via"] == "product"
    screenshot(page, "case", full_page=True)


def test_an_analyst_gets_redacted_results_and_never_a_case(open_page: Callable[..., Any],
                                                           workspace: Workspace) -> None:
    page = open_page("alex")
    assert page.url.endswith("/search")
    page.get_by_test_id("search-input").fill("helpline")
    page.get_by_test_id("search-button").click()
    result = page.locator(f'[data-testid=search-result][data-post-id="{doc_key(PHONE_POST)}"]')  # analysts' id
    assert result.count() == 1
    assert PHONE not in result.inner_text() and "[" in result.inner_text()  # redacted in place
    assert page.get_by_test_id("facet-source").is_visible()
    assert PHONE not in page.content() and PHONE_AUTHOR not in page.content()

    for case_id, secrets in ((workspace.case_of(PHONE_POST)["case_id"], (PHONE, PHONE_AUTHOR, "helpline")),
                             (workspace.case_of(workspace.customer_post_id)["case_id"], (CUSTOMER_TEXT, "kunde7"))):
        for path in (f"/cases/{case_id}", f"/api/cases/{case_id}", f"/api/cases/{case_id}/raw"):
            response = page.goto(path)
            assert response.status == 403, path
            body = response.text()
            assert not any(secret in body for secret in secrets), path
            assert not any(secret in page.content() for secret in secrets), path


def test_a_wrong_password_is_refused_and_repeated_tries_are_rate_limited(open_page: Callable[..., Any]) -> None:
    page = open_page()
    for attempt in range(5):
        response = log_in(page, "carla", "not the password")
        assert response.status == 401 and page.url.endswith("/login"), attempt
        assert page.get_by_test_id("login-error").is_visible()
    limited = log_in(page, "carla", "still not it")
    assert limited.status == 429 and page.get_by_test_id("login-error").is_visible()
    assert log_in(page, "carla", PASSWORD).status == 429  # not even the right one while the wait lasts
    assert open_page().goto("/queue").url.endswith("/login")  # and nobody got in


def test_the_interface_speaks_german_by_browser_language_and_by_the_switch(open_page: Callable[..., Any]) -> None:
    german = open_page(locale="de-DE")
    german.goto("/login")
    assert german.get_by_test_id("login-button").inner_text() == "Anmelden"

    page = open_page("anna")
    assert page.locator("h1").inner_text() == "Queue"
    page.get_by_test_id("lang-de").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Warteschlange" and page.locator("html").get_attribute("lang") == "de"
    page.goto("/queue")  # the choice is kept
    assert page.locator("h1").inner_text() == "Warteschlange"
    page.get_by_test_id("lang-en").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Queue"


def test_a_supervisor_sees_the_service_level_with_charts(open_page: Callable[..., Any]) -> None:
    page = open_page("sven")
    assert page.url.endswith("/supervisor")
    charts = page.locator("[data-testid^=chart-]")
    assert charts.count() >= 3
    assert charts.evaluate_all("charts => charts.every(c => c.tagName.toLowerCase() === 'svg')")
    assert page.get_by_test_id("figure-open").inner_text().split()[0].isdigit()
    screenshot(page, "supervisor", full_page=True)
