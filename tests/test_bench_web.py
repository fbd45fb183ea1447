"""`triage bench web`'s Elasticsearch timer: a pass-through proxy must change nothing the web process sees and count
what it waited for, or the benchmark's "time in Elasticsearch" would be wrong."""
from __future__ import annotations

import time

import requests

from cli.bench_web import EsTimer
from fake_apis import FakeHttpServer, Request


def _search(request: Request) -> None:
    time.sleep(0.05)
    request.json({"took": 7, "hits": {"total": {"value": 1}, "hits": [{"_id": "a", "_source": request.json_body()}]}},
                 headers={"X-Elastic-Product": "Elasticsearch"})


def test_requests_pass_through_unchanged_and_the_waiting_is_counted() -> None:
    upstream = FakeHttpServer({"POST /posts/_search": _search,
                               "GET /posts/_doc/missing": lambda r: r.json({"found": False}, 404),
                               "HEAD /posts": lambda r: r.respond(200, headers={"X-Elastic-Product": "Elasticsearch"})})
    timer = EsTimer(upstream.url)
    try:
        with requests.Session() as session:  # one kept-alive connection, as the Elasticsearch client uses
            found = session.post(f"{timer.url}/posts/_search", json={"query": {"match": {"text": "Störung"}}})
            assert found.status_code == 200 and found.headers["X-Elastic-Product"] == "Elasticsearch"
            assert found.json()["hits"]["hits"][0]["_source"] == {"query": {"match": {"text": "Störung"}}}
            exists = session.head(f"{timer.url}/posts")  # indices.exists: no body, and the connection stays usable
            assert (exists.status_code, exists.headers["X-Elastic-Product"]) == (200, "Elasticsearch")
            missing = session.get(f"{timer.url}/posts/_doc/missing")
            assert (missing.status_code, missing.json()) == (404, {"found": False})
        assert (timer.calls, timer.took_ms) == (3, 7)
        assert 0.05 <= timer.seconds < 5
        assert [r.path for r in upstream.requests] == ["/posts/_search", "/posts", "/posts/_doc/missing"]
        timer.reset()
        assert (timer.calls, timer.seconds, timer.took_ms) == (0, 0.0, 0)
    finally:
        timer.close()
        upstream.close()
