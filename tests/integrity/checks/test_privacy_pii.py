"""privacy.pii: validated personal-data detection, one finding per record."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integrity.checks import registry
from integrity.checks._national_ids import bsn_ok, verhoeff_ok
from integrity.checks.base import FINDING_COLUMNS, CheckConfigError
from integrity.checks._pii_financial import IBAN_LENGTHS, card_brand, iban_ok
from integrity.checks.privacy_pii import PiiCheck

DEBIAN = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "debian" / "descriptions.parquet"


# -- helpers ------------------------------------------------------------------


def batch(*texts, field="text", **cols):
    """A normalized batch: one record per text (ids r0, r1, ...), plus optional extra columns."""
    data = {field: list(texts), **cols}
    n = len(next(iter(data.values())))
    rows = [{"record_id": f"r{i}", "row": i, **{k: v[i] for k, v in data.items()}} for i in range(n)]
    schema = pa.schema(
        [("record_id", pa.string()), ("row", pa.int64())] + [(k, pa.large_string()) for k in data]
    )
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def run(b, **options):
    out = PiiCheck(options).process_batch(b).findings
    assert out is not None
    return {r["record_id"]: {**r, "detail": json.loads(r["detail"])} for r in out.iter_rows(named=True)}


def scan(text, **options):
    """Matches in one text, as (kind, matched substring, score, match dict)."""
    found = run(batch(text), **options)
    if not found:
        return []
    return [(m["kind"], text[m["start"] : m["end"]], m["score"], m) for m in found["r0"]["detail"]["matches"]]


def kinds_of(text, **options):
    return {k for k, *_ in scan(text, **options)}


def luhn_complete(body: str) -> str:
    """``body`` plus the Luhn check digit (independent of the module's implementation)."""
    for c in "0123456789":
        digits = body + c
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError


def make_iban(cc: str, bban: str) -> str:
    num = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    return f"{cc}{98 - num % 97:02d}{bban}"


# -- interface ----------------------------------------------------------------


def test_registry_and_class_attributes():
    cls = registry.get("privacy.pii")
    assert cls is PiiCheck
    assert cls.corpus_level is False
    assert set(cls.requires) == {"text", "prompt", "response", "caption"}
    assert set(cls.default_options["kinds"]) >= {"email", "phone", "ipv4", "ipv6", "credit_card", "iban", "us_ssn"}


def test_findings_frame_shape_and_one_row_per_record():
    b = batch("mail a.b@gmail.com and c.d@yahoo.co.uk, card 4539 1488 0343 6467", "nothing here", None)
    out = PiiCheck().process_batch(b).findings
    assert dict(out.schema) == FINDING_COLUMNS
    assert out["record_id"].to_list() == ["r0"]
    assert out["severity"].to_list() == [None]
    d = json.loads(out["detail"][0])
    assert d["n_matches"] == 3
    assert d["kinds"] == ["credit_card", "email"]
    assert out["score"][0] == pytest.approx(0.95)  # max over matches


def test_unknown_option_and_kind_rejected():
    with pytest.raises(CheckConfigError):
        PiiCheck({"nope": 1})
    with pytest.raises(CheckConfigError):
        PiiCheck({"kinds": ["email", "dna"]})
    with pytest.raises(CheckConfigError):
        PiiCheck({"scores": {"email": 2.0}})


# -- e-mail -------------------------------------------------------------------


def test_email_true_positives_and_masking():
    text = "Contact: John <john.doe+news@mail.example-corp.de>, or jane_o'x? no: jane.smith@uni.ac.uk."
    found = scan(text)
    assert [s for k, s, *_ in found] == ["john.doe+news@mail.example-corp.de", "jane.smith@uni.ac.uk"]
    for kind, value, score, m in found:
        assert kind == "email" and score == pytest.approx(0.5)
        assert m["preview"].startswith(value[0] + "***@")
        assert value.split("@")[0] not in json.dumps(m)  # local part never stored


@pytest.mark.parametrize(
    "text",
    ["icon foo@2x.png and bar@3x.webp", "style.css@media", "user@localhost", "see @property", "a@b", "npm i pkg@1.2.3"],
)
def test_email_near_misses(text):
    assert "email" not in kinds_of(text)


def test_real_tlds_that_look_like_extensions_are_kept():
    assert kinds_of("kilobyte@angband.pl and rul@kalgan.cc") == {"email"}


def test_example_domains_are_low_score_or_dropped():
    (kind, _, score, m), = scan("write to someone@example.com")
    assert m["example"] is True and score == pytest.approx(0.1)
    assert scan("write to someone@example.com", include_examples=False) == []


# -- phone --------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["+44 20 7946 0958", "(415) 555-2671", "415-867-5309", "+33 1 23 45 67 89", "020 7946 0958", "+4915112345678",
     "0049 30 1234567", "06 12 34 56 78"],
)
def test_phone_true_positives(number):
    found = scan(f"reach us at {number} today")
    assert [(k, s) for k, s, *_ in found] == [("phone", number)]
    assert found[0][3]["preview"].endswith(number[-2:])
    assert number[:-2] not in found[0][3]["preview"]


