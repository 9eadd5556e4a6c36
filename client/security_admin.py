"""Users and ACLs from the SDK: `SecurityAdmin`, over the brokers' SecurityService.

Passwords never leave the client: a new user's SCRAM credential is salted here (random
salt, PBKDF2 with `iterations`) and only the salted password is sent, as Kafka's
AlterUserScramCredentials does; the broker keeps StoredKey/ServerKey of it.

`cluster_secret_file`: sign the calls with the cluster's secret instead of a user's
credentials (a broker's authority; not subject to ACLs). That is how the first user of a
secured cluster is made: whoever can read the secret owns the cluster anyway.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftka.client.connections_util import first_answer
from raftka.client.credentials import resolve as resolve_credentials
from raftka.client.errors import RaftkaError
from raftka.client.tls_options import TlsOptions
from raftka.client.transport import Connections, bootstrap_list
from raftka.cluster import acl as acl_model
from raftka.cluster import scram
from raftka.cluster.acl import AclBinding, AclFilter
from raftka.cluster.cluster_auth import AUTH_HEADER, ClusterCredentials
from raftka.proto.raftka.v1 import security_pb2, security_pb2_grpc

_KAFKA_ERRORS = {0: "NONE", 7: "REQUEST_TIMED_OUT", 31: "CLUSTER_AUTHORIZATION_FAILED",
                 33: "UNSUPPORTED_SASL_MECHANISM", 41: "NOT_CONTROLLER", 42: "INVALID_REQUEST",
                 54: "SECURITY_DISABLED", 91: "RESOURCE_NOT_FOUND", 92: "DUPLICATE_RESOURCE",
                 93: "UNACCEPTABLE_CREDENTIAL"}


class SecurityError(RaftkaError):
    """A user or ACL change the cluster refused; the message names Kafka's error code."""


def _raise_for(code: int, message: str, what: str) -> None:
    if code:
        raise SecurityError(f"{what}: {_KAFKA_ERRORS.get(code, str(code))}: {message}", code)


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    mechanisms: dict[str, int]  # mechanism -> iterations


