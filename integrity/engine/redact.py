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
still looks like a random run of 16+ characters - hex of 64+ bits, letters
mixed with digits, base64, hex after a prefix - and an excerpt loses nothing a
reader needs when such a run is masked (names made of words stay). Only prose
and quoted record text are masked so: identifiers such as record ids, cluster
ids and hashes in finding details have no white space. Checks' inputs are not
(that would change what duplicates and triggers compare), except in the
vocabulary columns a check declares (``Check.token_columns``), where each
cached token is judged as it would be in prose. Text columns are pre-filtered
column-wise, so only the rare rows that may hold a secret reach Python.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.schema import text_columns
from integrity.checks._secret_assignments import assigned_value_spans
from integrity.checks.privacy_secret import SECRET_PREFILTER, secret_spans
from integrity.engine.random_runs import (MIN_OPAQUE_CHARS, OPAQUE, OPAQUE_RUN, RUN_CHARS, class_switch_rate, entropy,
                                          looks_opaque, rare_pair_share, vowel_share)

MASK = "\u2022"
KEEP = 4
# columns that identify a record or shard: never rewritten (joins need them as they are)
KEY_COLUMNS = frozenset({"record_id", "shard", "uri", "sha256", "check", "severity"})


FINGERPRINT = 8  # hex characters of the secret's SHA-256 that end a fingerprinted mask

def opaque_token_spans(text: str, record_text: bool = False) -> list[tuple[int, int]]:
    """Spans of random-looking tokens of any format (see :func:`~integrity.engine.random_runs.looks_opaque`) in prose.

    A text without white space is an identifier (a record id, a cluster id, a hash in a
    finding's detail) that joins and the output contract need as it is: never masked, unless
    it is ``record_text`` (a record's field quoted in an excerpt, which may be one bare token).
    """
    if not record_text and not any(ch.isspace() for ch in text):
        return []
    spans = [m.span() for m in OPAQUE.finditer(text) if looks_opaque(m.group())]
    return spans + named_value_spans(text)


# A value glued to a word that says what it is - a secret, a key, a token, a canary (a planted
# token meant to be found) - by '-', '_', ':' or '.': ``CANARY-f0ffbb36``, ``PLANTED_SECRET_e09a11f5``,
# ``apikey:ab12cd34ef``; or after one space (``token ny2Y48qCtK``). Shorter than the runs above
# (8+ characters), so the name decides. A canary's name (canary, honeytoken, planted) says it
# alone: its value counts from 6 characters, glued to it or not (``CANARY6d4f39``, ``PLANTED-15be0b``).
_SECRET_WORDS = r"canary|honeytoken|secret|token|apikey|api_key|access_key|passwd|password|credential|planted"
_CANARY_WORDS = r"canary|honeytoken|planted"
_NAMED_VALUE = re.compile(  # from the name on (no repeated prefix before it: linear on any input)
    rf"(?<![A-Za-z])(?:"
    rf"(?i:{_CANARY_WORDS})(?:(?:[_\-][A-Za-z]+)*[_\-:.]|)(?P<canary>[A-Za-z0-9]{{6,}})"
    rf"|(?i:{_SECRET_WORDS})(?:[_\-][A-Za-z]+)*[_\-:.](?P<value>[A-Za-z0-9]{{8,}})"
    rf"|(?i:{_SECRET_WORDS})[ \t](?P<spaced>[A-Za-z0-9]{{8,}})"
    rf")(?![A-Za-z0-9_+=/\-])")


_NAMED_PREFILTER = (rf"(?i:{_CANARY_WORDS})[A-Za-z0-9_\-:.]*[0-9]"
                    rf"|(?i:{_SECRET_WORDS})(?:[_\-][A-Za-z]+)*[_\-:. \t][A-Za-z0-9]{{8,}}")


def _named_value(value: str) -> bool:
    """The value after a secret's name is one: letters and two digits or more (not a word, a year
    or a version: ``token_type``, ``secret-2024``), or both cases switching as random characters
    do with letter pairs English rarely has (``x3GOTBc6db``, ``XqHqbLpZta``; not ``McDonalds``,
    ``LinkedIn``)."""
    digits = sum(ch.isdigit() for ch in value)
    if 0 < digits < len(value) and digits >= 2:
        return True
    return (len(value) >= 8 and any(ch.isupper() for ch in value) and any(ch.islower() for ch in value)
            and class_switch_rate(value) >= 0.35 and rare_pair_share(value) >= 0.3)


