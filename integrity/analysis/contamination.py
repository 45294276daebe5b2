"""Protected evaluation sets and their n-gram index (for ``contamination.eval``).

Tokenization is the project's shared one (:mod:`integrity.analysis.dedup.text`, also
used by ``dedup.near`` and ``dedup.span``), the same for benchmark and
training text: lower case, every character that is not a letter, digit or
``_`` separates tokens (punctuation is stripped), each token keeps its
character offsets (Python ``str`` indices) in the original field, which is how
a match maps back to a highlighted span. An n-gram is a run of ``n``
consecutive tokens inside one field, hashed to 64 bits from prefix sums
(:func:`integrity.analysis.dedup.text.windows`): no Python work per token, and
membership of a batch's n-grams in a benchmark is one ``np.searchsorted`` over
the benchmark's sorted uint64 array.

A benchmark (``{name, path, text_column, id_column, ngram}``) is read with the
project's connectors (any format they read: Parquet, JSONL, CSV, a ``datasets``
``save_to_disk`` directory, a directory or glob of those). Its index -- sorted
n-gram hashes, the benchmark record holding each, record ids and each record's
number of distinct n-grams -- is built once and cached as ``.npz`` (no pickle)
in ``<state_dir>/contamination/``, keyed by the SHA-256 of the benchmark's
bytes, the columns, ``n`` and :data:`TOKENIZER_VERSION`; a changed benchmark
file gets a new key and is re-indexed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from integrity.analysis.dedup.text import tokenize, windows

log = logging.getLogger(__name__)

#: bump when tokenization or hashing changes (invalidates cached indexes)
TOKENIZER_VERSION = 1
DEFAULT_NGRAM = 13

#: the shared tokenizer's identity (integrity.analysis.dedup.text), part of the cache key
TOKENS = "dedup.text words-lower-v1"
_U64 = np.uint64


class BenchmarkError(ValueError):
    """A registered benchmark cannot be used (bad spec, unreadable file, missing column)."""


# --------------------------------------------------------------------------- n-grams


def ngram_hashes(texts: Sequence[str | None], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, index of the text) of every run of ``n`` consecutive tokens of each text."""
    tok = tokenize({"text": list(texts)})
    h, first = windows(tok, n)
    return h, tok.doc[first]


# --------------------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class BenchmarkSpec:
    """One protected evaluation set, as registered in the policy."""

    name: str
    path: str
    text_column: str = "text"
    id_column: str | None = None
    ngram: int = DEFAULT_NGRAM

    @classmethod
    def parse(cls, raw: Any, default_ngram: int = DEFAULT_NGRAM) -> "BenchmarkSpec":
        if isinstance(raw, str):
            raw = {"path": raw}
        if not isinstance(raw, Mapping):
            raise BenchmarkError(f"a benchmark must be a mapping with name and path, not {raw!r}")
        unknown = set(raw) - {"name", "path", "text_column", "id_column", "ngram"}
        if unknown:
            raise BenchmarkError(f"benchmark {raw.get('name', raw.get('path'))!r}: unknown key(s) {sorted(unknown)}; "
                                 "known: name, path, text_column, id_column, ngram")
        if not raw.get("path"):
            raise BenchmarkError(f"benchmark {raw.get('name')!r} has no path")
        path = str(raw["path"])
        name = str(raw.get("name") or Path(path.rstrip("/")).name)
        n = raw.get("ngram", default_ngram)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise BenchmarkError(f"benchmark {name!r}: ngram must be an integer from 1 to 64, not {n!r}")
        return cls(name=name, path=path, text_column=str(raw.get("text_column") or "text"),
                   id_column=str(raw["id_column"]) if raw.get("id_column") else None, ngram=n)


