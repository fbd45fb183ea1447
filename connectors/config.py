"""sources.yaml: which sources one `triage connect` process runs. Validated once, errors name the key.

Secrets are never written in the file: a source names the environment variable that holds them
(`secret_env: TRIAGE_WEBHOOK_SECRET`), and they never appear in logs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedConfig(_Strict):
    type: Literal["rss"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    url: str = Field(pattern=r"^https?://")
    every_s: float = Field(default=300, gt=0)


class WebhookConfig(_Strict):
    type: Literal["webhook"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    auth: Literal["hmac", "bearer"] = "hmac"
    secret_env: str = Field(min_length=1)


class ReplayConfig(_Strict):
    type: Literal["replay"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: str
    speed: float = Field(default=60, gt=0)


SourceConfig = Annotated[Union[FeedConfig, WebhookConfig, ReplayConfig], Field(discriminator="type")]


class ConnectConfig(_Strict):
    checkpoint_db: str = ".triage/connectors.sqlite"
    user_agent: str = "triage-connectors/0.1 (+https://github.com/triage)"
    dedup_days: float = Field(default=30, gt=0)
    sources: list[SourceConfig] = Field(min_length=1)


class ConnectConfigError(ValueError):
    pass


def load(path: str) -> ConnectConfig:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectConfigError(f"sources file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConnectConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        config = ConnectConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))
        raise ConnectConfigError(f"{path}: {problems}") from None
    names = [s.name for s in config.sources]
    if len(set(names)) != len(names):
        raise ConnectConfigError(f"{path}: source names must be unique (they key the checkpoints)")
    for source in config.sources:
        if isinstance(source, WebhookConfig) and not os.environ.get(source.secret_env):
            raise ConnectConfigError(f"source {source.name}: environment variable {source.secret_env} is not set")
    return config
