"""handoff.yaml: the helpdesks cases are handed to, and how a case's fields map onto each one's.

Validated once at start; errors name FILE:LINE and the key. Like sources.yaml, secrets are never written here:
a target names the environment variable that holds its token (`token_env`) and the secret its webhooks are
signed with (`webhook_secret_env`).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from connectors.config import EnvName, HttpUrl, Name, entry_problems
from core.yaml_config import ConfigFileError, load_yaml

Priority = Literal["P1", "P2", "P3", "P4"]
CaseField = Literal["language", "sentiment", "intent", "topic", "queue", "priority", "source", "private_channel"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mapping(_Strict):
    """Case -> ticket. `groups`: queue -> the target's group/team (name or id); `default` for any other queue.
    `priorities`: P1..P4 -> the target's priority value. `fields`: a case field -> the name of a custom field on
    the target; case fields not mapped to a field become tags `<field>:<value>` when `label_tags` is on.
    Routing reasons and the topic always become tags (prefixed with `tag_prefix`)."""
    groups: dict[str, str] = {}
    priorities: dict[Priority, str] = {}
    fields: dict[CaseField, str] = {}
    label_tags: bool = True
    tag_prefix: str = "triage"


class _Target(_Strict):
    """What every target has. `raw_text`: where the raw text (which may hold personal data) goes: an internal
    note (default) or the ticket body; never a public reply. `poll_every_s`: hear back by polling instead of
    webhooks (bounded: open tickets only)."""
    name: Name
    mapping: Mapping = Mapping()
    raw_text: Literal["internal_note", "body"] = "internal_note"
    webhook_secret_env: Optional[EnvName] = None
    poll_every_s: Optional[float] = Field(default=None, gt=0)


class ZammadTarget(_Target):
    """Zammad REST API (token access: Authorization: Token token=...)."""
    kind: Literal["zammad"]
    url: HttpUrl
    token_env: EnvName
    customer_email_domain: str = "social.invalid"  # customers from social channels have no e-mail: synthetic ones


class ZendeskTarget(_Target):
    """Zendesk Support Tickets API v2 (API token: basic auth '<email>/token:<token>')."""
    kind: Literal["zendesk"]
    url: HttpUrl  # https://<subdomain>.zendesk.com
    email: str
    token_env: EnvName


class FreshdeskTarget(_Target):
    """Freshdesk API v2 (API key as basic-auth user, password 'X')."""
    kind: Literal["freshdesk"]
    url: HttpUrl  # https://<domain>.freshdesk.com
    token_env: EnvName
    case_id_field: str = "cf_triage_case_id"  # a custom text field created for the external reference


class ChatwootTarget(_Target):
    """Chatwoot application API (api_access_token header), conversations in one API inbox."""
    kind: Literal["chatwoot"]
    url: HttpUrl
    account_id: int = Field(ge=1)
    inbox_id: int = Field(ge=1)
    token_env: EnvName
    case_id_attribute: str = "triage_case_id"  # a conversation custom attribute (text) created for the case id


class WebhookTarget(_Target):
    """A generic JSON webhook, HMAC-SHA256 signed, for systems without a public API of their own."""
    kind: Literal["webhook"]
    url: HttpUrl
    secret_env: EnvName


TargetConfig = Annotated[Union[ZammadTarget, ZendeskTarget, FreshdeskTarget, ChatwootTarget, WebhookTarget],
                         Field(discriminator="kind")]


class HandoffConfig(_Strict):
    user_agent: str = "triage-handoff/0.1"
    targets: list[TargetConfig] = Field(min_length=1)


class HandoffConfigError(ConfigFileError):
    what = "handoff file"


def load(path: str, require_env: bool = True, unused: tuple[str, ...] = ()) -> HandoffConfig:
    """Read and validate a handoff file; names must be unique and every named variable set, except the keys in
    `unused` (`triage handoff` sends tickets and never reads `webhook_secret_env`; the receiver needs it)."""
    config, document = load_yaml(path, HandoffConfig, HandoffConfigError, what="handoff file")
    problems = entry_problems(list(config.targets), document, "targets", "target", "the case -> ticket mapping",
                              require_env, unused)
    if problems:
        raise HandoffConfigError(problems)
    return config
