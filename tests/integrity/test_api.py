"""The Python API as a notebook uses it: `integrity.scan(...)` on paths, data frames, `datasets`
objects and hf:// splits, with the same findings as the command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import integrity
from connectors.errors import SourceError

CHECKS = "dedup.exact,dedup.near,privacy.pii,privacy.secret,poison.unicode"  # no model to load
PROJECT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def rows(n: int = 240) -> list[dict]:
    out = [{"id": f"d{i}", "text": f"Entry {i} on tide tables, harbour lights and the ferry timetable {i * 7}."}
           for i in range(n)]
    out[5]["text"] = out[4]["text"].upper()
    out[11]["text"] = out[10]["text"].replace("ferry", "ferry boat")
    out[20]["text"] = f"push with {TOKEN} please"
    out[30]["text"] = "mail bob.jones@example.com or call"
    out[40]["text"] = "hidden\u200b\u200b\u200b\u200bpayload here"
    return out


def comparable(findings: pl.DataFrame) -> pl.DataFrame:
    return findings.select("shard", "record_id", "check", "severity", "score", "detail").sort(
        "check", "record_id", "detail")


def test_a_dataframe_and_the_same_rows_in_parquet_give_the_same_findings(tmp_path: Path):
    frame = pl.DataFrame(rows())
    result = integrity.scan(frame, checks=CHECKS, state_dir=tmp_path / "state", out=tmp_path / "api")
    assert isinstance(result, integrity.ScanResult)
    assert result.verdict == "fail" and result.exit_code == 2  # the leaked token
    assert result.report_path.is_file() and result.run_dir == tmp_path / "api"
    assert set(result.findings["check"]) == {"dedup.exact", "dedup.near", "privacy.pii", "privacy.secret",
                                             "poison.unicode"}
    assert result.shards.height == 1 and result.shards["rows"][0] == 240
    assert result.summary["corpus"] == result.corpus and result.corpus.startswith("dataframe-")
    assert (tmp_path / "api" / "source").is_dir()  # staged shards live in the run directory

    # the same rows written to Parquet, scanned by the command line
    src = tmp_path / "parquet"
    src.mkdir()
    frame.write_parquet(src / "part-00000.parquet")
    env = {**os.environ, "PYTHONPATH": f"{PROJECT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "p.yaml").write_text(f"state_dir: {tmp_path / 'state2'}\n")
    r = subprocess.run([sys.executable, "-m", "flows.cli", "scan", str(src), "--out", str(tmp_path / "cli"),
                        "--checks", CHECKS, "--runner", "inline", "--policy", str(tmp_path / "p.yaml")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    cli = pl.read_parquet(tmp_path / "cli" / "findings.parquet")
    assert comparable(result.findings).equals(comparable(cli))
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["verdict"] == result.verdict


def scan_same(tmp_path: Path, sources: dict) -> None:
    """Each source gives the findings the same rows give as a Polars DataFrame."""
    data = rows(120)
    base = integrity.scan(pl.DataFrame(data), checks="dedup.exact,privacy.secret", state_dir=tmp_path / "s",
                          out=tmp_path / "base")
    want = sorted(zip(base.findings["check"], base.findings["record_id"]))
    assert ("privacy.secret", "d20") in want and ("dedup.exact", "d5") in want
    for name, (source, split) in sources.items():
        res = integrity.scan(source, split=split, checks=["dedup.exact", "privacy.secret"],
                             state_dir=tmp_path / "s", out=tmp_path / name)
        assert sorted(zip(res.findings["check"], res.findings["record_id"])) == want, name
        assert res.shards["rows"].sum() == 120, name


def test_a_dataset_dict_split(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(rows(120))
    both = datasets.DatasetDict({"train": ds, "test": ds.select(range(3))})
    scan_same(tmp_path, {"dict": (both, "train")})
    with pytest.raises(SourceError, match="split="):
        integrity.scan(both, checks="dedup.exact", state_dir=tmp_path / "s", out=tmp_path / "x")
    with pytest.raises(SourceError, match="no rows"):
        integrity.scan(ds.select([]), checks="dedup.exact", state_dir=tmp_path / "s", out=tmp_path / "y")
    # a Dataset handed to the path-based listing says what to do instead of "source Dataset(...) is empty"
    from connectors import list_shards

    with pytest.raises(SourceError, match=r"integrity\.scan\(\)"):
        list_shards(ds)


@pytest.mark.slow
def test_a_dataset_an_iterable_dataset_and_pandas(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    import pandas as pd

    ds = datasets.Dataset.from_list(rows(120))
    scan_same(tmp_path, {"dataset": (ds, None), "iterable": (ds.to_iterable_dataset(), None),
                         "pandas": (pd.DataFrame(rows(120)), None)})


class HubStandIn(MemoryFileSystem):
    """`hf://` served from memory: the real listing and reading code, no network."""

    protocol = ("hf",)
    root_marker = ""


@pytest.fixture
def hub():
    previous = fsspec.registry.get("hf")
    fsspec.register_implementation("hf", HubStandIn, clobber=True)
    fs = HubStandIn()
    try:
        yield fs
    finally:
        for p in list(fs.store):
            if p.startswith("/datasets/acme") or p.startswith("datasets/acme"):
                fs.store.pop(p, None)
        fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if "acme" not in d]
        if previous is not None:
            fsspec.register_implementation("hf", previous, clobber=True)
        else:  # back to the lazily imported huggingface_hub implementation
            from fsspec.registry import _registry

            _registry.pop("hf", None)


def put_parquet(fs, path: str, records: list[dict]) -> None:
    with fs.open(path, "wb") as f:
        pq.write_table(pa.Table.from_pylist(records), f)


def test_hub_path_with_a_split(tmp_path: Path, hub):
    data = rows(60)
    put_parquet(hub, "hf://datasets/acme/harbour/data/train-00000-of-00002.parquet", data[:30])
    put_parquet(hub, "hf://datasets/acme/harbour/data/train-00001-of-00002.parquet", data[30:])
    put_parquet(hub, "hf://datasets/acme/harbour/data/test-00000-of-00001.parquet", [{"id": "t", "text": "x"}])
    res = integrity.scan("hf://datasets/acme/harbour", split="train", checks="dedup.exact,privacy.secret",
                         state_dir=tmp_path / "s", out=tmp_path / "hub")
    assert sorted(res.shards["shard"]) == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert res.shards["rows"].sum() == 60 and "privacy.secret" in set(res.findings["check"])
    assert all(u.startswith("hf://datasets/acme/harbour/") for u in res.shards["uri"])
    with pytest.raises(SourceError, match="validation") as e:
        integrity.scan("hf://datasets/acme/harbour", split="validation", checks="dedup.exact",
                       state_dir=tmp_path / "s", out=tmp_path / "hub2")
    assert "train-00000-of-00002.parquet" in str(e.value)  # names what is there


def test_policy_mapping_columns_and_a_mapping_that_fits_nothing(tmp_path: Path):
    from integrity.engine.pipeline import ColumnMappingError

    frame = pl.DataFrame({"doc": [f"body {i} of the text about rivers" for i in range(50)],
                          "key": [str(i) for i in range(50)]})
    seen = []
    res = integrity.scan(frame, columns={"text": "doc", "id": "key"}, checks="dedup.exact",
                         policy={"report": {"examples_per_check": 1}}, state_dir=tmp_path / "s",
                         out=tmp_path / "ok", on_progress=seen.append)
    assert res.verdict == "pass" and res.summary["state_dir"] == str(tmp_path / "s")
    assert seen[-1].exact and seen[-1].records_done == 50  # records done / total, as the CLI shows them
    assert (tmp_path / "ok" / "policy.yaml").exists()
    with pytest.raises(ColumnMappingError, match="'doc'"):
        integrity.scan(frame, columns={"text": "body"}, checks="dedup.exact", state_dir=tmp_path / "s",
                       out=tmp_path / "bad")
