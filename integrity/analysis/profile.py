"""Reference profiles: what a trusted corpus looks like, small enough to ship with a policy.

``integrity profile REFERENCE --out REF_DIR`` reads a trusted corpus once and
writes a *versioned* profile directory that ``integrity scan --reference
REF_DIR`` compares every shard against (``distribution.drift``,
``synthetic.text``). A profile directory holds::

    REF_DIR/
      LATEST                      name of the current version (a line of text)
      versions/<version>/
        profile.json              format, version, source, counts, per-feature
                                  quantile edges + histograms + moments, language
                                  and label distributions, topic model summary,
                                  fairness view, optional synthetic classifier
        features.parquet          a deterministic sample of per-record features
                                  (see integrity.analysis.features) used by permutation tests,
                                  and the zero-shot machine-text features
                                  (integrity.analysis.machine_text; absent in older profiles)
        embeddings.npy            float16 MiniLM embeddings of the first rows of
                                  that sample (``embedding.n`` of them)
        centroids.npy             float32 k-means topic centroids (unit norm)

Building again into the same REF_DIR adds a version and moves ``LATEST``; older
versions stay loadable with ``--reference REF_DIR/versions/<version>``.
Nothing here is pickled: numbers are JSON, Parquet or ``.npy`` read with
``allow_pickle=False``.

The sample is *bottom-k by hash*: the records whose seeded xxh64 of
(shard, record id) is smallest, so the same records are chosen whatever the
read order, and the embedding sample is a prefix of the feature sample.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash

from integrity.analysis import fairness
from integrity.analysis.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, STYLE_FEATURES, record_text, text_features
from integrity.analysis.machine_text import VOCAB_COLUMNS, ZS_FEATURES, zero_shot_features

log = logging.getLogger(__name__)

PROFILE_FORMAT = 1
N_BINS = 10
EMBED_MAX_CHARS = 1000  # characters of a text given to the embedding model
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MAX_SEQ = 128


class ProfileError(ValueError):
    """A reference profile cannot be built or loaded; the message says why and what to do."""


# --------------------------------------------------------------------------- helpers


def sample_key(shard: str, record_id: str) -> int:
    """The seeded 64-bit hash that decides which records a sample keeps."""
    return xxhash.xxh64_intdigest(f"{shard}\x1f{record_id}".encode("utf-8"), 0x5EED)


def quantile_edges(values: np.ndarray, n_bins: int = N_BINS) -> list[float]:
    """Inner bin edges at the reference's quantiles (duplicates dropped: a feature with
    ties gets fewer bins). Bins are (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(x) for x in np.unique(qs)]


def bin_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin of each value for :func:`quantile_edges` edges; NaN gets its own last bin."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, idx).astype(np.int64)


def categorical_shares(values: Iterable[Any]) -> dict[str, float]:
    vals = ["(null)" if v is None else str(v) for v in values]
    if not vals:
        return {}
    keys, counts = np.unique(np.asarray(vals, dtype=object), return_counts=True)
    return {str(k): float(c) / len(vals) for k, c in zip(keys, counts)}