def _canary_value(value: str) -> bool:
    """The value after a canary's name: two digits or more (a number too: ``CANARY-83749201``),
    not a word (``canary_yellow``, ``planted_trees``)."""
    return sum(ch.isdigit() for ch in value) >= 2


def named_value_spans(text: str) -> list[tuple[int, int]]:
    """Spans of values named as secrets (see ``_NAMED_VALUE``): from the name on when glued to
    it (the name is part of the token), the value alone after a space."""
    spans = []
    for m in _NAMED_VALUE.finditer(text):
        if m.group("canary") is not None:
            if _canary_value(m.group("canary")):
                spans.append(m.span())
        elif m.group("value") is not None:
            if _named_value(m.group("value")):
                spans.append(m.span())
        elif _named_value(m.group("spaced")):
            spans.append(m.span("spaced"))
    return spans


def _masked(value: str, fingerprint: bool) -> str:
    keep = min(KEEP, len(value))
    tail = ""
    if fingerprint and len(value) >= KEEP + FINGERPRINT + 4:
        tail = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT]
    return value[:keep] + MASK * (len(value) - keep - len(tail)) + tail


def mask_secrets(text: str, fingerprint: bool = False, opaque: bool = True, record_text: bool = False) -> str:
    """``text`` with every secret masked after its first 4 characters (same length).

    With ``fingerprint``, a long secret's mask ends in 8 hex characters of its
    SHA-256, so two different secrets stay different (what the checks that
    compare texts - duplicates, triggers - need) while neither can be read back.
    Values assigned to a name that says secret (``password=...``, even one the
    detector finds too regular to report) are masked too. With ``opaque`` (what
    is written), so are random-looking tokens of unknown formats in prose, and with
    ``record_text`` (a record's own text, never an identifier) even in a text without white space.
    """
    if not text:
        return text
    spans = set(secret_spans(text)) | set(assigned_value_spans(text))
    if opaque:
        spans |= set(opaque_token_spans(text, record_text))
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
    so character offsets stay valid): what every check reads but those with ``reads_raw_secrets``.

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


# the start of a run in prose: after a character that is not a run's, and not after a quote (a
# JSON string that is an id - a hash, ``near-<hex>`` - as every dedup detail carries) unless the
# quote is escaped (a quote in a text)
_RUN_START = rf'(?:^|[^"{RUN_CHARS}]|\\")'
# a hex key in prose: 12+ hex digits starting a run or after a prefix's '-' or '_'
_HEX_IN_PROSE = _RUN_START + rf"(?:[{RUN_CHARS}]*[_\-])?[0-9a-fA-F]{{12,}}"


def _opaque_candidates(col: pl.Series, record_text: bool = False) -> pl.Series:
    """Rows that may hold an opaque token in prose, column-wise: a 16+ run that switches
    between letters and digits or cases at least twice once hex runs of 16+ (hashes) are
    taken out, a hex key where prose would have it, or a value glued to a secret's name
    (``CANARY-f0ffbb36``). Prose is text with white space; in a JSON text, a string with white
    space or an escape (:func:`mask_json_text` leaves the others, ids, hashes and a model's
    name, as they are: they are taken out first, and a detail made only of them is no
    candidate at all). A column of ``record_text`` (excerpts) is prose even without white
    space (a record of one bare token). Only rare rows reach :func:`~integrity.engine.random_runs.looks_opaque`."""
    text = pl.col("text")
    is_json = text.str.starts_with("{") | text.str.starts_with("[")
    frame = pl.DataFrame({"text": col}).select(
        pl.int_range(0, pl.len()).alias("row"),
        pl.when(is_json).then(text.str.replace_all(r'"[^"\s\\]*"', "")).otherwise(text).alias("text"),
        is_json.fill_null(False).alias("json"))
    if record_text:
        prose = pl.col("text").is_not_null()
    else:  # a JSON text's strings left are those with white space (or an escape)
        prose = pl.when(pl.col("json")).then(pl.col("text").str.contains('"', literal=True)) \
            .otherwise(pl.col("text").str.contains(r"\s")).fill_null(False)
    frame = frame.filter(prose)
    hex_rows = frame.filter(pl.col("text").str.contains(_HEX_IN_PROSE) | pl.col("text").str.contains(_NAMED_PREFILTER))
    # (exploding drops a row without runs: the hex keys are kept apart from the runs)
    runs = (frame.select("row", pl.col("text").str.replace_all(r"[0-9a-fA-F]{16,}", "")
                         .str.extract_all(OPAQUE_RUN).alias("run"))
            .explode("run")
            .filter(pl.col("run").str.count_matches(r"[0-9][A-Za-z]|[A-Za-z][0-9]|[a-z][A-Z]|[A-Z][a-z]") >= 2))
    hit = pl.Series(col.name, np.zeros(col.len(), dtype=bool))
    return hit.scatter(pl.concat([hex_rows["row"], runs["row"]]).unique(), True)


