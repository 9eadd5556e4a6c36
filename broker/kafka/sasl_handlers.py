"""Kafka SaslHandshake (17, v0-1) and SaslAuthenticate (36, v0-2): SASL on SASL_PLAINTEXT and
SASL_SSL listeners, with KIP-368 re-authentication (SaslAuthenticate v1+ tells the client
its session lifetime, connections.max.reauth.ms; the listener disconnects a client that
goes past it without re-authenticating).

The exchanges themselves are broker/sasl.py's; here is only the Kafka framing: the
connection's state travels in `request.sasl`, and a failure answers
SASL_AUTHENTICATION_FAILED with the one generic message, logs user + peer, and disconnects
(as Kafka does).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka.codec import Request
from raftka.broker.sasl import (
    AUTHENTICATION_FAILED_MESSAGE,
    SaslConnection,
    SaslFailure,
    new_server,
)

UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
NONCE_BYTES = 24


def now_ms() -> int:
    """Session expiry runs on the monotonic clock (wall-clock jumps do not end sessions)."""
    return int(time.monotonic() * 1000)


async def sasl_handshake(core: BrokerCore, request: Request) -> dict[str, Any]:
    session: SaslConnection | None = request.sasl
    mechanisms = list(core.security.mechanisms)
    if session is None:
        return {"error_code": ILLEGAL_SASL_STATE, "mechanisms": []}
    mechanism = request.body.mechanism
    if mechanism not in mechanisms:
        session.close_after_reply = session.principal is None
        return {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": mechanisms}
    session.server = new_server(mechanism, core.security.credential,
                                secrets.token_urlsafe(NONCE_BYTES), core.security.decoy_key)
    session.handshake_version = request.api_version
    return {"error_code": 0, "mechanisms": mechanisms}


async def sasl_authenticate(core: BrokerCore, request: Request) -> dict[str, Any]:
    session: SaslConnection | None = request.sasl
    if session is None or session.server is None:
        if session is not None:
            session.close_after_reply = True
        return {"error_code": ILLEGAL_SASL_STATE, "auth_bytes": b"",
                "error_message": "SaslAuthenticate without a SaslHandshake before it"}
    try:
        challenge, lifetime = step(core, session, bytes(request.body.auth_bytes),
                                   session.peer or request.host)
    except SaslFailure:
        return {"error_code": SASL_AUTHENTICATION_FAILED, "auth_bytes": b"",
                "error_message": AUTHENTICATION_FAILED_MESSAGE, "session_lifetime": 0}
    return {"error_code": 0, "auth_bytes": challenge, "error_message": None,
            "session_lifetime": lifetime}


def step(core: BrokerCore, session: SaslConnection, token: bytes,
         peer: Any) -> tuple[bytes, int]:
    """One token through the exchange: (reply, session lifetime ms once done). A failure is
    logged, ends the exchange and marks the connection to close; SaslFailure goes up."""
    server = session.server
    assert server is not None
    try:
        challenge = server.step(token)
        lifetime = session.authenticated(server.username, now_ms()) if server.done else 0
    except SaslFailure as failure:
        session.server = None
        session.close_after_reply = True
        core.security.authentication_failed(failure.username, peer,
                                            f"{server.mechanism}: {failure}", "Kafka SASL")
        raise
    return challenge, lifetime
