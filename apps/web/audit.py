"""The audit record: who saw raw text and who changed what, one JSON object a line (`web.audit_log`).

Never the text itself: a record names the user, their role, the action, the case and the outcome, so the log can
be kept and shown to a data-protection officer without becoming another copy of the customers' words.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Optional

from core.timestamps import utc_now


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # waitress serves requests on several threads; lines must not interleave

    def record(self, user: str, role: str, action: str, case_id: Optional[str] = None, outcome: str = "ok",
               address: Optional[str] = None, **details: Any) -> None:
        entry = {"at": utc_now(), "user": user, "role": role, "action": action, "case_id": case_id,
                 "outcome": outcome, "address": address, **details}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
