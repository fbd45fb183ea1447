"""Configuration: defaults from the file, a user file, environment variables; every mistake named."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_settings


def test_defaults_load_without_any_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert settings.kafka.topics.raw == "triage.posts.raw"
    assert settings.elasticsearch.write_alias == "triage-posts-write"
    assert settings.enrichment.steps == ["language", "pii", "understanding", "routing"]


def test_file_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "triage.yaml"
    config.write_text("elasticsearch:\n  url: http://from-file:9200\n  bulk_size: 100\n")
    settings = load_settings(config, environ={"TRIAGE_ES_URL": "https://from-env:9243",
                                              "TRIAGE_ELASTICSEARCH__MAX_RETRIES": "2",
                                              "TRIAGE_ENRICHMENT__LANGUAGES": "[de, en]"})
    assert settings.elasticsearch.url == "https://from-env:9243"
    assert settings.elasticsearch.bulk_size == 100
    assert settings.elasticsearch.max_retries == 2
    assert settings.enrichment.languages == ["de", "en"]


def test_secrets_never_show_in_repr() -> None:
    settings = load_settings(environ={"TRIAGE_ES_API_KEY": "s3cr3t-key", "TRIAGE_KAFKA_SASL_PASSWORD": "hunter2",
                                      "TRIAGE_KAFKA_SASL_MECHANISM": "PLAIN", "TRIAGE_KAFKA_SASL_USERNAME": "svc"})
    assert "s3cr3t-key" not in repr(settings) and "hunter2" not in repr(settings)
    assert settings.elasticsearch.api_key.get_secret_value() == "s3cr3t-key"


def test_errors_name_every_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kafka:\n  security_protocol: TLS\nelasticsearch:\n  bulk_size: 0\n  colour: blue\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    message = str(err.value)
    assert "kafka.security_protocol" in message
    assert "elasticsearch.bulk_size" in message
    assert "elasticsearch.colour" in message


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, environ={})


def test_int8_on_the_torch_runtime_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="models.*int8: true needs runtime: onnxruntime"):
        load_settings(environ={"TRIAGE_MODELS__INT8": "true", "TRIAGE_MODELS__RUNTIME": "torch"})
