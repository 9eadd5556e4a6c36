"""Internal RPCs carry proof of cluster membership; the gRPC side of cluster/cluster_auth.py.

Which calls are internal: every ControllerService method, admin calls a broker forwards to
the controller (marked with the forwarded header; they may create internal topics), and
replica fetches (Fetch with replica_id >= 0: they move the follower's position, and with it
the high watermark and the ISR). Those are refused with UNAUTHENTICATED unless they carry a
valid token; nothing they asked for is done. Client calls are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from raftka.cluster.cluster_auth import (
    AUTH_HEADER,
    HANDSHAKE_PROOF_BYTES,
    ClusterAuthError,
    ClusterCredentials,
    ReportThrottle,
)

log = logging.getLogger("raftka.broker")

Metadata = tuple[tuple[str, str], ...]


def method_path(service: str, method: str) -> str:
    """gRPC's name for a method, as the token binds it: /raftka.v1.Service/Method."""
    return f"/raftka.v1.{service}/{method}"


FETCH = method_path("BrokerService", "Fetch")
CREATE_TOPICS = method_path("AdminService", "CreateTopics")
DELETE_TOPICS = method_path("AdminService", "DeleteTopics")
ALTER_CONFIGS = method_path("AdminService", "AlterConfigs")
CREATE_PARTITIONS = method_path("AdminService", "CreatePartitions")
REGISTER_BROKER = method_path("ControllerService", "RegisterBroker")
BROKER_HEARTBEAT = method_path("ControllerService", "BrokerHeartbeat")
ALTER_PARTITION = method_path("ControllerService", "AlterPartition")
ALLOCATE_PRODUCER_IDS = method_path("ControllerService", "AllocateProducerIds")
CONTROLLED_SHUTDOWN = method_path("ControllerService", "ControlledShutdown")
WATCH_BROKER = method_path("ControllerService", "WatchBroker")


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class InternalAuth:
    """Signs this broker's internal calls and checks the ones it receives.

    `credentials` None means the broker runs without a cluster secret
    (allow_no_cluster_secret, labs only): nothing is signed and everything is accepted.
    """

    def __init__(
        self,
        credentials: ClusterCredentials | None,
        broker_id: int,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self._credentials = credentials
        self._broker_id = broker_id
        self._clock_ms = clock_ms
        self._refusals = ReportThrottle()

    @property
    def enabled(self) -> bool:
        return self._credentials is not None

    def metadata(self, method: str, extra: Metadata = ()) -> Metadata:
        if self._credentials is None:
            return extra
        token = self._credentials.token(method, self._broker_id, self._clock_ms())
        return ((AUTH_HEADER, token), *extra)

    def handshake_proof(self, follower_nonce: bytes, leader_nonce: bytes) -> bytes:
        """This broker's answer to a replication listener's challenge (zeros without a
        secret: a leader that has one refuses it, one without accepts anything)."""
        if self._credentials is None:
            return bytes(HANDSHAKE_PROOF_BYTES)
        return self._credentials.handshake_proof(follower_nonce, leader_nonce, self._broker_id)

    def handshake_proven(
        self, proof: bytes, follower_nonce: bytes, leader_nonce: bytes, broker_id: int
    ) -> bool:
        """The follower answered the challenge with the cluster secret (always True
        without one)."""
        if self._credentials is None:
            return True
        return self._credentials.handshake_proven(proof, follower_nonce, leader_nonce,
                                                  broker_id)

    def check(self, invocation_metadata: object, method: str) -> int | None:
        """The calling broker's id; ClusterAuthError if the call proves no membership."""
        if self._credentials is None:
            return None
        token = None
        for key, value in invocation_metadata or ():  # type: ignore[attr-defined]
            if key == AUTH_HEADER:
                token = value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
                break
        return self._credentials.verify(token, method, self._clock_ms())

    async def require(self, context: grpc.aio.ServicerContext, method: str) -> None:
        """Abort the call with UNAUTHENTICATED unless it carries valid cluster credentials."""
        try:
            self.check(context.invocation_metadata(), method)
        except ClusterAuthError as exc:
            left_out = self._refusals.report(time.monotonic())
            if left_out is not None:
                more = f" ({left_out} more refused since the last report)" if left_out else ""
                log.warning("refused %s from %s: %s%s", method, context.peer(), exc, more)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"CLUSTER_AUTHORIZATION_FAILED: {exc}"
            )
