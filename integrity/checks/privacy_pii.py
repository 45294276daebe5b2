"""``privacy.pii``: personal data in text fields, found by pattern and validated.

Every text column (``text``, ``prompt``, ``response``, ``caption``) is scanned.
A cheap column-wide RE2 prefilter (pyarrow, in C++) picks the few records that
could hold a match; only those are scanned in Python, where each candidate is
validated before it counts. One finding per record: ``score`` is the highest
match score, ``detail`` is ``{"matches": [...], "n_matches": N, "kinds": [...]}``
where each match has ``kind``, ``field``, ``start``/``end`` (character offsets
into the field, Python ``str`` indices), ``score``, a *masked* ``preview`` (never
the full value) and ``"redact": true``; the list is capped at ``max_matches``
(the strongest kept).

Kinds, their default score (option ``scores``) and how they are validated:

==============  =====  =========================================================
kind            score  validation
==============  =====  =========================================================
``credit_card`` 0.95   13-19 digits, bare or grouped by single spaces/dashes in
                       the usual layouts (4-4-4-4[-3], 4-6-5, 4-6-4); Luhn; a
                       known IIN prefix *and* length (Visa, Mastercard incl.
                       2221-2720, Amex, Discover, JCB, Diners, UnionPay,
                       Maestro, Mir). A bare digit run (no grouping) without a
                       card word ("card", "visa", "cvv", "payment", ...) in the
                       40 chars before is x0.6, and dropped right after "id",
                       "order", "invoice", "serial", "#", ... Published test
                       numbers (4111 1111 1111 1111, 4242..., ...) are examples.
``iban``        0.9    country code with its IBAN length (table of 80+
                       countries), ISO 7064 mod-97 == 1; bare or grouped by 4.
``us_ssn``      0.9    ``AAA-GG-SSSS`` (dashes only): area not 000/666/9xx, group
                       not 00, serial not 0000; well-known fake SSNs (123-45-6789,
                       078-05-1120, ...) are examples; "SSN"/"social security"
                       just before raises the score.
``es_dni``      0.85   Spanish DNI ``12345678Z`` and NIE ``X1234567L``: the
                       mod-23 control letter.
``nl_bsn``      0.85   Dutch BSN: 9 digits passing the 11-test, only with
                       "BSN"/"burgerservicenummer"/"sofinummer" within 40 chars
                       before (a bare 9-digit number passes the test 1 in 11).
``in_aadhaar``  0.85   Indian Aadhaar: 12 digits, first 2-9, Verhoeff checksum;
                       needs "Aadhaar"/"UIDAI" before it, or the printed
                       ``1234 5678 9012`` grouping (then scored x0.7).
``uk_nino``     0.8    UK National Insurance number: valid prefix letters
                       (not D F I Q U V, second not O, not BG GB KN NK NT TN ZZ),
                       6 digits, suffix A-D; no checksum exists.
``email``       0.5    RFC-ish local part, dotted domain whose TLD is 2+ letters;
                       a "TLD" that is a file extension (``foo@2x.png``) or an
                       ``@2x`` image suffix is rejected; dotless hosts
                       (``user@localhost``) are skipped; reserved example
                       domains (example.com/.org/.net, .test, .invalid,
                       .localhost, .local, .example) are examples.
``phone``       0.5    E.164 (``+`` or ``00`` then 10-15 digits, option
                       ``min_phone_digits``/``max_phone_digits``), NANP
                       ``(NXX) NXX-XXXX``/``NXX-NXX-XXXX`` and trunk-prefix
                       national formats (``020 7946 0958``, ``06 12 34 56 78``)
                       with separators; a bare digit run only right after a
                       phone keyword ("tel", "phone", "call", ...). Dates,
                       ISBNs, versions and numbers glued to other numbers are
                       rejected; 555-01xx numbers are examples; a phone keyword
                       just before raises the score x1.2.
``ipv4``        0.3    dotted quad, each octet 0-255 without leading zeros, not
                       part of a longer dotted number (``1.2.3.4.5``, OIDs) nor
                       right after "version"/"v"/"release"/"build"/"section"/
                       "chapter"/...; four one-digit parts (``4.8.0.2``, mostly
                       versions) x1/3; private/loopback/reserved/documentation
                       addresses are dropped (``exclude_private_ip``) or x1/3.
``ipv6``        0.3    parsed by :mod:`ipaddress`, at least two non-empty groups
                       and a decimal digit (rejects ``DBD::Pg``-like text);
                       non-global addresses as for IPv4.
==============  =====  =========================================================

Examples (test card numbers, fake SSNs, example.com addresses, ...) are kept at
x0.2 of the kind's score (so they land at ``info``), or dropped with
``include_examples: false``. Overlapping matches in a field are resolved in
favour of the higher score (a card number is not also a phone number).
A final score is ``min(1, scores[kind] * factor)``; severity is left to the
policy (which maps scores to severities), ``default_severity`` is ``warn``.

Options (policy ``options``; defaults, ranges and descriptions in :class:`PiiCheck.Options`):
``kinds`` (all), ``min_score`` (0.0: matches below are dropped), ``scores``
(partial overrides merge with the table above), ``exclude_private_ip`` (true),
``include_examples`` (true), ``min_phone_digits``/``max_phone_digits`` (10/15),
``max_matches`` (20 listed per record; ``n_matches`` counts all).
"""
from __future__ import annotations

