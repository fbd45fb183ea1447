"""What every request of one application shares: the settings, the Elasticsearch client and the case store, the
login limiter, the audit log, and (for replies) the sources file and the personal-data detector."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from flask import current_app

from apps.reply import ElasticsearchCases
from apps.web.access import LoginLimiter
from apps.web.audit import AuditLog
from connectors.config import ConnectConfig
from core.config import Settings, WebSettings


@dataclass
class Context:
    settings: Settings
    web: WebSettings
    es: Any
    cases: ElasticsearchCases
    limiter: LoginLimiter
    audit: AuditLog
    sources: Optional[ConnectConfig] = None
    _detector: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def detector(self) -> Any:
        """The personal-data detector of the reply guard, built once on the first reply (it loads rules and
        phone metadata: too slow to build per request)."""
        with self._lock:
            if self._detector is None:
                from models.pii import PiiDetector
                pii = self.settings.pii
                self._detector = PiiDetector(pii.phone_regions, pii.person_names_model)
            return self._detector


def context() -> Context:
    return current_app.extensions["triage"]
