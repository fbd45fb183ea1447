"""The workspace's users: name, role and an argon2id password hash, in a YAML file (`web.users_file`).

Why a file: a small care team needs no user database, and single sign-on installations use the trusted-proxy
mode instead (apps/web/access.py). The file never holds a password, only argon2id hashes (argon2-cffi's
recommended parameters), so a leaked copy does not give anyone a login.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field

from core.yaml_config import ConfigFileError, load_yaml

ROLES = ("agent", "supervisor", "analyst")
Role = Literal["agent", "supervisor", "analyst"]
_HASHER = PasswordHasher()
# Checked when the name is unknown, so that a wrong name costs as long as a wrong password (no user probing).
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class UsersFileError(ConfigFileError):
    what = "users file"


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Role
    password_hash: str = Field(pattern=r"^\$argon2(id|i|d)\$")


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    users: dict[str, User] = Field(default_factory=dict)


def load_users(path: str | Path) -> dict[str, User]:
    users, _ = load_yaml(path, UsersFile, UsersFileError, "users file", empty={})
    return dict(users.users)


def check_password(users: dict[str, User], name: str, password: str) -> Optional[User]:
    """The user when the password is right, else None (same cost for an unknown name)."""
    user = users.get(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def add_user(path: str | Path, name: str, role: str, password: str) -> bool:
    """Add the user or replace their role and password; True when the user was new. Other users stay as written."""
    if role not in ROLES:
        raise UsersFileError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not name or not name.strip() or name != name.strip():
        raise UsersFileError("the user name must not be empty or start or end with spaces")
    if len(password) < 8:
        raise UsersFileError("the password must have at least 8 characters")
    path = Path(path)
    data = UsersFile.model_validate({"users": {}}) if not path.exists() else UsersFile(users=load_users(path))
    new = name not in data.users
    users = {n: u.model_dump() for n, u in data.users.items()}
    users[name] = {"role": role, "password_hash": _HASHER.hash(password)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# triage web users: roles and argon2id hashes (triage web add-user NAME --role ROLE)\n"
                    + yaml.safe_dump({"users": users}, sort_keys=True, allow_unicode=True), encoding="utf-8")
    path.chmod(0o600)
    return new