def embed_texts(texts: list[str | None], model: str = DEFAULT_EMBED_MODEL,
                max_seq_length: int = DEFAULT_MAX_SEQ) -> np.ndarray:
    """float32 unit-norm sentence embeddings through the project's shared TextEmbedder."""
    from integrity.analysis.embeddings import TextEmbedder

    emb = TextEmbedder(model, max_seq_length=max_seq_length)
    clipped = [("" if t is None else str(t))[:EMBED_MAX_CHARS] for t in texts]
    return np.asarray(emb.encode(clipped), dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids (unit norm) of unit-norm rows."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(x)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    c = km.cluster_centers_.astype(np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, cosine distance to it) of each unit-norm row."""
    if len(x) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    sims = x.astype(np.float32) @ centroids.T
    idx = sims.argmax(axis=1)
    return idx.astype(np.int64), (1.0 - sims[np.arange(len(x)), idx]).astype(np.float64)


# --------------------------------------------------------------------------- the profile object


@dataclass
class Profile:
    """A loaded reference profile (see the module docstring for the files)."""

    path: Path
    meta: dict[str, Any]
    features: pl.DataFrame
    embeddings: np.ndarray | None = None
    centroids: np.ndarray | None = None

    @property
    def version(self) -> str:
        return str(self.meta.get("version", ""))

    @property
    def profile_id(self) -> str:
        return str(self.meta.get("profile_id", ""))

    def edges(self, feature: str) -> list[float]:
        return list(self.meta["features"][feature]["edges"])

    @property
    def embedding(self) -> dict[str, Any] | None:
        return self.meta.get("embedding")

    @property
    def synthetic_classifier(self) -> dict[str, Any] | None:
        return self.meta.get("synthetic_classifier")

    @property
    def fairness(self) -> dict[str, Any] | None:
        return self.meta.get("fairness")

    def describe(self) -> str:
        m = self.meta
        emb = m.get("embedding") or {}
        parts = [f"profile {m.get('version')} ({m.get('profile_id', '')[:12]}) of {m.get('source')}",
                 f"{m.get('n_records', 0):,} records, {m.get('n_sample', 0):,} sampled"]
        if emb:
            parts.append(f"{emb.get('n', 0)} embeddings, {emb.get('k', 0)} topics ({emb.get('model')})")
        if m.get("synthetic_classifier"):
            sc = m["synthetic_classifier"]
            parts.append(f"synthetic classifier (cv AUROC {sc.get('cv_auroc', float('nan')):.3f})")
        return "; ".join(parts)


def resolve_version_dir(path: str | Path) -> Path:
    """The directory of one profile version: ``path`` itself when it holds
    ``profile.json``, else the version named by ``path/LATEST``."""
    p = Path(path).expanduser()
    if (p / "profile.json").is_file():
        return p
    latest = p / "LATEST"
    if latest.is_file():
        v = latest.read_text(encoding="utf-8").strip()
        d = p / "versions" / v
        if (d / "profile.json").is_file():
            return d
        raise ProfileError(f"{p}: LATEST names version {v!r} but {d} holds no profile.json")
    if not p.exists():
        raise ProfileError(f"reference profile {p} does not exist; build one with `integrity profile CORPUS --out {p}`")
    raise ProfileError(f"{p} is not a reference profile (no profile.json, no LATEST); "
                       f"build one with `integrity profile CORPUS --out {p}`")


_CACHE: dict[tuple[str, float], Profile] = {}


def load_profile(path: str | Path) -> Profile:
    """Load a profile version (cached per process by path and modification time)."""
    d = resolve_version_dir(path)
    meta_path = d / "profile.json"
    key = (str(d.resolve()), meta_path.stat().st_mtime)
    if key in _CACHE:
        return _CACHE[key]
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ProfileError(f"{meta_path}: not valid JSON ({e})") from e
    if meta.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{meta_path}: profile format {meta.get('format')!r} is not supported "
                           f"(this version reads format {PROFILE_FORMAT}); rebuild it with `integrity profile`")
    feats = pl.read_parquet(d / "features.parquet")
    emb = cen = None
    if meta.get("embedding"):
        emb = np.load(d / "embeddings.npy", allow_pickle=False).astype(np.float32)
        cen = np.load(d / "centroids.npy", allow_pickle=False).astype(np.float32)
    prof = Profile(path=d, meta=meta, features=feats, embeddings=emb, centroids=cen)
    _CACHE[key] = prof
    return prof


# --------------------------------------------------------------------------- building


@dataclass
class _Sampler:
    """Bottom-k sample by hash over a stream of batches."""

    k: int
    heap: list = field(default_factory=list)  # (-key, seq, row dict)
    seq: int = 0

    def offer(self, key: int, row: dict) -> None:
        self.seq += 1
        item = (-key, self.seq, row)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif -self.heap[0][0] > key:
            heapq.heapreplace(self.heap, item)

    def rows(self) -> list[dict]:
        return [r for _, _, r in sorted(self.heap, key=lambda t: (-t[0], t[1]))]


