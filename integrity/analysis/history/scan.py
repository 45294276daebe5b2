"""How the dedup checks use the history within one scan: what must not be matched,
what was approved tonight, which records were seen on earlier nights, and leaving out
what was rejected."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from connectors.schema import RECORD_ID, ROW
from integrity.analysis.history.index import DIRNAME, HistoryIndex

log = logging.getLogger(__name__)


def excluded_content(ctx: Any) -> set[str]:
    """SHA-256 a scan must not match in the history: the content it is scanning
    (a shard scanned again is not a duplicate of itself) and everything the
    ledger holds as quarantined now."""
    out = {s for s in getattr(ctx, "shard_sha256", {}).values() if s}
    state = Path(ctx.state_dir)
    if (state / DIRNAME / "manifest.json").exists() and (state / "ledger.sqlite").exists():
        from integrity.ledger import Ledger

        out |= {a.sha256 for a in Ledger(state).quarantined()}
    return out


def approved_content(features: pl.LazyFrame, approved: list[str], ctx: Any, with_sha256: bool = True) -> pl.LazyFrame:
    """The features of approved shards, with their ``sha256`` (or without, to save
    memory: then pass ``shard_sha256=ctx.shard_sha256`` to :meth:`HistoryIndex.add`)."""
    out = features.filter(pl.col("shard").is_in(approved))
    if not with_sha256:
        return out
    sha = pl.DataFrame({"shard": list(ctx.shard_sha256), "sha256": list(ctx.shard_sha256.values())},
                       schema={"shard": pl.Utf8, "sha256": pl.Utf8})
    return out.join(sha.lazy(), on="shard", how="inner", maintain_order="left")


def seen_order(ctx: Any, kind: str, params: Mapping, shards: pl.Series, rows: pl.Series) -> np.ndarray:
    """For records of tonight's shards whose content is already live in the history
    (a shard scanned again), the age of that content: the order key its records
    have in the history (comparable with
    :attr:`~integrity.analysis.history.segments.Hits.order`); -1 for new content.

    Such records keep their place: a copy approved later, on another night, is a
    duplicate of them, not the other way round."""
    out = np.full(len(shards), -1, dtype=np.int64)
    index = HistoryIndex(ctx.state_dir)
    if not index.exists() or len(shards) == 0:
        return out
    m = index._manifest()
    base: dict[str, int] = {}
    for seg in index._segments(m, kind, params):
        for sh in seg.shards:
            if seg.id not in m["dropped"].get(sh["sha256"], {}).get("segments", []):
                base.setdefault(sh["sha256"], seg.seq * (1 << 40) + sh["row0"])
    by_shard = {name: base[sha] for name, sha in ctx.shard_sha256.items() if sha in base}
    if not by_shard:
        return out
    frame = pl.DataFrame({"shard": shards, "row": rows}).with_columns(
        _rank=pl.col("row").rank("ordinal").over("shard").cast(pl.Int64) - 1,
        _base=pl.col("shard").replace_strict(by_shard, default=None, return_dtype=pl.Int64))
    return (frame["_base"] + frame["_rank"]).fill_null(-1).to_numpy()


def node_identities(records: pl.DataFrame, h_info: pl.DataFrame | None) -> pl.DataFrame:
    """Identity of every node of a dedup graph: the scan's ``records`` (``record_id``, ``shard``,
    ``row``), then the history records of ``h_info`` (``record_id``, ``shard``, ``sha256``,
    ``scan_id``), as columns ``record_id``, ``shard``, ``row``, ``sha256`` and ``scan``, so
    that identities are gathered by node index (never Python lists of the corpus)."""
    nodes = records.select(pl.col(RECORD_ID).cast(pl.Utf8), pl.col("shard").cast(pl.Utf8), pl.col(ROW).cast(pl.Int64),
                           sha256=pl.lit(None, dtype=pl.Utf8), scan=pl.lit(None, dtype=pl.Utf8))
    if h_info is not None and h_info.height:
        nodes = pl.concat([nodes, h_info.select(
            pl.col(RECORD_ID).cast(pl.Utf8), pl.col("shard").cast(pl.Utf8), pl.lit(None, dtype=pl.Int64).alias(ROW),
            sha256=pl.col("sha256").cast(pl.Utf8), scan=pl.col("scan_id").cast(pl.Utf8))])
    return nodes


def own_earlier_version(found: np.ndarray, rep: np.ndarray, n: int, shards: Sequence | pl.Series,
                        record_ids: Sequence | pl.Series | None, h_info: pl.DataFrame | None) -> np.ndarray:
    """Mask of ``found`` records (indices < n) whose kept record ``rep`` is a history
    node (index >= n, row ``rep - n`` of ``h_info``) with the same shard name and
    record id: an earlier version of the record itself (a shard rewritten or
    appended to since it was approved), not a duplicate. Column-wise (``shards`` and
    ``record_ids`` of the scan's records are gathered at the few records kept by history;
    ``record_ids`` may be None when ``h_info`` is)."""
    mask = np.zeros(len(found), dtype=bool)
    if h_info is None or len(found) == 0:
        return mask
    k = np.flatnonzero(np.asarray(rep) >= n)
    if len(k) == 0:
        return mask
    mine = pl.DataFrame({"shard": pl.Series(shards, dtype=pl.Utf8).gather(found[k]),
                         "id": pl.Series(record_ids, dtype=pl.Utf8).gather(found[k])})
    hist = h_info.select(shard=pl.col("shard").cast(pl.Utf8), id=pl.col("record_id").cast(pl.Utf8))[rep[k] - n]
    same = (mine["shard"].eq_missing(hist["shard"]) & mine["id"].eq_missing(hist["id"])).to_numpy()
    mask[k] = same
    return mask


def drop_rejected(index: HistoryIndex, approved: list[str], ctx: Any) -> None:
    """Content of this scan that was not approved (quarantined) leaves the history
    it may have entered on an earlier night."""
    if not index.exists():
        return
    for shard, sha in ctx.shard_sha256.items():
        if sha and shard not in approved and shard in ctx.shards:
            if index.drop(sha, reason=f"not approved by scan {ctx.scan_id} ({shard})"):
                log.info("dedup history: dropped %s (%s): not approved by scan %s", shard, sha[:12], ctx.scan_id)
