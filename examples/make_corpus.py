"""Write the bundled example corpus (examples/corpus/), deterministic and
license-clean: every sentence is composed here from templates.

Planted for the demo: exact duplicates across shards (with case, whitespace
and Unicode-width variations), personal data (e-mail, phone, a Luhn-valid test
card number, an IBAN), a leaked cloud key in one shard, and one malformed
JSONL shard.

    python examples/make_corpus.py   # rewrites examples/corpus/
"""
from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "corpus"
rng = random.Random(20261125)

SUBJECTS = ["The river", "A small bakery", "The city council", "Our hiking club", "The new library",
            "A local farmer", "The museum", "The school choir", "A volunteer group", "The night market",
            "The tram line", "A family of otters", "The lighthouse keeper", "The chess team", "A street artist"]
VERBS = ["opened", "restored", "celebrated", "cleaned", "planned", "painted", "measured", "announced",
         "repaired", "explored", "documented", "welcomed", "rebuilt", "studied", "shared"]
OBJECTS = ["the old bridge", "a winter festival", "twelve new benches", "the northern trail",
           "a collection of maps", "the harbour wall", "a garden of herbs", "the clock tower",
           "a recipe for rye bread", "the bird census", "a mural of the coast", "the flood records",
           "a reading room", "the solar panels", "a route for cyclists"]
TAIL_HOW = ["after a long debate", "with help from neighbours", "despite a tight budget", "to the surprise of many",
            "with careful notes", "while tourists watched", "without any fuss", "with borrowed tools",
            "after months of planning", "against all advice", "with a brass band playing", "in good spirits"]
TAIL_WHEN = ["before the first snow", "on a rainy Sunday", "in under a week", "last spring", "at dawn",
             "during the harvest", "over two weekends", "this autumn", "before the elections", "at midsummer",
             "after the storm", "in early March"]
QUESTIONS = ["How do I {v} {o}?", "What is the best way to describe {o}?", "Why would someone want {o}?",
             "Summarize the history of {o}.", "Give three tips about {o}."]


def sentence() -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAIL_HOW)} {rng.choice(TAIL_WHEN)}."


def paragraph(n: int | None = None) -> str:
    return " ".join(sentence() for _ in range(n or rng.randint(2, 5)))


def luhn_complete(prefix: str, length: int = 16) -> str:
    """A card number with a valid Luhn check digit (random, fictional)."""
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def iban(country: str = "DE", bban_len: int = 18) -> str:
    """A fictional IBAN with a valid mod-97 checksum."""
    bban = "".join(str(rng.randint(0, 9)) for _ in range(bban_len))
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def web_records(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i:04d}", "text": paragraph(), "url": f"https://example.org/{prefix}/{i}"}
            for i in range(n)]


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "web").mkdir(parents=True)
    (OUT / "instructions").mkdir()

    shared = [paragraph(4) for _ in range(6)]  # texts that will be duplicated across shards

    web1 = web_records("web1", 300)
    for i, t in enumerate(shared):
        web1[10 + i]["text"] = t
    web1[40]["text"] = "Contact the organisers at maria.lopez@riverbend-bakery.net or call +49 30 5483 2291 for tickets."
    web1[41]["text"] = f"Refunds go to IBAN {iban()}; questions to refunds@harbour-festival.org."
    with open(OUT / "web" / "web-0001.jsonl", "w", encoding="utf-8") as f:
        for r in web1:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    web2 = web_records("web2", 300)
    for i, t in enumerate(shared[:4]):  # same texts, differently cased and spaced
        web2[50 + i]["text"] = "  " + t.upper().replace(" ", "   ") + "\n"
    web2[60]["text"] = "\uff34\uff48\uff45 museum " + web2[60]["text"]  # full-width letters (NFKC folds them)
    with gzip.open(OUT / "web" / "web-0002.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in web2:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    web3 = web_records("web3", 300)
    web3[7]["text"] = ("Deploy notes: set aws_access_key_id = AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
                       + " and aws_secret_access_key = " + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/") for _ in range(40))
                       + " before running the sync job.")
    card = luhn_complete("45")
    web3[8]["text"] = (f"Pay with card {card[:4]} {card[4:8]} {card[8:12]} {card[12:]} at the kiosk; "
                       "receipts are mailed to jon.doe@lighthouse-club.org.")
    pq.write_table(pa.Table.from_pylist(web3), OUT / "web" / "web-0003.parquet", row_group_size=100)

    inst = []
    for i in range(200):
        o = rng.choice(OBJECTS)
        inst.append({"id": f"inst-{i:04d}", "prompt": rng.choice(QUESTIONS).format(v=rng.choice(VERBS), o=o),
                     "response": paragraph(3)})
    inst[20] = dict(inst[5], id="inst-0020")  # an exact duplicate pair
    pacsv.write_csv(pa.Table.from_pylist(inst), OUT / "instructions" / "qa-0001.csv")

    lines = [json.dumps(r) for r in web_records("web4", 50)]
    lines[17] = '{"id": "web4-0017", "text": "an unterminated record'
    (OUT / "web" / "web-0004.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {sum(1 for _ in OUT.rglob('*') if _.is_file())} files to {OUT}")


if __name__ == "__main__":
    main()
