"""Secrets in output: secrets are taken verbatim from the environment and credentials never reach text or logs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import SAMPLES
from apps import alerts
from core import logs
from core import services
from cli.main import main
from core.config import ConfigError, LoggingSettings, load_settings
from core.redact import redact_text, redact_url

SECRET_VARIABLES = {  # variable -> how to read the setting back
    "TRIAGE_ES_PASSWORD": lambda s: s.elasticsearch.password,
    "TRIAGE_ES_API_KEY": lambda s: s.elasticsearch.api_key,
    "TRIAGE_KAFKA_SASL_PASSWORD": lambda s: s.kafka.sasl_password,
    "TRIAGE_ALERTS__WEBHOOK_URL": lambda s: s.alerts.webhook_url,
    "TRIAGE_ELASTICSEARCH__PASSWORD": lambda s: s.elasticsearch.password,
}
AWKWARD_SECRETS = ["*S3CRET", "abc #def", "null", "123456", "yes", "a:{b}: [c], &x !y", "~", "'quoted'", " spaced "]


@pytest.mark.parametrize("value", AWKWARD_SECRETS)
@pytest.mark.parametrize("variable", list(SECRET_VARIABLES))
def test_secrets_are_taken_verbatim_from_the_environment(variable: str, value: str) -> None:
    settings = load_settings(environ={variable: value})
    secret = SECRET_VARIABLES[variable](settings)
    assert secret is not None and secret.get_secret_value() == value
    assert value not in repr(settings) or value in repr(load_settings(environ={}))


def test_string_settings_keep_numbers_and_words_as_written() -> None:
    settings = load_settings(environ={"TRIAGE_ES_USERNAME": "123456", "TRIAGE_ES_INDEX_PREFIX": "2024",
                                      "TRIAGE_KAFKA_SASL_USERNAME": "*svc", "TRIAGE_MODELS__TOPICS_FILE": "null"})
    assert settings.elasticsearch.username == "123456"
    assert settings.elasticsearch.index_prefix == "2024"
    assert settings.kafka.sasl_username == "*svc"
    assert settings.models.topics_file is None  # typed parsing of non-secrets stays: null is none


@pytest.mark.parametrize("value", ["[unclosed", "*S3CRET", "{a: 1", "2024-13-45"])
def test_a_malformed_typed_value_is_a_config_error_naming_the_variable_not_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"TRIAGE_ELASTICSEARCH__REQUEST_TIMEOUT_S": value})
    assert "TRIAGE_ELASTICSEARCH__REQUEST_TIMEOUT_S" in str(err.value)
    assert value not in str(err.value)


@pytest.mark.parametrize("variable,value", [("TRIAGE_ELASTICSEARCH__REQUEST_TIMEOUT_S", "[unclosed"),
                                            ("TRIAGE_ELASTICSEARCH__BULK_SIZE", "hunter2"),
                                            ("TRIAGE_STREAM__MAX_OUTAGE_S", "*S3CRET")])
def test_cli_reports_a_bad_environment_value_cleanly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                      tmp_path: Path, variable: str, value: str) -> None:
    monkeypatch.setenv("TRIAGE_SERVICES__DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    assert main(["services", "status"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and value not in out + err
    assert err.startswith("triage: invalid configuration") and variable.lower().split("__")[-1] in err


def test_cli_runs_with_awkward_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                       tmp_path: Path) -> None:
    monkeypatch.setenv("TRIAGE_SERVICES__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRIAGE_ES_PASSWORD", "*S3CRET")
    monkeypatch.setenv("TRIAGE_ES_API_KEY", "abc #def")
    assert main(["services", "status"]) == 0
    out, err = capsys.readouterr()
    assert "S3CRET" not in out + err and "#def" not in out + err and "Traceback" not in err


@pytest.mark.parametrize("url,expected", [
    ("http://user:pass@host:9200", "http://***@host:9200"),
    ("https://elastic:p%40ss@es.example.com:9243/prefix?x=1", "https://***@es.example.com:9243/prefix?x=1"),
    ("https://u:p@ss@host/", "https://***@host/"),  # an unescaped @ in the password
    ("http://token@host", "http://***@host"),
    ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
    ("http://host/path/a@b", "http://host/path/a@b"),  # an @ in the path is no credential
    ("user:pass@host:9200", "***@host:9200"),
    ("", ""),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_every_url_in_a_message() -> None:
    message = ("Elasticsearch at http://user:hunter2@127.0.0.1:9200 failed; also 'https://a:b@c.example/x' "
               "and mail me@example.com, http://plain:9200")
    redacted = redact_text(message)
    assert "hunter2" not in redacted and "a:b" not in redacted
    assert "http://***@127.0.0.1:9200" in redacted and "'https://***@c.example/x'" in redacted
    assert "me@example.com" in redacted and "http://plain:9200" in redacted
    assert redact_text(ValueError("http://u:p@h")) == "http://***@h"


@pytest.mark.parametrize("format", ["text", "json"])
def test_every_log_line_is_redacted(format: str, capsys: pytest.CaptureFixture) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure(LoggingSettings(level="INFO", format=format))
        try:
            raise RuntimeError("cannot reach http://user:hunter2@127.0.0.1:1")
        except RuntimeError:
            logging.getLogger("test").warning("at http://user:hunter2@host failed", exc_info=True,
                                              extra={"fields": {"url": "http://user:hunter2@host"}})
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert "http://***@host" in err and "hunter2" not in err


@pytest.mark.parametrize("format", ["text", "json"])
def test_a_client_retry_logs_one_line_and_the_products_own_error_its_traceback(
        format: str, capsys: pytest.CaptureFixture) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure(LoggingSettings(level="INFO", format=format))
        for logger in ("elastic_transport.transport", "triage.cli"):
            try:
                try:
                    raise OSError("[Errno 111] Connection refused")
                except OSError as refused:
                    raise ConnectionError("cannot connect to 127.0.0.1:9200") from refused
            except ConnectionError:
                logging.getLogger(logger).warning("Retrying request after failure", exc_info=True)
    finally:
        root.handlers[:], root.level = handlers, level
    client, own = capsys.readouterr().err.split("Retrying request after failure")[1:]
    assert "ConnectionError: cannot connect to 127.0.0.1:9200" in client and "Traceback" not in client
    assert own.count("Traceback") == 2 and "Connection refused" in own


def test_services_up_does_not_echo_credentials(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(services, "up", lambda cfg: ["noida: started"])
    monkeypatch.setenv("TRIAGE_SERVICES__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRIAGE_ES_URL", "http://user:hunter2@127.0.0.1:9200")
    assert main(["services", "up"]) == 0
    out = capsys.readouterr().out
    assert "Elasticsearch: http://***@127.0.0.1:9200" in out and "hunter2" not in out


def test_batch_to_unreachable_elasticsearch_never_shows_its_credentials(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_bytes(b"\n".join(SAMPLES.read_bytes().splitlines()[:3]) + b"\n")
    monkeypatch.setenv("TRIAGE_ES_URL", f"http://user:hunter2@127.0.0.1:{services.free_port()}")
    monkeypatch.setenv("TRIAGE_ELASTICSEARCH__MAX_RETRIES", "1")
    monkeypatch.setenv("TRIAGE_ELASTICSEARCH__RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("TRIAGE_ENRICHMENT__STEPS", "[language, pii]")  # no model needed to reach the sink
    configure = logs.configure

    def configure_keeping_caplog(cfg: LoggingSettings) -> None:  # the CLI replaces the root handlers
        configure(cfg)
        logging.getLogger().addHandler(caplog.handler)
        logging.getLogger().setLevel(logging.DEBUG)

    monkeypatch.setattr(logs, "configure", configure_keeping_caplog)
    code = main(["batch", "--input", str(source), "--output", "es", "--dead-letters", str(tmp_path / "dead.jsonl")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "triage batch:" in err and "http://***@127.0.0.1" in err  # the error still says where
    records = "\n".join([caplog.text, *(json.dumps(getattr(r, "fields", {}), default=str) for r in caplog.records)])
    assert any(r.name == "triage" and r.exc_info for r in caplog.records)  # the traceback was captured too
    for text in (out, err, records):
        assert "hunter2" not in text and "user:" not in text


def test_a_malformed_webhook_url_is_not_quoted_in_the_error() -> None:
    for url in ("hooks.example.com/services/T0/B0/s3cr3t-token", f"http://127.0.0.1:{services.free_port()}/s3cr3t token"):
        with pytest.raises(ValueError) as err:
            alerts.post_to_webhook(url, [])
        assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize("value", AWKWARD_SECRETS)
def test_connector_secrets_are_read_verbatim_from_the_variable_a_source_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    from connectors import config as connect_config
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - {type: webhook, name: hook, secret_env: TEST_HOOK_SECRET}\n")
    monkeypatch.setenv("TEST_HOOK_SECRET", value)
    source = connect_config.load(str(sources)).sources[0]
    assert connect_config.secret(source, "secret_env") == value


def test_a_broken_config_file_is_located_but_not_quoted(tmp_path: Path) -> None:
    config = tmp_path / "triage.yaml"
    config.write_text("elasticsearch:\n  password: *S3CRET\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 2") as err:
        load_settings(config, environ={})
    assert "S3CRET" not in str(err.value)
