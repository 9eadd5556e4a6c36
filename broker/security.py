"""The broker's security shell: who a caller is (SASL on Kafka listeners, credentials in
gRPC call metadata, or an mTLS certificate), what it may do (cluster/acl.py over the ACLs of
the current metadata image), and user/ACL changes forwarded to the active controller.

Why here and not in each adapter: the Kafka listener and the gRPC services must decide alike,
from the same image, with the same settings; they only translate the outcome into their own
error codes (Kafka's 29/30/31, gRPC's PERMISSION_DENIED).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from raftka.broker.config import BrokerConfig
from raftka.broker.controller_client import ControllerClient
from raftka.broker.internal_auth import method_path
from raftka.broker.replica_manager import ReplicaManager
from raftka.cluster import acl as acl_model
from raftka.cluster import scram
from raftka.cluster.acl import AclIndex, AuthorizerSettings, Operation, ResourceType
from raftka.cluster.cluster_auth import ReportThrottle
from raftka.cluster.image import MetadataImage
from raftka.cluster.quorum import ControllerTimeoutError, NotControllerError, QuorumController
from raftka.cluster.scram import ScramCredential
from raftka.cluster.security_controller import binding_from_proto, binding_to_proto
from raftka.proto.raftka.v1 import security_pb2, security_pb2_grpc

log = logging.getLogger("raftka.security")

ALTER_USER_SCRAM_CREDENTIALS = method_path("SecurityService", "AlterUserScramCredentials")
CREATE_ACLS = method_path("SecurityService", "CreateAcls")
DELETE_ACLS = method_path("SecurityService", "DeleteAcls")
# The principal of a call that proved cluster membership (a broker): never subject to ACLs.
BROKER_PRINCIPAL = "User:__raftka_broker"
NOT_CONTROLLER = 41
REQUEST_TIMED_OUT = 7
# Verified (user, password) pairs kept so that gRPC calls do not each pay the PBKDF2 cost.
PASSWORD_CACHE_MAX = 1024
LOCAL_METADATA_WAIT_S = 5.0


class BrokerSecurity:
    def __init__(
        self,
        config: BrokerConfig,
        replicas: ReplicaManager,
        controller: ControllerClient,
        quorum: QuorumController,
        decoy_key: bytes | None = None,
    ) -> None:
        self._config = config
        self._replicas = replicas
        self._controller = controller
        self._quorum = quorum
        self.settings = AuthorizerSettings(
            enabled=config.authorizer_enabled,
            super_users=acl_model.parse_super_users(config.super_users),
            allow_everyone_if_no_acl_found=config.allow_everyone_if_no_acl_found,
        )
        self.max_reauth_ms = config.connections_max_reauth_ms
        self.mechanisms = tuple(m.strip() for m in config.sasl_enabled_mechanisms.split(",")
                                if m.strip())
        # Makes an unknown SCRAM user's decoy salt stable on this broker (broker/sasl.py).
        self.decoy_key = decoy_key if decoy_key is not None else os.urandom(32)
        self._index_of: tuple[object, AclIndex] | None = None
        self._password_cache: dict[bytes, bytes] = {}
        self._failures = ReportThrottle()

    # ----------------------------------------------------------------- identities
    @property
    def image(self) -> MetadataImage:
        return self._replicas.image

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return self.image.scram_credentials.get((user, mechanism))

    def check_password(self, user: str, password: str) -> bool:
        """For gRPC: the password yields a stored StoredKey of the user (either mechanism).
        A success is cached under an HMAC of (user, password, StoredKey) with a key only
        this process knows, so a changed credential is checked afresh."""
        for mechanism in scram.MECHANISMS:
            credential = self.credential(user, mechanism)
            if credential is None:
                continue
            key = hmac.new(self.decoy_key, b"\0".join(
                (user.encode(), password.encode(), credential.stored_key)), hashlib.sha256
            ).digest()
            if key in self._password_cache:
                return True
            if not scram.password_matches(credential, password):
                return False
            if len(self._password_cache) >= PASSWORD_CACHE_MAX:
                self._password_cache.clear()
            self._password_cache[key] = credential.stored_key
            return True
        return False

    def authentication_failed(self, user: str, peer: Any, reason: str, via: str) -> None:
        """Log a refused login with who and from where (throttled: a guessing client must
        not flood the log); the client got only the generic message."""
        left_out = self._failures.report(time.monotonic())
        if left_out is not None:
            more = f" ({left_out} more since the last report)" if left_out else ""
            log.warning("authentication failed for user %r from %s over %s: %s%s",
                        user, peer, via, reason, more)

    # --------------------------------------------------------------- authorization
    def _index(self) -> AclIndex:
        acls = self.image.acls
        cached = self._index_of
        if cached is None or cached[0] is not acls:
            cached = (acls, AclIndex(acls.values()))
            self._index_of = cached
        return cached[1]

    def allowed(self, principal: str, host: str, op: Operation, kind: ResourceType,
                name: str) -> bool:
        if principal == BROKER_PRINCIPAL or not self.settings.enabled:
            return True
        return acl_model.authorize(self._index(), self.settings, principal, host, op, kind,
                                   name)

    def may_write_some_topic(self, principal: str, host: str) -> bool:
        if principal == BROKER_PRINCIPAL:
            return True
        return acl_model.may_somewhere(self._index(), self.settings, principal, host,
                                       Operation.WRITE, ResourceType.TOPIC)

    def cluster_allowed(self, principal: str, host: str, op: Operation) -> bool:
        return self.allowed(principal, host, op, ResourceType.CLUSTER,
                            acl_model.CLUSTER_RESOURCE)

    # ---------------------------------------------------------------- management
    def describe_users(
        self, request: security_pb2.DescribeUserScramCredentialsRequest
    ) -> security_pb2.DescribeUserScramCredentialsResponse:
        by_user: dict[str, list[ScramCredential]] = {}
        for (name, _), credential in sorted(self.image.scram_credentials.items()):
            by_user.setdefault(name, []).append(credential)
        response = security_pb2.DescribeUserScramCredentialsResponse()
        names = list(dict.fromkeys(request.names)) if request.names else sorted(by_user)
        for name in names:
            result = response.results.add(name=name)
            if name not in by_user:
                result.error_code = 91  # RESOURCE_NOT_FOUND, as Kafka answers
                result.error_message = f"user {name!r} has no SCRAM credentials"
                continue
            for credential in by_user[name]:
                result.credentials.add(mechanism=credential.mechanism,
                                       iterations=credential.iterations)
        return response

    def describe_acls(self, wanted: security_pb2.AclFilter) -> security_pb2.DescribeAclsResponse:
        from raftka.cluster.security_controller import filter_from_proto

        response = security_pb2.DescribeAclsResponse()
        if not self.settings.enabled:
            response.error_code = 54  # SECURITY_DISABLED, as Kafka without an authorizer
            response.error_message = "no authorizer is configured (authorizer.enabled=false)"
            return response
        try:
            selected = acl_model.select(self.image.acls, filter_from_proto(wanted))
        except ValueError as exc:
            response.error_code = 42
            response.error_message = str(exc)
            return response
        response.acls.extend(binding_to_proto(b) for _, b in selected)
        return response

    async def alter_user_scram_credentials(
        self, request: security_pb2.AlterUserScramCredentialsRequest, *, forwarded: bool = False
    ) -> security_pb2.AlterUserScramCredentialsResponse:
        try:
            response = await self._on_controller(
                "alter_user_scram_credentials", self._quorum.alter_user_scram_credentials,
                lambda c: security_pb2_grpc.SecurityServiceStub(c).AlterUserScramCredentials,
                ALTER_USER_SCRAM_CREDENTIALS, request, forwarded)
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = security_pb2.AlterUserScramCredentialsResponse()
            for name in dict.fromkeys([d.name for d in request.deletions]
                                      + [u.name for u in request.upsertions]):
                response.results.add(name=name, error_code=_code(exc), error_message=str(exc))
            return response
        changed = {r.name for r in response.results if r.error_code == 0}
        wanted = {(u.name, u.mechanism) for u in request.upsertions if u.name in changed}
        gone = {(d.name, d.mechanism) for d in request.deletions if d.name in changed}
        await self._replicas.wait_for_metadata(
            lambda image: wanted <= set(image.scram_credentials)
            and not gone & set(image.scram_credentials), LOCAL_METADATA_WAIT_S)
        return response

    async def create_acls(
        self, request: security_pb2.CreateAclsRequest, *, forwarded: bool = False
    ) -> security_pb2.CreateAclsResponse:
        try:
            response = await self._on_controller(
                "create_acls", self._quorum.create_acls,
                lambda c: security_pb2_grpc.SecurityServiceStub(c).CreateAcls,
                CREATE_ACLS, request, forwarded)
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = security_pb2.CreateAclsResponse()
            for _ in request.creations:
                response.results.add(error_code=_code(exc), error_message=str(exc))
            return response
        created = set()
        for creation, result in zip(request.creations, response.results, strict=False):
            if result.error_code == 0:
                created.add(binding_from_proto(creation))
        await self._replicas.wait_for_metadata(
            lambda image: created <= set(image.acls.values()), LOCAL_METADATA_WAIT_S)
        return response

    async def delete_acls(
        self, request: security_pb2.DeleteAclsRequest, *, forwarded: bool = False
    ) -> security_pb2.DeleteAclsResponse:
        try:
            response = await self._on_controller(
                "delete_acls", self._quorum.delete_acls,
                lambda c: security_pb2_grpc.SecurityServiceStub(c).DeleteAcls,
                DELETE_ACLS, request, forwarded)
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = security_pb2.DeleteAclsResponse()
            for _ in request.filters:
                response.results.add(error_code=_code(exc), error_message=str(exc))
            return response
        deleted = {binding_from_proto(acl) for r in response.results for acl in r.deleted}
        await self._replicas.wait_for_metadata(
            lambda image: not deleted & set(image.acls.values()), LOCAL_METADATA_WAIT_S)
        return response

    async def _on_controller(self, name: str, local: Callable[[Any], Any],
                             remote: Callable[[Any], Any], path: str, request: Any,
                             forwarded: bool) -> Any:
        """Forwarded calls are answered by this node's controller, never forwarded again."""
        if forwarded:
            return await local(request)
        return await self._controller.call(
            name, local, remote, path, request, self._config.metadata_write_timeout_ms / 1000)


def _code(exc: Exception) -> int:
    return NOT_CONTROLLER if isinstance(exc, NotControllerError) else REQUEST_TIMED_OUT
