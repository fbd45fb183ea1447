"""Rules that find personal data in German and English posts, each with a validator.

A regular expression alone over-matches (every long number looks like a phone number), so every
rule confirms its candidates: IBANs by their ISO 13616 length and mod-97 checksum, card numbers by
the Luhn checksum, phone numbers by libphonenumber's numbering plans, customer/contract/order/ticket
numbers only right after their keyword. Each finder returns (type, start, end) character offsets.
"""
from __future__ import annotations

import re
from typing import Iterator

import phonenumbers

Finding = tuple[str, int, int]

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# ISO 13616 lengths for the countries customers here bank with; others fall back to the checksum.
IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27, "GB": 22,
    "IE": 22, "IT": 27, "LI": 21, "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "SE": 24, "TR": 26,
}
IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}\b")
CARD = re.compile(r"(?<![\d-])[3-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
PHONE_CANDIDATE = re.compile(r"(?<![\w+/.-])(?:\+|00)?\(?\d[\d ()/.-]{5,22}\d(?![\w/-])")
DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")

_MONTHS = (r"Januar|Februar|März|Maerz|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember|"
           r"January|February|March|May|June|July|October|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Okt|Nov|Dez|Dec")
_DATE = (rf"\d{{1,2}}\.\s?\d{{1,2}}\.\s?(?:19|20)?\d{{2}}|\d{{1,2}}/\d{{1,2}}/(?:19|20)?\d{{2}}|(?:19|20)\d{{2}}-\d{{2}}-\d{{2}}"
         rf"|\d{{1,2}}\.?\s(?:{_MONTHS})\.?\s(?:19|20)\d{{2}}|(?:{_MONTHS})\.?\s\d{{1,2}}(?:st|nd|rd|th)?,?\s(?:19|20)\d{{2}}")
DATE_OF_BIRTH = re.compile(
    rf"(?:geboren|geb\.|Geburtsdatum|Geburtstag|Geb\.-?Datum|born|birthday|date of birth|d\.o\.b\.|DOB)"
    rf"[^\d\n]{{0,25}}?(?P<value>{_DATE})", re.IGNORECASE)

_STREET_SUFFIX_DE = r"(?:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|chaussee|pfad|ufer|kai)"
_STREET_WORD_DE = r"(?:Straße|Strasse|Str\.|Weg|Gasse|Allee|Platz|Ring|Damm|Chaussee|Ufer)"
_HOUSE_NUMBER = r"\s?\d{1,4}(?:\s?[a-zA-Z]\b)?(?:\s?[-/]\s?\d{1,4})?"
ADDRESS = re.compile(
    rf"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜa-zäöüß]+)*{_STREET_SUFFIX_DE}{_HOUSE_NUMBER}"
    rf"|\b(?:[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*\s){{1,2}}{_STREET_WORD_DE}{_HOUSE_NUMBER}"
    rf"|\b(?:[A-ZÄÖÜ][a-zäöüß]+-)+{_STREET_WORD_DE}{_HOUSE_NUMBER}"
    rf"|\b\d{{1,5}}[a-zA-Z]?\s(?:[A-Z][a-z]+\s){{1,3}}"
    rf"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|Close|Crescent|Terrace|Square|Gardens|Parkway|Pkwy)\b\.?")

# Words that follow five-digit numbers but are not towns ("10000 Euro", "12000 Follower").
_NOT_A_TOWN = {
    "euro", "eur", "dollar", "pfund", "franken", "kunden", "mal", "minuten", "stunden", "tage", "tagen", "wochen",
    "monate", "monaten", "jahre", "jahren", "follower", "mbit", "gb", "mb", "punkte", "menschen", "leute", "nutzer",
    "stück", "seiten", "kilometer", "meter", "zeichen", "downloads", "views", "likes", "abonnenten", "fans",
    "beschwerden", "anfragen", "tickets", "bestellungen", "haushalte", "anschlüsse", "mitarbeiter", "einwohner",
    "people", "users", "customers", "followers", "miles", "points", "times", "days", "years", "hours", "minutes",
}
POSTCODE_CITY_DE = re.compile(r"\b(?:D-)?(?!00)\d{5}\s(?P<town>[A-ZÄÖÜ][a-zäöüß]+)(?:[\s-](?:am|an der|im|bei|[A-ZÄÖÜ][a-zäöüß]+))?\b")
POSTCODE_UK = re.compile(r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)\s?\d[A-Z]{2}\b")
_US_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
              "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC")
POSTCODE_US = re.compile(rf"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,\s(?:{_US_STATES})\s\d{{5}}(?:-\d{{4}})?\b")

