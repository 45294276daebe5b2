"""Image columns of paths: resolved to bytes against the shard's directory or an image root, safely."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from connectors import ShardReader, list_shards, read_shard
from connectors import image_paths
from connectors.image_paths import check_image_root
from connectors.images import decode_image
from connectors.schema import ColumnMapping

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(color=(200, 10, 10), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, color) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(color))
    return path


def pixel(data: bytes | None):
    dec = decode_image(data)
    assert dec.ok, (dec.status, dec.error)
    return dec.image.getpixel((0, 0))


def problem(data: bytes | None) -> tuple[str, str]:
    """(image.decode status, reason) of a record the connector did not read."""
    dec = decode_image(data)
    assert dec.status in ("rejected", "unusable"), (dec.status, dec.error)
    return dec.status, dec.error


def parquet_of_paths(path: Path, paths: list, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {"id": [f"r{i}" for i in range(len(paths))], "image": pa.array(paths, pa.string()),
            "caption": [f"caption {i}" for i in range(len(paths))], **extra}
    pq.write_table(pa.table(cols), path)
    return path


def read(path: Path, image_root: str | None = None, **kw) -> list[dict]:
    [ref] = list_shards(str(path))
    return read_shard(ref, ColumnMapping(), image_root=image_root, **kw).to_pylist()


def test_parquet_relative_paths_resolve_against_the_shard_directory(tmp_path: Path):
    save_png(tmp_path / "corpus" / "imgs" / "a.png", (10, 0, 0))
    save_png(tmp_path / "corpus" / "imgs" / "sub" / "b.png", (0, 20, 0))
    shard = parquet_of_paths(tmp_path / "corpus" / "pairs.parquet",
                             ["imgs/a.png", "./imgs/sub/b.png", "imgs/sub/../a.png", None, "imgs/a.png"])
    [ref] = list_shards(str(shard))  # the PNG files are not shards
    reader = ShardReader(ref, ColumnMapping())
    rows = pa.Table.from_batches(list(reader)).to_pylist()
    assert [r["record_id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r["caption"] for r in rows] == [f"caption {i}" for i in range(5)]
    assert pixel(rows[0]["image"]) == pixel(rows[2]["image"]) == pixel(rows[4]["image"]) == (10, 0, 0)
    assert pixel(rows[1]["image"]) == (0, 20, 0)
    assert rows[3]["image"] is None  # a null path stays a null image
    # the shard's SHA-256 covers the Parquet file only, not the image files it names
    assert reader.sha256 == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_datasets_image_feature_stored_by_path(tmp_path: Path, monkeypatch):
    import datasets

    datasets.disable_progress_bars()
    corpus = tmp_path / "corpus"
    save_png(corpus / "imgs" / "a.png", (30, 0, 0))
    save_png(corpus / "imgs" / "b.png", (60, 0, 0))
    monkeypatch.chdir(corpus)  # `datasets` keeps the paths as given: relative to the shard here
    ds = datasets.Dataset.from_dict({"image": ["imgs/a.png", "imgs/b.png"], "caption": ["a", "b"]})
    ds = ds.cast_column("image", datasets.Image())
    ds.to_parquet(str(corpus / "pairs.parquet"))
    stored = pq.read_table(corpus / "pairs.parquet").column("image").to_pylist()
    assert stored == [{"bytes": None, "path": "imgs/a.png"}, {"bytes": None, "path": "imgs/b.png"}]
    monkeypatch.chdir(tmp_path)
    rows = read(corpus / "pairs.parquet")
    assert [pixel(r["image"]) for r in rows] == [(30, 0, 0), (60, 0, 0)]
    assert [r["caption"] for r in rows] == ["a", "b"]


def _hf_dir_by_path(path: Path, rel_paths: list[str], captions: list[str]) -> Path:
    """A save_to_disk directory whose Image column holds paths, not bytes (older `datasets`
    and other writers; `datasets` 5 embeds local files on save_to_disk)."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"image": [png() for _ in rel_paths], "caption": captions})
    ds.cast_column("image", datasets.Image()).save_to_disk(str(path))
    for arrow in path.glob("*.arrow"):
        with pa.ipc.open_stream(pa.memory_map(str(arrow))) as r:
            table = r.read_all()
        by_path = pa.array([{"bytes": None, "path": p} for p in rel_paths], IMAGE_STRUCT)
        table = table.set_column(table.schema.get_field_index("image"), "image", by_path)
        with pa.ipc.new_stream(str(arrow), table.schema) as w:
            w.write_table(table)
    return path


