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


# ---- one strict loader for every config file: FILE:LINE: key.path: problem ----------------------------

def _settings(path: Path) -> object:
    return load_settings(path, environ={})


def _rules(path: Path) -> object:
    from triage.routing import load_rules
    return load_rules(str(path))


def _topics(path: Path) -> object:
    from models.topics import read_topics
    return read_topics(path)


def _sources(path: Path) -> object:
    from connectors.config import load
    return load(str(path))


def _training(path: Path) -> object:
    from models.train import load_config
    return load_config(path)


def _shipped(relative: str) -> str:
    return (Path(__file__).resolve().parent.parent / relative).read_text(encoding="utf-8")


# kind: (loader, error type, valid text, (a line with a good value, the same line with a value of the wrong type,
# the key path the error names), a top-level key to repeat)
KINDS = {
    "settings": (_settings, "core.config.ConfigError", "logging:\n  level: INFO\nelasticsearch:\n  bulk_size: 100\n",
                 ("  bulk_size: 100", "  bulk_size: many", "elasticsearch.bulk_size"), "logging"),
    "rules": (_rules, "triage.routing.RulesError", _shipped("triage/rules/telecom-de.yaml"),
              ("    then: {queue: spam, priority: P4", "    then: {queue: spam, priority: [P4]",
               "rules.0.then.priority"),
              "version"),
    "topics": (_topics, "models.topics.TopicsError", "threshold: 0.8\ntopics:\n  - name: billing\n"
                                                     "    examples: [Rechnung falsch]\n",
               ("threshold: 0.8", "threshold: high", "threshold"), "threshold"),
    "sources": (_sources, "connectors.config.ConnectConfigError",
                "dedup_days: 30\nsources:\n  - type: rss\n    name: blog\n    url: https://example.org/feed\n"
                "    every_s: 60\n",
                ("    every_s: 60", "    every_s: soon", "sources.0.rss.every_s"), "dedup_days"),
    "training": (_training, "models.train.TrainConfigError", _shipped("models/train.yaml"),
                 ("batch_size: 32", "batch_size: [32]", "batch_size"), "seed"),
}


def _error_type(dotted: str) -> type:
    import importlib
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _line_of(text: str, start: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.mark.parametrize("kind", KINDS)
def test_every_config_file_kind_loads_its_valid_text(kind: str, tmp_path: Path) -> None:
    loader, _, text, _, _ = KINDS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text, encoding="utf-8")
    assert loader(path) is not None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mistake", ["bad type", "unknown key", "duplicate key", "syntax error"])
def test_every_config_file_kind_names_file_line_and_key(kind: str, mistake: str, tmp_path: Path) -> None:
    from core.yaml_config import ConfigFileError
    loader, error, text, (good, bad, key), repeated = KINDS[kind]
    if mistake == "bad type":
        assert good in text
        text = text.replace(good, bad, 1)
        expected = f":{_line_of(text, bad)}: {key}: "
    elif mistake == "unknown key":
        text = text + "colour: blue\n"
        expected = f":{len(text.splitlines())}: colour: Extra inputs are not permitted"
    elif mistake == "duplicate key":
        first = _line_of(text, f"{repeated}:")
        text = text + f"{repeated}: 5\n"
        expected = f":{len(text.splitlines())}: {repeated}: duplicate key (first at line {first})"
    else:
        text = text + "broken: a: b\n"
        last = len(text.splitlines())
        expected = f":{last}: not valid YAML at line {last}, column"
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as err:
        loader(path)
    assert isinstance(err.value, _error_type(error)) and isinstance(err.value, ValueError)
    assert f"{path}{expected}" in str(err.value), str(err.value)


def test_settings_errors_say_where_each_value_came_from(tmp_path: Path) -> None:
    config = tmp_path / "triage.yaml"
    config.write_text("elasticsearch:\n  url: http://x:9200\n  bulk_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={"TRIAGE_STREAM__MAX_POLL_RECORDS": "0", "TRIAGE_MODELS__INT8": "true",
                                       "TRIAGE_MODELS__RUNTIME": "torch"})
    message = str(err.value)
    assert message.startswith("invalid configuration:")
    assert f"{config}:3: elasticsearch.bulk_size: Input should be greater than or equal to 1" in message
    assert "environment variable TRIAGE_STREAM__MAX_POLL_RECORDS: stream.max_poll_records:" in message
    assert ("environment variable TRIAGE_MODELS__INT8, environment variable TRIAGE_MODELS__RUNTIME: models: "
            in message)


@pytest.mark.parametrize("text", [
    "elasticsearch:\n  password: [hunter2]\n",                        # a bad type
    "elasticsearch:\n  password: hunter2\n  password: hunter3\n",     # a duplicate key
    "elasticsearch:\n  password: \"hunter2\n",                        # a syntax error in the secret's line
    "elasticsearch:\n  password: *hunter2\n",                         # an alias PyYAML would name
    "elasticsearch:\n  api_key: hunter2\n  colour: hunter2\n",        # an unknown key beside a secret
])
def test_config_file_errors_never_echo_a_secret(tmp_path: Path, text: str) -> None:
    config = tmp_path / "triage.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert "hunter" not in str(err.value)
    assert f"{config}:" in str(err.value)


def test_a_validator_message_on_a_secret_field_is_withheld() -> None:
    from pydantic import BaseModel, SecretStr, field_validator

    from core.yaml_config import ConfigFileError, parse_yaml, validate

    class Model(BaseModel):
        token: SecretStr

        @field_validator("token")
        @classmethod
        def _long(cls, value: SecretStr) -> SecretStr:
            raise ValueError(f"too short: {value.get_secret_value()}")

    document = parse_yaml("# a comment\ntoken: hunter2\n", "t.yaml")
    with pytest.raises(ConfigFileError) as err:
        validate(Model, document.data, document.locations())
    assert "t.yaml:2: token: invalid value (a secret: not shown)" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_cli_prints_a_sources_file_error_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cli.main import main
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - {type: rss, name: blog, url: \"https://example.org/feed\"}\n"
                       "sources: []\n", encoding="utf-8")
    assert main(["connect", "--sources", str(sources), "--once"]) == 2
    err = capsys.readouterr().err
    assert f"{sources}:3: sources: duplicate key (first at line 1)" in err and "Traceback" not in err
