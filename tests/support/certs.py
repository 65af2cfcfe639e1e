"""A throw-away CA with a server certificate (for 127.0.0.1/localhost) and a client certificate; more server
certificates from the same CA (a renewal) with `issue_server_cert`."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertSet:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    ca_key: Path


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


SERVER_SAN: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common: str, san: list[x509.GeneralName]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def issue_server_cert(certs: CertSet, cert_path: Path, key_path: Path, common: str = "thinkmesh-server") -> int:
    """Another server certificate from `certs`' CA (for 127.0.0.1/localhost, a new key): a renewal. Returns its
    serial number."""
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = _leaf(ca, ca_key, common, SERVER_SAN)
    _write_cert(cert, cert_path)
    _write_key(key, key_path)
    return int(cert.serial_number)


def make_certs(directory: Path) -> CertSet:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("thinkmesh test CA"))
        .issuer_name(_name("thinkmesh test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    server, server_key = _leaf(ca, ca_key, "thinkmesh-server", SERVER_SAN)
    client, client_key = _leaf(ca, ca_key, "thinkmesh-client", [x509.DNSName("thinkmesh-client")])
    paths = CertSet(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        ca_key=directory / "ca.key",
    )
    _write_cert(ca, paths.ca)
    _write_cert(server, paths.server_cert)
    _write_cert(client, paths.client_cert)
    _write_key(ca_key, paths.ca_key)
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    return paths
