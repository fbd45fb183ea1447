"""Structured logging: one JSON object a line (or key=value text on a terminal).

Log calls pass their data as `extra={"fields": {...}}`; messages are constant strings, so logs can be
searched by event and never interpolate post text, personal data or secrets.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from core.config import LoggingSettings
from core.redact import redact_text
from core.terminal import printable

# Beam logs these at WARNING for every batch on platforms without the resource module; they are noise.
_NOISE = ("Resource module is not available", "apitools not found")
# Client libraries whose own log lines are kept at WARNING. Their retries attach the whole exception chain
# (three tracebacks for one refused connection); the last exception's line says what a reader needs, and the
# product's own error message follows.
_CLIENT_LOGGERS = ("apache_beam", "kafka", "elastic_transport", "urllib3")


def _error_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The product's own errors keep their traceback; a client library's retry keeps one line."""
    exc_type, exc, _ = record.exc_info  # (None, None, None) when logged with exc_info=True outside an except
    if exc_type and record.name.split(".")[0] in _CLIENT_LOGGERS:
        return f"{exc_type.__name__}: {exc}"
    return formatter.formatException(record.exc_info)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "event": record.getMessage(),
                 **getattr(record, "fields", {})}
        if record.exc_info:
            entry["error"] = _error_text(self, record)
        return redact_text(json.dumps(entry, ensure_ascii=False, default=str))  # no user:password@ of any URL


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A terminal reads this: control characters from data are shown as escapes, never executed.
        fields = " ".join(f"{k}={printable(str(v))}" for k, v in getattr(record, "fields", {}).items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {printable(record.getMessage())} {fields}".rstrip()
        return redact_text(line + ("\n" + _error_text(self, record) if record.exc_info else ""))


def _not_noise(record: logging.LogRecord) -> bool:
    return not any(text in str(record.msg) for text in _NOISE)


def configure(cfg: LoggingSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = cfg.format == "json" or (cfg.format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(_JsonFormatter() if use_json else _TextFormatter())
    handler.addFilter(_not_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    for client in _CLIENT_LOGGERS:
        logging.getLogger(client).setLevel(logging.WARNING)
