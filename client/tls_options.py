"""TLS options for the SDK, the CLI and the console: which CA to trust and, for mutual TLS,
which certificate and key to present.

Why environment variables as the fallback: every SDK object (Producer, Consumer, Admin, the
console's poller, `raftka bench`) opens its own channels, and a secured cluster should not
need the options repeated at each. An explicit `tls=` wins; else RAFTKA_TLS_CA /
RAFTKA_TLS_CERT / RAFTKA_TLS_KEY (or RAFTKA_TLS=1 for TLS with the system's CAs) apply
to every channel of the process; RAFTKA_TLS=0 turns them off. The CLI sets those from
`--tls-ca/--tls-cert/--tls-key`, or from the local cluster's cluster.json when
`raftka cluster up --tls` made it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

CA_ENV, CERT_ENV, KEY_ENV, TLS_ENV = "RAFTKA_TLS_CA", "RAFTKA_TLS_CERT", "RAFTKA_TLS_KEY", \
    "RAFTKA_TLS"


class TlsOptionsError(ValueError):
    """A TLS option names a file that cannot be used; the message names the option."""


@dataclass(frozen=True, slots=True)
class TlsOptions:
    ca: str = ""  # PEM file of the CA that signed the brokers' certificates; "": system CAs
    cert: str = ""  # PEM certificate to present (mutual TLS); needs `key`
    key: str = ""  # its private key (PEM, unencrypted)

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise TlsOptionsError("a client certificate needs its key and a key its "
                                  "certificate (--tls-cert and --tls-key together)")

    def _read(self, path: str, option: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise TlsOptionsError(f"{option} {path}: {exc.strerror}") from None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.ca, "TLS CA file"),
            private_key=self._read(self.key, "TLS key file"),
            certificate_chain=self._read(self.cert, "TLS certificate file"))

    def environment(self) -> dict[str, str]:
        """The variables that make `from_env` give these options (for child processes)."""
        return {TLS_ENV: "1", CA_ENV: self.ca, CERT_ENV: self.cert, KEY_ENV: self.key}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsOptions | None:
        """Options from RAFTKA_TLS_*; None (plaintext) when none is set or RAFTKA_TLS=0."""
        env = os.environ if env is None else env
        if env.get(TLS_ENV) == "0":
            return None
        ca, cert, key = env.get(CA_ENV, ""), env.get(CERT_ENV, ""), env.get(KEY_ENV, "")
        if not (ca or cert or key or env.get(TLS_ENV, "") not in ("", "0")):
            return None
        return cls(ca, cert, key)


def resolve(explicit: TlsOptions | None) -> TlsOptions | None:
    return explicit if explicit is not None else TlsOptions.from_env()
