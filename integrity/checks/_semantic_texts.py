"""Texts and vectors of :mod:`integrity.checks.dedup_semantic` in and out of shards: the text a
record is embedded by, float16 vector bytes, the sample key of a content, and the re-reading of
candidate texts from their shards for the corpus pass's re-scoring, and the CPU sample of a shard's
contents (:class:`ContentSample`)."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from connectors.schema import ROW

log = logging.getLogger("integrity.checks.dedup_semantic")

#: characters of a text kept for embedding: far more than max_seq_length tokens ever need
CHARS_PER_TOKEN = 16


def embed_texts(batch: pa.RecordBatch | pa.Table) -> list[str | None] | None:
    """The text embedded for each record: ``text``; else prompt and response; else caption."""
    names = set(batch.schema.names)
    if "text" in names:
        return batch.column("text").to_pylist()
    if "prompt" in names or "response" in names:
        cols = [batch.column(c).to_pylist() for c in ("prompt", "response") if c in names]
        if len(cols) == 1:
            return cols[0]
        return [None if (p is None and r is None) else f"{p or ''}\n{r or ''}" for p, r in zip(*cols)]
    if "caption" in names:
        return batch.column("caption").to_pylist()
    return None


def sample_key(digests: list[bytes | None]) -> np.ndarray:
    """uint64 sample key of each content (the first 8 bytes of its 128-bit hash); max for None."""
    out = np.full(len(digests), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i, d in enumerate(digests):
        if d is not None:
            out[i] = int.from_bytes(d[:8], "big")
    return out


class ContentSample:
    """The contents a shard embeds on CPU without a static stage: the ``cap`` distinct contents
    with the smallest sample keys seen so far (a deterministic sample, the same whatever the
    record order), kept as batches come."""

    def __init__(self, cap: int):
        self.cap = cap
        self.key = np.zeros(0, dtype=np.uint64)
        self.h: list[bytes] = []
        self.text: list[str] = []

    def add(self, key: np.ndarray, h: list[bytes], text: list[str]) -> None:
        """Offer a batch's contents (sample keys, hashes, texts); keep the ``cap`` smallest keys."""
        known = set(self.h)
        new = [i for i, x in enumerate(h) if x not in known]
        if not new:
            return
        all_key = np.concatenate([self.key, key[new]])
        all_h = self.h + [h[i] for i in new]
        all_text = self.text + [text[i] for i in new]
        if len(all_h) > self.cap:
            keep = np.sort(np.argpartition(all_key, self.cap - 1)[:self.cap])
            all_key = all_key[keep]
            all_h = [all_h[i] for i in keep]
            all_text = [all_text[i] for i in keep]
        self.key, self.h, self.text = all_key, all_h, all_text

    def in_key_order(self) -> tuple[list[bytes], list[str]]:
        """(hashes, texts) of the sample in sample-key order."""
        order = np.argsort(self.key, kind="stable")
        return [self.h[i] for i in order], [self.text[i] for i in order]


def vectors_from_bytes(col: pl.Series, dim: int | None = None) -> np.ndarray:
    """float32 matrix from a column of float16 byte strings (all of one length)."""
    raw = b"".join(col.to_list())
    arr = np.frombuffer(raw, dtype=np.float16)
    n = col.len()
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return arr.reshape(n, -1).astype(np.float32)


def read_texts(uris: list[str | None], rows: list[int], mapping: Any, max_chars: int,
               storage_options: dict | None = None) -> list[str | None]:
    """The embedded text (see :func:`embed_texts`) of the record at each ``(uri, row)``, re-read
    from its shard with the scan's column mapping and fsspec options
    (:func:`connectors.read_rows`); None where the shard cannot be read any more (moved, deleted)."""
    from connectors import read_rows
    from connectors.errors import ConnectorError

    wanted: dict[str, dict[int, list[int]]] = {}
    for i, (u, r) in enumerate(zip(uris, rows)):
        if u is not None:
            wanted.setdefault(u, {}).setdefault(int(r), []).append(i)
    out: list[str | None] = [None] * len(uris)
    for uri, by_row in wanted.items():
        try:
            for batch in read_rows(uri, by_row, mapping, storage_options):
                texts = embed_texts(batch) or []
                for r, t in zip(batch.column(ROW).to_pylist(), texts):
                    for i in by_row[int(r)]:
                        out[i] = None if t is None else t[:max_chars]
        except (ConnectorError, OSError, ValueError) as e:
            log.warning("dedup.semantic: cannot re-read %s for re-scoring: %s", uri, e)
    return out
