"""Contact detectors of ``privacy.pii``: e-mail addresses, phone numbers and IP addresses
(see the table in :mod:`integrity.checks.privacy_pii`)."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterator

from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch
from integrity.checks._text_scan import before as _before
from integrity.checks._text_scan import mask as _mask

A = re.ASCII
PRIVATE_IP_FACTOR = 1 / 3


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


def scan_email(text: str) -> Iterator[RawMatch]:
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


def scan_phone_with(min_d: int, max_d: int):
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


def scan_ipv4_with(exclude_private: bool):
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


def scan_ipv6_with(exclude_private: bool):
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