def test_hf_directory_paths_resolve_inside_the_directory(tmp_path: Path):
    ds_dir = _hf_dir_by_path(tmp_path / "hf", ["images/a.png", "images/b.png", "../outside.png"], ["a", "b", "c"])
    save_png(ds_dir / "images" / "a.png", (1, 2, 3))
    save_png(ds_dir / "images" / "b.png", (4, 5, 6))
    save_png(tmp_path / "outside.png", (7, 8, 9))
    [ref] = list_shards(str(ds_dir))
    assert ref.format == "hf_dataset"
    reader = ShardReader(ref, ColumnMapping())
    rows = pa.Table.from_batches(list(reader)).to_pylist()
    assert [pixel(r["image"]) for r in rows[:2]] == [(1, 2, 3), (4, 5, 6)]
    status, reason = problem(rows[2]["image"])
    assert status == "rejected" and "'..'" in reason and "../outside.png" in reason
    # a directory shard is hashed with every file below it: images stored inside are covered
    before = reader.sha256
    save_png(ds_dir / "images" / "a.png", (9, 9, 9))
    list(reader)
    assert reader.sha256 != before


def test_dotdot_escape_is_rejected(tmp_path: Path):
    save_png(tmp_path / "secret.png", (5, 5, 5))
    save_png(tmp_path / "corpus" / "ok.png", (6, 6, 6))
    shard = parquet_of_paths(tmp_path / "corpus" / "s.parquet", ["ok.png", "../secret.png", "x/../../secret.png"])
    for root in (None, str(tmp_path / "corpus")):  # a root that does not hold the file does not help
        rows = read(shard, image_root=root)
        assert pixel(rows[0]["image"]) == (6, 6, 6)
        for r, p in zip(rows[1:], ["../secret.png", "x/../../secret.png"]):
            status, reason = problem(r["image"])
            assert status == "rejected" and "'..'" in reason and p in reason
    # a root above both the shard and the file lets the relative path through
    assert pixel(read(shard, image_root=str(tmp_path))[1]["image"]) == (5, 5, 5)


def test_absolute_paths_need_an_image_root(tmp_path: Path):
    images = tmp_path / "images"
    a = save_png(images / "a.png", (11, 0, 0))
    other = save_png(tmp_path / "elsewhere" / "b.png", (12, 0, 0))
    shard = parquet_of_paths(tmp_path / "corpus" / "s.parquet", [str(a), a.as_uri(), str(other)])
    rows = read(shard)
    for r in rows:
        status, reason = problem(r["image"])
        assert status == "unusable" and "--image-root" in reason
    rows = read(shard, image_root=str(images))
    assert pixel(rows[0]["image"]) == pixel(rows[1]["image"]) == (11, 0, 0)
    status, reason = problem(rows[2]["image"])
    assert status == "rejected" and "outside the image root" in reason and str(other) in reason
    # the same root through the column mapping (how the CLI's --image-root reaches the readers)
    [ref] = list_shards(str(shard))
    mapping = ColumnMapping(image_root=str(images))
    assert pixel(read_shard(ref, mapping).column("image")[0].as_py()) == (11, 0, 0)


