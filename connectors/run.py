"""`triage connect`: run the configured sources in one long-running process until SIGTERM/SIGINT.

Polling sources and the webhook receiver run in threads; replays run to the end of their file.
One Kafka producer (acks=all, idempotent) and one checkpoint store serve them all; a test passes its own
sink instead (connectors.testing.ListSink).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

from connectors import config as connect_config
from connectors.app_store import AppStoreReviews
from connectors.base import Delivery, PostSink, Source, brand_key, run_polling
from connectors.checkpoint import CheckpointStore
from connectors.discourse import DiscourseSource
from connectors.facebook import FacebookPageComments, FacebookPagePosts, GraphClient
from connectors.google_play import GooglePlayReviews, PlayToken
from connectors.http import HttpClient
from connectors.khoros import KhorosBoard
from connectors.mastodon import MastodonHashtagStream, MastodonTimeline
from connectors.reddit import RedditListing, RedditToken
from connectors.replay import replay
from connectors.rss import FeedSource
from connectors.webhook import WebhookReceiver
from connectors.x import XFilteredStream, XRecentSearch, with_brand_posts
from connectors.youtube import YouTubeChannelComments
from core.config import Settings
from core.redact import redact_text
from core.kafka_writer import KafkaWriter

log = logging.getLogger(__name__)


def polling_sources(cfg: connect_config.SourceConfig, http: HttpClient, once: bool = False) -> list[Source]:
    """The sources one configured entry runs, each with its own checkpoint (named `<name>/<listing>`) and the entry's
    `brand_accounts`, which the runner applies to every post (connectors/base.py)."""
    sources = _sources(cfg, http, once)
    # A Mastodon account named `user@its.server` appears as plain `user` on its own server: both forms match.
    keys = [brand_key(account) for account in getattr(cfg, "brand_accounts", ())]
    brands = frozenset(keys + [key.split("@", 1)[0] for key in keys if "@" in key])
    for source in sources:
        source.brand_accounts = brands
    return sources


def _sources(cfg: connect_config.SourceConfig, http: HttpClient, once: bool) -> list[Source]:
    """The sources one configured entry runs.

    With `once`, streams are left closed: their REST listing makes one catch-up pass instead."""
    secret = connect_config.secret
    if isinstance(cfg, connect_config.FeedConfig):
        return [FeedSource(cfg.name, cfg.url, cfg.every_s, http)]
    if isinstance(cfg, connect_config.DiscourseConfig):
        return [DiscourseSource(cfg.name, cfg.url, cfg.every_s, http, tuple(cfg.categories), secret(cfg, "api_key_env"),
                                cfg.api_username, cfg.backfill_pages)]
    if isinstance(cfg, connect_config.MastodonConfig):
        listed = {brand_key(a) for a in cfg.accounts}  # the brand's replies seldom carry the hashtag: read its statuses
        accounts = [a.lstrip("@") for a in cfg.accounts] + [b for b in _brand_handles(cfg) if brand_key(b) not in listed]
        timelines = [f"tag:{t.lstrip('#')}" for t in cfg.hashtags] + [f"account:{a}" for a in accounts]
        tags = frozenset(t.lstrip("#").casefold() for t in cfg.hashtags)
        sources: list[Source] = []
        for timeline in timelines:
            rest = MastodonTimeline(f"{cfg.name}/{timeline}", cfg.url, timeline, cfg.every_s, http,
                                    secret(cfg, "token_env"), cfg.backfill_pages,
                                    leave_tags=tags if timeline.startswith("account:") else frozenset())
            stream = cfg.stream and not once and timeline.startswith("tag:")
            sources.append(MastodonHashtagStream(rest, 5.0, cfg.streaming_url) if stream else rest)
        return sources
    if isinstance(cfg, connect_config.RedditConfig):
        token = RedditToken(cfg.auth_url, secret(cfg, "client_id_env") or "", secret(cfg, "client_secret_env") or "", http)
        listings = ["new", "comments"] if cfg.comments else ["new"]
        return [RedditListing(f"{cfg.name}/r/{sub}/{what}", cfg.api_url, sub, what, cfg.every_s, http, token,
                              cfg.backfill_pages) for sub in cfg.subreddits for what in listings]
    if isinstance(cfg, connect_config.XConfig):
        try:  # the brand's replies seldom match the query: read its own tweets too (the stream rule follows)
            query = with_brand_posts(cfg.query, _brand_handles(cfg))
        except ValueError as exc:
            raise connect_config.ConnectConfigError([f"sources: {cfg.name}: query: {exc}"]) from None
        search = XRecentSearch(cfg.name, cfg.api_url, query, cfg.every_s, http, secret(cfg, "bearer_token_env") or "",
                               cfg.backfill_pages)
        return [XFilteredStream(search, every_s=5.0) if cfg.stream and not once else search]
    if isinstance(cfg, connect_config.FacebookConfig):
        graph = GraphClient(cfg.api_url, secret(cfg, "page_token_env") or "", http)
        posts: list[Source] = [FacebookPagePosts(f"{cfg.name}/posts", graph, cfg.page_id, cfg.every_s, cfg.backfill_pages)]
        return posts + ([FacebookPageComments(f"{cfg.name}/comments", graph, cfg.page_id, cfg.every_s, cfg.comments_days)]
                        if cfg.comments else [])
    if isinstance(cfg, connect_config.YouTubeConfig):
        return [YouTubeChannelComments(cfg.name, cfg.api_url, cfg.channel_id, cfg.every_s, http,
                                       secret(cfg, "api_key_env") or "", cfg.backfill_pages)]
    if isinstance(cfg, connect_config.KhorosConfig):
        return [KhorosBoard(f"{cfg.name}/{board}", cfg.url, board, cfg.every_s, http, tuple(cfg.staff_ranks),
                            secret(cfg, "token_env"), secret(cfg, "session_key_env"), cfg.backfill_pages)
                for board in cfg.boards]
    if isinstance(cfg, connect_config.AppStoreConfig):
        return [AppStoreReviews(f"{cfg.name}/{country}", cfg.app_id, country, cfg.every_s, http, cfg.feed_url,
                                cfg.backfill_pages) for country in cfg.countries]
    if isinstance(cfg, connect_config.GooglePlayConfig):
        return [GooglePlayReviews(cfg.name, cfg.package_name, cfg.every_s, http,
                                  PlayToken(secret(cfg, "service_account_file_env") or "", http),
                                  cfg.translation_language, cfg.api_url, cfg.backfill_pages)]
    raise TypeError(f"{type(cfg).__name__} is not a polling source")


def _brand_handles(cfg: connect_config.XConfig | connect_config.MastodonConfig) -> list[str]:
    """The entry's brand accounts a timeline or `from:` can name: handles without `@`, each once. A numeric id still
    marks the brand's posts but names no account to read: ids are left out, with one warning."""
    handles: dict[str, str] = {}
    ids = []
    for account in cfg.brand_accounts:
        handle = account.strip().lstrip("@")
        if handle.isdigit():
            ids.append(handle)
        else:
            handles.setdefault(brand_key(handle), handle)
    if ids:
        log.warning("brand account ids are matched but not read; list their handles to read the brand's own posts",
                    extra={"fields": {"source": cfg.name, "ids": ids}})
    return list(handles.values())


