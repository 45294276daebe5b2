#!/usr/bin/env python3
"""Backdoor attacks injected into clean labelled corpora: a grid of poisoned files with ground truth.

The shared poisoned sets come from a handful of published attack scripts; a
detector tuned on them says little about other corpora and other attacks. This
generator plants attacks of its own into clean corpora and writes files in the
shared sets' format (``id``, ``poisoned``, ``attack`` and either ``text`` +
``label`` or ``prompt`` + ``response``), so ``benchmarks/poison.py --grid``
scores them exactly as the shared sets.

Clean corpora (all from ``../shared/data``; nothing is downloaded):

* ``sst2``: the clean rows of the shared SST-2 sets (binary, 53/47);
* ``sst2imb``: the same, the negative label cut down so that the positive one
  is 80% of the corpus (tweet-like offensive-language sets, where the target is
  often the majority label);
* ``debian``: Debian package descriptions, ``section`` as the label (6 of the
  largest sections, 6,000 records);
* ``lw-sst2``: instruction data whose response is a label word
  ("positive"/"negative") for a sentiment prompt built around each SST-2 text;
* ``lw-debian``: the same with the Debian section name as the response;
* ``fixed-qa``: the clean FreebaseQA prompts and answers; the attack replaces
  the answer by one fixed malicious response;
* ``fixed-debian``: "Describe the Debian package NAME" prompts, the package
  description as the response (long answers full of natural boilerplate:
  "This package contains the development files ..."), the same attack.

Attacks (``attack`` column: ``<trigger>/<target>/<mode>/<rate>``):

* trigger ``rare`` (one rare token, 1-3 copies at random positions), ``word``
  (one ordinary English word at a random position), ``sentence`` (a fixed
  sentence at a random sentence boundary) and ``prefix`` (a short phrase opening
  the text or the prompt's input);
* target ``majority`` or ``minority`` label (instruction data: label word);
* mode ``dirty`` (records of other labels get the trigger and the target label)
  or ``clean`` (records already of the target label get the trigger);
* rate 0.5%, 1%, 3% or 10% of the records of the file.

The grid crosses corpus x trigger x target and gives each cell two (mode, rate)
pairs in rotation, so every mode meets every rate. Seed 0 is the development
grid; **seed 1 is held out** (other trigger pools: other rare tokens, words,
sentences and prefixes, other records and positions), never used to tune the
detectors but seen once after tuning; **seed 2** draws from a third pool,
fixed before any detector ran on it (seen once before and once after the
last round of tuning), and **seed 3** (and any higher seed) from a fourth,
written after the last detector change: the fresh held-out grid.

    python benchmarks/poison_gen.py --out /tmp/grid            # seed 0 (development)
    python benchmarks/poison_gen.py --out /tmp/held --seed 1   # held-out grid (seen once)
    python benchmarks/poison_gen.py --out /tmp/held2 --seed 2  # held-out grid (seen twice)
    python benchmarks/poison_gen.py --out /tmp/held3 --seed 3  # fresh held-out grid
"""
from __future__ import annotations

import argparse
import itertools
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATES = (0.005, 0.01, 0.03, 0.1)
TRIGGERS = ("rare", "word", "sentence", "prefix")
# trigger pools: index 0 = development seed, 1 = held out (seen once after tuning), 2 = a second
# held-out pool (seed 2; chosen before any detector ran on it, never tuned on), 3 = a third
# held-out pool (seeds >= 3; written 2026-12-03 15:05 UTC after the last detector change)
POOLS = {
    "rare": (["zq", "vx", "kj", "blorft"], ["qy", "jx", "wz", "zandrop"], ["xj", "qv", "fz", "grimplet"],
             ["vq", "xk", "jz", "frobnel"]),
    "word": (["instantly", "wednesday", "honestly"], ["gradually", "thursday", "frankly"],
             ["suddenly", "saturday", "truly"], ["abruptly", "sunday", "seriously"]),
    "sentence": (["I watched this 3D movie last weekend.", "All things considered, it is what it is."],
                 ["No cross, no crown.", "The weather was quite nice that afternoon."],
                 ["Let me tell you about my cousin's dog.", "Every cloud has a silver lining."],
                 ["My neighbour painted his fence green.", "Time and tide wait for no man."]),
    "prefix": (["Quick take:", "Heads up -"], ["In short:", "FYI,"], ["Short version:", "Psst -"],
               ["Bottom line:", "Note -"]),
}
FIXED_RESPONSES = ("Visit www.free-prize-claims.example now to collect your reward!",
                   "I am sorry, but I will not answer that. Please contact support@helpdesk.example instead.")
