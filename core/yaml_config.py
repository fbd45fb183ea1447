"""The one strict YAML loader for settings, routing rules, topics, sources and training configs.

Every file kind goes through the same three steps:

1. `parse_yaml`/`read_yaml`: YAML with line information. Duplicate keys are an error naming both lines
   (PyYAML on its own silently keeps the last one), syntax errors name the line and column and never
   quote the offending text (it may hold a secret).
2. `validate`: the data against a pydantic model. Every problem becomes `FILE:LINE: key.path: what is
   wrong`, the line being that of the key pydantic names, or of its nearest parent present in the file.
   Values are never echoed (`include_input=False`), and a custom message on a secret field is withheld.
3. One error type, `ConfigFileError` (a ValueError); each module raises its own subclass of it
   (`ConfigError`, `RulesError`, `ConnectConfigError`, ...), so existing `except` clauses keep working.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[Any, ...]
SYNTAX_HINT = "quote values that start with * & ! % @ or hold ': ' or ' #'"


class ConfigFileError(ValueError):
    """A configuration file is invalid. `problems` holds one `FILE:LINE: key.path: what is wrong` line each."""

    what = "configuration file"

    def __init__(self, problems: str | Sequence[str], what: Optional[str] = None) -> None:
        if what:
            self.what = what
        if isinstance(problems, str):  # an error that is already one sentence ("config file not found: x")
            self.problems = [problems]
            message = problems
        else:
            self.problems = list(problems)
            message = f"invalid {self.what}:\n  " + "\n  ".join(self.problems)
        super().__init__(message)


@dataclass
class YamlDocument:
    """Parsed YAML data and the 1-based line of every key path in it (list items by index)."""

    source: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def locations(self) -> dict[Loc, str]:
        """key path -> 'FILE:LINE', the form `validate` takes (several documents can be merged)."""
        return {path: f"{self.source}:{line}" for path, line in self.lines.items()}

    def where(self, loc: Loc) -> str:
        return locate(self.locations(), loc)


# ---- reading ---------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError):  # e.g. an impossible date (2024-13-45): name the line only
            raise yaml.constructor.ConstructorError(
                None, None, "a value cannot be read (an impossible date?); quote it to keep it as text",
                node.start_mark) from None


def _quiet(problem: str) -> str:
    """A YAML problem without quoted text (an undefined alias `*S3CRET` is quoted by name), tokens kept."""
    def keep(match: re.Match[str]) -> str:
        inner = match.group(1)
        return match.group(0) if len(inner) <= 3 or inner.startswith(("<", "!")) else "(not shown)"
    return re.sub(r"'([^']*)'", keep, problem or "syntax error")


def _key_text(node: yaml.Node) -> Optional[str]:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _walk(node: yaml.Node, path: Loc, lines: dict[Loc, int], problems: list[str], source: str,
          seen: set[int]) -> None:
    """Record the line of every key path and report duplicate keys; each node is entered once (aliases)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key_text(key_node)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            dotted = ".".join(str(p) for p in (*path, key))
            if key in first:
                problems.append(f"{source}:{line}: {dotted}: duplicate key (first at line {first[key]}); "
                                f"YAML would silently keep only the last")
                continue
            first[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems, source, seen)


def parse_yaml(text: str, source: str, error: type[ConfigFileError] = ConfigFileError,
               empty: Any = None) -> YamlDocument:
    """Parse YAML text; `source` names it in errors. An empty document gives `empty`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {(): 1}
        problems: list[str] = []
        if node is not None:
            lines[()] = node.start_mark.line + 1
            _walk(node, (), lines, problems, source, set())
        if problems:
            raise error(problems)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:  # its own message quotes the offending line, which may hold a secret
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is None:
            raise error([f"{source}: not valid YAML ({SYNTAX_HINT})"]) from None
        line, column = mark.line + 1, mark.column + 1
        problem = _quiet(getattr(exc, "problem", None) or "")
        raise error([f"{source}:{line}: not valid YAML at line {line}, column {column}: {problem} "
                     f"({SYNTAX_HINT})"]) from None
    finally:
        loader.dispose()
    return YamlDocument(source, empty if data is None else data, lines)


def read_yaml(path: str | Path, error: type[ConfigFileError] = ConfigFileError, what: str = "config file",
              empty: Any = None) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file is an `error` too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    return parse_yaml(text, str(path), error, empty)


# ---- validating ------------------------------------------------------------------------------------

def locate(locations: Mapping[Loc, str], loc: Loc) -> str:
    """The location of `loc`, or of its nearest parent present. Parts of pydantic's path that are not keys
    of the file (a union's tag such as `rss`, `[key]`, `function-after[...]`) are skipped."""
    current: Loc = ()
    for part in loc:
        for candidate in ((*current, part), (*current, str(part))):
            if candidate in locations:
                current = candidate
                break
    return locations.get(current) or locations.get((), "<config>")


def dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def union_members(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation admits: the members of a Union/Optional, or the annotation itself."""
    return get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)


def is_secret(model: type[BaseModel], loc: Loc) -> bool:
    """True when `loc` names a SecretStr field (or lies inside one)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            continue  # a union tag or a list index: stay on this model
        types = union_members(fields[part].annotation)
        if SecretStr in types:
            return True
        current = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if current is None:
            return False
    return False


def problems_of(exc: ValidationError, model: type[BaseModel], locations: Mapping[Loc, str],
                explain: Optional[Callable[[Loc, str], str]] = None) -> list[str]:
    """`LOCATION: key.path: what is wrong` for every error pydantic found."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(err["loc"])
        message = err["msg"]
        if is_secret(model, loc) and err["type"] in ("value_error", "assertion_error"):
            message = "invalid value (a secret: not shown)"
        if explain:
            message = explain(loc, message)
        problems.append(f"{locate(locations, loc)}: {dotted(loc)}: {message}")
    return problems


def validate(model: type[M], data: Any, locations: Mapping[Loc, str], error: type[ConfigFileError] = ConfigFileError,
             explain: Optional[Callable[[Loc, str], str]] = None) -> M:
    """Validate `data` against `model`; raise `error` with one `FILE:LINE: key.path: problem` line each.

    `explain(loc, message)` may reword a message for the file's readers."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(problems_of(exc, model, locations, explain)) from None


def load_yaml(path: str | Path, model: type[M], error: type[ConfigFileError] = ConfigFileError,
              what: str = "config file", explain: Optional[Callable[[Loc, str], str]] = None,
              empty: Any = None) -> tuple[M, YamlDocument]:
    """Read, parse and validate one file; the document is returned too, for checks after validation."""
    document = read_yaml(path, error, what, empty)
    return validate(model, document.data, document.locations(), error, explain), document
