"""Shared machinery of the regex-based text checks (``privacy.pii``, ``privacy.secret``,
``poison.unicode``, ``poison.injection``).

A check describes what it looks for as a list of :class:`ScanGroup`: a cheap
*prefilter* (an RE2 pattern run by ``pyarrow.compute.match_substring_regex``
over a whole column, in C++) and a Python *scanner* that finds and validates
the matches in the few texts the prefilter lets through. The prefilter must be
a superset of what the scanner can find; it only exists to keep Python away
from the vast majority of records that hold nothing.

:class:`TextScanner` runs the groups over every text column of a batch,
resolves overlapping matches within a field (the higher score wins, then the
longer span), drops what the options exclude and builds one finding per record:
``score`` is the highest match score, ``detail`` lists the matches (capped)
with their kinds, fields and character offsets (Python ``str`` indices, i.e.
code points, into the field's text) and a masked or redacted preview - never
the full value.

:class:`TextScanCheck` is their base: it resolves the common options
(``kinds``, ``scores``, ``min_score``, ``max_matches``), builds the scanner from
the check's :meth:`TextScanCheck.scan_groups` and scans each batch; a check
declares its kinds, default scores and groups.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from connectors.schema import RECORD_ID, ROW, TEXT_FIELDS, text_columns
from integrity.checks.base import Check, CheckConfigError, CheckOutput, ShardInfo, empty_findings, findings_frame
from integrity.checks.options import CheckOptions

#: what a scanner yields: (kind, start, end, score factor, extra detail)
RawMatch = tuple[str, int, int, float, dict]


@dataclass(slots=True)
class Match:
    kind: str
    field: str
    start: int
    end: int
    score: float
    extra: dict


@dataclass(frozen=True)
class ScanGroup:
    """A family of detectors sharing one column-level prefilter.

    ``prefilter`` is an RE2 pattern (no look-arounds); ``scan(text)`` yields
    :data:`RawMatch` tuples; ``kinds`` are the kinds it can produce (a group
    whose kinds are all disabled is skipped).
    """

    name: str
    prefilter: str
    kinds: frozenset[str]
    scan: Callable[[str], Iterable[RawMatch]]
    ignore_case: bool = False


# ---------------------------------------------------------------------------
# helpers shared by the detectors


#: score factor of values that are published examples (test cards, example.com, ...)
EXAMPLE_FACTOR = 0.2


def mask(value: str, keep_last: int) -> str:
    """Every letter/digit but the last ``keep_last`` replaced by ``*`` (separators kept)."""
    out, seen = [], 0
    for ch in reversed(value):
        if ch.isalnum():
            seen += 1
            out.append(ch if seen <= keep_last else "*")
        else:
            out.append(ch)
    return "".join(reversed(out))


def before(text: str, start: int, pattern: re.Pattern, width: int) -> bool:
    """Whether ``pattern`` occurs in the ``width`` characters before ``start``."""
    return pattern.search(text, max(0, start - width), start) is not None


def chain(*scanners: Callable[[str], Iterable["RawMatch"]]) -> Callable[[str], Iterator["RawMatch"]]:
    """One scanner running several in turn."""
    def scan(text: str) -> Iterator[RawMatch]:
        for s in scanners:
            yield from s(text)

    return scan


def shannon_entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character (0 for the empty string)."""
    n = len(s)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def redacted_preview(value: str, keep: int = 4) -> str:
    """The first ``keep`` characters followed by an ellipsis."""
    return value[:keep] + "\u2026"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ---------------------------------------------------------------------------
# column plumbing


