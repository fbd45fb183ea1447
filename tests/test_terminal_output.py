"""Text from posts cannot drive the terminal: every human-facing table and message shows control and
bidi characters as visible escapes, while `--json` output keeps the exact text."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any, Iterator

import pytest

from apps import alerts
from apps import desk
from apps import query
from apps import service_level
from cli import report
from pipeline.batch import Summary, Target
from cli.main import main
from core.terminal import printable

CLEAR_SCREEN = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;pwned\x07"  # OSC: set the window title, ended by BEL
BIDI = "\u202e", "\u202a", "\u202b", "\u202c", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", \
    "\u200f", "\u061c"
NASTY = f"Rechnung {CLEAR_SCREEN}falsch{TITLE} \x9b31m rot \x07 \x7f \x85 {'x'.join(BIDI)} gpj.exe \x00 ende"
HARMLESS = "Grüße aus Köln, straße ÄÖÜ 👍🏽 👨\u200d👩\u200d👧 🏳️\u200d🌈 中文 日本語 مرحبا بالعالم שלום ﷺ"


def _forbidden(text: str) -> list[str]:
    """Characters a terminal acts on or that reorder the line: C0 (newline aside), DEL, C1, bidi controls."""
    return [ch for ch in text if ch != "\n" and (unicodedata.category(ch) in ("Cc", "Cs") or ch in BIDI)]


# --- printable() ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2J", "\\x1b[2J"),
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    ("ding\x07", "ding\\x07"),
    ("\x9b31m", "\\x9b31m"),
    ("abc\u202eexe.txt", "abc\\u202eexe.txt"),
    ("\u2066isolated\u2069", "\\u2066isolated\\u2069"),
    ("del\x7f", "del\\x7f"),
    ("nul\x00", "nul\\x00"),
    ("line\nbreak\ttab\rreturn", "line\\nbreak\\ttab\\rreturn"),
    ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
    ("\ufeffbom\u200b", "\\ufeffbom\\u200b"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
])
def test_printable_shows_controls_as_visible_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert _forbidden(printable(raw)) == []


def test_printable_leaves_ordinary_unicode_alone() -> None:
    assert printable(HARMLESS) == HARMLESS
    assert printable("plain ascii, with a \\ backslash") == "plain ascii, with a \\ backslash"
    assert printable("") == ""
    assert printable(42) == "42" and printable(None) == "None"


def test_printable_escapes_every_control_and_nothing_else() -> None:
    every = [chr(c) for c in range(0x110000)]
    shown = {ch: printable(ch) for ch in every}
    controls = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}  # C0 (newline and tab too), DEL, C1
    invisible = {*BIDI, "\u200b", "\u2028", "\u2029", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\ufeff",
                 "\ufff9", "\ufffa", "\ufffb"}
    surrogates = {chr(c) for c in range(0xD800, 0xE000)}
    assert {ch for ch in every if shown[ch] != ch} == controls | invisible | surrogates
    escaped = "".join(shown[ch] for ch in controls | invisible | surrogates)
    assert escaped.isascii() and escaped.isprintable()
    assert all(shown[ch] == ch for ch in "\u200c\u200d\ufe0f\U000e0067")  # joiners, emoji selectors and tags stay
    assert max(len(s) for s in shown.values()) == 6  # bounded: at most six characters for each one


def test_printable_output_is_bounded() -> None:
    worst = "\u202e" * 1000
    assert len(printable(worst)) == 6 * len(worst)
    cut = printable("\x1b" * 50, limit=10)
    assert cut == "\\x1b\\x1b..." and len(cut) <= 10 + 3  # never cut inside an escape
    assert printable("a" * 120, limit=100) == "a" * 100 + "..."  # like text[:width] + "..."
    assert printable("a" * 100, limit=100) == "a" * 100
    assert printable("\x07" * 3, limit=12) == "\\x07" * 3


# --- the tables and messages ------------------------------------------------------------------------------

def _post(**extra: Any) -> dict[str, Any]:
    return {"id": f"twitter:1{CLEAR_SCREEN}", "source": f"twitter{TITLE}", "created_at": "2026-11-01T06:29:40Z",
            "title": NASTY, "text": NASTY, "text_redacted": NASTY, "language": {"code": "de\u202e"},
            "sentiment": {"label": "negative"}, "intent": {"label": "complaint\x9b"}, "pii": {"types": ["iban\x07"]},
            "triage": {"queue": f"billing{TITLE}", "priority": "P1", "due_at": "2099-01-01T00:00:00Z",
                       "private_channel": True, "reasons": [f"personal data in the post {NASTY}"]},
            "agent": {"status": "claimed", "assignee": f"mallory\u2066{CLEAR_SCREEN}"}, **extra}


def _assert_safe(out: str) -> None:
    assert _forbidden(out) == [], _forbidden(out)
    assert "\\x1b[2J" in out and "\\u202e" in out  # the odd characters are visible, not silently gone


def test_query_table_and_summary_show_no_raw_controls(capsys: pytest.CaptureFixture) -> None:
    print(query.format_posts({"total": 1, "posts": [_post()]}))
    print(query.format_summary({"total": 1, "pii_found": 1, **{name: {} for name in query.FACETS},
                                "topic": {NASTY: 1}, "queue": {f"billing{TITLE}": 1}, "over_time": {"2026-11-01": 1}}))
    out = capsys.readouterr().out
    _assert_safe(out)
    assert "\\x1b]0;pwned\\x07" in out and "\\x9b" in out and "\\u2066" in out


def test_queue_table_shows_no_raw_controls(capsys: pytest.CaptureFixture) -> None:
    print(desk.format_queue({"total": 1, "posts": [_post()]}))
    out = capsys.readouterr().out
    _assert_safe(out)
    assert "mallory\\u2066" in out and "private channel: personal data in the post" in out


def test_ordinary_rows_are_unchanged() -> None:
    post = {"id": "twitter:1", "source": "twitter", "created_at": "2026-11-01T06:29:40Z", "language": {"code": "de"},
            "text_redacted": HARMLESS * 3, "text": HARMLESS, "triage": {"queue": "billing", "priority": "P2"}}
    shown = query.format_posts({"total": 1, "posts": [post]})
    assert shown.splitlines()[1] == (f"2026-11-01T06:29  {'twitter de':<40}  "
                                     f"{' '.join((HARMLESS * 3).split())[:100]}...")
    assert HARMLESS in desk.format_queue({"total": 1, "posts": [post]})


def test_other_summaries_and_alerts_show_no_raw_controls(capsys: pytest.CaptureFixture) -> None:
    undecided = {"of": 0, "count": 0, "rate": None}
    figures = {"cases": 1, "open": 1, "overdue": 0, "answered": 0, "unanswered_by_due": undecided,
               "unanswered_24h": undecided, "first_response_p50_s": None, "first_response_p90_s": None,
               "within_sla_share": None, "answered_via": {}}
    print(service_level.format_service_level({**figures, "as_of": "2026-11-01T06:00:00.000Z", "by_day": {},
                                              "by_queue": {f"billing{TITLE}\u202e": figures},
                                              "by_channel": {f"x{NASTY}": figures}}))
    counters = {"records_in": 1, "enriched": 1, "dead_letters": 1, f"topic.{NASTY}": 1,
                f"dead_letter.bad{CLEAR_SCREEN}\u202e": 1}
    print(report.format_batch_summary(Summary(counters, 1.0, Target("file", "out.jsonl"),
                                              Target("file", "dead.jsonl"))))
    print(alerts.Alert("topic_volume", NASTY, "2026-11-01T06:00", 9, 1.0, 9).message())
    out = capsys.readouterr().out
    _assert_safe(out)


# --- the commands, with Elasticsearch replaced --------------------------------------------------------------

class _Client:
    def close(self) -> None:
        pass


@pytest.fixture
def fake_es(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import core.clients
    monkeypatch.setattr(core.clients, "elasticsearch_client", lambda cfg: _Client())
    monkeypatch.setattr(query, "search", lambda es, index, filters, size=20: {"total": 1, "posts": [_post()]})
    monkeypatch.setattr(query, "summarize", lambda es, index, filters, interval="day": {
        "total": 1, "pii_found": 0, **{name: {} for name in query.FACETS}, "topic": {NASTY: 1}, "over_time": {}})
    monkeypatch.setattr(desk, "queue", lambda es, cfg, name=None, assignee=None, size=50: {"total": 1, "posts": [_post()]})
    yield


@pytest.mark.parametrize("command", [["query", "rechnung"], ["query", "--summary"], ["queue"]])
def test_commands_print_no_raw_controls_and_json_stays_exact(
        fake_es: None, settings: Any, command: list[str], capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(command) == 0
    _assert_safe(capsys.readouterr().out)

    assert main([*command, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    if command[-1] == "--summary":
        assert list(result["topic"]) == [NASTY]
    else:
        shown = result["posts"][0]
        assert shown == json.loads(json.dumps(_post()))
        assert shown["text"] == shown["text_redacted"] == shown["title"] == NASTY


def test_desk_errors_show_no_raw_controls(monkeypatch: pytest.MonkeyPatch, settings: Any,
                                          capsys: pytest.CaptureFixture) -> None:
    import core.clients
    monkeypatch.setattr(core.clients, "elasticsearch_client", lambda cfg: _Client())

    def claimed(es: Any, cfg: Any, post_id: str, agent: str, force: bool = False) -> dict:
        raise desk.DeskError(f"post {post_id} is claimed by mallory{TITLE}\u202e; use --force to take it over")
    monkeypatch.setattr(desk, "claim", claimed)
    assert main(["claim", f"x{CLEAR_SCREEN}", "--agent", "bob"]) == 1
    err = capsys.readouterr().err
    assert _forbidden(err) == [] and "\\x1b]0;pwned\\x07" in err


# --- end to end on the local services ---------------------------------------------------------------------

@pytest.mark.integration
def test_a_hostile_post_indexed_by_batch_is_shown_escaped(live: Any, run_id: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from conftest import own_names
    from core.clients import elasticsearch_client

    text = f"Grüße 👍 Router kaputt {CLEAR_SCREEN}{TITLE} \x9b2J seit gestern \u202egnulhaz\u202c \u2066x\u2069"
    posts = tmp_path / "hostile.jsonl"
    posts.write_text(json.dumps({"schema_version": 1, "id": "twitter:31337", "source": "twitter", "text": text,
                                 "title": f"Titel{TITLE}", "created_at": "2026-11-01T06:29:40Z"}) + "\n",
                     encoding="utf-8")
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-terminal"}, kafka=False) as settings:
        assert main(["batch", "--input", str(posts), "--output", "es"]) == 0
        es = elasticsearch_client(settings.elasticsearch)
        es.indices.refresh(index=f"{settings.elasticsearch.read_alias},{settings.elasticsearch.private_index}")
        es.close()
        for command in (["query", "--size", "5"], ["queue", "--size", "5"]):
            capsys.readouterr()
            assert main(command) == 0
            out = capsys.readouterr().out
            assert "Grüße 👍" in out and "\\x1b]0;pwned\\x07" in out and "\\u202e" in out
            assert _forbidden(out) == [], command
        assert main(["queue", "--size", "5", "--json"]) == 0
        posted = json.loads(capsys.readouterr().out)["posts"]
        assert [p["text"] for p in posted] == [text]
        assert main(["query", "--size", "5", "--json"]) == 0
        assert [p["text_redacted"] for p in json.loads(capsys.readouterr().out)["posts"]] == [text]
