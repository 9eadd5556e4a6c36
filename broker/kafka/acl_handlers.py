"""Kafka's security admin APIs: DescribeAcls (29), CreateAcls (30), DeleteAcls (31),
DescribeUserScramCredentials (50) and AlterUserScramCredentials (51), so Kafka's tools and
UIs (kafka-acls, AdminClient, kafka-ui) manage Raftka's ACLs and users.

Who may: DESCRIBE on the cluster to read, ALTER to change (Kafka's rules), else
CLUSTER_AUTHORIZATION_FAILED. Changes go through the active controller
(broker/security.py). Without an authorizer, the ACL APIs answer SECURITY_DISABLED (54) as
Kafka does; users can still be managed (SASL works without ACLs).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka.codec import Request, field
from raftka.cluster import scram
from raftka.cluster.acl import CLUSTER_RESOURCE, Operation, ResourceType
from raftka.proto.raftka.v1 import security_pb2

CLUSTER_AUTHORIZATION_FAILED = 31
SECURITY_DISABLED = 54
UNSUPPORTED_SASL_MECHANISM = 33
SECURITY_DISABLED_MESSAGE = "no authorizer is configured (authorizer.enabled=false)"


def _refused(core: BrokerCore, request: Request, op: Operation) -> str | None:
    if core.security.allowed(request.principal, request.host, op, ResourceType.CLUSTER,
                             CLUSTER_RESOURCE):
        return None
    return f"{request.principal} may not {op.name} the cluster"


def _filter(item: Any) -> security_pb2.AclFilter:
    wanted = security_pb2.AclFilter(
        resource_type=int(item.resource_type_filter),
        pattern_type=int(field(item, "pattern_type_filter", 3) or 3),
        operation=int(item.operation), permission=int(item.permission_type))
    if item.resource_name_filter is not None:
        wanted.resource_name = item.resource_name_filter
    if item.principal_filter is not None:
        wanted.principal = item.principal_filter
    if item.host_filter is not None:
        wanted.host = item.host_filter
    return wanted


def _acl_fields(acl: security_pb2.Acl) -> dict[str, Any]:
    return {"resource_type": acl.resource_type, "resource_name": acl.resource_name,
            "pattern_type": acl.pattern_type, "principal": acl.principal, "host": acl.host,
            "operation": acl.operation, "permission_type": acl.permission}


async def describe_acls(core: BrokerCore, request: Request) -> dict[str, Any]:
    if not core.security.settings.enabled:
        return {"throttle_time": 0, "error_code": SECURITY_DISABLED,
                "error_message": SECURITY_DISABLED_MESSAGE, "resources": []}
    refused = _refused(core, request, Operation.DESCRIBE)
    if refused:
        return {"throttle_time": 0, "error_code": CLUSTER_AUTHORIZATION_FAILED,
                "error_message": refused, "resources": []}
    response = core.security.describe_acls(_filter(request.body))
    grouped: dict[tuple[int, str, int], list[dict[str, Any]]] = defaultdict(list)
    for acl in response.acls:
        grouped[(acl.resource_type, acl.resource_name, acl.pattern_type)].append(
            {"principal": acl.principal, "host": acl.host, "operation": acl.operation,
             "permission_type": acl.permission})
    return {"throttle_time": 0, "error_code": response.error_code,
            "error_message": response.error_message or None, "resources": [
                {"resource_type": kind, "resource_name": name, "pattern_type": pattern,
                 "acls": acls} for (kind, name, pattern), acls in grouped.items()]}


async def create_acls(core: BrokerCore, request: Request) -> dict[str, Any]:
    creations = request.body.creations
    problem = (SECURITY_DISABLED, SECURITY_DISABLED_MESSAGE) \
        if not core.security.settings.enabled else None
    if problem is None and (refused := _refused(core, request, Operation.ALTER)):
        problem = (CLUSTER_AUTHORIZATION_FAILED, refused)
    if problem is not None:
        return {"throttle_time": 0, "results": [
            {"error_code": problem[0], "error_message": problem[1]} for _ in creations]}
    response = await core.security.create_acls(security_pb2.CreateAclsRequest(creations=[
        security_pb2.Acl(resource_type=int(c.resource_type), resource_name=c.resource_name,
                         pattern_type=int(field(c, "resource_pattern_type", 3) or 3),
                         principal=c.principal, host=c.host, operation=int(c.operation),
                         permission=int(c.permission_type)) for c in creations]))
    return {"throttle_time": 0, "results": [
        {"error_code": r.error_code, "error_message": r.error_message or None}
        for r in response.results]}


async def delete_acls(core: BrokerCore, request: Request) -> dict[str, Any]:
    filters = request.body.filters
    problem = (SECURITY_DISABLED, SECURITY_DISABLED_MESSAGE) \
        if not core.security.settings.enabled else None
    if problem is None and (refused := _refused(core, request, Operation.ALTER)):
        problem = (CLUSTER_AUTHORIZATION_FAILED, refused)
    if problem is not None:
        return {"throttle_time": 0, "filter_results": [
            {"error_code": problem[0], "error_message": problem[1], "matching_acls": []}
            for _ in filters]}
    response = await core.security.delete_acls(
        security_pb2.DeleteAclsRequest(filters=[_filter(f) for f in filters]))
    return {"throttle_time": 0, "filter_results": [
        {"error_code": r.error_code, "error_message": r.error_message or None,
         "matching_acls": [{"error_code": 0, "error_message": None, **_acl_fields(acl)}
                           for acl in r.deleted]} for r in response.results]}


async def describe_user_scram_credentials(core: BrokerCore, request: Request) -> dict[str, Any]:
    refused = _refused(core, request, Operation.DESCRIBE)
    if refused:
        return {"throttle_time": 0, "error_code": CLUSTER_AUTHORIZATION_FAILED,
                "error_message": refused, "results": []}
    users = request.body.users
    response = core.security.describe_users(security_pb2.DescribeUserScramCredentialsRequest(
        names=[u.name for u in users or ()]))
    return {"throttle_time": 0, "error_code": 0, "error_message": None, "results": [
        {"user": r.name, "error_code": r.error_code, "error_message": r.error_message or None,
         "credential_infos": [{"mechanism": scram.MECHANISM_IDS[c.mechanism],
                               "iterations": c.iterations} for c in r.credentials]}
        for r in response.results]}


async def alter_user_scram_credentials(core: BrokerCore, request: Request) -> dict[str, Any]:
    body = request.body
    refused = _refused(core, request, Operation.ALTER)
    names = list(dict.fromkeys([d.name for d in body.deletions]
                               + [u.name for u in body.upsertions]))
    if refused:
        return {"throttle_time": 0, "results": [
            {"user": n, "error_code": CLUSTER_AUTHORIZATION_FAILED, "error_message": refused}
            for n in names]}

    def mechanism(number: int) -> str:
        return scram.MECHANISMS_BY_ID.get(int(number), f"unknown mechanism {int(number)}")

    response = await core.security.alter_user_scram_credentials(
        security_pb2.AlterUserScramCredentialsRequest(
            deletions=[security_pb2.ScramCredentialDeletion(name=d.name,
                                                            mechanism=mechanism(d.mechanism))
                       for d in body.deletions],
            upsertions=[security_pb2.ScramCredentialUpsertion(
                name=u.name, mechanism=mechanism(u.mechanism), iterations=int(u.iterations),
                salt=bytes(u.salt), salted_password=bytes(u.salted_password))
                for u in body.upsertions]))
    return {"throttle_time": 0, "results": [
        {"user": r.name, "error_code": r.error_code, "error_message": r.error_message or None}
        for r in response.results]}
