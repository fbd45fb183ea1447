"""HTML to plain text for posts: keep the words and the paragraph breaks, drop markup, scripts and styles.

An image's alt text is kept in place: a post that is only a photo with a description says something
(the description), a photo without one says nothing we could triage, and an emoji image (Discourse)
reads as its `:shortcode:`."""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCKS = {"p", "br", "div", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "pre"}
_SKIP = {"script", "style", "noscript"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self._skipping:
                self.parts.append(f" {alt} ")
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment (or of text with entities); empty when only markup or spaces remain."""
    if "<" in markup:
        parser = _Text()
        parser.feed(markup)
        parser.close()
        text = "".join(parser.parts)
    else:
        text = html.unescape(markup)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)  # a no-break space stays: French puts one before ":" and "!"
    return re.sub(r"\s*\n\s*", "\n", text).strip()
