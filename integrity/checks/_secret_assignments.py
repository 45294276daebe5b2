"""Assignment detector of ``privacy.secret``: a high-entropy value assigned to a name that says
it is a secret (``password = "..."``, ``API_TOKEN: ...``), and AWS secret access keys by name
(see the table in :mod:`integrity.checks.privacy_secret`)."""
from __future__ import annotations

import re
from typing import Iterator

from integrity.checks._secret_formats import KNOWN_EXAMPLES, placeholder_like
from integrity.checks._secret_tokens import looks_example, secret_match
from integrity.checks._text_scan import EXAMPLE_FACTOR, RawMatch, shannon_entropy

A = re.ASCII


_ASSIGN = re.compile(
    r"(?<![A-Za-z0-9_.-])"
    # the name: the keyword starts a component (after _ . - or a camelCase hump) and ends one
    r"((?:[A-Za-z0-9_.-]*[_.-]|[A-Za-z0-9_.-]*(?-i:[a-z0-9])(?=(?-i:[A-Z])))?"
    r"(?:pass(?:wd|word|phrase)?|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|"
    r"auth[_.-]?(?:key|token)|private[_.-]?key|client[_.-]?secret|credentials?)s?(?![A-Za-z])[A-Za-z0-9_.-]*)"
    r"([\"']?)[ \t]*(?::=|=>|=(?!=)|:)[ \t]*([\"'`]?)([^\s\"'`]{1,512})([\"'`]?)",
    re.IGNORECASE | A,
)
# a value that points at the secret rather than holds it (${DB_PASSWORD}, <token>, os.getenv(...), a path, a
# URL) or stands in for it (xxx, ***, ...): the part of _PLACEHOLDER that is syntax, not wording
_REFERENCE = re.compile(
    r"(?i)x{3,}|\*{3,}|\.{3}|^<.*>$|^\[.*\]$|\$\{|\$\(|\{\{|\{%|%\(|^\$[A-Za-z_]|^%[A-Za-z_]+%$|^&[a-z]+;|"
    r"^env[:.]|^(?:\.{0,2}|~)/|^[a-z]:\\|://|getenv|environ|process\.env|[()\[\]]"
)
# ... or is a word that marks a placeholder (your_password, changeme, ${...} above)
_PLACEHOLDER = re.compile(
    _REFERENCE.pattern + r"|your|example|sample|dummy|placeholder|changeme|change_me|change-me|"
    r"redacted|insert|replace|fake|todo|fixme|secret|password|token|^none$|^null$|^true$|^false$"
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


def scan_assignments_with(min_len: int, min_entropy: float):
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
                example = looks_example(value)
                yield secret_match(
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
                yield secret_match("secret_assignment", text, start, end, EXAMPLE_FACTOR, name=name[:40], example=True)
                continue
            if value.startswith(_TOKEN_PREFIXES):
                # a provider's prefix on a value its documented format rejects (truncated, wrong
                # length): a stand-in or an unusable fragment; a well-formed token wins the overlap
                yield secret_match("secret_assignment", text, start, end, EXAMPLE_FACTOR, name=name[:40], malformed_token=True)
                continue
            yield secret_match("secret_assignment", text, start, end, 1.0, name=name[:40], entropy=round(entropy, 2))

    return scan


def assigned_value_spans(text: str, min_len: int = 16, min_entropy: float = 3.0) -> list[tuple[int, int]]:
    """Spans of values assigned to a name that says secret (``password=...``, ``API_TOKEN: ...``),
    without the detector's tests that keep findings precise (identifier-like values, character
    classes, descriptive names): what the scan *writes* masks, where hiding a non-secret costs a
    reader nothing and missing a secret leaks it. Placeholders and references are left alone.
    ``min_len`` matches the pre-filter (:func:`assignment_prefilter` at 16) that picks the rows
    :func:`integrity.engine.redact.mask_frame` scans."""
    spans = []
    for m in _ASSIGN.finditer(text):
        open_q, value, close_q = m.group(3), m.group(4), m.group(5)
        if open_q and close_q != open_q:
            continue
        if not open_q:
            value = value.rstrip(",;")
        if len(value) < min_len or _REFERENCE.search(value) or shannon_entropy(value) < min_entropy:
            continue
        spans.append((m.start(4), m.start(4) + len(value)))
    return spans


def assignment_prefilter(min_len: int) -> str:
    return (r"(?i)(?:pass|pwd|secret|token|key|credential)[a-z0-9_.-]*[\"']?[ \t]*(?::|=>|=)[ \t]*[\"'`]?"
            + (r"[^\s\"'`]{%d}" % min(min_len, 40)))
