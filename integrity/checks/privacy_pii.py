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

import ipaddress
import re
from typing import Any, Callable, Iterable, Iterator

from pydantic import Field, model_validator

from integrity.checks._national_ids import (
    _scan_aadhaar,
    _scan_bsn,
    _scan_dni,
    _scan_nino,
    _scan_ssn,
)
from integrity.checks._text_scan import (
    EXAMPLE_FACTOR,
    RawMatch,
    ScanGroup,
    TextScanCheck,
    luhn_ok,
)
from integrity.checks._text_scan import (
    before as _before,
)
from integrity.checks._text_scan import (
    chain as _chain,
)
from integrity.checks._text_scan import (
    mask as _mask,
)
from integrity.checks.base import CheckOptions

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

PRIVATE_IP_FACTOR = 1 / 3

A = re.ASCII


# ---------------------------------------------------------------------------
# e-mail

# local part: letters of any script (RFC 6531), digits, _ % + - and inner dots; domain: ASCII
# labels (IDNs appear as punycode) and a TLD of 2+ letters
_EMAIL = re.compile(
    r"(?<![\w.%+-])"
    r"([\w%+-]+(?:\.[\w%+-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))"
    r"(?![\w-]|\.[A-Za-z0-9])"
)
# "TLDs" that are file extensions and no real top-level domain (real ones such as .pl, .cc,
# .pm, .py, .rs, .sh, .zip, .mov, .map stay valid)
_FILE_EXT = frozenset(
    "png jpg jpeg gif svg svgz webp bmp ico tif tiff heic avif psd css scss less js mjs cjs jsx tsx json "
    "html htm xhtml xml txt yaml yml toml ini cfg conf lock log csv tsv pdf gz tgz xz rar exe dll dylib "
    "jar war class java kt cpp hpp cxx hh rb php swift scala wav ogg flac avi mkv webm woff ttf otf eot "
    "wasm bin dat tmp bak orig old patch diff".split()
)
_RETINA = re.compile(r"[0-9]+(?:\.[0-9]+)?x", A)
_EXAMPLE_DOMAINS = frozenset({"example.com", "example.org", "example.net", "example.edu"})
_EXAMPLE_SUFFIXES = tuple("." + d for d in _EXAMPLE_DOMAINS)
_EXAMPLE_TLDS = frozenset({"test", "invalid", "localhost", "local", "example"})
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@]*:[^\s/@]*$", A)


def _scan_email(text: str) -> Iterator[RawMatch]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        local, domain, tld = m.group(1), m.group(2), m.group(3).lower()
        if tld in _FILE_EXT or _RETINA.fullmatch(domain.split(".", 1)[0]):
            continue
        if _before(text, m.start(), _URL_USERINFO, 80):
            continue  # scheme://user:password@host: credentials in a URL (privacy.secret's), not an address
        dl = domain.lower()
        if tld in _EXAMPLE_TLDS or dl in _EXAMPLE_DOMAINS or dl.endswith(_EXAMPLE_SUFFIXES):
            yield "email", m.start(), m.end(), EXAMPLE_FACTOR, {"preview": f"{local[0]}***@{domain}", "example": True}
        else:
            yield "email", m.start(), m.end(), 1.0, {"preview": f"{local[0]}***@{domain}"}


# ---------------------------------------------------------------------------
# phone numbers

_PHONE = re.compile(
    r"(?<![0-9A-Za-z_+.-])((?:\+|00)?\(?[0-9][0-9 ().-]{6,28}[0-9])(?![0-9A-Za-z_]|[.-][0-9])", A
)
_PHONE_SEP = re.compile(r"[ .()-]+")
_PHONE_CONTEXT = re.compile(
    r"(?i)(?:phone|tel|telephone|mobile|cell|fax|call|whatsapp|sms|contact|ph|mob)[.:#]?\s*(?:no\.?|number|nr\.?)?[.:#]?\s*$"
)
_PHONE_CONTEXT_NEAR = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|call|whatsapp|sms|contact)\b")
_NOT_PHONE_CONTEXT = re.compile(
    r"(?i)(?:version|ver\.?|v|release|build|isbn(?:-1[03])?:?|issn:?|doi:?|id:?|no\.|order|invoice|serial|patent|sku)\s*[:=#]?\s*$"
)
_DATE = re.compile(
    r"(?:19|20)[0-9]{2}[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12][0-9]|3[01])(?![0-9])"
    r"|(?<![0-9])(?:0?[1-9]|[12][0-9]|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)[0-9]{2}",
    A,
)
_PHONE_SEPS_OK = frozenset({" ", "-", ".", "(", ")", ") ", ")-", " (", "-(", ")."})


