"""``dedup.image``: exact and near-duplicate images across every shard, and the same
image given conflicting captions.

Per shard, each decodable image keeps a few compact features (see
:mod:`integrity.analysis.images`): the xxh3-128 of its decoded pixels, its 64-bit DCT
perceptual hash, an 8x8 RGB and a 16x16 grey thumbnail (448 bytes) and its
normalized caption.

The corpus pass links records that share a pixel hash (*exact*: the same
picture in another container or with other metadata) and near pairs
(re-encoded, resized, lightly cropped copies). Near candidates come from two
64-bit codes searched with a faiss binary index (k nearest within the radius,
``max_neighbours``; ``IndexBinaryFlat`` up to ``flat_max`` images, else multi-index hashing with ``IndexBinaryMultiHash``,
which finds every pair within the radius by the pigeonhole principle), never
pairwise loops: the perceptual hash within ``max_hamming`` bits, and a
SimHash of the colour thumbnail (centred on the corpus mean) within
``max_colour_hamming`` bits, which catches smooth images whose DCT hash is
unstable (most of its coefficients sit at the median). A candidate pair is
kept only when the colours agree (mean absolute difference of the 8x8
thumbnails at most ``max_sig_distance`` of 255) *and* the grey structure
correlates (``min_structure_corr`` on the 16x16 thumbnails), with the stricter
``colour_*`` thresholds for pairs only the colour hash found: look-alikes with
the same layout or palette are not duplicates, and flat images have no
structure to agree on. Linked records form clusters (connected components);
the first record of a cluster (shard order, then row order) is the
representative and every other member is a finding with ``cluster``,
``representative``, ``representative_shard``, ``group_size``, ``match``
(``exact``/``near``) and the Hamming distance to the representative.
Score: 1.0 for an exact copy, else min(0.99, 1 - distance/64).

When the history index (:mod:`integrity.analysis.history`) exists, approved images of
earlier nights are found too (``history: true`` with the representative's
scan): exact matches by pixel hash, near ones when a 16-bit quarter of the
perceptual hash agrees exactly (every pair within 3 bits, most within 10),
confirmed like tonight's pairs. Approved shards' images enter the history
after the verdicts.

*Caption conflicts*: a member whose caption shares at most
``max_caption_similarity`` of its words (Jaccard) with the representative's
caption is a second finding (``kind: caption_conflict``, score 1 - similarity):
the same picture taught two different things is how mislabeling and concept
poisoning look in image-caption data.
"""
from __future__ import annotations

import json
from typing import Literal

import faiss
import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.dedup.graph import bucket_pairs, components, representatives, unique_pairs
from integrity.analysis.images import (GREY_SIDE, colour_hash, sig_distance, sig_matrix, structure_similarity,
                                       u64_to_bytes)
from integrity.checks.base import CheckOutput, CorpusContext
from integrity.checks.image_base import ImageCheck, ImageOptions

CAPTION_CHARS = 300
_QUERY_CHUNK = 65536
_CONFIRM_CHUNK = 100_000
EXACT_KIND = "image_exact"  # history keys: first 64 bits of the pixel hash
NEAR_KIND = "image_near"  # history keys: the four 16-bit quarters of the perceptual hash
HISTORY_PARAMS = {"format": 1, "phash": "dct64", "sig": "rgb8x8"}


def normalize_captions(captions: pa.Array) -> list[str | None]:
    """Lower case, whitespace folded, cut to :data:`CAPTION_CHARS`."""
    s = pl.Series(captions.to_pylist(), dtype=pl.Utf8)
    return (s.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
            .str.slice(0, CAPTION_CHARS).to_list())


