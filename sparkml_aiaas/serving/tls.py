"""TLS for the serving endpoints: one certificate, key and optional client CA for REST
(uvicorn) and gRPC alike, checked before anything listens.

With a client CA, both endpoints require a client certificate signed by it (mutual TLS);
bearer tokens are still required on top.  Imports no FastAPI and no grpc at module level.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Dict, Optional

from sparkml_aiaas.errors import ConfigError


@dataclass(frozen=True)
class TLSConfig:
    """PEM files: the server's certificate chain and key, and the CA client certificates
    must chain to (None: no client certificate asked for)."""

    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None

    @classmethod
    def from_flags(cls, cert_file: Optional[str], key_file: Optional[str],
                   client_ca_file: Optional[str]) -> Optional["TLSConfig"]:
        """The configuration the flags describe (None: plaintext), checked: every file
        readable, the certificate and key a pair, the CA a certificate.  Raises
        :class:`ConfigError` with one line naming the flag at fault."""
        if cert_file is None and key_file is None:
            if client_ca_file is not None:
                raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (client "
                                  "certificates are checked only over TLS)")
            return None
        if cert_file is None or key_file is None:
            given, missing = (("--tls-key", "--tls-cert") if cert_file is None
                              else ("--tls-cert", "--tls-key"))
            raise ConfigError(f"{given} needs {missing} too")
        for flag, path in (("--tls-cert", cert_file), ("--tls-key", key_file),
                           ("--tls-client-ca", client_ca_file)):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{flag} {path}: no such file")
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"{flag} {path}: not readable")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"--tls-cert {cert_file} and --tls-key {key_file} are not a "
                              f"PEM certificate and its private key ({exc.__class__.__name__})"
                              ) from None
        if client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=client_ca_file)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"--tls-client-ca {client_ca_file} is not a PEM CA "
                                  f"certificate ({exc.__class__.__name__})") from None
        return cls(cert_file, key_file, client_ca_file)

    def _read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def uvicorn_options(self) -> Dict[str, Any]:
        """``uvicorn.run``/``uvicorn.Config`` keyword arguments for REST over TLS."""
        options: Dict[str, Any] = {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        if self.client_ca_file is not None:
            options.update(ssl_ca_certs=self.client_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options

    def grpc_credentials(self):
        """``grpc.ServerCredentials`` for the gRPC port."""
        import grpc

        client_ca = self._read(self.client_ca_file) if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(self._read(self.key_file), self._read(self.cert_file))],
            root_certificates=client_ca, require_client_auth=client_ca is not None)
