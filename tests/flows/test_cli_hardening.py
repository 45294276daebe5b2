"""Regressions of the adversarial pass (issue 13), run the way a user runs them: the
``integrity`` CLI in a subprocess, real files, a real state directory."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

PROJECT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _assert_message_not_traceback(r: subprocess.CompletedProcess, *words: str) -> None:
    text = r.stdout + r.stderr
    assert r.returncode == 3, text
    assert "Traceback" not in text, text
    for w in words:
        assert w in text, text


# --------------------------------------------------------------------------- defect 7


def _png_tar(path: Path, captions: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, caption in enumerate(captions):
            arr = np.zeros((32, 32, 3), np.uint8)
            arr[:, :] = (i * 60, 255 - i * 60, (i * 97) % 255)
            arr[8:16, 4:28] = 255 - arr[0, 0]
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "PNG")
            for name, data in ((f"{i:04d}.png", buf.getvalue()), (f"{i:04d}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_nightly_image_rescan_matching_only_earlier_images(tmp_path: Path):
    """Night 2's images duplicate only night 1's approved images (other captions): the
    scan used to abort with a SchemaError joining an empty, untyped frame."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\n")
    _png_tar(tmp_path / "day1" / "day1.tar", [f"first picture {i}" for i in range(4)])
    _png_tar(tmp_path / "day2" / "day2.tar", [f"second caption {i}" for i in range(4)])
    for day in ("day1", "day2"):
        r = cli("scan", str(tmp_path / day), "--out", str(tmp_path / f"run-{day}"), "--policy", str(policy),
                "--checks", "dedup.image", "--runner", "inline", "--corpus", "nightly")  # one corpus, two drops
        assert r.returncode == 0, r.stdout + r.stderr
    found = pq.read_table(tmp_path / "run-day2" / "findings.parquet").to_pylist()
    assert len(found) == 4
    for f in found:
        d = json.loads(f["detail"])
        assert d["history"] is True and d["representative_shard"] == "day1.tar"
        assert d["representative"] == f["record_id"]


# --------------------------------------------------------------------------- defect 12


def test_policy_validate_on_a_binary_file(tmp_path: Path):
    p = tmp_path / "policy.yaml"
    p.write_bytes(bytes(range(256)) * 8)
    _assert_message_not_traceback(cli("policy", "validate", str(p)), "policy.yaml", "not a YAML text file")


