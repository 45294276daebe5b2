"""Token detectors of ``privacy.secret``: provider tokens with a fixed prefix, private keys
(PEM blocks, service-account JSON) and JWTs, and the test for documentation examples
(see the table in :mod:`integrity.checks.privacy_secret`)."""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Iterator

from integrity.checks._secret_formats import KNOWN_EXAMPLES, AnchorIndex, entropy64, placeholder_like
from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch, redacted_preview, shannon_entropy

A = re.ASCII

_EXAMPLE_VALUE = re.compile(
    r"(?i)example|your|x{4}|dummy|sample|placeholder|0123456789|1234567890|abcdefgh|redacted|\*{3}|\.\.\."
)
_EXAMPLE_EXACT = frozenset({"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})


def looks_example(value: str, body: str | None = None) -> bool:
    body = value if body is None else body
    return (
        value in _EXAMPLE_EXACT
        or _EXAMPLE_VALUE.search(value) is not None
        or (len(body) >= 8 and entropy64(body) < 2.5)
        or placeholder_like(value, body)
    )


# Slack's documented layouts: numeric ids of 8+ digits and a random last part of 20+ characters
# (xoxb-<team>-<bot>-<24>, xoxp-<team>-<user>-<id>-<32 hex>, xapp-1-<app>-<id>-<64 hex>);
# anything shorter (xoxb-12345-abcd234) is a documentation stand-in
_SLACK_ID = re.compile(r"[0-9]{8,}", A)


def _slack_structured(body: str) -> bool:
    parts = body.split("-")
    return len(parts) >= 2 and len(parts[-1]) >= 20 and any(_SLACK_ID.fullmatch(p) for p in parts[:-1])


def secret_match(kind: str, text: str, start: int, end: int, factor: float = 1.0, **extra: Any) -> RawMatch:
    value = text[start:end]
    detail: dict[str, Any] = {"length": end - start, "preview": redacted_preview(value)}
    detail.update(extra)
    return kind, start, end, factor, detail


# ---------------------------------------------------------------------------
# token patterns: (kind, compiled pattern, group holding the token body for the example test)

_TOKEN_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("aws_access_key_id", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)([A-Z0-9]{16})(?![A-Za-z0-9])", A)),
    ("gcp_api_key", re.compile(r"(?<![A-Za-z0-9_-])AIza([0-9A-Za-z_-]{35})(?![0-9A-Za-z_-])", A)),
    ("github_token", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_([A-Za-z0-9]{36,251})(?![A-Za-z0-9_])", A)),
    ("github_token", re.compile(r"(?<![A-Za-z0-9_])github_pat_([A-Za-z0-9_]{50,244})(?![A-Za-z0-9_])", A)),
    ("gitlab_token", re.compile(r"(?<![A-Za-z0-9_-])glpat-([0-9A-Za-z_-]{20,64})(?![0-9A-Za-z_-])", A)),
    ("slack_token", re.compile(r"(?<![A-Za-z0-9_-])(?:xox[abposr]|xapp)-([0-9A-Za-z-]{10,250})(?![0-9A-Za-z_-])", A)),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/+-]{20,200})", A)),
    ("stripe_key", re.compile(r"(?<![A-Za-z0-9_])[sr]k_(live|test)_([0-9A-Za-z]{16,247})(?![0-9A-Za-z_])", A)),
    ("sendgrid_key", re.compile(r"(?<![A-Za-z0-9_-])SG\.([0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43})(?![0-9A-Za-z_-])", A)),
    ("openai_key", re.compile(r"(?<![A-Za-z0-9_-])sk-((?:proj|svcacct|admin|ant)-)?([A-Za-z0-9_-]{20,250})(?![A-Za-z0-9_-])", A)),
    ("google_oauth", re.compile(r"(?<![A-Za-z0-9_-])(?:ya29\.|GOCSPX-)([0-9A-Za-z_-]{20,2048})(?![0-9A-Za-z_-])", A)),
    ("npm_token", re.compile(r"(?<![A-Za-z0-9_])npm_([A-Za-z0-9]{36})(?![A-Za-z0-9_])", A)),
    ("twilio_api_key", re.compile(r"(?<![A-Za-z0-9])SK([0-9a-fA-F]{32})(?![A-Za-z0-9])", A)),
]

TOKEN_PREFILTER = (
    r"AKIA|ASIA|ABIA|ACCA|AIza|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|xapp-|hooks\.slack\.com|"
    r"[sr]k_(?:live|test)_|SG\.|sk-|ya29\.|GOCSPX-|npm_|SK[0-9a-fA-F]{32}|PRIVATE KEY|eyJ"
)


# literal anchors of each pattern above, in order: a pattern runs only on texts holding one
_TOKEN_INDEX = AnchorIndex([
    ("AKIA", "ASIA", "ABIA", "ACCA"), ("AIza",), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), ("github_pat_",),
    ("glpat-",), ("xox", "xapp-"), ("hooks.slack.com",), ("k_live_", "k_test_"), ("SG.",), ("sk-",),
    ("ya29.", "GOCSPX-"), ("npm_",), ("SK",),
])


