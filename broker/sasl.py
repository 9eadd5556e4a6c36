"""SASL server exchanges (PLAIN, SCRAM-SHA-256/512) and a Kafka connection's authentication
state. Pure: credentials come from a lookup function, nonces and clocks are inputs.

Why one generic failure: whether the user is unknown or the password wrong, the client is
told the same thing (AUTHENTICATION_FAILED_MESSAGE); the reason goes to the broker's log only.
An unknown SCRAM user even gets a server-first message with a salt derived from its name
(RFC 5802 section 9), so the exchange looks the same until the proof is checked.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from raftka.cluster import scram
from raftka.cluster.scram import ScramCredential

AUTHENTICATION_FAILED_MESSAGE = "Authentication failed: Invalid username or password"
PLAIN = "PLAIN"
ENABLED_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CredentialLookup = Callable[[str, str], ScramCredential | None]  # (user, mechanism)


class SaslFailure(Exception):
    """The exchange failed. str() is the reason for the log; clients get the generic text."""

    def __init__(self, reason: str, username: str = "") -> None:
        super().__init__(reason)
        self.username = username


class SaslServer:
    """One exchange. `step` takes the client's token and returns the server's; `done` once
    the client is authenticated as `username`."""

    mechanism: str
    username: str = ""
    done: bool = False

    def step(self, token: bytes) -> bytes:
        raise NotImplementedError


class PlainServer(SaslServer):
    """RFC 4616: one message "authzid NUL authcid NUL password", checked against the user's
    stored SCRAM credential (either mechanism: the password yields its StoredKey)."""

    mechanism = PLAIN

    def __init__(self, lookup: CredentialLookup) -> None:
        self._lookup = lookup

    def step(self, token: bytes) -> bytes:
        if self.done:
            raise SaslFailure("PLAIN takes one message")
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise SaslFailure("malformed PLAIN message")
        try:
            authzid, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            raise SaslFailure("PLAIN message is not UTF-8") from None
        if not user or not password:
            raise SaslFailure("PLAIN message without user or password", user)
        if authzid and authzid != user:
            raise SaslFailure(f"authorization id {authzid!r} differs from user", user)
        for mechanism in scram.MECHANISMS:
            credential = self._lookup(user, mechanism)
            if credential is not None:
                if not scram.password_matches(credential, password):
                    raise SaslFailure("wrong password", user)
                self.username, self.done = user, True
                return b""
        raise SaslFailure("unknown user", user)


def _attributes(message: str) -> list[tuple[str, str]]:
    out = []
    for item in message.split(","):
        if len(item) < 2 or item[1] != "=":
            raise SaslFailure(f"malformed SCRAM attribute {item[:20]!r}")
        out.append((item[0], item[2:]))
    return out


def _saslname(value: str) -> str:
    """RFC 5802's escaping of ',' and '=' in user names."""
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise SaslFailure("malformed user name escape")
    return value.replace("=2C", ",").replace("=3D", "=")


