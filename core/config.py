"""Configuration: packaged defaults, then a YAML file, then environment variables; validated once.

Why this order: defaults live in a file next to the code (core/defaults.yaml) so they are
documented in one place; a deployment keeps its own file; secrets and per-environment endpoints
come from the environment, so they never need to be written to disk.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from core.yaml_config import (ConfigFileError, Loc, YamlDocument, is_secret, parse_yaml, read_yaml, union_members,
                              validate)

# Short, documented names for the settings people change most; any other key can be set as
# TRIAGE_<SECTION>__<KEY> (e.g. TRIAGE_ELASTICSEARCH__BULK_SIZE=1000).
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "TRIAGE_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "TRIAGE_KAFKA_SECURITY_PROTOCOL": ("kafka", "security_protocol"),
    "TRIAGE_KAFKA_SASL_MECHANISM": ("kafka", "sasl_mechanism"),
    "TRIAGE_KAFKA_SASL_USERNAME": ("kafka", "sasl_username"),
    "TRIAGE_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "TRIAGE_KAFKA_SSL_CAFILE": ("kafka", "ssl_cafile"),
    "TRIAGE_ES_URL": ("elasticsearch", "url"),
    "TRIAGE_ES_API_KEY": ("elasticsearch", "api_key"),
    "TRIAGE_ES_USERNAME": ("elasticsearch", "username"),
    "TRIAGE_ES_PASSWORD": ("elasticsearch", "password"),
    "TRIAGE_ES_CA_CERTS": ("elasticsearch", "ca_certs"),
    "TRIAGE_ES_INDEX_PREFIX": ("elasticsearch", "index_prefix"),
}
CONFIG_FILE_ENV = "TRIAGE_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaTopics(_Section):
    raw: str
    enriched: str
    dead_letter: str
    case_updates: str  # {"case_id", "updated_at"} per case written, for `triage handoff` (apps/handoff.py)


class KafkaSettings(_Section):
    bootstrap_servers: str
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[SecretStr] = None
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    client_id: str
    replication_factor: int = Field(ge=1)
    request_timeout_s: float = Field(gt=0)
    connect_timeout_s: float = Field(gt=0)
    topics: KafkaTopics


class ElasticsearchSettings(_Section):
    url: str
    api_key: Optional[SecretStr] = None
    username: Optional[str] = None
    password: Optional[SecretStr] = None
    ca_certs: Optional[str] = None
    verify_certs: bool
    index_prefix: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    request_timeout_s: float = Field(gt=0)
    bulk_size: int = Field(ge=1, le=10000)
    max_retries: int = Field(ge=0, le=20)
    retry_backoff_s: float = Field(ge=0)

    @property
    def read_alias(self) -> str:
        return self.index_prefix

    @property
    def write_alias(self) -> str:
        return f"{self.index_prefix}-write"

    @property
    def private_index(self) -> str:
        """Raw posts and personal-data spans, for agents only (core/documents.py)."""
        return f"{self.index_prefix}-private"

    @property
    def cases_read_alias(self) -> str:
        """Conversations (cases): one document per case, no raw text (triage/cases.py)."""
        return f"{self.index_prefix}-cases"

    @property
    def cases_write_alias(self) -> str:
        return f"{self.index_prefix}-cases-write"


class EnrichmentSettings(_Section):
    steps: list[str] = Field(min_length=1)
    languages: list[str] = Field(min_length=1)
    language_min_score: float = Field(ge=0, le=1)
    language_min_letters: int = Field(ge=0)
    language_min_words: int = Field(ge=1)
    max_text_chars: int = Field(ge=1)
    max_record_bytes: int = Field(ge=1)
    min_batch_size: int = Field(ge=1)
    max_batch_size: int = Field(ge=1)


class ModelSettings(_Section):
    artifacts: Optional[str] = None
    encoder: Optional[str] = None
    cache_dir: str
    threads: int = Field(ge=1, le=64)
    int8: bool
    runtime: Literal["torch", "onnxruntime"]
    batch_size: int = Field(ge=1, le=1024)
    topics_file: Optional[str] = None
    sentiment_model: Optional[str] = None
    intent_model: Optional[str] = None

    @model_validator(mode="after")
    def _int8_runs_on_onnxruntime(self) -> "ModelSettings":
        if self.int8 and self.runtime != "onnxruntime":
            raise ValueError("int8: true needs runtime: onnxruntime (the int8 encoder is an ONNX Runtime graph)")
        return self


class RoutingSettings(_Section):
    rules_file: str = Field(min_length=1)
    reload_s: float = Field(gt=0)


class AlertSettings(_Section):
    webhook_url: Optional[SecretStr] = None  # a secret: whoever has the URL can post to the channel
    baseline_days: int = Field(ge=1, le=60)
    min_posts: int = Field(ge=1)
    volume_factor: float = Field(gt=1)
    negative_share_rise: float = Field(gt=0, le=1)


class StreamSettings(_Section):
    group_id: str
    poll_timeout_ms: int = Field(ge=10, le=60_000)
    max_poll_records: int = Field(ge=1, le=10_000)
    allowed_lateness_s: float = Field(ge=0)
    max_outage_s: float = Field(ge=0)
    max_poll_interval_s: float = Field(ge=5)
    metrics_port: int = Field(ge=0, le=65535)
    metrics_host: str = Field(min_length=1)
    instance_id: Optional[str] = Field(default=None, min_length=1, max_length=200)
    unassigned_warn_s: float = Field(gt=0)
    max_record_attempts: int = Field(default=3, ge=1, le=100)


class PiiSettings(_Section):
    phone_regions: list[str] = Field(min_length=1)
    person_names_model: Optional[str] = None


class ServicesSettings(_Section):
    data_dir: str
    kafka_server: Literal["noida", "tansu"]
    kafka_port: int = Field(ge=1, le=65535)
    es_port: int = Field(ge=1, le=65535)
    start_timeout_s: float = Field(gt=0)


class RepliesSettings(_Section):
    """`triage reply` (apps/reply.py): the ledger that keeps each reply at most once on its channel."""
    ledger_db: str = Field(default=".triage/replies.sqlite", min_length=1)


class CasesSettings(_Section):
    """Conversations (triage/cases.py): which posts form one case, and whether the jobs maintain the cases index."""
    enabled: bool
    author_window_hours: float = Field(ge=0, le=24 * 31)  # 0: a post without a thread is a case of its own


class HandoffSettings(_Section):
    """`triage handoff` (apps/handoff.py): routed cases become tickets in the team's helpdesk(s), exactly once."""
    targets_file: Optional[str] = Field(default=None, min_length=1)  # None: no handoff, no case updates published
    group_id: str = Field(default="triage-handoff", min_length=1)  # consumer group per target: <group_id>-<name>
    poll_timeout_ms: int = Field(default=500, ge=10, le=60_000)
    max_poll_records: int = Field(default=100, ge=1, le=10_000)
    retry_backoff_s: float = Field(default=1.0, gt=0)  # first wait while a helpdesk is unavailable, then doubled
    max_backoff_s: float = Field(default=300.0, gt=0)  # longest wait between tries (and longest Retry-After obeyed)


