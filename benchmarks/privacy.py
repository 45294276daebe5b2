"""Privacy benchmark: ``privacy.secret`` and ``privacy.pii`` on a labelled set built
from the providers' documented formats, with near-miss negatives per kind.

Every record holds one labelled item: a *positive* (a credential or a personal
identifier in the provider's / issuer's documented format, in code, config,
shell or prose) or a *near miss* of the same family (documentation
placeholders and published example keys, wrong length, bad checksum, a
non-secret name or value, an IBAN with a bad check digit, ...). Real Debian
package descriptions are added as clean text (reported separately: they are
unlabelled real text and may hold real addresses).

The records go through ``integrity scan`` (CLI, inline runner, one Parquet
shard, fresh state directory) with ``--checks privacy.pii,privacy.secret``;
a record counts as found when it has a match at ``warn`` or above (the
default policy's thresholds: score >= 0.5). It prints per family recall on
the positives, the share of near misses flagged and per-family precision
(with as many near misses as positives per family), then:

- secrets overall: precision / recall / F1 at record level (a ``privacy.secret``
  finding at warn or above on a secret positive is a hit, on anything else a
  false alarm);
- PII F1: a PII positive is a hit when a match of its kind is at warn or above;
  a false alarm is a record with a warn-level match of a kind it does not hold;
- records/s of the scan's shard stage (``summary.json`` timings, median of
  ``--repeat`` scans);
- where ``detect-secrets`` is installed (``pip install detect-secrets==1.5.0``;
  a benchmark-only tool, not a dependency of the project), the same secret
  figures for it on the same records (default plugins and filters).

    python benchmarks/privacy.py [--per-family 40] [--seed 0] [--clean 2000] [--repeat 3]

The generator here is the benchmark's own; the tests use hand-written fixtures
instead (tests/integrity/checks/test_privacy_*.py, the ``HAND_WRITTEN`` cases).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = ROOT.parent / "shared" / "data" / "debian" / "descriptions.parquet"
WARN = 0.5  # the default policy's warn threshold of both checks

UP, LO, DI = string.ascii_uppercase, string.ascii_lowercase, string.digits
B62 = UP + LO + DI
HEX = "0123456789abcdef"
B64 = B62 + "+/"
B64URL = B62 + "-_"

Gen = Callable[[random.Random], str]


def rs(r: random.Random, n: int, alphabet: str = B62) -> str:
    """A random string; base62 ones mix upper, lower and digits like real tokens."""
    while True:
        s = "".join(r.choice(alphabet) for _ in range(n))
        if alphabet != B62 or n < 8 or (any(c.isdigit() for c in s) and any(c.isupper() for c in s)
                                        and any(c.islower() for c in s)):
            return s


def b64(raw: bytes, url: bool = False) -> str:
    return (base64.urlsafe_b64encode(raw) if url else base64.b64encode(raw)).decode()


# ---------------------------------------------------------------------------
# contexts: a value in code, config, shell or prose (no keyword in half of them, so that a
# token family is found by its own format, not by the assignment detector)


def ctx(r: random.Random, value: str, env: str) -> str:
    lo = env.lower()
    forms = [
        f"{env}={value}",
        f'{lo}: "{value}"',
        f'client = connect("{value}", timeout=30)',
        f"here's the one I used yesterday {value} -- rotate it after the demo",
        f"log: 2024-03-02 10:22:41 request with credential {value} failed (403)",
        f'{{"name": "ci", "value": "{value}"}}',
    ]
    return r.choice(forms)


def luhn_digit(body: str) -> str:
    for c in DI:
        total = 0
        for i, ch in enumerate(reversed(body + c)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return c
    raise AssertionError


# --- secrets: (positive generator, near-miss generator) per family ---------------------------


def _pick(r: random.Random, *gens: Gen) -> str:
    return r.choice(gens)(r)


def aws_pos(r):
    return ctx(r, r.choice(["AKIA", "ASIA"]) + rs(r, 16, UP + "234567"), "AWS_ACCESS_KEY_ID")


def aws_neg(r):
    return _pick(r, lambda r: ctx(r, "AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID"),
                 lambda r: ctx(r, "AKIA" + "X" * 16, "AWS_ACCESS_KEY_ID"),
                 lambda r: ctx(r, "AKIA" + rs(r, 12, UP + DI), "AWS_ACCESS_KEY_ID"),
                 lambda r: f"see arn:aws:iam::{rs(r, 12, DI)}:role/{rs(r, 10, LO)} for the role")


def aws_secret_pos(r):
    v = rs(r, 40, B64)
    return r.choice([f"aws_secret_access_key = {v}", f'AWS_SECRET_ACCESS_KEY="{v}"', f"aws_secret_key: {v}"])


def aws_secret_neg(r):
    return r.choice([
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY}",
        "aws_secret_access_key = " + "x" * 40,
        'aws_secret_access_key: "<your secret access key>"',
    ])


def gh_pos(r):
    v = _pick(r, lambda r: r.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + rs(r, 36),
              lambda r: "github_pat_11" + rs(r, 20, UP + DI) + "_" + rs(r, 59))
    return ctx(r, v, "GITHUB_TOKEN")


def gh_neg(r):
    return _pick(r, lambda r: ctx(r, "ghp_" + "x" * 36, "GITHUB_TOKEN"),
                 lambda r: ctx(r, "ghp_" + rs(r, 20), "GITHUB_TOKEN"),
                 lambda r: ctx(r, "ghp_1234567890abcdefghijklmnopqrstuvwxyz", "GITHUB_TOKEN"),
                 lambda r: "export GITHUB_TOKEN=ghp_<your-token-here>")


def glpat_pos(r):
    return ctx(r, "glpat-" + rs(r, 20, B62 + "-_"), "GITLAB_TOKEN")


def glpat_neg(r):
    return r.choice([ctx(r, "glpat-xxxxxxxxxxxxxxxxxxxx", "GITLAB_TOKEN"), "token: glpat-<token>",
                     ctx(r, "glpat-" + rs(r, 8), "GITLAB_TOKEN")])


def slack_pos(r):
    v = _pick(r, lambda r: f"xoxb-{rs(r, 12, DI)}-{rs(r, 13, DI)}-{rs(r, 24)}",
              lambda r: f"xoxp-{rs(r, 11, DI)}-{rs(r, 11, DI)}-{rs(r, 12, DI)}-{rs(r, 32, HEX)}",
              lambda r: f"https://hooks.slack.com/services/T{rs(r, 8, UP + DI)}/B{rs(r, 10, UP + DI)}/{rs(r, 24)}")
    return ctx(r, v, "SLACK_TOKEN")


def slack_neg(r):
    return r.choice([ctx(r, "xoxb-12345-abcd234", "SLACK_BOT_TOKEN"), ctx(r, "xoxb-your-bot-token", "SLACK_TOKEN"),
                     ctx(r, "xoxp-0000000000-0000000000-000000000000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "SLACK_TOKEN"),
                     "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"])


def stripe_pos(r):
    return ctx(r, r.choice(["sk_live_", "rk_live_"]) + rs(r, r.choice([24, 99])), "STRIPE_SECRET_KEY")


def stripe_neg(r):
    return r.choice([ctx(r, "pk_live_" + rs(r, 24), "STRIPE_PUBLISHABLE_KEY"),
                     ctx(r, "sk_test_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY"),
                     ctx(r, "sk_live_" + "x" * 24, "STRIPE_SECRET_KEY")])


def sendgrid_pos(r):
    return ctx(r, f"SG.{rs(r, 22, B64URL)}.{rs(r, 43, B64URL)}", "SENDGRID_API_KEY")


def sendgrid_neg(r):
    return r.choice([ctx(r, "SG.xxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "SENDGRID_API_KEY"),
                     "SG.ABC is the style guide reference for section ABC", "sendgrid key goes in SG.<id>.<secret>"])


def openai_pos(r):
    v = _pick(r, lambda r: "sk-proj-" + rs(r, 74) + "T3BlbkFJ" + rs(r, 74),
              lambda r: "sk-" + rs(r, 20) + "T3BlbkFJ" + rs(r, 20),
              lambda r: "sk-ant-api03-" + rs(r, 93, B64URL) + "AA")
    return ctx(r, v, "OPENAI_API_KEY")


def openai_neg(r):
    return r.choice([ctx(r, "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "OPENAI_API_KEY"),
                     "pip install sk-video-analysis-toolkit-for-research", ctx(r, "sk-...abcd", "OPENAI_API_KEY"),
                     "use the sk-learn-compatible-transformer-pipeline here"])


def google_pos(r):
    v = _pick(r, lambda r: "AIza" + rs(r, 35, B64URL), lambda r: "ya29." + rs(r, 120, B64URL),
              lambda r: "GOCSPX-" + rs(r, 28, B64URL))
    return ctx(r, v, "GOOGLE_API_KEY")


def google_neg(r):
    return r.choice([ctx(r, "AIza" + "X" * 35, "GOOGLE_API_KEY"), ctx(r, "AIzaSy" + rs(r, 10), "GOOGLE_API_KEY"),
                     ctx(r, "ya29.your-access-token", "ACCESS_TOKEN"), ctx(r, "GOCSPX-<client-secret>", "CLIENT_SECRET")])


def npm_pos(r):
    return ctx(r, "npm_" + rs(r, 36), "NPM_TOKEN")


def npm_neg(r):
    return r.choice([ctx(r, "npm_" + "x" * 36, "NPM_TOKEN"), "run npm_config_cache_directory_override first",
                     ctx(r, "npm_" + rs(r, 16), "NPM_TOKEN")])


def jwt_token(r, alg="HS256", payload=None):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode(), url=True).rstrip("=")
    body = b64(json.dumps(payload or {"sub": rs(r, 8, DI), "iat": 1700000000 + r.randrange(10**7)}).encode(),
               url=True).rstrip("=")
    return f"{head}.{body}.{rs(r, 43, B64URL)}"


def jwt_pos(r):
    return ctx(r, jwt_token(r), "AUTH_TOKEN")


JWT_IO = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
          "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


def jwt_neg(r):
    return r.choice([ctx(r, JWT_IO, "AUTH_TOKEN"), "the header eyJhbGciOiJIUzI1NiJ9 decodes to {\"alg\":\"HS256\"}",
                     "eyJ" + rs(r, 30, B64URL) + " is not a token"])


def pem_body(r, lines=6):
    return "\n".join(rs(r, 64, B64) for _ in range(lines))


def key_pos(r):
    kind = r.choice(["RSA ", "EC ", "OPENSSH ", ""])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{pem_body(r)}\n-----END {kind}PRIVATE KEY-----\n"


def key_neg(r):
    return r.choice([f"-----BEGIN PUBLIC KEY-----\n{pem_body(r, 4)}\n-----END PUBLIC KEY-----",
                     "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
                     f"-----BEGIN CERTIFICATE-----\n{pem_body(r, 5)}\n-----END CERTIFICATE-----",
                     "Paste the key (it starts with -----BEGIN OPENSSH PRIVATE KEY-----) into the field."])


def assign_pos(r):
    v = rs(r, r.choice([20, 24, 32]), B62 + "#%!@^*")
    name = r.choice(["DB_PASSWORD", "client_secret", "api_key", "REDIS_PASS", "smtpPassword", "auth_token",
                     "private_key", "JWT_SECRET"])
    return r.choice([f'{name}="{v}"', f"{name}: {v}", f"{name} = '{v}'", f'"{name}": "{v}"'])


def assign_neg(r):
    return r.choice([
        'LLM_SECRET_NAME = "llm-gateway-prod-2024"', 'publicToken = "pk-web-checkout-widget-2023"',
        'password = os.environ["DB_PASSWORD"]', 'SECRET_KEY_PATH = "/etc/app/keys/secret-2024.key"',
        'token_type = "bearer_refresh_v2"', "PASSWORD_MIN_LENGTH = 12",
        'api_key_header = "X-Api-Key-Version-2"', 'password: "{{ vault_db_password }}"',
        'secret_name = "projects/analytics-01/secrets/db-password"', "TOKEN_TTL_SECONDS: 86400000",
        'publishable_key = "pk_live_51HqLyjWDarjtT1zdp7dc"', 'secretsManagerArn = "arn-prod-eu-west-1-db-creds"',
    ])


def hf_pos(r):
    return ctx(r, r.choice(["hf_", "api_org_"]) + rs(r, 34, UP + LO), "HF_TOKEN")


def hf_neg(r):
    return r.choice([ctx(r, "hf_" + "x" * 34, "HF_TOKEN"), "call hf_hub_download(repo_id, filename) first",
                     ctx(r, "hf_" + rs(r, 10, UP + LO), "HF_TOKEN"), "set hf_transferenabledforlargefilesnow true",
                     "hf_YOUR_TOKEN_HERE goes in the header"])


def curl_pos(r):
    user = r.choice(["admin", "deploy", "svc_ci", "jenkins", "alice"])
    pw = rs(r, r.choice([12, 16, 20]), B62 + "#%!^")
    url = f"https://{r.choice(['api', 'registry', 'nexus'])}.{rs(r, 6, LO)}.io/v1/items"
    return r.choice([f"curl -u {user}:{pw} {url}", f'curl --user "{user}:{pw}" {url}',
                     f"curl -s -X POST --user '{user}:{pw}' -d @body.json {url}"])


def curl_neg(r):
    url = f"https://api.{rs(r, 6, LO)}.io/v1/items"
    return r.choice([f"curl -u $USER:$PASS {url}", f"curl -u user:password {url}", f"curl -u admin:admin {url}",
                     f'curl -u "$API_USER:$API_TOKEN" {url}', f"curl -u username:<password> {url}",
                     f"curl --user ${{CI_USER}}:${{CI_PASS}} {url}"])


def bearer_pos(r):
    url = f"https://api.{rs(r, 6, LO)}.com/v2/jobs"
    tok = _pick(r, lambda r: rs(r, 40, B64URL), lambda r: rs(r, 32, HEX))
    basic = b64(f"{r.choice(['ops', 'bot', 'etl'])}:{rs(r, 14)}".encode())
    return r.choice([f'curl -H "Authorization: Bearer {tok}" {url}', f"Authorization: Bearer {tok}",
                     f"curl --header 'Authorization: Basic {basic}' {url}", f'headers = {{"Authorization": "Token {tok}"}}'])


def bearer_neg(r):
    return r.choice(['curl -H "Authorization: Bearer $TOKEN" https://api.x.com', "Authorization: Bearer <token>",
                     "Authorization: Bearer YOUR_ACCESS_TOKEN", 'Authorization: Bearer ${{ secrets.API_TOKEN }}',
                     "Authorization: Basic dXNlcm5hbWU6cGFzc3dvcmQ=", 'headers = {"Authorization": f"Bearer {token}"}',
                     "The Authorization: Bearer scheme is described in RFC 6750."])


def url_pos(r):
    pw = rs(r, r.choice([12, 18]), B62 + "!^")
    return r.choice([f"DATABASE_URL=postgres://app:{pw}@db-{rs(r, 4, LO)}.internal:5432/prod",
                     f"git clone https://ci-bot:{pw}@git.{rs(r, 5, LO)}.com/team/repo.git",
                     f"mongodb://analytics:{pw}@10.0.3.{r.randrange(2, 250)}:27017/events"])


def url_neg(r):
    return r.choice(["postgres://user:password@localhost/db", "https://user:${PASS}@host.com/x",
                     "mongodb://<user>:<password>@cluster0.mongodb.net", "redis://:changeme@redis:6379/0",
                     "see https://docs.python.org/3/library/urllib.parse.html#url-parsing",
                     "ftp://anonymous:anonymous@ftp.debian.org/debian"])


def azure_ad_pos(r):
    v = rs(r, 3, B62) + r.choice(DI) + "Q~" + rs(r, 34, B62 + "_~.-")
    return ctx(r, v, "AZURE_CLIENT_SECRET")


def azure_ad_neg(r):
    return r.choice([ctx(r, rs(r, 40, B62), "AZURE_CLIENT_ID_HASH"), ctx(r, "abc8Q~xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "AZURE_CLIENT_SECRET"),
                     ctx(r, "Q~" + rs(r, 10), "VALUE")])


def discord_pos(r):
    uid = b64(str(r.randrange(10**17, 10**18 * 9)).encode()).rstrip("=")
    v = _pick(r, lambda r: f"{uid}.{rs(r, 6, B64URL)}.{rs(r, 38, B64URL)}",
              lambda r: f"https://discord.com/api/webhooks/{r.randrange(10**17, 10**19)}/{rs(r, 68, B64URL)}")
    return ctx(r, v, "DISCORD_TOKEN")


def discord_neg(r):
    return r.choice([ctx(r, "MTIzNDU2Nzg5MDEyMzQ1Njc4.XXXXXX.XXXXXXXXXXXXXXXXXXXXXXXXXXX", "DISCORD_TOKEN"),
                     ctx(r, f"{rs(r, 24, B62)}.{rs(r, 6, B64URL)}.{rs(r, 27, B64URL)}", "SESSION"),
                     "https://discord.com/api/webhooks/123456789012345678/your-webhook-token"])


def pypi_pos(r):
    v = r.choice(["pypi-AgEIcHlwaS5vcmc", "pypi-AgENdGVzdC5weXBpLm9yZw"]) + rs(r, r.choice([60, 120, 160]), B64URL)
    return ctx(r, v, "TWINE_PASSWORD")


def pypi_neg(r):
    return r.choice(["password = pypi-AgEIcHlwaS5vcmc...", "TWINE_PASSWORD=pypi-<your-token>",
                     "pypi-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "install pypi-simple-index-mirror-tools"])


def telegram_pos(r):
    return ctx(r, f"{r.randrange(10**8, 10**10)}:AA{rs(r, 33, B64URL)}", "TELEGRAM_BOT_TOKEN")


def telegram_neg(r):
    return r.choice([ctx(r, "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "TELEGRAM_BOT_TOKEN"),
                     ctx(r, "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11", "BOT_TOKEN"),
                     "meeting 10:30:45 then 2024-01-02T11:12:13Z", f"ratio {r.randrange(10**8, 10**9)}:{rs(r, 12, DI)}"])


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azure_storage_pos(r):
    key = b64(bytes(r.randrange(256) for _ in range(64)))
    return r.choice([
        f"DefaultEndpointsProtocol=https;AccountName={rs(r, 10, LO)};AccountKey={key};EndpointSuffix=core.windows.net",
        f'"StorageConnection": "AccountName={rs(r, 8, LO)};AccountKey={key}"',
        f"Endpoint=sb://{rs(r, 8, LO)}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={b64(bytes(r.randrange(256) for _ in range(32)))}"])


def azure_storage_neg(r):
    return r.choice([f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY}",
                     "AccountName=myaccount;AccountKey=<account-key>", "AccountKey=${STORAGE_KEY}",
                     "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=<key>"])


def sourcegraph_pos(r):
    return ctx(r, _pick(r, lambda r: f"sgp_{rs(r, 16, HEX)}_{rs(r, 40, HEX)}", lambda r: f"sgp_{rs(r, 40, HEX)}",
                        lambda r: f"sgp_local_{rs(r, 40, HEX)}"), "SRC_ACCESS_TOKEN")


def sourcegraph_neg(r):
    return r.choice([ctx(r, "sgp_" + "0" * 40, "SRC_ACCESS_TOKEN"), "sgp_<token>", ctx(r, "sgp_" + rs(r, 12, HEX), "X")])


def notion_pos(r):
    return ctx(r, _pick(r, lambda r: "secret_" + rs(r, 43), lambda r: "ntn_" + rs(r, 11, DI) + rs(r, 35)), "NOTION_TOKEN")


def notion_neg(r):
    return r.choice([ctx(r, "secret_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "NOTION_TOKEN"),
                     "secret_key_base is derived in config/credentials.yml.enc", ctx(r, "ntn_" + "1" * 11 + "x" * 35, "NOTION")])


def sumo_pos(r):
    return r.choice([f"SUMO_ACCESS_ID=su{rs(r, 12)}\nSUMO_ACCESS_KEY={rs(r, 64)}",
                     f'sumologic_access_key = "{rs(r, 64)}"', f"sumo_access_id: su{rs(r, 12)}"])


def sumo_neg(r):
    return r.choice(["SUMO_ACCESS_ID=suXXXXXXXXXXXX", 'sumologic_access_key = "<access key>"',
                     "the summary was sumptuous", "sumo_collector_name: prod-eu-collector-01"])


def fly_pos(r):
    return ctx(r, _pick(r, lambda r: "FlyV1 fm2_" + rs(r, 300, B64) + "==", lambda r: "fo1_" + rs(r, 43, B64URL),
                        lambda r: "fm1r_" + rs(r, 120, B64)), "FLY_API_TOKEN")


def fly_neg(r):
    return r.choice(["FLY_API_TOKEN=fo1_xxxxx", "fly tokens create deploy -> FlyV1 fm2_...", "fm2_<token>"])


def vault_pos(r):
    return ctx(r, _pick(r, lambda r: "hvs." + rs(r, 95, B64URL), lambda r: "hvb." + rs(r, 150, B64URL),
                        lambda r: "hvr." + rs(r, 95, B64URL)), "VAULT_TOKEN")


def vault_neg(r):
    return r.choice(["VAULT_TOKEN=hvs.xxxxxxxx", "export VAULT_TOKEN=hvs.<token>", "root token: s.XXXXXXXXXXXXXXXXXXXXXXXX",
                     "see hvb.docs for batch tokens"])


def other_syntax_pos(r):
    """Passwords in command lines, .netrc, XML and prose (prose has no rule: a known blind spot)."""
    pw = rs(r, 16, B62 + "#%!")
    return r.choice([f"machine api.{rs(r, 5, LO)}.com login ci password {pw}", f"mysql -u root -p{pw} prod_db",
                     f"docker login -u bot -p {pw} registry.{rs(r, 5, LO)}.io", f"export PGPASSWORD={pw}",
                     f"<password>{pw}</password>", f"the wifi password is {pw}"])


def random_ids_neg(r):
    """High-entropy values that are not secrets: hashes, ids, digests, pagination tokens."""
    return r.choice([
        f"commit {rs(r, 40, HEX)}", f"{rs(r, 64, HEX)}  dist/app-1.2.0.tar.gz",
        f"request_id={rs(r, 8, HEX)}-{rs(r, 4, HEX)}-4{rs(r, 3, HEX)}-a{rs(r, 3, HEX)}-{rs(r, 12, HEX)}",
        f'"integrity": "sha512-{rs(r, 86, B64)}=="', f"golang.org/x/text v0.14.0 h1:{rs(r, 43, B64)}=",
        f"data:image/png;base64,iVBORw0KGgo{rs(r, 200, B64)}", f"https://www.youtube.com/watch?v={rs(r, 11, B64URL)}",
        f"image: registry.io/app@sha256:{rs(r, 64, HEX)}", f'"nextPageToken": "{rs(r, 40, B64URL)}"',
        f"s3://logs/2024/05/part-00000-{rs(r, 8, HEX)}-{rs(r, 4, HEX)}.snappy.parquet",
        f'cache_key = "{rs(r, 40, HEX)}"', f"ETag: \"{rs(r, 32, HEX)}\"",
    ])


def prefixed(prefix: str, n: int, alphabet: str = B62, env: str = "API_TOKEN", suffix: str = ""):
    def pos(r):
        return ctx(r, prefix + rs(r, n, alphabet) + suffix, env)

    def neg(r):
        return r.choice([ctx(r, prefix + "x" * n + suffix, env), ctx(r, prefix + rs(r, max(4, n // 3), alphabet), env),
                         f"{env}={prefix}<your-token>"])

    return pos, neg


def _multi(*pairs):
    return (lambda r: r.choice(pairs)[0](r)), (lambda r: r.choice(pairs)[1](r))


SECRETS: dict[str, tuple[Gen | None, Gen | None]] = {
    "aws_access_key_id": (aws_pos, aws_neg),
    "aws_secret_access_key": (aws_secret_pos, aws_secret_neg),
    "github_token": (gh_pos, gh_neg),
    "gitlab_token": (glpat_pos, glpat_neg),
    "slack": (slack_pos, slack_neg),
    "stripe_key": (stripe_pos, stripe_neg),
    "sendgrid_key": (sendgrid_pos, sendgrid_neg),
    "openai/anthropic": (openai_pos, openai_neg),
    "google": (google_pos, google_neg),
    "npm_token": (npm_pos, npm_neg),
    "jwt": (jwt_pos, jwt_neg),
    "private_key": (key_pos, key_neg),
    "secret_assignment": (assign_pos, assign_neg),
    "hf_token": (hf_pos, hf_neg),
    "curl --user": (curl_pos, curl_neg),
    "auth_header": (bearer_pos, bearer_neg),
    "url_credentials": (url_pos, url_neg),
    "azure_ad_client_secret": (azure_ad_pos, azure_ad_neg),
    "discord": (discord_pos, discord_neg),
    "pypi_token": (pypi_pos, pypi_neg),
    "telegram_bot_token": (telegram_pos, telegram_neg),
    "azure_storage_key": (azure_storage_pos, azure_storage_neg),
    "sourcegraph_token": (sourcegraph_pos, sourcegraph_neg),
    "notion_token": (notion_pos, notion_neg),
    "sumologic": (sumo_pos, sumo_neg),
    "flyio_token": (fly_pos, fly_neg),
    "vault_token": (vault_pos, vault_neg),
    "shopify": prefixed(r"shpat_", 32, HEX, "SHOPIFY_ACCESS_TOKEN"),
    "digitalocean": prefixed("dop_v1_", 64, HEX, "DIGITALOCEAN_TOKEN"),
    "databricks": prefixed("dapi", 32, HEX, "DATABRICKS_TOKEN"),
    "doppler": prefixed("dp.pt.", 43, B62, "DOPPLER_TOKEN"),
    "grafana": _multi(prefixed("glsa_", 32, B62, "GRAFANA_TOKEN", "_" + "a1b2c3d4"), prefixed("glc_", 60, B62 + "+/", "GRAFANA_CLOUD")),
    "postman": prefixed("PMAK-", 24, HEX, "POSTMAN_API_KEY", "-" + "3f9e1c2a7b6d5e4f3a2b1c0d9e8f7a6b5c"),
    "linear": prefixed("lin_api_", 40, B62, "LINEAR_API_KEY"),
    "age": prefixed("AGE-SECRET-KEY-1", 58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", "AGE_KEY"),
    "tailscale": prefixed("tskey-auth-k", 10, B62, "TS_AUTHKEY", "CNTRL-" + "Zx81pQr5LmN2vBc7TyW3aK9dFg4HjS6eRu"),
    "newrelic": prefixed("NRAK-", 27, UP + DI, "NEW_RELIC_API_KEY"),
    "replicate": prefixed("r8_", 37, B62, "REPLICATE_API_TOKEN"),
    "groq": prefixed("gsk_", 52, B62, "GROQ_API_KEY"),
    "netrc/mysql/docker/xml/prose": (other_syntax_pos, None),
    "random ids (not secrets)": (None, random_ids_neg),
}


# --- personal data ------------------------------------------------------------------------------

FIRST = ["maria", "jan", "li", "amit", "sofia", "lukas", "chen", "fatima", "olga", "pedro"]
LAST = ["garcia", "novak", "wang", "sharma", "rossi", "muller", "kim", "haddad", "ivanova", "silva"]
DOMAINS = ["gmail.com", "posteo.de", "uni-heidelberg.de", "acme-corp.co.uk", "yandex.ru", "outlook.fr", "mail.nl"]
IBAN_LEN = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27, "BE": 16, "CH": 21}


def iban_check(cc: str, bban: str) -> str:
    n = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    return f"{98 - n % 97:02d}"


def make_iban(r, valid=True, spaced=None) -> str:
    cc = r.choice(list(IBAN_LEN))
    n = IBAN_LEN[cc] - 4
    bban = (rs(r, 4, UP) + rs(r, n - 4, DI)) if cc in ("GB", "NL") else rs(r, n, DI)
    check = iban_check(cc, bban)
    if not valid:
        check = f"{(int(check) + r.randrange(1, 97)) % 97:02d}"
        if check == iban_check(cc, bban) or check in ("00", "01"):
            check = f"{(int(iban_check(cc, bban)) + 1) % 97 + 2:02d}"
    s = cc + check + bban
    if spaced if spaced is not None else r.random() < 0.6:
        s = " ".join(s[i:i + 4] for i in range(0, len(s), 4))
    return s


def _verhoeff_tables():
    d = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
    p = [list(range(10)), [1, 5, 7, 6, 2, 8, 3, 0, 9, 4]]
    for i in range(2, 8):
        p.append([p[1][p[i - 1][j]] for j in range(10)])
    inv = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]
    return d, p, inv


def verhoeff_digit(body: str) -> str:
    d, p, inv = _verhoeff_tables()
    c = 0
    for i, ch in enumerate(reversed(body)):
        c = d[c][p[(i + 1) % 8][int(ch)]]
    return str(inv[c])


def make_aadhaar(r, valid=True) -> str:
    body = str(r.randrange(2, 10)) + rs(r, 10, DI)
    check = verhoeff_digit(body)
    if not valid:
        check = str((int(check) + r.randrange(1, 10)) % 10)
    return body + check


def ssn(r) -> tuple[str, str, str]:
    while True:
        a = f"{r.randrange(1, 900):03d}"
        if a != "666":
            return a, f"{r.randrange(1, 100):02d}", f"{r.randrange(1, 10000):04d}"


NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"
DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def bsn(r, valid=True) -> str:
    while True:
        d = rs(r, 8, DI)
        total = sum(int(c) * w for c, w in zip(d, range(9, 1, -1)))
        last = total % 11
        if last <= 9 and d[0] != "0":
            return d + (str(last) if valid else str((last + r.randrange(1, 10)) % 10))


def card(r, valid=True) -> str:
    prefix, n = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16)])
    body = prefix + rs(r, n - len(prefix) - 1, DI)
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + r.randrange(1, 10)) % 10)
    d = body + check
    if n == 15:
        return f"{d[:4]} {d[4:10]} {d[10:]}"
    sep = r.choice([" ", "-", ""])
    return sep.join(d[i:i + 4] for i in range(0, 16, 4))


def phone(r) -> str:
    return r.choice([
        lambda: f"+44 20 {r.randrange(7000, 8000)} {r.randrange(1000, 10000)}",
        lambda: f"+49 30 {r.randrange(100, 1000)} {r.randrange(10000, 100000)}",
        lambda: f"({r.randrange(201, 990)}) {r.randrange(200, 1000)}-{r.randrange(1000, 10000)}",
        lambda: f"+1-{r.randrange(201, 990)}-{r.randrange(200, 1000)}-{r.randrange(1000, 10000)}",
        lambda: "06 " + " ".join(f"{r.randrange(100):02d}" for _ in range(4)),
        lambda: f"+91 {r.randrange(70000, 100000)} {r.randrange(10000, 100000)}",
    ])()


def pii_email_pos(r):
    e = f"{r.choice(FIRST)}.{r.choice(LAST)}{r.randrange(100)}@{r.choice(DOMAINS)}"
    return r.choice([f"Contact {e} for details.", f"From: {e}", f"mail me at {e} or ping me"])


def pii_email_neg(r):
    return r.choice(["<img src=\"logo@2x.png\">", "ssh deploy@localhost", "write to jane.doe@example.com",
                     "follow @maria_garcia on the forum", "user at domain dot com", "pkg@1.2.3 is pinned"])


def pii_phone_pos(r):
    p = phone(r)
    return r.choice([f"Call me at {p} tomorrow.", f"Tel: {p}", f"reach the office on {p} (mornings)"])


def pii_phone_neg(r):
    return r.choice([f"released 2023-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d} as planned",
                     "ISBN 978-3-16-148410-0", f"version 1.{r.randrange(10)}.{r.randrange(10 ** 6, 10 ** 7)}",
                     f"Transfer to {make_iban(r, valid=False, spaced=True)} please",
                     f"order #{rs(r, 11, DI)} shipped", f"at {r.uniform(-80, 80):.6f}, {r.uniform(-170, 170):.6f}"])


def pii_card_pos(r):
    return r.choice([f"card number {card(r)} exp 09/27", f"Paid with {card(r)}.", f"Visa: {card(r)}"])


def pii_card_neg(r):
    return r.choice([f"card number {card(r, valid=False)} exp 09/27", "test with 4111 1111 1111 1111",
                     f"invoice {rs(r, 16, DI)} attached", "use 4242 4242 4242 4242 in test mode"])


def pii_iban_pos(r):
    return r.choice([f"IBAN: {make_iban(r)}", f"Please wire it to {make_iban(r)} by Friday."])


def pii_iban_neg(r):
    return r.choice([f"IBAN: {make_iban(r, valid=False)}", f"Please wire it to {make_iban(r, valid=False)} by Friday.",
                     "IBAN DE89 3704 0044 0532 0130 00 is the standard example"])


def pii_ssn_pos(r):
    a, g, s = ssn(r)
    sep = r.choice(["-", "-", " ", "."])
    return r.choice([f"SSN: {a}{sep}{g}{sep}{s}", f"social security number {a}{sep}{g}{sep}{s}",
                     f"his ssn is {a}-{g}-{s}"])


def pii_ssn_neg(r):
    a, g, s = ssn(r)
    return r.choice([f"SSN: 000-{g}-{s}", f"SSN: 666-{g}-{s}", f"SSN: {a}-00-{s}", "SSN 123-45-6789 (sample)",
                     f"SSN: 9{a[1:]}-{g}-{s}", f"part no. {a}.{g}.{s}"])


def nino(r):
    return r.choice(NINO_FIRST) + r.choice(NINO_SECOND) + rs(r, 6, DI) + r.choice("ABCD")


def pii_nino_pos(r):
    n = nino(r)
    while n[:2] in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ"):
        n = nino(r)
    form = r.choice([n, f"{n[:2]} {n[2:4]} {n[4:6]} {n[6:8]} {n[8]}", n.lower()])
    return r.choice([f"NI number: {form}", f"National Insurance {form}", f"my nino is {form}"])


def pii_nino_neg(r):
    d = rs(r, 6, DI)
    return r.choice([f"NI number: BG{d}A", f"NI number: DA{d}C", f"NI number: AB{d}E", f"ref GB{d}A",
                     f"NI number: QQ {d[:2]} {d[2:4]} {d[4:]} C"])


def dni(r, valid=True):
    if r.random() < 0.3:
        lead = r.choice("XYZ")
        num = rs(r, 7, DI)
        n = "XYZ".index(lead) * 10 ** 7 + int(num)
        body = lead + num
    else:
        body = str(r.randrange(10 ** 6 if r.random() < 0.3 else 10 ** 7, 10 ** 8))
        n = int(body)
    letter = DNI_LETTERS[n % 23]
    if not valid:
        letter = DNI_LETTERS[(n + r.randrange(1, 23)) % 23]
    s = body + letter
    return s.lower() if r.random() < 0.25 else s


def pii_dni_pos(r):
    return r.choice([f"DNI: {dni(r)}", f"NIF {dni(r)}", f"mi documento es {dni(r)}"])


def pii_dni_neg(r):
    return r.choice([f"DNI: {dni(r, valid=False)}", f"NIF {dni(r, valid=False)}", "DNI 12345678Z (ejemplo)"])


def pii_bsn_pos(r):
    return r.choice([f"BSN: {bsn(r)}", f"burgerservicenummer {bsn(r)}"])


def pii_bsn_neg(r):
    return r.choice([f"BSN: {bsn(r, valid=False)}", f"burgerservicenummer {bsn(r, valid=False)}"])


def pii_aadhaar_pos(r):
    a = make_aadhaar(r)
    form = r.choice([f"{a[:4]} {a[4:8]} {a[8:]}", f"{a[:4]}-{a[4:8]}-{a[8:]}", a])
    return r.choice([f"Aadhaar: {form}", f"aadhaar no {form}", f"UIDAI number {form}"])


def pii_aadhaar_neg(r):
    a = make_aadhaar(r, valid=False)
    return r.choice([f"Aadhaar: {a[:4]} {a[4:8]} {a[8:]}", f"Aadhaar {a}",
                     f"IBAN {make_iban(r, valid=False, spaced=True)}", f"tracking {a[:4]} {a[4:8]} {a[8:]}"])


PII: dict[str, tuple[Gen, Gen]] = {
    "email": (pii_email_pos, pii_email_neg),
    "phone": (pii_phone_pos, pii_phone_neg),
    "credit_card": (pii_card_pos, pii_card_neg),
    "iban": (pii_iban_pos, pii_iban_neg),
    "us_ssn": (pii_ssn_pos, pii_ssn_neg),
    "uk_nino": (pii_nino_pos, pii_nino_neg),
    "es_dni": (pii_dni_pos, pii_dni_neg),
    "nl_bsn": (pii_bsn_pos, pii_bsn_neg),
    "in_aadhaar": (pii_aadhaar_pos, pii_aadhaar_neg),
}


ORDER = [*SECRETS, *PII]


def build(per_family: int, seed: int, clean: int) -> pl.DataFrame:
    """The labelled records: ``id, text, group (secret|pii|clean), family, positive``."""
    r = random.Random(seed)
    rows = []
    for group, table in (("secret", SECRETS), ("pii", PII)):
        for fam, (pos, neg) in table.items():
            for i in range(per_family):
                if pos is not None:
                    rows.append((group, fam, True, pos(r)))
                if neg is not None:
                    rows.append((group, fam, False, neg(r)))
    if clean and DEBIAN.exists():
        texts = pl.read_parquet(DEBIAN, columns=["text"]).sample(clean, seed=seed)["text"].to_list()
        rows += [("clean", "debian", False, t) for t in texts]
    r.shuffle(rows)
    return pl.DataFrame(
        {"id": [f"b{i}" for i in range(len(rows))], "text": [t for *_, t in rows],
         "group": [g for g, *_ in rows], "family": [f for _, f, *_ in rows], "positive": [p for _, _, p, _ in rows]}
    )


# ---------------------------------------------------------------------------
# running and scoring


def scan(records: pl.DataFrame, checks: str) -> tuple[pl.DataFrame, float]:
    """Findings (one row per match at any severity) and the shard-stage seconds of one CLI scan."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-privacy-"))
    src = tmp / "records.parquet"
    records.select("id", "text").write_parquet(src)
    (tmp / "policy.yaml").write_text(f"state_dir: {tmp / 'state'}\nquarantine:\n  mode: off\n")
    cmd = [str(Path(sys.executable).parent / "integrity"), "scan", str(src), "--out", str(tmp / "run"),
           "--policy", str(tmp / "policy.yaml"), "--runner", "inline", "--id-column", "id", "--checks", checks]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"scan failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    found = pl.read_parquet(tmp / "run" / "findings.parquet")
    rows = []
    for rec, check, detail in found.select("record_id", "check", "detail").iter_rows():
        for m in json.loads(detail).get("matches", []):
            rows.append((rec, check, m["kind"], float(m["score"])))
    matches = pl.DataFrame(rows, schema={"id": pl.String, "check": pl.String, "kind": pl.String, "score": pl.Float64},
                           orient="row")
    return matches, float(summary["timings"]["shards"])


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def secret_flags(records: pl.DataFrame, matches: pl.DataFrame) -> pl.DataFrame:
    flagged = matches.filter((pl.col("check") == "privacy.secret") & (pl.col("score") >= WARN))["id"].unique()
    return records.with_columns(flagged=pl.col("id").is_in(flagged.implode()))


