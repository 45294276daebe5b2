"""Bad input gives a ShardReadError naming the file and the line (or row)."""
from __future__ import annotations

import gzip
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import ShardReader, ShardReadError, ShardRef, list_shards
from connectors.errors import SourceError
from connectors.schema import ColumnMapping


def _read_error(path, batch_size: int = 8192) -> ShardReadError:
    [ref] = list_shards(str(path))
    with pytest.raises(ShardReadError) as err:
        list(ShardReader(ref, ColumnMapping(), batch_size=batch_size))
    assert str(err.value).startswith(str(path))
    assert err.value.uri == str(path)
    return err.value


def _lines(n: int) -> list[bytes]:
    return [b'{"id": %d, "text": "fine line %d"}\n' % (i, i) for i in range(n)]


def test_error_str_format():
    err = ShardReadError("/d/s.jsonl", "malformed JSON (x); fix or remove that line", line=17)
    assert str(err) == "/d/s.jsonl line 17: malformed JSON (x); fix or remove that line"
    assert str(ShardReadError("/d/s.parquet", "bad", row=3)) == "/d/s.parquet row 3: bad"
    assert str(ShardReadError("/d/s.parquet", "bad")) == "/d/s.parquet: bad"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 17
    assert not issubclass(SourceError, ShardReadError)


def test_malformed_json_line(tmp_path):
    lines = _lines(20)
    lines[16] = b'{"id": 16 "text": "missing comma"}\n'
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b"".join(lines))
    err = _read_error(path)
    assert err.line == 17
    assert str(err) == (f"{path} line 17: malformed JSON (Expecting ',' delimiter: line 1 column 11); "
                        "fix or remove that line")


def test_malformed_json_in_a_later_chunk_counts_lines_across_chunks_and_blanks(tmp_path):
    lines = _lines(30)
    lines.insert(5, b"\n")  # a blank line still counts as a line
    lines[25] = b'{"id": 25, "text": }\n'
    path = tmp_path / "shard.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    err = _read_error(path, batch_size=10)
    assert err.line == 26 and "line 26: malformed JSON" in str(err)


def test_non_utf8_line(tmp_path):
    lines = _lines(5)
    lines[3] = b'{"id": 3, "text": "caf\xe9"}\n'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"".join(lines))
    err = _read_error(path)
    assert err.line == 4
    assert "invalid UTF-8" in str(err) and "0xe9" in str(err) and "line 4:" in str(err)


def test_json_line_not_an_object(tmp_path):
    lines = _lines(3)
    lines[1] = b'["an", "array"]\n'
    path = tmp_path / "s.ndjson"
    path.write_bytes(b"".join(lines))
    err = _read_error(path)
    assert err.line == 2
    assert "expected one JSON object per line" in str(err) and "got an array" in str(err)


def test_json_array_file_named_json(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"text": "a"},\n {"text": "b"}]\n')
    err = _read_error(path)
    assert err.line == 1


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(b"".join(_lines(2000)))
    path = tmp_path / "s.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    err = _read_error(path)
    assert "corrupt gzip stream" in str(err)


def test_zero_byte_parquet_is_corrupt(tmp_path):
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    err = _read_error(path)
    assert "not a valid Parquet file" in str(err) and "corrupt or truncated" in str(err)


def test_truncated_parquet(tmp_path):
    full = tmp_path / "full.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(1000)]}), full)
    path = tmp_path / "cut.parquet"
    path.write_bytes(full.read_bytes()[:-100])
    err = _read_error(path)
    assert "not a valid Parquet file" in str(err)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text('{"text": "I am JSON"}\n')
    err = _read_error(path)
    assert "not a valid Parquet file" in str(err)


def test_csv_wrong_field_count(tmp_path):
    path = tmp_path / "s.csv"
    rows = ["id,text,label"] + [f"{i},text {i},0" for i in range(10)]
    rows[7] = "6,text, with an unquoted comma,0"
    path.write_text("\n".join(rows) + "\n")
    err = _read_error(path)
    assert err.line == 8
    assert "CSV parse error" in str(err) and "expected 3 fields, got 4" in str(err)


def test_csv_non_utf8(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"id,text\n1,ok\n2,caf\xe9\n")
    err = _read_error(path)
    assert err.line == 3 and "UTF-8" in str(err)


def test_parquet_binary_text_not_utf8(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"ok", b"\xff\xfe"], pa.binary())}), path)
    err = _read_error(path)
    assert err.row == 2 and "row 2:" in str(err) and "not valid UTF-8" in str(err)


def test_nested_text_column(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": pa.array([["a", "b"]])}), path)
    err = _read_error(path)
    assert "'text' has type list" in str(err)


def test_missing_file_after_listing(tmp_path):
    ref = ShardRef("gone.jsonl", str(tmp_path / "gone.jsonl"), "jsonl", 10, "size=10")
    with pytest.raises(ShardReadError) as err:
        list(ShardReader(ref, ColumnMapping()))
    assert "gone.jsonl" in str(err.value) and "cannot read" in str(err.value)


def test_unknown_format(tmp_path):
    ref = ShardRef("x.avro", str(tmp_path / "x.avro"), "avro", 0, "")
    with pytest.raises(ShardReadError, match="no reader for format 'avro'"):
        list(ShardReader(ref, ColumnMapping()))


def test_corrupt_hf_arrow_file(tmp_path, w):
    path = w.hf(tmp_path / "ds", {"text": [f"t{i}" for i in range(100)]})
    arrow = next(path.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:40])
    err = _read_error(path)
    assert arrow.name in str(err)


def test_bad_batch_size(tmp_path, w):
    [ref] = list_shards(str(w.jsonl(tmp_path / "s.jsonl", [{"text": "x"}])))
    with pytest.raises(ValueError):
        ShardReader(ref, ColumnMapping(), batch_size=0)