# Reference numbers count as personal data only right after a keyword that says what they are.
REFERENCE_KEYWORDS = {
    "customer_number": r"Kundennummer|Kunden-?Nr\.?|Kundennr\.?|Kd\.?-?Nr\.?|Kunden-?ID|customer (?:number|no\.?|id|#)"
                       r"|account (?:number|no\.?|id|#)|acct\.? (?:no\.?|#)",
    "contract_number": r"Vertragsnummer|Vertrags-?Nr\.?|Vertragsnr\.?|Vertrag|Versicherungsnummer|Policennummer"
                       r"|contract (?:number|no\.?|id|#)|contract|policy (?:number|no\.?|#)",
    "order_number": r"Bestellnummer|Bestell-?Nr\.?|Bestellung|Auftragsnummer|Auftrags-?Nr\.?|Auftrag|Rechnungsnummer"
                    r"|Rechnungs-?Nr\.?|Sendungsnummer|Sendungs-?Nr\.?|order (?:number|no\.?|id|#)|order|invoice (?:number|no\.?|#)"
                    r"|tracking (?:number|no\.?|#)",
    "ticket_number": r"Ticketnummer|Ticket-?Nr\.?|Ticket|Vorgangsnummer|Vorgangs-?Nr\.?|Vorgang|Fallnummer|Störungsnummer"
                     r"|Referenznummer|Aktenzeichen|case (?:number|no\.?|id|#)|case|ticket (?:number|no\.?|id|#)"
                     r"|reference (?:number|no\.?|#)|ref\.? (?:no\.?|#)",
}
_REFERENCE_VALUE = r"(?P<value>(?=(?:[A-Za-z/-]*\d){5})[A-Za-z0-9][A-Za-z0-9/-]{3,30}[A-Za-z0-9])"
_REFERENCE_GLUE = r"(?:\s*(?:[:#]|ist|lautet|is|was|wäre|war|lautet:|Nr\.?|no\.?)\s*|\s+){1,3}"
REFERENCE_NUMBERS = {
    kind: re.compile(rf"\b(?:{keywords}){_REFERENCE_GLUE}{_REFERENCE_VALUE}(?![\w-])", re.IGNORECASE)
    for kind, keywords in REFERENCE_KEYWORDS.items()
}


def iban_is_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "").upper()
    expected = IBAN_LENGTHS.get(iban[:2])
    if (expected and len(iban) != expected) or not 15 <= len(iban) <= 34:
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def luhn_is_valid(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    checksum = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        checksum += digit
    return 13 <= len(digits) <= 19 and checksum % 10 == 0


def find_emails(text: str) -> Iterator[Finding]:
    for m in EMAIL.finditer(text):
        yield "email", m.start(), m.end()


def find_ibans(text: str) -> Iterator[Finding]:
    for m in IBAN.finditer(text):
        # The pattern may run into the next word ("DE89... bitte"); try shorter endings too.
        candidate = m.group()
        while candidate:
            if iban_is_valid(candidate):
                yield "iban", m.start(), m.start() + len(candidate)
                break
            candidate = candidate[:-1].rstrip()
            if len(candidate.replace(" ", "")) < 15:
                break


def find_card_numbers(text: str) -> Iterator[Finding]:
    for m in CARD.finditer(text):
        if luhn_is_valid(m.group()):
            yield "card_number", m.start(), m.end()


def _valid_phone(candidate: str, regions: list[str]) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15 or DATE_LIKE.match(candidate.strip()):
        return False
    international = candidate.startswith(("+", "00"))
    for region in (["ZZ"] if international else regions):
        try:
            number = phonenumbers.parse(candidate if not candidate.startswith("00") else "+" + candidate[2:], region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def find_phones(text: str, regions: list[str]) -> Iterator[Finding]:
    for m in PHONE_CANDIDATE.finditer(text):
        # A candidate may swallow a following number ("0171 1234567 ab 18 Uhr"): drop trailing groups.
        groups = m.group().split(" ")
        while groups:
            candidate = " ".join(groups).rstrip(" ()/.-")
            if _valid_phone(candidate, regions):
                yield "phone", m.start(), m.start() + len(candidate)
                break
            groups.pop()


def find_dates_of_birth(text: str) -> Iterator[Finding]:
    for m in DATE_OF_BIRTH.finditer(text):
        yield "date_of_birth", m.start("value"), m.end("value")


def find_addresses(text: str) -> Iterator[Finding]:
    for m in ADDRESS.finditer(text):
        yield "address", m.start(), m.end()


def find_postcodes(text: str) -> Iterator[Finding]:
    for m in POSTCODE_CITY_DE.finditer(text):
        if m.group("town").lower() not in _NOT_A_TOWN:
            yield "postcode_city", m.start(), m.end()
    for pattern in (POSTCODE_UK, POSTCODE_US):
        for m in pattern.finditer(text):
            yield "postcode_city", m.start(), m.end()


def find_reference_numbers(text: str) -> Iterator[Finding]:
    for kind, pattern in REFERENCE_NUMBERS.items():
        for m in pattern.finditer(text):
            yield kind, m.start("value"), m.end("value")


def find_all(text: str, phone_regions: list[str]) -> list[Finding]:
    """Every rule's findings, most specific first; overlaps are resolved by the caller in this order."""
    return [
        *find_emails(text), *find_ibans(text), *find_card_numbers(text), *find_reference_numbers(text),
        *find_dates_of_birth(text), *find_phones(text, phone_regions), *find_addresses(text), *find_postcodes(text),
    ]
