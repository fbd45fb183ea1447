"""Personal-data detection: the rules of pii_rules plus, optionally, person names from a spaCy NER pipeline.

Detection runs on a normalised copy of the text (see `normalise`) so that invisible characters, terminal
escapes and look-alike digits cannot hide a value from the rules; every span found there is mapped back
to the original text, and redaction replaces the original characters, the invisible ones included.

The rules see the whole text in one pass (an IBAN or a phone number must not be cut in two). spaCy is
only used when a person-names pipeline is configured, and then on bounded pieces: its tokenizer is
quadratic in the length of a token without spaces (19,000 emoji took 43 s), long enough to stop a
stream worker's heartbeats. No German spaCy models exist on PyPI; see the README for installing one.
"""
from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Iterator

from models import pii_rules

RULES_VERSION = "rules-2"
_PERSON_LABELS = {"PER", "PERSON"}
NER_PIECE_CHARS = 2000  # spaCy sees pieces of at most this many characters, cut at whitespace
NER_MAX_TOKEN_CHARS = 100  # longer runs without whitespace are cut hard; no name is that long
# ANSI/VT100 escape sequences (colours, cursor moves, OSC titles) are removed whole, not just their ESC:
# "max\x1b[0m@example.de" must read "max@example.de", not "max[0m@example.de".
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]{0,256}(?:\x07|\x1b\\)?|[@-Z\\-_])")
_KEPT_CONTROLS = {"\n", "\t", "\r"}  # line structure, which the rules' \s and \n rely on
_NEEDS_NORMALISING = re.compile(r"[^\t\n\r\x20-\x7e]")


@dataclass(frozen=True)
class PiiSpan:
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class PiiResult:
    spans: list[PiiSpan]
    text_redacted: str

    def as_dict(self) -> dict[str, object]:
        return {
            "found": bool(self.spans),
            "types": sorted({s.type for s in self.spans}),
            "spans": [{"type": s.type, "start": s.start, "end": s.end} for s in self.spans],
        }


