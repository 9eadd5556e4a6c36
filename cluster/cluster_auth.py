"""Proof of cluster membership for broker-to-broker calls. Pure: time and secret are inputs.

Why: the controller's RPCs (RegisterBroker, BrokerHeartbeat, AlterPartition,
AllocateProducerIds), forwarded admin calls and replica fetches share the client port; without
proof, anyone who reaches it can re-register a broker id (fencing it) or change an ISR. Every
such call carries a token in gRPC metadata:

    v1.<broker id>.<unix ms>.<hex HMAC-SHA256(key, "raftka-internal-v1|method|id|ms")>

keyed with a key derived from the cluster secret and bound to the gRPC method, so a token for
BrokerHeartbeat cannot be replayed as AlterPartition. The receiver accepts it only within
`max_skew_ms` of its own clock.

Limits (said in README too): this is authentication, not encryption; on a network someone
can listen to, a captured token can be replayed for the same method within the skew window.
Client TLS / mTLS is what closes that.

The replication listener (broker/replication/stream_wire.py) authenticates a connection once,
by challenge and response: `handshake_proof` is an HMAC over both sides' fresh nonces and the
follower's broker id, so a recorded handshake proves nothing on a later connection.

The Raft transport uses a different key derived from the same secret (`raft_password`), so
the two uses never share key material.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

# The HTTP/2 metadata key the token travels in.
AUTH_HEADER = "x-raftka-cluster-auth"
TOKEN_VERSION = "v1"
# A cluster secret shorter than this is refused at start-up (bytes, after stripping).
CLUSTER_SECRET_MIN_BYTES = 16
# Default tolerance between the caller's and the receiver's clocks.
DEFAULT_MAX_CLOCK_SKEW_MS = 120_000

_TOKEN_DOMAIN = b"raftka-internal-v1"
_RAFT_DOMAIN = b"raftka-raft-v1"
_REPLICATION_DOMAIN = b"raftka-replication-v1"
# Length of a replication handshake proof (HMAC-SHA256), bytes.
HANDSHAKE_PROOF_BYTES = 32


class ClusterAuthError(Exception):
    """The call did not prove cluster membership; the message says what was wrong."""


def validate_secret(secret: bytes, source: str) -> bytes:
    """The secret as used (surrounding whitespace stripped); refuses short or empty ones."""
    stripped = secret.strip()
    if len(stripped) < CLUSTER_SECRET_MIN_BYTES:
        raise ValueError(
            f"cluster secret from {source} is {len(stripped)} bytes; at least "
            f"{CLUSTER_SECRET_MIN_BYTES} are needed (raftka cluster up makes a 64-character one)"
        )
    return stripped


def _token_key(secret: bytes) -> bytes:
    return hmac.new(secret, _TOKEN_DOMAIN, hashlib.sha256).digest()


def raft_password(secret: bytes) -> str:
    """The password pysyncobj derives its Fernet key from (see cluster/raft.py)."""
    return hmac.new(secret, _RAFT_DOMAIN, hashlib.sha256).hexdigest()


def _mac(key: bytes, method: str, broker_id: int, now_ms: int) -> str:
    message = b"|".join(
        (_TOKEN_DOMAIN, method.encode(), str(broker_id).encode(), str(now_ms).encode())
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _handshake_mac(key: bytes, follower_nonce: bytes, leader_nonce: bytes, broker_id: int) -> bytes:
    message = b"|".join(
        (_REPLICATION_DOMAIN, follower_nonce, leader_nonce, str(broker_id).encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


class ClusterCredentials:
    """Signs tokens with the cluster secret and accepts tokens signed with it or with any of
    `also_accepted` (the other secret while a secret is being rotated)."""

    def __init__(
        self,
        secret: bytes,
        max_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
        also_accepted: Sequence[bytes] = (),
    ) -> None:
        if max_skew_ms <= 0:
            raise ValueError(f"max_skew_ms must be positive, got {max_skew_ms}")
        self._key = _token_key(validate_secret(secret, "the configuration"))
        self._accepted = [self._key] + [
            _token_key(validate_secret(other, "the configuration")) for other in also_accepted
        ]
        self.max_skew_ms = max_skew_ms

    def token(self, method: str, broker_id: int, now_ms: int) -> str:
        return f"{TOKEN_VERSION}.{broker_id}.{now_ms}.{_mac(self._key, method, broker_id, now_ms)}"

    def handshake_proof(self, follower_nonce: bytes, leader_nonce: bytes, broker_id: int) -> bytes:
        """The follower's answer to a replication listener's challenge."""
        return _handshake_mac(self._key, follower_nonce, leader_nonce, broker_id)

    def handshake_proven(
        self, proof: bytes, follower_nonce: bytes, leader_nonce: bytes, broker_id: int
    ) -> bool:
        """`proof` answers this challenge with the cluster secret (or a rotation one)."""
        return any(
            hmac.compare_digest(_handshake_mac(key, follower_nonce, leader_nonce, broker_id), proof)
            for key in self._accepted
        )

    def verify(self, token: str | None, method: str, now_ms: int) -> int:
        """The caller's broker id, or ClusterAuthError saying why the token is refused."""
        if not token:
            raise ClusterAuthError(f"no cluster credentials ({AUTH_HEADER}) on {method}")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION:
            raise ClusterAuthError(f"malformed cluster credentials on {method}")
        _, id_text, ms_text, mac = parts
        if not (id_text.isdigit() and ms_text.isdigit()):
            raise ClusterAuthError(f"malformed cluster credentials on {method}")
        broker_id, sent_ms = int(id_text), int(ms_text)
        if not any(
            hmac.compare_digest(_mac(key, method, broker_id, sent_ms), mac)
            for key in self._accepted
        ):
            raise ClusterAuthError(f"wrong cluster credentials on {method} (another secret?)")
        if abs(now_ms - sent_ms) > self.max_skew_ms:
            raise ClusterAuthError(
                f"cluster credentials on {method} are {abs(now_ms - sent_ms)} ms off this "
                f"broker's clock (limit {self.max_skew_ms} ms)"
            )
        return broker_id


# At most one "refused ..." log line per this many seconds, per kind (a scan would flood it).
REFUSAL_LOG_INTERVAL_S = 10.0


class ReportThrottle:
    """Decides which refusals get a log line: the first, then one per `interval_s`, each
    saying how many were left out since the last. Time is passed in."""

    def __init__(self, interval_s: float = REFUSAL_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._left_out = 0

    def report(self, now_s: float) -> int | None:
        """None: stay quiet; else the count left out since the last line."""
        if self._last is not None and now_s - self._last < self.interval_s:
            self._left_out += 1
            return None
        left_out, self._last, self._left_out = self._left_out, now_s, 0
        return left_out