@pytest.mark.parametrize(
    "text",
    [
        "released on 2024-01-02",
        "from 2024-01-02 to 2024-03-04 1234",
        "on 02-03-2024 1234 people came",  # a date, though 0 + 11 digits in groups looks like a national number
        "ISBN 0-306-40615-2",
        "version 10.20.30.40",
        "id 12345678901234567890",
        "total 5551234567 units",  # bare digits without a phone keyword
        "1.2.3.4.5.6.7",
        "+12",
        "range 1990-2000 2010-2020",
    ],
)
def test_phone_near_misses(text):
    assert "phone" not in kinds_of(text)


def test_bare_phone_digits_need_a_keyword_and_keyword_raises_score():
    (kind, value, score, _), = scan("phone: 4158675309")
    assert (kind, value) == ("phone", "4158675309") and score == pytest.approx(0.6)


def test_fictional_555_01xx_is_example():
    (_, _, score, m), = scan("dial 202-555-0143")
    assert m["example"] is True and score < 0.2


def test_phone_followed_by_other_numbers_is_trimmed():
    text = "tel 415-867-5309 2021"
    (kind, value, *_), = scan(text)
    assert (kind, value) == ("phone", "415-867-5309")


# -- payment cards ----------------------------------------------------------


def test_card_brands_and_luhn():
    visa = luhn_complete("453914880343646")
    mc2 = luhn_complete("222100000000000")
    amex = luhn_complete("37956482170341")
    assert card_brand(visa) == "visa" and card_brand(mc2) == "mastercard" and card_brand(amex) == "amex"
    text = (
        f"card {visa[:4]} {visa[4:8]} {visa[8:12]} {visa[12:]}, "
        f"mc {mc2[:4]}-{mc2[4:8]}-{mc2[8:12]}-{mc2[12:]}, amex {amex[:4]} {amex[4:10]} {amex[10:]}"
    )
    found = scan(text)
    assert [k for k, *_ in found] == ["credit_card"] * 3
    assert [m["brand"] for *_, m in found] == ["visa", "mastercard", "amex"]
    for (_, value, score, m), full in zip(found, (visa, mc2, amex)):
        assert score == pytest.approx(0.95)
        assert m["preview"] == "\u2026" + full[-4:]
        assert full not in json.dumps(m) and full[:12] not in json.dumps(m)


def test_card_near_misses():
    visa = luhn_complete("453914880343646")
    bad_luhn = visa[:-1] + str((int(visa[-1]) + 1) % 10)
    no_prefix = luhn_complete("123456789012345")  # valid Luhn, no network starts with 1
    wrong_len = luhn_complete("51000000000000")  # Mastercard prefix, 15 digits
    for text in (
        f"card {bad_luhn}",
        f"card {no_prefix}",
        f"card {wrong_len}",
        f"card {visa}1",  # part of a longer number
        "card 4539-1488 0343 6467",  # mixed separators
        f"order {visa}",  # bare number after an identifier word
    ):
        assert "credit_card" not in kinds_of(text), text


def test_bare_card_without_context_scores_lower():
    visa = luhn_complete("453914880343646")
    (_, _, score, m), = scan(f"value {visa} end")
    assert m["bare"] is True and score == pytest.approx(0.57)
    (_, _, score, _), = scan(f"visa {visa} end")
    assert score == pytest.approx(0.95)


def test_test_card_numbers_are_examples():
    (_, _, score, m), = scan("use 4111 1111 1111 1111 in the sandbox")
    assert m["example"] is True and score < 0.2


# -- IBAN ---------------------------------------------------------------------