@dataclass
class BenchmarkIndex:
    """Sorted n-gram hashes of one benchmark and the record holding each.

    ``hashes``/``rows`` hold one entry per distinct (n-gram, record), sorted by
    hash (an n-gram present in several records appears once per record);
    ``ids[r]`` is record ``r``'s id and ``grams[r]`` its number of distinct n-grams.
    """

    name: str
    n: int
    hashes: np.ndarray
    rows: np.ndarray
    ids: np.ndarray
    grams: np.ndarray
    key: str = ""

    @property
    def records(self) -> int:
        return int(self.ids.size)

    def lookup(self, grams: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``grams`` occur in the benchmark."""
        if self.hashes.size == 0 or grams.size == 0:
            return np.zeros(grams.size, dtype=bool)
        pos = np.searchsorted(self.hashes, grams)
        pos = np.minimum(pos, self.hashes.size - 1)
        return self.hashes[pos] == grams

    def holders(self, grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``grams``, benchmark row) for every record holding each gram."""
        lo = np.searchsorted(self.hashes, grams, side="left")
        hi = np.searchsorted(self.hashes, grams, side="right")
        cnt = hi - lo
        which = np.repeat(np.arange(grams.size), cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        return which, self.rows[np.repeat(lo, cnt) + offs]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
        ids = self.ids.astype(str) if self.ids.size else np.zeros(0, dtype="<U1")
        np.savez(tmp, hashes=self.hashes, rows=self.rows, ids=ids, grams=self.grams,
                 meta=np.array(json.dumps({"name": self.name, "n": self.n, "key": self.key})))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "BenchmarkIndex":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(name=meta["name"], n=int(meta["n"]), hashes=z["hashes"], rows=z["rows"], ids=z["ids"],
                       grams=z["grams"], key=meta["key"])


def build_index(name: str, n: int, texts: Sequence[str | None], ids: Sequence[str], key: str = "") -> BenchmarkIndex:
    """The index of benchmark records ``texts`` (with ``ids``) for n-grams of ``n`` tokens."""
    gh, gdoc = ngram_hashes(texts, n)
    if gh.size:
        pairs = np.unique(np.stack([gh, gdoc.astype(_U64)], axis=1), axis=0)  # sorted by hash, then row
        hashes, rows = pairs[:, 0].copy(), pairs[:, 1].astype(np.int64)
    else:
        hashes, rows = np.zeros(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    grams = np.bincount(rows, minlength=len(texts)).astype(np.int64)
    return BenchmarkIndex(name=name, n=n, hashes=hashes, rows=rows, ids=np.asarray(list(ids), dtype=str),
                          grams=grams, key=key)


_sha_memo: dict[tuple[str, str], str] = {}
_index_memo: dict[str, BenchmarkIndex] = {}
_lock = threading.Lock()


def _refs(spec: BenchmarkSpec, storage_options: dict | None):
    from connectors import list_shards
    from connectors.errors import SourceError

    try:
        return list_shards(spec.path, storage_options=storage_options)
    except SourceError as e:
        raise BenchmarkError(f"benchmark {spec.name!r}: {e}") from e


def content_key(spec: BenchmarkSpec, storage_options: dict | None = None) -> str:
    """Cache key of a benchmark's index: SHA-256 of its bytes (every shard of it),
    its columns, ``n`` and the tokenizer version."""
    from connectors import hash_shard

    shas = []
    for ref in _refs(spec, storage_options):
        k = (ref.uri, ref.fingerprint)
        if k not in _sha_memo:
            _sha_memo[k] = hash_shard(ref, storage_options=storage_options)
        shas.append((ref.name, _sha_memo[k]))
    blob = json.dumps({"shards": shas, "text": spec.text_column, "id": spec.id_column, "n": spec.ngram,
                       "tok": TOKENIZER_VERSION, "tokens": TOKENS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_benchmark(spec: BenchmarkSpec, storage_options: dict | None = None) -> tuple[list[str | None], list[str]]:
    """(texts, ids) of every record of a benchmark, read with the connectors."""
    from connectors import ShardReader
    from connectors.errors import ShardReadError
    from connectors.schema import RECORD_ID, ColumnMapping

    explicit = {"text"} | ({"id"} if spec.id_column else set())
    mapping = ColumnMapping(id=spec.id_column or "id", text=spec.text_column, explicit=frozenset(explicit))
    texts: list[str | None] = []
    ids: list[str] = []
    refs = _refs(spec, storage_options)
    for ref in refs:
        try:
            for batch in ShardReader(ref, mapping, storage_options=storage_options):
                if "text" not in batch.schema.names:
                    raise BenchmarkError(f"benchmark {spec.name!r}: {ref.uri} has no column {spec.text_column!r} "
                                         "(set text_column)")
                texts.extend(batch.column("text").to_pylist())
                rid = batch.column(RECORD_ID).to_pylist()
                ids.extend(rid if len(refs) == 1 else [f"{ref.name}:{r}" for r in rid])
        except ShardReadError as e:
            raise BenchmarkError(f"benchmark {spec.name!r}: {e}") from e
    return texts, ids


def load_index(spec: BenchmarkSpec, cache_dir: Path | None, storage_options: dict | None = None) -> BenchmarkIndex:
    """The benchmark's index: from this process's memory, else the cache in
    ``cache_dir`` (when given), else built from the file and cached."""
    key = content_key(spec, storage_options)
    with _lock:  # one build per benchmark even when shard threads ask together
        idx = _index_memo.get(key)
        if idx is not None:
            return replace(idx, name=spec.name)
        path = cache_dir / f"{key[:32]}-n{spec.ngram}.npz" if cache_dir is not None else None
        if path is not None and path.exists():
            try:
                idx = BenchmarkIndex.load(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("contamination index %s is unreadable (%s); rebuilding it", path, e)
                idx = None
        if idx is None:
            texts, ids = read_benchmark(spec, storage_options)
            idx = build_index(spec.name, spec.ngram, texts, ids, key=key)
            log.info("indexed benchmark %s: %d records, %d distinct %d-grams", spec.name, idx.records,
                     idx.hashes.size, spec.ngram)
            if path is not None:
                idx.save(path)
        _index_memo[key] = idx
        return replace(idx, name=spec.name)
