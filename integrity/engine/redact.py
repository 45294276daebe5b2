"""Secret masking: the one choke point every text the scanner writes passes through.

DESIGN.md: a secret is never written in full anywhere. Checks other than
``privacy.secret`` quote record text for their own reasons (a duplicate's
excerpt, a caption that conflicts, a drift sample kept for embedding, a
trigger token), often lower-cased or re-tokenized where no pattern would
find it again. So rather than trusting each check:

- no check but ``privacy.secret`` ever sees a secret: the engine gives them
  their batches through :func:`mask_batch`;

and, as a second line for what is read again later, the engine masks every
text it writes:

- report excerpts (:func:`mask_secrets` on the record text, in
  :mod:`integrity.engine.evidence`),
- finding details, per shard (cached) and corpus-wide, and cached per-shard
  features (:func:`mask_frame` on every text column; a JSON text is parsed and
  its string values masked, so escapes cannot hide a secret and the JSON stays
  valid).

A secret keeps its first 4 characters; the rest become ``•``, one per
character, so offsets into the text (highlight spans) stay valid. Detection
is :func:`integrity.checks.privacy_secret.secret_spans` (every kind,
documentation examples included) plus any value of 16+ characters assigned to
a name that says secret (:func:`integrity.checks._secret_assignments.assigned_value_spans`),
even one too regular for ``privacy.secret`` to report: checks read those
masked too (fingerprinted, so different values stay different), since checks
cache what they read (a trigger check's vocabulary) where no other test could
find it again.

What the scan writes is display text and is masked more liberally, for opaque
tokens (:func:`opaque_token_spans`): a credential of a format no pattern knows
still looks like a long random run - hex of 128+ bits, letters mixed with
digits, base64 - and an excerpt loses nothing a reader needs when such a run
is masked. Only prose is masked so: identifiers such as record ids, cluster
ids and hashes in finding details have no white space. Checks' inputs are not
(that would change what duplicates and triggers compare), except in the
vocabulary columns a check declares (``Check.token_columns``), where each
cached token is judged as it would be in prose. Text columns are pre-filtered
column-wise, so only the rare rows that may hold a secret reach Python.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from typing import Any, Iterable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.schema import text_columns
from integrity.checks._secret_assignments import assigned_value_spans
from integrity.checks.privacy_secret import SECRET_PREFILTER, secret_spans

MASK = "\u2022"
KEEP = 4
# columns that identify a record or shard: never rewritten (joins need them as they are)
KEY_COLUMNS = frozenset({"record_id", "shard", "uri", "sha256", "check", "severity"})


FINGERPRINT = 8  # hex characters of the secret's SHA-256 that end a fingerprinted mask

# A run of token characters long enough to be a credential: letters, digits and the characters
# of base64 (``+/=``), base64url and prefixes (``_-``). '.', ':', '?', '&' and white space end a run,
# so host names, URLs' parts and sentences stay apart; a path is one run, but words separated
# by '/' switch character class too rarely to pass :func:`_looks_opaque`. Which runs are
# random enough is decided in Python, after this.
_RUN_CHARS = r"A-Za-z0-9_+=/\-"
_OPAQUE_RUN = rf"[{_RUN_CHARS}]{{20,}}"
_OPAQUE = re.compile(rf"(?<![{_RUN_CHARS}])" + _OPAQUE_RUN + rf"(?![{_RUN_CHARS}])")
_HEX = re.compile(r"[0-9a-fA-F_\-]+")
MIN_HEX_DIGITS = 32  # a hash-like key in prose: 128 bits or more of hex (UUIDs included)
MIN_OPAQUE_ENTROPY = 3.2  # bits per character: random base-36/62 runs of 20+ characters mostly reach 3.6-4.3


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _class_switch_rate(run: str) -> float:
    """Share of adjacent letters and digits of different classes (upper, lower, digit),
    separators left out: about 0.4-0.6 in random tokens, under 0.15 in words with numbers
    (``release_2024_v2``); CamelCase identifiers (about 0.3) have no digits."""
    classes = ["u" if ch.isupper() else "l" if ch.islower() else "d" for ch in run if ch.isalnum()]
    return sum(a != b for a, b in zip(classes, classes[1:])) / max(1, len(classes) - 1)


def _vowel_share(letters: list[str]) -> float:
    """Share of vowels among letters: about 0.35-0.4 in words and identifiers made of words,
    about 0.15-0.2 in random letters."""
    return sum(ch in "aeiouAEIOU" for ch in letters) / max(1, len(letters))


def _looks_random(run: str) -> bool:
    """Letters and digits of a random token: hex of 32+ digits (a key, a hash, a UUID), letters
    mixed with digits, or, without digits, both cases with capitals too many for CamelCase;
    character classes switching often and high entropy, or too few vowels to be words."""
    alnum = [ch for ch in run if ch.isalnum()]
    if _HEX.fullmatch(run):
        digits = sum(ch.isdigit() for ch in alnum)
        return len(alnum) >= MIN_HEX_DIGITS and 0 < digits < len(alnum)
    letters = [ch for ch in alnum if ch.isalpha()]
    n_upper = sum(ch.isupper() for ch in letters)
    upper, lower = n_upper > 0, n_upper < len(letters)
    unwordy = len(alnum) >= 20 and _vowel_share(letters) < 0.2 and _entropy(run) >= 3.7
    if len(letters) < len(alnum) and letters:
        return unwordy or (_class_switch_rate(run) >= 0.18 and _entropy(run) >= MIN_OPAQUE_ENTROPY)
    if upper and lower:  # CamelCase has one capital per word (under a third); random letters half
        return unwordy or (n_upper / len(letters) >= 0.3 and _class_switch_rate(run) >= 0.35
                           and _entropy(run) >= 3.8)
    return False


def _looks_opaque(run: str) -> bool:
    """A random-looking token (:func:`_looks_random`). A run with '/' is a path or a URL's path
    unless its longest part between slashes (12+ characters) is random too: base64 keys have
    one or two slashes, paths have words between theirs."""
    if "/" not in run:
        return _looks_random(run)
    longest = max(run.split("/"), key=len)
    return len(longest) >= 12 and _looks_random(run.replace("/", "")) and _looks_random_part(longest)


def _looks_random_part(part: str) -> bool:
    """A part of a run (12+ characters) switching character class as often as random
    characters do (about half the time; words with a version number far less)."""
    letters = [ch for ch in part if ch.isalpha()]
    return len(letters) < len(part) and _class_switch_rate(part) >= 0.3 or (
        len(letters) == len(part) and _class_switch_rate(part) >= 0.35 and _vowel_share(letters) < 0.3)


def opaque_token_spans(text: str) -> list[tuple[int, int]]:
    """Spans of random-looking tokens of any format (see :func:`_looks_opaque`) in prose.

    A text without white space is an identifier (a record id, a cluster id, a hash in a
    finding's detail) that joins and the output contract need as it is: never masked.
    """
    if not any(ch.isspace() for ch in text):
        return []
    return [m.span() for m in _OPAQUE.finditer(text) if _looks_opaque(m.group())]


def _masked(value: str, fingerprint: bool) -> str:
    keep = min(KEEP, len(value))
    tail = ""
    if fingerprint and len(value) >= KEEP + FINGERPRINT + 4:
        tail = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT]
    return value[:keep] + MASK * (len(value) - keep - len(tail)) + tail


def mask_secrets(text: str, fingerprint: bool = False, opaque: bool = True) -> str:
    """``text`` with every secret masked after its first 4 characters (same length).

    With ``fingerprint``, a long secret's mask ends in 8 hex characters of its
    SHA-256, so two different secrets stay different (what the checks that
    compare texts - duplicates, triggers - need) while neither can be read back.
    Values assigned to a name that says secret (``password=...``, even one the
    detector finds too regular to report) are masked too. With ``opaque`` (what
    is written), so are random-looking tokens of unknown formats in prose.
    """
    if not text:
        return text
    spans = set(secret_spans(text)) | set(assigned_value_spans(text))
    if opaque:
        spans |= set(opaque_token_spans(text))
    spans = sorted(spans)
    if not spans:
        return text
    out, pos = [], 0
    for start, end in spans:
        if start < pos:  # overlapping detections: mask the union
            start = pos
        if end <= start:
            continue
        out += [text[pos:start], _masked(text[start:end], fingerprint)]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def mask_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the secrets of its text columns masked (fingerprinted, same length,
    so character offsets stay valid): what every check but ``privacy.secret`` reads.

    One RE2 pre-filter per column; only its candidate rows are rewritten, and a
    batch without any is returned as it is.
    """
    columns = list(batch.columns)
    changed = False
    for name in text_columns(batch):
        i = batch.schema.get_field_index(name)
        arr = columns[i]
        hit = pc.fill_null(pc.match_substring_regex(arr, SECRET_PREFILTER), False)
        if not pc.any(hit).as_py():
            continue
        # only the candidate rows go through Python; the column is rebuilt in C++
        rows = pc.indices_nonzero(hit)
        masked = [mask_secrets(v, fingerprint=True, opaque=False) for v in arr.take(rows).to_pylist()]
        columns[i] = pc.replace_with_mask(arr, hit, pa.array(masked, type=arr.type))
        changed = True
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema) if changed else batch


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    return value