def test_iban_valid_compact_and_grouped():
    nl = make_iban("NL", "ABNA0417164300")
    fr = make_iban("FR", "20041010050500013M02606")
    fr_grouped = " ".join(fr[i : i + 4] for i in range(0, len(fr), 4))
    assert iban_ok(nl) and iban_ok(fr) and len(fr) == IBAN_LENGTHS["FR"]
    found = scan(f"pay {nl} or {fr_grouped}. thanks")
    assert [(k, s) for k, s, *_ in found] == [("iban", nl), ("iban", fr_grouped)]
    assert [m["country"] for *_, m in found] == ["NL", "FR"]
    assert all(score == pytest.approx(0.9) for _, _, score, _ in found)
    assert found[0][3]["preview"] == "NL\u2026" + nl[-4:]


def test_iban_near_misses():
    nl = make_iban("NL", "ABNA0417164300")
    wrong_check = nl[:2] + f"{(int(nl[2:4]) + 1) % 100:02d}" + nl[4:]
    assert not iban_ok(wrong_check)
    for text in (f"iban {wrong_check}", f"iban {nl}9", f"iban {nl[:-1]}", "code XX12ABCD1234567890"):
        assert "iban" not in kinds_of(text), text


# -- national ids ---------------------------------------------------------------


def test_us_ssn():
    (kind, value, score, m), = scan("SSN: 536-22-1234")
    assert (kind, value) == ("us_ssn", "536-22-1234")
    assert score == pytest.approx(0.945) and m["preview"] == "***-**-1234"
    for bad in ("000-12-3456", "666-12-3456", "923-12-3456", "536-00-1234", "536-22-0000", "536-22-12345", "2024-01-02"):
        assert "us_ssn" not in kinds_of(f"number {bad} here"), bad
    (_, _, score, m), = scan("e.g. 123-45-6789")
    assert m["example"] is True and score < 0.2


def test_uk_nino():
    assert [(k, s) for k, s, *_ in scan("NI number AB 12 34 56 C")] == [("uk_nino", "AB 12 34 56 C")]
    assert [(k, s) for k, s, *_ in scan("ref CE123456D")] == [("uk_nino", "CE123456D")]
    for bad in ("QQ123456C", "GB123456A", "AB123456E", "AB 1234 56 C", "AO123456A"):
        assert "uk_nino" not in kinds_of(f"nino {bad}"), bad


def test_spanish_dni_and_nie():
    assert [(k, s) for k, s, *_ in scan("DNI 45678912S")] == [("es_dni", "45678912S")]
    assert [(k, s) for k, s, *_ in scan("NIE Y7654321G")] == [("es_dni", "Y7654321G")]
    assert "es_dni" not in kinds_of("DNI 45678912T")  # wrong control letter
    (_, _, score, m), = scan("DNI 12345678Z")
    assert m["example"] is True and score < 0.2


def test_dutch_bsn_needs_context_and_11_test():
    assert bsn_ok("111222333") and bsn_ok("123456782") and not bsn_ok("123456789")
    assert [(k, s) for k, s, *_ in scan("BSN: 123456782")] == [("nl_bsn", "123456782")]
    assert "nl_bsn" not in kinds_of("BSN: 123456789")
    assert "nl_bsn" not in kinds_of("count 123456782 rows")


def test_aadhaar_verhoeff():
    assert verhoeff_ok("2363") and not verhoeff_ok("2364")  # the textbook example
    body = "23456789012"
    number = next(body + c for c in "0123456789" if verhoeff_ok(body + c))
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    grouped = f"{number[:4]} {number[4:8]} {number[8:]}"
    (_, value, score, _), = scan(f"Aadhaar {number}")
    assert value == number and score == pytest.approx(0.85)
    (_, value, score, _), = scan(f"id {grouped} issued")
    assert value == grouped and score == pytest.approx(0.85 * 0.7)
    assert "in_aadhaar" not in kinds_of(f"Aadhaar {wrong}")
    assert "in_aadhaar" not in kinds_of(f"count {number}")  # bare 12 digits without context


# -- IP addresses ---------------------------------------------------------------


def test_ipv4():
    found = scan("connect to 81.2.69.160:8080 then 200.49.219.180.")
    assert [(k, s) for k, s, *_ in found] == [("ipv4", "81.2.69.160"), ("ipv4", "200.49.219.180")]
    assert all(score == pytest.approx(0.3) for _, _, score, _ in found)
    assert found[0][3]["preview"] == "81.*.*.*"


