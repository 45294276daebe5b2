"""``privacy.secret``: credentials and keys in text fields.

Same machinery as ``privacy.pii`` (:mod:`integrity.checks._text_scan`): a
column-wide RE2 prefilter, then Python patterns plus validation on the few
candidate records; one finding per record, ``score`` = the highest match score.
Each match in ``detail["matches"]`` has ``kind``, ``field``, ``start``/``end``
(character offsets into the field), ``length``, ``score``, a redacted
``preview`` (first 4 characters + "…") and ``"redact": true``; the secret
itself is never written anywhere.

Kinds and default scores (option ``scores``):

==========================  =====  ===================================================
kind                        score  what
==========================  =====  ===================================================
``private_key``             1.0    ``-----BEGIN [RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED ]PRIVATE
                                   KEY[ BLOCK]-----`` followed by a base64 body; the
                                   span runs to the END line. Encrypted keys x0.85; a
                                   bare header without a body (documentation) x0.3.
``gcp_service_account_key`` 1.0    ``"private_key": "-----BEGIN PRIVATE KEY-----...``
                                   (service-account JSON).
``aws_access_key_id``       0.95   ``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16 upper-case
                                   letters/digits.
``aws_secret_access_key``   0.95   40 base64 characters assigned to a name holding
                                   ``aws`` or ``secret_access_key``.
``github_token``            0.95   ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36, and
                                   fine-grained ``github_pat_...``.
``gitlab_token``            0.95   ``glpat-`` + 20+.
``stripe_key``              0.95   ``sk_live_``/``rk_live_``; test-mode keys
                                   (``sk_test_``/``rk_test_``) x0.4.
``sendgrid_key``            0.95   ``SG.<22>.<43>``.
``openai_key``              0.9    ``sk-``/``sk-proj-``/``sk-svcacct-``/``sk-admin-``
                                   (and Anthropic ``sk-ant-``) keys of 20+ characters
                                   with mixed case, a digit and entropy >= 3.5 bits/char;
                                   the legacy ``T3BlbkFJ`` marker counts as proof.
``gcp_api_key``             0.9    ``AIza`` + 35.
``google_oauth``            0.9    OAuth access tokens ``ya29.``, client secrets
                                   ``GOCSPX-``.
``slack_token``             0.9    ``xox[abposr]-...`` (with a digit), ``xapp-...``.
``slack_webhook``           0.9    ``https://hooks.slack.com/services/...``.
``npm_token``               0.9    ``npm_`` + 36.
``twilio_api_key``          0.85   ``SK`` + 32 hex (API key SID; only the upper-case
                                   ``SK`` prefix and hex body).
``jwt``                     0.8    ``header.payload.signature`` in base64url whose header
                                   decodes to a JSON object with ``alg``; unsigned
                                   (``alg: none`` or empty signature) x0.6.
``secret_assignment``       0.7    ``password|passwd|pwd|secret|token|api_key|access_key|
                                   auth_token|private_key|client_secret|credentials``
                                   (as part of a name) assigned with ``=``, ``:``, ``:=``
                                   or ``=>`` to a value of at least
                                   ``min_secret_length`` (16) characters with Shannon
                                   entropy >= ``min_entropy`` (3.0 bits/char), a digit
                                   or three character classes (so identifiers such as
                                   ``myPasswordField`` do not count) and no placeholder
                                   look. The keyword must start and end a component of
                                   the name (``db_password``, ``dbPassword``; not
                                   ``bypass``, ``passive``).
==========================  =====  ===================================================

Placeholders (``xxxx``, ``<your-token>``, ``${VAR}``, ``{{ var }}``, ``changeme``,
``your...``, one repeated character, calls and references such as
``os.environ[...]``) are never reported as ``secret_assignment``. Values of the
other kinds that look like documentation examples (AWS's ``AKIAIOSFODNN7EXAMPLE``
and ``wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY``, anything containing
``EXAMPLE``/``your``/``xxxx``/``0123456789``, or with very low entropy) are kept
at x0.2 with ``"example": true`` (``info`` under the usual thresholds), or
dropped with ``include_examples: false``.

A final score is ``min(1, scores[kind] * factor)``; severity is left to the
policy, ``default_severity`` is ``warn``. Options (policy ``options``;
defaults, ranges and descriptions in :class:`SecretCheck.Options`): ``kinds`` (all),
``min_score`` (0.0), ``scores`` (partial overrides merge with the table above),
``include_examples`` (true), ``min_entropy`` (3.0 bits/char) and
``min_secret_length`` (16) for ``secret_assignment``, ``max_matches`` (20).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Iterator

from pydantic import Field

from integrity.checks._secret_formats import (
    PREFILTER as _FORMATS_PREFILTER,
)
from integrity.checks._secret_formats import (
    KNOWN_EXAMPLES,
    AnchorIndex,
    entropy64,
    placeholder_like,
    scan_credential_syntax,
    scan_provider_tokens,
)
from integrity.checks._text_scan import (
    EXAMPLE_FACTOR,
    RawMatch,
    ScanGroup,
    TextScanCheck,
    redacted_preview,
    shannon_entropy,
)
from integrity.checks._text_scan import (
    chain as _chain,
)
from integrity.checks.base import CheckOptions

#: kinds added for provider tokens and credential syntaxes (:mod:`integrity.checks._secret_formats`)
NEW_SCORES = {
    "age_secret_key": 1.0,
    "hf_token": 0.95,
    "azure_storage_key": 0.95,
    "pypi_token": 0.95,
    "vault_token": 0.95,
    "shopify_token": 0.95,
    "digitalocean_token": 0.95,
    "doppler_token": 0.95,
    "azure_ad_client_secret": 0.9,
    "discord_token": 0.9,
    "discord_webhook": 0.9,
    "telegram_bot_token": 0.9,
    "sourcegraph_token": 0.9,
    "notion_token": 0.9,
    "flyio_token": 0.9,
    "databricks_token": 0.9,
    "grafana_token": 0.9,
    "postman_key": 0.9,
    "linear_key": 0.9,
    "tailscale_key": 0.9,
    "replicate_token": 0.9,
    "groq_key": 0.9,
    "newrelic_key": 0.85,
    "sumologic_key": 0.85,
    "basic_auth": 0.85,
    "auth_header": 0.85,
    "url_credentials": 0.85,
}
NEW_KINDS = tuple(NEW_SCORES)

KINDS = (
    "private_key",
    "gcp_service_account_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "github_token",
    "gitlab_token",
    "stripe_key",
    "sendgrid_key",
    "openai_key",
    "gcp_api_key",
    "google_oauth",
    "slack_token",
    "slack_webhook",
    "npm_token",
    "twilio_api_key",
    "jwt",
    "secret_assignment",
    *NEW_KINDS,
)

DEFAULT_SCORES = {
    "private_key": 1.0,
    "gcp_service_account_key": 1.0,
    "aws_access_key_id": 0.95,
    "aws_secret_access_key": 0.95,
    "github_token": 0.95,
    "gitlab_token": 0.95,
    "stripe_key": 0.95,
    "sendgrid_key": 0.95,
    "openai_key": 0.9,
    "gcp_api_key": 0.9,
    "google_oauth": 0.9,
    "slack_token": 0.9,
    "slack_webhook": 0.9,
    "npm_token": 0.9,
    "twilio_api_key": 0.85,
    "jwt": 0.8,
    "secret_assignment": 0.7,
    **NEW_SCORES,
}

A = re.ASCII

_EXAMPLE_VALUE = re.compile(
    r"(?i)example|your|x{4}|dummy|sample|placeholder|0123456789|1234567890|abcdefgh|redacted|\*{3}|\.\.\."
)
_EXAMPLE_EXACT = frozenset({"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})


def _looks_example(value: str, body: str | None = None) -> bool:
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


def _match(kind: str, text: str, start: int, end: int, factor: float = 1.0, **extra: Any) -> RawMatch:
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

_TOKEN_PREFILTER = (
    r"AKIA|ASIA|ABIA|ACCA|AIza|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|xapp-|hooks\.slack\.com|"
    r"[sr]k_(?:live|test)_|SG\.|sk-|ya29\.|GOCSPX-|npm_|SK[0-9a-fA-F]{32}|PRIVATE KEY|eyJ"
)


# literal anchors of each pattern above, in order: a pattern runs only on texts holding one
_TOKEN_INDEX = AnchorIndex([
    ("AKIA", "ASIA", "ABIA", "ACCA"), ("AIza",), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), ("github_pat_",),
    ("glpat-",), ("xox", "xapp-"), ("hooks.slack.com",), ("k_live_", "k_test_"), ("SG.",), ("sk-",),
    ("ya29.", "GOCSPX-"), ("npm_",), ("SK",),
])


def _scan_tokens(text: str) -> Iterator[RawMatch]:
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
            if _looks_example(value, body):
                factor, extra["example"] = EXAMPLE_FACTOR, True
            yield _match(kind, text, m.start(), m.end(), factor, **extra)


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


def _scan_private_keys(text: str) -> Iterator[RawMatch]:
    if "PRIVATE KEY" not in text:
        return
    for m in _SA_KEY.finditer(text):
        end, has_body = _pem_span(text, m.end())
        if not has_body:
            continue
        close = text.find('"', end, end + 8)
        end = close + 1 if close != -1 else end
        yield _match("gcp_service_account_key", text, m.start(), end)
    for m in _PEM_BEGIN.finditer(text):
        key_type = (m.group(1) or "").strip() or "PKCS8"
        end, has_body = _pem_span(text, m.end())
        encrypted = key_type == "ENCRYPTED" or "Proc-Type: 4,ENCRYPTED" in text[m.end() : m.end() + 200]
        factor = 1.0 if has_body else 0.3
        if encrypted:
            factor *= 0.85
        yield _match("private_key", text, m.start(), end, factor, key_type=key_type, has_body=has_body, encrypted=encrypted)


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


def _scan_jwt(text: str) -> Iterator[RawMatch]:
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
        yield _match("jwt", text, m.start(), m.end(), factor, **extra)


# ---------------------------------------------------------------------------
# high-entropy assignments

_ASSIGN = re.compile(
    r"(?<![A-Za-z0-9_.-])"
    # the name: the keyword starts a component (after _ . - or a camelCase hump) and ends one
    r"((?:[A-Za-z0-9_.-]*[_.-]|[A-Za-z0-9_.-]*(?-i:[a-z0-9])(?=(?-i:[A-Z])))?"
    r"(?:pass(?:wd|word|phrase)?|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|"
    r"auth[_.-]?(?:key|token)|private[_.-]?key|client[_.-]?secret|credentials?)s?(?![A-Za-z])[A-Za-z0-9_.-]*)"
    r"([\"']?)[ \t]*(?::=|=>|=(?!=)|:)[ \t]*([\"'`]?)([^\s\"'`]{1,512})([\"'`]?)",
    re.IGNORECASE | A,
)
_PLACEHOLDER = re.compile(
    r"(?i)x{3,}|\*{3,}|\.{3}|^<.*>$|^\[.*\]$|\$\{|\$\(|\{\{|\{%|%\(|^\$[A-Za-z_]|^%[A-Za-z_]+%$|^&[a-z]+;|"
    r"^env[:.]|^(?:\.{0,2}|~)/|^[a-z]:\\|your|example|sample|dummy|placeholder|changeme|change_me|change-me|"
    r"redacted|insert|replace|fake|todo|fixme|secret|password|token|^none$|^null$|^true$|^false$|://|getenv|"
    r"environ|process\.env|[()\[\]]"
)
_IDENT_CHARS = frozenset("_-.")


def _strength_ok(value: str) -> bool:
    """A digit, or three of lower/upper/digit/symbol (``_ - .`` count as letters of identifiers)."""
    lower = upper = digit = symbol = False
    for c in value:
        if c.islower():
            lower = True
        elif c.isupper():
            upper = True
        elif c.isdigit():
            digit = True
        elif c not in _IDENT_CHARS:
            symbol = True
    classes = lower + upper + digit + symbol
    return classes >= 2 and (digit or classes >= 3)


_AWS_SECRET = re.compile(r"[A-Za-z0-9/+=]{40}", A)

# the last word of a name that says the value is *about* a secret, not the secret
# (LLM_SECRET_NAME, token_type, SECRET_KEY_PATH, api_key_header, secretsManagerArn, TOKEN_TTL_SECONDS)
_NOT_SECRET_SUFFIX = frozenset(
    "name names id ids path paths file filename files dir directory url uri urls endpoint type types length len "
    "size count field fields header headers label env var variable ref arn version prefix suffix format pattern "
    "regex hint prompt expiry expires expiration ttl timeout seconds minutes hours days policy mode enabled "
    "required provider store manager backend location description desc template column param parameter "
    "hash digest algorithm alg scope scopes method kind class".split()
)
# a component anywhere in the name that makes the value public or a non-credential token
# (publicToken, nextPageToken, csrf_token, sync_token)
_NOT_SECRET_PREFIX = frozenset(
    {"public", "publishable", "pub", "page", "pagination", "continuation", "cursor", "csrf", "xsrf", "sync"}
)
_NAME_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", A)


def _secret_name(name: str) -> bool:
    """Whether the assigned name holds a secret (``DB_PASSWORD``) rather than describes one."""
    parts = [p.lower() for p in _NAME_PARTS.findall(name)]
    return bool(parts) and parts[-1] not in _NOT_SECRET_SUFFIX and not _NOT_SECRET_PREFIX.intersection(parts)


# words and short numbers joined by - _ . / : (llm-gateway-prod-2024, bearer_refresh_v2): a name, not a secret
_WORDISH = re.compile(r"(?:[a-z]+|[A-Z][a-z]+|[A-Z]+)[0-9]{0,2}|v?[0-9]+", A)
_CHUNK_SEP = re.compile(r"[-_./:]+")


def _identifier_like(value: str) -> bool:
    chunks = [c for c in _CHUNK_SEP.split(value) if c]
    return len(chunks) >= 2 and all(_WORDISH.fullmatch(c) for c in chunks)


_TOKEN_PREFIXES = (
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "xapp-", "sk_live_", "rk_live_", "sk-",
    "AKIA", "ASIA", "AIza", "ya29.", "GOCSPX-", "npm_", "SG.", "hf_", "api_org_", "pypi-", "sgp_", "ntn_", "fo1_",
    "fm1", "fm2_", "hvs.", "hvb.", "hvr.", "shpat_", "shpss_", "shpca_", "shppa_", "dop_v1_", "doo_v1_", "dor_v1_",
    "dapi", "dp.pt.", "glsa_", "glc_", "PMAK-", "lin_api_", "AGE-SECRET-KEY-", "tskey-", "NRAK-", "r8_", "gsk_",
)


def _scan_assignments_with(min_len: int, min_entropy: float):
    def scan(text: str) -> Iterator[RawMatch]:
        for m in _ASSIGN.finditer(text):
            name, open_q, value, close_q = m.group(1), m.group(3), m.group(4), m.group(5)
            if open_q and close_q != open_q:
                continue  # value with spaces or unterminated: not a simple literal
            if not open_q:
                value = value.rstrip(",;")
            start = m.start(4)
            end = start + len(value)
            lname = name.lower()
            if ("aws" in lname or "secret_access_key" in lname) and _AWS_SECRET.fullmatch(value):
                example = _looks_example(value)
                yield _match(
                    "aws_secret_access_key", text, start, end,
                    EXAMPLE_FACTOR if example else 1.0, name=name[:40], **({"example": True} if example else {}),
                )
                continue
            if len(value) < min_len or _PLACEHOLDER.search(value) or len(set(value)) < 6:
                continue
            if not _secret_name(name) or _identifier_like(value) or not _strength_ok(value):
                continue
            entropy = shannon_entropy(value)
            if entropy < min_entropy:
                continue
            if placeholder_like(value) or any(ex in value for ex in KNOWN_EXAMPLES):
                yield _match("secret_assignment", text, start, end, EXAMPLE_FACTOR, name=name[:40], example=True)
                continue
            if value.startswith(_TOKEN_PREFIXES):
                # a provider's prefix on a value its documented format rejects (truncated, wrong
                # length): a stand-in or an unusable fragment; a well-formed token wins the overlap
                yield _match("secret_assignment", text, start, end, EXAMPLE_FACTOR, name=name[:40], malformed_token=True)
                continue
            yield _match("secret_assignment", text, start, end, 1.0, name=name[:40], entropy=round(entropy, 2))

    return scan


def _assignment_prefilter(min_len: int) -> str:
    return (r"(?i)(?:pass|pwd|secret|token|key|credential)[a-z0-9_.-]*[\"']?[ \t]*(?::|=>|=)[ \t]*[\"'`]?"
            + (r"[^\s\"'`]{%d}" % min(min_len, 40)))


# Every text the scanner writes (excerpts, finding details, cached features) is
# masked with these: integrity.engine.redact is the one place that calls them.
SECRET_PREFILTER = (
    "(?:" + _TOKEN_PREFILTER + ")|(?:" + _FORMATS_PREFILTER + ")|(?i:" + _assignment_prefilter(16).removeprefix("(?i)") + ")"
)
_scan_assignments_default = _scan_assignments_with(16, 3.0)


def secret_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every secret in ``text``, of any kind, documentation
    examples included (masking those too costs nothing and leaks nothing)."""
    found = _chain(
        _scan_tokens, _scan_private_keys, _scan_jwt, scan_provider_tokens, scan_credential_syntax,
        _scan_assignments_default,
    )(text)
    return sorted({(start, end) for _, start, end, _, _ in found})


