"""What an unlabelled column or field probably holds: from its name always, from a bounded sample
of its values when lint is connected (``lint --url``).

Values are recognised by field libraries, not by our own regexes: python-stdnum (Luhn for card
numbers, IBAN, South African and other national ids) and phonenumbers (Google's libphonenumber),
and email-validator for addresses (already a dependency through pydantic). presidio-analyzer's
pattern recognisers were measured first (docs/governance.md#recognisers): they run without an NLP
model, but the package requires spaCy (+390 MB with thinc and numpy) and its e-mail recogniser
fetches the public-suffix list from the internet on first use; these libraries are what its own
recognisers validate with, without that weight.

A suggestion names a kind and a level, never copies a value into a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# (pattern over a column/field name, kind, level, what it looks like). Order matters: the first match wins.
_NAMES: tuple[tuple[re.Pattern, str, str, str], ...] = tuple((re.compile(p, re.I), k, lvl, what) for p, k, lvl, what in (
    (r"(^|_)(pan|card_?(number|no|num)|cc_?(number|num)|credit_?card)($|_)", "pci", "critical", "a card number"),
    (r"(^|_)(cvv|cvc|cvv2|card_?security_?code)($|_)", "pci", "critical", "a card security code"),
    (r"(^|_)(password|passwd|pwd|secret|api_?key|access_?token|refresh_?token|private_?key)($|_)", "secret", "critical",
     "a credential"),
    (r"(^|_)(iban|bank_?account|account_?number|routing_?number|bic|swift)($|_)", "pii", "high", "a bank account"),
    (r"(^|_)(ssn|national_?id|id_?number|idnr|passport(_?no|_?number)?|tax_?id|vat_?id)($|_)", "pii", "high",
     "a national identity number"),
    (r"(^|_)(e_?mail|email_?address)($|_)", "pii", "medium", "an e-mail address"),
    (r"(^|_)(phone|phone_?e164|mobile|msisdn|telephone|tel)($|_)", "pii", "medium", "a phone number"),
    (r"(^|_)(first_?name|last_?name|full_?name|surname|given_?name|family_?name|display_?name|maiden_?name)($|_)",
     "pii", "medium", "a person's name"),
    (r"(^|_)(birth_?date|date_?of_?birth|dob|birthday)($|_)", "pii", "high", "a date of birth"),
    (r"(^|_)(address|street|postcode|postal_?code|zip_?code|home_?address)($|_)", "pii", "medium", "an address"),
    (r"(^|_)(lat|lng|lon|latitude|longitude|geo|gps|location|position)($|_)", "pii", "medium", "a location"),
    (r"(^|_)(ip|ip_?address|user_?agent|device_?id)($|_)", "pii", "low", "an online identifier"),
))

SAMPLE_LIMIT = 200  # values read per column or field with --url: enough to recognise, bounded on a big table


@dataclass(frozen=True)
class Suggestion:
    kind: str
    level: str
    what: str
    source: str  # "name" or "values (n of m sampled)"

    def label_yaml(self, key: str) -> str:
        return f"'{key}': {{kind: {self.kind}, level: {self.level}}}"


def by_name(name: str) -> Suggestion | None:
    """What a column or field's name says it holds (None: nothing personal-looking)."""
    leaf = name.rsplit(".", 1)[-1]
    for pattern, kind, level, what in _NAMES:
        if pattern.search(leaf):
            return Suggestion(kind, level, what, "name")
    return None


def _card(v: str) -> bool:
    from stdnum import luhn
    digits = re.sub(r"[ -]", "", v)
    return digits.isdigit() and 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _iban(v: str) -> bool:
    from stdnum import iban
    return len(v) >= 15 and iban.is_valid(v)


def _za_id(v: str) -> bool:
    from stdnum.za import idnr
    return len(v.strip()) == 13 and idnr.is_valid(v)


def _email(v: str) -> bool:
    if "@" not in v:
        return False
    from email_validator import EmailNotValidError, validate_email
    try:
        validate_email(v, check_deliverability=False)  # no DNS: lint never leaves the machine
        return True
    except EmailNotValidError:
        return False


def _phone(v: str) -> bool:
    import phonenumbers
    if not re.fullmatch(r"\+?[\d ()./-]{7,20}", v.strip()):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(v, None if v.strip().startswith("+") else "ZA"))
    except phonenumbers.NumberParseException:
        return False


# (recogniser, kind, level, what): a South African id (13 digits, a birth date, Luhn) before card numbers,
# which it would also pass as
_VALUES = ((_za_id, "pii", "high", "South African id numbers"), (_card, "pci", "critical", "card numbers (Luhn-valid)"),
           (_iban, "pii", "high", "IBANs"), (_email, "pii", "medium", "e-mail addresses"),
           (_phone, "pii", "medium", "phone numbers"))


def by_values(values: Iterable[object], share: float = 0.5) -> Suggestion | None:
    """What a sample of values holds, when at least ``share`` of the non-empty ones are recognised."""
    texts = [str(v) for v in values if v is not None and str(v).strip()][:SAMPLE_LIMIT]
    if not texts:
        return None
    for check, kind, level, what in _VALUES:
        hits = sum(1 for t in texts if check(t))
        if hits and hits >= share * len(texts):
            return Suggestion(kind, level, what, f"values ({hits} of {len(texts)} sampled)")
    return None
