"""integrity.engine.redact: secrets masked in what checks read and in everything the scan writes."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa

from flows.build import build_spec
from integrity.engine import pipeline
from integrity.engine.evidence import excerpt_of
from integrity.engine.redact import mask_batch, mask_frame, mask_json_text, mask_secrets, opaque_token_spans

AWS = "AKIAQ7RZ4TXW2MPLK9VB"
KEY_LINES = ["MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi8Xq2WZlJ0fKc4hN7pQ1rLsT5uVw",
             "Yx9Za2Bc4De6Fg8Hi0Jk2Lm4No6Pq8Rs0Tu2Vw4Xy6Za8Bc0De2Fg4Hi6Jk8Lm0No2P"]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_LINES) + "\n-----END RSA PRIVATE KEY-----"


def test_mask_keeps_length_and_four_characters():
    text = f"deploy with key {AWS} please"
    masked = mask_secrets(text)
    assert len(masked) == len(text) and AWS not in masked
    assert masked.startswith("deploy with key AKIA\u2022") and masked.endswith(" please")
    key = mask_secrets("key:\n" + PEM + "\nend")
    assert not any(line in key for line in KEY_LINES) and key.endswith("\nend")
    assert mask_secrets("nothing secret here") == "nothing secret here"


def test_fingerprinted_masks_keep_different_secrets_different():
    other = "AKIAQ7RZ4TXW2MPLK9VC"
    a, b = mask_secrets(f"k {AWS}", fingerprint=True), mask_secrets(f"k {other}", fingerprint=True)
    assert a != b and AWS not in a and other not in b
    assert a == mask_secrets(f"k {AWS}", fingerprint=True)


def test_json_details_are_masked_inside_their_strings():
    detail = json.dumps({"caption": f'DB_PASSWORD="Xk39fjs0dkfj3kdkKD" and {PEM}', "n": 3})
    masked = mask_json_text(detail)
    doc = json.loads(masked)  # still valid JSON: escapes were never cut
    assert doc["n"] == 3 and "Xk39fjs0dkfj3kdkKD" not in masked
    assert not any(line in masked for line in KEY_LINES)


def test_mask_batch_and_frame_touch_only_secret_rows():
    batch = pa.record_batch({"record_id": ["1", "2"], "row": [0, 1],
                             "text": pa.array([f"x {AWS} y", "plain"], pa.large_string())})
    out = mask_batch(batch)
    assert out.schema == batch.schema
    assert AWS not in out.column("text")[0].as_py() and len(out.column("text")[0].as_py()) == len(f"x {AWS} y")
    assert out.column("text")[1].as_py() == "plain"
    clean = pa.record_batch({"record_id": ["1"], "text": pa.array(["plain"], pa.large_string())})
    assert mask_batch(clean) is clean
    frame = pl.DataFrame({"record_id": [AWS], "sample_text": [f"a {AWS}"], "detail": ['{"k": 1}']})
    masked = mask_frame(frame)
    assert masked["record_id"][0] == AWS  # keys are left alone
    assert AWS not in masked["sample_text"][0] and masked["detail"][0] == '{"k": 1}'


OPAQUE = "zVfK3pQ9wLx2BmR7tY4nHc8JdS6gA1eU5oI0"  # random, of no format privacy.secret knows


def test_outputs_mask_tokens_of_unknown_formats_but_keep_hashes_and_words():
    text = f"key {OPAQUE} and tok_live_Q7v2Lm9Np4Rs8Tv1Wz3X, lower akiaq7rz4txw2mplk9vb"
    masked = mask_secrets(text)
    assert len(masked) == len(text)
    assert OPAQUE not in masked and "Q7v2Lm9Np4Rs8Tv1Wz3X" not in masked and "q7rz4txw2mplk9vb" not in masked
    keep = ("AbstractSingletonProxyFactoryBean, release_notes_2024_v2, https://github.com/Abc123/Xyz456Repository, "
            "/usr/lib/x86_64-linux-gnu/libQt5Widgets.so.5, commit 9f86d08 (short hashes), Win32/Win64, "
            "http://www.w3.org/TR/xmlschema11-2/#regexs, 4111 1111 1111 1111, 2024-05-17T10:22:03Z")
    assert opaque_token_spans(keep) == [] and mask_secrets(keep) == keep
    # display text is masked liberally: hex keys and hashes of 128+ bits, base64 with '/', UUIDs
    liberal = {"sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ok": "9f86d081884c7d659a2f",
               "key 5c0f2b9e7e3c49a1b0d7a6f4e2c1d3b5 here": "5c0f2b9e7e3c49a1b0d7",
               "id 3f2504e0-4f89-41d3-9a0c-0305e82c3301 there": "3f2504e0-4f89-41d3",
               "b64 q8Zt/3kPw+Lr9XvYb2Nc7Hs1Jd0=, ok": "q8Zt/3kPw+Lr9XvYb2Nc",
               "letters pQzRtXwKvBnMjHgFdSaLcY please": "pQzRtXwKvBnMjHgFdSaL"}
    for text, value in liberal.items():
        masked = mask_secrets(text)
        assert value not in masked and len(masked) == len(text), text
    # identifiers (no white space: record ids, cluster ids) stay as the contract needs them
    ids = json.dumps({"cluster": "exact-757aef3e66aed6a4", "representative": "rec_Q7v2Lm9Np4Rs8Tv1Wz3X"})
    assert mask_json_text(ids) == ids
    # written frames and JSON details too; what checks read is not changed (duplicates compare it)
    frame = mask_frame(pl.DataFrame({"sample_text": [f"a {OPAQUE} b"], "detail": [json.dumps({"excerpt": f"key {OPAQUE} here"})]}))
    assert OPAQUE not in frame["sample_text"][0] and OPAQUE not in frame["detail"][0]
    batch = pa.record_batch({"text": pa.array([f"x {OPAQUE} y"], pa.large_string())})
    assert mask_batch(batch) is batch
    # a vocabulary column (single tokens, no white space) a check declares: each token judged alone
    vocab = pl.DataFrame({"vh": [1, 2, 3], "vt": [OPAQUE.lower(), "configuration", "9f86d081884c7d659a2feaa0c55ad015"]})
    assert mask_frame(vocab)["vt"].to_list() == vocab["vt"].to_list()  # not declared: identifiers
    masked = mask_frame(vocab, tokens=("vt",))["vt"].to_list()
    assert masked[1] == "configuration" and OPAQUE.lower() not in masked[0] and masked[2].startswith("9f86\u2022")


def test_short_and_prefixed_tokens_are_masked_while_words_with_numbers_stay():
    """16-19 character tokens, hex keys of 64+ bits, hex after a word prefix (``CANARY-`` and
    12 hex digits), letters no language strings together, base64 cut short by slashes; names
    made of words (vowels and letter pairs as English has them) and paths stay readable."""
    tokens = ["w1fjyLiTnLoC2exJ", "K2eUxbyASQj1ZkEH", "f2a25c3081c0344e", "9aa14858136147c9c5f5a6d3",
              "CANARY-ced69386da03", "canary_7046ac628acad2ac", "Session-41851119450b", "Apikey_8b4c66a9ebbb",
              "RumzasUqmbjpBuXt", "JlZJMSW/1WnYFL/2JnqWo/yH", "7PSR74OINKGCJBCHGIUAAYEZEXCHUGKOFYODHWEV"]
    for t in tokens:
        text = f"The value {t} was found in the logs."
        masked = mask_secrets(text)
        assert t not in masked and masked.startswith(f"The value {t[:4]}\u2022") and len(masked) == len(text), t
    words = ("QtQuickControls2 Curve448-Goldilocks linux-image-6.1.0-47-powerpc64le "
             "MSMediaServerRegistrar1 deadbeefcafebabe release-20240115 build_1234567890123 commit 9f86d08 "
             "binutils-powerpc64le-linux-gnu /usr/lib/x86_64-linux-gnu/libQt5Widgets.so.5 libxml-libxml-perl")
    assert opaque_token_spans(words) == []
    # the column-wise pre-filter of written frames lets these rows through to the same test
    frame = mask_frame(pl.DataFrame({"detail": [json.dumps({"text": f"token {t} seen"}) for t in tokens]}))
    assert not any(t in d for t in tokens for d in frame["detail"].to_list())


def test_a_value_glued_to_a_secret_name_is_masked_from_8_characters():
    for t in ("CANARY-379f5762", "PLANTED_SECRET_bf08407d", "canary:1b106f8f54cc", "my_api_key-9ad14fc730"):
        text = f"The note mentions {t} in passing."
        assert t not in mask_secrets(text) and t not in mask_secrets(t, record_text=True), t
        frame = mask_frame(pl.DataFrame({"detail": [json.dumps({"text": text})]}))
        assert t not in frame["detail"][0], t
    for keep in ("token_type = bearer", "secret-2024 release", "the key.value pair", "tokenizer_v2.bin",
                 "See secret_santa_2023 notes", "api_key.txt", "password-protected"):
        assert mask_secrets(keep) == keep, keep


def test_a_canarys_value_counts_from_6_characters_glued_or_not_and_a_secrets_after_a_space():
    cases = {"The canary CANARY6d4f39 fired.": "CANARY6d4f39", "Seen PLANTED-15be0b today.": "PLANTED-15be0b",
             "A honeytoken_837261 leaked.": "honeytoken_837261", "Id CANARY-83749201 only.": "CANARY-83749201",
             "Call it with token ny2Y48qCtK now.": "ny2Y48qCtK", "my password k1vuKJYvc6 here": "k1vuKJYvc6",
             "the token XqHqbLpZta here": "XqHqbLpZta", "a secret x3GOTBcWdb again": "x3GOTBcWdb"}
    for text, t in cases.items():
        masked = mask_secrets(text)
        assert t not in masked and len(masked) == len(text), text
        frame = mask_frame(pl.DataFrame({"detail": [json.dumps({"text": text})]}))
        assert t not in frame["detail"][0], text
    # after a space only the value is masked: the prose keeps its word
    assert mask_secrets("Call it with token ny2Y48qCtK now.").startswith("Call it with token ny2Y\u2022")
    for keep in ("canary_yellow feathers", "planted trees", "Planted 2000 trees", "canary in the coal mine",
                 "token IDs", "the secret ingredient", "password reset link", "canary-2024 release",
                 "token JavaScript", "the secret McDonalds recipe"):
        assert mask_secrets(keep) == keep, keep


def test_a_record_that_is_one_bare_token_is_masked_in_excerpts_but_identifiers_stay():
    bare = "VlkxsdSKzMrpa2muAP793bejNUiu63uU"
    assert mask_secrets(bare) == bare  # an identifier (a record id, a cluster id) stays as it is
    assert bare not in mask_secrets(bare, record_text=True)
    assert mask_secrets("Goldilocks", record_text=True) == "Goldilocks"
    field, excerpt, _ = excerpt_of({"text": bare}, {}, 200)
    assert field == "text" and excerpt == bare[:4] + "\u2022" * (len(bare) - 4)
    # an examples.parquet written before this masking, as the console re-masks it on reading
    old = pl.DataFrame({"record_id": [bare], "excerpt": [bare], "detail": [json.dumps({"representative": bare})]})
    masked = mask_frame(old)
    assert masked["excerpt"][0] == excerpt and masked["record_id"][0] == bare and bare in masked["detail"][0]


def test_outputs_mask_values_assigned_to_secret_names_even_when_too_regular_to_report():
    """Values the detector lets pass for precision (identifier-shaped, capitals only, no digit)
    are still masked where the scan writes them."""
    cases = {
        "password=PLANTED_SECRET_3F8FA2D8EBEB1DBA": "PLANTED_SECRET_3F8FA2D8EBEB1DBA",  # identifier-shaped
        'secret = "CANARY_ARYSIXTGYGLVMT43"': "CANARY_ARYSIXTGYGLVMT43",
        "token=sk_zkMNJeakJlKxubgbyawercZW": "sk_zkMNJeakJlKxubgbyawercZW",  # no digit
        "API_TOKEN=CANARY_SDMITXIL57GQMJM2SCGOUXJ9": "CANARY_SDMITXIL57GQMJM2SCGOUXJ9",  # capitals and digits
    }
    for text, value in cases.items():
        masked = mask_secrets(text)
        assert value not in masked and len(masked) == len(text), text
    # checks read them masked too (they cache what they read, e.g. a trigger check's vocabulary),
    # fingerprinted: two different values stay different, the same value stays the same
    texts = ["password=PLANTED_SECRET_3F8FA2D8EBEB1DBA", "password=PLANTED_SECRET_3F8FA2D8EBEB1DBB",
             "password=PLANTED_SECRET_3F8FA2D8EBEB1DBA"]
    seen = mask_batch(pa.record_batch({"text": pa.array(texts, pa.large_string())})).column("text").to_pylist()
    assert not any("PLANTED_SECRET_3F8FA2D8EBEB1DB" in t for t in seen)
    assert seen[0] != seen[1] and seen[0] == seen[2] and [len(t) for t in seen] == [len(t) for t in texts]
    # references and descriptions stay readable
    for text in ("password = ${DB_PASSWORD}", "token_type = bearer", "api_key: os.getenv(API_KEY)",
                 "x=1&page_size=20&sort_order=ascending_by_date"):
        assert mask_secrets(text) == text


def _corpus(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    lines = [{"id": i, "text": f"deploy with key {AWS} please"} for i in range(1, 6)]
    lines += [{"id": 100 + i, "text": f"unrelated line {i} about cats, dogs and the river number {i * 7}"}
              for i in range(55)]
    lines.append({"id": 999, "text": "the deploy key:\n" + PEM})
    lines.append({"id": 998, "text": "the deploy key:\n" + PEM})
    (src / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return src


def _all_text(path: Path) -> str:
    if path.suffix == ".parquet":
        return json.dumps(pl.read_parquet(path).to_dicts(), default=str)
    return path.read_text(errors="replace")


def test_duplicate_excerpts_and_cached_drift_samples_hold_no_secret(tmp_path: Path):
    """Issue 13, defects 1 and 2: dedup.exact examples in report.html/examples.parquet showed
    the key in full; distribution.drift's cached sample_text held a private key's body."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"state_dir: {tmp_path / 'state'}\nquarantine: {{mode: mark}}\n")
    spec = build_spec(str(_corpus(tmp_path)), out=tmp_path / "run", policy=policy,
                      checks="dedup.exact,dedup.near,privacy.secret,distribution.drift")
    pipeline.run_scan(spec, workers=1)
    examples = pl.read_parquet(spec.out / "examples.parquet")
    assert "dedup.exact" in examples["check"].to_list()
    assert any("AKIA\u2022" in e for e in examples["excerpt"].to_list())
    drift = list((tmp_path / "state").rglob("features/distribution.drift.parquet"))
    assert drift and "sample_text" not in pl.read_parquet(drift[0]).columns  # ids and rows only, no text
    files = [p for p in [*spec.out.rglob("*"), *(tmp_path / "state").rglob("*")] if p.is_file()
             and p.suffix in (".parquet", ".html", ".json")]
    for p in files:
        text = _all_text(p)
        assert AWS not in text, p
        assert not any(line in text for line in KEY_LINES), p


def test_hostile_runs_are_masked_in_linear_time():
    """A record of one enormous run (word-like pieces joined by '-', a chain of short parts,
    a name followed by many parts) must not stall a scan: every rule is linear in the run.
    (Two rules written first took seconds at 8,000 pieces and grew with the square.)"""
    import random
    import time

    rng = random.Random(0)
    word = lambda: "".join(rng.choice("aeiou" if i % 2 else "bcdfghlmnprst") for i in range(6))  # noqa: E731
    runs = ["-".join(word() for _ in range(40_000)), "-".join("a1" for _ in range(100_000)),
            "token_" + "_".join("ab" for _ in range(100_000))]
    started = time.perf_counter()
    for run in runs:
        masked = mask_secrets(f"start {run} end", record_text=True)
        assert len(masked) == len(run) + 10
    # linear: about a second for all three here; the quadratic rules took hours
    assert time.perf_counter() - started < 60
