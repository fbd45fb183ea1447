"""JSON from outside bytes (files, topics, webhook bodies, API answers), parsed so no input can crash a reader.

Python's JSON parser recurses once per nesting level: a record of 10,000 nested brackets raises
RecursionError, which is not a ValueError and so escaped every `except ValueError` around a parse
(a batch exited with no output; a stream worker restarted into the same record forever). Nothing a
social-media post or an API answer carries needs more than a few levels, so anything deeper than
MAX_DEPTH is refused as bad input, with a reason and never the value. So are values that parse but
break a later step: NaN/Infinity (not JSON, refused by Elasticsearch), integers with more digits than
Python converts, and strings with a lone UTF-16 surrogate (no UTF-8 for Kafka or the index).
"""
from __future__ import annotations

import json
from typing import Any, Union

MAX_DEPTH = 64


class JsonInputError(ValueError):
    """The bytes are not JSON we accept; the message says why (position or depth, never the content)."""


class JsonTooDeep(JsonInputError):
    """Valid or not, the JSON nests deeper than allowed (told apart so dead letters can count it)."""


def depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise JsonInputError(f"not JSON: {name} is not a JSON number")


def loads(data: Union[bytes, str], max_depth: int = MAX_DEPTH) -> Any:
    """json.loads for untrusted input: every failure is a JsonInputError (a ValueError), never a crash."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except JsonInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"not UTF-8: byte {exc.start} cannot be decoded") from None
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise JsonInputError("not JSON we accept: a number has too many digits") from None
    if depth(value) > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonInputError("not JSON we accept: a string escapes a lone UTF-16 surrogate") from None
    return value