def family_table(rec: pl.DataFrame, group: str) -> pl.DataFrame:
    """Per family: positives found, near misses flagged, recall and precision (record level)."""
    return (
        rec.filter(pl.col("group") == group)
        .group_by("family")
        .agg(
            n_pos=pl.col("positive").sum(),
            tp=(pl.col("positive") & pl.col("hit")).sum(),
            n_neg=(~pl.col("positive")).sum(),
            fp=(~pl.col("positive") & pl.col("false_alarm")).sum(),
        )
        .with_columns(
            recall=pl.col("tp") / pl.col("n_pos"),
            precision=pl.when(pl.col("tp") + pl.col("fp") > 0)
            .then(pl.col("tp") / (pl.col("tp") + pl.col("fp")))
            .otherwise(None),
        )
        .join(pl.DataFrame({"family": list(ORDER)}).with_row_index("order"), on="family", how="left")
        .sort("order")
        .drop("order")
    )


def score_secrets(records: pl.DataFrame, matches: pl.DataFrame) -> pl.DataFrame:
    rec = secret_flags(records, matches)
    return rec.with_columns(
        hit=(pl.col("group") == "secret") & pl.col("positive") & pl.col("flagged"),
        false_alarm=pl.col("flagged") & ~((pl.col("group") == "secret") & pl.col("positive")),
    )