def test_scan_with_a_deeply_nested_policy_names_the_file(tmp_path: Path):
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "text": "hello"}\n')
    flow = tmp_path / "flow.yaml"
    flow.write_text("checks: " + "[" * 50_000 + "]" * 50_000 + "\n")
    block = tmp_path / "block.yaml"
    block.write_text("checks:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)))
    for p in (flow, block):
        r = cli("scan", str(src), "--policy", str(p), "--out", str(tmp_path / "run"), "--runner", "inline")
        _assert_message_not_traceback(r, p.name, "nested too deeply")
        _assert_message_not_traceback(cli("policy", "validate", str(p)), p.name, "nested too deeply")


def test_quarantine_commands_on_a_corrupt_ledger(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "ledger.sqlite").write_bytes(os.urandom(8192))
    for args in (["list"], ["resume"], ["restore", "a.jsonl"], ["release", "a.jsonl", "--reason", "ok"]):
        r = cli("quarantine", *args, "--state-dir", str(state))
        _assert_message_not_traceback(r, "ledger.sqlite", "not a readable ledger")


# --------------------------------------------------------------------------- defect 16


def test_quarantine_resume_finishes_a_move_killed_midway(tmp_path: Path):
    """A scan process killed (os._exit, like kill -9) after copying a shard to the quarantine
    and before removing the original: ``integrity quarantine resume`` finishes the move."""
    corpus, state = tmp_path / "corpus", tmp_path / "state"
    corpus.mkdir()
    shard = corpus / "a.jsonl"
    data = b'{"id": 1, "text": "leaked"}\n' * 100
    shard.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    crash = textwrap.dedent(f"""
        import os
        from integrity.ledger import Ledger
        from integrity.engine.quarantine import quarantine
        def die(step):
            if step == "verified":
                os._exit(9)
        quarantine(Ledger({str(state)!r}), scan_id="s1", shard="a.jsonl", uri={str(shard)!r}, sha256={sha!r},
                   quarantine_root={str(state / "quarantine")!r}, fault=die)
    """)
    r = subprocess.run([sys.executable, "-c", crash], env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert r.returncode == 9
    assert shard.exists()  # killed before the original was removed
    r = cli("quarantine", "list", "--state-dir", str(state))
    assert "verified" in r.stdout, r.stdout + r.stderr

    r = cli("quarantine", "resume", "--state-dir", str(state))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finished" in r.stdout and "a.jsonl" in r.stdout
    assert not shard.exists()
    copies = [p for p in (state / "quarantine").rglob("*") if p.is_file()]
    assert len(copies) == 1 and hashlib.sha256(copies[0].read_bytes()).hexdigest() == sha
    r = cli("quarantine", "list", "--state-dir", str(state))
    assert "done" in r.stdout, r.stdout

    r = cli("quarantine", "resume", "--state-dir", str(state))
    assert r.returncode == 0 and "no unfinished" in r.stdout


# --------------------------------------------------------------------------- defect 15


def test_image_root_never_echoes_bytes_of_non_images(tmp_path: Path):
    """``--image-root /etc`` used to put ``root:x:0`` (the first bytes of /etc/passwd) into
    findings and the report. A look-alike root with a text file and a binary file."""
    root = tmp_path / "etc"
    root.mkdir()
    (root / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/false\n")
    (root / "blob").write_bytes(b"\x7fSECRETBLOB" + bytes(range(256)))
    data = tmp_path / "data"
    data.mkdir()
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["a", "b"], "image": [str(root / "passwd"), str(root / "blob")],
                             "caption": ["one", "two"]}), data / "pairs.parquet")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\n")
    r = cli("scan", str(data), "--out", str(tmp_path / "run"), "--policy", str(policy), "--image-root", str(root),
            "--checks", "image.decode,dedup.image,synthetic.image", "--runner", "inline")
    assert r.returncode == 0, r.stdout + r.stderr
    found = pq.read_table(tmp_path / "run" / "findings.parquet").to_pylist()
    details = {f["record_id"]: json.loads(f["detail"]) for f in found if f["check"] == "image.decode"}
    assert set(details) == {"a", "b"}
    assert "text" in details["a"]["error"] and "binary" in details["b"]["error"]
    for path in [*(tmp_path / "run").rglob("*"), *(tmp_path / "state").rglob("*")]:
        if path.is_file():
            raw = path.read_bytes()
            if path.suffix == ".parquet":
                raw += json.dumps(pq.read_table(path).to_pylist(), default=repr).encode()
            assert b"root:x" not in raw and b"SECRETBLOB" not in raw, path
    assert "root:x" not in r.stdout + r.stderr


# defects 1 and 2 (a token of no known format quoted in full by the report, examples.parquet and
# the cached drift samples): tests/flows/test_planted_tokens.py plants tokens of ten such formats


def test_corpus_findings_name_the_row_when_record_ids_repeat(tmp_path: Path):
    """Defect 13: a shard that repeats its ids ("1" on every other row) must not leave the
    corpus-level findings ambiguous: each names its record's row, and the row holds the
    duplicated text (the memorization score is joined on rows, not ids, as well)."""
    import polars as pl

    kept = "the quarterly audit of the northern warehouse found every pallet labelled and stored dry"
    texts = [f"line {i} about {w} gardens, rivers and weather in the spring of year {1900 + i}"
             for i, w in enumerate(["red", "blue", "green", "white", "black", "grey"] * 10)]
    for row in (7, 23, 41):
        texts[row] = kept  # three copies of one text, at rows whose ids are all "1"
    ids = ["1" if i % 2 else str(i) for i in range(len(texts))]
    (tmp_path / "src").mkdir()
    pl.DataFrame({"id": ids, "text": texts}).write_parquet(tmp_path / "src" / "a.parquet")
    (tmp_path / "policy.yaml").write_text(f"state_dir: {tmp_path / 'state'}\n")
    r = cli("scan", str(tmp_path / "src"), "--runner", "inline", "--policy", str(tmp_path / "policy.yaml"),
            "--checks", "dedup.exact,dedup.near,dedup.span,memorization.risk,provenance.duplicate_id",
            "--out", str(tmp_path / "run"))
    assert r.returncode in (0, 1), r.stdout + r.stderr
    found = pl.read_parquet(tmp_path / "run" / "findings.parquet")
    assert found.filter(pl.col("check") == "provenance.duplicate_id").height == 1  # warned once
    for check in ("dedup.exact", "dedup.near", "memorization.risk"):
        rows = sorted(json.loads(d)["row"] for d in found.filter(pl.col("check") == check)["detail"])
        expected = [23, 41] if check.startswith("dedup.") else [7, 23, 41]  # the first copy is kept
        assert rows == expected, (check, rows)
