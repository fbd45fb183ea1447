"""Outside bytes never crash a reader: a fuzz test of the record parser, and the depth rule on its own."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core import safe_json
from core.records import DeadLetter, RawRecord, parse_post

REASONS = {"oversized_record", "invalid_utf8", "invalid_json", "nested_too_deep", "not_an_object", "empty_text",
           "schema_violation", "text_too_long", "title_too_long"}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=30)
post_like = st.fixed_dictionaries({"id": st.text(max_size=20), "source": st.sampled_from(["twitter", "x", "B!"]),
                                   "text": st.text(max_size=50)}, optional={"metadata": json_values,
                                                                             "created_at": st.text(max_size=30)})
payloads = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                     post_like.map(lambda v: json.dumps(v).encode()),
                     st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
                     st.integers(1, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_bytes_become_a_post_or_a_dead_letter_with_a_known_reason(payload: bytes) -> None:
    parsed = parse_post(RawRecord(payload, "fuzz"), max_record_bytes=1_000_000, max_text_chars=10_000)
    if isinstance(parsed, DeadLetter):
        assert parsed.reason_code in REASONS and parsed.payload == payload
        assert "\n" not in parsed.reason
    else:
        assert isinstance(parsed, dict) and parsed["text"].strip()


@pytest.mark.parametrize("payload,reason", [
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper"),
    (b"[" * 65 + b"]" * 65, "nested deeper"),
    (b"[NaN]", "NaN"), (b"1" * 5000, "too many digits"), (b'"\\ud800"', "surrogate"), (b"\xff", "not UTF-8"),
    (b"{", "not JSON"),
])
def test_untrusted_json_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(safe_json.JsonInputError, match=reason):
        safe_json.loads(payload)


def test_json_at_the_depth_limit_is_accepted() -> None:
    assert safe_json.depth(safe_json.loads(b"[" * 64 + b"]" * 64)) == 64


header_values = st.text(max_size=80) | st.sampled_from(["-1", "abc", "sha256=" + "0" * 64, "1800000000", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(body=payloads, headers=st.dictionaries(st.sampled_from(["X-Triage-Timestamp", "X-Triage-Signature",
                                                                "Authorization", "Content-Type", "X-Other"]),
                                               header_values), signed=st.booleans(),
       path=st.sampled_from(["/posts", "/posts/", "/", "/pöst"]))
def test_the_webhook_answers_any_request_with_a_2xx_or_4xx(webhook_receiver: Any, body: bytes, headers: dict,
                                                            signed: bool, path: str) -> None:
    from connectors.webhook import signed_headers
    receiver, now = webhook_receiver, 1_800_000_000.0
    if signed:  # a correct signature, so the body itself gets parsed and validated
        headers = {**headers, **signed_headers("s3cret", body, now)}
    status, answer = receiver.handle(path, headers, body, now=now)
    assert 200 <= status < 500 and isinstance(answer, dict)
    assert status < 300 or isinstance(answer.get("error"), str)


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[Any]:
    """A webhook receiver (HMAC mode) writing to a ListSink, which encodes accepted posts as Kafka would."""
    from connectors.testing import ListSink
    from connectors.webhook import WebhookReceiver
    from core.config import load_settings

    receiver = WebhookReceiver("127.0.0.1", 0, "s3cret", "hmac", load_settings().kafka, ListSink(),  # type: ignore[arg-type]
                               replay_cache_size=100_000)
    yield receiver
    receiver.server.server_close()
