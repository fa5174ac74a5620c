"""Charger authentication: HTTP Basic auth per charger, passwords stored as salted scrypt hashes.

OCPP security profile 1 (unsecured transport with Basic authentication) and profile 2 (TLS with Basic
authentication) have the charger send ``Authorization: Basic base64(identity:password)`` on the websocket
upgrade (OCPP 1.6 Security Whitepaper edition 3, section 2; OCPP 2.0.1 Part 2 A00.FR.201-205, A00.FR.301
onwards). The username must equal the identity in the URL; anything else is refused with HTTP 401 before
the upgrade.

Stored format: a PHC string (the Password Hashing Competition's string format)::

    $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, base64 without padding>$<key, base64 without padding>

with :func:`hashlib.scrypt` (RFC 7914), a 16-byte random salt and a 32-byte key; the default cost is
N = 2^14, r = 8, p = 1 (16 MiB, tens of milliseconds). ``pipeline charger-password`` prints one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Authenticator", "hash_password", "parse_basic_auth", "parse_password_hash", "verify_password"]

log = logging.getLogger(__name__)

_PHC = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")
_MAXMEM = 256 * 1024 * 1024


@dataclass(frozen=True)
class ScryptHash:
    """A parsed password hash: cost ``n`` (= 2^ln), ``r``, ``p``, ``salt`` and derived ``key`` bytes."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_password_hash(encoded: str) -> ScryptHash:
    """Parse a stored hash; raises ``ValueError`` naming what is wrong (never echoing the value)."""
    match = _PHC.match(encoded.strip())
    if match is None:
        raise ValueError(
            "not a password hash of the form $scrypt$ln=..,r=..,p=..$salt$key "
            "(make one with `pipeline charger-password`)"
        )
    ln, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if not (1 <= ln <= 24 and r >= 1 and p >= 1):
        raise ValueError("password hash has out-of-range scrypt parameters")
    try:
        salt, key = _unb64(match.group(4)), _unb64(match.group(5))
    except (binascii.Error, ValueError):
        raise ValueError("password hash has invalid base64") from None
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("password hash salt or key is too short")
    return ScryptHash(1 << ln, r, p, salt, key)


def _derive(password: str, h: ScryptHash) -> bytes:
    return hashlib.scrypt(password.encode(), salt=h.salt, n=h.n, r=h.r, p=h.p, maxmem=_MAXMEM, dklen=len(h.key))


def hash_password(password: str, *, ln: int = 14, r: int = 8, p: int = 1, salt: bytes | None = None) -> str:
    """Hash ``password`` into the stored format (a fresh random salt unless one is given)."""
    if not password:
        raise ValueError("the password is empty")
    h = ScryptHash(1 << ln, r, p, salt or os.urandom(16), b"\0" * 32)
    key = _derive(password, h)
    return f"$scrypt$ln={ln},r={r},p={p}${_b64(h.salt)}${_b64(key)}"


def verify_password(password: str, encoded: str | ScryptHash) -> bool:
    """True when ``password`` matches the stored hash; the key comparison is constant-time."""
    h = parse_password_hash(encoded) if isinstance(encoded, str) else encoded
    return hmac.compare_digest(_derive(password, h), h.key)


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization: Basic ...`` header value (RFC 7617), else ``None``.

    The user-id is everything before the first colon, so the password may contain colons.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Authenticator:
    """Checks a charger's Basic credentials against ``{identity: password hash}``.

    Every refusal costs about the same: an unknown identity or a wrong username is checked against a dummy
    hash of the same cost, and both the username and the key are compared with :func:`hmac.compare_digest`,
    so timing tells an attacker nothing about which identities exist. Derivation runs in a worker thread
    so the event loop keeps serving other chargers. A successful check is remembered (as an HMAC of the
    password under a per-process random key, never the password) so a reconnecting charger is not hashed
    again until its password changes.
    """

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._hashes = {ident: parse_password_hash(encoded) for ident, encoded in credentials.items()}
        self._dummy = parse_password_hash(hash_password(os.urandom(12).hex()))
        self._memo_key = os.urandom(32)
        self._memo: dict[str, bytes] = {}

    @property
    def identities(self) -> frozenset[str]:
        return frozenset(self._hashes)

    def _memo_digest(self, identity: str, password: str) -> bytes:
        return hmac.new(self._memo_key, f"{identity}\0{password}".encode(), hashlib.sha256).digest()

    async def check(self, identity: str, header: str | None) -> str | None:
        """``None`` if the request may connect as ``identity``, else the reason (for the log, not the client)."""
        creds = parse_basic_auth(header)
        if creds is None:
            return "no Basic credentials"
        user, password = creds
        stored = self._hashes.get(identity)
        same_user = hmac.compare_digest(user.encode(), identity.encode())
        digest = self._memo_digest(identity, password)
        memo = self._memo.get(identity)
        if stored is not None and same_user and memo is not None and hmac.compare_digest(memo, digest):
            return None
        ok = await asyncio.to_thread(verify_password, password, stored or self._dummy)
        if stored is None:
            return "unknown identity"
        if not same_user:
            return "username does not match the identity in the URL"
        if not ok:
            return "wrong password"
        self._memo[identity] = digest
        return None
