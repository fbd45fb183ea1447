"""Google Play: the reviews of one app, through the Play Developer API (`reviews.list`), as a service account.

`GET /androidpublisher/v3/applications/{package}/reviews` lists the reviews written or changed in the
last seven days (reviews with text only), newest first, with `tokenPagination.nextPageToken` for the
next page (`token=`); the user comment's `lastModified` is the mark. `translationLanguage` asks Google
to translate the texts (the original is kept in metadata).

A review carries the user's comment (text, stars, reviewer language, app version, device, Android
version) and, once the team has replied, the developer's comment: such a review is answered
(`metadata.developer_reply`, `metadata.answered_at`, `reply_state: "answered"`), and the reply is also
delivered as the brand's own post in the review's thread (`<review id>/reply`), which answers its case. Play keeps no
creation time, only the last change, so `created_at` is the user comment's `lastModified`; a user
comment changed after the developer's reply was edited since, and carries `edited_at`.

The access token comes from the service-account key file through google-auth (a JWT-bearer grant to
the key's `token_uri`, scope androidpublisher), is renewed before it expires and once on HTTP 401.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Optional
from urllib.parse import quote, urlencode

import google.auth.exceptions
import google.auth.transport.urllib3
from google.oauth2 import service_account

from connectors.base import Malformed
from connectors.http import HttpClient, SourceUnavailable, json_body
from connectors.listing import Item, Listing, ListingSource, Mark, epoch_mark

SCOPE = "https://www.googleapis.com/auth/androidpublisher"
PAGE_SIZE = 100


class PlayToken:
    """The service account's access token, shared by the listings of a source and renewed by google-auth."""

    def __init__(self, key_file: str, http: HttpClient) -> None:
        """The key file is read at the first request, so a bad one stops this source's polls, not the process."""
        self.key_file = key_file
        self.credentials: Optional[service_account.Credentials] = None
        self.transport = google.auth.transport.urllib3.Request(http.pool)
        self._lock = threading.Lock()

    def _load(self) -> service_account.Credentials:
        try:
            return service_account.Credentials.from_service_account_file(self.key_file, scopes=[SCOPE])
        except (OSError, ValueError) as exc:  # the message names the file and the problem, never the key
            raise SourceUnavailable(f"google_play: cannot read the service-account key file: {exc}") from None

    def header(self, renew: bool = False) -> dict[str, str]:
        with self._lock:
            self.credentials = self.credentials or self._load()
            if renew or not self.credentials.valid:
                try:
                    self.credentials.refresh(self.transport)
                except google.auth.exceptions.GoogleAuthError as exc:
                    raise SourceUnavailable(f"google_play: the service-account token request failed ({exc}); "
                                            "check the key file and its Play Console permissions") from None
            return {"Authorization": f"Bearer {self.credentials.token}"}


class GooglePlayReviews(ListingSource):
    kind = "google_play"

    def __init__(self, name: str, package: str, every_s: float, http: HttpClient, token: PlayToken,
                 translation_language: Optional[str] = None,
                 api_url: str = "https://androidpublisher.googleapis.com", backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.package, self.http, self.token, self.translation = package, http, token, translation_language
        self.api_url = api_url.rstrip("/")

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        params = {"maxResults": str(PAGE_SIZE), **({"token": cursor} if cursor else {}),
                  **({"translationLanguage": self.translation} if self.translation else {})}
        url = f"{self.api_url}/androidpublisher/v3/applications/{quote(self.package)}/reviews?{urlencode(params)}"
        response = self.http.get(url, self.token.header())
        if response.status == 401:  # revoked or expired early
            response = self.http.get(url, self.token.header(renew=True))
        answer = json_body(response, f"google_play {self.package}")
        reviews = answer.get("reviews", []) if isinstance(answer, dict) else None
        if not isinstance(reviews, list):
            raise SourceUnavailable(f"google_play {self.package}: the answer has no reviews list")
        return Listing([entry for raw in reviews for entry in self._entries(raw)],
                       (answer.get("tokenPagination") or {}).get("nextPageToken"))

    def _entries(self, raw: Any) -> list[tuple[Optional[Mark], Item]]:
        """The review, and the developer's reply as the brand's own post in its thread: that is what answers the
        review's case (triage/cases.py), like a brand reply on any other channel. The mark is the later of the two
        changes, so a reply written after the review was read is still found (the review itself is not sent again)."""
        comments = raw.get("comments") if isinstance(raw, dict) else None
        user = _comment(comments, "userComment")
        modified = _seconds(user.get("lastModified"))
        review_id = raw.get("reviewId") if isinstance(raw, dict) else None
        if not isinstance(review_id, str) or not review_id or modified is None:
            return [(modified, Malformed(f"google_play:{self.package}",
                                         "review has no reviewId or userComment.lastModified", json.dumps(raw).encode()))]
        title, tab, body = (user.get("text") or "").partition("\t")  # "title\tbody"; "\tbody" without a title
        title, body = (title, body) if tab else ("", title)
        if not body.strip():
            return [(modified, None)]
        developer = _comment(comments, "developerComment")
        replied = _seconds(developer.get("lastModified"))
        reply = {"text": developer.get("text"), "at": epoch_mark(replied)} if developer else None
        language = (user.get("reviewerLanguage") or "").replace("-", "_").split("_")[0].lower()
        review = self.post_id(review_id)
        post = {
            "id": review, "source": self.kind, "text": body.strip(), "title": title.strip() or None,
            "url": "https://play.google.com/store/apps/details?" + urlencode({"id": self.package, "reviewId": review_id}),
            "author": {"name": raw.get("authorName") or None, "is_brand": False},
            "created_at": epoch_mark(modified),
            "edited_at": epoch_mark(modified) if replied is not None and modified > replied else None,
            "lang_hint": language if 2 <= len(language) <= 3 and language.isalpha() else None,
            "thread_id": review,
            "metadata": {"package": self.package, "rating": user.get("starRating"),
                         "app_version": user.get("appVersionName"), "app_version_code": user.get("appVersionCode"),
                         "device": user.get("device"), "android_os_version": user.get("androidOsVersion"),
                         "thumbs_up": user.get("thumbsUpCount"), "original_text": user.get("originalText"),
                         "developer_reply": reply, "answered_at": reply["at"] if reply else None,
                         "reply_state": "answered" if reply else "unanswered"}}
        if reply is None or replied is None or not (reply["text"] or "").strip():
            return [(modified, post)]
        answer = {"id": f"{review}/reply", "source": self.kind, "text": reply["text"].strip(),
                  "author": {"name": "developer", "is_brand": True, "role": "developer"}, "created_at": reply["at"],
                  "thread_id": review, "reply_to_id": review, "metadata": {"package": self.package}}
        return [(max(replied, modified), answer), (max(replied, modified), post)]


def _comment(comments: Any, kind: str) -> dict[str, Any]:
    """The first `{kind: {...}}` of a review's comments list, or {}."""
    found = next((c[kind] for c in comments or [] if isinstance(c, dict) and isinstance(c.get(kind), dict)), None)
    return found or {}


def _seconds(timestamp: Any) -> Optional[int]:
    """A protobuf Timestamp in JSON (`{"seconds": "1762333200", "nanos": 0}`: seconds as a string) as an int."""
    seconds = timestamp.get("seconds") if isinstance(timestamp, dict) else None
    return int(seconds) if isinstance(seconds, (int, str)) and str(seconds).isdigit() else None

