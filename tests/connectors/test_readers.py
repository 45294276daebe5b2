"""ShardReader: every format, column mapping, record ids, labels, hashing, batch bounds."""
from __future__ import annotations

import hashlib

from connectors.storage import sha256_of
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import ShardReader, ShardReadError, hash_shard, list_shards, read_shard
from connectors.schema import RECORD_FIELDS, ColumnMapping

EXPECTED_IDS = [str(100 + i) for i in range(7)]
EXPECTED_LABELS = ["0", "1", "0", None, "0", "1", "0"]


def _one(path, **kw):
    [ref] = list_shards(str(path))
    reader = ShardReader(ref, ColumnMapping(**kw))
    batches = list(reader)
    table = pa.Table.from_batches(batches) if batches else None
    return ref, reader, table


def _check_schema(table: pa.Table) -> None:
    for field in table.schema:
        assert field.type == RECORD_FIELDS[field.name], field


FORMATS = {
    "parquet": lambda w, p, r: w.parquet(p / "s.parquet", r),
    "jsonl": lambda w, p, r: w.jsonl(p / "s.jsonl", r),
    "jsonl.gz": lambda w, p, r: w.jsonl(p / "s.jsonl.gz", r, codec="gzip"),
    "jsonl.zst": lambda w, p, r: w.jsonl(p / "s.jsonl.zst", r, codec="zstd"),
    "csv": lambda w, p, r: w.csv(p / "s.csv", r),
    "csv.gz": lambda w, p, r: w.csv(p / "s.csv.gz", r, codec="gzip"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_normalized(fmt, tmp_path, w, records):
    path = FORMATS[fmt](w, tmp_path, records)
    ref, reader, table = _one(path)
    _check_schema(table)
    assert table.column_names == ["record_id", "row", "text", "label"]
    assert reader.columns == ["record_id", "row", "text", "label"]
    assert table.column("record_id").to_pylist() == EXPECTED_IDS
    assert table.column("row").to_pylist() == list(range(7))
    assert table.column("text").to_pylist() == [r["text"] for r in records]
    assert table.column("label").to_pylist() == EXPECTED_LABELS
    assert reader.rows == 7
    assert reader.complete
    data = path.read_bytes()
    assert reader.bytes == len(data) == ref.size
    assert reader.sha256 == hashlib.sha256(data).hexdigest() == hash_shard(ref)


def test_hf_dataset(tmp_path, w):
    path = w.hf(tmp_path / "ds", {"id": ["a", "b", "c"], "text": ["x", None, "z"], "label": [2, 1, 0]})
    ref, reader, table = _one(path)
    _check_schema(table)
    assert table.to_pylist() == [
        {"record_id": "a", "row": 0, "text": "x", "label": "2"},
        {"record_id": "b", "row": 1, "text": None, "label": "1"},
        {"record_id": "c", "row": 2, "text": "z", "label": "0"},
    ]
    assert reader.sha256 == hash_shard(ref) == _hf_dir_sha(path) == sha256_of(str(path))  # same as quarantine's
    assert reader.bytes == ref.size


def _hf_dir_sha(path) -> str:
    """The documented definition of an hf_dataset directory's SHA-256, computed independently."""
    sha = hashlib.sha256()
    files = sorted((p.relative_to(path).as_posix().encode(), p) for p in path.rglob("*") if p.is_file())
    for rel, p in files:
        data = p.read_bytes()
        sha.update(rel + b"\0" + data + b"\0")
    return sha.hexdigest()


def test_hf_dataset_dict_splits(tmp_path, w):
    w.hf_dict(tmp_path / "dd", {"train": {"text": [f"t{i}" for i in range(2500)]},
                                "test": {"text": ["only"]}})
    refs = list_shards(str(tmp_path / "dd"))
    tables = {}
    for ref in refs:
        reader = ShardReader(ref, ColumnMapping(), batch_size=1000)
        batches = list(reader)
        assert all(b.num_rows <= 1000 for b in batches)
        tables[ref.name] = pa.Table.from_batches(batches)
    assert tables["test"].to_pylist() == [{"record_id": "0", "row": 0, "text": "only"}]
    assert tables["train"].num_rows == 2500
    assert tables["train"].column("record_id").to_pylist()[-1] == "2499"


def test_hf_image_struct_becomes_bytes(tmp_path):
    # the layout `datasets` uses for an Image feature: struct<bytes, path>
    images = pa.array([{"bytes": b"\x89PNG1", "path": None}, {"bytes": b"\x89PNG2", "path": "x.png"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": images, "caption": ["a cat", "a dog"]})
    pq.write_table(table, tmp_path / "img.parquet")
    _, reader, out = _one(tmp_path / "img.parquet")
    _check_schema(out)
    assert out.column_names == ["record_id", "row", "caption", "image"]
    assert out.column("image").to_pylist() == [b"\x89PNG1", b"\x89PNG2"]


def test_instruction_pairs_prompt_response(tmp_path, w):
    path = w.jsonl(tmp_path / "pairs.jsonl", [{"prompt": "2+2?", "response": "4"}])
    _, reader, table = _one(path)
    assert table.to_pylist() == [{"record_id": "0", "row": 0, "prompt": "2+2?", "response": "4"}]


def test_explicit_mapping(tmp_path, w):
    path = w.parquet(tmp_path / "s.parquet",
                     [{"doc": "d1", "content": "hello", "y": True}, {"doc": "d2", "content": "bye", "y": False}])
    _, reader, table = _one(path, id="doc", text="content", label="y",
                            explicit=frozenset({"id", "text", "label"}))
    assert table.to_pylist() == [
        {"record_id": "d1", "row": 0, "text": "hello", "label": "true"},
        {"record_id": "d2", "row": 1, "text": "bye", "label": "false"},
    ]


def test_explicit_column_claims_default(tmp_path, w):
    # --text-column prompt: the prompt column is not also reported as `prompt`
    path = w.jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "response": "r"}])
    _, _, table = _one(path, text="prompt", explicit=frozenset({"text"}))
    assert table.column_names == ["record_id", "row", "text", "response"]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "csv"])
