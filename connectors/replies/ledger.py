"""At most once on the channel: a reply is written down as "sending" before its request leaves, "sent" after.

SQLite in one file, like the connectors' checkpoint (connectors/checkpoint.py): durable across crashes, no server.
The key is the case, the target (the post answered, or `dm:<post>` for a direct message) and a SHA-256 of the
text, never the text itself. A process killed between the API's publishing and the "sent" record leaves the row
"sending"; the next attempt therefore looks for the reply in the thread first (`find`) and publishes only when it
is not there. The same text to the same target of a case is one reply: sending it again reports the reply sent.

What this cannot promise: a platform that shows a new reply only after a delay (X's recent search takes seconds)
may not list it yet when a retry looks; the retry then posts again. The ledger narrows that window to a crash or
a 5xx followed by a lookup within that delay.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from connectors.local_db import open_local_db
from connectors.replies.base import ReplyError, Sent, Uncertain
from core.retry import backoff_delays

log = logging.getLogger(__name__)
ATTEMPTS = 4  # publishing attempts after 5xx or lost answers (each preceded by a lookup)


@dataclass(frozen=True)
class Delivery:
    sent: Sent
    how: str  # "sent", "found in the thread" (an earlier attempt had published it), "already sent"


def idempotency_key(case_id: str, target: str, text: str) -> str:
    return f"{case_id}|{target}|{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


class ReplyLedger:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = open_local_db(path, """
            CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, state TEXT NOT NULL, remote_id TEXT,
                                                post_id TEXT, updated REAL NOT NULL);
        """)

    def get(self, key: str) -> Optional[tuple[str, Optional[Sent]]]:
        """(state, the published reply when "sent"), or None for a reply never attempted."""
        with self._lock:
            row = self._db.execute("SELECT state, remote_id, post_id FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return row[0], Sent(row[1] or "", row[2]) if row[0] == "sent" else None

    def sending(self, key: str) -> None:
        """Recorded (and on disk: autocommit, WAL) before the request leaves."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO replies VALUES (?, 'sending', NULL, NULL, ?)", (key, time.time()))

    def sent(self, key: str, sent: Sent) -> None:
        with self._lock:
            self._db.execute("UPDATE replies SET state = 'sent', remote_id = ?, post_id = ?, updated = ? WHERE key = ?",
                             (sent.remote_id, sent.post_id, time.time(), key))

    def forget(self, key: str) -> None:
        """The API refused the reply outright: nothing was published, a later attempt starts afresh."""
        with self._lock:
            self._db.execute("DELETE FROM replies WHERE key = ? AND state = 'sending'", (key,))

    def close(self) -> None:
        self._db.close()


def deliver(ledger: ReplyLedger, key: str, send: Callable[[], Sent], find: Callable[[], Optional[Sent]],
            attempts: int = ATTEMPTS, backoff_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """Publish once: skip a reply the ledger has as sent, look up one it has as "sending", else record and send.

    After a 5xx or a lost answer (Uncertain) the reply is looked up before it is sent again, at most `attempts`
    times; when they are spent the row stays "sending", so the next run looks first too."""
    state = ledger.get(key)
    if state and state[1] is not None:
        return Delivery(state[1], "already sent")
    if state:  # an earlier run died or gave up after sending: did the API publish it?
        found = find()
        if found:
            ledger.sent(key, found)
            return Delivery(found, "found in the thread")
    else:
        ledger.sending(key)
    delays = backoff_delays(attempts - 1, backoff_s)
    uncertain = state is not None
    while True:
        try:
            sent = send()
        except Uncertain as exc:
            uncertain = True
            found = find()
            if found:
                ledger.sent(key, found)
                return Delivery(found, "found in the thread")
            delay = next(delays, None)
            if delay is None:
                raise ReplyError(f"{exc}; gave up after {attempts} attempts. Nothing was posted twice: the ledger keeps "
                                 "the reply as 'sending', and the next `triage reply` looks for it in the thread "
                                 "before sending") from None
            log.warning("reply not confirmed, sending again", extra={"fields": {"cause": str(exc)[:200],
                                                                                "delay_s": round(delay, 2)}})
            sleep(delay)
            continue
        except ReplyError:
            if not uncertain:  # refused outright: nothing is out there
                ledger.forget(key)
            raise
        ledger.sent(key, sent)
        return Delivery(sent, "sent")