def scan_tokens(text: str) -> Iterator[RawMatch]:
    for i in _TOKEN_INDEX.which(text):
        kind, pattern = _TOKEN_PATTERNS[i]
        for m in pattern.finditer(text):
            body = m.group(m.lastindex or 0)
            value = m.group(0)
            extra: dict[str, Any] = {}
            factor = 1.0
            if kind == "slack_token":
                if not any(c.isdigit() for c in body):
                    continue
                if not _slack_structured(body):
                    factor, extra["structured"] = 0.5, False
            if kind == "stripe_key":
                extra["mode"] = m.group(1)
                if m.group(1) == "test":
                    factor = 0.4
            if kind == "openai_key":
                if "T3BlbkFJ" not in body:
                    if not (
                        any(c.isdigit() for c in body)
                        and any(c.isupper() for c in body)
                        and any(c.islower() for c in body)
                        and shannon_entropy(body) >= 3.5
                    ):
                        continue
                if m.group(1) == "ant-":
                    extra["provider"] = "anthropic"
            if looks_example(value, body):
                factor, extra["example"] = EXAMPLE_FACTOR, True
            yield secret_match(kind, text, m.start(), m.end(), factor, **extra)


# ---------------------------------------------------------------------------
# private keys

_PEM_BEGIN = re.compile(r"-----BEGIN ((?:RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY( BLOCK)?-----", A)
# optional armour headers (Proc-Type:, DEK-Info:, Version:), then a base64 line; newlines may be
# real or JSON-escaped ("\\n")
_PEM_BODY = re.compile(
    r"(?:\s|\\[nr])*(?:[A-Za-z-]+:[^\n\\:]*(?:\r?\n|\\[nr])(?:\s|\\[nr])*)*[A-Za-z0-9+/]{40,}", A
)
_PEM_END = re.compile(r"-----END (?:(?:RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----", A)
_B64_RUN = re.compile(r"[A-Za-z0-9+/=]*(?:(?:\r?\n|\\n)[A-Za-z0-9+/=]{16,})*", A)
_SA_KEY = re.compile(r"\"private_key\"\s*:\s*\"-----BEGIN PRIVATE KEY-----", A)

_MAX_KEY_CHARS = 20000


def _pem_span(text: str, header_end: int) -> tuple[int, bool]:
    """(end of the key block, whether a base64 body follows the header)."""
    body = _PEM_BODY.match(text, header_end, min(len(text), header_end + 400))
    if body is None:
        return header_end, False
    end = _PEM_END.search(text, body.end(), min(len(text), header_end + _MAX_KEY_CHARS))
    if end is not None:
        return end.end(), True
    run = _B64_RUN.match(text, body.end())
    return (run.end() if run else body.end()), True


def scan_private_keys(text: str) -> Iterator[RawMatch]:
    if "PRIVATE KEY" not in text:
        return
    for m in _SA_KEY.finditer(text):
        end, has_body = _pem_span(text, m.end())
        if not has_body:
            continue
        close = text.find('"', end, end + 8)
        end = close + 1 if close != -1 else end
        yield secret_match("gcp_service_account_key", text, m.start(), end)
    for m in _PEM_BEGIN.finditer(text):
        key_type = (m.group(1) or "").strip() or "PKCS8"
        end, has_body = _pem_span(text, m.end())
        encrypted = key_type == "ENCRYPTED" or "Proc-Type: 4,ENCRYPTED" in text[m.end() : m.end() + 200]
        factor = 1.0 if has_body else 0.3
        if encrypted:
            factor *= 0.85
        yield secret_match("private_key", text, m.start(), end, factor, key_type=key_type, has_body=has_body, encrypted=encrypted)


# ---------------------------------------------------------------------------
# JWT

_JWT = re.compile(
    r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,})\.([A-Za-z0-9_-]{4,})\.([A-Za-z0-9_-]*)(?![A-Za-z0-9_-]|\.[A-Za-z0-9_-])", A
)


def _b64url_json(part: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def scan_jwt(text: str) -> Iterator[RawMatch]:
    if "eyJ" not in text:
        return
    for m in _JWT.finditer(text):
        header = _b64url_json(m.group(1))
        if not isinstance(header, dict) or "alg" not in header:
            continue
        alg = str(header.get("alg"))
        unsigned = alg.lower() == "none" or not m.group(3)
        payload_json = isinstance(_b64url_json(m.group(2)), dict)
        extra: dict[str, Any] = {"alg": alg[:16], "payload_json": payload_json}
        factor = 0.6 if unsigned else 1.0
        if m.group(3) in KNOWN_EXAMPLES:  # jwt.io's example token
            factor, extra["example"] = EXAMPLE_FACTOR, True
        yield secret_match("jwt", text, m.start(), m.end(), factor, **extra)
