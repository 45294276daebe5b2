"""Provider token formats and credential syntaxes of ``privacy.secret``.

Each provider token is found by its documented format (prefix, alphabet,
length and, where the format has one, an internal structure that is checked:
a Discord bot token's first part is a base64 user id, an Azure storage key
decodes to 64 bytes, ...). Credential *syntaxes* (``curl --user name:pass``,
``Authorization: Bearer ...``, ``scheme://user:pass@host``) have no fixed
format, so their value must look like a secret and not like a placeholder
(``$PASS``, ``<password>``, ``user:password``).

Placeholder and example detection is shared: :func:`placeholder_like` is
true for documentation values (``xxxx``, ``<your-token>``, ``EXAMPLE``,
sequential or repeated characters such as ``12345``/``abcd``/``00000``, very
low entropy) and :data:`KNOWN_EXAMPLES` holds keys published in providers'
documentation; both are reported at the example factor (``info``).
"""
from __future__ import annotations

import base64
import binascii
import math
import operator
import re
from collections import Counter
from typing import Any, Callable, Iterator

from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch, before, redacted_preview

A = re.ASCII

# ---------------------------------------------------------------------------
# placeholders and published examples

_WORDS = ("example", "your", "xxxx", "dummy", "sample", "placeholder", "redacted", "fake", "changeme")
_ANGLE = re.compile(r"<[a-z_ -]+>", re.IGNORECASE)


def _example_words(value: str) -> bool:
    """Placeholder words, ``***``, ``...`` or ``<name>`` in ``value`` (substring tests, no regex scan)."""
    low = value.lower()
    return (any(w in low for w in _WORDS) or "***" in value or "..." in value
            or ("<" in value and _ANGLE.search(value) is not None))


# published in providers' documentation (AWS, jwt.io, Telegram Bot API, Azurite, Stripe docs)
KNOWN_EXAMPLES = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",  # jwt.io's example signature
        "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11",
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    }
)
_SEQ = "0123456789abcdefghijklmnopqrstuvwxyz"


# lower-case letters, keep digits, everything else -> NUL (breaks ascending runs)
_FOLD = {i: (i + 32 if 65 <= i <= 90 else i if (48 <= i <= 57 or 97 <= i <= 122) else 0) for i in range(128)}
_REPEAT = {n: re.compile(r"(.)\1{%d}" % (n - 1), re.DOTALL) for n in (4, 5)}
_STEP = {n: re.compile(rb"(.)\1{%d}" % (n - 1), re.DOTALL) for n in (4, 5)}


def _runs(body: str, run: int) -> bool:
    """A run of ``run`` equal characters or ``run`` consecutive ascending digits/letters.

    Ascending runs (``12345``, ``abcd``) are runs of equal values of ``ord(c) - i``; the
    first 64 characters are enough for a placeholder.
    """
    if _REPEAT[run].search(body):
        return True
    head = body[:64]
    if not head.isascii():
        return False
    codes = head.translate(_FOLD).encode("ascii")
    # ord(c) - i + 64 (in 0..191): equal for consecutive ascending characters; separators are 0,
    # so they give a falling sequence and never a run
    step = bytes(map(operator.sub, codes, range(-64, len(codes) - 64)))
    return _STEP[run].search(step) is not None


_CLOGC = [0.0] + [c * math.log2(c) for c in range(1, 65)]


def entropy64(s: str) -> float:
    """Shannon entropy (bits/char) of the first 64 characters of ``s`` (a table, no per-char logs)."""
    s = s[:64]
    n = len(s)
    if not n:
        return 0.0
    return math.log2(n) - sum(map(_CLOGC.__getitem__, Counter(s).values())) / n


def placeholder_like(value: str, body: str | None = None) -> bool:
    """Whether a token looks like documentation rather than a credential.

    True for published examples, placeholder words, five equal or ascending
    characters (four in bodies shorter than 20: ``xoxb-12345-abcd234``) and
    very low entropy bodies.
    """
    body = value if body is None else body
    if value in KNOWN_EXAMPLES or body in KNOWN_EXAMPLES or _example_words(value):
        return True
    if _runs(body, 4 if len(body) < 20 else 5):
        return True
    # the first 64 characters tell a random body from a patterned one; long bodies cost no more
    return len(body) >= 8 and entropy64(body) < (2.5 if len(body) >= 16 else 2.0)


