"""National identifier detectors of ``privacy.pii``, each validated where a
checksum or allocation rule exists: US SSN, UK NINO, Spanish DNI/NIE, Dutch BSN,
Indian Aadhaar (see the table in :mod:`integrity.checks.privacy_pii`)."""
from __future__ import annotations

import re
from typing import Any, Iterator

from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch
from integrity.checks._text_scan import before as _before
from integrity.checks._text_scan import mask as _mask

A = re.ASCII


# AAA-GG-SSSS; the same with spaces or dots (one separator throughout); nine bare digits
_SSN = re.compile(
    r"(?<![0-9A-Za-z_+.-])([0-9]{3})([-. ]?)([0-9]{2})\2([0-9]{4})(?![0-9A-Za-z_]|[-.][0-9])", A
)
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|ss#|social\s+security(?:\s+(?:number|no\.?|#))?|tin)\b")
_EXAMPLE_SSNS = frozenset({"123456789", "078051120", "219099999", "457555462", "111111111", "333333333"})


def ssn_ok(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _scan_ssn(text: str) -> Iterator[RawMatch]:
    for m in _SSN.finditer(text):
        area, sep, group, serial = m.groups()
        if not ssn_ok(area, group, serial):
            continue
        context = _before(text, m.start(), _SSN_CONTEXT, 40)
        if sep != "-" and not context:
            # "078 05 1120", "078.05.1120", "078051120" without "SSN" near: could be any number
            continue
        example = area + group + serial in _EXAMPLE_SSNS
        factor = EXAMPLE_FACTOR if example else (1.05 if context else 1.0)
        extra: dict[str, Any] = {"preview": "***-**-" + serial}
        if sep != "-":
            extra["separator"] = sep or "none"
        if example:
            extra["example"] = True
        yield "us_ssn", m.start(), m.end(), factor, extra


# two prefix letters, three pairs of digits, a suffix A-D, written AB123456C, AB 12 34 56 C or AB 123456 C;
# any case (lower case needs "NI number"/"national insurance" near to count at warn)
_NINO = re.compile(
    r"(?<![A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])( ?)[0-9]{2}( ?)[0-9]{2}( ?)[0-9]{2}( ?)[A-D](?![A-Za-z0-9])",
    A | re.IGNORECASE,
)
_NINO_BAD_PREFIX = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_NINO_SPACING = frozenset({("", "", "", ""), (" ", " ", " ", " "), (" ", "", "", " ")})
_NINO_CONTEXT = re.compile(r"(?i)\b(?:nino|national\s+insurance|ni\s+(?:number|no))\b")


def _scan_nino(text: str) -> Iterator[RawMatch]:
    for m in _NINO.finditer(text):
        prefix = m.group(1).upper()
        if prefix in _NINO_BAD_PREFIX or m.group(2, 3, 4, 5) not in _NINO_SPACING:
            continue
        value = m.group(0)
        context = _before(text, m.start(), _NINO_CONTEXT, 40)
        upper = value == value.upper()
        if not upper and value != value.lower():
            continue  # mixed case: not how a NINO is written
        extra: dict[str, Any] = {"preview": _mask(value, 3)}
        if upper:
            factor = 1.1 if context else 1.0
        else:
            factor = 1.0 if context else 0.5
            extra["lower_case"] = True
        yield "uk_nino", m.start(), m.end(), factor, extra


# DNI: 8 digits (7 when the leading zero is dropped) and the control letter; NIE: X/Y/Z, 7 digits,
# the letter; either case, an optional dash before the letter
_DNI = re.compile(r"(?<![A-Za-z0-9])(?:([0-9]{7,8})|([XYZxyz])-?([0-9]{7}))-?([A-Za-z])(?![A-Za-z0-9])", A)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_DNI_CONTEXT = re.compile(r"(?i)\b(?:dni|nif|nie|documento|identidad|id\s+card)\b")
_EXAMPLE_DNIS = frozenset({"12345678Z", "00000000T", "X1234567L", "99999999R"})


def dni_ok(number: int, letter: str) -> bool:
    return _DNI_LETTERS[number % 23] == letter.upper()


def _scan_dni(text: str) -> Iterator[RawMatch]:
    for m in _DNI.finditer(text):
        dni, nie_letter, nie_digits, letter = m.groups()
        if nie_letter:
            number = "XYZ".index(nie_letter.upper()) * 10**7 + int(nie_digits)
        else:
            number = int(dni)
        if not dni_ok(number, letter):
            continue
        compact = m.group(0).replace("-", "").upper()
        digits = dni or nie_digits
        example = compact in _EXAMPLE_DNIS or len(set(digits)) == 1
        lower = compact != m.group(0).replace("-", "")
        short = dni is not None and len(dni) == 7
        extra: dict[str, Any] = {"preview": _mask(m.group(0), 4), "type": "dni" if dni else "nie"}
        if example:
            factor, extra["example"] = EXAMPLE_FACTOR, True
        elif (lower or short) and not _before(text, m.start(), _DNI_CONTEXT, 40):
            # a lower-case or 7-digit form passes the letter check 1 time in 23 by chance:
            # only with "DNI"/"NIF"/"NIE" near does it count at warn
            factor = 0.55
        else:
            factor = 1.0
        yield "es_dni", m.start(), m.end(), factor, extra


_BSN = re.compile(r"(?<![0-9A-Za-z_.+-])([0-9]{9}|[0-9]{4}\.[0-9]{2}\.[0-9]{3})(?![0-9A-Za-z_]|[.-][0-9])", A)
_BSN_CONTEXT = re.compile(r"(?i)\b(?:bsn|burgerservicenummer|sofi-?nummer|sofi)\b")


def bsn_ok(d: str) -> bool:
    """The Dutch 11-test: sum(d_i * (9..2)) - d_9 divisible by 11."""
    if len(d) != 9 or d == "000000000":
        return False
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1))) - int(d[8])
    return total % 11 == 0


def _scan_bsn(text: str) -> Iterator[RawMatch]:
    for m in _BSN.finditer(text):
        if not _before(text, m.start(), _BSN_CONTEXT, 40):
            continue
        if bsn_ok(m.group(1).replace(".", "")):
            yield "nl_bsn", m.start(), m.end(), 1.0, {"preview": _mask(m.group(1), 3)}


_AADHAAR = re.compile(r"(?<![0-9A-Za-z_.+-])([2-9][0-9]{3})([ -]?)([0-9]{4})\2([0-9]{4})(?![0-9A-Za-z_]|[.-][0-9])", A)
_AADHAAR_CONTEXT = re.compile(r"(?i)(?:\baadhaa?r\b|\buidai\b|\u0906\u0927\u093e\u0930)")
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_ok(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return c == 0


def _scan_aadhaar(text: str) -> Iterator[RawMatch]:
    for m in _AADHAAR.finditer(text):
        digits = m.group(1) + m.group(3) + m.group(4)
        context = _before(text, m.start(), _AADHAAR_CONTEXT, 40)
        if not (context or m.group(2)) or len(set(digits)) < 3 or not verhoeff_ok(digits):
            continue
        yield "in_aadhaar", m.start(), m.end(), 1.0 if context else 0.7, {"preview": _mask(m.group(0), 4)}
