"""Make text from posts safe to show on a terminal.

Posts come from strangers. Printed as they are, an ESC sequence in a post can retitle the agent's
window or clear the screen, a BEL rings, a C1 control (U+009B is a one-character CSI) acts like ESC,
and a bidi override (U+202E ...) makes the rest of a table line read backwards. `printable` turns
each such character into a visible escape (`\\x1b`, `\\u202e`), so the agent sees that something
odd was in the post instead of having it acted on or silently hidden. Every other character,
umlauts, emoji (with their joiners and variation selectors), CJK, Arabic and Hebrew letters,
stays as it is.

Use it on every post-derived value (text, title, names, labels, ids, notes, reasons) that goes into
output for people: tables, summaries, messages. Never on `--json` output or stored data, which
stay exact.
"""
from __future__ import annotations

import re
from typing import Optional

# C0 controls (newline, tab and carriage return too: they break a table row), DEL, C1 controls,
# lone surrogates (they cannot even be encoded for the terminal), and the invisible formatting
# characters that reorder or hide text: the Arabic letter mark, zero-width space, LRM/RLM, the
# line/paragraph separators, the bidi embeddings/overrides (U+202A-U+202E), word joiner and
# invisible operators, the bidi isolates (U+2066-U+2069), the byte-order mark and the interlinear
# annotation marks. ZWJ/ZWNJ (U+200D/U+200C) and variation selectors stay: emoji sequences and
# several scripts need them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, limit: Optional[int] = None) -> str:
    """`text` (made a str) with every control and bidi/format character shown as a visible escape.

    Newline, tab and carriage return become `\\n`, `\\t`, `\\r`; other C0 controls, DEL and C1
    controls `\\xNN` (ESC is `\\x1b`); the bidi and invisible format characters in `_UNSAFE` and lone
    surrogates `\\uNNNN` (`\\u202e`). All other characters are unchanged, so ordinary text comes back
    identical; a backslash already in the text is left alone (this is for reading, not a reversible
    encoding). Each character becomes at most six.

    With `limit`, a result longer than `limit` characters is cut to at most `limit`, never inside an
    escape, and "..." is added: exactly `text[:limit] + "..."` for ordinary text.
    """
    text = text if isinstance(text, str) else str(text)
    if not _UNSAFE.search(text):
        return text if limit is None or len(text) <= limit else text[:limit] + "..."
    escaped = _UNSAFE.sub(lambda m: _escape(m.group()), text)
    if limit is None or len(escaped) <= limit:
        return escaped
    kept, size = [], 0
    for ch in text:
        piece = _escape(ch) if _UNSAFE.match(ch) else ch
        if size + len(piece) > limit:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "..."
