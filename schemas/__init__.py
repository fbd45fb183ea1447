"""The product's contracts: JSON Schemas for posts, the Elasticsearch index template, Kafka topics.

The JSON files beside this module are the source of truth; this module only loads them and builds
validators from them, so Python and every other consumer check exactly the same rules.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

POST_SCHEMA = "post.v1.schema.json"
ENRICHED_POST_SCHEMA = "enriched_post.v1.schema.json"
DELETION_SCHEMA = "deletion.v1.schema.json"
SCHEMA_VERSION = 1



def load_json(name: str) -> dict[str, Any]:
    """Load one of the JSON files shipped in this package (e.g. 'elasticsearch/posts.index-template.json')."""
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _registry() -> Registry:
    schemas = [load_json(POST_SCHEMA), load_json(ENRICHED_POST_SCHEMA)]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    """A compiled validator for POST_SCHEMA, ENRICHED_POST_SCHEMA or DELETION_SCHEMA (built once per process)."""
    schema = load_json(name)
    return Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker())


@lru_cache(maxsize=None)
def _property_names() -> frozenset[str]:
    """Every key the post schemas define: the only keys an error message may name."""
    names: set[str] = set()
    pending: list[Any] = [load_json(POST_SCHEMA), load_json(ENRICHED_POST_SCHEMA), load_json(DELETION_SCHEMA)]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            names.update(node.get("properties", {}) if isinstance(node.get("properties"), dict) else ())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return frozenset(names)


def _where(path: Any) -> str:
    """The JSON path of an error, with keys the schema does not define shown as '<key>' (a key can be data)."""
    known = _property_names()
    parts = [str(p) if isinstance(p, int) or p in known else "<key>" for p in path]
    return "/".join(parts) or "(record)"


def first_error(name: str, record: Any) -> str | None:
    """The most relevant validation error as one readable line, or None when the record is valid.

    The line names the field and the rule it breaks but never echoes the record's content: values
    and unexpected keys can be personal data, and these reasons end up in dead-letter records and logs.
    """
    errors = sorted(validator(name).iter_errors(record), key=lambda e: (len(e.absolute_path), e.message))
    if not errors:
        return None
    err = errors[0]
    where = _where(err.absolute_path)
    if err.validator == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
        return f"{where}: missing required field(s) {', '.join(missing)}"
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        return f"{where}: has keys the schema does not allow"
    return f"{where}: must satisfy {err.validator}={json.dumps(err.validator_value)[:120]}"


def index_template(index_prefix: str, kind: str = "posts") -> dict[str, Any]:
    """A composable index template: 'posts' (redacted, '<prefix>-*') or 'private' ('<prefix>-private')."""
    text = resources.files(__package__).joinpath(f"elasticsearch/{kind}.index-template.json").read_text(encoding="utf-8")
    return json.loads(text.replace("{index_prefix}", index_prefix))


def kafka_topics() -> dict[str, dict[str, Any]]:
    """Topic roles (raw, enriched, dead_letter) with partitions and topic config."""
    return load_json("kafka/topics.json")["topics"]


def shipped_or_path(name: str, directory: Path, what: str, error: type[ValueError] = ValueError) -> Path:
    """'builtin:NAME' names NAME.yaml shipped in `directory` (topics, routing rules); anything else is a path."""
    if not name.startswith("builtin:"):
        return Path(name).expanduser()
    path = directory / f"{name.removeprefix('builtin:')}.yaml"
    if not path.exists():
        known = ", ".join(f"builtin:{p.stem}" for p in sorted(directory.glob("*.yaml")))
        raise error(f"unknown {what} {name}; shipped: {known}")
    return path
