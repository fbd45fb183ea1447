"""`triage connect`: run the configured sources in one long-running process until SIGTERM/SIGINT.

Polling sources and the webhook receiver run in threads; replays run to the end of their file.
One Kafka producer (acks=all, idempotent) and one checkpoint store serve them all.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

from connectors import config as connect_config
from connectors.base import Delivery, Source, run_polling
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient
from connectors.replay import replay
from connectors.rss import FeedSource
from connectors.webhook import WebhookReceiver
from pipeline.config import Settings
from pipeline.sinks.kafka import KafkaWriter

log = logging.getLogger(__name__)


def polling_source(cfg: connect_config.FeedConfig, http: HttpClient) -> Source:
    return FeedSource(cfg.name, cfg.url, cfg.every_s, http)


def run(settings: Settings, path: str, only: Optional[list[str]] = None, once: bool = False,
        stop: Optional[threading.Event] = None) -> dict[str, int]:
    """Run the sources (all, or those named in `only`); with `once`, one pass of each feed and replay, no webhook."""
    cfg = connect_config.load(path)
    unknown = set(only or []) - {s.name for s in cfg.sources}
    if unknown:
        raise connect_config.ConnectConfigError(f"{path} has no source named {', '.join(sorted(unknown))}")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    store = CheckpointStore(cfg.checkpoint_db)
    store.forget_older_than(cfg.dedup_days)
    writer = KafkaWriter(settings.kafka)
    http = HttpClient(cfg.user_agent)
    counts: dict[str, int] = {}
    threads = []

    def work(name: str, job) -> None:  # type: ignore[no-untyped-def]
        try:
            result = job()
            counts[name] = result.posts if isinstance(result, Delivery) else int(result or 0)
        except Exception as exc:
            log.error("source stopped", extra={"fields": {"source": name, "error": f"{type(exc).__name__}: {exc}"}})
            counts[name] = -1

    for source in (s for s in cfg.sources if not only or s.name in only):
        if isinstance(source, connect_config.FeedConfig):
            poller = polling_source(source, http)
            job = lambda p=poller: run_polling(p, store, writer, settings.kafka, stop, once)  # noqa: E731
        elif isinstance(source, connect_config.ReplayConfig):
            job = lambda s=source: replay(s.path, s.speed, settings.kafka, writer, stop)  # noqa: E731
        elif once:
            continue
        else:
            receiver = WebhookReceiver(source.host, source.port, os.environ[source.secret_env], source.auth,
                                       settings.kafka, writer)
            job = lambda r=receiver: r.serve(stop)  # noqa: E731
        thread = threading.Thread(target=work, args=(source.name, job), name=source.name, daemon=True)
        thread.start()
        threads.append(thread)
    try:
        for thread in threads:
            thread.join()
    finally:
        writer.close()
        store.close()
    return counts