def _phone_shape(s: str, bare_ok: bool, min_d: int, max_d: int) -> tuple[bool, bool]:
    """(valid, example) for one candidate phone string."""
    if s.count("(") != s.count(")") or s.count("(") > 1:
        return False, False
    if "(" in s:
        i, j = s.index("("), s.index(")")
        inner = s[i + 1 : j]
        if j < i or not inner.isdigit() or len(inner) > 5:
            return False, False
    body = s[1:] if s.startswith("+") else s
    seps = _PHONE_SEP.findall(body)
    if any(sep not in _PHONE_SEPS_OK for sep in seps):
        return False, False
    plain = {sep.strip("()") for sep in seps} - {""}
    if len(plain) > 1 and plain != {" ", "-"}:
        return False, False  # dots mixed with other separators: not a phone layout
    groups = [g for g in _PHONE_SEP.split(body) if g]
    digits = "".join(groups)
    if _DATE.search(s):
        return False, False
    if s.startswith("+") or (s.startswith("00") and s[2:3] not in ("", "0")):
        n = len(digits) - (2 if s.startswith("00") else 0)
        if not (min_d <= n <= max_d) or digits.lstrip("0")[:1] in ("", "0"):
            return False, False
        if not seps and not s.startswith("+"):
            return False, False
        return True, False
    if not seps and not bare_ok:
        return False, False
    if not (min_d <= len(digits) <= max_d):
        return False, False
    # NANP: [1] NXX NXX XXXX
    nanp = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if len(nanp) == 10 and nanp[0] in "23456789" and nanp[3] in "23456789":
        shaped = [len(g) for g in groups]
        if not seps or shaped[-3:] == [3, 3, 4] and len(groups) in (3, 4):
            return True, nanp[3:6] == "555" and nanp[6:8] == "01"
        return False, False
    # trunk-prefix national format: 0 then a non-zero digit, groups of 2+ digits
    if digits[0] == "0" and digits[1] != "0" and len(digits) <= 12:
        if seps and (len(groups) < 2 or min(len(g) for g in groups) < 2):
            return False, False
        if "." in plain and len(groups) < 4:
            return False, False
        return True, False
    return False, False


def _scan_phone_with(min_d: int, max_d: int):
    def scan(text: str) -> Iterator[RawMatch]:
        for m in _PHONE.finditer(text):
            start = m.start()
            if _before(text, start, _NOT_PHONE_CONTEXT, 16):
                continue
            keyword = _before(text, start, _PHONE_CONTEXT, 24)
            s = m.group(1)
            # a phone number followed by other numbers: retry without trailing words
            while True:
                ok, example = _phone_shape(s, keyword, min_d, max_d)
                if ok:
                    break
                cut = s.rfind(" ")
                if cut <= 0:
                    break
                s = s[:cut].rstrip(" .-(")
                if not s or not s[-1].isdigit():
                    break
            if not ok:
                continue
            end = start + len(s)
            if example:
                factor = EXAMPLE_FACTOR
            elif keyword or _before(text, start, _PHONE_CONTEXT_NEAR, 32):
                factor = 1.2
            else:
                factor = 1.0
            extra: dict[str, Any] = {"preview": _mask(s, 2)}
            if example:
                extra["example"] = True
            yield "phone", start, end, factor, extra

    return scan


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


def _scan_card(text: str) -> Iterator[RawMatch]:
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


def _scan_iban(text: str) -> Iterator[RawMatch]:
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


# ---------------------------------------------------------------------------
# IP addresses

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = re.compile(
    rf"(?<![0-9A-Za-z_.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9A-Za-z_]|\.[0-9])",
    A,
)
_VERSION_BEFORE = re.compile(
    r"(?i)(?:\bversions?|\bver\.?|\bv|\breleases?|\brel\.?|\brev\.?|\bbuild|\bfirmware|\bkernel|\bupdate"
    r"|\bsections?|\bsec\.|\bchapters?|\bch\.|\bclause|\bparagraph|\u00a7|\brfc\s*[0-9]+)\s*[:=]?\s*$"
)
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z_:.])((?:[0-9A-Fa-f]{1,4}:|:){2,7}(?:[0-9A-Fa-f]{1,4}|:|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?)"
    r"(?![0-9A-Za-z_:]|\.[0-9A-Za-z])",
    A,
)