def _iter_batches(source: str, mapping, batch_size: int = 8192, storage_options: dict | None = None,
                  progress: Any = None):
    """(shard name, normalized batch) of every shard; ``progress`` (an object with ``start(refs)``,
    ``batch(shard, rows)`` and ``shard_done(shard, rows)``, e.g. a ScanProgress) hears of each."""
    from connectors import ShardReader, list_shards

    refs = list_shards(source, storage_options=storage_options)
    if progress is not None:
        progress.start(refs)
    for ref in refs:
        reader = ShardReader(ref, mapping, batch_size=batch_size, storage_options=storage_options)
        for batch in reader:
            if progress is not None:
                progress.batch(ref.name, batch.num_rows)
            yield ref.name, batch
        if progress is not None:
            progress.shard_done(ref.name, reader.rows)


def profile_rows(batches: Iterable[tuple[str, pa.RecordBatch]], max_sample: int) -> tuple[list[dict], int, dict]:
    """(bottom-k sample of feature rows with text, records seen, full-corpus counts)."""
    sampler = _Sampler(max_sample)
    n = 0
    label_counts: dict[str, int] = {}
    lang_counts: dict[str, int] = {}
    for shard, batch in batches:
        texts = record_text(batch)
        if texts is None:
            continue
        feats = text_features(texts)
        ids = batch.column("record_id").to_pylist()
        tl = texts.to_pylist()
        labels = batch.column("label").to_pylist() if "label" in batch.schema.names else [None] * batch.num_rows
        for lang, c in feats.group_by("language").len().iter_rows():
            lang_counts[str(lang)] = lang_counts.get(str(lang), 0) + c
        for i, row in enumerate(feats.iter_rows(named=True)):
            if labels[i] is not None:
                label_counts[str(labels[i])] = label_counts.get(str(labels[i]), 0) + 1
            row["text"] = tl[i]
            row["label"] = None if labels[i] is None else str(labels[i])
            row["_key"] = sample_key(shard, str(ids[i]))
            sampler.offer(row["_key"], row)
        n += batch.num_rows
    return sampler.rows(), n, {"labels": label_counts, "languages": lang_counts}


def feature_summary(df: pl.DataFrame) -> dict[str, dict]:
    out = {}
    for f in NUMERIC_FEATURES:
        v = df[f].cast(pl.Float64).to_numpy().astype(np.float64)
        v = np.where(np.isfinite(v), v, np.nan)
        finite = v[np.isfinite(v)]
        edges = quantile_edges(finite)
        counts = np.bincount(bin_index(v, edges), minlength=len(edges) + 2)
        q = np.quantile(finite, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]).tolist() if finite.size else []
        out[f] = {
            "edges": edges,
            "counts": counts.tolist(),
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "quantiles": dict(zip(["q01", "q05", "q25", "q50", "q75", "q95", "q99"], q)),
            "null_share": float(np.isnan(v).mean()) if v.size else 0.0,
        }
    return out


