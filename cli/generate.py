"""`triage generate`: many realistic posts (the Post schema) made from the samples, for benchmarks and scale tests.

Why not repeat the samples: a queue, a case page and the cases index behave like production only when the data has
what production has. So the posts vary the sample texts (both languages, every source), come in threads of several
posts on the channels that have threads, with the brand's answers from brand accounts (so cases get answered,
some late), from authors who write again (Zipf-like: a few write a lot; thread-less channels such as reviews then
form author-grouped cases), spread over weeks, and a share carries personal data (phone numbers, e-mail
addresses, IBANs) for the detectors and the redaction.

Deterministic for a seed (the same file byte for byte) and streaming: a thread is written as soon as it is made,
so memory stays constant whatever `--n`. Posts come roughly in time order; a thread's later posts follow its first
post in the file, as a connector that reads a thread at once delivers them.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional, TextIO

from cli.bench import read_posts
from triage.routing import is_brand

THREADED_SOURCES = frozenset({"twitter", "facebook", "forum", "mastodon", "reddit", "youtube"})
LANGUAGE_TAGGED = frozenset({"twitter", "mastodon"})  # their APIs say the post's language (X `lang`, Mastodon `language`)
BRAND_HANDLES = {"twitter": "TelcoHilfe", "facebook": "Telco Service", "forum": "telco_support",
                 "mastodon": "telco_hilft", "reddit": "TelcoHilfe", "youtube": "TelcoOfficial"}
BRAND_REPLIES = {
    "de": ("Das tut uns leid! Schreib uns bitte eine Direktnachricht, dann schauen wir uns das sofort an.",
           "Danke für deine Geduld. Die Störung in deinem Gebiet ist behoben, melde dich gern, falls nicht.",
           "Hallo! Wir haben deine Anfrage weitergegeben, die Kolleg:innen melden sich heute noch bei dir.",
           "Danke für das Lob, das geben wir gern ans Team weiter!"),
    "en": ("Sorry to hear that! Please send us a direct message and we'll look into it right away.",
           "Thanks for your patience. The outage in your area is fixed; let us know if it isn't for you.",
           "Hi! We've passed this on, the team will get back to you today.",
           "Thanks for the kind words, we'll pass them on to the team!"),
}
FOLLOW_UPS = {
    "de": ("Hallo?? Immer noch keine Antwort.", "Gibt es schon was Neues?", "Hab euch eine DM geschickt.",
           "Danke, jetzt geht es wieder!", "Das hilft mir leider nicht weiter."),
    "en": ("Hello?? Still no answer.", "Any update on this?", "Sent you a DM.", "Thanks, it works again now!",
           "That doesn't help me, sorry."),
}
PII_LINES = {
    "de": ("Ruft mich an unter {phone}.", "Meine Mail: {email}", "Bitte auf IBAN {iban} erstatten."),
    "en": ("Call me back on {phone}.", "Email me at {email}", "Please refund to IBAN {iban}."),
}
EDITS = (lambda t: t, lambda t: t + " 😡", lambda t: t + "!!", lambda t: t.lower(), lambda t: "@service " + t,
         lambda t: t + " #kundenservice", lambda t: t.replace(" ", "  ", 1), lambda t: t.rstrip(".!?") + "...")
FIRST_NAMES = ("anna", "ben", "deniz", "elif", "finn", "ivan", "jonas", "lea", "mia", "noah", "robin", "sam", "tom",
               "uwe", "yusuf", "zoe")


@dataclass(frozen=True)
class Options:
    n: int
    seed: int = 7
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    days: float = 28
    thread_share: float = 0.35  # of the posts that open something on a threaded channel
    answer_share: float = 0.7  # of threads the brand answers
    pii_share: float = 0.06


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iban(rng: random.Random) -> str:
    """A German IBAN with valid check digits (ISO 13616: mod 97), so detectors see a real-looking one."""
    bban = f"{rng.randrange(10**7, 10**8)}{rng.randrange(10**9, 10**10)}"
    check = 98 - int(bban + "131400") % 97  # D=13, E=14, then "00"
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


class Generator:
    """Yields posts for `Options`; every random choice comes from one seeded Random, in a fixed order."""

    def __init__(self, samples: list[dict[str, Any]], options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        customers = [p for p in samples if not (p.get("author") or {}).get("is_brand")]
        self.by_language: dict[str, list[dict[str, Any]]] = {}
        for post in customers:
            self.by_language.setdefault(_language(post), []).append(post)
        self.samples = customers
        self.authors = max(50, options.n // 6)
        self.next_id = 0

    def posts(self) -> Iterator[dict[str, Any]]:
        made, opts = 0, self.options
        span = timedelta(days=opts.days)
        while made < opts.n:
            at = opts.start + span * ((made + self.rng.random()) / opts.n)
            for post in self._conversation(at):
                if made == opts.n:
                    return
                made += 1
                yield post

    def _conversation(self, at: datetime) -> list[dict[str, Any]]:
        opts, rng = self.options, self.rng
        sample = rng.choice(self.samples)
        source, language = sample["source"], _language(sample)
        author = self._author(source)
        first = self._post(sample, source, author, at, self._text(sample["text"], language))
        if source not in THREADED_SOURCES or rng.random() >= opts.thread_share:
            return [first]
        first["thread_id"] = first["id"]
        thread, previous, when = [first], first, at
        answered = rng.random() < opts.answer_share
        for _ in range(rng.randint(1, 4)):
            when += timedelta(minutes=rng.lognormvariate(4.0, 1.3))  # median about an hour, some days
            if answered and not is_brand(previous) and rng.random() < 0.5:
                text = rng.choice(BRAND_REPLIES[language])
                post = self._post(sample, source, self._brand(source), when, text)
            else:
                writer = author if rng.random() < 0.8 else self._author(source)
                post = self._post(sample, source, writer, when, self._follow_up(language))
            post.update(thread_id=first["id"], reply_to_id=previous["id"])
            if sample.get("title"):
                post["title"] = "Re: " + sample["title"].removeprefix("Re: ")
            thread.append(post)
            previous = post
        return thread

    def _post(self, sample: dict[str, Any], source: str, author: dict[str, Any], at: datetime,
              text: str) -> dict[str, Any]:
        self.next_id += 1
        native = str(10**12 + self.options.seed * 10**9 + self.next_id)
        host = (sample.get("url") or "https://social.example/p/").split("/p/")[0]
        post: dict[str, Any] = {"schema_version": 1, "id": f"{source}:{native}", "source": source, "text": text,
                                "created_at": _iso(at), "author": author, "url": f"{host}/p/{native}"}
        if source in LANGUAGE_TAGGED:
            post["lang_hint"] = _language(sample)
        if sample.get("title"):
            post["title"] = sample["title"]
        post["metadata"] = {**(sample.get("metadata") or {}), "sample_id": sample["id"]}
        return post

    def _author(self, source: str) -> dict[str, Any]:
        """A quarter of the posts come from the regulars (one author in twenty, a few dozen posts each over four
        weeks), the rest from anyone (a handful each)."""
        regulars = self.authors // 20
        index = self.rng.randrange(regulars) if self.rng.random() < 0.25 else self.rng.randrange(self.authors)
        name = FIRST_NAMES[index % len(FIRST_NAMES)]
        followers = int(self.rng.lognormvariate(4.5, 1.8))
        author = {"id": f"u{index}", "handle": f"{name}_{index}", "followers": followers}
        return author if source in THREADED_SOURCES else {"id": f"u{index}", "handle": f"{name}_{index}"}

    def _brand(self, source: str) -> dict[str, Any]:
        handle = BRAND_HANDLES[source]
        return {"id": f"brand-{source}", "handle": handle, "is_brand": True, "role": "staff"}

    def _text(self, text: str, language: str) -> str:
        rng = self.rng
        text = rng.choice(EDITS)(text)
        if rng.random() < 0.15:  # a longer post: two thoughts of the same language
            text += " " + rng.choice(self.by_language[language])["text"]
        if rng.random() < self.options.pii_share:
            line = rng.choice(PII_LINES[language])
            text += " " + line.format(phone=f"0151 {rng.randrange(10**7, 10**8)}", iban=_iban(rng),
                                      email=f"{rng.choice(FIRST_NAMES)}.{rng.randrange(1000)}@mail.example")
        return text

    def _follow_up(self, language: str) -> str:
        if self.rng.random() < 0.6:
            return self.rng.choice(FOLLOW_UPS[language])
        return self._text(self.rng.choice(self.by_language[language])["text"], language)


def _language(post: dict[str, Any]) -> str:
    written = (post.get("metadata") or {}).get("written_language") or post.get("lang_hint") or "en"
    return written if written in BRAND_REPLIES else "en"


def write(samples: str, options: Options, out: TextIO, progress: Optional[TextIO] = sys.stderr) -> int:
    """Write `options.n` posts as JSONL to `out`; a progress bar on `progress` (None: quiet). Returns the count."""
    from tqdm import tqdm
    generator = Generator(read_posts(samples), options)
    count = 0
    with tqdm(total=options.n, unit=" posts", file=progress, disable=progress is None, mininterval=1) as bar:
        for post in generator.posts():
            out.write(json.dumps(post, ensure_ascii=False) + "\n")
            count += 1
            bar.update(1)
    return count