def test_symlink_escaping_the_root_is_rejected(tmp_path: Path):
    outside = save_png(tmp_path / "outside" / "x.png", (13, 0, 0))
    corpus = tmp_path / "corpus"
    inner = save_png(corpus / "imgs" / "real.png", (14, 0, 0))
    corpus.joinpath("imgs", "out.png").symlink_to(outside)
    corpus.joinpath("imgs", "in.png").symlink_to(inner)
    corpus.joinpath("linkdir").symlink_to(outside.parent, target_is_directory=True)
    shard = parquet_of_paths(corpus / "s.parquet", ["imgs/out.png", "imgs/in.png", "linkdir/x.png"])
    rows = read(shard)
    assert pixel(rows[1]["image"]) == (14, 0, 0)  # a link that stays inside is fine
    for r in (rows[0], rows[2]):
        status, reason = problem(r["image"])
        assert status == "rejected" and "symbolic link" in reason and str(outside) in reason
    # with a root, the link's target must lie inside the root too
    root = tmp_path / "root"
    save_png(root / "real.png", (15, 0, 0))
    root.joinpath("escape.png").symlink_to(outside)
    shard2 = parquet_of_paths(tmp_path / "c2" / "s.parquet", [str(root / "real.png"), str(root / "escape.png")])
    rows = read(shard2, image_root=str(root))
    assert pixel(rows[0]["image"]) == (15, 0, 0)
    assert problem(rows[1]["image"])[0] == "rejected"


def test_missing_file_is_a_per_record_problem(tmp_path: Path):
    save_png(tmp_path / "imgs" / "a.png", (16, 0, 0))
    shard = parquet_of_paths(tmp_path / "s.parquet", ["imgs/a.png", "imgs/gone.png", "imgs/a.png", "imgs", ""])
    rows = read(shard)
    assert [r["record_id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert pixel(rows[0]["image"]) == pixel(rows[2]["image"]) == (16, 0, 0)
    status, reason = problem(rows[1]["image"])
    assert status == "unusable" and "not found" in reason and "imgs/gone.png" in reason
    assert "directory" in problem(rows[3]["image"])[1]
    assert "empty" in problem(rows[4]["image"])[1]


def test_fifo_and_device_are_never_read(tmp_path: Path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would block forever
    shard = parquet_of_paths(tmp_path / "s.parquet", ["pipe.png", "/dev/zero"])
    rows = read(shard, image_root="/dev")
    status, reason = problem(rows[0]["image"])
    assert status == "rejected" and "FIFO" in reason
    status, reason = problem(rows[1]["image"])
    assert status == "rejected" and "device" in reason


def test_file_over_the_byte_cap_is_not_read(tmp_path: Path, monkeypatch):
    save_png(tmp_path / "big.png", (17, 0, 0))
    save_png(tmp_path / "small.png", (18, 0, 0))
    (tmp_path / "big.png").write_bytes(png((17, 0, 0), size=(200, 200)) + b"\0" * 4000)
    monkeypatch.setattr(image_paths, "MAX_IMAGE_BYTES", 2000)
    rows = read(parquet_of_paths(tmp_path / "s.parquet", ["big.png", "small.png"]))
    status, reason = problem(rows[0]["image"])
    assert status == "unusable" and "over the limit of 2,000" in reason
    assert pixel(rows[1]["image"]) == (18, 0, 0)


def test_struct_mixes_embedded_bytes_and_paths(tmp_path: Path):
    save_png(tmp_path / "p.png", (19, 0, 0))
    images = pa.array([{"bytes": png((20, 0, 0)), "path": "ignored.png"}, {"bytes": None, "path": "p.png"},
                       {"bytes": None, "path": None}, None], IMAGE_STRUCT)
    pq.write_table(pa.table({"image": images, "caption": ["a", "b", "c", "d"]}), tmp_path / "s.parquet")
    rows = read(tmp_path / "s.parquet")
    assert pixel(rows[0]["image"]) == (20, 0, 0)  # embedded bytes win; the path is not read
    assert pixel(rows[1]["image"]) == (19, 0, 0)
    assert rows[2]["image"] is None and rows[3]["image"] is None


def test_jsonl_path_column(tmp_path: Path, w):
    save_png(tmp_path / "cats" / "1.png", (21, 0, 0))
    path = w.jsonl(tmp_path / "s.jsonl", [{"image": "cats/1.png", "caption": "a cat"},
                                          {"image": "cats/2.png", "caption": "no cat"}])
    rows = read(path)
    assert pixel(rows[0]["image"]) == (21, 0, 0)
    assert "not found" in problem(rows[1]["image"])[1]


def test_batches_of_large_images_are_cut_by_bytes(tmp_path: Path, monkeypatch):
    for i in range(40):
        save_png(tmp_path / "imgs" / f"{i}.png", (i, 0, 0))
    shard = parquet_of_paths(tmp_path / "s.parquet", [f"imgs/{i}.png" for i in range(40)])
    one = len((tmp_path / "imgs" / "0.png").read_bytes())
    monkeypatch.setattr(image_paths, "MAX_BATCH_BYTES", one * 20)
    [ref] = list_shards(str(shard))
    batches = list(ShardReader(ref, ColumnMapping(), batch_size=1000))
    assert len(batches) > 1
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [r["row"] for r in rows] == list(range(40))
    assert [pixel(r["image"])[0] for r in rows] == list(range(40))


def test_object_store_paths_and_url_root(memfs):
    memfs.pipe("/corpus/imgs/a.png", png((22, 0, 0)))
    memfs.pipe("/images/b.png", png((23, 0, 0)))
    memfs.pipe("/private/c.png", png((24, 0, 0)))
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": ["imgs/a.png", "memory://images/b.png", "memory://private/c.png",
                                       "imgs/none.png", "memory://images/../private/c.png"]}), buf)
    memfs.pipe("/corpus/s.parquet", buf.getvalue())
    [ref] = list_shards("memory://corpus/s.parquet")
    rows = read_shard(ref, ColumnMapping()).to_pylist()
    assert pixel(rows[0]["image"]) == (22, 0, 0)
    assert "--image-root" in problem(rows[1]["image"])[1]
    rows = read_shard(ref, ColumnMapping(), image_root="memory://images").to_pylist()
    assert pixel(rows[0]["image"]) == (22, 0, 0)
    assert pixel(rows[1]["image"]) == (23, 0, 0)
    assert problem(rows[2]["image"])[0] == "rejected"
    assert "no such file" in problem(rows[3]["image"])[1]
    assert problem(rows[4]["image"])[0] == "rejected"


