"""What the written-output masking misses, and what it costs readers.

1. Fuzz: random tokens of many alphabets and lengths, each in a dozen contexts (prose, code,
   JSON, URLs, a line of its own, a record that is the bare token), through
   :func:`integrity.engine.redact.mask_secrets` as the scan applies it to record text it quotes. A token *leaks* when it is still in the output in full.
   Printed per alphabet and per length.
2. Readability: the Debian package descriptions (``/work/shared/data/debian``) through the same
   function: the share of their characters masked, the share of descriptions touched, and the
   masked runs most often seen (what a reader loses).

    python benchmarks/masking.py [--tokens 300] [--debian 64000]

Run it against another checkout (``PYTHONPATH=/other/tree``) for a before/after comparison.
"""
from __future__ import annotations

import argparse
import base64
import random
import string
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from integrity.engine.redact import MASK, mask_secrets

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CONTEXTS = [
    "The key for the staging cluster is {t} and it expires soon.",
    "curl -s -H 'Authorization: {t}' https://api.example.net/v2/jobs",
    '{{"service": "billing", "credential": "{t}", "region": "eu-west-1"}}',
    "Visit https://portal.example.com/activate?code={t}&lang=en to finish.",
    "Paste this:\n{t}\ninto the form.",
    'He wrote "{t}" on the whiteboard.',
    "(see {t}).",
    "value: {t}",
    "  - {t}",
    "token {t}, then press enter",
    "The build id {t} failed twice.",
    "export FOO={t}",
    "{t}",  # a record that is one bare token
]


def _alphabets(rng: random.Random) -> dict[str, callable]:
    def pick(chars: str):
        return lambda n: "".join(rng.choice(chars) for _ in range(n))

    b64 = lambda n: base64.b64encode(rng.randbytes(n * 3 // 4 + 1)).decode()[:n]  # noqa: E731
    b64url = lambda n: base64.urlsafe_b64encode(rng.randbytes(n * 3 // 4 + 1)).decode()[:n]  # noqa: E731
    return {
        "alnum62": pick(string.ascii_letters + string.digits),
        "lower36": pick(string.ascii_lowercase + string.digits),
        "upper32": pick(string.ascii_uppercase + "234567"),
        "letters52": pick(string.ascii_letters),
        "hex": pick("0123456789abcdef"),
        "HEX": pick("0123456789ABCDEF"),
        "base64": b64,
        "base64url": b64url,
        # a word, '-' or '_', then hex (``CANARY-3f9a...``): the hex part carries the secret
        "prefixed_hex": lambda n: rng.choice(["canary", "CANARY", "Token", "probe", "SECRET"]) + rng.choice("-_")
        + "".join(rng.choice("0123456789abcdef") for _ in range(max(12, n - 7))),
    }


def fuzz(n_per_cell: int, seed: int = 0) -> tuple[dict, dict, int]:
    """(leaks per alphabet, leaks per length, tokens tried)."""
    rng = random.Random(seed)
    by_alpha: Counter = Counter()
    by_len: Counter = Counter()
    tried_alpha: Counter = Counter()
    tried_len: Counter = Counter()
    for name, gen in _alphabets(rng).items():
        for n in (16, 20, 24, 32, 40, 48, 64):
            for i in range(n_per_cell):
                t = gen(n)
                text = CONTEXTS[i % len(CONTEXTS)].format(t=t)
                tried_alpha[name] += 1
                tried_len[n] += 1
                if t in mask_secrets(text, record_text=True):
                    by_alpha[name] += 1
                    by_len[n] += 1
    for _ in range(n_per_cell):  # UUIDs
        t = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        tried_alpha["uuid"] += 1
        by_alpha["uuid"] += t in mask_secrets(CONTEXTS[_ % len(CONTEXTS)].format(t=t), record_text=True)
    return ({k: (by_alpha[k], tried_alpha[k]) for k in tried_alpha},
            {k: (by_len[k], tried_len[k]) for k in tried_len}, sum(tried_alpha.values()))


def readability(limit: int) -> None:
    import polars as pl

    path = DATA / "debian" / "descriptions.parquet"
    if not path.exists():
        print(f"readability: {path} not found, skipped")
        return
    texts = pl.read_parquet(path, columns=["text"])["text"].head(limit).to_list()
    t0 = time.process_time()
    masked_chars = total = touched = 0
    runs: Counter = Counter()
    for t in texts:
        m = mask_secrets(t, record_text=True)
        total += len(t)
        if m != t:
            touched += 1
            k = sum(ch == MASK for ch in m) - t.count(MASK)
            masked_chars += k
            for w in t.split():
                if w not in m:
                    runs[w[:60]] += 1
    cpu = time.process_time() - t0
    print(f"readability: {len(texts):,} Debian descriptions, {total:,} characters: {masked_chars:,} masked "
          f"({masked_chars / max(1, total):.5%}), {touched} descriptions touched ({touched / max(1, len(texts)):.3%}); "
          f"{cpu:.1f} CPU-s")
    for w, c in runs.most_common(25):
        print(f"   {c:5d}  {w}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=300, help="tokens per alphabet and length")
    ap.add_argument("--debian", type=int, default=64000, help="Debian descriptions read (0: skip)")
    a = ap.parse_args()
    import integrity

    print(f"masking from {Path(integrity.__file__).parent}")
    by_alpha, by_len, n = fuzz(a.tokens)
    leaked = sum(v[0] for v in by_alpha.values())
    print(f"fuzz: {leaked} of {n} tokens left in full ({leaked / n:.2%})")
    print("  per alphabet: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in by_alpha.items()))
    print("  per length:   " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(by_len.items())))
    if a.debian:
        readability(a.debian)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
