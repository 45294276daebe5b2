"""list_shards: files, directories, globs, fsspec URLs, HF datasets, errors."""
from __future__ import annotations

import os

import pytest

from connectors import ShardRef, SourceError, list_shards
from connectors.formats import detect_format


def test_single_file(tmp_path, w, records):
    path = w.parquet(tmp_path / "sub" / "a.parquet", records)
    [ref] = list_shards(str(path))
    assert isinstance(ref, ShardRef)
    assert ref.name == "a.parquet"
    assert ref.uri == str(path)
    assert ref.format == "parquet"
    assert ref.size == path.stat().st_size
    assert ref.fingerprint.startswith(f"size={ref.size};mtime=")


def test_relative_path_gives_absolute_uri(tmp_path, w, records, monkeypatch):
    w.jsonl(tmp_path / "a.jsonl", records)
    monkeypatch.chdir(tmp_path)
    [ref] = list_shards("a.jsonl")
    assert ref.uri == str(tmp_path / "a.jsonl")


def test_directory_recursive_sorted_known_suffixes_only(tmp_path, w, records):
    w.jsonl(tmp_path / "b" / "x.jsonl", records)
    w.jsonl(tmp_path / "a.jsonl.gz", records, codec="gzip")
    w.jsonl(tmp_path / "c" / "d" / "y.jsonl.zst", records, codec="zstd")
    w.parquet(tmp_path / "p.parquet", records)
    w.csv(tmp_path / "t.csv", records)
    w.csv(tmp_path / "t2.csv.gz", records, codec="gzip")
    (tmp_path / "n.ndjson").write_text('{"text": "x"}\n')
    (tmp_path / "j.json.gz").write_bytes(b"")
    (tmp_path / "README.md").write_text("not a shard")
    (tmp_path / "notes.txt").write_text("not a shard")
    w.jsonl(tmp_path / ".hidden" / "h.jsonl", records)
    w.jsonl(tmp_path / "_delta_log" / "0.json", records)
    refs = list_shards(str(tmp_path))
    assert [r.name for r in refs] == [
        "a.jsonl.gz", "b/x.jsonl", "c/d/y.jsonl.zst", "j.json.gz", "n.ndjson",
        "p.parquet", "t.csv", "t2.csv.gz",
    ]
    assert {r.name: r.format for r in refs} == {
        "a.jsonl.gz": "jsonl", "b/x.jsonl": "jsonl", "c/d/y.jsonl.zst": "jsonl",
        "j.json.gz": "jsonl", "n.ndjson": "jsonl", "p.parquet": "parquet",
        "t.csv": "csv", "t2.csv.gz": "csv",
    }
    assert all(os.path.isabs(r.uri) and os.path.exists(r.uri) for r in refs)
    by_name = {r.name: r for r in refs}
    assert by_name["a.jsonl.gz"].compression == "gzip"
    assert by_name["c/d/y.jsonl.zst"].compression == "zstd"
    assert by_name["p.parquet"].compression is None


def test_detect_format_rejects_compressed_parquet_and_bare_suffix():
    assert detect_format("x.parquet.gz") is None
    assert detect_format(".jsonl") is None
    assert detect_format("DATA.JSONL").format == "jsonl"


def test_hf_dataset_and_dataset_dict_in_directory(tmp_path, w):
    w.hf(tmp_path / "single", {"text": ["a", "b"], "label": [0, 1]})
    w.hf_dict(tmp_path / "dd", {"train": {"text": ["a", "b", "c"]}, "test": {"text": ["d"]}})
    w.jsonl(tmp_path / "plain.jsonl", [{"text": "x"}])
    refs = list_shards(str(tmp_path))
    assert [(r.name, r.format) for r in refs] == [
        ("dd/test", "hf_dataset"), ("dd/train", "hf_dataset"),
        ("plain.jsonl", "jsonl"), ("single", "hf_dataset"),
    ]
    single = next(r for r in refs if r.name == "single")
    assert single.uri == str(tmp_path / "single")
    assert single.size == sum(p.stat().st_size for p in (tmp_path / "single").iterdir())
    assert single.fingerprint.startswith(f"size={single.size};files=3;")


def test_hf_dataset_dir_as_source(tmp_path, w):
    w.hf(tmp_path / "mydata", {"text": ["a"]})
    [ref] = list_shards(str(tmp_path / "mydata"))
    assert (ref.name, ref.format) == ("mydata", "hf_dataset")


def test_dataset_dict_dir_as_source(tmp_path, w):
    w.hf_dict(tmp_path / "dd", {"train": {"text": ["a"]}, "validation": {"text": ["b"]}})
    refs = list_shards(str(tmp_path / "dd"))
    assert [(r.name, r.format) for r in refs] == [("train", "hf_dataset"), ("validation", "hf_dataset")]