def mask_json_text(text: str | None) -> str | None:
    """Mask secrets inside a JSON document's strings (plain text when it is not JSON)."""
    if not text:
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        return mask_secrets(text)
    masked = _mask_value(doc)
    if masked == doc:
        return text
    return json.dumps(masked, ensure_ascii=False, separators=(", ", ": "))


# a hex key in prose: 32+ hex digits not right after a quote (a JSON string that is a hash, as
# every dedup detail carries, is an identifier) unless the quote is escaped (a quote in a text)
_HEX_IN_PROSE = r'(?:^|[^"0-9A-Za-z_\-]|\\")[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}'


def _opaque_candidates(col: pl.Series) -> pl.Series:
    """Rows that may hold an opaque token in prose, column-wise: white space, and a 20+ run
    that switches between letters and digits or cases at least twice once hex runs (hashes,
    cluster ids) are taken out, or a hex key where prose would quote it. JSON keys
    (``representative_sha256``) and the ids every dedup detail carries are no candidates, so
    only rare rows reach :func:`_looks_opaque`."""
    runs = (pl.DataFrame({"row": pl.int_range(0, col.len(), eager=True),
                          "run": col.str.replace_all(r"[0-9a-fA-F]{8,}", "").str.extract_all(_OPAQUE_RUN),
                          "hex": col.str.contains(_HEX_IN_PROSE).fill_null(False)})
            .filter(col.str.contains(r"\s").fill_null(False))
            .explode("run")
            .filter(pl.col("hex") | (pl.col("run").str.count_matches(
                r"[0-9][A-Za-z]|[A-Za-z][0-9]|[a-z][A-Z]|[A-Z][a-z]") >= 2)))
    return pl.Series(col.name, [False] * col.len()).scatter(runs["row"].unique(), True)