class ScramServer(SaslServer):
    """RFC 5802 without channel binding: client-first -> server-first, client-final ->
    server-final. `nonce`: fresh random printable text from the caller; `decoy_key`: a
    broker secret that makes an unknown user's decoy salt stable and unguessable."""

    def __init__(
        self, mechanism: str, lookup: CredentialLookup, nonce: str, decoy_key: bytes
    ) -> None:
        scram.hash_name(mechanism)
        self.mechanism = mechanism
        self._lookup = lookup
        self._nonce = nonce
        self._decoy_key = decoy_key
        self._state = "first"
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._full_nonce = ""

    def step(self, token: bytes) -> bytes:
        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslFailure("SCRAM message is not UTF-8", self.username) from None
        if self._state == "first":
            return self._client_first(message).encode()
        if self._state == "final":
            return self._client_final(message).encode()
        raise SaslFailure("SCRAM exchange already finished", self.username)

    def _client_first(self, message: str) -> str:
        parts = message.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or (parts[1] and not
                                                            parts[1].startswith("a=")):
            raise SaslFailure("malformed SCRAM client-first message (channel binding "
                              "is not supported)")
        self._gs2_header = f"{parts[0]},{parts[1]},"
        self._client_first_bare = parts[2]
        attributes = _attributes(parts[2])
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise SaslFailure("SCRAM client-first message needs n= and r=")
        self.username = _saslname(attributes[0][1])
        if any(key == "m" for key, _ in attributes[2:]):
            raise SaslFailure("SCRAM extensions (delegation tokens) are not supported",
                              self.username)
        authzid = parts[1][2:]
        if authzid and _saslname(authzid) != self.username:
            raise SaslFailure("authorization id differs from user", self.username)
        client_nonce = attributes[1][1]
        if not client_nonce:
            raise SaslFailure("empty client nonce", self.username)
        self._credential = self._lookup(self.username, self.mechanism)
        salt, iterations = self._salt_and_iterations()
        self._full_nonce = client_nonce + self._nonce
        self._server_first = (f"r={self._full_nonce},s={base64.b64encode(salt).decode()},"
                              f"i={iterations}")
        self._state = "final"
        return self._server_first

    def _salt_and_iterations(self) -> tuple[bytes, int]:
        if self._credential is not None:
            return self._credential.salt, self._credential.iterations
        decoy = hmac.new(self._decoy_key, f"{self.mechanism}:{self.username}".encode(),
                         "sha256").digest()
        return decoy, scram.DEFAULT_ITERATIONS

    def _client_final(self, message: str) -> str:
        self._state = "over"
        without_proof, sep, proof_text = message.rpartition(",p=")
        if not sep:
            raise SaslFailure("SCRAM client-final message without proof", self.username)
        attributes = dict(_attributes(without_proof))
        expected_binding = base64.b64encode(self._gs2_header.encode()).decode()
        if attributes.get("c") != expected_binding:
            raise SaslFailure("SCRAM channel binding does not match", self.username)
        if attributes.get("r") != self._full_nonce:
            raise SaslFailure("SCRAM nonce does not match", self.username)
        if self._credential is None:
            raise SaslFailure("unknown user", self.username)
        try:
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError:
            raise SaslFailure("SCRAM proof is not base64", self.username) from None
        mechanism, credential = self.mechanism, self._credential
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}"
        signature = scram.hmac_of(mechanism, credential.stored_key, auth_message.encode())
        if len(proof) != len(signature):
            raise SaslFailure("wrong password", self.username)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(scram.digest(mechanism, client_key), credential.stored_key):
            raise SaslFailure("wrong password", self.username)
        server_signature = scram.hmac_of(mechanism, credential.server_key,
                                         auth_message.encode())
        self.done = True
        return f"v={base64.b64encode(server_signature).decode()}"


def new_server(mechanism: str, lookup: CredentialLookup, nonce: str,
               decoy_key: bytes) -> SaslServer:
    if mechanism == PLAIN:
        return PlainServer(lookup)
    return ScramServer(mechanism, lookup, nonce, decoy_key)


# ---------------------------------------------------------------- connection state
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
API_VERSIONS = 18


@dataclass(slots=True)
class SaslConnection:
    """Where one Kafka connection on a SASL listener stands (Kafka's SaslServerAuthenticator
    with KIP-368 re-authentication). Before authentication only ApiVersions, SaslHandshake
    and SaslAuthenticate are served; after it, everything until `expires_at_ms`, after which
    only a re-authentication is (anything else closes the connection)."""

    max_reauth_ms: int  # connections.max.reauth.ms; 0: sessions never expire
    principal: str | None = None  # "User:name" once authenticated
    expires_at_ms: int | None = None
    server: SaslServer | None = None
    handshake_version: int = -1  # of the pending handshake; v0 sends raw tokens
    close_after_reply: bool = False  # a failed exchange: answer, then disconnect
    peer: str = ""  # host:port of the client, for the log of a failed attempt

    @property
    def raw_tokens(self) -> bool:
        """After a v0 SaslHandshake the client sends bare SASL tokens, not Kafka requests."""
        return self.server is not None and self.handshake_version == 0

    def allows(self, api_key: int, now_ms: int) -> bool:
        if api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            return True
        if self.principal is None or self.server is not None:
            return api_key == API_VERSIONS and self.principal is None
        return self.expires_at_ms is None or now_ms < self.expires_at_ms

    def authenticated(self, username: str, now_ms: int) -> int:
        """Record a finished exchange; returns the session lifetime in ms (0: unlimited).
        A re-authentication must keep the principal (Kafka's rule)."""
        principal = f"User:{username}"
        if self.principal is not None and principal != self.principal:
            self.server = None
            raise SaslFailure(f"re-authentication as {principal} on a connection of "
                              f"{self.principal}", username)
        self.principal = principal
        self.server = None
        if self.max_reauth_ms > 0:
            self.expires_at_ms = now_ms + self.max_reauth_ms
            return self.max_reauth_ms
        self.expires_at_ms = None
        return 0