def test_explicit_missing_column_error(suffix, tmp_path, w, records):
    path = getattr(w, suffix)(tmp_path / f"s.{suffix}", records)
    [ref] = list_shards(str(path))
    reader = ShardReader(ref, ColumnMapping(text="body", explicit=frozenset({"text"})))
    with pytest.raises(ShardReadError) as err:
        list(reader)
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert "'body'" in msg and "'id'" in msg and "'text'" in msg and "'label'" in msg
    assert "use --text-column to pick one" in msg


def test_explicit_missing_label_names_its_flag(tmp_path, w, records):
    path = w.jsonl(tmp_path / "s.jsonl", records)
    [ref] = list_shards(str(path))
    with pytest.raises(ShardReadError, match="--label-column"):
        list(ShardReader(ref, ColumnMapping(label="klass", explicit=frozenset({"label"}))))


def test_no_text_column_error(tmp_path, w):
    path = w.jsonl(tmp_path / "s.jsonl", [{"id": 1, "body": "x"}])
    [ref] = list_shards(str(path))
    with pytest.raises(ShardReadError) as err:
        list(ShardReader(ref, ColumnMapping()))
    msg = str(err.value)
    assert str(path) in msg and "no text column" in msg and "'body'" in msg
    assert "use --text-column to pick one" in msg


def test_default_columns_missing_are_absent(tmp_path, w):
    path = w.jsonl(tmp_path / "s.jsonl", [{"text": "only text"}])
    _, reader, table = _one(path)
    assert table.column_names == ["record_id", "row", "text"]


def test_record_id_falls_back_to_row_index(tmp_path, w):
    path = w.parquet(tmp_path / "s.parquet", [{"text": f"t{i}"} for i in range(2500)])
    [ref] = list_shards(str(path))
    batches = list(ShardReader(ref, ColumnMapping(), batch_size=1000))
    ids = [x for b in batches for x in b.column("record_id").to_pylist()]
    assert ids == [str(i) for i in range(2500)]


