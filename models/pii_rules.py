"""Rules that find personal data in German and English posts, each with a validator.

A regular expression alone over-matches (every long number looks like a phone number), so every
rule confirms its candidates: IBANs by their ISO 13616 length and mod-97 checksum, card numbers by
the Luhn checksum, phone numbers by libphonenumber's numbering plans (or, for redaction's sake, by their
shape when written internationally or right after a phone word), customer/contract/order/ticket
numbers only right after their keyword. Each finder returns (type, start, end) character offsets.

The rules expect text already normalised by models.pii (invisible characters removed, NFKC, ASCII
digits), and every pattern is linear in the text length: quantifiers are bounded or cannot overlap,
so a 20,000-character run of digits, letters or "a@" costs milliseconds, not minutes.
"""
from __future__ import annotations

import re
from typing import Iterator

import phonenumbers

Finding = tuple[str, int, int]

# Domain labels may hold any letters: IDN domains are real addresses, and a Cyrillic "е" must not hide one.
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[^\W_][\w-]*(?:\.[^\W_][\w-]*)*\.[^\W\d_]{2,}\b")
# Addresses written to dodge harvesters: "max(at)example.de", "max [at] example [dot] de", "max at example
# dot com", "max @ example.de". Only common top-level domains count, so "at home dot dot" is no address.
_OBF_AT = r"(?P<at>\s{0,3}[(\[{<]\s{0,3}(?:at|ät|@)\s{0,3}[)\]}>]\s{0,3}|\s{1,3}@\s{1,3}|\s{1,3}(?:at|ät)\s{1,3})"
_OBF_DOT = r"(?:\s{0,3}[(\[{<]\s{0,3}(?:dot|punkt|\.)\s{0,3}[)\]}>]\s{0,3}|\s{1,3}(?:dot|punkt)\s{1,3}|\.)"
_OBF_LABEL = r"[^\W_][\w-]{0,62}"
_COMMON_TLDS = (r"de|com|net|org|at|ch|eu|info|biz|io|co|uk|us|fr|nl|be|it|es|pl|cz|dk|se|no|fi|pt|ie|lu|li|tr"
                r"|me|tv|online|email|mail|gmx|web")
EMAIL_OBFUSCATED = re.compile(
    rf"(?<![\w.+-])[\w.+-]{{1,64}}{_OBF_AT}(?P<domain>{_OBF_LABEL}(?:{_OBF_DOT}{_OBF_LABEL}){{0,3}}{_OBF_DOT}"
    rf"(?:{_COMMON_TLDS}))\b", re.IGNORECASE)

UK_BANK_ACCOUNT = re.compile(r"\bsort[ -]?code\W{0,3}(?P<value>\d{2}[- ]?\d{2}[- ]?\d{2}\b"
                             r"(?:[,;]?\s{0,2}(?:(?:account|acct?|a/c)\.?(?:\s(?:no\.?|number|#))?\s?:?\s?)?\d{8}\b)?)",
                             re.IGNORECASE)
