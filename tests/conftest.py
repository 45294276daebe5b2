"""Shared fixtures: one Prefect test server for the whole session, offline settings,
and small real corpora written to disk."""
from __future__ import annotations

import gzip
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

_home = tempfile.mkdtemp(prefix="integrity-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
# the example generators (examples/make_images.py, ...) are importable by name in tests
sys.path.insert(0, str(PROJECT / "examples"))


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for every test that runs a real flow (~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def write_jsonl(path: Path, records: list[dict], compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def file_renderings(path: Path) -> list[str]:
    """Every readable rendering of a file: its bytes, decompressed (gzip, zstd), its Parquet and SQLite tables.

    The leak tests search these for planted secrets, so a token stored compressed or in a table is still seen.
    """
    raw = path.read_bytes()
    out = [raw.decode("utf-8", "replace")]
    if raw[:2] == b"\x1f\x8b":
        out.append(gzip.decompress(raw).decode("utf-8", "replace"))
    if raw[:4] == b"(\xb5/\xfd":
        import zstandard  # noqa: PLC0415 (only needed when a file is zstd)

        out.append(zstandard.ZstdDecompressor().decompressobj().decompress(raw).decode("utf-8", "replace"))
    if raw[:4] == b"PAR1":
        out.append(json.dumps(pq.read_table(path).to_pylist(), default=repr, ensure_ascii=False))
    if raw[:16] == b"SQLite format 3\x00":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for (name,) in con.execute("select name from sqlite_master where type='table'").fetchall():
                out.append(repr(con.execute(f'select * from "{name}"').fetchall()))
        finally:
            con.close()
    return out


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """Three shards: a cross-shard exact duplicate (case/space variant), an e-mail,
    a leaked GitHub token, and otherwise clean text."""
    root = tmp_path / "corpus"
    clean = [{"id": f"a{i}", "text": f"Document number {i} talks about gardens and rivers in spring."} for i in range(50)]
    clean[3]["text"] = "The Quick  brown fox jumps over the lazy dog."
    clean[4]["text"] = "Write to alice.smith@example.com for the minutes."
    write_jsonl(root / "a.jsonl", clean)
    b = [{"id": f"b{i}", "text": f"Another page {i} on weather, bread and trains."} for i in range(50)]
    b[10]["text"] = "the quick brown FOX jumps over the lazy dog."
    write_parquet(root / "b.parquet", b)
    c = [{"id": f"c{i}", "text": f"Config note {i}: nothing secret here."} for i in range(50)]
    c[5]["text"] = "token: ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" + " was committed by mistake"
    write_jsonl(root / "c.jsonl.gz", c, compress=True)
    return root


@pytest.fixture
def state_policy(tmp_path: Path) -> Path:
    """A policy whose state directory is inside the test's tmp dir."""
    p = tmp_path / "policy.yaml"
    p.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return p


#: words of the texts that tests embed with the small static model below
STATIC_TEST_WORDS = (
    "the city council approved new budget on tuesday after a long debate lengthy discussions was passed by "
    "to reset your password click link in email we sent you heavy rain caused flooding several neighborhoods "
    "overnight were flooded because of rainfall recipe calls for two cups flour and pinch salt this package "
    "contains development headers library files tool server client data support python module documentation "
    "garden river bread train glass violin map cheese kite music mountain window paper school doctor market "
    "village ocean forest winter summer morning evening letter story engine camera bridge castle island desert "
    "naïve café [SEP] ünïcödé"
)


@pytest.fixture(scope="session")
def small_static_model(tmp_path_factory) -> Path:
    """A static model distilled from the installed all-MiniLM-L6-v2 for the tokens of
    STATIC_TEST_WORDS and the 3,000 most frequent word pieces (ids 1996-4999) only:
    seconds, not the CPU-minute of the full vocabulary."""
    from integrity.analysis.embeddings import load_model
    from integrity.analysis.static_embeddings import distill

    tok = load_model("all-MiniLM-L6-v2", "cpu").tokenizer
    ids = sorted(set(tok(STATIC_TEST_WORDS, add_special_tokens=False)["input_ids"]) | set(range(1996, 5000)))
    return distill(tmp_path_factory.mktemp("static") / "small", token_ids=ids, pca_dims=64)
