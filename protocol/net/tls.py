"""Certificates for mutual TLS: a deployment CA, the server's and each client's certificate.

ECDSA P-256 keys, SHA-256 signatures, X.509 v3 with the usual constraints: the CA is
``CA:TRUE, pathlen 0`` and may only sign certificates; a leaf is ``CA:FALSE`` with the
extended key usage of its role (serverAuth or clientAuth). The server certificate names the
server by DNS (``secagg-server``, ``localhost``) and by IP address; client certificates carry
no alternative name, so a client certificate can never pass as the server's.

A client's identity is the SHA-256 fingerprint of its DER certificate, listed in the registry
(:mod:`protocol.net.settings`): holding *a* certificate from the CA is not enough to join.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertificateError

SERVER_NAME = "secagg-server"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


def _builder(subject: str, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str = "secagg deployment CA", days: int = 365
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    cert = (_builder(name, _name(name), key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert: x509.Certificate, common_name: str, *, server: bool,
              hosts: tuple[str, ...] = ("127.0.0.1",), days: int = 365
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server (``server=True``: DNS and IP alternative names for ``hosts``) or client
    certificate signed by the CA."""
    key = new_key()
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (_builder(common_name, ca_cert.subject, key.public_key(), days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(_usage(ca=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the DER certificate, lowercase hex. Accepts a certificate or PEM bytes;
    raises CertificateError if the bytes are not a PEM certificate."""
    if isinstance(cert, bytes):
        try:
            cert = x509.load_pem_x509_certificate(cert)
        except ValueError as exc:
            raise CertificateError(f"not a PEM certificate: {exc}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (created 0600, never world-readable).
    Raises OSError if the file cannot be written."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_pem(path: Path, what: str) -> bytes:
    """The PEM bytes in ``path`` (``what`` names the file in errors). Raises
    CertificateError if the file cannot be read or is not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise CertificateError(f"the {what} {path} is not PEM")
    return data
