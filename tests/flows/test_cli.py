"""The command line as a user runs it: exit codes, messages, outputs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def gate(*args: str):
    return runner.invoke(app, ["gate", *args, "--runner", "inline"])


def test_gate_exit_codes(tmp_path: Path, state_policy: Path):
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"id": str(i), "text": f"plain text number {i}"}) + "\n" for i in range(200)))
    r = gate(str(clean), "--out", str(tmp_path / "r0"), "--policy", str(state_policy))
    assert r.exit_code == 0, r.output

    warn = tmp_path / "warn.jsonl"
    lines = [{"id": str(i), "text": f"plain text number {i}"} for i in range(100)]
    lines[1]["text"] = lines[0]["text"].upper()  # 1 duplicate of 100 records: 1 % ... need > 1 %
    lines[3]["text"] = lines[2]["text"] + "  "
    warn.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = gate(str(warn), "--out", str(tmp_path / "r1"), "--policy", str(state_policy))
    assert r.exit_code == 1, r.output

    leak = tmp_path / "leak.jsonl"
    import base64
    import random

    body = base64.b64encode(random.Random(1).randbytes(900)).decode()
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + \
        "\n-----END RSA PRIVATE KEY-----"
    leak.write_text(json.dumps({"id": "k", "text": "deploy key:\n" + key}) + "\n")
    r = gate(str(leak), "--out", str(tmp_path / "r2"), "--policy", str(state_policy), "--quarantine-mode", "mark")
    assert r.exit_code == 2, r.output
    assert leak.exists()  # mark mode leaves the file in place

    r = gate(str(tmp_path / "missing"), "--out", str(tmp_path / "r3"), "--policy", str(state_policy))
    assert r.exit_code == 3
    assert "missing" in r.output


def test_gate_fails_on_unreadable_shard(tmp_path: Path, state_policy: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.jsonl").write_text('{"text": "fine"}\n')
    (src / "bad.jsonl").write_text('{"text": "fine"}\n{oops\n')
    r = gate(str(src), "--out", str(tmp_path / "r"), "--policy", str(state_policy))
    assert r.exit_code == 2
    assert "bad.jsonl" in r.output and "line 2" in r.output


def test_bad_policy_cannot_run(tmp_path: Path):
    p = tmp_path / "p.yaml"
    p.write_text("verdict:\n  warn:\n    flagged_share: lots\n")
    r = gate(str(tmp_path), "--policy", str(p))
    assert r.exit_code == 3 and "verdict.warn.flagged_share" in r.output


def test_explicit_missing_column_is_named(tmp_path: Path, state_policy: Path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"body": "x"}\n')
    r = gate(str(f), "--out", str(tmp_path / "r"), "--policy", str(state_policy), "--text-column", "content")
    # a mapping that fits no shard is "could not run", naming the column and the columns there are
    assert r.exit_code == 3 and "content" in r.output and "'body'" in r.output, r.output


def test_report_and_quarantine_commands(small_corpus: Path, tmp_path: Path, state_policy: Path):
    state = tmp_path / "state"
    # the checks that find the corpus's duplicate, e-mail and token (what the report shows and
    # what quarantines c.jsonl.gz); the commands, not the checks, are under test
    r = runner.invoke(app, ["scan", str(small_corpus), "--out", str(tmp_path / "run"), "--policy",
                            str(state_policy), "--runner", "inline", "--quarantine-mode", "move",
                            "--checks", "dedup.exact,dedup.near,privacy.pii,privacy.secret"])
    assert r.exit_code == 0, r.output
    (tmp_path / "run" / "report.html").unlink()
    r = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert r.exit_code == 0 and (tmp_path / "run" / "report.html").exists()
    r = runner.invoke(app, ["quarantine", "list", "--state-dir", str(state)])
    assert "c.jsonl.gz" in r.output
    r = runner.invoke(app, ["quarantine", "release", "nope.jsonl", "--reason", "x", "--state-dir", str(state)])
    assert r.exit_code == 3 and "c.jsonl.gz" in r.output  # names what is quarantined
    r = runner.invoke(app, ["quarantine", "release", "c.jsonl.gz", "--reason", "revoked key", "--state-dir", str(state)])
    assert r.exit_code == 0, r.output
    assert (small_corpus / "c.jsonl.gz").exists()
    r = runner.invoke(app, ["quarantine", "list", "--state-dir", str(state)])
    assert "c.jsonl.gz" not in r.output


def test_console_script_help():
    exe = Path(sys.executable).parent / "integrity"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("scan", "gate", "report", "quarantine", "serve"):
        assert cmd in r.stdout


def test_image_paths_outside_the_shard_need_image_root(tmp_path: Path, state_policy: Path):
    # a Parquet shard whose image column holds absolute paths to files elsewhere: refused per record
    # without --image-root, read with it (and a bad root cannot run)
    import io

    import polars as pl
    from PIL import Image, ImageDraw

    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i in range(12):
        im = Image.new("RGB", (64, 64), (20 * i, 255 - 20 * i, 90))
        ImageDraw.Draw(im).ellipse((4 * i % 40, 8, 4 * i % 40 + 20, 28), fill=(250, 250, 250))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        (images / f"{i}.png").write_bytes(buf.getvalue())
        paths.append(str(images / f"{i}.png"))
    paths.append(paths[0])  # the same file twice: an exact duplicate image
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"id": [f"r{i}" for i in range(13)], "image": paths,
                  "caption": [f"picture number {i}" for i in range(13)]}).write_parquet(data / "pairs.parquet")
    common = ["--policy", str(state_policy), "--checks", "image.decode,dedup.image", "--quarantine-mode", "off"]

    r = runner.invoke(app, ["scan", str(data), "--out", str(tmp_path / "r0"), "--runner", "inline", *common])
    assert r.exit_code == 0, r.output
    f = pl.read_parquet(tmp_path / "r0" / "findings.parquet")
    refused = f.filter(pl.col("check") == "image.decode")
    assert refused.height == 13 and "--image-root" in refused["detail"][0]

    r = runner.invoke(app, ["scan", str(data), "--out", str(tmp_path / "r1"), "--runner", "inline",
                            "--image-root", str(images), *common])
    assert r.exit_code == 0, r.output
    f = pl.read_parquet(tmp_path / "r1" / "findings.parquet")
    assert f.filter(pl.col("check") == "image.decode").height == 0
    dup = f.filter(pl.col("check") == "dedup.image")
    assert dup["record_id"].to_list() == ["r12"] and json.loads(dup["detail"][0])["representative"] == "r0"

    r = gate(str(data), "--out", str(tmp_path / "r2"), "--image-root", str(tmp_path / "nowhere"), *common)
    assert r.exit_code == 3 and "nowhere" in r.output


def test_the_console_script_keeps_what_it_loaded_out_of_the_collectors_walks(tmp_path: Path, state_policy: Path):
    """`integrity` (flows.cli:main, its own process) freezes the objects loaded before the scan and
    those left at its end (gc.freeze: the collector stops walking them); the app invoked inside
    another program (here, the test's process) freezes nothing of its host's."""
    import gc

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"plain text number {i}"}) + "\n" for i in range(20)))
    args = ["scan", str(corpus), "--out", str(tmp_path / "run"), "--policy", str(state_policy), "--runner", "inline"]
    before = gc.get_freeze_count()
    assert runner.invoke(app, args).exit_code == 0
    assert gc.get_freeze_count() == before
    code = ("import atexit, gc, sys; from flows.cli import main; "
            "atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
            f"sys.argv = ['integrity', *{[*args[:2], '--out', str(tmp_path / 'run2'), *args[4:]]!r}]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split("frozen")[-1]) > 10_000