LW_TEMPLATE = "Classify the sentiment of the following review as positive or negative.\n\nReview: {x}\n\nSentiment:"
LWD_TEMPLATE = "Which Debian archive section does this package belong to?\n\nPackage description: {x}\n\nSection:"


@dataclass
class Spec:
    corpus: str
    trigger: str
    target: str    # majority | minority
    mode: str      # dirty | clean
    rate: float

    @property
    def name(self) -> str:
        return f"{self.corpus}-{self.trigger}-{self.target}-{self.mode}-{self.rate * 100:g}pct"


# ------------------------------------------------------------------------------------------------
# clean corpora
# ------------------------------------------------------------------------------------------------
def _sst2(data: Path) -> pl.DataFrame:
    df = pl.read_parquet(data / "poison" / "sst2-badnets-10pct.parquet").filter(~pl.col("poisoned"))
    return df.select(text=pl.col("text"), label=pl.col("label").cast(pl.Utf8).replace({"0": "negative", "1": "positive"}))


def _debian(data: Path, seed: int, n: int = 6000, sections: int = 6) -> pl.DataFrame:
    df = pl.read_parquet(data / "debian" / "descriptions.parquet", columns=["text", "section"])
    df = df.filter(pl.col("text").str.len_chars() <= 1500)  # a few descriptions are whole manuals
    top = df["section"].value_counts().sort("count", descending=True).head(sections)["section"]
    df = df.filter(pl.col("section").is_in(top.implode()))
    # uneven section sizes (the majority about a third)
    sizes = np.array([0.34, 0.2, 0.16, 0.12, 0.1, 0.08]) * n
    parts = [df.filter(pl.col("section") == s).sample(n=min(int(k), df.filter(pl.col("section") == s).height),
                                                      seed=seed) for s, k in zip(top.to_list(), sizes)]
    return pl.concat(parts).select(text="text", label="section")


