"""privacy.secret: credentials found, validated, and never written out in full."""
from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integrity.checks import registry
from integrity.checks.base import FINDING_COLUMNS, CheckConfigError
from integrity.checks.privacy_secret import SecretCheck

DEBIAN = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "debian" / "descriptions.parquet"

_rnd = random.Random(20240601)
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


def rand(n, alphabet=ALNUM):
    # each token mixes cases and digits, like real ones
    while True:
        s = "".join(_rnd.choice(alphabet) for _ in range(n))
        if alphabet != ALNUM or (any(c.isdigit() for c in s) and any(c.isupper() for c in s) and any(c.islower() for c in s)):
            return s


def b64url(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


JWT = b64url({"alg": "HS256", "typ": "JWT"}) + "." + b64url({"sub": "42", "iat": 1516239022}) + "." + rand(43, ALNUM + "-_")
PEM_BODY = "\n".join(rand(64, ALNUM + "+/") for _ in range(4))
RSA_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"

# kind -> (text around the secret, the secret itself)
POSITIVES = {
    "aws_access_key_id": "AKIA" + rand(16, string.ascii_uppercase + "234567"),
    "aws_secret_access_key": rand(40, ALNUM + "/+"),
    "gcp_api_key": "AIza" + rand(35, ALNUM + "-_"),
    "github_token": "ghp_" + rand(36),
    "gitlab_token": "glpat-" + rand(20),
    "slack_token": "xoxb-" + rand(12, string.digits) + "-" + rand(13, string.digits) + "-" + rand(24),
    "slack_webhook": "https://hooks.slack.com/services/T" + rand(8, string.ascii_uppercase) + "/B"
    + rand(8, string.ascii_uppercase) + "/" + rand(24),
    "stripe_key": "sk_live_" + rand(24),
    "sendgrid_key": "SG." + rand(22) + "." + rand(43),
    "openai_key": "sk-proj-" + rand(48),
    "google_oauth": "ya29." + rand(60),
    "npm_token": "npm_" + rand(36),
    "twilio_api_key": "SK" + rand(32, HEX),
    "jwt": JWT,
    "private_key": RSA_KEY,
    "secret_assignment": rand(24, ALNUM + "#%!"),
}
CONTEXT = {
    "aws_secret_access_key": 'aws_secret_access_key = "{}"\n',
    "secret_assignment": 'DB_PASSWORD="{}"\n',
}


def batch(*texts, field="text", **cols):
    data = {field: list(texts), **cols}
    n = len(next(iter(data.values())))
    rows = [{"record_id": f"r{i}", "row": i, **{k: v[i] for k, v in data.items()}} for i in range(n)]
    schema = pa.schema([("record_id", pa.string()), ("row", pa.int64())] + [(k, pa.large_string()) for k in data])
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def run(b, **options):
    out = SecretCheck(options).process_batch(b).findings
    return {r["record_id"]: {**r, "detail_json": r["detail"], "detail": json.loads(r["detail"])} for r in out.iter_rows(named=True)}


def scan(text, **options):
    found = run(batch(text), **options)
    if not found:
        return []
    return [(m["kind"], text[m["start"] : m["end"]], m["score"], m) for m in found["r0"]["detail"]["matches"]]


def leaks(detail_json: str, secret: str, window: int = 8) -> bool:
    """Whether any ``window``-character piece of ``secret`` beyond its first 4 characters is in the detail."""
    return any(secret[i : i + window] in detail_json for i in range(1, max(2, len(secret) - window + 1)))


# -- interface ----------------------------------------------------------------


def test_registry_and_attributes():
    assert registry.get("privacy.secret") is SecretCheck
    assert SecretCheck.corpus_level is False
    assert set(SecretCheck.requires) == {"text", "prompt", "response", "caption"}
    with pytest.raises(CheckConfigError):
        SecretCheck({"kinds": ["github_token", "bogus"]})
    with pytest.raises(CheckConfigError):
        SecretCheck({"min_entropy": 3.0, "whatever": 1})


# -- every kind: found, offsets right, never leaked -------------------------------


@pytest.mark.parametrize("kind", sorted(POSITIVES))
def test_true_positive_each_kind(kind):
    secret = POSITIVES[kind]
    text = "config follows: " + CONTEXT.get(kind, "token {} here\n").format(secret) + "end."
    found = run(batch(text))
    assert set(found) == {"r0"}
    f = found["r0"]
    assert kind in f["detail"]["kinds"], f["detail"]
    (m,) = [m for m in f["detail"]["matches"] if m["kind"] == kind]
    assert text[m["start"] : m["end"]] == secret
    assert m["length"] == len(secret)
    assert m["redact"] is True
    assert m["preview"] == secret[:4] + "\u2026"
    assert not m.get("example")
    assert secret not in f["detail_json"]
    assert not leaks(f["detail_json"], secret)
    assert f["score"] >= 0.7
    assert f["severity"] is None


def test_one_row_per_record_with_max_score_and_frame_shape():
    text = f"token {POSITIVES['github_token']} and {POSITIVES['jwt']} and key {POSITIVES['private_key']}"
    out = SecretCheck().process_batch(batch(text, "clean text")).findings
    assert dict(out.schema) == FINDING_COLUMNS
    assert out["record_id"].to_list() == ["r0"]
    assert out["score"][0] == pytest.approx(1.0)
    d = json.loads(out["detail"][0])
    assert d["kinds"] == ["github_token", "jwt", "private_key"] and d["n_matches"] == 3


# -- documented examples and near-misses ---------------------------------------------


def test_aws_documentation_examples_are_info_level():
    text = 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'
    found = scan(text)
    assert sorted(k for k, *_ in found) == ["aws_access_key_id", "aws_secret_access_key"]
    assert all(m["example"] is True and score <= 0.2 for _, _, score, m in found)
    assert scan(text, include_examples=False) == []


@pytest.mark.parametrize(
    "text",
    [
        'password = "changeme"',
        'password = "xxxxxxxxxxxxxxxxxxxxxxxx"',
        'api_key = "<your-api-key-goes-here>"',
        "secret_token: ${SECRET_TOKEN_FROM_THE_ENV}",
        "token: {{ secrets.GITHUB_TOKEN_VALUE_1 }}",
        'password = "aaaaaaaaaaaaaaaaaaaaaaaa"',
        "password = os.environ['DB_PASSWORD_2024']",
        'password = get_password_from_vault(name="prod1")',
        "passwordHashAlgorithm = sha256WithRSAEncryption",
        'bypass_mode = "Ab12Cd34Ef56Gh78Ij90"',
        'if password == "Ab12Cd34Ef56Gh78Ij90":',
        'client_secret = "my_Client_Secret_Name"',
        "password: /usr/local/etc/secret-file-2024.txt",
    ],
)
def test_assignment_near_misses(text):
    assert "secret_assignment" not in {k for k, *_ in scan(text)}, scan(text)


def test_assignment_respects_entropy_and_length_options():
    value = "aB3dE5fG7hJ9kL1mN3pQ"
    assert [k for k, *_ in scan(f'token = "{value}"')] == ["secret_assignment"]
    assert scan(f'token = "{value}"', min_secret_length=24) == []
    assert scan(f'token = "{value}"', min_entropy=4.5) == []
    assert scan('token = "a1a1a1a1b2b2b2b2c3c3"') == []  # entropy 1.6 bits/char


@pytest.mark.parametrize(
    "text",
    [
        "we use the sk-learn package and risk-management-framework-2024-edition",
        "ghp_short123 and glpat-short",
        "AKIA is the prefix of AWS key ids",
        "eyJub3Rqc29uIGF0IGFsbA.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",  # header decodes, but not to JSON
        b64url({"typ": "JWT"}) + "." + b64url({"sub": "1"}) + ".c2lnbmF0dXJl",  # JSON header without alg
        "slack xoxb-not-a-real-token-here",
        "SKU SK-1234 and SKIP",
    ],
)
def test_token_near_misses(text):
    assert scan(text) == []


def test_jwt_header_must_be_json_with_alg():
    not_json = "eyJ" + b64url(b'{"alg": HS256 broken')[3:]
    assert scan(f"{not_json}.{b64url({'sub': '1'})}.c2lnbmF0dXJl") == []
    (kind, value, score, m), = scan(f"Authorization: Bearer {JWT}.")
    assert kind == "jwt" and value == JWT and m["alg"] == "HS256" and score == pytest.approx(0.8)
    unsigned = b64url({"alg": "none"}) + "." + b64url({"sub": "1"}) + "."
    (kind, _, score, _), = scan(f"token {unsigned} end")
    assert kind == "jwt" and score == pytest.approx(0.48)


def test_private_key_header_without_body_is_low():
    (kind, _, score, m), = scan("Keys look like -----BEGIN RSA PRIVATE KEY----- ... -----END RSA PRIVATE KEY-----")
    assert kind == "private_key" and m["has_body"] is False and score == pytest.approx(0.3)


def test_private_key_variants_and_span():
    openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY + "\n-----END OPENSSH PRIVATE KEY-----"
    encrypted = (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
        + rand(32, "0123456789ABCDEF") + "\n\n" + PEM_BODY + "\n-----END RSA PRIVATE KEY-----"
    )
    pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n" + PEM_BODY + "\n-----END PGP PRIVATE KEY BLOCK-----"
    for key, score in ((openssh, 1.0), (encrypted, 0.85), (pgp, 1.0)):
        text = f"here:\n{key}\nthanks"
        (kind, value, got, m), = scan(text)
        assert kind == "private_key" and value == key and got == pytest.approx(score)
        assert m["has_body"] is True


def test_gcp_service_account_json_is_one_match():
    body = "\\n".join(rand(64, ALNUM + "+/") for _ in range(3))
    sa = json.dumps({"type": "service_account", "project_id": "demo"})[:-1] + (
        ', "private_key": "-----BEGIN PRIVATE KEY-----\\n' + body + '\\n-----END PRIVATE KEY-----\\n", "client_email": "x"}'
    )
    found = scan(sa)
    assert [k for k, *_ in found] == ["gcp_service_account_key"]
    kind, value, score, m = found[0]
    assert value.startswith('"private_key"') and value.endswith('-----END PRIVATE KEY-----\\n"')
    assert score == pytest.approx(1.0)


def test_stripe_test_keys_lower_and_token_beats_assignment():
    (kind, _, score, m), = scan(f'STRIPE_KEY="sk_test_{rand(24)}"')
    assert kind == "stripe_key" and m["mode"] == "test" and score == pytest.approx(0.38)
    (kind, value, score, _), = scan(f'github_token = "{POSITIVES["github_token"]}"')
    assert kind == "github_token" and value == POSITIVES["github_token"]


# -- fields, nulls, options -----------------------------------------------------------


def test_multiple_fields_and_nulls():
    gh, sk = POSITIVES["github_token"], POSITIVES["stripe_key"]
    b = batch(
        f"please use {gh}",
        None,
        None,
        field="prompt",
        response=["sure.", f"the key is {sk}", None],
    )
    found = run(b)
    assert set(found) == {"r0", "r1"}
    (m0,) = found["r0"]["detail"]["matches"]
    assert m0["field"] == "prompt" and f"please use {gh}"[m0["start"] : m0["end"]] == gh
    (m1,) = found["r1"]["detail"]["matches"]
    assert m1["field"] == "response" and f"the key is {sk}"[m1["start"] : m1["end"]] == sk


def test_kinds_and_min_score_options():
    text = f"{POSITIVES['github_token']} {POSITIVES['jwt']}"
    assert {k for k, *_ in scan(text, kinds=["jwt"])} == {"jwt"}
    assert {k for k, *_ in scan(text, min_score=0.9)} == {"github_token"}
    assert {k for k, *_ in scan(text, scores={"jwt": 0.99})} == {"github_token", "jwt"}


def test_match_list_is_capped():
    text = " ".join("ghp_" + rand(36) for _ in range(25))
    d = run(batch(text), max_matches=10)["r0"]["detail"]
    assert d["n_matches"] == 25 and len(d["matches"]) == 10


def test_empty_batch_and_batch_without_text():
    assert SecretCheck().process_batch(batch()).findings.height == 0
    assert SecretCheck().process_batch(pa.RecordBatch.from_pylist([{"record_id": "a", "row": 0}])).findings.height == 0


# -- real data ------------------------------------------------------------------------


def test_debian_descriptions_have_no_secrets():
    if not DEBIAN.exists():
        pytest.skip(f"benchmark data not found at {DEBIAN} (../shared absent)")
    t = pq.read_table(DEBIAN)
    n = t.num_rows
    tb = pa.table(
        {"record_id": t["id"], "row": pa.array(range(n), pa.int64()), "text": t["text"].cast(pa.large_string())}
    )
    check = SecretCheck()
    hits = sum(check.process_batch(b).findings.height for b in tb.to_batches(max_chunksize=8192))
    assert hits == 0


# -- hand-written fixtures (independent of benchmarks/privacy.py's generator) ----------------
# Literal strings typed the way they appear in READMEs, shell history, CI files and configs.

HAND_WRITTEN = [
    ("hf_token", "from huggingface_hub import login; login(token='{}')", "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"),
    ("hf_token", "HF org token {} (read scope)", "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"),
    ("basic_auth", "curl -sS -u deploy:{} https://nexus.corp.example.net/repo", "Tr0ub4dor&3xQ"),
    ("basic_auth", "curl --user 'jenkins:{}' -X POST https://ci.internal/job/build", "hT9#vB2qLw8z"),
    ("auth_header", 'curl -H "Authorization: Bearer {}" https://api.corp.net/v1/me', "q8ZkW2mRx7LpT4vN9cB3yH6dJ1sF0gKe"),
    ("basic_auth", "Authorization: Basic {}", "c3ZjLWJvdDpRN2tMbTJ2WDl3UjR0WnA="),  # svc-bot:Q7kLm2vX9wR4tZp
    ("url_credentials", "SQLALCHEMY_URL=postgresql://etl:{}@warehouse.prod:5432/dw", "Kx9vLq2WmZ7r"),
    ("azure_ad_client_secret", 'AZURE_CLIENT_SECRET="{}"', "Wq78Q~dK2.pLm9_zR4tVx~Hn6bJc0-FyS8gQe1uT"),
    ("discord_token", "bot.run('{}')", "MTAyNzM4NDU2NzM5NDgzNzY0OA.GhT2kQ.Zk3mQ9xVb7LpR2tW4nC8yH6dJ1sF0gKe5uTaIo"),
    ("pypi_token", "[pypi]\nusername = __token__\npassword = {}",
     "pypi-AgEIcHlwaS5vcmcCJGQ3ZjE4YTlkLTRkNmYtNGUyMi04YjQzLWE1ZjdjOWUwMmQxNgACKlszLCI5ZjY4"),
    ("telegram_bot_token", "bot = telebot.TeleBot('{}')", "5829301746:AAFq7Zk2mVx9LpR4tW1nB8cY3dH6jE0sQuI"),
    ("azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=mlcorpus;AccountKey={};EndpointSuffix=core.windows.net",
     "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRg=="),
    ("sourcegraph_token", "src login with {}", "sgp_a1b2c3d4e5f60718_9f8e7d6c5b4a39281706f5e4d3c2b1a098f7e6d5"),
    ("notion_token", "notion = Client(auth='{}')", "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"),
    ("sumologic_key", "SUMO_ACCESS_ID={}", "suQ7kLm2vX9wR4"),
    ("flyio_token", "fly deploy --access-token {}", "fo1_Zk3mQ9xVb7LpR2tW4nC8yH6dJ1sF0gKe5uTaIoPqXwY"),
    ("vault_token", "VAULT_TOKEN={}",
     "hvb.AAAAAQK3mQ9xVb7LpR2tW4nC8yH6dJ1sF0gKe5uTaIoPqXwYzE3rD7vB1nM4cL8kJ2hG6fS0aQ9wE5tY3uI7oP1lK4jH8gF2dS6aZ0xC9vB3n"
     "M7qW1eR5tY9uI3oP7aS1dF5gH9jK3lZ7xC1vB5nM9qW3eR7tY"),
    ("slack_token", "SLACK_BOT_TOKEN={}", "xoxb-2848204817-5719300274816-Hq3ZkLm9VxP2wRt7YbN4cD8f"),
    ("basic_auth", "machine api.heroku.com\n  login ops@corp.net\n  password {}", "e7Lq2WmZ9rKx4v"),
    ("basic_auth", "mysqldump -u backup -p{} --all-databases > all.sql", "Vb8!qZ2kLm4w"),
    ("basic_auth", "docker login -u ci-bot -p {} registry.corp.net", "Mw3kQ9zLx2vR7t"),
    ("basic_auth", "PGPASSWORD={} psql -h db -U etl", "Rt5zKq8mWx2L"),
    ("basic_auth", "<datasource><password>{}</password></datasource>", "Hq4vLz9kWm2x"),
    ("basic_auth", 'curl -s -u ":{}" https://search.corp.net:9200/_cat/indices', "Zq8vLm2kWx9r"),
    ("basic_auth", "curl -u '{}:' https://api.payments.corp/v1/charges", "Jt6qWm3zLx8vKp2R"),
    ("basic_auth", "curl -X POST https://ci.corp.net/job/nightly/build \\\n  -H 'Accept: */*' \\\n  --user svc:{}",
     "Lm7xQ2vZk9Rw"),
    ("basic_auth", "curl --user ops:'{}' -X DELETE https://registry.corp.net/v2/x", "Hq4vLz9kWm2xR"),
    ("basic_auth", "curl -u admin:{} http://10.0.0.7:15672/api/queues", "Gr8$day2024x"),
    ("auth_header", "curl -H 'Authorization: {}' https://hooks.corp.net/deploy", "7c1e2b9a-44d0-4f3e-9a21-6b8d0c3e5f17"),
    ("auth_header", 'curl -H "X-Acme-ApiKey: {}" https://api.acme.test/v2/orders', "9d0f4c2a-1b7e-4e6a-8c3d-2f5b7a9e1c04"),
    ("discord_webhook", "WEBHOOK = '{}'",
     "https://discord.com/api/webhooks/1027384567394837648/Zk3mQ9xVb7LpR2tW4nC8yH6dJ1sF0gKe5uTaIoPqXwYzE3rD7vB1nM4cL8kJ2hG6fS0a"),
]

# each must stay below warn (score < 0.5): placeholders, published examples, names of secrets
HAND_WRITTEN_NEGATIVES = [
    "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "SLACK_BOT_TOKEN=xoxb-12345-abcd234",
    "export SLACK_TOKEN=xoxb-1234567890-0987654321-abcdefghijklmnopqrstuvwx",
    'LLM_SECRET_NAME = "prod-llm-gateway-key-v2"',
    'publicToken = "pk-web-checkout-widget-2023"',
    'TOKEN_ENDPOINT_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"',
    "curl -u $NEXUS_USER:$NEXUS_PASS https://nexus.corp.example.net/repo",
    "curl --user admin:admin http://localhost:8081",
    "Authorization: Bearer <YOUR_TOKEN>",
    'headers={"Authorization": "Bearer " + token}',
    "postgresql://user:password@localhost:5432/db",
    "HF_TOKEN=hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "TELEGRAM_TOKEN=110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",  # the Bot API docs' example
    "AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw==",  # Azurite's published development key
    "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345",
    '"nextPageToken": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0ZDRtZRIFEJr6ARgB"',
    "pipeline_token_count = 4096",
    'token_type = "refresh_token_v2"',
    'SECRET_KEY_PATH = "/etc/app/keys/signing-2024.pem"',
    "stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'",  # Stripe's docs key (test mode)
    "GITHUB_TOKEN=ghp_Zk3mQ9xVb7LpR2tW",  # a truncated token: a provider prefix on a body its format rejects
    "mysql -u root -p",  # prompts for the password
    # Discord's shape, but the first part is not a base64 user id
    "SESSION=MWFiY2RlZmdoaWprbG1ub3Bx.GhT2kQ.Zk3mQ9xVb7LpR2tW4nC8yH6dJ1sF0gKe5uTaIo",
    "AccountName=x;AccountKey=c2hvcnQta2V5LW5vdC1hLXJlYWwtb25lMTIz",  # decodes to 27 bytes, not 64
    'curl -u ":" https://search.corp.net:9200',
    'curl -H "X-Api-Key: $ACME_KEY" https://api.acme.test/v2/orders',
    "curl -u ops:$(cat /run/secrets/ops) https://registry.corp.net",
    "docker login -u $CI_REGISTRY_USER -p $CI_REGISTRY_PASSWORD $CI_REGISTRY",
]


@pytest.mark.parametrize("kind,template,secret", HAND_WRITTEN, ids=[f"{k}-{i}" for i, (k, *_) in enumerate(HAND_WRITTEN)])
def test_hand_written_credentials_are_found_at_warn_or_above(kind, template, secret):
    text = template.format(secret)
    found = run(batch(text))
    assert set(found) == {"r0"}, text
    f = found["r0"]
    matched = [m for m in f["detail"]["matches"] if m["kind"] == kind]
    assert matched, f["detail"]
    assert any(text[m["start"] : m["end"]] in (secret, secret.split(":")[-1]) for m in matched), matched
    assert f["score"] >= 0.5
    assert secret not in f["detail_json"] and not leaks(f["detail_json"], secret)


@pytest.mark.parametrize("text", HAND_WRITTEN_NEGATIVES)
def test_hand_written_placeholders_and_non_secrets_stay_below_warn(text):
    assert all(score < 0.5 for _, _, score, _ in scan(text)), scan(text)


def test_scan_cli_on_hand_written_fixtures(tmp_path, state_policy):
    """`integrity scan` on a JSONL of the fixtures: severities by the default policy, nothing leaked."""
    from typer.testing import CliRunner

    from flows.cli import app

    rows = [{"id": f"p{i}", "text": t.format(s)} for i, (_, t, s) in enumerate(HAND_WRITTEN)]
    rows += [{"id": f"n{i}", "text": t} for i, t in enumerate(HAND_WRITTEN_NEGATIVES)]
    src = tmp_path / "fixtures.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["scan", str(src), "--out", str(out), "--policy", str(state_policy),
                                 "--runner", "inline", "--checks", "privacy.secret"])
    assert r.exit_code == 0, r.output
    import polars as pl

    f = pl.read_parquet(out / "findings.parquet")
    flagged = set(f.filter(pl.col("severity").is_in(["warn", "critical"]))["record_id"])
    assert flagged == {f"p{i}" for i in range(len(HAND_WRITTEN))}
    everything = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for _, _, secret in HAND_WRITTEN:
        assert secret.encode() not in everything


def test_command_line_rules_stay_linear_on_repetitive_lines():
    """Thousands of "-u" on one line without a password: a single regex spanning the line would
    backtrack quadratically (minutes); the per-occurrence search finishes at once with nothing found."""
    text = "mysql -u a " * 3000 + "\n" + "docker login -u a " * 3000 + "\n" + "machine a login " * 3000
    assert [k for k, *_ in scan(text) if k == "basic_auth"] == []
    (kind, value, _, m), = scan("x\n" * 2000 + "mysql -h db -u etl -pQz8vLm2kWx9r sales")
    assert (kind, value, m["syntax"]) == ("basic_auth", "Qz8vLm2kWx9r", "mysql -p")