class SecurityAdmin:
    def __init__(
        self, bootstrap_servers: str | list[str] | None = None, *,
        request_timeout_ms: int = 30_000, tls: TlsOptions | None = None,
        username: str | None = None, password: str | None = None,
        cluster_secret_file: str | None = None,
    ) -> None:
        self._addresses = bootstrap_list(bootstrap_servers)
        self._timeout_s = request_timeout_ms / 1000
        self._secret = ClusterCredentials(Path(cluster_secret_file).read_bytes()) \
            if cluster_secret_file else None
        self._connections = Connections(
            tls, None if self._secret else resolve_credentials(username, password))

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> SecurityAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        metadata: tuple[tuple[str, str], ...] = ()
        if self._secret is not None:
            path = f"/raftka.v1.SecurityService/{method}"
            metadata = ((AUTH_HEADER, self._secret.token(path, 0, int(time.time() * 1000))),)

        def invoke(address: str) -> Any:
            stub = security_pb2_grpc.SecurityServiceStub(self._connections.channel(address))
            return getattr(stub, method)(request, timeout=self._timeout_s, metadata=metadata)

        return first_answer(self._addresses, invoke)

    # ----------------------------------------------------------------------- users
    def create_user(self, name: str, password: str, *,
                    mechanisms: Iterable[str] = tuple(scram.MECHANISMS),
                    iterations: int = scram.DEFAULT_ITERATIONS) -> None:
        """Create the user, or set a new password (a credential per mechanism)."""
        scram.validate_username(name)
        scram.validate_iterations(iterations)
        if not password:
            raise ValueError("the password must not be empty")
        upsertions = []
        for mechanism in mechanisms:
            salt = secrets.token_bytes(scram.SALT_BYTES)
            upsertions.append(security_pb2.ScramCredentialUpsertion(
                name=name, mechanism=mechanism, iterations=iterations, salt=salt,
                salted_password=scram.salted_password(mechanism, password, salt, iterations)))
        response = self._call("AlterUserScramCredentials",
                              security_pb2.AlterUserScramCredentialsRequest(upsertions=upsertions))
        for result in response.results:
            _raise_for(result.error_code, result.error_message, f"user {result.name!r}")

    def delete_user(self, name: str, mechanisms: Iterable[str] | None = None) -> list[str]:
        """Delete the user's credentials (all of them by default); the mechanisms removed."""
        if mechanisms is None:
            found = {u.name: u for u in self.list_users()}
            if name not in found:
                raise SecurityError(f"user {name!r}: RESOURCE_NOT_FOUND: no such user", 91)
            mechanisms = list(found[name].mechanisms)
        chosen = list(mechanisms)
        response = self._call("AlterUserScramCredentials",
                              security_pb2.AlterUserScramCredentialsRequest(deletions=[
                                  security_pb2.ScramCredentialDeletion(name=name, mechanism=m)
                                  for m in chosen]))
        for result in response.results:
            _raise_for(result.error_code, result.error_message, f"user {result.name!r}")
        return chosen

    def list_users(self) -> list[UserInfo]:
        response = self._call("DescribeUserScramCredentials",
                              security_pb2.DescribeUserScramCredentialsRequest())
        _raise_for(response.error_code, response.error_message, "listing users")
        return [UserInfo(r.name, {c.mechanism: c.iterations for c in r.credentials})
                for r in response.results if not r.error_code]

    # ------------------------------------------------------------------------ ACLs
    def add_acls(self, bindings: Iterable[AclBinding]) -> None:
        chosen = [b.validate() for b in bindings]
        response = self._call("CreateAcls", security_pb2.CreateAclsRequest(
            creations=[_to_proto(b) for b in chosen]))
        for binding, result in zip(chosen, response.results, strict=False):
            _raise_for(result.error_code, result.error_message, binding.describe())

    def list_acls(self, wanted: AclFilter | None = None) -> list[AclBinding]:
        response = self._call("DescribeAcls", security_pb2.DescribeAclsRequest(
            filter=_filter_to_proto(wanted or AclFilter())))
        _raise_for(response.error_code, response.error_message, "listing ACLs")
        return [_from_proto(a) for a in response.acls]

    def remove_acls(self, wanted: AclFilter) -> list[AclBinding]:
        """Remove every ACL `wanted` selects; the ones removed."""
        response = self._call("DeleteAcls", security_pb2.DeleteAclsRequest(
            filters=[_filter_to_proto(wanted)]))
        removed: list[AclBinding] = []
        for result in response.results:
            _raise_for(result.error_code, result.error_message, "removing ACLs")
            removed.extend(_from_proto(a) for a in result.deleted)
        return removed


def _to_proto(b: AclBinding) -> security_pb2.Acl:
    return security_pb2.Acl(
        resource_type=int(b.resource_type), resource_name=b.resource_name,
        pattern_type=int(b.pattern_type), principal=b.principal, host=b.host,
        operation=int(b.operation), permission=int(b.permission))


def _from_proto(a: security_pb2.Acl) -> AclBinding:
    return AclBinding(acl_model.ResourceType(a.resource_type), a.resource_name,
                      acl_model.PatternType(a.pattern_type), a.principal, a.host,
                      acl_model.Operation(a.operation), acl_model.Permission(a.permission))


def _filter_to_proto(f: AclFilter) -> security_pb2.AclFilter:
    out = security_pb2.AclFilter(resource_type=int(f.resource_type),
                                 pattern_type=int(f.pattern_type), operation=int(f.operation),
                                 permission=int(f.permission))
    if f.resource_name is not None:
        out.resource_name = f.resource_name
    if f.principal is not None:
        out.principal = f.principal
    if f.host is not None:
        out.host = f.host
    return out

