"""The JSON Schemas are the contract: samples satisfy them, bad records fail them, the index maps them."""
from __future__ import annotations

import json

import pytest

import schemas
from core.documents import PRIVATE_POST_FIELDS
from conftest import SAMPLES


def test_every_sample_post_is_valid() -> None:
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        post = json.loads(line)
        assert schemas.first_error(schemas.POST_SCHEMA, post) is None, post["id"]


@pytest.mark.parametrize("post,where", [
    ({"source": "twitter", "text": "hi"}, "missing required field(s) id"),
    ({"id": "a XYZ", "source": "twitter", "text": "hi"}, "id:"),
    ({"id": "t:1", "source": "Twitter!", "text": "hi"}, "source:"),
    ({"id": "t:1", "source": "twitter", "text": 5}, "text:"),
    ({"id": "t:1", "source": "twitter", "text": "hi", "created_at": "yesterday-XYZ"}, "created_at:"),
    ({"id": "t:1", "source": "twitter", "text": "hi", "author": {"followers": -1}}, "author/followers:"),
    ({"id": "t:1", "source": "twitter", "text": "hi", "colour": "red-XYZ"}, "keys the schema does not allow"),
    ({"id": "t:1", "source": "twitter", "text": "hi", "max@XYZ.de": 1}, "(record): has keys the schema does not allow"),
])
def test_invalid_posts_are_named_without_their_values(post: dict, where: str) -> None:
    error = schemas.first_error(schemas.POST_SCHEMA, post)
    assert error is not None and where in error
    assert "XYZ" not in error


def test_enriched_schema_accepts_post_fields_and_rejects_unknown_ones() -> None:
    enriched = {"id": "t:1", "source": "twitter", "text": "hi", "title": None,
                "language": {"code": "und", "score": 0.0}, "pii": {"found": False, "types": [], "spans": []},
                "text_redacted": "hi", "model_versions": {"language": "x"}, "processed_at": "2026-11-01T10:00:00Z"}
    assert schemas.first_error(schemas.ENRICHED_POST_SCHEMA, enriched) is None
    assert "sentiment" in schemas.first_error(schemas.ENRICHED_POST_SCHEMA, {**enriched, "sentiment": {"label": "x"}})
    assert "keys the schema does not allow" in schemas.first_error(schemas.ENRICHED_POST_SCHEMA, {**enriched, "extra": 1})


def test_index_templates_map_every_field_and_keep_raw_text_out_of_the_posts_index() -> None:
    post_fields = set(schemas.load_json(schemas.POST_SCHEMA)["$defs"]["post"]["properties"])
    enriched_fields = set(schemas.load_json(schemas.ENRICHED_POST_SCHEMA)["properties"])
    analyst = schemas.index_template("x")["template"]["mappings"]["properties"]
    private = schemas.index_template("x", "private")["template"]["mappings"]["properties"]
    assert (post_fields | enriched_fields) - set(PRIVATE_POST_FIELDS) <= set(analyst)
    assert not {"text", "title", "url", "metadata"} & set(analyst)
    assert set(analyst["author"]["properties"]) == {"followers", "is_brand"}  # no identity: not even the role
    assert "spans" not in analyst["pii"]["properties"]
    assert post_fields <= set(private)
    assert analyst["text_redacted"]["fields"]["de"]["analyzer"] == "german"
    assert private["text"]["fields"]["en"]["analyzer"] == "english"
    assert schemas.index_template("triage-posts")["index_patterns"] == ["triage-posts-*"]
    assert schemas.index_template("triage-posts", "private")["index_patterns"] == ["triage-posts-private"]
