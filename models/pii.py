"""Personal-data detection as a spaCy pipeline: the rules of pii_rules plus, optionally, person names.

spaCy gives the rules a Doc with spans, so an installed NER pipeline (person names) and the rule
component combine in one pass and one overlap policy. Without an NER pipeline a blank multilingual
pipeline is used (no German spaCy models exist on PyPI; see the README for installing one).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from models import pii_rules

SPAN_KEY = "pii"
RULES_VERSION = "rules-1"
_PERSON_LABELS = {"PER", "PERSON"}


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


def _without_overlaps(findings: list[pii_rules.Finding]) -> list[pii_rules.Finding]:
    """Keep findings in priority order (their order in the list), dropping any that overlap a kept one."""
    kept: list[pii_rules.Finding] = []
    for kind, start, end in findings:
        if start < end and all(end <= s or start >= e for _, s, e in kept):
            kept.append((kind, start, end))
    return sorted(kept, key=lambda f: f[1])


@Language.factory("triage_pii", default_config={"phone_regions": ["DE", "GB", "US"]})
def make_pii_component(nlp: Language, name: str, phone_regions: list[str]) -> "PiiComponent":
    return PiiComponent(phone_regions)


class PiiComponent:
    """Sets doc.spans['pii'] from the rules and any PERSON/PER entities an earlier NER component found."""

    def __init__(self, phone_regions: list[str]) -> None:
        self.phone_regions = phone_regions

    def __call__(self, doc: Doc) -> Doc:
        findings = pii_rules.find_all(doc.text, self.phone_regions)
        findings += [("person", ent.start_char, ent.end_char) for ent in doc.ents if ent.label_ in _PERSON_LABELS]
        spans = []
        for kind, start, end in _without_overlaps(findings):
            span = doc.char_span(start, end, label=kind, alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.spans[SPAN_KEY] = spans
        return doc


def redact(text: str, spans: list[PiiSpan]) -> str:
    """Replace each span by [TYPE] so the text keeps its meaning without the data."""
    parts, cursor = [], 0
    for span in spans:
        parts += [text[cursor:span.start], f"[{span.type.upper()}]"]
        cursor = span.end
    parts.append(text[cursor:])
    return "".join(parts)


class PiiDetector:
    """Finds personal data in batches of texts and produces the redacted text."""

    def __init__(self, phone_regions: list[str], person_names_model: str | None = None) -> None:
        if person_names_model:
            try:
                nlp = spacy.load(person_names_model, exclude=["parser", "lemmatizer", "textcat"])
            except OSError:
                raise RuntimeError(
                    f"spaCy pipeline '{person_names_model}' (pii.person_names_model) is not installed; "
                    f"install it with: python -m spacy download {person_names_model}") from None
        else:
            nlp = spacy.blank("xx")
        nlp.add_pipe("triage_pii", config={"phone_regions": phone_regions}, last=True)
        self._nlp = nlp
        self.version = f"{RULES_VERSION}+spacy-{version('spacy')}" + (f"+{person_names_model}" if person_names_model else "")

    def detect_many(self, texts: list[str]) -> list[PiiResult]:
        results = []
        for text, doc in zip(texts, self._nlp.pipe(texts)):
            # Offsets come from the rules, not from token boundaries, so redaction removes exactly the value.
            spans = [PiiSpan(s.label_, s.start_char, s.end_char) for s in doc.spans[SPAN_KEY]]
            results.append(PiiResult(spans, redact(text, spans)))
        return results

    def detect(self, text: str) -> PiiResult:
        return self.detect_many([text])[0]