def mixed_case_digit(s: str) -> bool:
    return any(c.isdigit() for c in s) and any(c.isupper() for c in s) and any(c.islower() for c in s)


def mixed_case(s: str) -> bool:
    return any(c.isupper() for c in s) and any(c.islower() for c in s)


def match(kind: str, text: str, start: int, end: int, factor: float = 1.0, **extra: Any) -> RawMatch:
    """A raw match with its length and a redacted preview (never the value)."""
    detail: dict[str, Any] = {"length": end - start, "preview": redacted_preview(text[start:end])}
    detail.update(extra)
    return kind, start, end, factor, detail


# ---------------------------------------------------------------------------
# provider tokens: kind, literal anchors (one must occur in the text), pattern, validator
# (body -> factor or None to drop); the pattern's last group is the random body


def _b64_len(s: str) -> int | None:
    try:
        return len(base64.b64decode(s + "=" * (-len(s) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _discord_bot(m: re.Match) -> float | None:
    # the first part is the bot's user id (a 17-20 digit snowflake) in base64
    try:
        uid = base64.b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return 1.0 if uid.isdigit() and 15 <= len(uid) <= 21 else None


def _random(m: re.Match) -> float | None:
    body = m.group(m.lastindex or 0)
    return 1.0 if mixed_case_digit(body) or entropy64(body) >= 3.3 else None


def _letters(m: re.Match) -> float | None:
    body = m.group(m.lastindex or 0)
    return 1.0 if mixed_case(body) and entropy64(body) >= 3.5 else None


def _any(m: re.Match) -> float | None:
    return 1.0


def _azure_storage(m: re.Match) -> float | None:
    n = _b64_len(m.group(2))
    want = 64 if m.group(1) == "AccountKey" else 32
    return 1.0 if n == want else None


_VAULT_CONTEXT = re.compile(r"(?i)vault|\bvt\b")


Validator = Callable[[re.Match], "float | None"]

PROVIDER_TOKENS: list[tuple[str, tuple[str, ...], re.Pattern, Validator]] = [
    ("hf_token", ("hf_", "api_org_"),
     re.compile(r"(?<![A-Za-z0-9_])(?:hf_|api_org_)([A-Za-z]{34})(?![A-Za-z0-9_])", A), _letters),
    ("azure_ad_client_secret", ("Q~",),
     re.compile(r"(?<![A-Za-z0-9_~.-])([A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?![A-Za-z0-9_~.-])", A), _random),
    ("azure_storage_key", ("AccountKey=", "SharedAccessKey="),
     re.compile(r"(AccountKey|SharedAccessKey)=([A-Za-z0-9+/]{42,86}={0,2})(?![A-Za-z0-9+/=])", A), _azure_storage),
    ("discord_token", (),
     re.compile(r"(?<![A-Za-z0-9_-])([MNO][A-Za-z0-9_-]{22,26})\.[A-Za-z0-9_-]{6}\.([A-Za-z0-9_-]{27,38})(?![A-Za-z0-9_-])", A),
     _discord_bot),
    ("discord_webhook", ("discord",),
     re.compile(r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/([A-Za-z0-9_-]{60,68})", A),
     _random),
    ("pypi_token", ("pypi-AgE",),
     re.compile(r"(?<![A-Za-z0-9_-])pypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)([A-Za-z0-9_-]{50,})", A), _random),
    ("telegram_bot_token", (":AA",),
     re.compile(r"(?<![0-9A-Za-z_:-])[0-9]{8,10}:(AA[A-Za-z0-9_-]{33})(?![A-Za-z0-9_-])", A), _random),
    ("sourcegraph_token", ("sgp_",),
     re.compile(r"(?<![A-Za-z0-9_])sgp_(?:(?:[a-fA-F0-9]{16}|local)_)?([a-fA-F0-9]{40})(?![A-Za-z0-9_])", A), _any),
    ("notion_token", ("secret_", "ntn_"),
     re.compile(r"(?<![A-Za-z0-9_])(?:secret_([A-Za-z0-9]{43})|ntn_[0-9]{11}([A-Za-z0-9]{35}))(?![A-Za-z0-9_])", A),
     _random),
    ("flyio_token", ("fo1_", "fm1", "fm2_"),
     re.compile(r"(?<![A-Za-z0-9_])(?:FlyV1 )?(?:fo1_([A-Za-z0-9_-]{43})|fm1[ar]_([A-Za-z0-9+/]{100,}={0,3})|"
                r"fm2_([A-Za-z0-9+/]{100,}={0,3}))", A), _random),
    ("vault_token", ("hvs.", "hvb.", "hvr."),
     re.compile(r"(?<![A-Za-z0-9_.-])hv[sbr]\.([A-Za-z0-9_-]{90,300})(?![A-Za-z0-9_-])", A), _random),
    ("shopify_token", ("shp",),
     re.compile(r"(?<![A-Za-z0-9_])shp(?:at|ca|pa|ss)_([a-fA-F0-9]{32})(?![A-Za-z0-9_])", A), _any),
    ("digitalocean_token", ("_v1_",),
     re.compile(r"(?<![A-Za-z0-9_])do[opr]_v1_([a-f0-9]{64})(?![A-Za-z0-9_])", A), _any),
    ("databricks_token", ("dapi",),
     re.compile(r"(?<![A-Za-z0-9_])dapi([a-f0-9]{32})(?:-[0-9])?(?![A-Za-z0-9_])", A), _any),
    ("doppler_token", ("dp.",),
     re.compile(r"(?<![A-Za-z0-9_.])dp\.(?:pt|st|sa|ct|scim|audit)\.([A-Za-z0-9]{40,44})(?![A-Za-z0-9_])", A), _random),
    ("grafana_token", ("glsa_", "glc_"),
     re.compile(r"(?<![A-Za-z0-9_])(?:glsa_([A-Za-z0-9]{32})_[A-Fa-f0-9]{8}|glc_([A-Za-z0-9+/]{32,400}={0,2}))"
                r"(?![A-Za-z0-9_])", A), _random),
    ("postman_key", ("PMAK-",),
     re.compile(r"(?<![A-Za-z0-9_])PMAK-([a-f0-9]{24}-[a-f0-9]{34})(?![A-Za-z0-9_])", A), _any),
    ("linear_key", ("lin_api_",),
     re.compile(r"(?<![A-Za-z0-9_])lin_api_([A-Za-z0-9]{40})(?![A-Za-z0-9_])", A), _random),
    ("age_secret_key", ("AGE-SECRET-KEY-1",),
     re.compile(r"AGE-SECRET-KEY-1([QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})(?![A-Z0-9])", A), _any),
    ("tailscale_key", ("tskey-",),
     re.compile(r"(?<![A-Za-z0-9_])tskey-(?:auth|api|client|scim|webhook)-[A-Za-z0-9]{6,24}-([A-Za-z0-9]{20,64})"
                r"(?![A-Za-z0-9_])", A), _random),
    ("newrelic_key", ("NRAK-",),
     re.compile(r"(?<![A-Za-z0-9_])NRAK-([A-Z0-9]{27})(?![A-Za-z0-9_])", A), _any),
    ("replicate_token", ("r8_",),
     re.compile(r"(?<![A-Za-z0-9_])r8_([A-Za-z0-9]{37})(?![A-Za-z0-9_])", A), _random),
    ("groq_key", ("gsk_",),
     re.compile(r"(?<![A-Za-z0-9_])gsk_([A-Za-z0-9]{52})(?![A-Za-z0-9_])", A), _random),
]

#: RE2 prefilter covering every provider token and credential syntax (a superset)
PREFILTER = (
    r"hf_[A-Za-z]{34}|api_org_[A-Za-z]{34}|[0-9]Q~|AccountKey=|SharedAccessKey=|\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27}|"
    r"discord(?:app)?\.com/api/webhooks|pypi-AgE|[0-9]{8}:AA|sgp_|secret_[A-Za-z0-9]{43}|ntn_[0-9]{11}|fo1_|fm1[ar]_|"
    r"fm2_|hv[sbr]\.|shp(?:at|ca|pa|ss)_|do[opr]_v1_|dapi[a-f0-9]{32}|dp\.[a-z]+\.|glsa_|glc_|PMAK-|lin_api_|"
    r"AGE-SECRET-KEY|tskey-|NRAK-|r8_|gsk_|"
    r"(?i:vault)[^\n]{0,40}s\.[A-Za-z0-9]{24}|(?i:sumo)[A-Za-z0-9_.-]{0,30}[\"']?[ \t]*[:=]|"
    r"(?:-u|--user)[ \t=]+\S*:|(?:-H|--header)[ \t=]+[\"'][A-Za-z-]*(?i:key|token)[ \t]*:|"
    r"(?i:authorization)[\"']?[ \t]*[:=]|://[^\s/@:]*:[^\s/@]+@|"
    r"machine\s+\S+\s+login|mysql[^\n]*[ \t]-p\S|docker[ \t]+login|PGPASSWORD=|REDISCLI_AUTH=|"
    r"<(?i:password|passwd|secret|token|api_?key|client_?secret|access_?key)>"
)

# legacy Vault service tokens ``s.`` + 24: only with "vault" just before
_VAULT_LEGACY = re.compile(r"(?<![A-Za-z0-9_.-])s\.([A-Za-z0-9]{24})(?![A-Za-z0-9_.-])", A)


# Sumo Logic access ids (su + 12) and keys (64 alphanumerics) have no prefix of their own: only
# when assigned to a name holding "sumo"
_SUMO = re.compile(
    r"(?i)sumo[A-Za-z0-9_.-]{0,30}[\"']?[ \t]*(?::=|=>|=|:)[ \t]*[\"'`]?((?-i:su[A-Za-z0-9]{12})|[A-Za-z0-9]{64})"
    r"(?![A-Za-z0-9])",
    A,
)


def _scan_sumo(text: str) -> Iterator[RawMatch]:
    if "umo" not in text and "UMO" not in text:
        return
    for m in _SUMO.finditer(text):
        body = m.group(1)
        extra: dict[str, Any] = {"part": "access_id" if len(body) == 14 else "access_key"}
        factor = 1.0
        if placeholder_like(body, body[2:] if len(body) == 14 else body) or not mixed_case_digit(body):
            factor, extra["example"] = EXAMPLE_FACTOR, True
        yield match("sumologic_key", text, m.start(1), m.end(1), factor, **extra)


class AnchorIndex:
    """Which of several patterns can match a text, from literal anchors found in one regex pass.

    Pattern ``i`` needs one of ``anchors[i]`` in the text (an empty tuple: always tried).
    """

    def __init__(self, anchors: list[tuple[str, ...]]):
        self._always = [i for i, a in enumerate(anchors) if not a]
        self._by_anchor: dict[str, list[int]] = {}
        for i, group in enumerate(anchors):
            for a in group:
                self._by_anchor.setdefault(a, []).append(i)
        alternatives = sorted(self._by_anchor, key=len, reverse=True)
        self._regex = re.compile("|".join(re.escape(a) for a in alternatives))

    def which(self, text: str) -> list[int]:
        todo = set(self._always)
        for a in set(self._regex.findall(text)):
            todo.update(self._by_anchor[a])
        return sorted(todo)


_PROVIDER_INDEX = AnchorIndex([anchors for _, anchors, _, _ in PROVIDER_TOKENS])


def scan_provider_tokens(text: str) -> Iterator[RawMatch]:
    yield from _scan_sumo(text)
    for i in _PROVIDER_INDEX.which(text):
        kind, _, pattern, validate = PROVIDER_TOKENS[i]
        for m in pattern.finditer(text):
            factor = validate(m)
            if factor is None:
                continue
            body = next((g for g in reversed(m.groups()) if g), m.group(0))
            extra: dict[str, Any] = {}
            if kind == "vault_token":
                body = body.lstrip("A")  # batch tokens start with zero bytes in base64 (hvb.AAAAAQ...)
            if placeholder_like(m.group(0), body):
                factor, extra["example"] = EXAMPLE_FACTOR, True
            # an Azure key is reported without its "AccountKey=" label
            start, end = m.span(2) if kind == "azure_storage_key" else m.span()
            yield match(kind, text, start, end, factor, **extra)
    if "s." in text:
        for m in _VAULT_LEGACY.finditer(text):
            if before(text, m.start(), _VAULT_CONTEXT, 40) and mixed_case_digit(m.group(1)):
                extra = {"legacy": True}
                factor = 1.0
                if placeholder_like(m.group(0), m.group(1)):
                    factor, extra["example"] = EXAMPLE_FACTOR, True
                yield match("vault_token", text, m.start(), m.end(), factor, **extra)


# ---------------------------------------------------------------------------
# credential syntaxes

# values that are placeholders or stand-ins, never real passwords
_NOT_PASSWORD = re.compile(
    r"(?i)^(?:\$.*|%[A-Za-z_]+%|<.*>|\[.*\]|\{.*\}|password|passwd|pass|pwd|secret|changeme|change_me|admin|root|"
    r"test|testing|guest|anonymous|user|username|demo|default|letmein|qwerty|token|apikey|api_key|xxx+|\*+|\.+)$"
)


def password_ok(user: str, password: str, min_len: int = 6) -> bool:
    """Whether ``password`` (next to ``user``) can be a real credential rather than a stand-in."""
    if len(password) < min_len or password == user or _NOT_PASSWORD.match(password):
        return False
    if password.startswith("$") or "${" in password or "$(" in password or "{{" in password or "<" in password \
            or "%(" in password:
        return False  # shell/template variables
    if _example_words(password):
        return False
    return len(set(password)) >= 4 and not _runs(password, 5)


_CURL_USER = re.compile(
    r"""(?:^|\s)(?:-u|--user)(?:=|[ \t]+)(?:"(?P<u1>[^"\s:]{0,64}):(?P<p1>[^"\s]{0,128})"|"""
    r"""'(?P<u2>[^'\s:]{0,64}):(?P<p2>[^'\s]{0,128})'|"""
    r"""(?P<u3>[A-Za-z0-9_.@+-]{1,64}):(?:'(?P<p3>[^'\s]{1,128})'|"(?P<p4>[^"\s]{1,128})"|(?P<p5>[^\s"'`]{1,128})))"""
    r"""(?=\s|$)""",
    A,
)
# an API key or token in a curl header other than Authorization (apikey:, Api-Token:, X-Foo-ApiKey:)
_KEY_HEADER = re.compile(
    r"""(?:-H|--header)(?:=|[ \t]+)["'](?i:x-[a-z-]*)?(?i:api-?)?(?i:key|token)[ \t]*:[ \t]*([A-Za-z0-9._~+/=-]{10,})["']""",
    A,
)
_CURL = re.compile(r"(?i)\bcurl\b")
_AUTH_HEADER = re.compile(
    r"""(?i)\bauthorization["']?[ \t]*[:=][ \t]*["']?(?:(bearer|token|api-token|basic)[ \t]+)?([A-Za-z0-9._~+/-]{8,}=*)""", A
)
_URL_CREDS = re.compile(
    r"(?<![A-Za-z0-9+.-])([a-z][a-z0-9+.-]{1,20})://([^\s:/@\"'<>]{1,64}):([^\s/@\"'<>]{1,128})@([A-Za-z0-9.-]+)", A
)


# command lines and files that carry a password in a fixed place
_NETRC = re.compile(r"\bmachine[ \t\r\n]+\S{1,256}[ \t\r\n]+login[ \t\r\n]+(\S{1,256})[ \t\r\n]+password[ \t\r\n]+(\S{1,256})", A)
_PGPASSWORD = re.compile(r"\b(?:PGPASSWORD|REDISCLI_AUTH)=[\"']?([^\s\"']{1,256})", A)
# a command's own line (to its end, at most _CLI_LINE characters) holds its user and password options:
# found per occurrence of the command with plain searches, never one regex spanning the line (a line
# with thousands of "-u" would make such a regex backtrack quadratically)
_CLI_LINE = 300
_CLI_COMMANDS = [  # (syntax, command pattern, user option, password option)
    ("mysql -p", re.compile(r"\bmysql(?:dump|admin)?\b", A),
     re.compile(r"[ \t]-u[ \t]?(\S{1,64})", A), re.compile(r"[ \t]-p(\S{1,128})", A)),
    ("docker login", re.compile(r"\bdocker[ \t]+login\b", A),
     re.compile(r"[ \t](?:-u|--username)[ =](\S{1,64})", A), re.compile(r"[ \t](?:-p|--password)[ =](\S{1,128})", A)),
]
_MAX_COMMANDS = 50  # occurrences of one command examined per text


def _cli_passwords(text: str) -> Iterator[tuple[str, str, int, int]]:
    """(syntax, user, start, end of the password) for passwords given on a command line."""
    for syntax, command, user_opt, pass_opt in _CLI_COMMANDS:
        if syntax.split()[0] not in text:
            continue
        for k, m in enumerate(command.finditer(text)):
            if k >= _MAX_COMMANDS:
                break
            end = text.find("\n", m.end(), m.end() + _CLI_LINE)
            end = min(len(text), m.end() + _CLI_LINE) if end == -1 else end
            u = user_opt.search(text, m.end(), end)
            pw = pass_opt.search(text, m.end(), end)
            if u and pw:
                yield syntax, u.group(1), pw.start(1), pw.end(1)
    if "machine" in text:
        for m in _NETRC.finditer(text):
            yield "netrc", m.group(1), m.start(2), m.end(2)
    if "=" in text:
        for m in _PGPASSWORD.finditer(text):
            yield "PGPASSWORD", "", m.start(1), m.end(1)


_XML_SECRET = re.compile(
    r"<((?i:password|passwd|secret|token|api_?key|client_?secret|access_?key))>([^<\s]{8,256})</\1>", A
)


def _secret_like(value: str, min_len: int = 16) -> bool:
    """A bearer token: ``min_len``+ characters, not an identifier in capitals, some entropy."""
    if len(value) < min_len or placeholder_like(value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    return classes >= 2 and entropy64(value) >= 3.0


def scan_credential_syntax(text: str) -> Iterator[RawMatch]:
    """``curl --user``, ``Authorization:`` headers and credentials in URLs."""
    if ("curl" in text or "CURL" in text or "Curl" in text) and _CURL.search(text):
        for m in _CURL_USER.finditer(text):
            d = m.groupdict()
            ui = next(k for k in ("u1", "u2", "u3") if d[k] is not None)
            pi = next((k for k in ("p1", "p2", "p3", "p4", "p5") if d[k] is not None), None)
            user, pw = d[ui], d[pi] if pi else ""
            if not pw and ui != "u3":
                ui, pi, user, pw = "", ui, "", user  # "token:": a token given as the user name
            if not pi or not password_ok(user, pw):
                continue
            yield match("basic_auth", text, m.start(pi), m.end(pi), 1.0, syntax="curl --user")
        for m in _KEY_HEADER.finditer(text):
            if _secret_like(m.group(1), 10):
                yield match("auth_header", text, m.start(1), m.end(1), 1.0, scheme="key header")
    if "uthorization" in text or "UTHORIZATION" in text:
        for m in _AUTH_HEADER.finditer(text):
            scheme, value = (m.group(1) or "").lower(), m.group(2)
            if scheme == "basic":
                try:
                    user, _, pw = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    continue
                if not pw or not password_ok(user, pw):
                    continue
                yield match("basic_auth", text, m.start(2), m.end(2), 1.0, syntax="Authorization: Basic")
            elif value.startswith("eyJ"):
                continue  # a JWT: the jwt detector validates and reports it
            elif _secret_like(value):
                yield match("auth_header", text, m.start(2), m.end(2), 1.0, scheme=scheme)
    for syntax, user, start, end in _cli_passwords(text):
        if password_ok(user, text[start:end], min_len=8):
            yield match("basic_auth", text, start, end, 1.0, syntax=syntax)
    if "</" in text:
        for m in _XML_SECRET.finditer(text):
            value = m.group(2)
            if password_ok("", value, min_len=8) and not placeholder_like(value):
                yield match("basic_auth", text, m.start(2), m.end(2), 1.0, syntax="xml <" + m.group(1)[:16] + ">")
    if "://" in text:
        for m in _URL_CREDS.finditer(text):
            user, pw = m.group(2), m.group(3)
            if not password_ok(user, pw, min_len=8):
                continue
            yield match("url_credentials", text, m.start(3), m.end(3), 1.0, scheme=m.group(1))