def _text_columns(frame: pl.DataFrame, skip: Iterable[str]) -> list[str]:
    skip = set(skip)
    return [n for n, t in frame.schema.items() if t == pl.Utf8 and n not in skip]


def _random_token(token: str) -> bool:
    """A vocabulary's token (often lower-cased, so without the case switches of the token it
    was) that is random: :func:`~integrity.engine.random_runs.looks_opaque`, or 16+ characters of letters and digits
    together, or of letters with too few vowels for a word (``internationalization`` has half)."""
    letters = [ch for ch in token if ch.isalpha()]
    return (looks_opaque(token) or (0 < len(letters) < sum(ch.isalnum() for ch in token))
            or (vowel_share(letters) < 0.3 and entropy(token) >= 3.7))


def _mask_token_column(col: pl.Series) -> pl.Series | None:
    """A column of single tokens (a vocabulary) with random-looking ones masked, or None when
    none is: a token has no white space around it to tell it from an identifier, so every
    value of 16+ characters is judged by :func:`_random_token`."""
    long = col.str.len_chars().fill_null(0) >= MIN_OPAQUE_CHARS
    if not long.any():
        return None
    values = col.to_list()
    changed = False
    for i in long.arg_true().to_list():
        v = values[i]
        if _random_token(v) or secret_spans(v):
            values[i], changed = _masked(v, False), True
    return pl.Series(col.name, values, dtype=pl.Utf8) if changed else None


#: columns of record text quoted as it is (``examples.parquet``): judged as prose even without white space
RECORD_TEXT_COLUMNS = frozenset({"excerpt"})


def mask_frame(frame: pl.DataFrame, skip: Iterable[str] = KEY_COLUMNS, tokens: Iterable[str] = (),
               records: Iterable[str] = RECORD_TEXT_COLUMNS) -> pl.DataFrame:
    """Every text column of ``frame`` with secrets masked (JSON texts inside their strings).

    Column-wise: one regex pre-filter per column picks the candidate rows; only
    those are scanned (and rewritten) in Python. Opaque tokens are masked too
    (see :func:`mask_secrets`); in the columns named in ``tokens`` (single tokens
    from record text, as a vocabulary) each value is judged as a token in prose, and in those
    named in ``records`` (excerpts of record text) a value without white space is prose too.
    """
    if frame is None or frame.height == 0:
        return frame
    updates = []
    tokens, records = set(tokens), set(records)
    for name in _text_columns(frame, skip):
        if name in tokens:
            masked = _mask_token_column(frame.get_column(name))
            if masked is not None:
                updates.append(masked)
            continue
        col = frame.get_column(name)
        record_text = name in records
        hit = (col.str.contains(SECRET_PREFILTER) | _opaque_candidates(col, record_text)).fill_null(False)
        if not hit.any():
            continue
        values = col.to_list()
        for i in hit.arg_true().to_list():
            values[i] = mask_secrets(values[i], record_text=True) if record_text else mask_json_text(values[i])
        updates.append(pl.Series(name, values, dtype=pl.Utf8))
    return frame.with_columns(updates) if updates else frame