def test_bad_image_root_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="not an existing directory"):
        check_image_root(str(tmp_path / "nope"))
    assert check_image_root(str(tmp_path)) == str(tmp_path)
    assert check_image_root(None) is None
    shard = parquet_of_paths(tmp_path / "s.parquet", ["a.png"])
    from connectors import ShardReadError

    with pytest.raises(ShardReadError, match="image root"):
        read(shard, image_root=str(tmp_path / "nope"))


def test_image_decode_reports_missing_and_rejected_paths(tmp_path: Path):
    """Through `integrity scan`: one image.decode finding per bad path, naming shard, row and path."""
    import polars as pl
    from typer.testing import CliRunner

    from flows.cli import app

    corpus = tmp_path / "corpus"
    save_png(corpus / "imgs" / "a.png", (25, 0, 0))
    save_png(tmp_path / "secret.png", (26, 0, 0))
    parquet_of_paths(corpus / "pairs.parquet", ["imgs/a.png", "imgs/gone.png", "../secret.png", "imgs/a.png"])
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nquarantine:\n  mode: mark\n")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["scan", str(corpus), "--out", str(out), "--policy", str(policy),
                                 "--runner", "inline", "--checks", "image.decode"])
    assert r.exit_code == 0, r.output
    shards = pl.read_parquet(out / "shards.parquet")
    assert shards["rows"].to_list() == [4] and shards["verdict"].to_list() != ["unreadable"]
    found = pl.read_parquet(out / "findings.parquet").filter(pl.col("check") == "image.decode").sort("record_id")
    assert found["record_id"].to_list() == ["r1", "r2"]
    assert set(found["shard"]) == {"pairs.parquet"}
    details = [json.loads(d) for d in found["detail"]]
    assert [d["row"] for d in details] == [1, 2]
    assert details[0]["problem"] == "unusable" and "imgs/gone.png" in details[0]["error"]
    assert details[1]["problem"] == "rejected" and "../secret.png" in details[1]["error"]