class TrustedProxySettings(_Section):
    """Single sign-on through a reverse proxy: the user and role come from its headers, and only from its addresses
    (anyone else could send the same headers)."""
    enabled: bool = False
    user_header: str = Field(default="X-Forwarded-User", min_length=1)
    role_header: str = Field(default="X-Forwarded-Role", min_length=1)
    addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])


class WebSettings(_Section):
    """`triage web` (apps/web/): the workspace for agents, supervisors and analysts."""
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    users_file: str = Field(default="users.yaml", min_length=1)
    secret_key: Optional[SecretStr] = None  # signs the session cookie; null: a new random key at each start
    session_lifetime_s: int = Field(default=8 * 3600, ge=60)
    insecure_cookies: bool = False  # true only for http://localhost (the demo, the tests): no `Secure` flag
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: int = Field(default=300, ge=1)
    audit_log: str = Field(default=".triage/web-audit.jsonl", min_length=1)
    trusted_proxy: TrustedProxySettings = TrustedProxySettings()


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["auto", "text", "json"]


class Settings(_Section):
    kafka: KafkaSettings
    elasticsearch: ElasticsearchSettings
    enrichment: EnrichmentSettings
    models: ModelSettings
    routing: RoutingSettings
    alerts: AlertSettings
    stream: StreamSettings
    pii: PiiSettings
    services: ServicesSettings
    logging: LoggingSettings
    cases: CasesSettings
    replies: RepliesSettings = RepliesSettings()
    web: WebSettings = WebSettings()
    handoff: HandoffSettings = HandoffSettings()


