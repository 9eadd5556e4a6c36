"""A user's credentials on every gRPC call of the SDK and CLI.

How: brokers whose gRPC listener is SASL_PLAINTEXT or SASL_SSL want `x-raftka-user` and
`x-raftka-password` metadata on each call (broker/grpc_security.py checks the password
against the user's salted SCRAM credential). A channel interceptor adds them, so every
stub of a channel carries them without each call site knowing. Use TLS (SASL_SSL) outside a
lab: the password travels with every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

USER_ENV = "RAFTKA_USER"
PASSWORD_ENV = "RAFTKA_PASSWORD"
USER_HEADER = "x-raftka-user"
PASSWORD_HEADER = "x-raftka-password"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("credentials need a user name")
        if not self.password:
            raise ValueError(f"user {self.username!r} needs a password "
                             f"(--password-file, or ${PASSWORD_ENV})")

    @classmethod
    def from_env(cls) -> Credentials | None:
        user = os.environ.get(USER_ENV)
        if not user:
            return None
        return cls(user, os.environ.get(PASSWORD_ENV, ""))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((USER_HEADER, self.username), (PASSWORD_HEADER, self.password))


def resolve(username: str | None, password: str | None) -> Credentials | None:
    """Explicit ones, else $RAFTKA_USER/$RAFTKA_PASSWORD, else none (anonymous)."""
    if username:
        return Credentials(username, password or "")
    return Credentials.from_env()


class _ClientCallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, details: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class CredentialsInterceptor(grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
                             grpc.UnaryStreamClientInterceptor,
                             grpc.StreamStreamClientInterceptor):
    def __init__(self, credentials: Credentials) -> None:
        self._extra = list(credentials.metadata())

    def _with(self, details: Any) -> _ClientCallDetails:
        metadata = [m for m in (details.metadata or ())
                    if m[0] not in (USER_HEADER, PASSWORD_HEADER)]
        return _ClientCallDetails(details, metadata + self._extra)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any,
                               request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any,
                                requests: Any) -> Any:
        return continuation(self._with(details), requests)


def with_credentials(channel: grpc.Channel, credentials: Credentials | None) -> grpc.Channel:
    if credentials is None:
        return channel
    return grpc.intercept_channel(channel, CredentialsInterceptor(credentials))
