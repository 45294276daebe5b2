"""``privacy.secret``: credentials and keys in text fields.

Same machinery as ``privacy.pii`` (:mod:`integrity.checks._text_scan`): a
column-wide RE2 prefilter, then Python patterns plus validation on the few
candidate records; one finding per record, ``score`` = the highest match score.
Each match in ``detail["matches"]`` has ``kind``, ``field``, ``start``/``end``
(character offsets into the field), ``length``, ``score``, a redacted
``preview`` (first 4 characters + "…") and ``"redact": true``; the secret
itself is never written anywhere.

Kinds and default scores (option ``scores``):

==========================  =====  ===================================================
kind                        score  what
==========================  =====  ===================================================
``private_key``             1.0    ``-----BEGIN [RSA|EC|DSA|OPENSSH|PGP|ENCRYPTED ]PRIVATE
                                   KEY[ BLOCK]-----`` followed by a base64 body; the
                                   span runs to the END line. Encrypted keys x0.85; a
                                   bare header without a body (documentation) x0.3.
``gcp_service_account_key`` 1.0    ``"private_key": "-----BEGIN PRIVATE KEY-----...``
                                   (service-account JSON).
``aws_access_key_id``       0.95   ``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16 upper-case
                                   letters/digits.
``aws_secret_access_key``   0.95   40 base64 characters assigned to a name holding
                                   ``aws`` or ``secret_access_key``.
``github_token``            0.95   ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` + 36, and
                                   fine-grained ``github_pat_...``.
``gitlab_token``            0.95   ``glpat-`` + 20+.
``stripe_key``              0.95   ``sk_live_``/``rk_live_``; test-mode keys
                                   (``sk_test_``/``rk_test_``) x0.4.
``sendgrid_key``            0.95   ``SG.<22>.<43>``.
``openai_key``              0.9    ``sk-``/``sk-proj-``/``sk-svcacct-``/``sk-admin-``
                                   (and Anthropic ``sk-ant-``) keys of 20+ characters
                                   with mixed case, a digit and entropy >= 3.5 bits/char;
                                   the legacy ``T3BlbkFJ`` marker counts as proof.
``gcp_api_key``             0.9    ``AIza`` + 35.
``google_oauth``            0.9    OAuth access tokens ``ya29.``, client secrets
                                   ``GOCSPX-``.
``slack_token``             0.9    ``xox[abposr]-...`` (with a digit), ``xapp-...``.
``slack_webhook``           0.9    ``https://hooks.slack.com/services/...``.
``npm_token``               0.9    ``npm_`` + 36.
``twilio_api_key``          0.85   ``SK`` + 32 hex (API key SID; only the upper-case
                                   ``SK`` prefix and hex body).
``jwt``                     0.8    ``header.payload.signature`` in base64url whose header
                                   decodes to a JSON object with ``alg``; unsigned
                                   (``alg: none`` or empty signature) x0.6.
``secret_assignment``       0.7    ``password|passwd|pwd|secret|token|api_key|access_key|
                                   auth_token|private_key|client_secret|credentials``
                                   (as part of a name) assigned with ``=``, ``:``, ``:=``
                                   or ``=>`` to a value of at least
                                   ``min_secret_length`` (16) characters with Shannon
                                   entropy >= ``min_entropy`` (3.0 bits/char), a digit
                                   or three character classes (so identifiers such as
                                   ``myPasswordField`` do not count) and no placeholder
                                   look. The keyword must start and end a component of
                                   the name (``db_password``, ``dbPassword``; not
                                   ``bypass``, ``passive``).
==========================  =====  ===================================================

Placeholders (``xxxx``, ``<your-token>``, ``${VAR}``, ``{{ var }}``, ``changeme``,
``your...``, one repeated character, calls and references such as
``os.environ[...]``) are never reported as ``secret_assignment``. Values of the
other kinds that look like documentation examples (AWS's ``AKIAIOSFODNN7EXAMPLE``
and ``wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY``, anything containing
``EXAMPLE``/``your``/``xxxx``/``0123456789``, or with very low entropy) are kept
at x0.2 with ``"example": true`` (``info`` under the usual thresholds), or
dropped with ``include_examples: false``.

A final score is ``min(1, scores[kind] * factor)``; severity is left to the
policy, ``default_severity`` is ``warn``. Options (policy ``options``;
defaults, ranges and descriptions in :class:`SecretCheck.Options`): ``kinds`` (all),
``min_score`` (0.0), ``scores`` (partial overrides merge with the table above),
``include_examples`` (true), ``min_entropy`` (3.0 bits/char) and
``min_secret_length`` (16) for ``secret_assignment``, ``max_matches`` (20).
"""
from __future__ import annotations

from pydantic import Field

from integrity.checks._secret_assignments import assignment_prefilter, scan_assignments_with
from integrity.checks._secret_formats import PREFILTER as _FORMATS_PREFILTER
from integrity.checks._secret_formats import scan_credential_syntax, scan_provider_tokens
from integrity.checks._secret_tokens import TOKEN_PREFILTER, scan_jwt, scan_private_keys, scan_tokens
from integrity.checks._text_scan import ScanGroup, TextScanCheck, text_scan_options
from integrity.checks._text_scan import chain as _chain

