"""Newest-first listings, walked back to where the last poll stopped.

Most social APIs list the newest items first and hand out a cursor to the next-older page (Discourse
`before`, Reddit `after`, Graph API `paging.next`, YouTube `pageToken`, X `next_token`, Mastodon's
`Link` header). To get everything since the last poll without a gap, a round starts at the newest page
and follows the cursor until a whole page is at or below the mark (the newest position of the last
completed round), or `max_pages` pages. Not the first old item: listings are not strictly ordered (a
pinned YouTube comment, a stickied Reddit post or a pinned Discourse topic comes first whatever its age),
and stopping there would skip the new items after it for good. Every item above the mark is delivered
from every page; the delivered-ids table drops the repeats a walk meets (an item that moved to the next
page while the walk was under way). The state saved after each page holds the cursor, so a restart in
the middle of a round resumes it; the mark only moves once the round is complete.

A new source starts at its newest `backfill_pages` pages: history is not read back to the beginning.
"""
from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional, Union

from connectors.base import Deletion, Malformed, Page, Post, Source

log = logging.getLogger(__name__)
Mark = Union[int, float, str]  # an id that grows over time, or an RFC 3339 UTC time ("...Z")
Item = Union[Post, Malformed, Deletion, None]  # None: listed, but not a post to triage (reshared, no text)


@dataclass
class Listing:
    entries: list[tuple[Optional[Mark], Item]]  # newest first; a malformed item may lack a mark
    older: Optional[str]  # cursor of the next-older page; None at the end of the listing


class ListingSource(Source):
    max_pages = 50  # per round; a source further behind logs a gap instead of walking for ever

    def __init__(self, name: str, every_s: float, backfill_pages: int = 1) -> None:
        super().__init__(name, every_s)
        self.backfill_pages = backfill_pages

    @abstractmethod
    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        """One page, newest first: at `cursor`, or the newest page when it is None."""

    def fetch(self, state: dict[str, Any]) -> Page:
        mark = state.get("mark")
        listing = self.listing(state.get("cursor"), mark)
        entries = _fill_marks(listing.entries)
        # ">=": items published in the same second as the mark are kept; the delivered-ids table drops repeats.
        # A malformed item listed below the mark's own item was read in an earlier round: strictly newer only.
        fresh = [item for position, item, inherited in entries
                 if mark is None or position is None or position > mark or (position == mark and not inherited)]
        marks = [m for m, _, _ in entries if m is not None] + [m for m in (state.get("top"), mark) if m is not None]
        top = max(marks) if marks else None
        pages = state.get("pages", 0) + 1
        # A page with nothing above the mark ends the round. A page with no position at all (only malformed items)
        # says nothing about its age: the walk goes on, as far as max_pages.
        caught_up = listing.older is None or (mark is not None and not any(
            position is None or position > mark for position, _, _ in entries))
        if caught_up or pages >= (self.backfill_pages if mark is None else self.max_pages):
            if not caught_up and mark is not None:
                log.warning("source is further behind than one round reads; older items are skipped",
                            extra={"fields": {"source": self.name, "pages": pages}})
            new_state: dict[str, Any] = {"mark": top}
        else:
            new_state = {"mark": mark, "cursor": listing.older, "top": top, "pages": pages}
        posts = [item for item in fresh if item is not None]
        return Page(posts, new_state, more="cursor" in new_state, skipped=len(fresh) - len(posts))


def _fill_marks(entries: list[tuple[Optional[Mark], Item]]) -> list[tuple[Optional[Mark], Item, bool]]:
    """A malformed item without a position takes its newer neighbour's (the first one: the next one's),
    so it is dead-lettered in one round only. The flag says the position was inherited."""
    filled, previous = [], next((m for m, _ in entries if m is not None), None)
    for position, item in entries:
        previous = position if position is not None else previous
        filled.append((previous, item, position is None))
    return filled


def utc_mark(timestamp: object) -> Optional[str]:
    """An RFC 3339 time with any offset and precision ("2026-11-05T10:12:33.120+01:00") as the "...Z" UTC second
    that marks compare as text; None when it is not such a time. Listings that page by time need one format."""
    if not isinstance(timestamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if parsed.tzinfo else None


def epoch_mark(epoch: object) -> Optional[str]:
    """Seconds since 1970 (Reddit's `created_utc`, Play's Timestamp seconds) in the format of `utc_mark`;
    None for anything else (Reddit's `edited` is `false` when a post was never edited)."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