# IBAN lengths of every country in the ISO 13616 registry (SWIFT). A candidate from any other "country"
# is no IBAN: with spaced-out letters allowed, "In 12345 ..." would otherwise pass the checksum at some
# length one time in five.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}
# Country letters and check digits may be spaced out ("D E 8 9 3704 ..."), groups split by up to two
# spaces or hyphens; the checksum and the country's exact length keep this from over-matching.
IBAN = re.compile(r"\b[A-Za-z] ?[A-Za-z] ?\d ?\d(?:[ -]{0,2}[A-Za-z0-9]){11,30}")
CARD = re.compile(r"(?<![\d-])[3-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
PHONE_CANDIDATE = re.compile(r"(?<![\w+/.-])(?:\+|00)?\(?\d[\d ()/.-]{5,22}\d(?![\w/-])")
DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")
# What a number must not look like to be redacted as a phone number on its shape alone.
_DATE_INSIDE = re.compile(r"(?<!\d)\d{1,2}[./]\d{1,2}[./](?:19|20)?\d{2}(?!\d)|(?<!\d)(?:19|20)\d{2}-\d{2}-\d{2}(?!\d)")
_YEAR_RANGE = re.compile(r"^(?:19|20)\d{2}\s?[-/]\s?(?:19|20)\d{2}$")
_COMPACT_DATE = re.compile(r"^(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])$")
_THOUSANDS = re.compile(r"^\+?[1-9]\d{0,2}(?:([ .,'])\d{3})(?:\1\d{3})*$")
# Words after which a number of phone shape is a phone number even if no numbering plan knows it.
_PHONE_WORDS = (
    r"\b(?:Tel|Telefon|Telefonnummer|Tel\.?-?Nr|Telnr|Handy|Handynummer|Mobil|Mobilnummer|Mobilfunknummer"
    r"|Nummer|Rufnummer|Festnetz|Festnetznummer|Rückruf|WhatsApp|SMS|phone|telephone|mobile|cell|call me"
    r"|ring me|text me|reach me|my number|erreichbar|erreichen Sie mich|ruf(?:t|en Sie)? mich)\b\.?")
PHONE_AFTER_WORD = re.compile(
    rf"{_PHONE_WORDS}[^\d\n+]{{0,25}}?(?P<number>(?:\+|00)?\(?\d[\d ()/.-]{{5,22}}\d)(?![\w/-])", re.IGNORECASE)
# libphonenumber costs ~0.1 ms per try; past this many tries in one text, numbers are judged by shape
# alone (redacted, not skipped), so a text of thousands of number-like runs stays fast and fails closed.
PHONE_TRIES_PER_TEXT = 600

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
# Hyphenated names have at most five parts ("Friedrich-Wilhelm-von-Steuben-Straße"): unbounded, every
# word of "Aa-Aa-Aa-..." would start a scan to the end of the run (20,000 characters: seconds).
ADDRESS = re.compile(
    rf"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜa-zäöüß]+){{0,4}}{_STREET_SUFFIX_DE}{_HOUSE_NUMBER}"
    rf"|\b(?:[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+){{0,4}}\s){{1,2}}{_STREET_WORD_DE}{_HOUSE_NUMBER}"
    rf"|\b(?:[A-ZÄÖÜ][a-zäöüß]+-){{1,5}}{_STREET_WORD_DE}{_HOUSE_NUMBER}"
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
    "customer_number": r"Kundennummer|Kunden-?Nr\.?|Kundennr\.?|Kd\.?-?Nr\.?|Kunden-?ID|Kundenkonto|Vertragskonto"
                       r"|customer (?:number|no\.?|id|#)|account (?:number|no\.?|id|#)|account|acct\.?|acc\.?",
    "contract_number": r"Vertragsnummer|Vertrags-?Nr\.?|Vertragsnr\.?|Vertrag|Versicherungsnummer|Policennummer"
                       r"|contract (?:number|no\.?|id|#)|contract|policy (?:number|no\.?|#)|policy",
    "order_number": r"Bestellnummer|Bestell-?Nr\.?|Bestellung|Auftragsnummer|Auftrags-?Nr\.?|Auftrag|Rechnungsnummer"
                    r"|Rechnungs-?Nr\.?|Sendungsnummer|Sendungs-?Nr\.?|order (?:number|no\.?|id|#)|order|invoice (?:number|no\.?|#)"
                    r"|tracking (?:number|no\.?|#)|Buchungsnummer|Buchungscode"
                    r"|booking (?:ref(?:erence)?|number|no\.?|#)",
    "ticket_number": r"Ticketnummer|Ticket-?Nr\.?|Ticket|Vorgangsnummer|Vorgangs-?Nr\.?|Vorgang|Fallnummer|Störungsnummer"
                     r"|Referenznummer|Aktenzeichen|case (?:number|no\.?|id|#)|case|ticket (?:number|no\.?|id|#)"
                     r"|reference (?:number|no\.?|#)|ref\.? (?:no\.?|#)|Schadennummer|Schaden-?Nr\.?"
                     r"|claim (?:ref(?:erence)?|number|no\.?|#)|claim",
}
# One token with at least 5 digits, or digit groups written apart as customers copy them from a letter
# ("9 412 775 380", "1.007.743.219"), at least 7 digits in all (so that "12.500 Euro" stays an amount).
_REFERENCE_VALUE = (r"(?P<value>(?=\d{1,4}(?:[ .]\d{2,4}){1,5}(?![\w-]))(?=(?:[ .]?\d){7})\d{1,4}(?:[ .]\d{2,4}){1,5}"
                    r"|(?=(?:[A-Za-z/-]*\d){5})[A-Za-z0-9][A-Za-z0-9/-]{3,30}[A-Za-z0-9])")
# Possessive whitespace (\s*+, \s++): a long run of spaces after a keyword is taken whole, not split
# among the three glue parts in every possible way (cubic: 20,000 spaces took minutes).
_REFERENCE_GLUE = r"(?:\s*+(?:[:#.=]|ist|lautet|is|was|wäre|war|lautet:|Nr\.?|no\.?)\s*+|\s++){1,3}"
REFERENCE_NUMBERS = {
    kind: re.compile(rf"\b(?:{keywords}){_REFERENCE_GLUE}{_REFERENCE_VALUE}(?![\w-])", re.IGNORECASE)
    for kind, keywords in REFERENCE_KEYWORDS.items()
}


def iban_is_valid(candidate: str) -> bool:
    iban = re.sub(r"[ -]", "", candidate).upper()
    if len(iban) != IBAN_LENGTHS.get(iban[:2]) or not re.fullmatch(r"[A-Z0-9]+", iban):
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
    for m in EMAIL_OBFUSCATED.finditer(text):
        if _really_obfuscated(m):
            yield "email", m.start(), m.end()


def _really_obfuscated(m: re.Match[str]) -> bool:
    """A bare " at " before a plainly dotted domain is English ("look at example.com"), not an address:
    it counts only when the dots are written out too ("max at example dot com")."""
    bare_at = m.group("at").strip().lower() in ("at", "ät")
    return not bare_at or not re.fullmatch(r"[\w.-]+", m.group("domain"))


def find_ibans(text: str) -> Iterator[Finding]:
    """Candidates are searched overlapping (a failed "ab 12 DE89 ..." must not hide the IBAN inside it);
    each start costs at most one checksum, so this stays linear."""
    pos = 0
    while m := IBAN.search(text, pos):
        length = _iban_length(m.group())
        if length:
            yield "iban", m.start(), m.start() + length
        pos = m.start() + (length or 1)


def _iban_length(candidate: str) -> int:
    """Characters of the valid IBAN at the start of the candidate, 0 if none. The pattern may run into the
    next word ("DE89... bitte"), so the country's length decides where the IBAN ends."""
    ends = [i + 1 for i, ch in enumerate(candidate) if ch.isalnum()]
    n = IBAN_LENGTHS.get(candidate[:ends[1]].replace(" ", "").upper(), 0)
    return ends[n - 1] if n and n <= len(ends) and iban_is_valid(candidate[:ends[n - 1]]) else 0


def find_uk_bank_accounts(text: str) -> Iterator[Finding]:
    """A UK sort code, with the account number when one follows: the bank details of UK customers, who have
    no IBAN on their cards and letters. Only after the words "sort code", so dates and prices never match."""
    for m in UK_BANK_ACCOUNT.finditer(text):
        yield "bank_account", m.start("value"), m.end("value")


def find_card_numbers(text: str) -> Iterator[Finding]:
    for m in CARD.finditer(text):
        if luhn_is_valid(m.group()):
            yield "card_number", m.start(), m.end()


class _PhoneJudge:
    """Decides whether a candidate is a phone number, counting libphonenumber tries for one text."""

    def __init__(self, regions: list[str]) -> None:
        self.regions = regions
        self.tries_left = PHONE_TRIES_PER_TEXT

    def length(self, candidate: str, after_phone_word: bool) -> int:
        """Characters of the longest phone number at the start of the candidate, 0 if none. A candidate
        may swallow a following number ("0171 1234567 2x klingeln"), so trailing groups are dropped:
        first any prefix the numbering plans accept, then (recall first) one that merely looks like one."""
        prefixes = [p for p in _phone_prefixes(candidate)
                    if _phone_shaped(p) and (after_phone_word or _written_as_phone(p))]
        for prefix in prefixes:
            if self._valid(prefix):
                return len(prefix)
        for prefix in prefixes:
            if after_phone_word or self.tries_left <= 0 or self._international(prefix):
                return len(prefix)
        return 0

    def _valid(self, candidate: str) -> bool:
        """Valid in libphonenumber's numbering plans: in any region for +CC/00CC, else in the configured ones."""
        if self.tries_left <= 0:
            return False
        international = candidate.startswith(("+", "00"))
        for region in (["ZZ"] if international else self.regions):
            number = self._parse(candidate, region)
            if number is not None and phonenumbers.is_valid_number(number):
                return True
        return False

    def _international(self, candidate: str) -> bool:
        """Written with a known country code ("+44 7700 900123", "0044 7700 900123"): redacted even where
        the numbering plan says no such number exists (numbers reserved for fiction, typos, placeholders).
        Bare "00..." runs without any separator are left to the plans: those are often reference numbers."""
        if not candidate.startswith("+") and not (candidate.startswith("00") and re.search(r"[ ()/.-]", candidate)):
            return False
        number = self._parse(candidate, "ZZ")
        return number is not None and number.national_number > 0

    def _parse(self, candidate: str, region: str) -> phonenumbers.PhoneNumber | None:
        self.tries_left -= 1
        try:
            return phonenumbers.parse("+" + candidate[2:] if candidate.startswith("00") else candidate, region)
        except phonenumbers.NumberParseException:
            return None


def _digit_count(candidate: str) -> int:
    return sum(ch.isdigit() for ch in candidate)


def _phone_prefixes(candidate: str) -> list[str]:
    """The candidate and its shorter forms without trailing space-separated groups, longest first."""
    groups = candidate.split(" ")
    prefixes = [" ".join(groups[:n]).rstrip(" ()/.-") for n in range(len(groups), 0, -1)]
    return [p for p in prefixes if 7 <= _digit_count(p) <= 15]


def _phone_shaped(candidate: str) -> bool:
    """7 to 15 digits (E.164's limit) and not a date, a year range or a thousands-grouped amount: numbering
    plans accept "2019-2024" and "1.234.567" somewhere, so their word alone is not enough."""
    bare = candidate.lstrip("+")
    return (7 <= _digit_count(candidate) <= 15 and not DATE_LIKE.match(bare) and not _DATE_INSIDE.search(bare)
            and not _YEAR_RANGE.match(bare) and not _COMPACT_DATE.match(bare) and not _THOUSANDS.match(candidate))


def _written_as_phone(candidate: str) -> bool:
    """Without a phone word, a number counts only if written like one: with +, a trunk 0, an area code in
    parentheses or separators. A bare run such as "1234567890" is far more often an order, meter or
    tracking number, even where some numbering plan would accept it."""
    return candidate.startswith(("+", "0", "(")) or bool(re.search(r"[ ()/.-]", candidate))


def find_phones(text: str, regions: list[str]) -> Iterator[Finding]:
    """Numbers standing on their own, then numbers right after a phone word ("Tel.", "Handy", "call me on");
    the same number found both ways is one finding after the caller removes overlaps."""
    judge = _PhoneJudge(regions)
    for m in PHONE_CANDIDATE.finditer(text):
        length = judge.length(m.group(), after_phone_word=False)
        if length:
            yield "phone", m.start(), m.start() + length
    for m in PHONE_AFTER_WORD.finditer(text):
        length = judge.length(m.group("number"), after_phone_word=True)
        if length:
            yield "phone", m.start("number"), m.start("number") + length


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
        *find_emails(text), *find_ibans(text), *find_uk_bank_accounts(text), *find_card_numbers(text),
        *find_reference_numbers(text),
        *find_dates_of_birth(text), *find_phones(text, phone_regions), *find_addresses(text), *find_postcodes(text),
    ]
