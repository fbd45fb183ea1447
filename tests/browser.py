"""Browser-test kit: Debian's chromium driven by Playwright, and `triage web` on the live local services.

`workspace` (module scope) indexes the sample posts with the real models into indices of its own, plus one
customer's status on a fake Mastodon server (tests/fake_apis.py FakeChannels) read by the real Mastodon connector,
writes a users file with a user per role, and starts `triage web` as its own process with a sources file whose
Mastodon entry points at the fake: a reply sent from the browser goes to the fake's documented POST
/api/v1/statuses, and `read_back()` reads it back through the connector and indexes it, as `triage connect` and the
stream would, so the case turns answered. `chromium` is one headless browser for the module; `open_page(user)` a
fresh browser context (own cookies) logged in as that user.

Chromium is Debian's (`make install` installs it with apt-get as root): Playwright's own browser download cannot
work offline. Without it the tests are skipped only where it cannot be installed (not root or no apt-get); where
it could, they fail and say to run `make install`, so CI never passes them by skipping.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import yaml

from cli.bench_web import WebServer, index_posts, refresh
from conftest import SAMPLES, own_names
from core.config import Settings
from fake_apis import FakeChannels

CHROMIUM = os.environ.get("TRIAGE_CHROMIUM", "/usr/bin/chromium")
# Headless as root on a machine without network (shared/reference/FINDINGS.md, "Browser tests"); Playwright adds
# --headless and a fresh profile directory itself.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery staple"
USERS = {"anna": "agent", "ben": "agent", "carla": "agent", "sven": "supervisor", "alex": "analyst"}
CUSTOMER_TEXT = "Seit heute früh kein Internet in Köln-Ehrenfeld. Wann geht es wieder?"
MASTODON_TOKEN = "masto-user-token"
TIMEOUT_MS = 60_000  # a reply loads the personal-data detector on first use


def chromium_path() -> str:
    """Debian's chromium, or skip where it cannot be installed; fail where `make install` would have installed it."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (it runs apt-get install chromium chromium-driver)")
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM}, which cannot be installed here (needs root and "
                "apt-get): sudo apt-get install chromium chromium-driver")


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    """docs/screenshots/<name>.png when TRIAGE_SCREENSHOTS names the folder (`make screenshots`), else nothing."""
    folder = os.environ.get("TRIAGE_SCREENSHOTS")
    if not folder:
        return
    path = Path(folder) if Path(folder).is_absolute() else Path(__file__).resolve().parent.parent / folder
    path.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path / f"{name}.png"), full_page=full_page)


def _customer_status(channels: FakeChannels, native: str, text: str, at: datetime) -> dict[str, Any]:
    """A customer's public status with #telco in Mastodon's Status format (the fixture's, another account)."""
    template = channels.fixtures["mastodon"]["status"]
    return {**template, "id": native, "created_at": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "in_reply_to_account_id": None, "content": f"<p>{text} #telco</p>",
            "tags": [{"name": "telco", "url": "https://social.example/tags/telco"}],
            "uri": f"https://social.example/users/kunde7/statuses/{native}",
            "url": f"https://social.example/@kunde7/{native}",
            "account": {**template["account"], "id": "109000000000000077", "username": "kunde7", "acct": "kunde7",
                        "display_name": "Kunde Sieben", "url": "https://social.example/@kunde7"}}


@dataclass
class Workspace:
    url: str
    settings: Settings
    channels: FakeChannels
    es: Any
    customer_post_id: str
    read_back: Callable[[], None]

    def case_of(self, post_id: str) -> dict[str, Any]:
        cfg = self.settings.elasticsearch
        self.es.indices.refresh(index=cfg.cases_read_alias)
        hits = self.es.search(index=cfg.cases_read_alias, query={"term": {"posts.id": post_id}})["hits"]["hits"]
        assert len(hits) == 1, f"{len(hits)} cases hold {post_id}"
        return hits[0]["_source"]


@pytest.fixture(scope="module")
def workspace(live: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    from cli.main import main
    from connectors import run as connectors_run
    from connectors.testing import ListSink
    from core.clients import elasticsearch_client
    from apps.web.users import add_user

    tmp = tmp_path_factory.mktemp("web")
    with FakeChannels() as channels, pytest.MonkeyPatch.context() as patch:
        patch.setenv("MASTODON_REPLY_TOKEN", MASTODON_TOKEN)
        sources = tmp / "sources.yaml"
        sources.write_text(yaml.safe_dump({"checkpoint_db": str(tmp / "connectors.sqlite"), "sources": [
            {"type": "mastodon", "name": "masto", "url": f"{channels.url}/mastodon", "hashtags": ["telco"],
             "brand_accounts": ["telco_hilft"],
             "reply_accounts": [{"account": "telco_hilft@social.example", "token_env": "MASTODON_REPLY_TOKEN"}]}]}))
        channels.mastodon_timeline.append(_customer_status(channels, "11350001", CUSTOMER_TEXT,
                                                           datetime.now(timezone.utc) - timedelta(minutes=10)))
        env = {"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-web", "TRIAGE_REPLIES__LEDGER_DB": str(tmp / "replies.sqlite")}
        with own_names(env, kafka=False) as settings:
            def connect_once(name: str) -> Path:
                """One pass of the Mastodon connector (checkpoints kept between passes) into a JSONL file."""
                sink = ListSink()
                with ThreadPoolExecutor(1) as pool:  # off the main thread: the runner leaves pytest's signals alone
                    counts = pool.submit(connectors_run.run, settings, str(sources), once=True, sink=sink).result(60)
                assert -1 not in counts.values() and not sink.dead_letters
                path = tmp / name
                path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in sink.posts), encoding="utf-8")
                return path

            customer = connect_once("customer.jsonl")
            assert main(["batch", "--input", str(SAMPLES), "--input", str(customer), "--output", "es"]) == 0
            refresh(settings)

            def read_back() -> None:
                """The published reply read by the connector and indexed (cheap steps: routing only marks it the
                brand's), as the stream would."""
                reply = connect_once(f"reply-{len(channels.published['mastodon'])}.jsonl")
                index_posts(settings, reply)

            users = tmp / "users.yaml"
            for name, role in USERS.items():
                add_user(users, name, role, PASSWORD)
            server_env = {**os.environ, "TRIAGE_WEB__INSECURE_COOKIES": "true",
                          "TRIAGE_WEB__AUDIT_LOG": str(tmp / "audit.jsonl")}
            server = WebServer(["--users", str(users), "--sources", str(sources)], server_env, tmp / "web.log")
            es = elasticsearch_client(settings.elasticsearch)
            host = channels.url.split("//")[1]
            try:
                yield Workspace(server.url, settings, channels, es, f"mastodon:{host}:11350001", read_back)
            finally:
                es.close()
                server.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def log_in(page: Any, user: str, password: str = PASSWORD) -> Any:
    """Fill and send the login form; returns the response of the page it leads to."""
    page.goto("/login")
    page.get_by_test_id("login-username").fill(user)
    page.get_by_test_id("login-password").fill(password)
    with page.expect_navigation() as navigation:
        page.get_by_test_id("login-button").click()
    return navigation.value


@pytest.fixture
def open_page(chromium: Any, workspace: Workspace) -> Iterator[Callable[..., Any]]:
    """open_page(user=None, locale="en-US"): a page in a browser context of its own, logged in as `user`."""
    contexts = []

    def open_page(user: Optional[str] = None, locale: str = "en-US") -> Any:
        context = chromium.new_context(base_url=workspace.url, locale=locale, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        if user:
            assert log_in(page, user).status == 200
        return page

    yield open_page
    for context in contexts:
        context.close()