def score_pii(records: pl.DataFrame, matches: pl.DataFrame) -> pl.DataFrame:
    warn = matches.filter((pl.col("check") == "privacy.pii") & (pl.col("score") >= WARN))
    by_id = warn.group_by("id").agg(kinds=pl.col("kind").unique())
    rec = records.join(by_id, on="id", how="left").with_columns(pl.col("kinds").fill_null([]))
    return rec.with_columns(
        hit=pl.col("positive") & (pl.col("group") == "pii") & pl.col("kinds").list.contains(pl.col("family")),
        # a warn-level match of a kind the record does not hold (any, for a near miss or clean text)
        false_alarm=pl.when(pl.col("positive") & (pl.col("group") == "pii"))
        .then(pl.col("kinds").list.set_difference(pl.concat_list(pl.col("family"))).list.len() > 0)
        .otherwise(pl.col("kinds").list.len() > 0),
    )


def detect_secrets_flags(records: pl.DataFrame) -> pl.DataFrame | None:
    """Record-level flags of detect-secrets (default plugins and filters), or None if absent."""
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench-ds-"))
    path = tmp / "corpus.txt"
    owner: list[str] = []
    lines: list[str] = []
    for rid, text in records.select("id", "text").iter_rows():
        for line in text.splitlines() or [""]:
            lines.append(line)
            owner.append(rid)
    path.write_text("\n".join(lines) + "\n")
    coll = SecretsCollection()
    with default_settings():
        coll.scan_file(str(path))
    hit_ids = {owner[s.line_number - 1] for _, s in coll}
    return records.with_columns(flagged=pl.col("id").is_in(list(hit_ids)))