class ConfigError(ConfigFileError):
    """The configuration is invalid; the message says where (file:line or variable), which key and why."""

    what = "configuration"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _field(path: tuple[str, ...]) -> Any:
    """The pydantic field a settings path names, or None when there is no such key."""
    model: Any = Settings
    field = None
    for key in path:
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or key not in fields:
            return None
        field = fields[key]
        model = field.annotation
    return field


def _kind(path: tuple[str, ...]) -> str:
    """'secret' (SecretStr: taken verbatim), 'text' (a plain string) or 'typed' (anything else, parsed as YAML)."""
    if is_secret(Settings, path):
        return "secret"
    field = _field(path)
    types = union_members(field.annotation) if field is not None else ()
    return "text" if str in types and set(types) <= {str, type(None)} else "typed"


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[Loc, str]]:
    """The settings given in the environment, and key path -> 'environment variable NAME'."""
    overrides: dict[str, Any] = {}
    origins: dict[Loc, str] = {}
    for name, raw in environ.items():
        if name in ENV_ALIASES:
            path = ENV_ALIASES[name]
        elif name.startswith("TRIAGE_") and "__" in name:
            path = tuple(part.lower() for part in name[len("TRIAGE_"):].split("__"))
        else:
            continue
        kind = _kind(path)
        if not raw:
            value = None
        elif kind == "secret":
            value = raw  # passwords, keys and tokens are strings, exactly as given ("null", "123456", "*x", "a #b")
        else:
            # YAML parsing turns "true", "5" and "[de, en]" into their types, and "null" into none.
            try:
                value = yaml.safe_load(raw)
            except Exception:  # YAMLError, or ValueError for a malformed date: never echo the value
                if kind != "text":
                    raise ConfigError(f"invalid configuration: environment variable {name} ({'.'.join(path)}) is "
                                      f"not valid YAML; write it as e.g. 5, true or [de, en]") from None
                value = raw
            if kind == "text" and value is not None and not isinstance(value, str):
                value = raw  # a string setting: "2024" or "yes" stay as written
        _set_path(overrides, path, value)
        origins[path] = f"environment variable {name}"
    return overrides, origins


def _read_yaml(path: Path) -> YamlDocument:
    document = read_yaml(path, ConfigError, "config file", empty={})
    if not isinstance(document.data, dict):
        raise ConfigError([f"{path}:{document.lines[()]}: must hold a mapping at the top level"])
    return document


def _merge_origins(origins: dict[Loc, str], document: YamlDocument) -> dict[Loc, str]:
    """Where each key path was last set: a value given again replaces the origin of the whole subtree."""
    merged = dict(origins)
    for path, where in document.locations().items():
        if path and path in merged and not isinstance(_value_at(document.data, path), dict):  # a mapping merges
            for old in [p for p in merged if len(p) > len(path) and p[:len(path)] == path]:
                del merged[old]
        merged[path] = where
    return merged


def _value_at(data: Any, path: Loc) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else data[key] if isinstance(data, list) else None
    return data


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Build and validate the settings. Raises ConfigError naming every invalid key and where it was set
    (FILE:LINE of the config file or of core/defaults.yaml, or the environment variable)."""
    environ = dict(os.environ if environ is None else environ)
    resource = resources.files(__package__).joinpath("defaults.yaml")
    defaults = parse_yaml(resource.read_text(encoding="utf-8"), str(resource), ConfigError, empty={})
    merged, origins = defaults.data, _merge_origins({}, defaults)
    config_file = config_file or environ.get(CONFIG_FILE_ENV)
    if config_file:
        document = _read_yaml(Path(config_file))
        merged, origins = _deep_merge(merged, document.data), _merge_origins(origins, document)
    overrides, from_env = _env_overrides(environ)
    merged = _deep_merge(merged, overrides)
    defaults_origins = set(_merge_origins({}, defaults).values())
    for path, where in from_env.items():
        for old in [p for p in origins if len(p) > len(path) and p[:len(path)] == path]:
            del origins[old]
        origins[path] = where
        for depth in range(1, len(path)):  # a section-level check (int8 needs onnxruntime) names the variables too
            parent = path[:depth]
            if parent not in origins or origins[parent] in defaults_origins:
                origins[parent] = where
            elif where not in origins[parent].split(", "):
                origins[parent] += f", {where}"
    return validate(Settings, merged, origins, ConfigError)
