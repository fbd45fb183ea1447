"""Local services and start-up errors as a user meets them."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from core import services
from cli.main import main
from core.config import load_settings


def test_a_busy_port_is_reported_not_silently_used(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = load_settings(environ={"TRIAGE_SERVICES__DATA_DIR": str(tmp_path), "TRIAGE_SERVICES__ES_PORT": str(port),
                                     "TRIAGE_SERVICES__KAFKA_PORT": str(services.free_port())}).services
        with pytest.raises(services.ServiceError, match=f"port {port} is already in use"):
            services.up(cfg)


@pytest.mark.integration  # starts and stops its own local Kafka and Elasticsearch
def test_services_start_report_and_stop_by_pid(tmp_path: Path) -> None:
    cfg = load_settings(environ={"TRIAGE_SERVICES__DATA_DIR": str(tmp_path), "TRIAGE_SERVICES__KAFKA_SERVER": "tansu",
                                 "TRIAGE_SERVICES__ES_PORT": str(services.free_port()),
                                 "TRIAGE_SERVICES__KAFKA_PORT": str(services.free_port())}).services
    assert all("not running" in line for line in services.status(cfg))
    try:
        started = services.up(cfg)
        assert [line.split(":")[0] for line in started] == ["noida", "tansu"]
        status = services.status(cfg)  # "starting or unhealthy" must fail this, so the whole state is compared
        assert [re.sub(r" \(pid \d+, log .*\)$", "", line) for line in status] == ["noida: healthy", "tansu: healthy"], status
        assert all("already running" in line for line in services.up(cfg))
    finally:
        assert all("stopped" in line for line in services.down(cfg))
    assert not services.port_open(cfg.es_port) and not services.port_open(cfg.kafka_port)


def test_unreachable_elasticsearch_gives_advice(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TRIAGE_ES_URL", f"http://127.0.0.1:{services.free_port()}")
    monkeypatch.setenv("TRIAGE_ELASTICSEARCH__MAX_RETRIES", "0")
    assert main(["query", "anything"]) == 1
    assert "cannot reach Elasticsearch" in capsys.readouterr().err


def test_unreachable_kafka_gives_advice(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TRIAGE_KAFKA_BOOTSTRAP", f"127.0.0.1:{services.free_port()}")
    monkeypatch.setenv("TRIAGE_KAFKA__CONNECT_TIMEOUT_S", "2")
    assert main(["setup", "--no-elasticsearch"]) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err


def test_invalid_configuration_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TRIAGE_ELASTICSEARCH__BULK_SIZE", "0")
    assert main(["services", "status"]) == 2
    assert "elasticsearch.bulk_size" in capsys.readouterr().err