def test_label_cast_and_nulls(tmp_path, w):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": None, "label": None}]
    _, _, table = _one(w.parquet(tmp_path / "s.parquet", rows))
    assert table.column("label").to_pylist() == ["0", "1", None]
    assert table.column("text").to_pylist() == ["a", "b", None]


def test_jsonl_mixed_value_types_are_reconciled(tmp_path, w):
    rows = [{"id": 1, "text": "a", "label": 0}, {"id": "x-2", "text": "b", "label": "spam"},
            {"id": 3, "text": "c", "label": {"k": 1}}]
    _, _, table = _one(w.jsonl(tmp_path / "s.jsonl", rows))
    assert table.column("record_id").to_pylist() == ["1", "x-2", "3"]
    assert table.column("label").to_pylist() == ["0", "spam", '{"k": 1}']


def test_jsonl_column_appearing_in_later_batch_is_null_filled(tmp_path, w):
    rows = [{"text": f"t{i}", "label": 1} for i in range(5)] + [{"text": "no label"}]
    [ref] = list_shards(str(w.jsonl(tmp_path / "s.jsonl", rows)))
    batches = list(ShardReader(ref, ColumnMapping(), batch_size=5))
    assert [b.num_rows for b in batches] == [5, 1]
    assert batches[1].column("label").to_pylist() == [None]


def test_csv_keeps_strings_and_multiline_values(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('id,text,label\n007,"line one\nline two",1\n008,,0\n')
    _, _, table = _one(path)
    assert table.to_pylist() == [
        {"record_id": "007", "row": 0, "text": "line one\nline two", "label": "1"},
        {"record_id": "008", "row": 1, "text": None, "label": "0"},
    ]


def test_image_column_that_is_not_bytes_is_ignored_with_a_note(tmp_path, w):
    # (a string column is read as image paths: see test_image_paths.py)
    path = w.jsonl(tmp_path / "s.jsonl", [{"image": 7, "caption": "a cat"}])
    _, reader, table = _one(path)
    assert table.column_names == ["record_id", "row", "caption"]
    assert any("'image'" in n for n in reader.notes)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.zst", "csv"])
def test_batches_bounded_by_batch_size(fmt, tmp_path, w):
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(10_000)]
    path = FORMATS[fmt](w, tmp_path, rows)
    [ref] = list_shards(str(path))
    reader = ShardReader(ref, ColumnMapping(), batch_size=1000)
    sizes, first_rows = [], []
    for batch in reader:
        sizes.append(batch.num_rows)
        first_rows.append(batch.column("row")[0].as_py())
    assert max(sizes) <= 1000
    assert sum(sizes) == reader.rows == 10_000
    assert first_rows == [sum(sizes[:i]) for i in range(len(sizes))]
    assert reader.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_many_row_groups(tmp_path, w):
    rows = [{"text": f"t{i}"} for i in range(5000)]
    path = w.parquet(tmp_path / "s.parquet", rows, row_group_size=700)
    [ref] = list_shards(str(path))
    batches = list(ShardReader(ref, ColumnMapping(), batch_size=1000))
    assert all(b.num_rows <= 1000 for b in batches)
    assert sum(b.num_rows for b in batches) == 5000


def test_read_from_memory_fs(memfs, w, records):
    memfs.pipe("/bucket/a.jsonl", w.jsonl_bytes(records))
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records), buf)
    memfs.pipe("/bucket/b.parquet", buf.getvalue().to_pybytes())
    for ref in list_shards("memory://bucket"):
        reader = ShardReader(ref, ColumnMapping())
        table = pa.Table.from_batches(list(reader))
        assert table.column("record_id").to_pylist() == EXPECTED_IDS
        assert reader.sha256 == hashlib.sha256(memfs.cat(ref.uri)).hexdigest() == hash_shard(ref)


def test_empty_shards_are_not_errors(tmp_path, w):
    (tmp_path / "e.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n")
    (tmp_path / "e.csv").write_bytes(b"")
    (tmp_path / "h.csv").write_bytes(b"id,text\n")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    w.hf(tmp_path / "hf", {"text": []})
    refs = list_shards(str(tmp_path))
    assert len(refs) == 6
    for ref in refs:
        reader = ShardReader(ref, ColumnMapping())
        assert list(reader) == [], ref.name
        assert reader.rows == 0 and reader.complete
        assert reader.sha256 == hash_shard(ref)
    assert read_shard(refs[0]).num_rows == 0


