"""Financial detectors of ``privacy.pii``: payment cards (Luhn and issuer ranges) and IBANs
(mod-97 and country lengths; see the table in :mod:`integrity.checks.privacy_pii`)."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator

from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch, luhn_ok
from integrity.checks._text_scan import before as _before

A = re.ASCII


# ---------------------------------------------------------------------------
# payment cards

_CARD = re.compile(r"(?<![0-9A-Za-z_.,+-])([0-9](?:[ -]?[0-9]){12,18})(?![0-9A-Za-z_]|[.,-][0-9])", A)
_TEST_CARDS = frozenset(
    {
        "4111111111111111", "4242424242424242", "4012888888881881", "4222222222222", "4000056655665556",
        "4000000000000002", "4005519200000004", "4009348888881881", "5555555555554444", "5105105105105100",
        "5200828282828210", "2223003122003222", "378282246310005", "371449635398431", "378734493671000",
        "6011111111111117", "6011000990139424", "6011000000000004", "3530111333300000", "3566002020360505",
        "30569309025904", "38520000023237", "36227206271667", "6200000000000005", "5019717010103742",
    }
)


def card_brand(d: str) -> str | None:
    """The card network of digit string ``d`` by IIN prefix and length (None if none)."""
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if p2 in (34, 37):
        return "amex" if n == 15 else None
    if d[0] == "4":
        return "visa" if n in (13, 16, 19) else None
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "mastercard" if n == 16 else None
    if 2200 <= p4 <= 2204:
        return "mir" if 16 <= n <= 19 else None
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return "discover" if 16 <= n <= 19 else None
    if 3528 <= p4 <= 3589:
        return "jcb" if 16 <= n <= 19 else None
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return "diners" if 14 <= n <= 19 else None
    if p2 == 62:
        return "unionpay" if 16 <= n <= 19 else None
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):
        return "maestro" if 12 <= n <= 19 else None
    return None


_CARD_LAYOUTS = {(4, 6, 5), (4, 6, 4)}


def _card_layout_ok(s: str) -> bool:
    if " " in s and "-" in s:
        return False
    groups = [len(g) for g in re.split(r"[ -]", s)]
    if len(groups) == 1:
        return True
    if tuple(groups) in _CARD_LAYOUTS:
        return True
    return all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4


_CARD_CONTEXT = re.compile(
    r"(?i)\b(?:card|cc|ccn|pan|visa|master\s?card|mc|amex|american\s+express|discover|jcb|diners|maestro|"
    r"unionpay|credit|debit|payment|cvv|cvc|expir\w*|exp)\b"
)
_NOT_CARD_CONTEXT = re.compile(
    r"(?i)\b(?:id|ids|uid|guid|order|invoice|tracking|ref|reference|ts|timestamp|isbn|issn|ean|upc|gtin|imei|"
    r"serial|account|acct|transaction|txn|no|nr|number)\b\W{0,3}$|#\s*$"
)


def scan_card(text: str) -> Iterator[RawMatch]:
    for m in _CARD.finditer(text):
        s = m.group(1)
        digits = s.replace(" ", "").replace("-", "")
        if not _card_layout_ok(s) or len(set(digits)) < 2:
            continue
        brand = card_brand(digits)
        if brand is None or not luhn_ok(digits):
            continue
        extra: dict[str, Any] = {"preview": "\u2026" + digits[-4:], "brand": brand}
        if digits in _TEST_CARDS:
            extra["example"] = True
            factor = EXAMPLE_FACTOR
        elif s != digits:
            factor = 1.0  # printed in groups, the way card numbers are written
        elif _before(text, m.start(), _CARD_CONTEXT, 40):
            factor = 1.0
        elif _before(text, m.start(), _NOT_CARD_CONTEXT, 24):
            continue  # "order 4017...": an identifier that happens to pass Luhn
        else:
            factor = 0.6  # a bare 13-19 digit run: 1 in 10 random ones passes Luhn
            extra["bare"] = True
        yield "credit_card", m.start(), m.end(), factor, extra


# ---------------------------------------------------------------------------
# IBAN

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})([0-9]{2})(?= ?[A-Z0-9])", A)
_EXAMPLE_IBANS = frozenset({"GB82WEST12345698765432", "DE89370400440532013000", "GB29NWBK60161331926819"})


def iban_ok(iban: str) -> bool:
    """Length for its country and the ISO 7064 mod-97 check of a compact IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# an IBAN's shape: a country code with an IBAN, two check digits, then groups of 4 (bare or spaced)
_IBAN_LIKE = re.compile(
    r"(?<![A-Za-z0-9])([A-Z]{2})[0-9]{2}(?: ?[A-Z0-9]{4}){2,8}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", A
)
_IBAN_HINT = re.compile(r"[A-Z]{2}[0-9]{2}", A)


def iban_like_spans(text: str) -> list[tuple[int, int]]:
    """Spans shaped like an IBAN of a known country, whether or not the checksum holds."""
    if not _IBAN_HINT.search(text):
        return []
    return [(m.start(), m.end()) for m in _IBAN_LIKE.finditer(text) if m.group(1) in IBAN_LENGTHS]


def outside_ibans(scan: Callable[[str], Iterable[RawMatch]]) -> Callable[[str], Iterator[RawMatch]]:
    """``scan`` without matches inside IBAN-shaped text.

    The digits of an IBAN (valid or a near miss with a bad check digit) often
    form a phone-like or Aadhaar-like group (``DE12 3704 0044 0532``); they belong
    to the IBAN detector, which validates the mod-97 checksum.
    """
    def scan_outside(text: str) -> Iterator[RawMatch]:
        spans = iban_like_spans(text)
        for raw in scan(text):
            if spans and any(raw[1] < end and raw[2] > start for start, end in spans):
                continue
            yield raw

    return scan_outside


def scan_iban(text: str) -> Iterator[RawMatch]:
    n = len(text)
    for m in _IBAN_START.finditer(text):
        want = IBAN_LENGTHS.get(m.group(1))
        if want is None:
            continue
        chars = [m.group(1), m.group(2)]
        got, pos = 4, m.end()
        spaced = None
        while got < want and pos < n:
            ch = text[pos]
            if ch == " " and got % 4 == 0 and spaced is not False and pos + 1 < n and text[pos + 1] != " ":
                spaced = True
                pos += 1
                continue
            if not ("A" <= ch <= "Z" or "0" <= ch <= "9"):
                break
            if got % 4 == 0 and got > 4 and spaced is None:
                spaced = False
            chars.append(ch)
            got += 1
            pos += 1
        if got != want or (pos < n and text[pos].isalnum()):
            continue
        iban = "".join(chars)
        if not iban_ok(iban):
            continue
        example = iban in _EXAMPLE_IBANS
        extra: dict[str, Any] = {"preview": f"{iban[:2]}\u2026{iban[-4:]}", "country": iban[:2]}
        if example:
            extra["example"] = True
        yield "iban", m.start(), pos, EXAMPLE_FACTOR if example else 1.0, extra