def near_pairs(codes: np.ndarray, radius: int, index: str = "auto", flat_max: int = 200_000, k: int = 32
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, of 64-bit codes ((n, 8) uint8) within ``radius`` bits, with distances.

    Each code is linked to at most its ``k`` nearest codes within the radius (a k-NN
    search, so memory is O(n k) however crowded the code space is); a larger group of
    near-identical images stays connected through chains of neighbours."""
    n = len(codes)
    if n < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    kind = index if index != "auto" else ("flat" if n <= flat_max else "multihash")
    if kind == "flat":
        idx = faiss.IndexBinaryFlat(64)
    elif kind == "multihash":
        idx = faiss.IndexBinaryMultiHash(64, 4, 16)
        idx.nflip = radius // 4  # a pair within `radius` bits agrees within radius//4 bits on one of 4 substrings
    else:
        raise ValueError(f"unknown index {index!r}; use auto, flat or multihash")
    idx.add(codes)
    k = min(k + 1, n)  # + the code itself
    A, B, D = [], [], []
    for start in range(0, n, _QUERY_CHUNK):
        q = codes[start:start + _QUERY_CHUNK]
        dist, ids = idx.search(q, k)
        qa = np.repeat(np.arange(start, start + len(q), dtype=np.int64), k).reshape(len(q), k)
        keep = (ids >= 0) & (ids != qa) & (dist <= radius)
        A.append(qa[keep])
        B.append(ids[keep].astype(np.int64))
        D.append(dist[keep].astype(np.int64))
    a, b, d = np.concatenate(A), np.concatenate(B), np.concatenate(D)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key, first = np.unique(lo * n + hi, return_index=True)
    return key // n, key % n, d[first]


class ImageDedup(ImageCheck):
    name = "dedup.image"
    report_section = "dedup_images"
    description = ("Exact (decoded pixels) and near (perceptual hash) duplicate images across all shards and the "
                   "history index; the same image with conflicting captions.")
    class Options(ImageOptions):
        near: bool = Field(True, description="also near duplicates (re-encoded, resized, cropped)")
        max_hamming: int = Field(10, ge=0, le=64, description="perceptual-hash bits a near pair may differ by")
        max_colour_hamming: int = Field(4, ge=0, le=64, description="colour-SimHash bits a near pair may differ by")
        max_neighbours: int = Field(32, ge=1, description="nearest codes searched per image (bounds memory)")
        max_sig_distance: float = Field(6.0, ge=0, le=255, description="mean abs. difference (0-255) of the 8x8 RGB thumbnails")
        min_structure_corr: float = Field(0.85, ge=-1, le=1, description="correlation of the 16x16 grey thumbnails")
        colour_max_sig_distance: float = Field(4.0, ge=0, le=255, description="max_sig_distance, stricter, for pairs only "
                                               "the colour hash found")
        colour_min_structure_corr: float = Field(0.9, ge=-1, le=1, description="min_structure_corr for those pairs")
        index: Literal["auto", "flat", "multihash"] = Field("auto", description="auto | flat (IndexBinaryFlat) | "
                                                             "multihash (IndexBinaryMultiHash)")
        flat_max: int = Field(200_000, ge=0, description="auto: exact flat search up to this many images")
        caption_conflicts: bool = Field(True, description="report the same image with a different caption")
        max_caption_similarity: float = Field(0.35, ge=0, le=1, description="word Jaccard at or below which two captions conflict")
        history: bool = Field(True, description="compare with (and add approved images to) the dedup history")
        thumbnails: int = Field(12, ge=0, description="findings that carry a thumbnail for the report")
    default_severity = "warn"
    corpus_level = True
    version = 1

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        a = self.analysis(batch)
        ok = a.ok
        if not ok.any():
            return CheckOutput()
        idx = np.flatnonzero(ok)
        captions = (normalize_captions(batch.column("caption")) if "caption" in batch.schema.names
                    else [None] * batch.num_rows)
        frame = pl.DataFrame({
            RECORD_ID: pl.Series(batch.column(RECORD_ID).take(pa.array(idx)).to_pylist(), dtype=pl.Utf8),
            ROW: pl.Series(batch.column(ROW).take(pa.array(idx)).to_pylist(), dtype=pl.Int64),
            "uri": pl.Series([self.shard_uri] * len(idx), dtype=pl.Utf8),
            "pixel_hash": pl.Series([a.pixel_hash[i] for i in idx], dtype=pl.Binary),
            "phash": pl.Series(a.phash[idx], dtype=pl.UInt64),
            "sig": pl.Series([a.sig[i] for i in idx], dtype=pl.Binary),
            "grey": pl.Series([a.grey[i] for i in idx], dtype=pl.Binary),
            "caption": pl.Series([captions[i] for i in idx], dtype=pl.Utf8),
        })
        return CheckOutput(features=frame)

    # ------------------------------------------------------------------ corpus pass
    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        df = features.sort(["shard_index", ROW]).collect()
        n = df.height
        if n < 2:
            return None
        rank = np.arange(n)
        # exact: equal pixel hashes
        gid = df.select(pl.col("pixel_hash").rank("dense")).to_series().to_numpy().astype(np.int64)
        ea, eb = bucket_pairs(gid, rank)
        a_parts, b_parts = [ea], [eb]
        if self.options["near"]:
            sigs = sig_matrix(df["sig"].to_list())
            index, flat_max = str(self.options["index"]), int(self.options["flat_max"])
            k = int(self.options["max_neighbours"])
            na, nb, _ = near_pairs(u64_to_bytes(df["phash"].to_numpy()), int(self.options["max_hamming"]),
                                   index, flat_max, k)
            ca, cb, _ = near_pairs(u64_to_bytes(colour_hash(sigs, sigs.mean(axis=0))),
                                   int(self.options["max_colour_hamming"]), index, flat_max, k)
            greys = sig_matrix(df["grey"].to_list(), GREY_SIDE ** 2)
            o = self.options
            keep = self._confirm(sigs, greys, na, nb, float(o["max_sig_distance"]), float(o["min_structure_corr"]))
            a_parts.append(na[keep])
            b_parts.append(nb[keep])
            keep = self._confirm(sigs, greys, ca, cb, float(o["colour_max_sig_distance"]),
                                 float(o["colour_min_structure_corr"]))
            a_parts.append(ca[keep])
            b_parts.append(cb[keep])
        # the history of earlier nights: matched records become extra nodes, older than tonight
        hist = self._history_nodes(df, ctx)
        ids, shards, caps = df[RECORD_ID].to_list(), df["shard"].to_list(), df["caption"].to_list()
        pix = df["pixel_hash"].to_list()
        ph = df["phash"].to_numpy()
        sigs = sig_matrix(df["sig"].to_list())
        scans: list[str | None] = [None] * n
        if hist is not None:
            a_parts.append(hist["query"])
            b_parts.append(n + hist["node"])
            info = hist["info"]
            ids += info[RECORD_ID].to_list()
            shards += info["shard"].to_list()
            caps += [None] * info.height
            scans += info["scan_id"].to_list()
            pix += hist["px"]
            ph = np.concatenate([ph, hist["phash"]])
            sigs = np.concatenate([sigs, hist["sig"]])
            rank = np.concatenate([rank, hist["order"] - (1 << 62)])
        total = len(ids)
        a, b = unique_pairs(np.concatenate(a_parts), np.concatenate(b_parts))
        if len(a) == 0:
            return None
        labels = components(total, a, b)
        rep = representatives(labels, rank)
        member = np.flatnonzero(rep[:n] != rank[:n])
        if len(member) == 0:
            return None
        size = np.bincount(labels)
        exact = np.array([pix[m] == pix[rep[m]] for m in member], dtype=bool)
        dist = np.where(exact, 0, _hamming(ph[member], ph[rep[member]]))
        rows = []
        for j, m in enumerate(member):
            r = int(rep[m])
            detail = {
                "kind": "duplicate",
                "match": "exact" if exact[j] else "near",
                "cluster": "img-" + pix[r].hex()[:16],
                "representative": ids[r],
                "representative_shard": shards[r],
                "group_size": int(size[labels[m]]),
                "hamming": int(dist[j]),
            }
            if r >= n:
                detail.update(history=True, representative_scan=scans[r])
            if not exact[j]:
                detail["sig_distance"] = round(float(sig_distance(sigs[m], sigs[r])), 2)
            rows.append((shards[m], ids[m], 1.0 if exact[j] else min(0.99, 1.0 - dist[j] / 64.0), detail, m, r))
        if self.options["caption_conflicts"]:
            rows += self._conflicts(member, rep, caps, ids, shards, pix, size, labels)
        idx = pl.Series([r[4] for r in rows], dtype=pl.Int64)
        # a representative scanned tonight can be shown beside its duplicate (one in the history
        # cannot): a null index gathers a null location
        rep_idx = pl.Series([r[5] if r[5] < n else None for r in rows], dtype=pl.Int64)
        return pl.DataFrame({
            "shard": [r[0] for r in rows], "record_id": [r[1] for r in rows],
            # ids may repeat in a shard: the engine moves the row into detail.row
            ROW: df[ROW].gather(idx).cast(pl.Int64),
            "score": pl.Series([float(r[2]) for r in rows], dtype=pl.Float64),
            "detail": [json.dumps(r[3], sort_keys=True) for r in rows],
            "severity": pl.Series([None] * len(rows), dtype=pl.Utf8),
            # where the images are: the engine's evidence stage fetches a few thumbnails
            "uri": df["uri"].gather(idx), "representative_uri": df["uri"].gather(rep_idx),
            "representative_row": df[ROW].gather(rep_idx).cast(pl.Int64),
        })

    @staticmethod
    def _confirm(sigs: np.ndarray, greys: np.ndarray, a: np.ndarray, b: np.ndarray, max_sig: float,
                 min_corr: float) -> np.ndarray:
        """Candidate pairs whose colours agree and whose grey structure correlates (a flat
        16x16 thumbnail has no structure to agree on, so flat look-alikes are not linked);
        in chunks, so memory stays bounded."""
        keep = np.zeros(len(a), dtype=bool)
        for s in range(0, len(a), _CONFIRM_CHUNK):
            x, y = a[s:s + _CONFIRM_CHUNK], b[s:s + _CONFIRM_CHUNK]
            colour = sig_distance(sigs[x], sigs[y]) <= max_sig
            corr, _ = structure_similarity(greys[x], greys[y])
            keep[s:s + _CONFIRM_CHUNK] = colour & (corr >= min_corr)
        return keep

    # ------------------------------------------------------------------ history
    def _history_nodes(self, df: pl.DataFrame, ctx: CorpusContext) -> dict | None:
        """Approved images of earlier nights that tonight's records duplicate: one node per
        history record, linked to the tonight records (``query``) that match it."""
        if not self.options["history"]:
            return None
        from integrity.analysis.history import HistoryIndex, excluded_content

        index = HistoryIndex(ctx.state_dir)
        if not index.exists():
            return None
        exclude = excluded_content(ctx)
        px = _px_matrix(df["pixel_hash"])
        q_parts = []
        hits_e = index.lookup(EXACT_KIND, HISTORY_PARAMS, _px_key(px), exclude=exclude, max_hits=4)
        if len(hits_e):
            same = (index.gather(hits_e, "px") == px[hits_e.query]).all(axis=1)
            q_parts.append(("exact", hits_e, np.flatnonzero(same)))
        if self.options["near"]:
            ph = df["phash"].to_numpy().astype(np.uint64)
            keys = _block_keys(ph)
            hits_n = index.lookup(NEAR_KIND, HISTORY_PARAMS, keys, exclude=exclude, max_hits=16)
            if len(hits_n):
                rec = hits_n.query // 4
                hph = index.gather(hits_n, "phash").astype(np.uint64)
                hsig = index.gather(hits_n, "sig")
                hgrey = index.gather(hits_n, "grey")
                mine = sig_matrix(df["sig"].to_list())[rec]
                corr, _ = structure_similarity(sig_matrix(df["grey"].to_list(), GREY_SIDE ** 2)[rec], hgrey)
                ok = ((_hamming(ph[rec], hph) <= int(self.options["max_hamming"]))
                      & (sig_distance(mine, hsig) <= float(self.options["max_sig_distance"]))
                      & (corr >= float(self.options["min_structure_corr"])))
                hits_n.query = rec
                q_parts.append(("near", hits_n, np.flatnonzero(ok)))
        frames, queries = [], []
        for kind, hits, sel in q_parts:
            if len(sel) == 0:
                continue
            info = index.describe(hits, sel)
            frames.append(info.with_columns(
                _px=pl.Series([bytes(x) for x in index.gather(hits, "px", sel)], dtype=pl.Binary),
                _phash=pl.Series(index.gather(hits, "phash", sel) if kind == "near" else np.zeros(len(sel)),
                                 dtype=pl.UInt64),
                _sig=pl.Series([bytes(x) for x in index.gather(hits, "sig", sel)] if kind == "near"
                               else [None] * len(sel), dtype=pl.Binary),
                _order=pl.Series(hits.order[sel], dtype=pl.Int64)))
            queries.append(hits.query[sel])
        if not frames:
            return None
        allh = pl.concat(frames).with_columns(_q=pl.Series(np.concatenate(queries), dtype=pl.Int64))
        allh = allh.with_columns(_key=pl.concat_str(["sha256", RECORD_ID], separator="\x00"))
        uniq = allh.group_by("_key", maintain_order=True).agg(
            pl.col(RECORD_ID).first(), pl.col("shard").first(), pl.col("scan_id").first(),
            pl.col("_px").drop_nulls().first(), pl.col("_phash").max(), pl.col("_sig").drop_nulls().first(),
            pl.col("_order").min()).with_row_index("node")
        links = allh.join(uniq.select("_key", "node"), on="_key")
        return {
            "query": links["_q"].to_numpy(), "node": links["node"].to_numpy().astype(np.int64),
            "info": uniq.select(RECORD_ID, "shard", "scan_id"),
            "px": [p if p is not None else b"\x00" * 16 for p in uniq["_px"].to_list()],
            "phash": uniq["_phash"].to_numpy().astype(np.uint64),
            "sig": sig_matrix(uniq["_sig"].to_list()),
            "order": uniq["_order"].to_numpy().astype(np.int64),
        }

    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        if not self.options["history"]:
            return
        from integrity.analysis.history import HistoryIndex, approved_content, drop_rejected

        index = HistoryIndex(ctx.state_dir)
        drop_rejected(index, approved, ctx)
        df = approved_content(features, approved, ctx).select(
            "sha256", "shard", RECORD_ID, ROW, "pixel_hash", "phash", "sig", "grey").collect()
        if df.height == 0:
            return
        rec = df.select("sha256", "shard", RECORD_ID, ROW)
        px = _px_matrix(df["pixel_hash"])
        index.add(EXACT_KIND, HISTORY_PARAMS, rec, keys=_px_key(px), key_rows=np.arange(df.height),
                  payload={"px": px}, scan_id=ctx.scan_id)
        ph = df["phash"].to_numpy().astype(np.uint64)
        index.add(NEAR_KIND, HISTORY_PARAMS, rec, keys=_block_keys(ph), key_rows=np.repeat(np.arange(df.height), 4),
                  payload={"phash": ph, "px": px, "sig": sig_matrix(df["sig"].to_list()),
                           "grey": sig_matrix(df["grey"].to_list(), GREY_SIDE ** 2)}, scan_id=ctx.scan_id)

    def _conflicts(self, member, rep, caps, ids, shards, pix, size, labels) -> list[tuple]:
        limit = float(self.options["max_caption_similarity"])
        pairs = [(int(m), int(rep[m])) for m in member if caps[m] and caps[rep[m]] and caps[m] != caps[rep[m]]]
        if not pairs:
            return []
        words = pl.DataFrame({"a": [caps[m] for m, _ in pairs], "b": [caps[r] for _, r in pairs]}).select(
            a=pl.col("a").str.extract_all(r"\w+").list.unique(),
            b=pl.col("b").str.extract_all(r"\w+").list.unique())
        inter = words.select(pl.col("a").list.set_intersection("b").list.len()).to_series().to_numpy()
        union = words.select(pl.col("a").list.set_union("b").list.len()).to_series().to_numpy()
        sim = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        out = []
        for (m, r), s in zip(pairs, sim):
            if s > limit:
                continue
            detail = {"kind": "caption_conflict", "cluster": "img-" + pix[r].hex()[:16], "representative": ids[r],
                      "representative_shard": shards[r], "group_size": int(size[labels[m]]),
                      "caption_similarity": round(float(s), 3), "representative_caption": caps[r]}
            out.append((shards[m], ids[m], 1.0 - float(s), detail, m, r))
        return out


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _px_matrix(hashes: pl.Series) -> np.ndarray:
    """(n, 16) uint8 matrix of pixel hashes."""
    return np.frombuffer(b"".join(hashes.to_list()), dtype=np.uint8).reshape(-1, 16)


def _px_key(px: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(px[:, :8]).view("<u8").ravel().astype(np.uint64)


def _block_keys(ph: np.ndarray) -> np.ndarray:
    """Four keys per hash (its 16-bit quarters tagged with their position), record-major.

    A history image within d bits shares at least one quarter exactly when d <= 3,
    and usually up to ~10 bits; candidates are confirmed with the full hash and signature."""
    ph = ph.astype(np.uint64)
    parts = [((ph >> np.uint64(48 - 16 * i)) & np.uint64(0xFFFF)) | (np.uint64(i + 1) << np.uint64(60))
             for i in range(4)]
    return np.stack(parts, axis=1).ravel()
