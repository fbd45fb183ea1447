"""PII rules: what an agent or a data-protection officer would check on real-looking posts."""
from __future__ import annotations

import json
import time

import pytest

from models.evaluate import EVAL_DIR, REFERENCE, pii_results
from models.pii import PiiDetector, _without_overlaps, ner_pieces, normalise
from models.pii_rules import PHONE_CANDIDATE, PHONE_TRIES_PER_TEXT, _PhoneJudge, iban_is_valid, luhn_is_valid
from core.config import load_settings


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector(["DE", "AT", "CH", "GB", "US"])


FOUND = [
    # (text, type, the exact value that must be found)
    ("Schreibt mir an klaus.meier@example.de bitte", "email", "klaus.meier@example.de"),
    ("Meine IBAN: DE89 3704 0044 0532 0130 00 danke", "iban", "DE89 3704 0044 0532 0130 00"),
    ("iban de89370400440532013000 bitte", "iban", "de89370400440532013000"),
    ("Bank details GB29 NWBK 6016 1331 9268 19 thanks", "iban", "GB29 NWBK 6016 1331 9268 19"),
    ("Karte 4111 1111 1111 1111 doppelt belastet", "card_number", "4111 1111 1111 1111"),
    ("card 5555-5555-5555-4444 charged", "card_number", "5555-5555-5555-4444"),
    ("Ruft mich an: 0171 2345678", "phone", "0171 2345678"),
    ("Festnetz 030/12345678 bis 18 Uhr", "phone", "030/12345678"),
    ("erreichbar unter +49 (0)89 12345678", "phone", "+49 (0)89 12345678"),
    ("call me on +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
    ("my cell is (415) 555-2671", "phone", "(415) 555-2671"),
    ("Neue Adresse: Lindenstraße 42, 50674 Köln", "address", "Lindenstraße 42"),
    ("wohne Berliner Straße 5a", "address", "Berliner Straße 5a"),
    ("Goethestr. 15 in Frankfurt", "address", "Goethestr. 15"),
    ("I live at 221 Baker Street now", "address", "221 Baker Street"),
    ("Neue Adresse: Lindenstraße 42, 50674 Köln", "postcode_city", "50674 Köln"),
    ("London NW1 6XE is the postcode", "postcode_city", "NW1 6XE"),
    ("Washington, DC 20500 office", "postcode_city", "Washington, DC 20500"),
    ("geboren am 14.07.1962 in Bonn", "date_of_birth", "14.07.1962"),
    ("Date of birth 14/07/1962, still not found", "date_of_birth", "14/07/1962"),
    ("Born 3 March 1979 and your form says", "date_of_birth", "3 March 1979"),
    ("Kundennummer 5520391847 bitte prüfen", "customer_number", "5520391847"),
    ("Kd.-Nr. 7788990011", "customer_number", "7788990011"),
    ("Kd.-Nr.. 7788990011", "customer_number", "7788990011"),  # a doubled dot: the sample post that once leaked
    ("Vertragsnummer = 123456789", "contract_number", "123456789"),
    ("customer number: 3321004567", "customer_number", "3321004567"),
    ("Vertragsnummer ist V-2019-883412.", "contract_number", "V-2019-883412"),
    ("contract number CN-2019-883412", "contract_number", "CN-2019-883412"),
    ("Bestellnummer 20261104-55731 nie bestellt", "order_number", "20261104-55731"),
    ("order #A1234567 never arrived", "order_number", "A1234567"),
    ("Ticketnummer 2611-4471-02", "ticket_number", "2611-4471-02"),
    ("case number CS-99812734 still open", "ticket_number", "CS-99812734"),
    # as customers copy them from a letter, in groups; and the UK's bank details, which are no IBAN
    ("Kundennummer 9 412 775 380, bitte prüfen", "customer_number", "9 412 775 380"),
    ("Kundennr 6.0044.91.127 hab ich", "customer_number", "6.0044.91.127"),
    ("Vertragskonto 2093 3144 781, alte Adresse", "customer_number", "2093 3144 781"),
    ("cancel my contract, account 9920448317. now", "customer_number", "9920448317"),
    ("I'm leaving. Account GP90331247. Refund me", "customer_number", "GP90331247"),
    ("refund the £51.98 to sort code 60-83-71 acc 20447719 and", "bank_account", "60-83-71 acc 20447719"),
    ("New sort code 30-96-34, account 11428876, BT", "bank_account", "30-96-34, account 11428876"),
    ("my account (sort code 04-00-75, acc ending 3318)", "bank_account", "04-00-75"),
    ("Buchungscode 2026-774512 storniert?", "order_number", "2026-774512"),
    ("Cancelling. Policy H-88201477. Pro-rata refund", "contract_number", "H-88201477"),
    ("delay repay claim DR-6620915, submitted", "ticket_number", "DR-6620915"),
]


@pytest.mark.parametrize("text,kind,value", FOUND)
def test_finds_personal_data(detector: PiiDetector, text: str, kind: str, value: str) -> None:
    result = detector.detect(text)
    found = {(s.type, text[s.start:s.end]) for s in result.spans}
    assert (kind, value) in found, f"expected {kind} {value!r}, found {found}"
    assert value not in result.text_redacted
    assert f"[{kind.upper()}]" in result.text_redacted


NOT_PERSONAL = [
    "Wir haben 10000 Euro Schaden und 12000 Follower.",
    "Vertrag 2024 läuft aus, Tarif 39,99 EUR.",
    "Am 12.03.2024 um 14:30 war der Ausfall, 3 Stunden lang.",
    "Ping schwankt zwischen 30 und 900 ms",
    "Die beworbenen 1000 Mbit/s habe ich nie gesehen",
    "Order 66 was executed in 2005",
    "Zug ICE 597 hatte 95 Minuten Verspätung",
    "Prices went up by 40% in 2026",
    "Card number 4111 1111 1111 1112 is invalid (bad checksum)",
    "IBAN DE00 3704 0044 0532 0130 00 has a wrong check digit",
    "My account has been down for 3 days, 2 500 customers affected",
    "Kundenkonto seit 2019, 12 Monate Laufzeit",
    "the sort code on the form was wrong again",
    "Kundennummer hab ich nicht, Überweisung 12.500 Euro am 3.4.",
]


@pytest.mark.parametrize("text", NOT_PERSONAL)
def test_no_false_positives(detector: PiiDetector, text: str) -> None:
    result = detector.detect(text)
    assert result.spans == [], [(s.type, text[s.start:s.end]) for s in result.spans]
    assert result.text_redacted == text


def test_checksums() -> None:
    assert iban_is_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_is_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_is_valid("DE89 3704 0044 0532 0130")  # German IBANs have 22 characters
    assert luhn_is_valid("4111111111111111")
    assert not luhn_is_valid("4111111111111112")


def test_result_shape_and_redaction_keep_the_rest(detector: PiiDetector) -> None:
    text = "Hallo, Kundennummer 5520391847, Mail a@b.de. Danke!"
    result = detector.detect(text)
    as_dict = result.as_dict()
    assert as_dict["found"] is True
    assert as_dict["types"] == ["customer_number", "email"]
    assert [(s["start"], s["end"]) for s in as_dict["spans"]] == [(20, 30), (37, 43)]
    assert result.text_redacted == "Hallo, Kundennummer [CUSTOMER_NUMBER], Mail [EMAIL]. Danke!"


def test_missing_ner_pipeline_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="python -m spacy download de_core_news_md"):
        PiiDetector(["DE"], person_names_model="de_core_news_md")


