"""WebDataset tar shards (and the other image-caption layouts): reading, and every unsafe member."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from connectors import ShardReadError, list_shards, read_shard
from connectors import webdataset_format
from connectors.images import decode_image, rejected_reason
from connectors.schema import ColumnMapping


def png(color=(200, 10, 10), size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def write_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            add(tf, *m[:2], **(m[2] if len(m) > 2 else {}))
    return path


def test_samples_become_records(tmp_path: Path):
    path = write_tar(tmp_path / "shard-0.tar", [
        ("a/000.jpg", png((1, 2, 3))), ("a/000.txt", "a red square\n".encode()), ("a/000.json", b'{"w": 24}'),
        ("a/001.png", png((9, 9, 9))), ("a/001.json", json.dumps({"caption": "from json"}).encode()),
        ("a/002.txt", "caption without image".encode()),
        ("a/003.webp", png()), ("a/003.txt", "caf\xe9".encode("latin-1")),  # invalid UTF-8 is replaced
    ])
    [ref] = list_shards(str(path))
    assert ref.format == "webdataset"
    table = read_shard(ref, ColumnMapping(), batch_size=2)
    rows = table.to_pylist()
    assert [r["record_id"] for r in rows] == ["a/000", "a/001", "a/002", "a/003"]
    assert [r["caption"] for r in rows] == ["a red square", "from json", "caption without image", "caf\ufffd"]
    assert decode_image(rows[0]["image"]).image.getpixel((0, 0)) == (1, 2, 3)
    assert rows[2]["image"] is None
    assert [r["row"] for r in rows] == [0, 1, 2, 3]


def test_hash_rows_and_batches(tmp_path: Path):
    members = []
    for i in range(25):
        members += [(f"{i:04d}.png", png((i, i, i))), (f"{i:04d}.txt", f"caption {i}".encode())]
    path = write_tar(tmp_path / "s.tar", members)
    [ref] = list_shards(str(path))
    from connectors import ShardReader

    reader = ShardReader(ref, ColumnMapping(), batch_size=4)
    sizes = [b.num_rows for b in reader]
    assert max(sizes) <= 4 and sum(sizes) == 25
    assert reader.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reader.bytes == path.stat().st_size


@pytest.mark.parametrize("name,attrs,why", [
    ("/etc/evil.jpg", {}, "absolute"),
    ("../../escape.jpg", {}, ".."),
    ("ok/../../escape.txt", {}, ".."),
    ("link.jpg", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symbolic link"),
    ("hard.jpg", {"type": tarfile.LNKTYPE, "linkname": "000.jpg"}, "hard link"),
    ("dev.jpg", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device"),
    ("blk.jpg", {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}, "device"),
    ("pipe.jpg", {"type": tarfile.FIFOTYPE}, "FIFO"),
])
def test_unsafe_members_are_rejected_per_member(tmp_path: Path, name, attrs, why):
    before = set(os.listdir(tmp_path))
    path = write_tar(tmp_path / "bad.tar", [
        ("000.jpg", png()), ("000.txt", b"first"),
        (name, b"payload" if not attrs else b"", attrs),
        ("001.jpg", png()), ("001.txt", b"second"),
    ])
    rows = read_shard(list_shards(str(path))[0], ColumnMapping()).to_pylist()
    assert [r["caption"] for r in rows if r["caption"]] == ["first", "second"]  # the rest of the shard goes on
    bad = [r for r in rows if r["record_id"] == name]
    assert len(bad) == 1
    reason, unsafe = rejected_reason(bad[0]["image"])
    assert why in reason and name in reason and unsafe
    assert decode_image(bad[0]["image"]).status == "rejected"
    assert set(os.listdir(tmp_path)) == before | {"bad.tar"}  # nothing was extracted anywhere
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_oversized_member_is_not_read(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(webdataset_format, "MAX_MEMBER_BYTES", 1000)
    path = write_tar(tmp_path / "big.tar", [("000.jpg", b"x" * 5000), ("001.png", png()), ("001.txt", b"ok")])
    rows = read_shard(list_shards(str(path))[0], ColumnMapping()).to_pylist()
    reason, unsafe = rejected_reason(rows[0]["image"])
    assert "5,000 bytes" in reason and not unsafe
    assert rows[1]["caption"] == "ok"


def test_member_without_extension_is_reported(tmp_path: Path):
    path = write_tar(tmp_path / "x.tar", [("README", b"hello"), ("000.png", png()), ("000.txt", b"c")])
    rows = read_shard(list_shards(str(path))[0], ColumnMapping()).to_pylist()
    assert decode_image(rows[0]["image"]).status == "unusable"
    assert rows[1]["caption"] == "c"


@pytest.mark.parametrize("content", [b"this is not a tar archive at all" * 40, b""])
def test_not_a_tar_is_a_clear_error(tmp_path: Path, content: bytes):
    path = tmp_path / "broken.tar"
    path.write_bytes(content)
    with pytest.raises(ShardReadError, match="broken.tar"):
        read_shard(list_shards(str(path))[0], ColumnMapping())


def test_truncated_tar_names_the_offset(tmp_path: Path):
    path = write_tar(tmp_path / "t.tar", [(f"{i:03d}.png", png((i, 0, 0), (64, 64))) for i in range(20)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardReadError, match=r"t\.tar.*(corrupt|truncated)"):
        read_shard(list_shards(str(path))[0], ColumnMapping())


def test_mapped_extension_becomes_a_column(tmp_path: Path):
    path = write_tar(tmp_path / "c.tar", [("0.png", png()), ("0.txt", b"a cat"), ("0.cls", b"3"),
                                          ("1.png", png()), ("1.txt", b"a dog"), ("1.cls", b"5")])
    mapping = ColumnMapping(label="cls", explicit=frozenset({"label"}))
    rows = read_shard(list_shards(str(path))[0], mapping).to_pylist()
    assert [r["label"] for r in rows] == ["3", "5"]


def test_parquet_and_datasets_image_columns(tmp_path: Path):
    import datasets

    images = [png((i * 40, 0, 0)) for i in range(3)]
    pq.write_table(pa.table({"id": ["p0", "p1", "p2"], "image": pa.array(images, pa.binary()),
                             "caption": ["r0", "r1", "r2"]}), tmp_path / "pairs.parquet")
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"img": [Image.open(io.BytesIO(b)) for b in images], "caption": ["a", "b", "c"]})
    ds.cast_column("img", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
    refs = {r.format: r for r in list_shards(str(tmp_path))}
    got = read_shard(refs["parquet"], ColumnMapping()).to_pylist()
    assert decode_image(got[1]["image"]).image.getpixel((0, 0)) == (40, 0, 0)
    hf = read_shard(refs["hf_dataset"], ColumnMapping(image="img", explicit=frozenset({"image"}))).to_pylist()
    assert [decode_image(r["image"]).image.getpixel((0, 0)) for r in hf] == [(0, 0, 0), (40, 0, 0), (80, 0, 0)]


def test_webdataset_corpus_scans_end_to_end(tmp_path: Path):
    """The generator's corpus through `integrity gate`: the bomb and the symbolic link fail the gate,
    the report shows thumbnails of flagged images."""
    import make_images as mi
    from typer.testing import CliRunner

    from flows.cli import app

    corpus = tmp_path / "corpus"
    mi.make_corpus(corpus, n=240, shards=2, seed=3, rates={"dup": 0.08, "synthetic": 0.05})
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nquarantine:\n  mode: mark\n")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["gate", str(corpus), "--out", str(out), "--policy", str(policy), "--runner", "inline",
                                 "--checks", "dedup.image,synthetic.image,image.decode,poison.patch"])
    assert r.exit_code == 2, r.output  # the bomb and the link are critical
    import polars as pl

    found = pl.read_parquet(out / "findings.parquet")
    decode = found.filter(pl.col("check") == "image.decode")
    truth = pl.read_parquet(corpus / "_ground_truth.parquet")
    unsafe = set(truth.filter(pl.col("kind").is_in(["bomb", "rejected"]))["record_id"])
    assert unsafe == {"000-bomb", "000-link.jpg"}
    assert set(decode["record_id"]) == unsafe | set(truth.filter(pl.col("kind") == "corrupt")["record_id"])
    assert set(decode.filter(pl.col("record_id").is_in(list(unsafe)))["severity"]) == {"critical"}
    assert found.filter(pl.col("check") == "dedup.image").height > 0
    assert found.filter(pl.col("check") == "synthetic.image").height > 0
    html = (out / "report.html").read_text()
    assert "Flagged images" in html and 'src="data:image/jpeg;base64,' in html