#: kinds added for provider tokens and credential syntaxes (:mod:`integrity.checks._secret_formats`)
NEW_SCORES = {
    "age_secret_key": 1.0,
    "hf_token": 0.95,
    "azure_storage_key": 0.95,
    "pypi_token": 0.95,
    "vault_token": 0.95,
    "shopify_token": 0.95,
    "digitalocean_token": 0.95,
    "doppler_token": 0.95,
    "azure_ad_client_secret": 0.9,
    "discord_token": 0.9,
    "discord_webhook": 0.9,
    "telegram_bot_token": 0.9,
    "sourcegraph_token": 0.9,
    "notion_token": 0.9,
    "flyio_token": 0.9,
    "databricks_token": 0.9,
    "grafana_token": 0.9,
    "postman_key": 0.9,
    "linear_key": 0.9,
    "tailscale_key": 0.9,
    "replicate_token": 0.9,
    "groq_key": 0.9,
    "newrelic_key": 0.85,
    "sumologic_key": 0.85,
    "basic_auth": 0.85,
    "auth_header": 0.85,
    "url_credentials": 0.85,
}
NEW_KINDS = tuple(NEW_SCORES)

KINDS = (
    "private_key",
    "gcp_service_account_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "github_token",
    "gitlab_token",
    "stripe_key",
    "sendgrid_key",
    "openai_key",
    "gcp_api_key",
    "google_oauth",
    "slack_token",
    "slack_webhook",
    "npm_token",
    "twilio_api_key",
    "jwt",
    "secret_assignment",
    *NEW_KINDS,
)

DEFAULT_SCORES = {
    "private_key": 1.0,
    "gcp_service_account_key": 1.0,
    "aws_access_key_id": 0.95,
    "aws_secret_access_key": 0.95,
    "github_token": 0.95,
    "gitlab_token": 0.95,
    "stripe_key": 0.95,
    "sendgrid_key": 0.95,
    "openai_key": 0.9,
    "gcp_api_key": 0.9,
    "google_oauth": 0.9,
    "slack_token": 0.9,
    "slack_webhook": 0.9,
    "npm_token": 0.9,
    "twilio_api_key": 0.85,
    "jwt": 0.8,
    "secret_assignment": 0.7,
    **NEW_SCORES,
}


# Every text the scanner writes (excerpts, finding details, cached features) is
# masked with these: integrity.engine.redact is the one place that calls them.
SECRET_PREFILTER = (
    "(?:" + TOKEN_PREFILTER + ")|(?:" + _FORMATS_PREFILTER + ")|(?i:" + assignment_prefilter(16).removeprefix("(?i)") + ")"
)
_scan_assignments_default = scan_assignments_with(16, 3.0)


def secret_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every secret in ``text``, of any kind, documentation
    examples included (masking those too costs nothing and leaks nothing)."""
    found = _chain(
        scan_tokens, scan_private_keys, scan_jwt, scan_provider_tokens, scan_credential_syntax,
        _scan_assignments_default,
    )(text)
    return sorted({(start, end) for _, start, end, _, _ in found})


class SecretCheck(TextScanCheck):
    name = "privacy.secret"
    description = (
        "Credentials in text: private keys, cloud/API tokens (AWS, GCP, GitHub, GitLab, Slack, Stripe, "
        "OpenAI-style, Google OAuth, Twilio, SendGrid, npm), JWTs and high-entropy password/token assignments."
    )
    KINDS = KINDS
    DEFAULT_SCORES = DEFAULT_SCORES

    class Options(text_scan_options(KINDS, DEFAULT_SCORES, min_score=0.0)):
        include_examples: bool = Field(True, description="keep documentation examples (AKIAIOSFODNN7EXAMPLE, ...) at x0.2")
        min_entropy: float = Field(3.0, ge=0, description="bits/char a secret_assignment value needs")
        min_secret_length: int = Field(16, ge=1, le=512, description="characters a secret_assignment value needs")

    default_severity = "warn"
    version = 1
    reads_raw_secrets = True  # the one check that must see them (and writes only previews)

    def scan_groups(self) -> list[ScanGroup]:
        min_len, min_entropy = int(self.options["min_secret_length"]), float(self.options["min_entropy"])
        token_kinds = frozenset(KINDS) - {"secret_assignment", "aws_secret_access_key"} - set(NEW_KINDS)
        return [
            ScanGroup("tokens", TOKEN_PREFILTER, token_kinds, _chain(scan_tokens, scan_private_keys, scan_jwt)),
            ScanGroup(
                "formats", _FORMATS_PREFILTER, frozenset(NEW_KINDS), _chain(scan_provider_tokens, scan_credential_syntax)
            ),
            ScanGroup(
                "assignment",
                assignment_prefilter(min_len),
                frozenset({"secret_assignment", "aws_secret_access_key"}),
                scan_assignments_with(min_len, min_entropy),
            ),
        ]