@pytest.mark.parametrize(
    "text",
    ["version 81.2.69.160", "v1.2.3.4", "999.1.1.1", "1.2.3.4.5", "OID 1.3.6.1.4.1", "section 8.2.2.1", "01.02.03.04",
     "256.1.1.1"],
)
def test_ipv4_near_misses(text):
    assert "ipv4" not in kinds_of(text, exclude_private_ip=False)


def test_private_ips_excluded_by_default_else_low():
    text = "lan 192.168.1.20 and 10.0.0.7 and fe80::1"
    assert scan(text) == []
    found = scan(text, exclude_private_ip=False)
    assert [k for k, *_ in found] == ["ipv4", "ipv4", "ipv6"]
    assert all(m["private"] and score == pytest.approx(0.1) for _, _, score, m in found)


def test_ipv6():
    found = scan("dns 2001:4860:4860::8888 and 2a00:1450:4001:81b::200e.")
    assert [(k, s) for k, s, *_ in found] == [("ipv6", "2001:4860:4860::8888"), ("ipv6", "2a00:1450:4001:81b::200e")]
    for text in ("use DBD::Pg", "at 12:30:45", "Foo::Bar::baz", "mac 00:1a:2b:3c:4d:5e", "dead::beef"):
        assert "ipv6" not in kinds_of(text, exclude_private_ip=False), text


# -- fields, nulls, options ---------------------------------------------------------


def test_offsets_point_at_the_match_in_each_field():
    b = batch(
        "prompt mail x.y@gmail.com",
        None,
        "",
        field="prompt",
        response=["ok, my card is 4539 1488 0343 6467", "tel +44 20 7946 0958", None],
        caption=[None, None, None],
    )
    found = run(b)
    assert set(found) == {"r0", "r1"}
    texts = {"r0": {"prompt": "prompt mail x.y@gmail.com", "response": "ok, my card is 4539 1488 0343 6467"},
             "r1": {"response": "tel +44 20 7946 0958"}}
    seen = {}
    for rid, f in found.items():
        for m in f["detail"]["matches"]:
            seen[(rid, m["field"])] = texts[rid][m["field"]][m["start"] : m["end"]]
            assert m["redact"] is True
    assert seen == {
        ("r0", "prompt"): "x.y@gmail.com",
        ("r0", "response"): "4539 1488 0343 6467",
        ("r1", "response"): "+44 20 7946 0958",
    }
    assert found["r0"]["detail"]["kinds"] == ["credit_card", "email"]


def test_non_ascii_text_offsets_are_character_offsets():
    text = "Müller — café ☕ écrit à müller.hans@web.de"
    (_, value, _, m), = scan(text)
    assert value == "müller.hans@web.de"  # text[start:end], so start/end count characters
    assert m["start"] == text.index("müller.hans") and m["end"] == len(text)
    assert m["preview"] == "m***@web.de"


def test_empty_and_all_null_batches():
    assert PiiCheck().process_batch(batch()).findings.height == 0
    assert PiiCheck().process_batch(batch(None, None)).findings.height == 0
    only_ids = pa.RecordBatch.from_pylist([{"record_id": "a", "row": 0}])
    assert PiiCheck().process_batch(only_ids).findings.height == 0


def test_options_kinds_min_score_scores_and_cap():
    text = "a@gmail.com 81.2.69.160 " + " ".join(f"u{i}@gmail.com" for i in range(30))
    f = run(batch(text))["r0"]["detail"]
    assert f["n_matches"] == 32 and len(f["matches"]) == 20
    assert "ipv4" in f["kinds"]  # counted, but the cap keeps the 20 strongest (e-mails, 0.5 > 0.3)
    assert all(m["kind"] == "email" for m in f["matches"])
    assert kinds_of(text, kinds=["ipv4"]) == {"ipv4"}
    assert kinds_of(text, min_score=0.4) == {"email"}
    (_, _, score, _), = scan("x 81.2.69.160", scores={"ipv4": 0.7})
    assert score == pytest.approx(0.7)
    f = run(batch(text), max_matches=5)["r0"]["detail"]
    assert len(f["matches"]) == 5 and f["n_matches"] == 32


def test_record_id_falls_back_to_row():
    b = pa.RecordBatch.from_pylist(
        [{"record_id": None, "row": 7, "text": "x a@gmail.com"}],
        schema=pa.schema([("record_id", pa.string()), ("row", pa.int64()), ("text", pa.large_string())]),
    )
    assert PiiCheck().process_batch(b).findings["record_id"].to_list() == ["7"]


