"""Authentication and authorization of gRPC client calls (the gRPC side of
broker/security.py).

Who calls, in order:
1. a call signed with the cluster secret for its method is a broker (internal calls:
   replication, forwarding, shutdown checks) and is never subject to client ACLs;
2. `x-raftka-user` + `x-raftka-password` metadata: checked against the user's SCRAM
   StoredKey (broker/security.py caches successes, so only the first call pays PBKDF2);
   wrong ones: UNAUTHENTICATED with the one generic message, the attempt logged;
3. on a SASL_* listener nothing else will do: UNAUTHENTICATED;
4. the client certificate's principal under TLS (broker/tls_principal.py; User:ANONYMOUS
   over TLS without one), or User:ANONYMOUS in plaintext.

Why a password per call rather than a SCRAM exchange producing a token: any gRPC client in
any language can send two metadata entries, there is no token state to expire or replicate
across brokers, and the password is never stored (only checked against StoredKey). The
price is that the password travels on every call, so SASL_SSL (TLS) is the listener to use
outside a lab, as with Kafka's SASL/PLAIN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from raftka.broker.core import BrokerCore
from raftka.broker.listeners import SASL_PROTOCOLS
from raftka.broker.sasl import AUTHENTICATION_FAILED_MESSAGE
from raftka.broker.security import BROKER_PRINCIPAL
from raftka.broker.tls_principal import grpc_call_principal
from raftka.cluster.acl import ANONYMOUS, CLUSTER_RESOURCE, Operation, ResourceType
from raftka.cluster.cluster_auth import AUTH_HEADER, ClusterAuthError

TOPIC_AUTHORIZATION_FAILED = 29
USER_HEADER = "x-raftka-user"
PASSWORD_HEADER = "x-raftka-password"
# Kafka's names for the refusals, first in the gRPC status message so tools can match them.
_REFUSAL = {
    ResourceType.TOPIC: "TOPIC_AUTHORIZATION_FAILED",
    ResourceType.GROUP: "GROUP_AUTHORIZATION_FAILED",
    ResourceType.CLUSTER: "CLUSTER_AUTHORIZATION_FAILED",
    ResourceType.TRANSACTIONAL_ID: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
}


def peer_host(context: grpc.aio.ServicerContext) -> str:
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' -> the address, as ACL hosts name it."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest


class GrpcGate:
    def __init__(self, core: BrokerCore, listener: str) -> None:
        self._core = core
        config = core.config
        if listener == "PLAINTEXT" or not config.grpc_extra_endpoints:
            protocol = config.grpc_security_protocol
        else:
            protocol = next((e.security_protocol for e in config.grpc_extra_endpoints
                             if e.name == listener), config.grpc_security_protocol)
        self._requires_credentials = protocol in SASL_PROTOCOLS

    async def caller(self, context: grpc.aio.ServicerContext, method: str) -> str:
        """The principal of this call (see the module docstring); aborts the call when
        credentials are wrong or missing where required."""
        security = self._core.security
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        if AUTH_HEADER in metadata and self._core.internal_auth.enabled:
            try:
                self._core.internal_auth.check(context.invocation_metadata(), method)
                return BROKER_PRINCIPAL
            except ClusterAuthError:
                pass  # not a broker: judged as a client below
        user = metadata.get(USER_HEADER)
        if user is not None:
            password = metadata.get(PASSWORD_HEADER)
            user = user if isinstance(user, str) else bytes(user).decode("utf-8", "replace")
            if isinstance(password, str) and security.check_password(user, password):
                return f"User:{user}"
            security.authentication_failed(
                user, context.peer(), "no password" if password is None else
                "unknown user or wrong password", "gRPC")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"SASL_AUTHENTICATION_FAILED: {AUTHENTICATION_FAILED_MESSAGE}")
        if self._requires_credentials:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this listener requires authentication: send {USER_HEADER} and "
                f"{PASSWORD_HEADER} metadata (raftka --user/--password)")
        return grpc_call_principal(context) or ANONYMOUS

    def allowed(self, context: grpc.aio.ServicerContext, principal: str, op: Operation,
                kind: ResourceType, name: str) -> bool:
        return self._core.security.allowed(principal, peer_host(context), op, kind, name)

    def drop_hidden_topics(self, context: grpc.aio.ServicerContext, principal: str,
                           topics: Any, *, named: bool = False) -> None:
        """Topics (a repeated field of messages with .name) `principal` may not DESCRIBE:
        left out of a listing of all, or, when the request `named` them, answered
        TOPIC_AUTHORIZATION_FAILED with nothing else (as Kafka's Metadata does)."""
        for index in reversed(range(len(topics))):
            topic = topics[index]
            if self.allowed(context, principal, Operation.DESCRIBE, ResourceType.TOPIC,
                            topic.name):
                continue
            if not named:
                del topics[index]
                continue
            name = topic.name
            topic.Clear()
            topic.name = name
            topic.error_code = TOPIC_AUTHORIZATION_FAILED
            topic.error_message = f"{principal} may not DESCRIBE topic {name!r}"

    async def require(self, context: grpc.aio.ServicerContext, principal: str,
                      op: Operation, kind: ResourceType, names: Iterable[str]) -> None:
        """Abort with PERMISSION_DENIED unless `principal` may `op` every named resource;
        nothing has been done yet when it aborts."""
        for name in dict.fromkeys(names):
            if not self.allowed(context, principal, op, kind, name):
                what = "the cluster" if kind == ResourceType.CLUSTER else \
                    f"{kind.name.lower()} {name!r}"
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{_REFUSAL[kind]}: {principal} may not {op.name} {what}")

    async def require_cluster(self, context: grpc.aio.ServicerContext, principal: str,
                              op: Operation) -> None:
        await self.require(context, principal, op, ResourceType.CLUSTER, (CLUSTER_RESOURCE,))
