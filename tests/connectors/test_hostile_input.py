"""Hostile input is refused with the limit named, in bounded memory, and never crashes the process.

Regression tests of issue 13 (defects 3, 4, 5, 6, 8, 10 at the connector level).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from connectors import ShardReader, ShardReadError, list_shards
from connectors.jsonl_format import check_depth, json_depth
from connectors.limits import ReadLimits
from connectors.schema import ColumnMapping

NESTED_100K = b'{"id":1,"text":"x","meta":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"


def _error(path, limits: ReadLimits = ReadLimits()) -> ShardReadError:
    [ref] = list_shards(str(path))
    with pytest.raises(ShardReadError) as err:
        list(ShardReader(ref, ColumnMapping(), limits=limits))
    assert str(err.value).startswith(str(path))
    return err.value


def _zstd_of(path, chunk: bytes, count: int) -> None:
    """``chunk * count`` zstd-compressed into ``path``, streamed (never held whole)."""
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as w:
        for _ in range(count):
            w.write(chunk)


def test_deeply_nested_json_is_refused_by_the_prescan_before_pyarrow_sees_it(tmp_path):
    # pyarrow's JSON reader segfaults on this line (issue 13, defect 4): it must never reach it
    path = tmp_path / "nested.jsonl"
    path.write_bytes(b'{"id":0,"text":"fine"}\n' + NESTED_100K)
    err = _error(path)
    assert err.line == 2 and "nested 100,001 levels deep" in str(err)
    assert "limits.max_json_depth=100" in str(err)


def test_nested_text_then_a_normal_line_is_a_line_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep_text.jsonl"
    path.write_bytes(b'{"id":1,"text":' + b"[" * 5000 + b"]" * 5000 + b'}\n{"id":2,"text":"ok"}\n')
    err = _error(path)
    assert err.line == 1 and "max_json_depth" in str(err)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    text = "[" * 300 + '\\" {{{ \\\\' + "{" * 300
    path = tmp_path / "brackets.jsonl"
    path.write_text(json.dumps({"id": 1, "text": text}) + "\n" + json.dumps({"id": 2, "text": "b"}) + "\n")
    [ref] = list_shards(str(path))
    table = pa.Table.from_batches(list(ShardReader(ref, ColumnMapping())))
    assert table.column("text").to_pylist()[0] == text
    assert json_depth(json.dumps({"a": [[{"b": "[[[["}]]}).encode()) == 4


def test_depth_limit_is_the_policy_value():
    line = b'{"a":' + b"[" * 20 + b"]" * 20 + b"}\n"
    check_depth([line], [1], "u", ReadLimits(max_json_depth=21))
    with pytest.raises(ShardReadError, match="nested 21 levels deep"):
        check_depth([line], [7], "u", ReadLimits(max_json_depth=20))


def test_zstd_bomb_is_refused_for_its_expansion_ratio(tmp_path):
    path = tmp_path / "bomb.jsonl.zst"
    _zstd_of(path, b"\0" * (1 << 20), 1024)  # 1 GiB of zeros in a few dozen KB
    assert path.stat().st_size < 200_000
    err = _error(path)
    assert "limits.max_expansion_ratio=200" in str(err) and "decompression bomb" in str(err)


def test_newline_bomb_is_refused_without_iterating_its_lines(tmp_path):
    path = tmp_path / "newlines.jsonl.zst"
    _zstd_of(path, b"\n" * (1 << 20), 128)  # 128 MiB of blank lines (2 GiB took 151 s of CPU)
    err = _error(path)
    assert "max_expansion_ratio" in str(err)


def test_shard_and_record_byte_limits(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    import gzip

    lines = b"".join(b'{"id":%d,"text":"%s"}\n' % (i, b"w" * 1000) for i in range(3000))
    path.write_bytes(gzip.compress(lines))
    err = _error(path, ReadLimits(max_shard_bytes=1 << 20))
    assert "more than 1 MiB of content once decompressed (limits.max_shard_bytes)" in str(err)
    long_line = tmp_path / "long.jsonl"
    long_line.write_bytes(b'{"id":1,"text":"' + b"x" * 5000 + b'"}\n')
    err = _error(long_line, ReadLimits(max_record_bytes=4096))
    assert err.line == 1 and "line longer than 4 KiB (limits.max_record_bytes)" in str(err)


def test_parquet_cell_over_the_record_limit_names_its_row(tmp_path):
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y" * 10_000, "z"]}), path)
    err = _error(path, ReadLimits(max_record_bytes=4096))
    assert err.row == 1 and "limits.max_record_bytes" in str(err)


def test_parquet_bomb_is_refused_from_its_footer(tmp_path):
    path = tmp_path / "zeros.parquet"
    pq.write_table(pa.table({"text": pa.array(["\0" * (1 << 20)] * 64)}), path, compression="zstd",
                   use_dictionary=False)
    err = _error(path, ReadLimits(ratio_grace_bytes=1 << 20))
    assert "expands" in str(err) and "max_expansion_ratio" in str(err)


def test_bomb_reading_stays_within_a_memory_cap(tmp_path):
    """The 1 GiB zstd bomb used to reach 3.9 GB RSS; read in a child capped at 1 GiB of address space."""
    path = tmp_path / "bomb.jsonl.zst"
    _zstd_of(path, b"\0" * (1 << 20), 1024)
    code = textwrap.dedent(f"""
        from connectors import ShardReader, ShardReadError, list_shards
        from connectors.schema import ColumnMapping
        from tests.peak_memory import own_peak_rss_mib
        [ref] = list_shards({str(path)!r})
        before = own_peak_rss_mib()
        try:
            list(ShardReader(ref, ColumnMapping()))
        except ShardReadError as e:
            print("refused", own_peak_rss_mib() - before)
    """)
    root = Path(__file__).resolve().parents[2]  # for tests.peak_memory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused")
    # MiB grown while reading (the imports' footprint changes as the package grows): a few chunks, not the gigabyte
    assert int(out.stdout.split()[1]) < 300


def test_hf_dataset_with_a_list_state_json_is_a_shard_error(tmp_path):
    from tests.connectors.conftest import write_hf

    d = write_hf(tmp_path / "hf", {"id": ["a"], "text": ["hello"]})
    (d / "state.json").write_text("[]")
    err = _error(d)
    assert "state.json holds list JSON" in str(err)


def test_any_parser_exception_becomes_the_shards_error(tmp_path, monkeypatch):
    from connectors import jsonl_format

    def boom(*_a, **_k):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(jsonl_format, "parse_chunk", boom)
    path = tmp_path / "a.jsonl"
    path.write_text('{"id":1,"text":"x"}\n')
    err = _error(path)
    assert "RecursionError" in str(err) and "remove it from the source" in str(err)


def test_fifo_and_device_links_are_skipped_and_named(tmp_path, caplog):
    (tmp_path / "a.jsonl").write_text('{"id":1,"text":"x"}\n')
    os.mkfifo(tmp_path / "pipe.jsonl")
    os.symlink("/dev/zero", tmp_path / "zero.jsonl")
    skipped: list[str] = []
    refs = list_shards(str(tmp_path), skipped=skipped)
    assert [r.name for r in refs] == ["a.jsonl"]
    assert "pipe.jsonl" in skipped[0] and "zero.jsonl" in skipped[0] and "not a regular file" in skipped[0]
    assert "pipe.jsonl" in caplog.text
    from connectors.errors import SourceError

    with pytest.raises(SourceError, match="not a regular file"):
        list_shards(str(tmp_path / "pipe.jsonl"))


def test_excluded_directories_inside_the_source_are_not_listed(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id":1,"text":"x"}\n')
    (tmp_path / "quarantine" / "s1").mkdir(parents=True)
    (tmp_path / "quarantine" / "s1" / "a.jsonl").write_text('{"id":1,"text":"x"}\n')
    skipped: list[str] = []
    refs = list_shards(str(tmp_path), exclude=[str(tmp_path / "quarantine")], skipped=skipped)
    assert [r.name for r in refs] == ["a.jsonl"] and "quarantined copies" in skipped[0]
    # scanning the excluded directory itself is what the user asked for
    assert [r.name for r in list_shards(str(tmp_path / "quarantine"), exclude=[str(tmp_path / "quarantine")])] \
        == ["s1/a.jsonl"]


@pytest.mark.parametrize("body, line, why", [
    (b'id,text\n1,alpha\n2,beta\n3,gam\x00ma\n4,"delta\n5,epsilon\n', 4, "NUL byte"),
    (b'id,text\n1,alpha\n2,beta\n3,gamma\n4,"delta\n5,epsilon\n6,zeta\n', 5, "never closed"),
])
def test_csv_nul_or_unterminated_quote_is_an_error_at_its_line(tmp_path, body, line, why):
    path = tmp_path / "bad.csv"
    path.write_bytes(body)
    err = _error(path)
    assert err.line == line and why in str(err)


def test_csv_quoted_newlines_and_escaped_quotes_still_read(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_bytes(b'id,text\n1,alpha\n2,"be\n""ta"""\n3,gamma\n')
    [ref] = list_shards(str(path))
    table = pa.Table.from_batches(list(ShardReader(ref, ColumnMapping())))
    assert table.column("text").to_pylist() == ["alpha", 'be\n"ta"', "gamma"]