from pydantic import Field, model_validator

from integrity.checks._national_ids import (
    _scan_aadhaar,
    _scan_bsn,
    _scan_dni,
    _scan_nino,
    _scan_ssn,
)
from integrity.checks._pii_contact import scan_email, scan_ipv4_with, scan_ipv6_with, scan_phone_with
from integrity.checks._pii_financial import outside_ibans, scan_card, scan_iban
from integrity.checks._text_scan import ScanGroup, TextScanCheck, text_scan_options
from integrity.checks._text_scan import chain as _chain

KINDS = (
    "credit_card",
    "iban",
    "us_ssn",
    "es_dni",
    "nl_bsn",
    "in_aadhaar",
    "uk_nino",
    "email",
    "phone",
    "ipv4",
    "ipv6",
)

DEFAULT_SCORES = {
    "credit_card": 0.95,
    "iban": 0.9,
    "us_ssn": 0.9,
    "es_dni": 0.85,
    "nl_bsn": 0.85,
    "in_aadhaar": 0.85,
    "uk_nino": 0.8,
    "email": 0.5,
    "phone": 0.5,
    "ipv4": 0.3,
    "ipv6": 0.3,
}


class PiiCheck(TextScanCheck):
    name = "privacy.pii"
    description = (
        "Personal data in text: e-mail, phone, IP, payment cards (Luhn + IIN), IBAN (mod-97), "
        "US SSN, UK NINO, Spanish DNI/NIE, Dutch BSN, Indian Aadhaar (validated)."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES

    class Options(text_scan_options(KINDS, DEFAULT_SCORES, min_score=0.0)):
        exclude_private_ip: bool = Field(True, description="drop private/loopback/reserved IPs (else scored x1/3)")
        include_examples: bool = Field(True, description="keep example values (test cards, example.com, ...) at x0.2")
        min_phone_digits: int = Field(10, ge=7, le=15, description="fewest digits a phone number has")
        max_phone_digits: int = Field(15, ge=7, le=15, description="most digits a phone number has (E.164: 15)")

        @model_validator(mode="after")
        def _phone_range(self):
            if self.min_phone_digits > self.max_phone_digits:
                raise ValueError("min_phone_digits: must not be above max_phone_digits "
                                 f"({self.min_phone_digits} > {self.max_phone_digits})")
            return self

    default_severity = "warn"
    version = 1

    def scan_groups(self) -> list[ScanGroup]:
        o, kinds = self.options, self.kinds
        min_d, max_d = int(o["min_phone_digits"]), int(o["max_phone_digits"])
        exclude_private = bool(o["exclude_private_ip"])
        return [
            ScanGroup("email", "@", frozenset({"email"}), scan_email),
            ScanGroup(
                "numeric",
                r"[0-9](?:[ ()./-]{0,2}[0-9]){6,}",
                frozenset({"phone", "credit_card", "us_ssn", "es_dni", "nl_bsn", "in_aadhaar"}),
                outside_ibans(_chain(
                    *[
                        s
                        for k, s in (
                            ("credit_card", scan_card),
                            ("us_ssn", _scan_ssn),
                            ("es_dni", _scan_dni),
                            ("nl_bsn", _scan_bsn),
                            ("in_aadhaar", _scan_aadhaar),
                            ("phone", scan_phone_with(min_d, max_d)),
                        )
                        if k in kinds
                    ]
                )),
            ),
            ScanGroup(
                "alnum_id",
                r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}|(?i:[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D])",
                frozenset({"iban", "uk_nino"}),
                _chain(*[s for k, s in (("iban", scan_iban), ("uk_nino", _scan_nino)) if k in kinds]),
            ),
            ScanGroup(
                "ipv4",
                r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
                frozenset({"ipv4"}),
                scan_ipv4_with(exclude_private),
            ),
            ScanGroup(
                "ipv6",
                r"(?:^|[^0-9A-Za-z_.])[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]|$|[^0-9A-Za-z_:.])"
                r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}",
                frozenset({"ipv6"}),
                scan_ipv6_with(exclude_private),
            ),
        ]