def _text_columns(frame: pl.DataFrame, skip: Iterable[str]) -> list[str]:
    skip = set(skip)
    return [n for n, t in frame.schema.items() if t == pl.Utf8 and n not in skip]


def _random_token(token: str) -> bool:
    """A vocabulary's token (often lower-cased, so without the case switches of the token it
    was) that is random: :func:`_looks_opaque`, or 20+ characters of letters and digits
    together, or of letters with too few vowels for a word (``internationalization`` has half)."""
    letters = [ch for ch in token if ch.isalpha()]
    return (_looks_opaque(token) or (0 < len(letters) < sum(ch.isalnum() for ch in token))
            or (_vowel_share(letters) < 0.3 and _entropy(token) >= 3.7))


def _mask_token_column(col: pl.Series) -> pl.Series | None:
    """A column of single tokens (a vocabulary) with random-looking ones masked, or None when
    none is: a token has no white space around it to tell it from an identifier, so every
    value of 20+ characters is judged by :func:`_random_token`."""
    long = col.str.len_chars().fill_null(0) >= 20
    if not long.any():
        return None
    values = col.to_list()
    changed = False
    for i in long.arg_true().to_list():
        v = values[i]
        if _random_token(v) or secret_spans(v):
            values[i], changed = _masked(v, False), True
    return pl.Series(col.name, values, dtype=pl.Utf8) if changed else None


def mask_frame(frame: pl.DataFrame, skip: Iterable[str] = KEY_COLUMNS, tokens: Iterable[str] = ()) -> pl.DataFrame:
    """Every text column of ``frame`` with secrets masked (JSON texts inside their strings).

    Column-wise: one regex pre-filter per column picks the candidate rows; only
    those are scanned (and rewritten) in Python. Opaque tokens are masked too
    (see :func:`mask_secrets`); in the columns named in ``tokens`` (single tokens
    from record text, as a vocabulary) each value is judged as a token in prose.
    """
    if frame is None or frame.height == 0:
        return frame
    updates = []
    tokens = set(tokens)
    for name in _text_columns(frame, skip):
        if name in tokens:
            masked = _mask_token_column(frame.get_column(name))
            if masked is not None:
                updates.append(masked)
            continue
        col = frame.get_column(name)
        hit = (col.str.contains(SECRET_PREFILTER) | _opaque_candidates(col)).fill_null(False)
        if not hit.any():
            continue
        values = col.to_list()
        for i in hit.arg_true().to_list():
            values[i] = mask_json_text(values[i])
        updates.append(pl.Series(name, values, dtype=pl.Utf8))
    return frame.with_columns(updates) if updates else frame