def _non_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_private or ip.is_loopback or ip.is_reserved or ip.is_multicast
        or ip.is_link_local or ip.is_unspecified or not ip.is_global
    )


def _scan_ipv4_with(exclude_private: bool):
    def scan(text: str) -> Iterator[RawMatch]:
        for m in _IPV4.finditer(text):
            if _before(text, m.start(), _VERSION_BEFORE, 16):
                continue
            s = m.group(0)
            private = _non_global(ipaddress.IPv4Address(s))
            if private and exclude_private:
                continue
            # four one-digit parts (4.8.0.2) is far more often a version or section number
            version_like = len(s) == 7
            extra: dict[str, Any] = {"preview": s.split(".", 1)[0] + ".*.*.*"}
            if private:
                extra["private"] = True
            if version_like:
                extra["version_like"] = True
            factor = PRIVATE_IP_FACTOR if (private or version_like) else 1.0
            yield "ipv4", m.start(), m.end(), factor, extra

    return scan


def _scan_ipv6_with(exclude_private: bool):
    def scan(text: str) -> Iterator[RawMatch]:
        if "::" not in text and text.count(":") < 7:
            return
        for m in _IPV6.finditer(text):
            s = m.group(1)
            groups = [g for g in re.split(r"[:.]", s) if g]
            if len(groups) < 2 or not any(c.isdigit() for c in s):
                continue
            try:
                ip = ipaddress.IPv6Address(s)
            except ValueError:
                continue
            private = _non_global(ip)
            if private and exclude_private:
                continue
            extra: dict[str, Any] = {"preview": s.split(":", 1)[0] + ":\u2026"}
            if private:
                extra["private"] = True
            yield "ipv6", m.start(), m.end(), PRIVATE_IP_FACTOR if private else 1.0, extra

    return scan


# ---------------------------------------------------------------------------



class PiiCheck(TextScanCheck):
    name = "privacy.pii"
    description = (
        "Personal data in text: e-mail, phone, IP, payment cards (Luhn + IIN), IBAN (mod-97), "
        "US SSN, UK NINO, Spanish DNI/NIE, Dutch BSN, Indian Aadhaar (validated)."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES

    class Options(CheckOptions):
        kinds: list[str] = Field(default_factory=lambda: list(KINDS), description="kinds to report")
        min_score: float = Field(0.0, ge=0, le=1, description="matches scoring below this are dropped")
        scores: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SCORES),
                                         description="per-kind base score (partial overrides merge with the defaults)")
        exclude_private_ip: bool = Field(True, description="drop private/loopback/reserved IPs (else scored x1/3)")
        include_examples: bool = Field(True, description="keep example values (test cards, example.com, ...) at x0.2")
        min_phone_digits: int = Field(10, ge=7, le=15, description="fewest digits a phone number has")
        max_phone_digits: int = Field(15, ge=7, le=15, description="most digits a phone number has (E.164: 15)")
        max_matches: int = Field(20, ge=1, description="matches listed in detail per record (n_matches counts all)")

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
            ScanGroup("email", "@", frozenset({"email"}), _scan_email),
            ScanGroup(
                "numeric",
                r"[0-9](?:[ ()./-]{0,2}[0-9]){6,}",
                frozenset({"phone", "credit_card", "us_ssn", "es_dni", "nl_bsn", "in_aadhaar"}),
                outside_ibans(_chain(
                    *[
                        s
                        for k, s in (
                            ("credit_card", _scan_card),
                            ("us_ssn", _scan_ssn),
                            ("es_dni", _scan_dni),
                            ("nl_bsn", _scan_bsn),
                            ("in_aadhaar", _scan_aadhaar),
                            ("phone", _scan_phone_with(min_d, max_d)),
                        )
                        if k in kinds
                    ]
                )),
            ),
            ScanGroup(
                "alnum_id",
                r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}|(?i:[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D])",
                frozenset({"iban", "uk_nino"}),
                _chain(*[s for k, s in (("iban", _scan_iban), ("uk_nino", _scan_nino)) if k in kinds]),
            ),
            ScanGroup(
                "ipv4",
                r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
                frozenset({"ipv4"}),
                _scan_ipv4_with(exclude_private),
            ),
            ScanGroup(
                "ipv6",
                r"(?:^|[^0-9A-Za-z_.])[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]|$|[^0-9A-Za-z_:.])"
                r"|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}",
                frozenset({"ipv6"}),
                _scan_ipv6_with(exclude_private),
            ),
        ]
