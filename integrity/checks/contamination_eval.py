"""``contamination.eval``: training records that overlap a protected evaluation set.

Users register their evaluation sets in the policy::

    contamination.eval:
      options:
        benchmarks:
          - {name: mmlu-test, path: /data/mmlu/test.parquet, text_column: question, id_column: id}
          - {name: my-qa, path: /data/my_qa_saved_to_disk/, text_column: prompt, ngram: 8}

A benchmark is a file, directory or glob the connectors read (Parquet, JSONL,
CSV, a ``datasets`` ``save_to_disk`` dir). Each is indexed once as hashed word
n-grams (13 tokens by default, as in the GPT-3 paper's contamination analysis;
``ngram`` per benchmark or for all) after lower-casing and stripping
punctuation (see :mod:`integrity.analysis.contamination`); the index is cached in
``<state_dir>/contamination/`` (or the ``index_dir`` option) keyed by the
benchmark's SHA-256, so an unchanged benchmark is never re-read.

Per batch, every text field (``text``, ``prompt``, ``response``, ``caption``)
is tokenized and its n-grams hashed as one uint64 array; membership is one
``np.searchsorted`` per benchmark, and only the hits are grouped (Polars) by
record and benchmark record. A training record with at least ``min_ngrams``
n-grams of a benchmark gives one finding:

* ``score``: the largest share of one benchmark record's distinct n-grams found
  in this training record (1.0: the whole test item is in the training data);
* ``detail``: ``benchmark`` and ``benchmark_record`` (the id of that best
  matching test item), ``benchmark_coverage`` (= score), ``benchmarks`` (per
  benchmark: matched record ids and coverages, capped), ``matches``: the
  overlapping spans as ``{"field", "start", "end", "benchmark"}`` character
  offsets into the training record (overlapping windows merged), so the report
  highlights them, ``overlap_tokens`` and ``record_tokens``.

When a benchmark cannot be read, each shard gets one shard-level finding
(``record_id`` null, score 1.0) naming the benchmark and the error, so a gate
fails loudly instead of passing unchecked data; the other benchmarks still run.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import RECORD_ID, TEXT_FIELDS
from integrity.analysis.contamination import (
    DEFAULT_NGRAM, BenchmarkError, BenchmarkIndex, BenchmarkSpec, content_key, load_index,
)
from integrity.analysis.dedup.text import tokenize, windows
from integrity.checks.base import CheckOptions, Check, CheckConfigError, CheckOutput, ShardInfo, findings_frame

log = logging.getLogger(__name__)


class ContaminationEval(Check):
    name = "contamination.eval"
    report_section = "contamination"
    description = "Training records sharing word n-grams (13 by default) with a registered evaluation set."
    requires = TEXT_FIELDS
    class Options(CheckOptions):
        benchmarks: list[Any] = Field(default_factory=list, description="evaluation sets, e.g. [{name: mmlu-test, path: "
                                      "/data/mmlu/test.parquet, text_column: question, id_column: id, ngram: 13}] (any "
                                      "file, glob or `datasets` dir the connectors read)")
        ngram: int = Field(DEFAULT_NGRAM, ge=1, le=64, description="tokens per n-gram (GPT-3's analysis); a benchmark may set its own")
        min_ngrams: int = Field(1, ge=1, description="overlapping n-grams a record needs to be reported")
        index_dir: str | None = Field(None, description="where n-gram indexes are cached (null: STATE_DIR/contamination)")
        max_matches: int = Field(20, ge=1, description="spans listed per finding")
        max_records: int = Field(5, ge=1, description="test items listed per benchmark per finding")
    default_severity = "warn"
    version = 1

    def __init__(self, options: Mapping[str, Any] | None = None, shard: ShardInfo | None = None):
        super().__init__(options, shard)
        o = self.options
        try:
            self.benchmarks = [BenchmarkSpec.parse(b, o["ngram"]) for b in o["benchmarks"]]
        except BenchmarkError as e:
            raise CheckConfigError(f"check {self.name!r}: option 'benchmarks': {e}", check=self.name,
                                   problems=[("benchmarks", str(e))]) from None
        names = [b.name for b in self.benchmarks]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            problem = f"benchmark names must be unique; repeated: {dup}"
            raise CheckConfigError(f"check {self.name!r}: option 'benchmarks': {problem}", check=self.name,
                                   problems=[("benchmarks", problem)])
        self._indexes: list[BenchmarkIndex] | None = None
        self._errors: list[dict] = []

    # ---------------------------------------------------------------- index
    def _index_dir(self) -> Path | None:
        if self.options["index_dir"]:
            return Path(self.options["index_dir"]).expanduser()
        state = getattr(self.shard, "state_dir", None) if self.shard is not None else None
        return Path(state) / "contamination" if state else None

    def _load(self) -> list[BenchmarkIndex]:
        if self._indexes is None:
            self._indexes = []
            for spec in self.benchmarks:
                try:
                    self._indexes.append(load_index(spec, self._index_dir()))
                except (BenchmarkError, OSError) as e:
                    msg = str(e) if isinstance(e, BenchmarkError) else f"benchmark {spec.name!r}: {e}"
                    log.error("contamination.eval: %s", msg)
                    self._errors.append({"benchmark": spec.name, "path": spec.path, "error": msg})
        return self._indexes

    def fingerprint(self) -> str:
        """Name, version, options and the content key of every benchmark, so cached
        shard results are recomputed when a benchmark file changes."""
        import hashlib

        keys = []
        for spec in self.benchmarks:
            try:
                keys.append(content_key(spec))
            except (BenchmarkError, OSError) as e:
                keys.append(f"unreadable: {e}")
        blob = json.dumps({"base": super().fingerprint(), "benchmarks": keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ---------------------------------------------------------------- scan
    def applies_to(self, columns) -> bool:
        return bool(self.benchmarks) and super().applies_to(columns)

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        indexes = self._load()
        if not indexes:
            return CheckOutput()
        fields = [f for f in TEXT_FIELDS if f in batch.schema.names]
        if not fields:
            return CheckOutput()
        tok = tokenize({f: batch.column(f).to_pylist() for f in fields})
        tokens_per_doc = tok.counts
        field_names = pl.Series("field", list(tok.fields), dtype=pl.Utf8)
        hits = []  # frames: doc, field, bench, first, gram, start, end, n
        for n in sorted({i.n for i in indexes}):
            gram, first_all = windows(tok, n)
            for bi, idx in enumerate(indexes):
                if idx.n != n:
                    continue
                m = idx.lookup(gram)
                if not m.any():
                    continue
                first = first_all[m]
                hits.append(pl.DataFrame({
                    "doc": tok.doc[first], "field": field_names.gather(tok.field[first].astype(np.int64)),
                    "bench": np.full(first.size, bi, dtype=np.int32), "first": first, "gram": gram[m],
                    "start": tok.start[first], "end": tok.end[first + n - 1],
                    "n": np.full(first.size, n, dtype=np.int32),
                }))
        if not hits:
            return CheckOutput()
        h = pl.concat(hits)
        min_ngrams = self.options["min_ngrams"]
        # distinct overlapping n-grams per (record, benchmark): keep records with enough
        keep = (h.group_by("doc", "bench").agg(pl.col("gram").n_unique().alias("k"))
                .filter(pl.col("k") >= min_ngrams).select("doc", "bench"))
        h = h.join(keep, on=["doc", "bench"], how="semi")
        if h.height == 0:
            return CheckOutput()
        cover = self._coverage(h, indexes)
        spans = self._spans(h)
        return CheckOutput(findings=self._findings(batch, h, cover, spans, indexes, tokens_per_doc))

    @staticmethod
    def _coverage(h: pl.DataFrame, indexes: list[BenchmarkIndex]) -> pl.DataFrame:
        """Per (doc, bench, benchmark row): share of that benchmark record's distinct
        n-grams found in the training record (all its fields together)."""
        parts = []
        for bi, idx in enumerate(indexes):
            sub = h.filter(pl.col("bench") == bi).select("doc", "gram").unique()
            if sub.height == 0:
                continue
            which, rows = idx.holders(sub["gram"].to_numpy())
            found = (pl.DataFrame({"doc": sub["doc"].to_numpy()[which], "brow": rows,
                                   "gram": sub["gram"].to_numpy()[which]})
                     .group_by("doc", "brow").agg(pl.col("gram").n_unique().alias("found")))
            parts.append(found.with_columns(
                bench=pl.lit(bi, dtype=pl.Int32),
                total=pl.Series(idx.grams[found["brow"].to_numpy()], dtype=pl.Int64)))
        cover = pl.concat(parts).with_columns(coverage=pl.col("found") / pl.col("total").clip(lower_bound=1))
        return cover.sort(["doc", "bench", "coverage", "brow"], descending=[False, False, True, False])

    @staticmethod
    def _spans(h: pl.DataFrame) -> pl.DataFrame:
        """Overlapping windows of one (doc, field, bench) merged into character spans."""
        w = (h.select("doc", "field", "bench", "first", "n", "start", "end").unique()
             .sort("doc", "field", "bench", "first"))
        grp = ["doc", "field", "bench"]
        new = (pl.col("first") > (pl.col("first") + pl.col("n") - 1).cum_max().shift(1).over(grp)).fill_null(True)
        return (w.with_columns(span=new.cast(pl.Int32).cum_sum().over(grp))
                .group_by(grp + ["span"], maintain_order=True)
                .agg(pl.col("start").min(), pl.col("end").max(),
                     tokens=(pl.col("first").max() - pl.col("first").min() + pl.col("n").first())))

    def _findings(self, batch, h, cover, spans, indexes, tokens_per_doc) -> pl.DataFrame:
        o = self.options
        ids = batch.column(RECORD_ID).to_pylist()
        cover_by_doc: dict[int, list[dict]] = {}
        for r in cover.iter_rows(named=True):
            cover_by_doc.setdefault(r["doc"], []).append(r)
        spans_by_doc: dict[int, list[dict]] = {}
        for r in spans.sort("doc", "start").iter_rows(named=True):
            spans_by_doc.setdefault(r["doc"], []).append(r)
        out_ids, scores, details = [], [], []
        for doc in sorted(cover_by_doc):
            rows = cover_by_doc[doc]
            best = max(rows, key=lambda r: (r["coverage"], r["found"]))
            per_bench: dict[str, list[dict]] = {}
            for r in rows:
                lst = per_bench.setdefault(indexes[r["bench"]].name, [])
                if len(lst) < o["max_records"]:
                    lst.append({"id": str(indexes[r["bench"]].ids[r["brow"]]),
                                "coverage": round(r["coverage"], 4), "ngrams": r["found"]})
            sp = spans_by_doc.get(doc, [])
            overlap = sum(s["tokens"] for s in sp)
            matches = [{"field": s["field"], "start": int(s["start"]), "end": int(s["end"]),
                        "benchmark": indexes[s["bench"]].name} for s in sp[: o["max_matches"]]]
            out_ids.append(ids[doc])
            scores.append(float(best["coverage"]))
            details.append({
                "benchmark": indexes[best["bench"]].name,
                "benchmark_record": str(indexes[best["bench"]].ids[best["brow"]]),
                "benchmark_coverage": round(float(best["coverage"]), 4),
                "ngram": indexes[best["bench"]].n,
                "benchmarks": [{"name": k, "records": v} for k, v in per_bench.items()],
                "matches": matches,
                "n_spans": len(sp),
                "overlap_tokens": int(overlap),
                "record_tokens": int(tokens_per_doc[doc]),
            })
        return findings_frame(out_ids, scores, details)

    def finish_shard(self) -> CheckOutput:
        if not self._errors:
            return CheckOutput()
        return CheckOutput(findings=findings_frame(
            [None] * len(self._errors), [1.0] * len(self._errors),
            [{**e, "kind": "benchmark_unreadable"} for e in self._errors], "critical"))

