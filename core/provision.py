"""`triage setup`: create Kafka topics, the index template and the first index with its aliases.

Idempotent, so it can run at every deployment. The index is versioned behind two aliases: agents
and analysts read `<prefix>`, the pipeline writes `<prefix>-write`; a later reindex can build a new
version and swap the aliases without anyone noticing. The cases index (conversations, triage/cases.py)
is versioned the same way: `<prefix>-cases-000001` behind `<prefix>-cases` and `<prefix>-cases-write`.
The topic of case updates (`kafka.topics.case_updates`, read by `triage handoff`) is created with the others, so
turning the handoff on later needs no second setup.
"""
from __future__ import annotations

from elasticsearch import Elasticsearch
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

import schemas
from core.clients import elasticsearch_client, kafka_options
from core.config import ElasticsearchSettings, KafkaSettings, Settings


def create_topics(cfg: KafkaSettings) -> list[str]:
    admin = KafkaAdminClient(**kafka_options(cfg))
    try:
        existing = set(admin.list_topics())
        lines = []
        for role, spec in schemas.kafka_topics().items():
            name = getattr(cfg.topics, role)
            if name in existing:
                lines.append(f"topic {name}: exists")
                continue
            topic = NewTopic(name, spec["partitions"], cfg.replication_factor, topic_configs=spec["config"])
            try:
                admin.create_topics([topic])
                lines.append(f"topic {name}: created ({spec['partitions']} partitions)")
            except TopicAlreadyExistsError:
                lines.append(f"topic {name}: exists")
        return lines
    finally:
        admin.close()


def first_index_name(cfg: ElasticsearchSettings) -> str:
    return f"{cfg.index_prefix}-000001"


def install_index(es: Elasticsearch, cfg: ElasticsearchSettings) -> list[str]:
    es.indices.put_index_template(name=cfg.index_prefix, **schemas.index_template(cfg.index_prefix))
    es.indices.put_index_template(name=cfg.private_index, **schemas.index_template(cfg.index_prefix, "private"))
    lines = [f"index templates {cfg.index_prefix}, {cfg.private_index}: installed"]
    if not es.indices.exists(index=cfg.private_index):
        es.indices.create(index=cfg.private_index)
        lines.append(f"index {cfg.private_index}: created (raw posts, agents only)")
    lines.append(_versioned_index(es, first_index_name(cfg), cfg.read_alias, cfg.write_alias))
    es.indices.put_index_template(name=cfg.cases_read_alias, **schemas.index_template(cfg.index_prefix, "cases"))
    lines.append(f"index template {cfg.cases_read_alias}: installed")
    lines.append(_versioned_index(es, f"{cfg.cases_read_alias}-000001", cfg.cases_read_alias, cfg.cases_write_alias))
    return lines


def _versioned_index(es: Elasticsearch, first: str, read_alias: str, write_alias: str) -> str:
    """Create `first` behind its read and write alias, unless the write alias exists; says which."""
    if es.indices.exists_alias(name=write_alias):
        return f"write alias {write_alias}: exists"
    es.indices.create(index=first, aliases={read_alias: {}, write_alias: {"is_write_index": True}})
    return f"index {first}: created (read alias {read_alias}, write alias {write_alias})"


def setup_all(settings: Settings, kafka: bool = True, elasticsearch: bool = True) -> list[str]:
    lines = []
    if kafka:
        lines += create_topics(settings.kafka)
    if elasticsearch:
        es = elasticsearch_client(settings.elasticsearch)
        try:
            lines += install_index(es, settings.elasticsearch)
        finally:
            es.close()
    return lines


def teardown_all(settings: Settings, kafka: bool = True, elasticsearch: bool = True) -> None:
    """Remove what setup_all created: for benchmarks and tests that run against shared servers."""
    if kafka:
        admin = KafkaAdminClient(**kafka_options(settings.kafka))
        try:
            topics = settings.kafka.topics
            admin.delete_topics([topics.raw, topics.enriched, topics.dead_letter, topics.case_updates])
        finally:
            admin.close()
    if elasticsearch:
        cfg = settings.elasticsearch
        es = elasticsearch_client(cfg)
        try:
            names = list(es.indices.get(index=f"{cfg.index_prefix}-*", ignore_unavailable=True))
            if names:  # by name: Elasticsearch refuses wildcard deletes (action.destructive_requires_name)
                es.indices.delete(index=",".join(names))
            for template in (cfg.index_prefix, cfg.private_index, cfg.cases_read_alias):
                es.indices.delete_index_template(name=template)
        finally:
            es.close()
