"""Console security: hashed credentials, signed session cookies, CSRF tokens, the loopback rule.

- Passwords and one-time tokens are stored as argon2id hashes (``argon2-cffi``);
  the secret is shown once and never stored.
- A session is a cookie signed with a key kept in ``STATE_DIR/console.key``
  (created 0600 on first use; ``itsdangerous``), holding the user name and a
  per-session CSRF token; it expires after :data:`SESSION_MAX_AGE_S`.
- Every state-changing request must carry the session's CSRF token in its
  form (``csrf`` field); the cookie is ``HttpOnly`` and ``SameSite=Strict``.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from integrity.ledger import ROLES, Ledger

SESSION_COOKIE = "integrity_console"
SESSION_MAX_AGE_S = 12 * 3600
KEY_FILE = "console.key"
ANONYMOUS = "local viewer"  # who browses a loopback console that has no users configured

_hasher = PasswordHasher()


class BindError(Exception):
    """The console may not listen where it was asked to (non-loopback without users)."""


@dataclass(frozen=True)
class Identity:
    """Who makes a request: a user name and role, or the anonymous local viewer."""

    name: str
    role: str
    anonymous: bool = False

    @property
    def can_act(self) -> bool:
        """Only operators release or restore."""
        return self.role == "operator" and not self.anonymous


def hash_secret(secret: str) -> str:
    """An argon2id hash of a password or token."""
    return _hasher.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    """Whether ``secret`` matches ``stored_hash`` (False on any mismatch or malformed hash)."""
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A random one-time login token (shown once, stored hashed)."""
    return secrets.token_urlsafe(18)


def add_user(ledger: Ledger, name: str, role: str, secret: str | None = None) -> str:
    """Create or replace a console user; returns the secret (a new token unless ``secret`` is given)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if secret is not None and len(secret) < 8:
        raise ValueError("a password needs at least 8 characters")
    secret = secret or new_token()
    ledger.put_user(name, role=role, password_hash=hash_secret(secret))
    return secret


def authenticate(ledger: Ledger, name: str, secret: str) -> Identity | None:
    """The identity of ``name`` when ``secret`` is right, else None (same work either way)."""
    row = ledger.user_hash(name.strip())
    if row is None:
        verify_secret(_DUMMY_HASH, secret)  # spend the same time as a real check
        return None
    role, stored = row
    return Identity(name=name.strip(), role=role) if verify_secret(stored, secret) else None


_DUMMY_HASH = _hasher.hash("not a real password")


def secret_key(state_dir: Path) -> bytes:
    """The cookie-signing key of this state dir, created (0600) on first use."""
    path = Path(state_dir) / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    return key


class Sessions:
    """Signs and reads session cookies: ``{"u": user or None, "c": csrf token}``."""

    def __init__(self, key: bytes):
        self._s = URLSafeTimedSerializer(key, salt="integrity-console-session")

    def new(self, user: str | None = None) -> dict:
        return {"u": user, "c": secrets.token_urlsafe(24)}

    def dumps(self, session: dict) -> str:
        return self._s.dumps(session)

    def loads(self, cookie: str | None) -> dict | None:
        if not cookie:
            return None
        try:
            data = self._s.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        return data


def csrf_ok(session: dict | None, token: object) -> bool:
    """Whether a form's ``csrf`` token is this session's (constant-time compare)."""
    if not session or not isinstance(token, str) or not token:
        return False
    return hmac.compare_digest(session["c"].encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) means this machine only."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_binding(host: str, ledger: Ledger) -> None:
    """Refuse a non-loopback address while no console user exists (anyone on the network could browse)."""
    if is_loopback(host) or ledger.users():
        return
    raise BindError(
        f"refusing to serve the console on {host}: it is not a loopback address and no console user is "
        f"configured in {ledger.path}, so anyone who can reach this machine could read the scans. Add users first "
        f"(integrity console users add NAME --role operator|viewer --state-dir {ledger.state_dir}) or bind to "
        "127.0.0.1."
    )
