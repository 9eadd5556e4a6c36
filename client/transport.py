"""gRPC channels to brokers: one per address, shared by the SDK's objects, with limits.

The SDK is synchronous (kafka-python style); it uses grpc's sync channels, whose `.future()`
calls let one thread keep several brokers busy at once.
"""

from __future__ import annotations

import os
import threading

import grpc

from raftka.client.credentials import Credentials, with_credentials
from raftka.client.credentials import resolve as resolve_credentials
from raftka.client.errors import BrokerNotAvailableError, RequestTimedOutError
from raftka.client.tls_options import TlsOptions, resolve
from raftka.proto.raftka.v1 import admin_pb2_grpc, broker_pb2_grpc

# Every broker of the default local cluster (`make cluster`: 3 brokers from base port 9090,
# 10 apart; client/local_cluster.py), so the SDK and CLI carry on when any one is down.
DEFAULT_BOOTSTRAP = "127.0.0.1:9090,127.0.0.1:9100,127.0.0.1:9110"
BOOTSTRAP_ENV = "RAFTKA_BOOTSTRAP"
MESSAGE_MAX_BYTES = 128 * 1024 * 1024


def bootstrap_list(bootstrap: str | list[str] | None) -> list[str]:
    """Addresses from the argument, else $RAFTKA_BOOTSTRAP, else the default local cluster's
    brokers. Accepts "h:p,h:p" or a list; an address given twice counts once."""
    if bootstrap is None:
        bootstrap = os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    addresses = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bootstrap address {address!r} must be HOST:PORT")
    if not addresses:
        raise ValueError("no bootstrap address given")
    return addresses


class Connections:
    """`tls`: the TLS options of every channel; None: from $RAFTKA_TLS_* (plaintext when
    unset; client/tls_options.py). `credentials`: the user every call authenticates as;
    None: from $RAFTKA_USER/$RAFTKA_PASSWORD (anonymous when unset; client/credentials.py)."""

    def __init__(self, tls: TlsOptions | None = None,
                 credentials: Credentials | None = None) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self.tls = resolve(tls)
        self._credentials = self.tls.channel_credentials() if self.tls is not None else None
        self.user = credentials if credentials is not None else resolve_credentials(None, None)

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                options = [
                    ("grpc.max_receive_message_length", MESSAGE_MAX_BYTES),
                    ("grpc.max_send_message_length", MESSAGE_MAX_BYTES),
                    ("grpc.enable_retries", 0),
                ]
                channel = (
                    grpc.insecure_channel(address, options=options)
                    if self._credentials is None
                    else grpc.secure_channel(address, self._credentials, options=options)
                )
                channel = with_credentials(channel, self.user)
                self._channels[address] = channel
            return channel

    def broker(self, address: str) -> broker_pb2_grpc.BrokerServiceStub:
        return broker_pb2_grpc.BrokerServiceStub(self.channel(address))

    def admin(self, address: str) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel(address))

    def forget(self, address: str) -> None:
        with self._lock:
            channel = self._channels.pop(address, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def translate_rpc_error(exc: grpc.RpcError, address: str) -> Exception:
    """A transport failure as an SDK exception (retriable ones say so)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimedOutError(f"broker {address} did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        return BrokerNotAvailableError(
            f"broker {address} is not reachable ({_unavailable_reason(details, address)})"
        )
    from raftka.client.errors import (
        AuthenticationError,
        AuthorizationError,
        InvalidRequestError,
        RaftkaError,
    )

    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(f"broker {address} refused the credentials: {details}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AuthorizationError(f"broker {address} refused: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return InvalidRequestError(f"broker {address} refused the request: {details}")
    return RaftkaError(f"broker {address} failed: {code.name if code else '?'} {details}")


def _unavailable_reason(details: str | None, address: str) -> str:
    """gRPC's UNAVAILABLE details, short and without the address again (the message names
    it once): "connection refused" for a broker that is down."""
    text = details or "unavailable"
    if "Connection refused" in text:
        return "connection refused"
    lowered = text.lower()
    if "handshake" in lowered or "certificate" in lowered or "ssl" in lowered:
        return (f"TLS handshake failed: {_tls_reason(text)}; check the CA (--tls-ca), under "
                "mutual TLS the client certificate (--tls-cert/--tls-key), and that the "
                "broker serves TLS")
    if "Socket closed" in text or "Connection reset" in text:
        # What a plaintext client sees from a TLS port, and (TLS 1.3) a client whose
        # certificate the broker refused after the handshake.
        return ("the broker closed the connection: if it serves TLS, connect with TLS "
                "(--tls-ca or RAFTKA_TLS_CA); if it requires client certificates, present one "
                "its CA signed (--tls-cert/--tls-key)")
    for form in (f"ipv4:{address}: ", f"ipv4:{address}", f"{address}: ", address):
        text = text.replace(form, "")
    return text.strip() or "unavailable"


def _tls_reason(text: str) -> str:
    """The useful end of gRPC's handshake error ("CERTIFICATE_VERIFY_FAILED: unable to get
    local issuer certificate"), not its whole chain."""
    for marker in ("OPENSSL_internal:", "SSL routines:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text.removesuffix(": OK").strip() or "unknown reason"