# -- real data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def debian():
    if not DEBIAN.exists():
        pytest.skip(f"benchmark data not found at {DEBIAN} (../shared absent)")
    return pq.read_table(DEBIAN)


def _scan_column(table, column):
    n = table.num_rows
    t = pa.table(
        {
            "record_id": pa.array([str(i) for i in range(n)]),
            "row": pa.array(range(n), pa.int64()),
            "text": table[column].cast(pa.large_string()),
        }
    )
    check = PiiCheck()
    return pl.concat([check.process_batch(b).findings for b in t.to_batches(max_chunksize=8192)])


def test_debian_maintainers_yield_emails(debian):
    out = _scan_column(debian, "maintainer")
    with_at = sum("@" in m for m in debian["maintainer"].to_pylist())
    assert out.height >= 0.99 * with_at
    assert with_at > 60000
    details = [json.loads(d) for d in out["detail"].head(2000)]
    assert all(d["kinds"] == ["email"] for d in details)


def test_debian_descriptions_have_no_high_risk_pii(debian):
    out = _scan_column(debian, "text")
    kinds = {k for d in out["detail"] for k in json.loads(d)["kinds"]}
    assert kinds <= {"email", "ipv4", "ipv6", "phone"}
    assert out.height < 0.005 * debian.num_rows


# -- hand-written fixtures (independent of benchmarks/privacy.py's generator) ----------------

HAND_WRITTEN_PII = [
    ("in_aadhaar", "Aadhaar number: {}", "491837265017"),
    ("in_aadhaar", "aadhaar card {} (verified)", "7352-0418-8930"),
    ("in_aadhaar", "UIDAI: {}", "6284 1957 3043"),
    ("us_ssn", "SSN: {}", "536.22.8745"),
    ("us_ssn", "social security number {}", "536 22 8745"),
    ("us_ssn", "ssn {}", "536228745"),
    ("uk_nino", "National Insurance number: {}", "jg103759a"),
    ("uk_nino", "NI no {}", "JG 103759 A"),
    ("es_dni", "DNI: {}", "4827193E"),
    ("es_dni", "nif {}", "73920518j"),
    ("es_dni", "NIE {}", "y4829301m"),
    ("iban", "Überweisung an {} bitte", "FR14 2004 1010 0505 0001 3M02 606"),
    ("iban", "IBAN {}", "NL91ABNA0417164300"),
    ("phone", "call me on {} after six", "+34 612 345 678"),
]

# IBAN-shaped near misses (bad check digits): neither an IBAN nor a phone nor an Aadhaar number
NEAR_MISS_IBANS = [
    "Bitte überweisen Sie auf DE44 5001 0517 5407 3249 32.",
    "IBAN: GB82 WEST 1234 5698 7654 33",
    "account DE89370400440532013001 (typo?)",
    "ES91 2100 0418 4502 0005 1333 is what the form said",
]


@pytest.mark.parametrize("kind,template,value", HAND_WRITTEN_PII, ids=[f"{k}-{i}" for i, (k, *_) in enumerate(HAND_WRITTEN_PII)])
def test_hand_written_pii_found_at_warn(kind, template, value):
    text = template.format(value)
    found = [(k, s, score) for k, s, score, _ in scan(text)]
    assert (kind, value) in [(k, s) for k, s, _ in found], found
    assert max(score for k, s, score in found if k == kind) >= 0.5


@pytest.mark.parametrize("text", NEAR_MISS_IBANS)
def test_near_miss_ibans_claim_nothing_at_warn(text):
    assert [(k, s) for k, s, score, _ in scan(text) if score >= 0.5] == []


@pytest.mark.parametrize(
    "text",
    [
        "order 536.22.8745 shipped",  # dotted 3-2-4 without "SSN": any number
        "build ab123456c passed",  # lower-case NINO shape without context
        "sku 4827193e",  # lower-case/7-digit DNI shape without context
        "DNI: 4827193A",  # wrong control letter
        "Aadhaar 491837265018",  # Verhoeff fails
        "git clone https://ci:Zk8qLm2vX9wR@git.corp.net/team/repo.git",  # URL credentials, not an e-mail
    ],
)
def test_hand_written_pii_near_misses_below_warn(text):
    assert [(k, s) for k, s, score, _ in scan(text) if score >= 0.5] == []
