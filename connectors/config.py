"""sources.yaml: which sources one `triage connect` process runs. Validated once, errors name the key.

Secrets are never written in the file: a source names the environment variable that holds them
(`secret_env: TRIAGE_WEBHOOK_SECRET`), and they never appear in logs.
"""
from __future__ import annotations

import os
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.yaml_config import ConfigFileError, YamlDocument, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


# An author id or handle, `@` optional, compared case-insensitively (`@TelcoHilfe`, `telcohilfe`, `5005`, `kunde@social.example`)
Account = Annotated[str, Field(pattern=r"^@?[^\s@][^\s]*$", max_length=256)]


class _Polled(_Strict):
    """What every polling source has. `brand_accounts`: the brand's own accounts on that source; their posts are
    marked `author.is_brand` (role "brand" unless the source names one), so agents do not triage the brand's replies."""
    name: Name
    brand_accounts: list[Account] = []


class ReplyAccount(_Strict):
    """A brand account `triage reply` posts as (connectors/replies/), and the variable holding its token.

    Reading needs an app token; answering needs the account's own user-context token (X OAuth 2 user token,
    Mastodon and Reddit user tokens, the Facebook page token, a YouTube OAuth token, a Discourse API key used
    with `account` as Api-Username). Kept apart from the reading credentials so a reader never can post.
    List the account in `brand_accounts` too, so the connector marks the reply as the brand's when it reads it."""
    account: Account
    token_env: EnvName


class _Replying(_Strict):
    """Sources `triage reply` can answer on: the first entry of `reply_accounts` is the default sender."""
    reply_accounts: list[ReplyAccount] = []


class _Polling(_Polled):
    every_s: float = Field(default=60, gt=0)
    backfill_pages: int = Field(default=1, ge=1, le=50)  # how far back a new source reads on its first run


class FeedConfig(_Polled):
    type: Literal["rss"]
    url: HttpUrl
    every_s: float = Field(default=300, gt=0)


class DiscourseConfig(_Polling, _Replying):
    type: Literal["discourse"]
    url: HttpUrl
    categories: list[int] = []  # category ids; empty: the whole forum
    api_key_env: Optional[EnvName] = None
    api_username: Optional[str] = None


class MastodonConfig(_Polling, _Replying):
    type: Literal["mastodon"]
    url: HttpUrl
    hashtags: list[str] = []
    accounts: list[str] = []  # user@server
    token_env: Optional[EnvName] = None
    stream: bool = False  # hashtags through the streaming API (with REST catch-up on every reconnect)
    streaming_url: Optional[HttpUrl] = None  # when the server streams from another host (/api/v1/instance)

    @model_validator(mode="after")
    def _something_to_read(self) -> "MastodonConfig":
        if not self.hashtags and not self.accounts:
            raise ValueError("name at least one of hashtags, accounts")
        return self


class RedditConfig(_Polling, _Replying):
    type: Literal["reddit"]
    subreddits: list[str] = Field(min_length=1)
    comments: bool = True
    client_id_env: EnvName
    client_secret_env: EnvName
    api_url: HttpUrl = "https://oauth.reddit.com"
    auth_url: HttpUrl = "https://www.reddit.com/api/v1/access_token"


class XConfig(_Polling, _Replying):
    type: Literal["x"]
    query: str = Field(min_length=1, max_length=1024)
    bearer_token_env: EnvName
    stream: bool = False  # the filtered stream (the query becomes its rule), with recent-search catch-up
    api_url: HttpUrl = "https://api.x.com"


class FacebookConfig(_Polling, _Replying):
    type: Literal["facebook"]
    page_id: str = Field(pattern=r"^[0-9A-Za-z._-]+$")
    page_token_env: EnvName
    comments: bool = True
    comments_days: float = Field(default=3, gt=0)  # comments are read on posts this young
    every_s: float = Field(default=300, gt=0)
    api_url: HttpUrl = "https://graph.facebook.com/v21.0"


class YouTubeConfig(_Polling, _Replying):
    type: Literal["youtube"]
    channel_id: str = Field(pattern=r"^[0-9A-Za-z_-]+$")
    api_key_env: EnvName
    every_s: float = Field(default=900, gt=0)  # the daily quota is 10,000 units, one per page
    api_url: HttpUrl = "https://www.googleapis.com"