# --- Hardening: hidden values, unvalidated phone numbers, bounded cost -------------------------------

ADVERSARIAL = [json.loads(line)
               for line in (EVAL_DIR / "pii-adversarial.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("row", ADVERSARIAL, ids=[f"{r['group']}-{i}" for i, r in enumerate(ADVERSARIAL)])
def test_adversarial_posts_are_redacted_exactly(detector: PiiDetector, row: dict) -> None:
    """Each annotated value is found with its exact original offsets (the invisible characters inside it
    included), nothing else is found, and no trace of the value is left to search for."""
    text = row["text"]
    result = detector.detect(text)
    assert {(s.type, s.start, s.end) for s in result.spans} == {(g["type"], g["start"], g["end"]) for g in row["spans"]}
    visible = normalise(result.text_redacted).text
    for gold in row["spans"]:
        assert normalise(text[gold["start"]:gold["end"]]).text not in visible
    if not row["spans"]:
        assert result.text_redacted == text


def test_normalised_offsets_point_at_the_original_characters() -> None:
    text = "a\u200bb\x1b[31m１ﬁ٣e\u0301!"
    n = normalise(text)
    assert n.text == "ab1fi3é!"
    origins = [text[n.starts[i]:n.ends[i]] for i in range(len(n.text))]
    assert origins == ["a", "b", "１", "ﬁ", "ﬁ", "٣", "e\u0301", "!"]
    assert n.original_span(0, 3) == (0, text.index("１") + 1)  # "ab1" spans the zero-width space and the escape
    assert normalise("plain ASCII, no copy").starts == list(range(20))


def test_zero_width_and_escapes_inside_values_are_redacted_with_them(detector: PiiDetector) -> None:
    text = "IBAN DE89\u200b3704 0044 0532 0130 00, Mail max\x1b[0m@example.de"
    assert detector.detect(text).text_redacted == "IBAN [IBAN], Mail [EMAIL]"


@pytest.mark.parametrize("text,value", [
    ("call me on +44 7700 900123", "+44 7700 900123"),  # reserved for fiction: libphonenumber says invalid
    ("Telefon 12345678, ab 18 Uhr", "12345678"),
    ("ruf mich unter 0987 654321 an", "0987 654321"),
])
def test_phone_shaped_numbers_are_redacted_without_a_valid_numbering_plan(detector: PiiDetector, text: str,
                                                                         value: str) -> None:
    found = [(s.type, text[s.start:s.end]) for s in detector.detect(text).spans]
    assert found == [("phone", value)]


@pytest.mark.parametrize("text", [
    "Handy seit 12.03.2024 kaputt, Reparatur dauert 14 Tage",
    "Handy 2019-2024 genutzt, jetzt kaputt",
    "Nummer 20261104 steht im Betreff",
    "+1.000.000 followers in one year",
    "Zählerstand 1234567 kWh laut Ablesung",
    "Termin 2026-03-12 10:30, Tel. nicht erreichbar",
    "look at example.com for details",
])
def test_dates_amounts_and_plain_words_near_the_new_rules_stay(detector: PiiDetector, text: str) -> None:
    assert detector.detect(text).spans == []


def test_padding_with_number_lookalikes_cannot_hide_a_phone_number(detector: PiiDetector) -> None:
    """Past PHONE_TRIES_PER_TEXT libphonenumber tries, numbers are judged by shape: redacted, not skipped."""
    padding = "1 1 1 1 1 1 1 1 1 1 1 1 " * (PHONE_TRIES_PER_TEXT // 10)  # no numbering plan has these
    judge = _PhoneJudge(["DE", "AT", "CH", "GB", "US"])
    assert [judge.length(m.group(), False) for m in PHONE_CANDIDATE.finditer(padding)][0] == 0
    assert judge.tries_left <= 0  # the padding alone spends every try
    assert detector.detect(padding + "und 030 1234567").text_redacted.endswith("und [PHONE]")


def test_iban_checks_know_the_registry() -> None:
    assert iban_is_valid("DE89-3704-0044-0532-0130-00")
    assert not iban_is_valid("XX89 3704 0044 0532 0130 00")  # no such IBAN country
    assert not iban_is_valid("DE89 3704 0044 0532 0130 0Ä")


def _worst_cases(length: int) -> dict[str, str]:
    def fill(unit: str) -> str:
        return (unit * (length // len(unit) + 1))[:length]
    return {"emoji": "😀" * length, "letters": "a" * length, "digits": "1" * length, "a@": fill("a@"),
            "spaced digits": fill("1 "), "hyphenated words": fill("Aa-"),
            "keyword and spaces": fill("Ticket" + " " * 99),
            "dotted e-mail": "x@" + fill("a."), "spaced iban": fill("D E 8 9 "), "zero-width": "\u200b" * length,
            "fullwidth digits": "１" * length}


def test_worst_case_texts_at_the_length_limit_are_fast(detector: PiiDetector) -> None:
    """A regression guard for stream heartbeats: 19,000 emoji once took 43 s in spaCy's tokenizer, and
    unbounded patterns were quadratic on hyphenated words or runs of spaces. Measured: about 0.2 s worst."""
    limit = load_settings(environ={}).enrichment.max_text_chars
    for name, text in _worst_cases(limit).items():
        started = time.perf_counter()
        detector.detect(text)
        assert time.perf_counter() - started < 2.0, name


@pytest.fixture(scope="module")
def person_names_pipeline(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A stand-in NER pipeline (an entity ruler) saved like an installed one: no German model is on PyPI."""
    import spacy
    nlp = spacy.blank("xx")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PER", "pattern": [{"LOWER": "max"}, {"LOWER": "muster"}]}])
    path = tmp_path_factory.mktemp("ner") / "persons"
    nlp.to_disk(path)
    return str(path)


def test_person_names_are_found_in_bounded_pieces(person_names_pipeline: str) -> None:
    detector = PiiDetector(["DE"], person_names_model=person_names_pipeline)
    text = "😀" * 5000 + " Hallo, ich bin Max Muster " + "x " * 2000 + "gez. Max Muster, Tel 0171 2345678"
    result = detector.detect(text)
    assert [(s.type, text[s.start:s.end]) for s in result.spans] == [
        ("person", "Max Muster"), ("person", "Max Muster"), ("phone", "0171 2345678")]
    limit = load_settings(environ={}).enrichment.max_text_chars
    for name, worst in _worst_cases(limit).items():
        started = time.perf_counter()
        detector.detect(worst)
        assert time.perf_counter() - started < 2.0, name


def test_ner_pieces_are_bounded_and_keep_their_offsets() -> None:
    text = "Wort " * 1000 + "y" * 450 + " 😀😀 Max"
    pieces = list(ner_pieces(text, size=300, max_token=100))
    assert all(text[offset:offset + len(piece)] == piece for offset, piece in pieces)
    assert all(len(piece) <= 300 and max(map(len, piece.split())) <= 100 for _, piece in pieces)
    covered = {i for offset, piece in pieces for i in range(offset, offset + len(piece))}
    assert all(i in covered for i, ch in enumerate(text) if ch.isalpha())  # only letterless pieces are left out
    assert all(any(ch.isalpha() for ch in piece) for _, piece in pieces)


def test_eval_reports_the_adversarial_set_on_its_own_lines(detector: PiiDetector) -> None:
    scores = {r.name: r.score for r in pii_results(detector)}
    assert list(scores) == ["pii-recall", "pii-precision", "pii-adversarial-recall", "pii-adversarial-precision",
                            "pii-adversarial-phones-recall", "pii-adversarial-phones-precision",
                            "pii-adversarial-holdout-recall", "pii-adversarial-holdout-precision"]
    assert all(score >= REFERENCE[name][0] for name, score in scores.items()), scores


def test_overlaps_among_many_findings_are_resolved_fast() -> None:
    """Titles are bounded only by the record size (1 MiB): tens of thousands of findings must not be
    compared pairwise (the earlier all-pairs check took minutes on half a million characters)."""
    findings = [("phone", 3 * i, 3 * i + 2) for i in range(60_000)]
    findings += [("address", 3 * i + 1, 3 * i + 4) for i in range(60_000)]  # each overlaps a phone: dropped
    started = time.perf_counter()
    kept = _without_overlaps(findings)
    assert time.perf_counter() - started < 2.0
    assert kept == sorted(findings[:60_000], key=lambda f: f[1])
