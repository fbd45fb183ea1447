"""Khoros Community (formerly Lithium): the new topics and replies of forum boards, through the Community API v2.

The big German telecom and utility help forums run on Khoros. Its v2 API answers LiQL queries at
`/api/2.0/search?q=SELECT ... FROM messages WHERE board.id = 'B' ORDER BY post_time DESC LIMIT n`,
newest first; `CURSOR '<data.next_cursor>'` appended to the same query reads the next-older page. The
post time is the mark. A message names its topic (the thread) and its parent (the message it answers);
its author's rank says whether the community's own staff wrote it: ranks named in `staff_ranks`
make the author `is_brand` with the rank as role. Kudos and accepted solutions travel in metadata.

Public boards need no credentials; a private community takes an OAuth bearer token or a session key
(`li-api-session-key`), each from an environment variable.
"""
from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from connectors.base import Malformed
from connectors.http import HttpClient, SourceUnavailable, json_body
from connectors.listing import Item, Listing, ListingSource, Mark, utc_mark
from connectors.text import html_to_text

PAGE_SIZE = 100
FIELDS = ("id, subject, body, post_time, last_edit_time, author, board, topic, parent, kudos.sum(weight), is_solution, "
          "conversation.solved, view_href, depth")
STAFF_RANKS = ("Employee", "Moderator", "Administrator")


class KhorosBoard(ListingSource):
    kind = "khoros"

    def __init__(self, name: str, url: str, board: str, every_s: float, http: HttpClient,
                 staff_ranks: tuple[str, ...] = STAFF_RANKS, token: Optional[str] = None,
                 session_key: Optional[str] = None, backfill_pages: int = 1) -> None:
        """`board` is a board id (validated by the config: it is quoted into the query)."""
        super().__init__(name, every_s, backfill_pages)
        self.url, self.board, self.http = url.rstrip("/"), board, http
        self.host = urlsplit(self.url).netloc
        self.staff = {rank.casefold() for rank in staff_ranks}
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if session_key:
            self.headers["li-api-session-key"] = session_key

    def query(self, cursor: Optional[str]) -> str:
        """The LiQL statement of one page (a cursor is the API's own opaque string, quoted as LiQL asks)."""
        if cursor and "'" in cursor:
            raise SourceUnavailable(f"khoros {self.url}: the API handed out a cursor LiQL cannot quote")
        return (f"SELECT {FIELDS} FROM messages WHERE board.id = '{self.board}' ORDER BY post_time DESC "
                f"LIMIT {PAGE_SIZE}" + (f" CURSOR '{cursor}'" if cursor else ""))

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        what = f"khoros {self.url} board {self.board}"
        answer = json_body(self.http.get(f"{self.url}/api/2.0/search?q={quote(self.query(cursor))}", self.headers), what)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or answer.get("status") != "success" or not isinstance(data, dict):
            # api.always_ok communities answer errors with HTTP 200 and status "error"
            message = answer.get("message") if isinstance(answer, dict) else None
            raise SourceUnavailable(f"{what} answered an error: {message or 'no data'}")
        items = data.get("items") or []
        if not isinstance(items, list):
            raise SourceUnavailable(f"{what}: data.items is not a list")
        return Listing([self._entry(raw) for raw in items], data.get("next_cursor") or None)

    def _id(self, native: Any) -> str:
        return self.post_id(f"{self.host}/{native}")

    def _entry(self, raw: Any) -> tuple[Optional[Mark], Item]:
        position = f"khoros:{self.url}/board/{self.board}"
        posted = utc_mark(raw.get("post_time")) if isinstance(raw, dict) else None
        if not posted or not str(raw.get("id") or "").isdigit():
            return posted, Malformed(position, "message has no numeric id or post_time", json.dumps(raw).encode())
        text = html_to_text(raw.get("body") or "")
        if not text:
            return posted, None  # an attachment or a deleted body: nothing to triage
        topic, parent = _ref(raw.get("topic")), _ref(raw.get("parent"))
        author = raw.get("author") if isinstance(raw.get("author"), dict) else {}
        rank = _get(author, "rank", "name")
        staff = rank.casefold() in self.staff if isinstance(rank, str) else None
        edited = utc_mark(raw.get("last_edit_time"))
        return posted, {
            "id": self._id(raw["id"]), "source": self.kind, "text": text,
            "title": raw.get("subject") if raw.get("depth") == 0 else None, "url": raw.get("view_href"),
            "author": {"id": str(author["id"]) if author.get("id") is not None else None, "handle": author.get("login"),
                       "name": author.get("login"), "is_brand": staff, "role": rank.lower() if staff else None},
            "created_at": posted, "edited_at": edited if edited and edited > posted else None,
            "thread_id": self._id(topic or raw["id"]), "reply_to_id": self._id(parent) if parent else None,
            "metadata": {"community": self.host, "board": _ref(raw.get("board")) or self.board, "rank": rank,
                         "kudos": _get(raw, "kudos", "sum", "weight"), "is_solution": bool(raw.get("is_solution")),
                         "thread_solved": bool(_get(raw, "conversation", "solved")),
                         "depth": raw.get("depth")}}


def _get(node: Any, *path: str) -> Any:
    """A nested field (`kudos.sum.weight`), or None where the answer leaves a level out."""
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _ref(value: Any) -> Optional[str]:
    """The id of a referenced object (`{"type": "message", "id": "123", ...}`)."""
    return str(value["id"]) if isinstance(value, dict) and value.get("id") is not None else None
