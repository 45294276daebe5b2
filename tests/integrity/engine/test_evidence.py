"""The evidence stage's thumbnails: checks name where their images are, the engine fetches them."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import polars as pl
from PIL import Image

from integrity.engine.evidence import attach_thumbnails


def shard(path: Path, n: int) -> str:
    """A WebDataset tar of ``n`` small PNGs with captions; returns its uri."""
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), (40 * i % 256, 90, 200)).save(buf, format="PNG")
            for ext, payload in (("png", buf.getvalue()), ("txt", f"picture {i}".encode())):
                info = tarfile.TarInfo(f"r{i:03d}.{ext}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return str(path)


def findings(uri: str, rows: list[int], **extra) -> pl.DataFrame:
    return pl.DataFrame({"shard": ["s.tar"] * len(rows), "record_id": [f"r{r:03d}" for r in rows],
                         "score": [float(10 - r) for r in rows], "detail": [json.dumps({"n": r}) for r in rows],
                         "uri": [uri] * len(rows), **extra})


def test_best_findings_of_every_check_get_thumbnails_and_captions(tmp_path: Path):
    uri = shard(tmp_path / "s.tar", 6)
    plain = findings(uri, [0, 1, 2, 3], row=[0, 1, 2, 3])
    # the same image outlined by another check, and a check whose row is not its findings' row
    boxed = findings(uri, [1], row=[1], box=[[2, 2, 20, 20]])
    by_image_row = findings(uri, [4, 5], image_row=[4, 5],
                            representative_uri=[uri, None], representative_row=[0, None])
    got = attach_thumbnails({"a": (2, plain), "b": (5, boxed), "c": (5, by_image_row), "off": (0, plain)})
    a = [json.loads(d) for d in got["a"]["detail"]]
    # the k=2 best-scored only, with the caption re-read from the shard
    assert [("thumbnail" in d, d.get("caption")) for d in a] == [(True, "picture 0"), (True, "picture 1"),
                                                                 (False, None), (False, None)]
    b = json.loads(got["b"]["detail"][0])
    assert b["thumbnail"].startswith("data:image/jpeg;base64,") and b["thumbnail"] != a[1]["thumbnail"]
    c = [json.loads(d) for d in got["c"]["detail"]]
    assert c[0]["caption"] == "picture 4" and c[0]["representative_caption"] == "picture 0"
    assert c[0]["representative_thumbnail"] == a[0]["thumbnail"]
    assert "thumbnail" in c[1] and "representative_thumbnail" not in c[1]
    assert got["off"]["detail"].to_list() == plain["detail"].to_list()  # thumbnails: 0


def test_an_unreadable_shard_gives_no_thumbnail(tmp_path: Path):
    gone = findings(str(tmp_path / "moved.tar"), [0], row=[0])
    got = attach_thumbnails({"a": (3, gone)})
    assert got["a"]["detail"].to_list() == gone["detail"].to_list()
