"""TLS for servers and channels, and bearer tokens for the client-facing API.

Server: a certificate and key turn TLS on; a CA file on top turns on mutual TLS, so internal services accept
only callers whose certificates that CA signed. The server's files are read again when they change: cert-manager
renews the Secret, the kubelet swaps the mounted files (atomically, through its `..data` symlink), and the next
connection's handshake gets the new certificate without a restart. Tokens: a file with one token per line (a
mounted Kubernetes Secret), re-read when it changes so a rotated Secret takes effect without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


# What identifies a version of a file: stat follows the kubelet's symlinks, so a swapped `..data` shows as another
# inode even when size and mtime happen to match. None: the file cannot be stat'ed right now.
_Stamp = tuple[tuple[int, int, int, int] | None, ...]

_FIRST_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


class _Unusable(Exception):
    """The files on disk do not make a usable certificate configuration (yet)."""


@dataclass(frozen=True)
class _Material:
    key: bytes
    cert: bytes
    ca: bytes | None

    @property
    def sha256(self) -> str:
        """The leaf certificate's fingerprint, as `openssl x509 -fingerprint -sha256` prints it (without colons)."""
        found = _FIRST_PEM_CERT.search(self.cert)
        der = base64.b64decode(b"".join(found.group(1).split())) if found else self.cert
        return hashlib.sha256(der).hexdigest()

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.ca)


class ReloadingServerCertificate:
    """The server's key, certificate and client CA, read again when the files change on disk.

    gRPC calls `fetch` on every new handshake. It stats the three files (cheap) and reads them only when a stamp
    changed; a new configuration is handed over only when the contents changed and make a usable set (the key
    matches the certificate, the CA parses). Anything else (a half-written file, a key of another certificate)
    keeps the configuration in use, with one warning per change of the files.
    """

    def __init__(self, tls: TlsFiles) -> None:
        if tls.cert is None or tls.key is None:
            raise ConfigError("TLS needs both a certificate and a key")
        self.cert_path, self.key_path, self.ca_path = tls.cert, tls.key, tls.ca
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()
        for path, what in ((tls.key, "TLS key"), (tls.cert, "TLS certificate"), (tls.ca, "client CA")):
            if path is not None:
                _read(path, what)  # the usual "cannot read" message for a missing or unreadable file
        try:
            self._material = self._load()
        except _Unusable as exc:
            raise ConfigError(str(exc)) from exc
        log.info("TLS certificate loaded", extra={"certificate": str(self.cert_path), "sha256": self.sha256})

    @property
    def requires_client_certificate(self) -> bool:
        return self.ca_path is not None

    @property
    def sha256(self) -> str:
        """The fingerprint of the certificate served to new connections."""
        return self._material.sha256

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._material.configuration(),
            self.fetch,  # type: ignore[arg-type]  # grpc-stubs leave out the None ("unchanged") gRPC documents
            require_client_authentication=self.requires_client_certificate,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed into a usable one, else None (keep the one in use)."""
        try:
            with self._lock:
                return self._fetch()
        except Exception:  # an exception must never reach gRPC's handshake: keep serving what we have
            log.exception("checking the TLS files for a renewed certificate failed")
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return None
        try:
            material = self._load()
        except _Unusable as exc:
            if self._current_stamp() != stamp:
                return None  # changing under our feet: look again on the next handshake
            self._stamp = stamp  # warn once for these files, not on every handshake
            log.warning(
                "TLS files changed but are not usable; still serving the previous certificate: %s",
                exc,
                extra={"certificate": str(self.cert_path), "sha256": self.sha256},
            )
            return None
        if self._current_stamp() != stamp:
            return None  # read while being replaced: what was checked may not be what was read
        self._stamp = stamp
        if material == self._material:
            return None  # touched, or swapped for the same contents
        previous, self._material = self._material, material
        log.info(
            "TLS certificate reloaded",
            extra={"certificate": str(self.cert_path), "sha256": material.sha256, "previous_sha256": previous.sha256},
        )
        return material.configuration()

    def _paths(self) -> tuple[Path, ...]:
        return (self.cert_path, self.key_path) + ((self.ca_path,) if self.ca_path is not None else ())

    def _current_stamp(self) -> _Stamp:
        stamps: list[tuple[int, int, int, int] | None] = []
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> _Material:
        """Reads the files and checks them with OpenSSL (Python's ssl), as gRPC would use them."""
        try:
            key = self.key_path.read_bytes()
            cert = self.cert_path.read_bytes()
            ca = self.ca_path.read_bytes() if self.ca_path is not None else None
        except OSError as exc:
            raise _Unusable(f"cannot read {exc.filename}: {exc.strerror}") from exc
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # Fails when the key is not the certificate's (KEY_VALUES_MISMATCH) or either does not parse.
            context.load_cert_chain(self.cert_path, self.key_path)
        except (ssl.SSLError, OSError) as exc:
            raise _Unusable(f"TLS key {self.key_path} and certificate {self.cert_path} are not a pair: {exc}") from exc
        if ca is not None:
            try:
                context.load_verify_locations(cadata=ca.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                raise _Unusable(f"client CA {self.ca_path} holds no usable certificate: {exc}") from exc
        return _Material(key=key, cert=cert, ca=ca)


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server TLS (mutual when `tls.ca` is set) that picks up renewed files on the next handshake."""
    return ReloadingServerCertificate(tls).credentials()


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Verifies the server against `ca`; presents `cert`/`key` too when given (mutual TLS)."""
    root = _read(tls.ca, "CA") if tls.ca is not None else None
    key = _read(tls.key, "TLS key") if tls.key is not None else None
    cert = _read(tls.cert, "TLS certificate") if tls.cert is not None else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


class TokenFile:
    """The set of accepted bearer tokens, re-read when the file's mtime changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._tokens: tuple[bytes, ...] = ()
        self._reload()
        if not self._tokens:
            raise ConfigError(f"token file {path} holds no token")

    def _reload(self) -> None:
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError as exc:
            raise ConfigError(f"cannot read token file {self._path}: {exc.strerror}") from exc
        if mtime == self._mtime:
            return
        lines = self._path.read_text().splitlines()
        self._tokens = tuple(line.strip().encode() for line in lines if line.strip())
        self._mtime = mtime

    def accepts(self, token: str) -> bool:
        try:
            self._reload()
        except ConfigError:
            return False  # a vanished file accepts nobody rather than everybody
        candidate = token.encode()
        # Compare against every token in constant time so timing reveals nothing.
        return any(hmac.compare_digest(candidate, known) for known in self._tokens)
