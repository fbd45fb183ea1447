"""Shared fixtures.

Integration tests talk to real servers over the network. By default the project's own service
manager starts the local stand-ins (core/services.py) on test ports with throw-away data and
stops them at the end. With TRIAGE_KAFKA_BOOTSTRAP and/or TRIAGE_ES_URL set (and, for secured
clusters, TRIAGE_ES_API_KEY, TRIAGE_KAFKA_SASL_* ...), they run against those servers instead and
start nothing. Every session uses its own topic and index names and removes them afterwards.

Markers: `integration` (needs Kafka and/or Elasticsearch, or starts them) and `models` (loads the real
transformer model: slow). `make test-unit` runs `-m "not integration and not models"` in under a minute.
A test that uses a fixture of live services or of model-enriched samples gets the marker even if its module
forgot it (see SERVICE_FIXTURES and MODEL_FIXTURES), so the fast set never starts a service by accident.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from core import services
from core.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples" / "posts.jsonl"
# `make test` runs the files on two pytest-xdist workers (gw0, gw1); each starts its own services, 10 ports apart.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
TEST_KAFKA_PORT = int(os.environ.get("TRIAGE_TEST_KAFKA_PORT", "29092")) + 10 * _WORKER
TEST_ES_PORT = int(os.environ.get("TRIAGE_TEST_ES_PORT", "29200")) + 10 * _WORKER


@contextmanager
def own_names(env: dict[str, str], kafka: bool = True, elasticsearch: bool = True) -> Iterator[Settings]:
    """The live services under names of one test module's own (topics, index prefix), removed afterwards.

    For modules whose counts or alias moves must not meet other tests' data.
    """
    from core.provision import setup_all, teardown_all
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = load_settings()
        setup_all(settings, kafka=kafka, elasticsearch=elasticsearch)
        try:
            yield settings
        finally:
            teardown_all(settings, kafka=kafka, elasticsearch=elasticsearch)


SERVICE_FIXTURES = frozenset({"live", "es", "indexed_samples", "connect_live"})
MODEL_FIXTURES = frozenset({"enriched_samples", "indexed_samples"})  # the sample posts through the real models


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs Kafka and/or Elasticsearch (local or given by env), "
                                       "or starts them")
    config.addinivalue_line("markers", "models: loads the real transformer model (slow); "
                                       "unit tests use pipeline.testing's fake steps instead")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVICE_FIXTURES and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)
        if used & MODEL_FIXTURES and item.get_closest_marker("models") is None:
            item.add_marker(pytest.mark.models)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory, run_id: str) -> Iterator[Path]:
    """A config file for this test session; TRIAGE_CONFIG points at it so CLI calls and notebooks use it too."""
    root = tmp_path_factory.mktemp("triage")
    config = {
        "kafka": {"bootstrap_servers": f"127.0.0.1:{TEST_KAFKA_PORT}",
                  "topics": {"raw": f"test-{run_id}.posts.raw", "enriched": f"test-{run_id}.posts.enriched",
                             "dead_letter": f"test-{run_id}.posts.dead-letter",
                             "case_updates": f"test-{run_id}.cases.updates"}},
        "elasticsearch": {"url": f"http://127.0.0.1:{TEST_ES_PORT}", "index_prefix": f"test-{run_id}-posts",
                          "retry_backoff_s": 0.05},
        "services": {"data_dir": str(root / "services"), "kafka_port": TEST_KAFKA_PORT, "es_port": TEST_ES_PORT},
        "logging": {"level": "WARNING", "format": "text"},
    }
    path = root / "triage.yaml"
    path.write_text(yaml.safe_dump(config))
    previous = os.environ.get("TRIAGE_CONFIG")
    os.environ["TRIAGE_CONFIG"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("TRIAGE_CONFIG", None)
    else:
        os.environ["TRIAGE_CONFIG"] = previous


@pytest.fixture(scope="session")
def settings(config_file: Path) -> Settings:
    """Settings for unit tests and integration tests alike (no server is contacted to build them)."""
    return load_settings()


def consume_all(settings: Settings, topic: str, expected: int, timeout_ms: int = 10_000) -> list:
    """Read a topic from the beginning until `expected` records arrived or nothing came for timeout_ms."""
    from kafka import KafkaConsumer

    from core.clients import kafka_options
    consumer = KafkaConsumer(topic, **kafka_options(settings.kafka), auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=timeout_ms,
                             session_timeout_ms=6000)
    try:
        messages = []
        for message in consumer:
            messages.append(message)
            if len(messages) >= expected:
                break
        return messages
    finally:
        consumer.close()


def _external() -> bool:
    return bool(os.environ.get("TRIAGE_KAFKA_BOOTSTRAP") or os.environ.get("TRIAGE_ES_URL"))


@pytest.fixture(scope="session")
def live(settings: Settings) -> Iterator[Settings]:
    """Running Kafka and Elasticsearch with this session's topics and index; cleaned up afterwards."""
    from core.provision import setup_all, teardown_all

    started = not _external()
    if started:
        services.up(settings.services)
    try:
        setup_all(settings)
        yield settings
    finally:
        if started:
            services.down(settings.services)
        else:
            teardown_all(settings)


@pytest.fixture(scope="session")
def es(live: Settings):  # type: ignore[no-untyped-def]
    from core.clients import elasticsearch_client
    client = elasticsearch_client(live.elasticsearch)
    yield client
    client.close()


@pytest.fixture(scope="session")
def enriched_samples(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> list[dict]:
    """The sample posts enriched JSONL -> JSONL: the direct figures that index-based views must equal."""
    import json
    from cli.main import main
    out = tmp_path_factory.mktemp("enriched") / "samples.jsonl"
    assert main(["batch", "--input", str(SAMPLES), "--output", str(out)]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def indexed_samples(live: Settings, es) -> int:  # type: ignore[no-untyped-def]
    """The sample posts enriched into this session's index (through the write alias); returns the count."""
    from cli.main import main
    assert main(["batch", "--input", str(SAMPLES), "--output", "es"]) == 0
    es.indices.refresh(index=live.elasticsearch.read_alias)  # real Elasticsearch needs it to see its own writes
    return sum(1 for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip())
