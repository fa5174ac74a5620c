"""Test kit for TLS: a throw-away PKI made with ``cryptography``, written as PEM files.

:func:`make_pki` issues a CA, a server certificate for ``127.0.0.1``/``localhost`` (RSA 2048: OCPP-J 1.6
section 6.2.1 allows no larger key for the central system) and, on request, client certificates for
chargers: good ones, expired ones, ones from a rogue CA and self-signed ones (security profile 3 tests).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test CSO"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@dataclass
class Authority:
    """A CA: its certificate and key."""

    cert: x509.Certificate
    key: object

    @classmethod
    def create(cls, common_name: str, key=None) -> Authority:
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(self, common_name: str, *, server: bool = False, expired: bool = False, key=None):
        """A leaf certificate and its key; ``expired`` makes one whose validity ended yesterday."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 30 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256()), key


@dataclass
class Pki:
    """PEM files in ``folder``: ``ca`` (the CA chargers' certificates chain to), the server's certificate
    and key, and :meth:`client` for charger certificates."""

    folder: Path
    authority: Authority
    rogue: Authority
    ca: str
    server_cert: str
    server_key: str

    def client(self, stem: str, common_name: str, *, expired: bool = False, issuer: str = "ca") -> tuple[str, str]:
        """``(cert, key)`` paths of a charger certificate with ``common_name``; ``issuer`` is ``"ca"``,
        ``"rogue"`` (another CA) or ``"self"`` (self-signed)."""
        if issuer == "self":
            own = Authority.create(common_name)
            return _write(self.folder, stem, own.cert, own.key)
        cert, key = (self.authority if issuer == "ca" else self.rogue).issue(common_name, expired=expired)
        return _write(self.folder, stem, cert, key)

    def client_context(self, cert_key: tuple[str, str] | None = None) -> ssl.SSLContext:
        """A charger's TLS context: trusts the CA, presents ``cert_key`` when given."""
        context = ssl.create_default_context(cafile=self.ca)
        if cert_key is not None:
            context.load_cert_chain(*cert_key)
        return context


def make_pki(folder: Path) -> Pki:
    authority = Authority.create("Test Root CA", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    rogue = Authority.create("Rogue CA")
    ca = folder / "ca.pem"
    ca.write_bytes(authority.cert.public_bytes(serialization.Encoding.PEM))
    cert, key = authority.issue(
        "localhost", server=True, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    server_cert, server_key = _write(folder, "server", cert, key)
    return Pki(folder, authority, rogue, str(ca), server_cert, server_key)
