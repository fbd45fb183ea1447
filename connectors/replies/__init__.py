"""Answering on a source's channel, one small client per API (`triage reply`, apps/reply.py).

Which sources.yaml entry answers a post: the one named with `--source`, else the only entry of the post's API
(X for `twitter` posts, and so on) that has `reply_accounts`; for Mastodon and Discourse, whose post ids name the
server, the entry of that server. Which account: `--as ACCOUNT` (one of the entry's `reply_accounts`), else the
first listed. Feeds, webhooks, replays and review stores have no reply API here, and say so.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional
from urllib.parse import urlsplit

from connectors.config import ConnectConfig, SourceConfig
from connectors.http import HttpClient
from connectors.replies.base import CannotReply, ReplyClient, ReplyError
from connectors.replies.discourse import DiscourseReplies
from connectors.replies.facebook import FacebookReplies
from connectors.replies.mastodon import MastodonReplies
from connectors.replies.reddit import RedditReplies
from connectors.replies.x import XReplies
from connectors.replies.youtube import YouTubeReplies

CLIENTS: dict[str, type[ReplyClient]] = {"x": XReplies, "mastodon": MastodonReplies, "reddit": RedditReplies,
                                         "facebook": FacebookReplies, "youtube": YouTubeReplies,
                                         "discourse": DiscourseReplies}
# Post `source` -> sources.yaml type, for posts of APIs with a client.
SOURCE_TYPES = {client.kind: kind for kind, client in CLIENTS.items()}
WHY_NOT = {
    "rss": "a feed is read-only: answer on the site that published it",
    "webhook": "posts pushed by a webhook come from a system triage cannot write to: answer there",
    "replay": "a replayed file has no channel to answer on",
    "app_store": "Apple's public review feed has no reply API: answer in App Store Connect",
    "google_play": "Google Play review replies are not implemented: answer in the Play Console",
    "khoros": "Khoros Community replies are not implemented: answer in the community",
}


def choose_source(config: ConnectConfig, post_source: str, post_id: str, name: Optional[str] = None) -> SourceConfig:
    """The sources.yaml entry that answers a post (see the module docstring); a clear error otherwise."""
    if name:
        named = [s for s in config.sources if s.name == name]
        if not named:
            raise ReplyError(f"no source named {name} in the sources file "
                             f"(names: {', '.join(s.name for s in config.sources)})")
        source = named[0]
        if source.type in WHY_NOT:
            raise CannotReply(f"source {name} ({source.type}) cannot reply: {WHY_NOT[source.type]}")
        if SOURCE_TYPES.get(post_source) != source.type:
            raise ReplyError(f"source {name} is a {source.type} source; the case's post {post_id} is from {post_source}")
        return source
    kind = SOURCE_TYPES.get(post_source)
    if kind is None:
        why = WHY_NOT.get(post_source, "no reply client exists for it")
        raise CannotReply(f"posts from {post_source} cannot be answered from triage: {why}")
    candidates = [s for s in config.sources if s.type == kind and s.reply_accounts]  # type: ignore[union-attr]
    if kind in ("mastodon", "discourse"):  # their post ids name the server: mastodon:HOST:ID, discourse:HOST/t/...
        after_host = ":" if kind == "mastodon" else "/"
        candidates = [s for s in candidates  # type: ignore[union-attr]
                      if post_id.startswith(f"{post_source}:{urlsplit(s.url).netloc}{after_host}")]  # type: ignore[union-attr]
    if len(candidates) != 1:
        found = f"{len(candidates)} {kind} sources with reply_accounts" + \
            (f" ({', '.join(s.name for s in candidates)})" if candidates else "")
        raise ReplyError(f"{found} could answer {post_id}; " +
                         ("choose one with --source NAME" if candidates else
                          f"add reply_accounts to the {kind} entry of the sources file, or name one with --source"))
    return candidates[0]


def client_for(source: SourceConfig, http: HttpClient, as_account: Optional[str] = None,
               sleep: Callable[[float], None] = time.sleep) -> ReplyClient:
    """The reply client of a source entry, as `as_account` (default: the first of its reply_accounts)."""
    if source.type in WHY_NOT:
        raise CannotReply(f"source {source.name} ({source.type}) cannot reply: {WHY_NOT[source.type]}")
    accounts = source.reply_accounts  # type: ignore[union-attr]
    if not accounts:
        raise ReplyError(f"source {source.name} has no reply_accounts: add one (account and token_env) to the "
                         "sources file to answer through it")
    if as_account:
        wanted = as_account.lstrip("@").casefold()
        accounts = [a for a in accounts if a.account.lstrip("@").casefold() == wanted]
        if not accounts:
            raise ReplyError(f"{as_account} is not one of the reply_accounts of source {source.name} "
                             f"({', '.join(a.account for a in source.reply_accounts)})")  # type: ignore[union-attr]
    account = accounts[0]
    token = os.environ.get(account.token_env)
    if not token:
        raise ReplyError(f"source {source.name}: environment variable {account.token_env} is not set "
                         f"(reply_accounts token_env of {account.account})")
    return CLIENTS[source.type](source, http, account.account, token, account.token_env, sleep)
