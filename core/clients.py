"""Kafka and Elasticsearch clients built from the settings, with auth and TLS applied in one place."""
from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from core.config import ElasticsearchSettings, KafkaSettings


def kafka_options(cfg: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by kafka-python's producer, consumer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        "request_timeout_ms": int(cfg.request_timeout_s * 1000),
        "bootstrap_timeout_ms": int(cfg.connect_timeout_s * 1000),
    }
    if cfg.sasl_mechanism:
        options["sasl_mechanism"] = cfg.sasl_mechanism
        options["sasl_plain_username"] = cfg.sasl_username
        options["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(cfg, name):
            options[name] = getattr(cfg, name)
    return options


def elasticsearch_client(cfg: ElasticsearchSettings) -> Elasticsearch:
    """An Elasticsearch 8.x client; it also talks to 9.x servers (compatibility headers)."""
    options: dict[str, Any] = {"request_timeout": cfg.request_timeout_s, "verify_certs": cfg.verify_certs}
    if cfg.api_key:
        options["api_key"] = cfg.api_key.get_secret_value()
    elif cfg.username:
        options["basic_auth"] = (cfg.username, cfg.password.get_secret_value() if cfg.password else "")
    if cfg.ca_certs:
        options["ca_certs"] = cfg.ca_certs
    return Elasticsearch(cfg.url, **options)
