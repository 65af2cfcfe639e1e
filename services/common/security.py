"""TLS for servers and channels, and bearer tokens for the client-facing API.

Server: a certificate and key turn TLS on; a CA file on top turns on mutual TLS, so internal services accept
only callers whose certificates that CA signed. Tokens: a file with one token per line (a mounted Kubernetes
Secret), re-read when it changes so a rotated Secret takes effect without a restart.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.errors import ConfigError


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


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    if tls.cert is None or tls.key is None:
        raise ConfigError("TLS needs both a certificate and a key")
    pair = (_read(tls.key, "TLS key"), _read(tls.cert, "TLS certificate"))
    client_ca = _read(tls.ca, "client CA") if tls.ca is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


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