class SecretCheck(TextScanCheck):
    name = "privacy.secret"
    description = (
        "Credentials in text: private keys, cloud/API tokens (AWS, GCP, GitHub, GitLab, Slack, Stripe, "
        "OpenAI-style, Google OAuth, Twilio, SendGrid, npm), JWTs and high-entropy password/token assignments."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES

    class Options(CheckOptions):
        kinds: list[str] = Field(default_factory=lambda: list(KINDS), description="kinds to report")
        min_score: float = Field(0.0, ge=0, le=1, description="matches scoring below this are dropped")
        scores: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SCORES),
                                         description="per-kind base score (partial overrides merge with the defaults)")
        include_examples: bool = Field(True, description="keep documentation examples (AKIAIOSFODNN7EXAMPLE, ...) at x0.2")
        min_entropy: float = Field(3.0, ge=0, description="bits/char a secret_assignment value needs")
        min_secret_length: int = Field(16, ge=1, le=512, description="characters a secret_assignment value needs")
        max_matches: int = Field(20, ge=1, description="matches listed in detail per record (n_matches counts all)")

    default_severity = "warn"
    version = 1
    reads_raw_secrets = True  # the one check that must see them (and writes only previews)

    def scan_groups(self) -> list[ScanGroup]:
        min_len, min_entropy = int(self.options["min_secret_length"]), float(self.options["min_entropy"])
        token_kinds = frozenset(KINDS) - {"secret_assignment", "aws_secret_access_key"} - set(NEW_KINDS)
        return [
            ScanGroup("tokens", _TOKEN_PREFILTER, token_kinds, _chain(_scan_tokens, _scan_private_keys, _scan_jwt)),
            ScanGroup(
                "formats", _FORMATS_PREFILTER, frozenset(NEW_KINDS), _chain(scan_provider_tokens, scan_credential_syntax)
            ),
            ScanGroup(
                "assignment",
                _assignment_prefilter(min_len),
                frozenset({"secret_assignment", "aws_secret_access_key"}),
                _scan_assignments_with(min_len, min_entropy),
            ),
        ]