def _png(width: int, height: int, idat: bytes, iend: bool = True) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", idat) + (chunk(b"IEND", b"") if iend else b"")


def test_truncated_6000x6000_png_is_corrupt_and_never_allocated():
    """Issue 13 defect 9: a ~100-byte PNG declaring 6000x6000 decoded as "ok" at ~0.9 GB."""
    import zlib

    from connectors.images import decode_image
    from integrity.checks import registry

    one_row = zlib.compress(b"\0" + b"\x10" * 18_000)
    for data in (_png(6000, 6000, one_row), _png(6000, 6000, one_row, iend=False)):
        assert len(data) < 150
        got = decode_image(data)
        assert got.status == "corrupt" and "cannot hold the 108,006,000 bytes" in got.error
    # a complete zlib stream that holds half the rows is caught by counting, not by the ratio bound
    half = zlib.compress(np.random.default_rng(0).integers(0, 255, 300 * 901, dtype=np.uint8).tobytes())
    got = decode_image(_png(300, 600, half))
    assert got.status == "corrupt" and "270,300 of the 540,600 bytes" in got.error
    batch = pa.record_batch({"record_id": ["a"], "row": [0],
                             "image": pa.array([_png(6000, 6000, one_row)], pa.large_binary())})
    found = registry.get("image.decode")({}).process_batch(batch).findings
    assert json.loads(found["detail"][0])["problem"] == "corrupt"


def test_complete_pngs_of_every_mode_still_decode():
    import io

    from PIL import Image

    from connectors.images import decode_image

    pixels = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for mode in ("RGB", "L", "1", "P", "RGBA", "LA", "I;16"):
        buf = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buf, "PNG")
        assert decode_image(buf.getvalue()).status == "ok", mode