@dataclass(frozen=True)
class Normalised:
    """The text the detectors see, with each of its characters' origin in the original text."""
    text: str
    starts: list[int]  # original index of the character (cluster) each character came from
    ends: list[int]  # original index just after it

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters behind text[start:end], including invisible ones between them."""
        return self.starts[start], self.ends[end - 1]


def normalise(text: str) -> Normalised:
    """Remove format (Cf: zero-width, bidi, soft hyphen) and control characters and ANSI escapes, apply
    NFKC (fullwidth and other compatibility forms) and write every decimal digit as ASCII (NFKC leaves
    Arabic-Indic and other scripts' digits alone). Done character by character because NFKC may turn
    one character into several ("ﬁ" -> "fi"), and the offset map must stay exact."""
    if not _NEEDS_NORMALISING.search(text):
        offsets = list(range(len(text)))
        return Normalised(text, offsets, [i + 1 for i in offsets])
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for start, end in _clusters(text):
        for char in _fold(text[start:end]):
            chars.append(char)
            starts.append(start)
            ends.append(end)
    return Normalised("".join(chars), starts, ends)


def _clusters(text: str) -> Iterator[tuple[int, int]]:
    """Each kept character with the combining marks that follow it (so NFKC can compose "a" + U+0308 into
    "ä"), skipping ANSI escape sequences and invisible characters."""
    i = 0
    while i < len(text):
        escape = _ANSI_ESCAPE.match(text, i) if text[i] == "\x1b" else None
        if escape or _invisible(text[i]):
            i = escape.end() if escape else i + 1
            continue
        end = i + 1
        while end < len(text) and unicodedata.category(text[end]).startswith("M"):
            end += 1
        yield i, end
        i = end


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "Cf" or (category == "Cc" and char not in _KEPT_CONTROLS)


def _fold(cluster: str) -> str:
    """NFKC, then ASCII digits for any script's decimal digits ("٣" -> "3"). Marks NFKC could not compose
    with an ASCII base are decoration ("0̲1̲7̲1̲", "D̶E̶8̶9̶" from fancy-text generators) and are dropped;
    on other scripts' letters they carry meaning and stay."""
    folded = unicodedata.normalize("NFKC", cluster)
    if folded.isascii():
        return folded
    if folded[0].isascii():
        folded = folded[0] + "".join(c for c in folded[1:] if not unicodedata.category(c).startswith("M"))
    return "".join(str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in folded)


def _without_overlaps(findings: list[pii_rules.Finding]) -> list[pii_rules.Finding]:
    """Keep findings in priority order (their order in the list), dropping any that overlap a kept one.
    The kept ones stay sorted and disjoint, so each check looks at two neighbours only: a title of a
    megabyte can hold tens of thousands of findings, and comparing each with all took minutes."""
    kept: list[pii_rules.Finding] = []
    starts: list[int] = []
    for kind, start, end in findings:
        i = bisect.bisect_right(starts, start)
        if start < end and (i == 0 or kept[i - 1][2] <= start) and (i == len(kept) or kept[i][1] >= end):
            kept.insert(i, (kind, start, end))
            starts.insert(i, start)
    return kept


def redact(text: str, spans: list[PiiSpan]) -> str:
    """Replace each span by [TYPE] so the text keeps its meaning without the data."""
    parts, cursor = [], 0
    for span in spans:
        parts += [text[cursor:span.start], f"[{span.type.upper()}]"]
        cursor = span.end
    parts.append(text[cursor:])
    return "".join(parts)


def ner_pieces(text: str, size: int = NER_PIECE_CHARS,
               max_token: int = NER_MAX_TOKEN_CHARS) -> Iterator[tuple[int, str]]:
    """(offset, piece) pieces of the text for spaCy, each at most `size` characters and without a run of
    more than `max_token` non-space characters, so tokenizing costs linear time whatever the text.
    Pieces without a letter are left out: they cannot hold a name."""
    cursor = 0
    for run in re.finditer(rf"\S{{{max_token + 1},}}", text):
        yield from _at_whitespace(text, cursor, run.start(), size)
        yield from ((s, text[s:s + max_token]) for s in range(run.start(), run.end(), max_token)
                    if _has_letter(text[s:s + max_token]))
        cursor = run.end()
    yield from _at_whitespace(text, cursor, len(text), size)


def _at_whitespace(text: str, start: int, end: int, size: int) -> Iterator[tuple[int, str]]:
    """text[start:end] in pieces of at most `size` characters, each cut after the last whitespace before
    the limit (no run here is longer than max_token < size, so one is at most max_token back)."""
    while start < end:
        cut = end
        if end - start > size:
            cut = next((k for k in range(start + size - 1, start, -1) if text[k].isspace()), start + size - 1) + 1
        if _has_letter(text[start:cut]):
            yield start, text[start:cut]
        start = cut


def _has_letter(piece: str) -> bool:
    return any(char.isalpha() for char in piece)


class PiiDetector:
    """Finds personal data in batches of texts and produces the redacted text."""

    def __init__(self, phone_regions: list[str], person_names_model: str | None = None) -> None:
        self.phone_regions = phone_regions
        self._ner = _load_person_names(person_names_model) if person_names_model else None
        self.version = RULES_VERSION + (f"+spacy-{version('spacy')}+{person_names_model}" if person_names_model else "")

    def detect_many(self, texts: list[str]) -> list[PiiResult]:
        normalised = [normalise(text) for text in texts]
        persons = self._persons([n.text for n in normalised])
        return [self._result(text, n, found) for text, n, found in zip(texts, normalised, persons)]

    def detect(self, text: str) -> PiiResult:
        return self.detect_many([text])[0]

    def _result(self, text: str, normalised: Normalised, persons: list[pii_rules.Finding]) -> PiiResult:
        """Rules first (most specific), then names; spans mapped back to the original text for redaction."""
        findings = _without_overlaps(pii_rules.find_all(normalised.text, self.phone_regions) + persons)
        spans = [PiiSpan(kind, *normalised.original_span(start, end)) for kind, start, end in findings]
        return PiiResult(spans, redact(text, spans))

    def _persons(self, texts: list[str]) -> list[list[pii_rules.Finding]]:
        """PERSON/PER entities per text, found piece by piece (see ner_pieces) in one spaCy batch."""
        found: list[list[pii_rules.Finding]] = [[] for _ in texts]
        if self._ner is None:
            return found
        pieces = [(i, offset, piece) for i, text in enumerate(texts) for offset, piece in ner_pieces(text)]
        for (i, offset, _), doc in zip(pieces, self._ner.pipe(piece for _, _, piece in pieces)):
            found[i] += [("person", offset + e.start_char, offset + e.end_char)
                         for e in doc.ents if e.label_ in _PERSON_LABELS]
        return found


def _load_person_names(model: str) -> Any:
    """The installed spaCy pipeline for person names (imported here: spaCy takes seconds to import and is
    not needed without one)."""
    import spacy
    try:
        return spacy.load(model, exclude=["parser", "lemmatizer", "textcat"])
    except OSError:
        raise RuntimeError(f"spaCy pipeline '{model}' (pii.person_names_model) is not installed; "
                           f"install it with: python -m spacy download {model}") from None
