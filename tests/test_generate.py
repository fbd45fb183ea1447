"""`triage generate`: schema-valid posts with what cases need (threads with brand answers, repeat authors), the same
file for the same seed, written as a stream."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import schemas
from cli import generate
from cli.main import main
from triage.cases import case_key

SAMPLES = str(Path(__file__).resolve().parent.parent / "data" / "samples" / "*.jsonl")


def _generate(n: int, seed: int = 7) -> str:
    out = io.StringIO()
    assert generate.write(SAMPLES, generate.Options(n=n, seed=seed), out, progress=None) == n
    return out.getvalue()


def test_every_post_is_valid_and_ids_are_unique() -> None:
    posts = [json.loads(line) for line in _generate(3000).splitlines()]
    validator = schemas.validator(schemas.POST_SCHEMA)
    assert [error.message for post in posts for error in validator.iter_errors(post)] == []
    assert len({post["id"] for post in posts}) == len(posts) == 3000
    assert {post["source"] for post in posts} >= {"twitter", "facebook", "forum", "mastodon", "reddit", "review"}
    assert {post["metadata"]["written_language"] for post in posts} == {"de", "en"}


def test_conversations_have_several_posts_brand_answers_and_repeat_authors() -> None:
    posts = [json.loads(line) for line in _generate(3000).splitlines()]
    cases = Counter(case_key(post, author_window_hours=24).case_id for post in posts)
    assert sum(1 for size in cases.values() if size >= 3) > 100
    brand = [post for post in posts if post["author"].get("is_brand")]
    assert len(brand) > 100 and all(post["reply_to_id"] and post["thread_id"] for post in brand)
    ids = {post["id"] for post in posts}
    assert all(post["thread_id"] in ids for post in brand)  # answers point at a thread of the file
    authors = Counter(post["author"]["id"] for post in posts if not post["author"].get("is_brand"))
    assert sum(1 for count in authors.values() if count >= 5) > 50
    days = {post["created_at"][:10] for post in posts}
    assert len(days) >= 25  # spread over four weeks
    assert sum("IBAN" in post["text"] or "@mail.example" in post["text"] for post in posts) > 30


def test_the_same_seed_gives_the_same_file_and_another_seed_another() -> None:
    assert _generate(500) == _generate(500)
    assert _generate(500, seed=8) != _generate(500)


def test_the_command_writes_the_file_and_reports_on_stderr(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "posts.jsonl"
    assert main(["generate", "--n", "120", "--out", str(out), "--seed", "3"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 120
    assert "wrote 120 posts" in capsys.readouterr().err