class KhorosConfig(_Polling):
    type: Literal["khoros"]
    url: HttpUrl  # the community's address, e.g. https://community.example.de (its API is at /api/2.0)
    boards: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(min_length=1)  # board ids
    staff_ranks: list[str] = ["Employee", "Moderator", "Administrator"]  # author ranks that speak for the brand
    token_env: Optional[EnvName] = None  # OAuth 2.0 bearer token (private communities)
    session_key_env: Optional[EnvName] = None  # or a li-api-session-key


class AppStoreConfig(_Polling):
    type: Literal["app_store"]
    app_id: str = Field(pattern=r"^[0-9]+$")  # the number in apps.apple.com/.../id<app_id>
    countries: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(default=["de"], min_length=1)
    every_s: float = Field(default=900, gt=0)
    backfill_pages: int = Field(default=1, ge=1, le=10)  # the feed has 10 pages
    feed_url: HttpUrl = "https://itunes.apple.com"


class GooglePlayConfig(_Polling):
    type: Literal["google_play"]
    package_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")
    service_account_file_env: EnvName = "GOOGLE_APPLICATION_CREDENTIALS"  # names the variable holding the key file's path
    translation_language: Optional[str] = Field(default=None, pattern=r"^[a-z]{2,3}([_-][A-Za-z]{2})?$")
    every_s: float = Field(default=900, gt=0)
    api_url: HttpUrl = "https://androidpublisher.googleapis.com"


class WebhookConfig(_Strict):
    type: Literal["webhook"]
    name: Name
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    auth: Literal["hmac", "bearer"] = "hmac"
    secret_env: EnvName


class ReplayConfig(_Strict):
    type: Literal["replay"]
    name: Name
    path: str
    speed: float = Field(default=60, gt=0)


SourceConfig = Annotated[Union[FeedConfig, DiscourseConfig, MastodonConfig, RedditConfig, XConfig, FacebookConfig,
                               YouTubeConfig, KhorosConfig, AppStoreConfig, GooglePlayConfig, WebhookConfig, ReplayConfig],
                        Field(discriminator="type")]


class ConnectConfig(_Strict):
    checkpoint_db: str = ".triage/connectors.sqlite"
    user_agent: str = "triage-connectors/0.1 (+https://github.com/triage)"
    dedup_days: float = Field(default=30, gt=0)
    sources: list[SourceConfig] = Field(min_length=1)


class ConnectConfigError(ConfigFileError):
    what = "sources file"


def entry_problems(entries: list[BaseModel], document: YamlDocument, section: str, kind: str, keyed: str,
                   require_env: bool = True, unused: tuple[str, ...] = ()) -> list[str]:
    """What a file of named entries (sources, helpdesk targets) can get wrong beyond its schema: a name used twice
    (`keyed`: what the names key, for the message) and a named environment variable (`*_env`) that is not set,
    except the keys in `unused` (a command that never reads them)."""
    problems = []
    first: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = getattr(entry, "name")
        if name in first:
            problems.append(f"{document.where((section, index, 'name'))}: {section}.{index}.name: {kind} names must "
                            f"be unique (they key {keyed}); {name} is also {kind} {first[name]}")
        first.setdefault(name, index)
        for key, value in entry:
            if require_env and key.endswith("_env") and key not in unused and value and not os.environ.get(value):
                problems.append(f"{document.where((section, index, key))}: {section}.{index}.{key}: {kind} "
                                f"{name}: environment variable {value} is not set ({key})")
    return problems


def load(path: str, require_env: bool = True) -> ConnectConfig:
    """Read and validate a sources file; every problem is reported as FILE:LINE: key.path: what is wrong.

    `require_env=False` skips the check that every named credential variable is set: `triage reply` needs only
    the reply token of one source, not every reader's credentials."""
    config, document = load_yaml(path, ConnectConfig, ConnectConfigError, what="sources file")
    problems = entry_problems(list(config.sources), document, "sources", "source", "the checkpoints", require_env)
    if problems:
        raise ConnectConfigError(problems)
    return config


def secret(source: BaseModel, key: str) -> Optional[str]:
    """The value of the environment variable the entry (a source, a helpdesk target) names in `key` (validated as
    set by `load`)."""
    variable = getattr(source, key)
    return os.environ.get(variable) if variable else None
