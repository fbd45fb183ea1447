"""Where each source stands (cursor, ETag, since-id) and what it already delivered.

SQLite in one file: durable across restarts and crashes, no server to run. A connector saves the new
position and the delivered ids in one transaction, and only after Kafka acknowledged the posts: a
crash before that repeats the last page (harmless: ids are stable and the index overwrites), a
crash after it loses nothing.

The delivered table holds the runner's dedup keys (connectors/base.py::dedup_key): a post id, `id@edited_at`
for an edited version, `deleted:<id>` for a deletion, `malformed:<sha256>` for a dead-lettered item (so an
item a source lists every round is dead-lettered once).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterable

from connectors.local_db import open_local_db


class CheckpointStore:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = open_local_db(path, """
            CREATE TABLE IF NOT EXISTS position (source TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS delivered (source TEXT NOT NULL, post_id TEXT NOT NULL, at REAL NOT NULL,
                                                  PRIMARY KEY (source, post_id));
        """)

    def state(self, source: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT state FROM position WHERE source = ?", (source,)).fetchone()
        return json.loads(row[0]) if row else {}

    def unseen(self, source: str, keys: Iterable[str]) -> set[str]:
        """The dedup keys `source` has not delivered yet (within the retention window)."""
        ids = list(keys)
        with self._lock:
            seen = {r[0] for chunk in range(0, len(ids), 500) for r in self._db.execute(
                f"SELECT post_id FROM delivered WHERE source = ? AND post_id IN ({','.join('?' * len(ids[chunk:chunk + 500]))})",
                (source, *ids[chunk:chunk + 500]))}
        return set(ids) - seen

    def commit(self, source: str, state: dict[str, Any], delivered: Iterable[str]) -> None:
        """Record the new position and the delivered keys atomically."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO position VALUES (?, ?, ?) ON CONFLICT(source) DO UPDATE SET state = excluded.state, "
                             "updated = excluded.updated", (source, json.dumps(state), now))
            self._db.executemany("INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)", [(source, i, now) for i in delivered])
            self._db.execute("COMMIT")

    def forget_older_than(self, days: float) -> None:
        """Delivered keys are kept for dedup within a window; older ones only cost space."""
        with self._lock:
            self._db.execute("DELETE FROM delivered WHERE at < ?", (time.time() - days * 86400,))

    def close(self) -> None:
        self._db.close()
