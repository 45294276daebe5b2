"""Thumbnails (and captions) of a few flagged records, re-read from their shards for the report."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.images import DEFAULT_LIMITS, DecodeLimits, decode_image

if TYPE_CHECKING:  # polars is imported lazily where it is used
    import polars as pl


def busiest_shards(wanted: list[dict], max_shards: int) -> list[dict]:
    """The ``wanted`` images that lie in the ``max_shards`` shards holding the most of them
    (ties: the shard named first), in their order."""
    count: dict[str, int] = {}
    for w in wanted:
        count[w["uri"]] = count.get(w["uri"], 0) + 1
    keep = set(sorted(count, key=lambda u: -count[u])[:max_shards])
    return [w for w in wanted if w["uri"] in keep]


def fetch_thumbnails(wanted: list[dict], max_shards: int = 4, max_side: int = 96,
                     limits: DecodeLimits = DEFAULT_LIMITS, mapping: Any = None) -> dict[tuple, dict]:
    """Small thumbnails (and captions) of a few records, re-read from their shards.

    ``wanted`` holds dicts with ``uri``, ``row`` and optionally ``box``
    ([x0, y0, x1, y1] outlined in red). At most ``max_shards`` shards are read
    (those holding the most wanted records first), streaming, each once, and a
    shard is left as soon as its records are found. Shards are read with the
    scan's column mapping (``mapping``; default ``image``/``caption``); a shard
    that cannot be read (moved, remote with credentials) simply gives no thumbnail.
    Returns ``{(uri, row, box): {"thumbnail": data URI, "caption": str | None}}``
    with ``box`` a tuple or None (:func:`thumbnail_key`).
    """
    from connectors import ShardReader, ShardRef, detect_format
    from connectors.errors import ConnectorError
    from connectors.images import thumbnail_data_uri
    from connectors.schema import ColumnMapping

    by_uri: dict[str, dict[int, set]] = {}
    for w in busiest_shards(wanted, max_shards):
        by_uri.setdefault(w["uri"], {}).setdefault(int(w["row"]), set()).add(thumbnail_key(w)[2])
    out: dict[tuple, dict] = {}
    for uri, rows in by_uri.items():
        found = detect_format(uri)
        ref = ShardRef(name=uri, uri=uri, format=found.format if found else "hf_dataset", size=0, fingerprint="")
        done: set[int] = set()
        try:
            for batch in ShardReader(ref, mapping or ColumnMapping(), batch_size=256):
                if "image" not in batch.schema.names:
                    break
                brows = batch.column("row").to_numpy()
                hit = np.flatnonzero(np.isin(brows, np.fromiter(rows, dtype=np.int64)))
                caps = batch.column("caption") if "caption" in batch.schema.names else None
                for j in hit:
                    r = int(brows[j])
                    dec = decode_image(batch.column("image")[int(j)].as_py(), limits)
                    if dec.ok:
                        done.add(r)
                        caption = caps[int(j)].as_py() if caps is not None else None
                        for box in rows[r]:  # one decode, one thumbnail per outline asked for
                            out[(uri, r, box)] = {"thumbnail": thumbnail_data_uri(dec.image, max_side, box),
                                                  "caption": caption}
                if done >= rows.keys() or brows.size and brows.max() >= max(rows):
                    break
        except (ConnectorError, OSError, ValueError):
            continue
    return out


def thumbnail_key(w: dict) -> tuple[str, int, tuple | None]:
    """The key of one wanted image in :func:`fetch_thumbnails`' answer."""
    box = w.get("box")
    return (w["uri"], int(w["row"]), tuple(box) if box else None)


def pick_thumbnails(found: "pl.DataFrame", k: int, max_shards: int = 4) -> "pl.DataFrame":
    """The findings that get a thumbnail: the ``k`` best-scored of ``found`` whose image is
    known (``uri`` and ``row`` not null), from at most ``max_shards`` shards, with their
    position in ``found`` as ``_i``."""
    import polars as pl

    cand = (found.with_row_index("_i").sort("score", descending=True).head(4 * k)
            .filter(pl.col("uri").is_not_null() & pl.col("row").is_not_null()))
    if cand.height == 0:
        return cand
    keep_shards = cand.group_by("uri").len().sort("len", descending=True).head(max_shards)["uri"]
    return cand.filter(pl.col("uri").is_in(keep_shards.implode())).head(k)


def put_thumbnails(found: "pl.DataFrame", top: "pl.DataFrame", got: dict[tuple, dict],
                   more: dict[str, dict[int, dict]] | None = None) -> "pl.DataFrame":
    """``found`` with ``thumbnail`` and ``caption`` (at most 300 characters) in the detail
    of each finding of ``top`` (:func:`pick_thumbnails`) whose image ``got`` holds; ``more``
    names further images per finding position (``{"representative_thumbnail": {i: wanted}}``),
    put under that key (and its caption under the key with ``caption`` for ``thumbnail``)."""
    import json

    import polars as pl

    details = found["detail"].to_list()
    for r in top.iter_rows(named=True):
        hit = got.get(thumbnail_key(r))
        if hit is None:
            continue
        d = json.loads(details[r["_i"]])
        d["thumbnail"] = hit["thumbnail"]
        if hit["caption"] is not None:
            d["caption"] = hit["caption"][:300]
        for key, by_i in (more or {}).items():
            loc = by_i.get(int(r["_i"]))
            other = got.get(thumbnail_key(loc)) if loc else None
            if other is not None:
                d[key] = other["thumbnail"]
                if other["caption"] is not None:
                    d[key.replace("thumbnail", "caption")] = other["caption"][:300]
        details[r["_i"]] = json.dumps(d, sort_keys=True)
    return found.with_columns(pl.Series("detail", details, dtype=pl.Utf8))
