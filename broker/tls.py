"""TLS for the broker's listeners and for its calls to other brokers, from PEM files.

Why here and not in each listener: the Kafka listener (asyncio, an `ssl.SSLContext`), the
gRPC listeners (`grpc.ssl_server_credentials`) and this broker's own gRPC calls to the others
(replication fetches, controller calls, liveness watches: `grpc.ssl_channel_credentials`) all
use the same certificate, key and CA, checked once at start-up so a missing file or a key that
does not belong to its certificate stops the broker with a message naming the setting, not
the first client's handshake.

Settings are named as in librdkafka and Redpanda (PEM files, not Java keystores):
`ssl.certificate.location`, `ssl.key.location`, `ssl.ca.location`, and Kafka's
`ssl.client.auth` = none | requested | required (mutual TLS). Under mutual TLS this broker
presents its own certificate when it calls the others, so one certificate per broker, valid
both as server and as client, is all a cluster needs (cluster/local_ca.py makes such ones).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from raftka.broker.config import BrokerConfig, ConfigError

CLIENT_AUTH_NONE, CLIENT_AUTH_REQUESTED, CLIENT_AUTH_REQUIRED = "none", "requested", "required"
CLIENT_AUTH_MODES = (CLIENT_AUTH_NONE, CLIENT_AUTH_REQUESTED, CLIENT_AUTH_REQUIRED)
# The oldest TLS a listener accepts: 1.2 (1.0 and 1.1 are deprecated, RFC 8996).
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


class TlsConfigError(ConfigError):
    """A TLS setting or file that cannot be used; the message names the setting and file."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files a broker serves TLS with (and presents when it calls other brokers)."""

    certificate: str  # ssl.certificate.location: this broker's certificate (chain)
    key: str  # ssl.key.location: its private key, unencrypted
    ca: str  # ssl.ca.location: CA(s) that sign peers' and clients' certificates; "" = none
    client_auth: str = CLIENT_AUTH_NONE  # ssl.client.auth


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Loaded TLS material: what the listeners and the internal channels are built from."""

    files: TlsFiles
    certificate_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None

    @property
    def client_auth(self) -> str:
        return self.files.client_auth

    def kafka_server_context(self) -> ssl.SSLContext:
        """For asyncio.start_server: the Kafka SSL / SASL_SSL listeners."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_TLS_VERSION
        context.load_cert_chain(self.files.certificate, self.files.key)
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem.decode())
        context.verify_mode = {
            CLIENT_AUTH_NONE: ssl.CERT_NONE,
            CLIENT_AUTH_REQUESTED: ssl.CERT_OPTIONAL,
            CLIENT_AUTH_REQUIRED: ssl.CERT_REQUIRED,
        }[self.client_auth]
        return context

    def client_context(self) -> ssl.SSLContext:
        """For this broker's own asyncio connections to the others (the replication
        stream): as grpc_channel_credentials — trust the CA, check the host name, present
        this broker's certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = MINIMUM_TLS_VERSION
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem.decode())
        else:
            context.load_default_certs()
        context.load_cert_chain(self.files.certificate, self.files.key)
        return context

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        """For the gRPC SSL / SASL_SSL listeners. grpcio offers only "require a verified
        client certificate" or "ask for none", so `requested` asks for none on gRPC (a gRPC
        client then proves who it is by SASL credentials; README "Security")."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.certificate_pem)], root_certificates=self.ca_pem,
            require_client_auth=self.client_auth == CLIENT_AUTH_REQUIRED)

    def grpc_channel_credentials(self) -> grpc.ChannelCredentials:
        """For this broker's calls to the others: trust the CA, present this broker's
        certificate (needed under mutual TLS, harmless otherwise)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem,
            certificate_chain=self.certificate_pem)


def _read(path: str, setting: str) -> bytes:
    if not path:
        raise TlsConfigError(f"{setting} is required for a TLS listener (a PEM file)")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise TlsConfigError(f"{setting}: {path} does not exist") from None
    except OSError as exc:
        raise TlsConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsConfigError(f"{setting}: {path} is not a PEM file")
    return data


def load(files: TlsFiles) -> BrokerTls:
    """Read and check the files: each exists and is PEM, the key belongs to the certificate,
    the CA parses; mutual TLS needs a CA. Raises TlsConfigError naming what is wrong."""
    if files.client_auth not in CLIENT_AUTH_MODES:
        raise TlsConfigError(f"ssl.client.auth is {files.client_auth!r}; use one of "
                             f"{', '.join(CLIENT_AUTH_MODES)}")
    certificate = _read(files.certificate, "ssl.certificate.location")
    key = _read(files.key, "ssl.key.location")
    ca = _read(files.ca, "ssl.ca.location") if files.ca else None
    if ca is None and files.client_auth != CLIENT_AUTH_NONE:
        raise TlsConfigError(f"ssl.client.auth={files.client_auth} needs ssl.ca.location "
                             "(the CA that signs client certificates)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.certificate, files.key)
    except ssl.SSLError as exc:
        reason = ("the key does not belong to the certificate"
                  if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc)
                  else f"cannot load them: {exc.reason or exc}")
        raise TlsConfigError(f"ssl.certificate.location {files.certificate} and "
                             f"ssl.key.location {files.key}: {reason}") from None
    if ca is not None:
        try:
            context.load_verify_locations(cadata=ca.decode())
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise TlsConfigError(
                f"ssl.ca.location {files.ca}: not a usable CA certificate ({exc})") from None
    return BrokerTls(files, certificate, key, ca)


def files_exist(files: TlsFiles) -> bool:
    """All the named files exist (for callers deciding whether to make them)."""
    return all(os.path.exists(path) for path in (files.certificate, files.key, files.ca) if path)


def files_of(config: BrokerConfig) -> TlsFiles:
    return TlsFiles(config.ssl_certificate_location, config.ssl_key_location,
                    config.ssl_ca_location, config.ssl_client_auth)


def for_broker(config: BrokerConfig) -> BrokerTls | None:
    """The broker's loaded TLS material when any listener serves TLS, else None."""
    return load(files_of(config)) if config.uses_tls else None


def aio_channel(target: str, credentials: grpc.ChannelCredentials | None,
                options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel to another broker: TLS when the cluster's gRPC listeners are TLS."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)