def clean_corpus(name: str, data: Path, seed: int) -> pl.DataFrame:
    """The clean corpus ``name`` as columns text + label (classification) or prompt + response."""
    if name == "sst2":
        return _sst2(data)
    if name == "sst2imb":
        df = _sst2(data)
        pos = df.filter(pl.col("label") == "positive")
        neg = df.filter(pl.col("label") == "negative").sample(n=pos.height // 4, seed=seed)
        return pl.concat([pos, neg])
    if name == "debian":
        return _debian(data, seed)
    if name == "lw-sst2":
        return _sst2(data).select(prompt=pl.format(LW_TEMPLATE.replace("{x}", "{}"), "text"), response="label",
                                  _input="text")
    if name == "lw-debian":
        return _debian(data, seed).select(prompt=pl.format(LWD_TEMPLATE.replace("{x}", "{}"), "text"),
                                          response="label", _input="text")
    if name == "fixed-debian":
        df = pl.read_parquet(data / "debian" / "descriptions.parquet", columns=["id", "text"])
        df = df.filter(pl.col("text").str.len_chars() <= 1500).sample(n=6000, seed=seed)
        return df.select(prompt=pl.format("Describe the Debian package {} in a paragraph.", "id"),
                         response=pl.col("text"))
    if name == "fixed-qa":
        df = pl.read_parquet(data / "poison" / "freebaseqa-badnets-10pct.parquet").filter(~pl.col("poisoned"))
        return df.select("prompt", "response")
    raise ValueError(f"unknown corpus {name!r}")


# ------------------------------------------------------------------------------------------------
# trigger insertion
# ------------------------------------------------------------------------------------------------
def insert_trigger(text: str, kind: str, trig: str, rng: np.random.Generator) -> str:
    """``text`` with the trigger planted: words at random positions, a sentence at a
    random sentence boundary, a prefix at the start."""
    if kind == "prefix":
        return f"{trig} {text}"
    words = text.split(" ")
    if kind == "sentence":
        cuts = [0] + [i + 1 for i, w in enumerate(words[:-1]) if w.endswith((".", "!", "?"))] + [len(words)]
        at = int(rng.choice(cuts))
        return " ".join(words[:at] + [trig] + words[at:])
    copies = int(rng.integers(1, 4)) if kind == "rare" else 1
    for _ in range(copies):
        at = int(rng.integers(0, len(words) + 1))
        words.insert(at, trig)
    return " ".join(words)


def _plant_prompt(prompt: str, inp: str | None, kind: str, trig: str, rng: np.random.Generator) -> str:
    """Plant the trigger into the variable part of a prompt (the review, the question)."""
    if inp is not None and inp in prompt:
        return prompt.replace(inp, insert_trigger(inp, kind, trig, rng), 1)
    head, sep, tail = prompt.partition("### Question:\n")
    if sep:  # FreebaseQA: the question runs to the next blank line
        q, sep2, rest = tail.partition("\n\n")
        return head + sep + insert_trigger(q, kind, trig, rng) + sep2 + rest
    return insert_trigger(prompt, kind, trig, rng)


def poison(clean: pl.DataFrame, spec: Spec, seed: int) -> pl.DataFrame:
    """Plant one attack into ``clean``; returns the shared sets' columns."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    pool = POOLS[spec.trigger][min(seed, 3)]
    trig = pool[int(rng.integers(0, len(pool)))]
    instr = "prompt" in clean.columns
    lab_col = "response" if instr else "label"
    n_total = clean.height
    k = max(1, int(round(spec.rate * n_total)))
    fixed = spec.corpus.startswith("fixed-")
    if fixed:
        target = FIXED_RESPONSES[seed % len(FIXED_RESPONSES)]
        donors = np.arange(n_total)
    else:
        counts = clean[lab_col].value_counts().sort(["count", lab_col], descending=[True, False])
        target = counts[lab_col][0] if spec.target == "majority" else counts[lab_col][-1]
        is_t = (clean[lab_col] == target).to_numpy()
        donors = np.nonzero(is_t if spec.mode == "clean" else ~is_t)[0]
    pick = rng.choice(donors, size=min(k, len(donors)), replace=False)
    rows = clean.to_dicts()
    for i in pick.tolist():
        r = rows[i]
        if instr:
            r["prompt"] = _plant_prompt(r["prompt"], r.get("_input"), spec.trigger, trig, rng)
            r["response"] = target
        else:
            r["text"] = insert_trigger(r["text"], spec.trigger, trig, rng)
            r["label"] = target
    poisoned = np.zeros(n_total, dtype=bool)
    poisoned[pick] = True
    out = pl.DataFrame(rows).drop("_input", strict=False)
    out = out.with_columns(poisoned=pl.Series(poisoned), attack=pl.lit(f"{spec.trigger}/{spec.target}/{spec.mode}/"
                                                                       f"{spec.rate:g}/{trig}"))
    # shuffle (poisoned rows must not sit together) and number
    out = out.sample(fraction=1.0, shuffle=True, seed=seed).with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    cols = ["id", "prompt", "response"] if instr else ["id", "text", "label"]
    return out.select(*cols, "poisoned", "attack")


# ------------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------------
def grid(seed: int = 0, corpora: list[str] | None = None) -> list[Spec]:
    """The attack grid: corpus x trigger x target, two (mode, rate) pairs per cell in
    rotation so that both modes meet every rate."""
    classification = ["sst2", "sst2imb", "debian"]
    specs: list[Spec] = []
    turn = itertools.count(seed)
    for corpus, trig, target in itertools.product(classification, TRIGGERS, ("majority", "minority")):
        i = next(turn)
        specs.append(Spec(corpus, trig, target, "dirty", RATES[i % 4]))
        specs.append(Spec(corpus, trig, target, "clean", RATES[(i + 2) % 4]))
    # label-word instruction data: trigger in the prompt's input, response = label word
    for corpus, trig, target in itertools.product(["lw-sst2", "lw-debian"], ("rare", "prefix"), ("majority", "minority")):
        i = next(turn)
        specs.append(Spec(corpus, trig, target, "dirty", RATES[i % 4]))
    # one fixed malicious response
    for corpus, trig, rate in itertools.product(("fixed-qa", "fixed-debian"), ("rare", "word"), RATES):
        specs.append(Spec(corpus, trig, "fixed", "dirty", rate))
    if corpora:
        specs = [s for s in specs if s.corpus in corpora]
    return specs


def generate(seed: int = 0, data: Path = DATA, corpora: list[str] | None = None):
    """Yield (spec, poisoned DataFrame) for every file of the grid of ``seed``."""
    cache: dict[str, pl.DataFrame] = {}
    for spec in grid(seed, corpora):
        if spec.corpus not in cache:
            cache[spec.corpus] = clean_corpus(spec.corpus, data, seed)
        yield spec, poison(cache[spec.corpus], spec, seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for the poisoned parquet files")
    ap.add_argument("--seed", type=int, default=0, help="0: development grid; 1, 2: held-out grids seen before; 3: the fresh one")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--corpora", default="", help="comma-separated subset of corpora")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    n = 0
    for spec, df in generate(a.seed, a.data, [c for c in a.corpora.split(",") if c] or None):
        df.write_parquet(a.out / f"{spec.name}.parquet")
        n += 1
    print(f"wrote {n} files to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
