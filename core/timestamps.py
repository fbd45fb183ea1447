"""The one timestamp format written to Elasticsearch and Kafka: RFC 3339, UTC, milliseconds, 'Z'.

e.g. `2026-11-03T09:30:00.000Z`. One fixed width and zone means the strings also sort and compare
as the instants they name, for readers that compare them as text (notebooks, exports, tests).
"""
from __future__ import annotations

from datetime import datetime, timezone


def utc_iso(instant: datetime) -> str:
    """`instant` as RFC 3339 UTC with milliseconds and 'Z'. A naive datetime is taken as UTC."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """The current time in the format of `utc_iso`."""
    return utc_iso(datetime.now(timezone.utc))
