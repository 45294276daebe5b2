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
  ``integrity.engine.outputs``),
- finding details, per shard (cached) and corpus-wide, and cached per-shard
  features (:func:`mask_frame` on every text column; a JSON text is parsed and
  its string values masked, so escapes cannot hide a secret and the JSON stays
  valid).

A secret keeps its first 4 characters; the rest become ``•``, one per
character, so offsets into the text (highlight spans) stay valid. Detection
is :func:`integrity.checks.privacy_secret.secret_spans` (every kind,
documentation examples included). Text columns are pre-filtered column-wise
with one regex, so only the rare rows that may hold a secret reach Python.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.schema import text_columns
from integrity.checks.privacy_secret import SECRET_PREFILTER, secret_spans

MASK = "\u2022"
KEEP = 4
# columns that identify a record or shard: never rewritten (joins need them as they are)
KEY_COLUMNS = frozenset({"record_id", "shard", "uri", "sha256", "check", "severity"})


FINGERPRINT = 8  # hex characters of the secret's SHA-256 that end a fingerprinted mask


def _masked(value: str, fingerprint: bool) -> str:
    keep = min(KEEP, len(value))
    tail = ""
    if fingerprint and len(value) >= KEEP + FINGERPRINT + 4:
        tail = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT]
    return value[:keep] + MASK * (len(value) - keep - len(tail)) + tail


def mask_secrets(text: str, fingerprint: bool = False) -> str:
    """``text`` with every secret masked after its first 4 characters (same length).

    With ``fingerprint``, a long secret's mask ends in 8 hex characters of its
    SHA-256, so two different secrets stay different (what the checks that
    compare texts - duplicates, triggers - need) while neither can be read back.
    """
    if not text:
        return text
    spans = secret_spans(text)
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
        masked = [mask_secrets(v, fingerprint=True) for v in arr.take(rows).to_pylist()]
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


def _text_columns(frame: pl.DataFrame, skip: Iterable[str]) -> list[str]:
    skip = set(skip)
    return [n for n, t in frame.schema.items() if t == pl.Utf8 and n not in skip]


def mask_frame(frame: pl.DataFrame, skip: Iterable[str] = KEY_COLUMNS) -> pl.DataFrame:
    """Every text column of ``frame`` with secrets masked (JSON texts inside their strings).

    Column-wise: one regex pre-filter per column picks the candidate rows; only
    those are scanned (and rewritten) in Python.
    """
    if frame is None or frame.height == 0:
        return frame
    updates = []
    for name in _text_columns(frame, skip):
        col = frame.get_column(name)
        hit = col.str.contains(SECRET_PREFILTER).fill_null(False)
        if not hit.any():
            continue
        values = col.to_list()
        for i in hit.arg_true().to_list():
            values[i] = mask_json_text(values[i])
        updates.append(pl.Series(name, values, dtype=pl.Utf8))
    return frame.with_columns(updates) if updates else frame
