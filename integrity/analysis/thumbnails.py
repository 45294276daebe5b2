"""Thumbnails (and captions) of a few flagged records, re-read from their shards for the report."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.images import DEFAULT_LIMITS, DecodeLimits, decode_image

if TYPE_CHECKING:  # polars is imported lazily where it is used
    import polars as pl


def fetch_thumbnails(wanted: list[dict], max_shards: int = 4, max_side: int = 96,
                     limits: DecodeLimits = DEFAULT_LIMITS, mapping: Any = None) -> dict[tuple[str, int], dict]:
    """Small thumbnails (and captions) of a few records, re-read from their shards.

    ``wanted`` holds dicts with ``uri``, ``row`` and optionally ``box``
    ([x0, y0, x1, y1] outlined in red). At most ``max_shards`` shards are read
    (those holding the most wanted records first), streaming, and a shard is
    left as soon as its records are found. Shards are read with the scan's
    column mapping (``mapping``; default ``image``/``caption``); a shard that
    cannot be read (moved, remote with credentials) simply gives no thumbnail.
    Returns ``{(uri, row): {"thumbnail": data URI, "caption": str | None}}``.
    """
    from connectors import ShardReader, ShardRef, detect_format
    from connectors.errors import ConnectorError
    from connectors.schema import ColumnMapping

    by_uri: dict[str, dict[int, list | None]] = {}
    for w in wanted:
        by_uri.setdefault(w["uri"], {})[int(w["row"])] = w.get("box")
    out: dict[tuple[str, int], dict] = {}
    order = sorted(by_uri, key=lambda u: -len(by_uri[u]))[:max_shards]
    for uri in order:
        rows = by_uri[uri]
        found = detect_format(uri)
        ref = ShardRef(name=uri, uri=uri, format=found.format if found else "hf_dataset", size=0, fingerprint="")
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
                        from connectors.images import thumbnail_data_uri

                        box = rows[r]
                        out[(uri, r)] = {
                            "thumbnail": thumbnail_data_uri(dec.image, max_side, tuple(box) if box else None),
                            "caption": (caps[int(j)].as_py() if caps is not None else None),
                        }
                if all((uri, r) in out for r in rows) or brows.size and brows.max() >= max(rows):
                    break
        except (ConnectorError, OSError, ValueError):
            continue
    return out


def with_thumbnails(found: "pl.DataFrame", where: "pl.DataFrame", k: int, max_shards: int = 4,
                    extra: dict[str, "pl.DataFrame"] | None = None, mapping: Any = None) -> "pl.DataFrame":
    """``found`` (findings with ``shard``, ``record_id``, ``score``, ``detail``) with a
    ``thumbnail`` and ``caption`` added to the detail of its ``k`` best-scored findings
    (from at most ``max_shards`` shards).

    ``where`` maps ``shard``/``record_id`` to ``uri``/``row`` (and optionally ``box``).
    ``extra`` names more images per finding: ``{"representative_thumbnail": frame}`` where the
    frame maps the finding's ``shard``/``record_id`` to the ``uri``/``row`` of another record.
    """
    import json

    import polars as pl

    if k <= 0 or found.height == 0:
        return found
    cols = ["shard", "record_id", "uri", "row"] + (["box"] if "box" in where.columns else [])
    # a finding that names its row is matched on it too: ids may repeat in a shard
    on = ["shard", "record_id"] + (["row"] if "row" in found.columns else [])
    cand = (found.with_row_index("_i").sort("score", descending=True).head(4 * k)
            .join(where.select(cols).unique(on), on=on, how="inner"))
    if cand.height == 0:
        return found
    keep_shards = cand.group_by("uri").len().sort("len", descending=True).head(max_shards)["uri"]
    top = cand.filter(pl.col("uri").is_in(keep_shards.implode())).head(k)
    jobs = [{"uri": r["uri"], "row": r["row"], "box": r.get("box")} for r in top.iter_rows(named=True)]
    more: dict[str, dict[int, dict]] = {}
    for key, frame in (extra or {}).items():
        if frame.height == 0:  # nothing to show (its columns may even be untyped)
            continue
        m = top.select("_i", "shard", "record_id").join(frame, on=["shard", "record_id"], how="inner")
        more[key] = {int(r["_i"]): {"uri": r["uri"], "row": int(r["row"])} for r in m.iter_rows(named=True)}
        jobs += list(more[key].values())
    got = fetch_thumbnails(jobs, max_shards=2 * max_shards if extra else max_shards, limits=DEFAULT_LIMITS,
                           mapping=mapping)
    details = found["detail"].to_list()
    for r in top.iter_rows(named=True):
        hit = got.get((r["uri"], int(r["row"])))
        if hit is None:
            continue
        d = json.loads(details[r["_i"]])
        d["thumbnail"] = hit["thumbnail"]
        if hit["caption"] is not None:
            d["caption"] = hit["caption"][:300]
        for key, by_i in more.items():
            loc = by_i.get(int(r["_i"]))
            other = got.get((loc["uri"], loc["row"])) if loc else None
            if other is not None:
                d[key] = other["thumbnail"]
                if other["caption"] is not None:
                    d[key.replace("thumbnail", "caption")] = other["caption"][:300]
        details[r["_i"]] = json.dumps(d, sort_keys=True)
    return found.with_columns(pl.Series("detail", details, dtype=pl.Utf8))