def _topic_model(emb: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """k-means centroids of the embeddings, each topic's share of the reference, and the
    distribution of the reference's own distances to its nearest centroid."""
    centroids = kmeans(emb, k, seed)
    assign, dist = nearest_centroid(emb, centroids)
    mass = np.bincount(assign, minlength=len(centroids)) / max(1, len(assign))
    return centroids, {
        "k": int(len(centroids)),
        "topic_mass": mass.tolist(),
        "distance_quantiles": {q: float(np.quantile(dist, float(q[1:]) / 100)) for q in ("q50", "q95", "q99")},
    }


def train_synthetic_classifier(human: pl.DataFrame, synthetic: pl.DataFrame, seed: int = 0) -> dict:
    """Logistic regression on style features, human reference (0) vs known synthetic (1).

    Returns the model as plain numbers (means, scales, coefficients, intercept)
    plus its 5-fold cross-validated AUROC and, at the decision threshold, the
    true and false positive rates used to correct share estimates
    (adjusted classify-and-count).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cols = list(STYLE_FEATURES)
    xh = human.select(cols).to_numpy().astype(np.float64)
    xs = synthetic.select(cols).to_numpy().astype(np.float64)
    if len(xh) < 10 or len(xs) < 10:
        raise ProfileError(f"a synthetic classifier needs at least 10 human and 10 synthetic records "
                           f"(got {len(xh)} and {len(xs)})")
    x = np.vstack([xh, xs])
    med = np.nanmedian(x, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    x = np.where(np.isfinite(x), x, med)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z = (x - mu) / sd
    y = np.r_[np.zeros(len(xh)), np.ones(len(xs))]
    # balance the classes so the threshold 0.5 means "more like synthetic"
    lr = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    p = cross_val_predict(lr, z, y, cv=folds, method="predict_proba")[:, 1]
    auroc = float(roc_auc_score(y, p))
    thr = 0.5
    tpr = float((p[y == 1] >= thr).mean())
    fpr = float((p[y == 0] >= thr).mean())
    lr.fit(z, y)
    return {
        "features": cols, "median": med.tolist(), "mean": mu.tolist(), "scale": sd.tolist(),
        "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]), "threshold": thr,
        "cv_auroc": auroc, "tpr": tpr, "fpr": fpr, "n_human": int(len(xh)), "n_synthetic": int(len(xs)),
        "cv_scores_human": np.sort(p[y == 0]).tolist(), "cv_scores_synthetic": np.sort(p[y == 1]).tolist(),
    }


def classifier_scores(model: dict, feats: pl.DataFrame) -> np.ndarray:
    """P(synthetic) of each row under a classifier from :func:`train_synthetic_classifier`."""
    x = feats.select(model["features"]).to_numpy().astype(np.float64)
    med = np.asarray(model["median"])
    x = np.where(np.isfinite(x), x, med)
    z = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logit = z @ np.asarray(model["coef"]) + float(model["intercept"])
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))


def build_profile(source: str, out: str | Path, *, mapping=None, max_sample: int = 10_000,
                  embed_sample: int = 1000, topics: int = 16,
                  embed_model: str = DEFAULT_EMBED_MODEL, max_seq_length: int = DEFAULT_MAX_SEQ,
                  synthetic_sample: str | None = None, batches: Iterable | None = None,
                  synthetic_batches: Iterable | None = None, storage_options: dict | None = None,
                  note: str = "", embed_fn: Callable[[list[str]], np.ndarray] | None = None,
                  progress: Any = None, on_phase: Callable[[str], None] | None = None) -> Profile:
    """Build a profile of ``source`` into a new version under ``out`` and make it LATEST.

    ``batches``/``synthetic_batches`` (iterables of (shard name, normalized batch))
    replace reading ``source``/``synthetic_sample`` through the connectors (tests,
    benchmarks); ``embed_fn`` replaces the embedding model (texts -> unit-norm rows;
    it must be the model the scan will use). ``embed_sample=0`` builds a profile
    without embeddings/topics. ``progress`` hears of every batch read (records done / total
    and an ETA, see ``integrity.engine.progress.ScanProgress``); ``on_phase`` of each later step.
    """
    phase = on_phase or (lambda text: None)
    from connectors.schema import ColumnMapping

    mapping = mapping or ColumnMapping()
    if batches is None:
        batches = _iter_batches(source, mapping, storage_options=storage_options, progress=progress)
    rows, n_records, counts = profile_rows(batches, max_sample)
    if not rows:
        raise ProfileError(f"{source}: no records with text to profile (check --text-column)")
    sample = _with_zero_shot(pl.DataFrame(rows, schema={**{f: pl.Float64 for f in NUMERIC_FEATURES}, "language": pl.Utf8,
                                                        "text": pl.Utf8, "label": pl.Utf8, "_key": pl.UInt64}))
    texts = sample["text"].to_list()
    fair = fairness.fairness_features(sample["text"])
    meta: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "note": note,
        "n_records": n_records,
        "n_sample": sample.height,
        "features": feature_summary(sample),
        "languages": {k: v / max(1, n_records) for k, v in sorted(counts["languages"].items())},
        "labels": ({k: v / max(1, sum(counts["labels"].values())) for k, v in sorted(counts["labels"].items())}
                   if counts["labels"] else None),
        "fairness": fairness.summarize(fair),
    }
    emb = centroids = None
    n_emb = min(embed_sample, sample.height)
    if n_emb >= max(2 * topics, 20):
        phase(f"embedding {n_emb:,} sampled records with {embed_model}")
        emb = (embed_fn or (lambda t: embed_texts(t, embed_model, max_seq_length)))(texts[:n_emb])
        centroids, topic = _topic_model(emb, topics)
        meta["embedding"] = {"model": embed_model, "max_seq_length": max_seq_length, "max_chars": EMBED_MAX_CHARS,
                             "n": int(n_emb), "dim": int(emb.shape[1]), **topic}
    elif embed_sample:
        log.warning("profile: %d records are too few for embeddings and %d topics; profile has none", n_emb, topics)
    if synthetic_sample is not None or synthetic_batches is not None:
        phase(f"reading the synthetic sample {synthetic_sample or ''}")
        if synthetic_batches is None:
            synthetic_batches = _iter_batches(synthetic_sample, mapping, storage_options=storage_options)
        syn_rows, _, _ = profile_rows(synthetic_batches, max_sample)
        syn = _with_zero_shot(pl.DataFrame(syn_rows, schema={**{f: pl.Float64 for f in NUMERIC_FEATURES},
                                                             "language": pl.Utf8, "text": pl.Utf8, "label": pl.Utf8,
                                                             "_key": pl.UInt64}))
        meta["synthetic_classifier"] = train_synthetic_classifier(sample, syn)
        meta["synthetic_classifier"]["source"] = str(synthetic_sample or "(batches)")
    stored = sample.select([*NUMERIC_FEATURES, *ZS_FEATURES, *VOCAB_COLUMNS, *CATEGORICAL_FEATURES, "label"]).with_columns(fair)
    return _write_version(Path(out), meta, stored, emb, centroids)


def _with_zero_shot(sample: pl.DataFrame) -> pl.DataFrame:
    """The sample with the zero-shot machine-text features that synthetic.text reads its scores against
    (computed on the sample only: the rest of the corpus never needs them), with the word sample it
    measures a shard's domain against (:data:`integrity.analysis.machine_text.VOCAB_COLUMNS`)."""
    return pl.concat([sample, zero_shot_features(sample["text"], vocabulary=True)], how="horizontal")


def _write_version(root: Path, meta: dict, feats: pl.DataFrame, emb: np.ndarray | None,
                   centroids: np.ndarray | None) -> Profile:
    root.mkdir(parents=True, exist_ok=True)
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    meta["version"] = version
    tmp = root / "versions" / f".{version}.tmp"
    tmp.mkdir(parents=True)
    try:
        feats.write_parquet(tmp / "features.parquet", compression="zstd")
        if emb is not None:
            np.save(tmp / "embeddings.npy", emb.astype(np.float16), allow_pickle=False)
            np.save(tmp / "centroids.npy", centroids.astype(np.float32), allow_pickle=False)
        digest = hashlib.sha256()
        for name in sorted(os.listdir(tmp)):
            digest.update(name.encode() + b"\0" + (tmp / name).read_bytes())
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        meta["profile_id"] = digest.hexdigest()
        (tmp / "profile.json").write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
        final = root / "versions" / version
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    latest_tmp = root / ".LATEST.tmp"
    latest_tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(latest_tmp, root / "LATEST")
    return load_profile(final)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def list_versions(root: str | Path) -> list[str]:
    """Versions under a profile root, oldest first."""
    d = Path(root) / "versions"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []
