"""Property-based fuzzing of the connectors, image decoding and the policy loader (hypothesis).

Run as a program, in a child process under a memory cap, by ``test_fuzz.py``:
a crash (segfault, abort) or a blown cap then fails one test instead of killing
the test run, and the input that did it is left in ``--last`` to reproduce.

    python -m tests.connectors.fuzz_targets --examples 40 --last /tmp/last.bin

Properties: for random and mutated Parquet, JSONL (plain, .gz, .zst), CSV,
WebDataset tar and Hugging Face ``save_to_disk`` inputs, reading a shard
either yields normalized record batches or raises ``ShardReadError`` (listing
may raise ``SourceError``); decoding any image bytes returns a verdict and
never raises; loading any YAML policy returns a ``Policy`` or raises
``PolicyError``. Anything else is a bug.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import resource
import sys
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import ShardReader, ShardReadError, list_shards
from connectors.errors import SourceError
from connectors.images import decode_image
from integrity.policy import PolicyError, load_policy
from connectors.schema import ColumnMapping
from tests.peak_memory import own_peak_rss_mib

LAST: Path | None = None  # where each input is written before it is tried

# byte strings that tend to reach the corners of parsers
TOKENS = [b"[" * 6000, b"{" * 300, b"\x00", b'"', b"\n", b"\r\n", b",", b"\\", b"\xff\xfe", b"\xef\xbb\xbf",
          b"1e99999", b"-0", b"null", b'"\\ud800"', b"\x1f\x8b", b"(\xb5/\xfd", b"PAR1", b"ustar"]


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


def _jsonl() -> bytes:
    rows = [{"id": 1, "text": "hello world"}, {"id": "2", "text": "wörld \u2028 line", "meta": [1, {"a": None}]},
            {"id": 3, "text": None, "label": True}]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _csv() -> bytes:
    return b'id,text,label\n1,hello,0\n2,"quoted, ""x""\nline",1\n3,,\n'


def _parquet() -> bytes:
    buf = io.BytesIO()
    table = pa.table({"id": ["a", "b", "c"], "text": ["one", "two", None], "label": [0, 1, 2]})
    pq.write_table(table, buf, row_group_size=2)
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for key, payload in (("s1.png", _png()), ("s1.txt", b"a red square"), ("s2.txt", b"no image")):
            info = tarfile.TarInfo(key)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _arrow_stream() -> bytes:
    sink = io.BytesIO()
    table = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


SEEDS: dict[str, bytes] = {
    "s.jsonl": _jsonl(), "s.jsonl.gz": gzip.compress(_jsonl()),
    "s.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl()), "s.csv": _csv(),
    "s.csv.gz": gzip.compress(_csv()), "s.parquet": _parquet(), "s.tar": _tar(),
}
HF_STATE = json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "f"}).encode()


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with byte flips, token insertions and an optional cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS) | st.binary(max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def shard_input() -> st.SearchStrategy[tuple[str, bytes]]:
    """(file name, bytes): a mutated seed, or random bytes under a shard suffix."""
    seeded = st.sampled_from(sorted(SEEDS)).flatmap(lambda n: st.tuples(st.just(n), mutated(SEEDS[n])))
    noise = st.tuples(st.sampled_from(sorted(SEEDS)), st.binary(max_size=2048))
    return seeded | noise


def _remember(data: bytes) -> None:
    if LAST is not None:
        LAST.write_bytes(data)


def read_everything(path: Path) -> int:
    """Rows read from every shard of ``path``; the only errors allowed are the connectors' own."""
    try:
        refs = list_shards(str(path))
    except SourceError:
        return 0
    rows = 0
    for ref in refs:
        try:
            for batch in ShardReader(ref, ColumnMapping(), batch_size=64):
                rows += batch.num_rows
                if "image" in batch.schema.names:
                    for data in batch.column("image").to_pylist():
                        decode_image(data)
        except ShardReadError as exc:  # a blown memory cap must not pass as a bad shard
            assert "MemoryError" not in str(exc), str(exc)
    return rows


def check_shard(name: str, data: bytes) -> None:
    _remember(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        read_everything(path)


def check_hf(arrow: bytes, state: bytes) -> None:
    _remember(arrow + b"\n--state.json--\n" + state)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "hf"
        d.mkdir()
        (d / "data-00000-of-00001.arrow").write_bytes(arrow)
        (d / "state.json").write_bytes(state)
        (d / "dataset_info.json").write_text("{}")
        read_everything(d)


def check_image(data: bytes) -> None:
    _remember(data)
    decode_image(data)  # returns a verdict for anything; raising is the bug


YAML_SCALARS = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=20)
POLICY_KEYS = st.sampled_from(["version", "state_dir", "batch_size", "checks", "verdict", "quarantine", "report",
                               "limits", "enabled", "severity", "options", "warn", "critical", "mode", "dir",
                               "privacy.secret", "dedup.exact", "max_json_depth", "critical_share"]) | st.text(max_size=8)
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(POLICY_KEYS, inner, max_size=4), max_leaves=20)


def check_policy(data: bytes) -> None:
    _remember(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_bytes(data)
        try:
            load_policy(path)
        except PolicyError:
            pass


def policy_text() -> st.SearchStrategy[bytes]:
    """Structured YAML over the policy's keys, random text, nested flow YAML, and random bytes."""
    dumped = st.dictionaries(POLICY_KEYS, YAML_VALUES, max_size=5).map(lambda d: yaml.safe_dump(d).encode())
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300).map(str.encode)
    nested = st.integers(1, 5000).map(lambda n: b"checks: " + b"[" * n + b"]" * n + b"\n")
    return dumped | text | nested | st.binary(max_size=300)


def run(examples: int, derandomize: bool) -> None:
    """Run every property with ``examples`` examples each."""
    conf = settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                    suppress_health_check=list(HealthCheck), print_blob=True)
    targets = [
        given(shard_input())(lambda inp: check_shard(*inp)),
        given(mutated(_arrow_stream()), mutated(HF_STATE) | st.binary(max_size=64))(check_hf),
        given(mutated(_png()) | st.binary(max_size=512))(check_image),
        given(policy_text())(check_policy),
    ]
    for target in targets:
        conf(target)()


def main(argv: list[str] | None = None) -> int:
    global LAST
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=40, help="examples per property")
    ap.add_argument("--random", action="store_true", help="new random inputs (default: derandomized, as in CI)")
    ap.add_argument("--last", type=Path, default=None, help="write each input here before trying it")
    ap.add_argument("--memory-gib", type=float, default=3.0, help="address-space cap of this process")
    args = ap.parse_args(argv)
    cap = int(args.memory_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))  # past it allocations fail: a MemoryError, not the host
    LAST = args.last
    run(args.examples, derandomize=not args.random)
    peak = own_peak_rss_mib()
    print(f"fuzz ok: {args.examples} examples per property, peak RSS {peak} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
