"""PII rules: what an agent or a data-protection officer would check on real-looking posts."""
from __future__ import annotations

import pytest

from models.pii import PiiDetector
from models.pii_rules import iban_is_valid, luhn_is_valid


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
    ("customer number: 3321004567", "customer_number", "3321004567"),
    ("Vertragsnummer ist V-2019-883412.", "contract_number", "V-2019-883412"),
    ("contract number CN-2019-883412", "contract_number", "CN-2019-883412"),
    ("Bestellnummer 20261104-55731 nie bestellt", "order_number", "20261104-55731"),
    ("order #A1234567 never arrived", "order_number", "A1234567"),
    ("Ticketnummer 2611-4471-02", "ticket_number", "2611-4471-02"),
    ("case number CS-99812734 still open", "ticket_number", "CS-99812734"),
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
