"""TLS for the router's gRPC port: server credentials that follow certificate files on disk.
(The client side is `router.client.TlsConfig`.)

gRPC asks the credentials' fetcher for a newer configuration at every TLS handshake, so a
certificate rotated on disk (cert-manager, a renewed Kubernetes Secret) applies to the next
new connection without a restart; established connections keep the certificate they were
opened with. A file set that does not load (half written, a key that does not match the
certificate) is logged and the previous certificates stay in use.
"""

import logging
import ssl
import threading
from pathlib import Path

import grpc

from router.settings import RouterSettings

__all__ = ["ServerCertificates", "server_credentials"]

_log = logging.getLogger(__name__)

# (inode, mtime, size) of each file: a Kubernetes Secret update swaps a symlink, so the
# inode changes even where the copy keeps its mtime.
_Stamp = tuple[tuple[int, int, int], ...]


class _Changing(Exception):
    """A file changed while it was read; the next handshake tries again."""


def _read(paths: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]


class ServerCertificates:
    """The router's certificate chain and key, and the CA that client certificates must
    chain to when mutual TLS is on; `credentials()` builds the port's gRPC credentials."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._client_ca_file = client_ca_file
        self._paths = [cert_file, key_file, *([client_ca_file] if client_ca_file else [])]
        self._lock = threading.Lock()
        self._seen = self._stamp()
        try:
            self._initial = self._load()
        except _Changing:
            raise ValueError(f"TLS files changed while the router read them: {cert_file}") from None

    def _stamp(self) -> _Stamp:
        stats = [path.stat() for path in self._paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        """The files as a gRPC configuration; ValueError (with the reason) if they are not a
        usable set, _Changing if they changed while being read."""
        try:
            contents = _read(self._paths)
            # gRPC accepts any bytes here and fails each handshake later, so check first.
            # An encrypted key fails (password "") instead of prompting: gRPC cannot use one.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._cert_file, self._key_file, password="")
            if self._client_ca_file is not None:
                context.load_verify_locations(cadata=contents[2].decode("ascii"))
            if _read(self._paths) != contents:
                raise _Changing
        except (OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ValueError(
                f"TLS certificate {self._cert_file}, key {self._key_file}"
                + (f", client CA {self._client_ca_file}" if self._client_ca_file else "")
                + f" are not a usable PEM set: {reason}"
            ) from None
        return grpc.ssl_server_certificate_configuration(
            [(contents[1], contents[0])],
            root_certificates=contents[2] if self._client_ca_file is not None else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called on its own threads: a new configuration when the files
        changed since the last look, else None (keep the current one)."""
        with self._lock:
            try:
                stamp = self._stamp()
            except OSError as exc:
                _log.warning("TLS certificates not reloaded, keeping the previous ones: %s", exc)
                return None
            if stamp == self._seen:
                return None
            try:
                config = self._load()
            except _Changing:
                return None
            except ValueError as exc:
                # Remembered, so a bad set is reported once, not at every handshake.
                self._seen = stamp
                _log.warning("%s; keeping the previous certificates", exc)
                return None
            self._seen = stamp
            _log.info("TLS certificates reloaded from %s", self._cert_file)
            return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,
            require_client_authentication=self._client_ca_file is not None,
        )


def server_credentials(settings: RouterSettings) -> grpc.ServerCredentials | None:
    """The gRPC port's TLS credentials; None when TLS is off (no certificate configured)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    certificates = ServerCertificates(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    _log.info(
        "TLS on the gRPC port with %s%s",
        settings.tls_cert_file,
        "" if settings.tls_client_ca_file is None else ", client certificates required",
    )
    return certificates.credentials()
