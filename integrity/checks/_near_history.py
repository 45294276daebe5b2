"""``dedup.near`` against the dedup history of earlier nights (:mod:`integrity.analysis.history`):
the verified pairs of tonight's records with approved records of earlier scans, and, after the
verdicts, the approved records of tonight added to it."""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

import numpy as np
import polars as pl

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.dedup.blobs import unpack, unpack_fixed
from integrity.analysis.dedup.graph import first_of_pairs
from integrity.analysis.dedup.minhash import sketch_pairs
from integrity.analysis.history import (HistoryIndex, approved_content, excluded_content, sort_record_keys,
                                        take_ragged)
from integrity.checks.base import CorpusContext

log = logging.getLogger("integrity.checks.dedup_near")

KIND = "near"
#: history records considered per query band key (the oldest ones)
HISTORY_HITS_PER_KEY = 8
#: records looked up in the history at a time
HISTORY_CHUNK = 32_768


def history_edges(shards: Iterable[tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]],
                  ctx: CorpusContext, params: dict, k: int, threshold: float):
    """Verified pairs (record, history node), the history nodes' sketches and identity.
    ``shards`` yields (first record index, bands, sketches) one shard at a time; records
    are looked up in chunks, so only verified pairs accumulate."""
    index = HistoryIndex(ctx.state_dir)
    if not index.exists():
        return None
    exclude = excluded_content(ctx)
    q_all, o_all, s_all, infos, sketches = [], [], [], [], []
    for first, bands, sk in shards:
        n, nb = bands.shape
        for c0 in range(0, n, HISTORY_CHUNK):
            hits = index.lookup(KIND, params, bands[c0:c0 + HISTORY_CHUNK].ravel(), exclude=exclude,
                                max_hits=HISTORY_HITS_PER_KEY)
            if len(hits) == 0:
                continue
            # one candidate per (record, history record)
            h_idx = first_of_pairs(hits.query // nb, hits.order)
            q_doc = hits.query[h_idx] // nb + c0
            hv, ho = index.gather(hits, "sketch", h_idx)
            hn = index.gather(hits, "nsh", h_idx)
            sim = sketch_pairs(*sk, q_doc, np.arange(len(h_idx)), k, other=(hv, ho, hn))
            ok = np.flatnonzero(sim >= threshold)
            if len(ok) == 0:
                continue
            order = hits.order[h_idx[ok]]
            uniq, first_hit = np.unique(order, return_index=True)
            infos.append(index.describe(hits, h_idx[ok][first_hit]).with_columns(order=pl.Series(uniq)))
            sketches.append(take_ragged(hv, ho, ok[first_hit]) + (hn[ok[first_hit]],))
            q_all.append(q_doc[ok] + first)
            o_all.append(order)
            s_all.append(sim[ok])
    if not q_all:
        return None
    # history nodes: one per distinct history record
    info = pl.concat(infos)
    uniq, first = np.unique(info["order"].to_numpy(), return_index=True)
    info = info[first]
    values = np.concatenate([v for v, _, _ in sketches])
    offsets = np.concatenate([[0]] + [np.diff(o) for _, o, _ in sketches]).cumsum()
    node_sk = take_ragged(values, offsets, first) + (np.concatenate([c for _, _, c in sketches])[first],)
    q_doc, order, sim = np.concatenate(q_all), np.concatenate(o_all), np.concatenate(s_all)
    log.info("dedup.near: %d records match %d history records", len(np.unique(q_doc)), len(uniq))
    return q_doc, np.searchsorted(uniq, order), sim, node_sk, info


def remember_approved(frames: list[pl.LazyFrame], ctx: CorpusContext, params: dict, nb: int) -> None:
    """Add the approved records of tonight (``frames``: each approved shard's features, read
    column by column) to the history: their band keys sorted with their rows, their sketches
    streamed a shard at a time into the segment."""
    index = HistoryIndex(ctx.state_dir)
    sketch_bytes = pl.col("sketch").bin.size().fill_null(0)
    df = pl.concat([lf.select("shard", RECORD_ID, ROW, "nsh", sketch_bytes=sketch_bytes).collect() for lf in frames])
    if df.height == 0:
        return
    # the keys sorted before the sketches are read, a shard at a time and read twice (counted,
    # then scattered into place): never a copy of every key besides the sorted one (a sort by
    # ranges of top bits held less but read every shard's bands once per range: +3 s at 16x)
    def band_parts() -> Iterator[np.ndarray]:
        return (unpack_fixed(lf.select("bands").collect()["bands"], "<u8", nb) for lf in frames)

    try:
        keys, key_rows = sort_record_keys(band_parts, nb, n_records=df.height)
    except ValueError as e:
        raise RuntimeError(f"dedup.near: the approved records' band keys do not match their {df.height} rows: {e}")
    # the sketches are as large as the keys: their lengths from the blobs' sizes (read with the
    # records), the values a shard at a time as the segment is written, never all in memory
    offsets = np.zeros(df.height + 1, dtype=np.int64)
    np.cumsum(df["sketch_bytes"].to_numpy() // 4, out=offsets[1:])
    values = (unpack(lf.select("sketch").collect()["sketch"], "<u4")[0] for lf in frames)
    index.add(KIND, params, df.select("shard", RECORD_ID, ROW), keys=keys, key_rows=key_rows,
              keys_sorted=True, payload={"sketch": (values, offsets), "nsh": df["nsh"].to_numpy()},
              scan_id=ctx.scan_id, shard_sha256=ctx.shard_sha256)


def approved_frames(name: str, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> list[pl.LazyFrame]:
    """The features of each approved shard (its own file, in the engine's order); the approved
    part of ``features`` as one frame when the engine did not list the shards' files."""
    files = ctx.feature_files.get(name)
    if not files:
        return [approved_content(features, approved, ctx, with_sha256=False)]
    keep = set(approved)
    return [ctx.shard_frame(name, shard, features) for shard, _, _ in files if shard in keep]
