"""Credentials never leave the process in text: URLs lose their user:password@ part before they are shown.

Elasticsearch URLs may carry credentials (`https://user:pass@host:9200`), and client exceptions often
quote the URL they failed on. Everything printed or logged that may hold a URL goes through
`redact_text`; core/logs.py also applies it to every formatted log line.
"""
from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ - userinfo ends at the last '@' before the path, query, fragment or whitespace.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@ (scheme, host, port and path kept)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" not in authority:
        return url
    return f"{scheme}{sep}{MASK}@{authority.rpartition('@')[2]}{rest[end:]}"


def redact_text(text: object) -> str:
    """Free text (an error message, a log line) with the credentials of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", str(text))