def print_families(t: pl.DataFrame, extra: pl.DataFrame | None = None) -> None:
    head = f"{'family':28s} {'pos':>4s} {'found':>5s} {'recall':>7s} {'near-miss':>9s} {'flagged':>7s} {'precision':>9s}"
    if extra is not None:
        head += f" | {'detect-secrets R':>16s} {'P':>6s}"
    print(head)
    ex = {row["family"]: row for row in extra.iter_rows(named=True)} if extra is not None else {}
    for row in t.iter_rows(named=True):
        def f(x: float | None, w: int) -> str:
            return f"{x:{w}.3f}" if x is not None and x == x else f"{'-':>{w}s}"

        line = (f"{row['family'][:28]:28s} {row['n_pos']:4d} {row['tp']:5d} {f(row['recall'], 7)} {row['n_neg']:9d} "
                f"{row['fp']:7d} {f(row['precision'], 9)}")
        if row["family"] in ex:
            e = ex[row["family"]]
            line += f" | {f(e['recall'], 16)} {f(e['precision'], 6)}"
        print(line)


def cpu_rate(texts: list[str], repeat: int = 7) -> float:
    """Records per CPU second of ``privacy.pii`` + ``privacy.secret`` in this process (batches of
    8,192, best of ``repeat``): the checks' own cost, unaffected by other load on the machine."""
    import pyarrow as pa

    from integrity.checks.privacy_pii import PiiCheck
    from integrity.checks.privacy_secret import SecretCheck

    n = len(texts)
    batches = [
        pa.RecordBatch.from_pydict({"record_id": [str(i) for i in range(s, min(n, s + 8192))],
                                    "row": list(range(s, min(n, s + 8192))),
                                    "text": pa.array(texts[s : s + 8192], pa.large_string())})
        for s in range(0, n, 8192)
    ]
    checks = [PiiCheck(), SecretCheck()]
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for b in batches:
            for c in checks:
                c.process_batch(b)
        best = min(best, time.process_time() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=40, help="positives (and as many near misses) per family")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean", type=int, default=2000, help="real Debian descriptions added as clean text")
    ap.add_argument("--repeat", type=int, default=3, help="scans timed (median shard-stage seconds)")
    ap.add_argument("--no-baseline", action="store_true", help="skip detect-secrets")
    ap.add_argument("--cpu-only", action="store_true", help="only the in-process CPU throughput figures")
    a = ap.parse_args()
    records = build(a.per_family, a.seed, a.clean)
    n = records.height
    print(f"{n:,} records: {len(SECRETS)} secret families and {len(PII)} PII kinds x {a.per_family} positives + "
          f"{a.per_family} near misses, {records.filter(pl.col('group') == 'clean').height:,} Debian descriptions; "
          f"{os.cpu_count()} cores")
    if a.cpu_only:
        print(f"check CPU time, labelled set: {cpu_rate(records['text'].to_list()):,.0f} records/CPU-s")
        if DEBIAN.exists():
            debian = pl.read_parquet(DEBIAN, columns=["text"])["text"].to_list()
            print(f"check CPU time, all {len(debian):,} Debian descriptions: {cpu_rate(debian):,.0f} records/CPU-s")
        return
    timings = []
    for _ in range(max(1, a.repeat)):
        matches, secs = scan(records, "privacy.pii,privacy.secret")
        timings.append(secs)
    shard_s = statistics.median(timings)

    sec = score_secrets(records, matches)
    ds = None if a.no_baseline else detect_secrets_flags(records)
    ds_table = None
    if ds is not None:
        ds = ds.with_columns(hit=(pl.col("group") == "secret") & pl.col("positive") & pl.col("flagged"),
                             false_alarm=pl.col("flagged") & ~((pl.col("group") == "secret") & pl.col("positive")))
        ds_table = family_table(ds, "secret")
    print("\nprivacy.secret per family (record level, warn and above)")
    print_families(family_table(sec, "secret"), ds_table)

    def overall(rec: pl.DataFrame) -> tuple[float, float, float, int]:
        tp = int(rec["hit"].sum())
        fp = int(rec["false_alarm"].sum())
        fn = int(((rec["group"] == "secret") & rec["positive"] & ~rec["hit"]).sum())
        return (*prf(tp, fp, fn), int((rec["false_alarm"] & (rec["group"] == "clean")).sum()))

    p, r, f, clean_fp = overall(sec)
    print(f"\nsecrets overall: precision {p:.3f} recall {r:.3f} F1 {f:.3f} (clean Debian records flagged: {clean_fp})")
    if ds is not None:
        p2, r2, f2, clean_fp2 = overall(ds)
        print(f"detect-secrets 1.5 (default settings): precision {p2:.3f} recall {r2:.3f} F1 {f2:.3f} "
              f"(clean Debian records flagged: {clean_fp2})")
    elif not a.no_baseline:
        print("detect-secrets not installed: `pip install detect-secrets==1.5.0` to compare")

    pii = score_pii(records, matches)
    print("\nprivacy.pii per kind (a hit needs a warn-level match of the record's kind)")
    print_families(family_table(pii, "pii"))
    tp = int(pii["hit"].sum())
    fp = int(pii["false_alarm"].sum())
    fn = int(((pii["group"] == "pii") & pii["positive"] & ~pii["hit"]).sum())
    p, r, f = prf(tp, fp, fn)
    clean_pii = int((pii["false_alarm"] & (pii["group"] == "clean")).sum())
    print(f"\nPII overall: precision {p:.3f} recall {r:.3f} F1 {f:.3f} "
          f"(warn-level matches on clean Debian records: {clean_pii}, counted as false alarms)")
    print(f"\nshard stage: {shard_s:.2f} s for {n:,} records = {n / shard_s:,.0f} records/s "
          f"(median of {len(timings)}: {', '.join(f'{t:.2f}' for t in timings)}; wall clock, shared machine)")
    print(f"check CPU time, labelled set: {cpu_rate(records['text'].to_list()):,.0f} records/CPU-s")
    if DEBIAN.exists():
        debian = pl.read_parquet(DEBIAN, columns=["text"])["text"].to_list()
        print(f"check CPU time, all {len(debian):,} Debian descriptions: {cpu_rate(debian):,.0f} records/CPU-s")


if __name__ == "__main__":
    main()
