"""Post URLs as the Post schema stores them: absolute http(s) URIs, ASCII only.

Sources hand out IRIs (`https://www.reddit.com/r/de/comments/abc/kündigung_bei_xyz/`, `https://bücher.de/`)
that fail the schema's `format: uri`, and now and then garbage (`javascript:`, a relative path, text with
spaces). A URL is only a link back to the post, so it must never cost the post: an IRI is percent-encoded
(host IDNA-encoded) into the URI it stands for, and an unusable one is dropped by the runner.

The schema keeps `uri` rather than `iri`: jsonschema checks `iri` with a full grammar parser at about 35 ms
a value, which the pipeline, validating every post, cannot afford.
"""
from __future__ import annotations

from jsonschema import FormatChecker
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

MAX_URL_CHARS = 2048  # the de-facto limit browsers, sitemaps and CDNs agree on; longer is not a permalink
_SCHEMA_FORMATS = FormatChecker(formats=["uri"])


class UnusableUrl(ValueError):
    """The URL cannot be made a valid http(s) URI; the message says why without repeating it."""


def clean_url(url: object) -> str:
    """`url` as an ASCII http(s) URI the Post schema accepts; a valid one comes back unchanged.

    Raises UnusableUrl for anything else: not a string, whitespace or control characters (a URL with spaces
    is text, not a link), another scheme, no host, or longer than MAX_URL_CHARS once encoded."""
    if not isinstance(url, str):
        raise UnusableUrl(f"not a string but {type(url).__name__}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise UnusableUrl("contains whitespace or control characters")
    try:
        parsed = parse_url(url)  # percent-encodes what a URI may not hold, IDNA-encodes the host
    except LocationParseError:
        raise UnusableUrl("cannot be parsed as a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnusableUrl("is not an absolute http(s) URL")
    cleaned = url if url.isascii() and _SCHEMA_FORMATS.conforms(url, "uri") else parsed.url
    if len(cleaned) > MAX_URL_CHARS:
        raise UnusableUrl(f"is longer than {MAX_URL_CHARS} characters")
    if not _SCHEMA_FORMATS.conforms(cleaned, "uri"):
        raise UnusableUrl("is not a valid URI even when percent-encoded")
    return cleaned