def text_arrays(batch: pa.RecordBatch) -> list[tuple[str, pa.Array]]:
    """(field name, large_string array) for each text column of ``batch``."""
    out = []
    for name in text_columns(batch):
        arr = batch.column(name)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            try:
                arr = arr.cast(pa.large_string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue  # not text (e.g. binary): nothing to scan
        out.append((name, arr))
    return out


def candidate_rows(arr: pa.Array, pattern: str, ignore_case: bool = False) -> list[int]:
    """Row indices of ``arr`` whose text contains a match of the RE2 ``pattern``."""
    if len(arr) == 0 or arr.null_count == len(arr):
        return []
    mask = pc.match_substring_regex(arr, pattern=pattern, ignore_case=ignore_case)
    mask = pc.fill_null(mask, False)
    return pc.indices_nonzero(mask).to_pylist()


def record_ids(batch: pa.RecordBatch) -> list[str | None]:
    """The record ids of the batch (row index as a string when the id is missing)."""
    names = batch.schema.names
    ids = batch.column(RECORD_ID).to_pylist() if RECORD_ID in names else [None] * batch.num_rows
    if any(i is None for i in ids):
        rows = batch.column(ROW).to_pylist() if ROW in names else list(range(batch.num_rows))
        ids = [str(r) if i is None else i for i, r in zip(ids, rows)]
    return [str(i) for i in ids]


def resolve_overlaps(matches: list[Match]) -> list[Match]:
    """Keep, within one field, the best of overlapping matches (score, then length)."""
    if len(matches) < 2:
        return matches
    kept: list[Match] = []
    for m in sorted(matches, key=lambda m: (-m.score, m.start - m.end, m.start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    kept.sort(key=lambda m: m.start)
    return kept


# ---------------------------------------------------------------------------
# the scanner


def resolve_kinds(check: str, requested: Any, all_kinds: Sequence[str]) -> frozenset[str]:
    if requested is None:
        return frozenset(all_kinds)
    if isinstance(requested, str):
        requested = [requested]
    unknown = set(requested) - set(all_kinds)
    if unknown:
        raise CheckConfigError(f"check {check!r}: unknown kind(s) {sorted(unknown)}; known kinds are {list(all_kinds)}")
    return frozenset(requested)


def resolve_scores(check: str, overrides: Any, defaults: Mapping[str, float]) -> dict[str, float]:
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise CheckConfigError(f"check {check!r}: unknown kind(s) in 'scores': {sorted(unknown)}")
    for k, v in overrides.items():
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise CheckConfigError(f"check {check!r}: score of {k!r} must be a number in [0, 1], got {v!r}")
    return {**defaults, **{k: float(v) for k, v in overrides.items()}}


class TextScanner:
    """Runs :class:`ScanGroup` s over the text columns of a batch and builds findings.

    Detectors yield a *factor* (1.0 for a plain match, lower for example-looking
    values, a little higher with supporting context); ``score_of(kind, factor,
    extra)`` turns it into the final score (the checks multiply by their per-kind
    ``scores`` option and clip to [0, 1]) or None to drop the match. ``redact`` marks every match with
    ``"redact": true`` so report excerpts mask the span.
    """

    def __init__(
        self,
        groups: Sequence[ScanGroup],
        kinds: frozenset[str],
        min_score: float,
        max_matches: int,
        score_of: Callable[[str, float, dict], float | None],
        redact: bool = True,
    ):
        self.groups = [g for g in groups if g.kinds & kinds]
        # one column pass with every group's prefilter picks the rows that can hold anything; each
        # group's own prefilter then runs on those few rows only (a pass costs per row, whatever
        # the pattern: on clean text, one pass instead of one per group)
        self._union = "|".join(f"(?i:{g.prefilter})" if g.ignore_case else f"(?:{g.prefilter})" for g in self.groups)
        self.kinds = kinds
        self.min_score = float(min_score)
        self.max_matches = int(max_matches)
        self.score_of = score_of
        self.redact = redact

    def scan_batch(self, batch: pa.RecordBatch) -> pl.DataFrame:
        per_row: dict[int, list[Match]] = {}
        kinds, min_score, score_of = self.kinds, self.min_score, self.score_of
        for fname, arr in text_arrays(batch):
            subset, index = arr, None
            if len(self.groups) > 1:
                index = candidate_rows(arr, self._union)
                if not index:
                    continue
                subset = arr.take(pa.array(index, type=pa.int64()))
            for group in self.groups:
                rows = candidate_rows(subset, group.prefilter, group.ignore_case)
                if not rows:
                    continue
                texts = subset.take(pa.array(rows, type=pa.int64())).to_pylist()
                if index is not None:
                    rows = [index[r] for r in rows]
                for row, text in zip(rows, texts):
                    if not text:
                        continue
                    for kind, start, end, factor, extra in group.scan(text):
                        if kind not in kinds:
                            continue
                        score = score_of(kind, factor, extra)
                        if score is None or score < min_score:
                            continue
                        match = Match(kind, fname, start, end, round(score, 4), extra)
                        found = per_row.get(row)
                        if found is None:
                            per_row[row] = [match]
                        else:
                            found.append(match)
        if not per_row:
            return empty_findings()
        ids = record_ids(batch)
        # the row index in the shard tells apart records whose ids repeat (provenance.duplicate_id)
        shard_rows = batch.column(ROW).to_pylist() if ROW in batch.schema.names else list(range(batch.num_rows))
        out_ids, out_scores, out_details = [], [], []
        for row in sorted(per_row):
            matches = per_row[row]
            if len(matches) > 1:
                by_field: dict[str, list[Match]] = {}
                for m in matches:
                    by_field.setdefault(m.field, []).append(m)
                matches = [m for ms in by_field.values() for m in resolve_overlaps(ms)]
            out_ids.append(ids[row])
            out_scores.append(max(m.score for m in matches))
            out_details.append(self._detail(matches, shard_rows[row]))
        return findings_frame(out_ids, out_scores, out_details)

    def _detail(self, matches: list[Match], row: int | None = None) -> str:
        # the strongest matches first when capping, then in field/offset order
        shown = matches
        if len(matches) > self.max_matches:
            shown = sorted(matches, key=lambda m: -m.score)[: self.max_matches]
        if len(shown) > 1:
            shown = sorted(shown, key=lambda m: (m.field, m.start))
        flag = {"redact": True} if self.redact else {}
        detail = {
            "kinds": sorted({m.kind for m in matches}),
            "matches": [
                {"end": m.end, "field": m.field, "kind": m.kind, "score": m.score, "start": m.start, **m.extra, **flag}
                for m in shown
            ],
            "n_matches": len(matches),
        }
        if row is not None:
            detail["row"] = row
        return _dumps(detail)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), default=str).encode


def text_scan_options(kinds: Sequence[str], scores: Mapping[str, float], *, min_score: float,
                      min_score_description: str = "matches scoring below this are dropped") -> type[CheckOptions]:
    """The options every text-scan check has (``kinds``, ``min_score``, ``scores``,
    ``max_matches``), with the check's own kinds, base scores and ``min_score`` default; a
    check's ``Options`` subclasses it and adds its own."""
    # a class body cannot read a function's local that it also assigns: bind them first
    all_kinds, base_scores, score_floor = tuple(kinds), dict(scores), min_score

    class TextScanOptions(CheckOptions):
        kinds: list[str] = Field(default_factory=lambda: list(all_kinds), description="kinds to report")
        min_score: float = Field(score_floor, ge=0, le=1, description=min_score_description)
        scores: dict[str, float] = Field(default_factory=lambda: dict(base_scores),
                                         description="per-kind base score (partial overrides merge with the defaults)")
        max_matches: int = Field(20, ge=1, description="matches listed in detail per record (n_matches counts all)")

    return TextScanOptions


class TextScanCheck(Check):
    """Base of the checks that scan text for kinds of matches with a :class:`TextScanner`.

    A subclass sets ``KINDS`` (every kind it can report), ``DEFAULT_SCORES`` (a
    base score per kind) and ``redact``, builds its ``Options`` model on
    :func:`text_scan_options` (``kinds``, ``scores``, ``min_score``,
    ``max_matches``) with its own options added, and
    returns its :class:`ScanGroup` s from :meth:`scan_groups`.
    """

    requires = TEXT_FIELDS
    #: every kind the check can report (the ``kinds`` option picks among them)
    KINDS: ClassVar[Sequence[str]] = ()
    #: the base score of each kind (the ``scores`` option overrides them kind by kind)
    DEFAULT_SCORES: ClassVar[Mapping[str, float]] = {}
    #: whether report excerpts mask the matched span (secrets, personal data) or show it
    redact: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any] | None = None, shard: ShardInfo | None = None):
        super().__init__(options, shard)
        o = self.options
        self.kinds = resolve_kinds(self.name, o["kinds"], self.KINDS)
        self.scores = resolve_scores(self.name, o["scores"], self.DEFAULT_SCORES)
        self.scanner = TextScanner(self.scan_groups(), self.kinds, float(o["min_score"]), int(o["max_matches"]),
                                   self.score_of, redact=self.redact)

    def scan_groups(self) -> list[ScanGroup]:
        """The check's detectors (``self.options``, ``self.kinds`` and ``self.scores`` are set)."""
        raise NotImplementedError

    def score_of(self, kind: str, factor: float, extra: dict) -> float | None:
        """A match's score: its kind's score times the detector's factor, at most 1; None drops
        it (a published example value when the ``include_examples`` option is off)."""
        if extra.get("example") and not self.options.get("include_examples", True):
            return None
        return min(1.0, self.scores[kind] * factor)

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        return CheckOutput(findings=self.scanner.scan_batch(batch))