def run(settings: Settings, path: str, only: Optional[list[str]] = None, once: bool = False,
        stop: Optional[threading.Event] = None, sink: Optional[PostSink] = None) -> dict[str, int]:
    """Run the sources (all, or those named in `only`); with `once`, one pass of each feed and replay, no webhook.

    Posts and dead letters go to `sink`, by default a KafkaWriter on settings.kafka (closed at the end; a sink
    passed in is the caller's to close)."""
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
    writer: PostSink = sink if sink is not None else KafkaWriter(settings.kafka)
    http = HttpClient(cfg.user_agent)
    counts: dict[str, int] = {}
    threads = []

    def work(name: str, job) -> None:  # type: ignore[no-untyped-def]
        try:
            result = job()
            counts[name] = result.posts if isinstance(result, Delivery) else int(result or 0)
        except Exception as exc:
            log.error("source stopped", extra={"fields": {"source": name, "error": redact_text(f"{type(exc).__name__}: {exc}")}})
            counts[name] = -1

    jobs = []
    for source in (s for s in cfg.sources if not only or s.name in only):
        if isinstance(source, connect_config.ReplayConfig):
            jobs.append((source.name, lambda s=source: replay(s.path, s.speed, settings.kafka, writer, stop)))
        elif isinstance(source, connect_config.WebhookConfig):
            if not once:
                receiver = WebhookReceiver(source.host, source.port, os.environ[source.secret_env], source.auth,
                                           settings.kafka, writer)
                jobs.append((source.name, lambda r=receiver: r.serve(stop)))
        else:
            jobs += [(p.name, lambda p=p: run_polling(p, store, writer, settings.kafka, stop, once))
                     for p in polling_sources(source, http, once)]
    for name, job in jobs:
        thread = threading.Thread(target=work, args=(name, job), name=name, daemon=True)
        thread.start()
        threads.append(thread)
    try:
        for thread in threads:
            thread.join()
    finally:
        if sink is None:
            writer.close()
        store.close()
    return counts
