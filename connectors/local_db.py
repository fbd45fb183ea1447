"""The one way connectors open their local SQLite files (checkpoints, the reply ledger).

WAL journal, autocommit (callers open their own transactions with BEGIN), usable from the runner's threads
(callers hold their own lock), parent folder created: a file that survives restarts and crashes with no server.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path


def open_local_db(path: str, schema: str) -> sqlite3.Connection:
    """The database at `path` (`~` expanded) with `schema` (idempotent CREATE ... IF NOT EXISTS statements) applied."""
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(file), check_same_thread=False, isolation_level=None)
    db.executescript("PRAGMA journal_mode=WAL;\n" + schema)
    return db
