"""Push streams (Mastodon streaming API, X filtered stream) that never leave a gap.

Streams cannot resume: what was published while disconnected is never sent again. So before each
(re)connect the source's REST listing catches up from the mark, and every streamed item moves the mark.
A closed or stalled stream raises; the runner logs it, waits `every_s` and the next fetch catches up.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Iterator, Optional

from connectors.base import Page, Source
from connectors.http import SourceUnavailable
from connectors.listing import Item, ListingSource, Mark

Event = Optional[tuple[Optional[Mark], Item]]  # None: a heartbeat; a None mark (a deletion, a malformed line) keeps the mark


class CatchUpStream(Source):
    def __init__(self, rest: ListingSource, every_s: float) -> None:
        super().__init__(rest.name, every_s)
        self.kind, self.rest = rest.kind, rest
        self._events: Optional[Iterator[Event]] = None

    @abstractmethod
    def connect(self) -> Iterator[Event]:
        """Open the stream; yield each item with its mark, and None for heartbeats."""

    def fetch(self, state: dict[str, Any]) -> Page:
        if self._events is None:
            page = self.rest.fetch(state)
            if not page.more:  # caught up: from now on the stream delivers
                self._events = self.connect()
                page.more = True
            return page
        try:
            event = next(self._events)
        except StopIteration:
            self._events = None
            raise SourceUnavailable(f"stream {self.name} was closed by the server") from None
        except Exception:
            self._events = None
            raise
        if event is None:
            return Page([], state, more=True)
        mark, item = event
        marks = [m for m in (mark, state.get("mark")) if m is not None]
        new_state = {"mark": max(marks)} if marks else dict(state)
        return Page([item] if item is not None else [], new_state, more=True, skipped=int(item is None))

    def close(self) -> None:
        if self._events is not None:
            self._events.close()  # type: ignore[attr-defined]
            self._events = None
