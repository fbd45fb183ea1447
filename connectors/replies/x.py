"""X API v2 replies: `POST /2/tweets` with `reply.in_reply_to_tweet_id`, direct messages through
`POST /2/dm_conversations/with/:participant_id/messages`, both with the account's OAuth 2 user-context token
(an app-only bearer token may read but not post). A published reply is found again by a recent search of the
conversation from our account (`conversation_id:ID from:ACCOUNT`, or `in_reply_to_tweet_id:ID` for a case grouped
by author), a direct message in the conversation's events.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote, urlencode

from connectors.config import XConfig
from connectors.replies.base import Recipient, ReplyClient, ReplyError, Sent, Target, same_text


class XReplies(ReplyClient):
    kind = "twitter"
    direct_messages = True

    config: XConfig

    @property
    def api_url(self) -> str:
        return self.config.api_url.rstrip("/")

    def reply(self, target: Target, text: str, key: str) -> Sent:
        body = {"text": text, "reply": {"in_reply_to_tweet_id": target.native(self.kind)}}
        data = (self.post(f"{self.api_url}/2/tweets", "x reply", self.bearer(), body=body) or {}).get("data") or {}
        if not data.get("id"):
            raise ReplyError("x reply: the answer has no tweet id")
        return Sent(str(data["id"]), f"twitter:{data['id']}")

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        thread = target.thread_native(self.kind)  # a case grouped by author has no X thread: ask for direct replies
        where = f"conversation_id:{thread}" if thread else f"in_reply_to_tweet_id:{target.native(self.kind)}"
        params = {"query": f"{where} from:{self.account.lstrip('@')}", "max_results": "100",
                  "tweet.fields": "conversation_id,referenced_tweets"}
        answer = self.get(f"{self.api_url}/2/tweets/search/recent?{urlencode(params)}", "x reply lookup", self.bearer())
        for tweet in (answer or {}).get("data") or []:
            if isinstance(tweet, dict) and tweet.get("id") and same_text(str(tweet.get("text") or ""), text):
                return Sent(str(tweet["id"]), f"twitter:{tweet['id']}")
        return None

    def direct(self, target: Target, recipient: Recipient, text: str, key: str) -> Sent:
        answer = self.post(self._conversation(recipient, "messages"), "x direct message", self.bearer(),
                           body={"text": text})
        data = (answer or {}).get("data") or {}
        return Sent(str(data.get("dm_event_id") or ""), None)

    def find_direct(self, target: Target, recipient: Recipient, text: str) -> Optional[Sent]:
        params = urlencode({"event_types": "MessageCreate", "dm_event.fields": "id,text,sender_id,created_at",
                            "max_results": "100"})
        answer = self.get(f"{self._conversation(recipient, 'dm_events')}?{params}", "x direct message lookup",
                          self.bearer())
        for event in (answer or {}).get("data") or []:
            if isinstance(event, dict) and same_text(str(event.get("text") or ""), text):
                return Sent(str(event.get("id") or ""), None)
        return None

    def _conversation(self, recipient: Recipient, what: str) -> str:
        if not recipient.id:
            raise ReplyError("x direct message: the customer's user id is not known (no private post document)")
        return f"{self.api_url}/2/dm_conversations/with/{quote(recipient.id)}/{what}"