def test_reiteration_restarts(tmp_path, w, records):
    [ref] = list_shards(str(w.jsonl(tmp_path / "s.jsonl", records)))
    reader = ShardReader(ref, ColumnMapping())
    first = pa.Table.from_batches(list(reader))
    second = pa.Table.from_batches(list(reader))
    assert first.equals(second) and reader.rows == 7


def test_projection_reads_only_mapped_parquet_columns(tmp_path):
    table = pa.table({"text": ["a"], "blob": pa.array([[1, 2, 3]], pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "s.parquet")
    _, _, out = _one(tmp_path / "s.parquet")
    assert out.column_names == ["record_id", "row", "text"]


def test_no_pickle_or_eval_in_connectors():
    import pathlib

    import connectors

    src = "".join(p.read_text() for p in pathlib.Path(connectors.__file__).parent.glob("*.py")
                  if p.name != "storage.py")
    for banned in ("import pickle", "pickle.load", "eval(", "exec(", "load_from_disk"):
        assert banned not in src


def test_careful_and_fast_jsonl_parsers_agree():
    from connectors.jsonl_format import parse_careful, parse_fast

    lines = [json.dumps({"id": i, "text": f"t{i}", "label": i % 2}).encode() + b"\n" for i in range(50)]
    fast = parse_fast(lines)
    careful = parse_careful(lines, list(range(1, 51)), "x")
    assert fast.to_pylist() == careful.to_pylist()


def test_hf_dataset_read_from_memory_fs(tmp_path, w, memfs):
    local = w.hf(tmp_path / "ds", {"id": [1, 2, 3], "text": ["a", "b", "c"]})
    for p in local.iterdir():
        memfs.pipe("/b/ds/" + p.name, p.read_bytes())
    [ref] = list_shards("memory://b/ds")
    reader = ShardReader(ref, ColumnMapping(), batch_size=2)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [2, 1]
    assert pa.Table.from_batches(batches).column("record_id").to_pylist() == ["1", "2", "3"]
    [local_ref] = list_shards(str(local))
    assert reader.sha256 == hash_shard(local_ref) == _hf_dir_sha(local)


def test_a_huge_jsonl_record_reads_the_same_through_the_low_memory_path(tmp_path, monkeypatch):
    """A line over 1 MiB is gathered in a bytearray and a one-record chunk over HUGE_LINE_BYTES is
    parsed with its text columns declared (issue 13: memory of a huge record); the result must
    equal the ordinary parse: same values, same column order, absent text keys not invented,
    and a text column that is not a string still read (the plain parse takes over)."""
    from connectors import jsonl_format

    text = ("word " * 300_000) + "\u00e9nd \\\" quote"  # 1.5 MB, so the bytearray path runs
    recs = [{"meta": {"k": 1}, "id": 7, "text": text, "label": "a"},
            {"id": "x", "caption": "c", "text": 12345, "after": True}]
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    plain = [ShardReader(ref, ColumnMapping(), batch_size=1) for ref in list_shards(str(path))]
    want = [b.to_pylist() for b in plain[0]]
    monkeypatch.setattr(jsonl_format, "HUGE_LINE_BYTES", 10)
    low = ShardReader(list_shards(str(path))[0], ColumnMapping(), batch_size=1)
    got = [b.to_pylist() for b in low]
    assert got == want and got[0][0]["text"] == text and got[1][0]["text"] == "12345"
    raw = [jsonl_format.parse_fast([json.dumps(r).encode() + b"\n"], frozenset({"text", "caption", "prompt"}))
           for r in recs]
    assert raw[0].schema.names == ["meta", "id", "text", "label"]  # no null 'caption'/'prompt' added
    assert raw[1].schema.names == ["id", "caption", "text", "after"] and raw[1].column("text").type == pa.int64()