def test_glob(tmp_path, w, records):
    w.parquet(tmp_path / "data" / "a.parquet", records)
    w.parquet(tmp_path / "data" / "b.parquet", records)
    w.jsonl(tmp_path / "data" / "c.jsonl", records)
    w.parquet(tmp_path / "data" / "deep" / "d.parquet", records)
    refs = list_shards(str(tmp_path / "data" / "*.parquet"))
    assert [r.name for r in refs] == ["a.parquet", "b.parquet"]
    assert refs[0].uri == str(tmp_path / "data" / "a.parquet")
    deep = list_shards(str(tmp_path / "data" / "**" / "*.parquet"))
    assert [r.name for r in deep] == ["a.parquet", "b.parquet", "deep/d.parquet"]


def test_glob_matching_hf_metadata_does_not_list_it(tmp_path, w):
    w.hf(tmp_path / "hf", {"text": ["a"]})
    w.jsonl(tmp_path / "x.json", [{"text": "x"}])
    refs = list_shards(str(tmp_path / "**" / "*.json"))
    assert [r.name for r in refs] == ["x.json"]
    refs = list_shards(str(tmp_path / "*"))
    assert [(r.name, r.format) for r in refs] == [("hf", "hf_dataset"), ("x.json", "jsonl")]


def test_memory_fsspec_url(memfs, w, records):
    data = w.jsonl_bytes(records)
    memfs.pipe("/bucket/corpus/a.jsonl", data)
    memfs.pipe("/bucket/corpus/sub/b.jsonl", data)
    memfs.pipe("/bucket/corpus/readme.txt", b"hi")
    refs = list_shards("memory://bucket/corpus")
    assert [(r.name, r.uri) for r in refs] == [
        ("a.jsonl", "memory://bucket/corpus/a.jsonl"),
        ("sub/b.jsonl", "memory://bucket/corpus/sub/b.jsonl"),
    ]
    assert refs[0].size == len(data)
    [one] = list_shards("memory://bucket/corpus/a.jsonl")
    assert (one.name, one.uri, one.format) == ("a.jsonl", "memory://bucket/corpus/a.jsonl", "jsonl")
    globbed = list_shards("memory://bucket/**/*.jsonl")
    assert [(r.name, r.uri) for r in globbed] == [
        ("corpus/a.jsonl", "memory://bucket/corpus/a.jsonl"),
        ("corpus/sub/b.jsonl", "memory://bucket/corpus/sub/b.jsonl"),
    ]


def test_fingerprint_changes_with_content(tmp_path, w, records):
    path = w.jsonl(tmp_path / "a.jsonl", records)
    [before] = list_shards(str(path))
    w.jsonl(path, records + records)
    [after] = list_shards(str(path))
    assert before.fingerprint != after.fingerprint


def test_nonexistent_source(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SourceError) as err:
        list_shards(str(missing))
    assert str(missing) in str(err.value)
    assert "does not exist" in str(err.value)


def test_nonexistent_memory_url(memfs):
    with pytest.raises(SourceError, match="memory://nothing/here"):
        list_shards("memory://nothing/here")


def test_directory_without_shards(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError) as err:
        list_shards(str(tmp_path))
    msg = str(err.value)
    assert "holds no shard" in msg and "'notes.txt'" in msg and ".parquet" in msg


def test_glob_without_match(tmp_path):
    with pytest.raises(SourceError, match="holds no shard"):
        list_shards(str(tmp_path / "*.parquet"))


def test_file_with_unknown_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(SourceError, match="known shard suffix"):
        list_shards(str(path))


def test_unknown_protocol():
    with pytest.raises(SourceError, match="cannot open source"):
        list_shards("nosuchproto://bucket/x")


def test_file_name_with_glob_characters_is_taken_literally(tmp_path, w, records):
    path = w.jsonl(tmp_path / "part[1].jsonl", records)
    [ref] = list_shards(str(path))
    assert ref.name == "part[1].jsonl"


def test_hf_dataset_on_memory_fs(tmp_path, w, memfs):
    local = w.hf_dict(tmp_path / "dd", {"train": {"text": ["a", "b"]}, "test": {"text": ["c"]}})
    for p in local.rglob("*"):
        if p.is_file():
            memfs.pipe("/b/dd/" + p.relative_to(local).as_posix(), p.read_bytes())
    refs = list_shards("memory://b/dd")
    assert [(r.name, r.uri, r.format) for r in refs] == [
        ("test", "memory://b/dd/test", "hf_dataset"), ("train", "memory://b/dd/train", "hf_dataset")]
    assert refs[1].size == sum(p.stat().st_size for p in (local / "train").iterdir())
