"""Controller handlers for users and ACLs: (image, request) -> (records, response). Pure,
in the pattern of controller.py; error codes are Kafka's (AlterUserScramCredentials and
Create/DeleteAcls answer them to Kafka clients as they are).
"""

from __future__ import annotations

from collections.abc import Callable

from raftka.cluster import acl as acl_model
from raftka.cluster import records, scram
from raftka.cluster.acl import AclBinding, AclError, AclFilter
from raftka.cluster.controller import ControllerResult
from raftka.cluster.image import MetadataImage
from raftka.proto.raftka.v1 import security_pb2

INVALID_REQUEST = 42
UNSUPPORTED_SASL_MECHANISM = 33
RESOURCE_NOT_FOUND = 91
DUPLICATE_RESOURCE = 92
UNACCEPTABLE_CREDENTIAL = 93
ACLS_PER_REQUEST_MAX = 1_000


def alter_user_scram_credentials(
    image: MetadataImage, request: security_pb2.AlterUserScramCredentialsRequest
) -> ControllerResult[security_pb2.AlterUserScramCredentialsResponse]:
    """Kafka's rules: a user named twice in one request is refused (DUPLICATE_RESOURCE)
    in all its changes; deleting a credential that does not exist is RESOURCE_NOT_FOUND."""
    response = security_pb2.AlterUserScramCredentialsResponse()
    names = [d.name for d in request.deletions] + [u.name for u in request.upsertions]
    pairs = [(d.name, d.mechanism) for d in request.deletions] + [
        (u.name, u.mechanism) for u in request.upsertions]
    duplicated = {pair[0] for pair in pairs if pairs.count(pair) > 1}
    problems: dict[str, tuple[int, str]] = {}
    out: list[records.MetadataRecord] = []
    for name in duplicated:
        problems[name] = (DUPLICATE_RESOURCE, f"user {name!r} has the same mechanism "
                                              "named twice in this request")
    for deletion in request.deletions:
        if deletion.name in problems:
            continue
        if deletion.mechanism not in scram.MECHANISMS:
            problems[deletion.name] = (UNSUPPORTED_SASL_MECHANISM,
                                       f"unknown SCRAM mechanism {deletion.mechanism!r}")
        elif (deletion.name, deletion.mechanism) not in image.scram_credentials:
            problems[deletion.name] = (RESOURCE_NOT_FOUND, f"user {deletion.name!r} has no "
                                                           f"{deletion.mechanism} credential")
    planned: list[tuple[str, records.MetadataRecord]] = []
    for deletion in request.deletions:
        planned.append((deletion.name,
                        records.remove_user_scram_credential(deletion.name, deletion.mechanism)))
    for upsertion in request.upsertions:
        if upsertion.name in problems:
            continue
        try:
            scram.validate_username(upsertion.name)
        except scram.ScramCredentialError as exc:
            problems[upsertion.name] = (UNACCEPTABLE_CREDENTIAL, str(exc))
            continue
        if upsertion.mechanism not in scram.MECHANISMS:
            problems[upsertion.name] = (UNSUPPORTED_SASL_MECHANISM,
                                        f"unknown SCRAM mechanism {upsertion.mechanism!r}")
            continue
        try:
            credential = scram.from_salted_password(
                upsertion.mechanism, upsertion.salted_password, upsertion.salt,
                upsertion.iterations)
        except scram.ScramCredentialError as exc:
            problems[upsertion.name] = (UNACCEPTABLE_CREDENTIAL, str(exc))
            continue
        planned.append((upsertion.name, records.user_scram_credential(upsertion.name,
                                                                      credential)))
    for name, record in planned:
        if name not in problems:
            out.append(record)
    for name in dict.fromkeys(names):
        code, message = problems.get(name, (0, ""))
        response.results.add(name=name, error_code=code, error_message=message)
    return ControllerResult(tuple(out), response)


def binding_from_proto(acl: security_pb2.Acl) -> AclBinding:
    try:
        return AclBinding(
            resource_type=acl_model.resource_type(acl.resource_type),
            resource_name=acl.resource_name,
            pattern_type=acl_model.pattern_type(acl.pattern_type),
            principal=acl.principal, host=acl.host,
            operation=acl_model.operation(acl.operation),
            permission=acl_model.permission(acl.permission)).validate()
    except AclError:
        raise
    except ValueError as exc:
        raise AclError(str(exc)) from exc


def binding_to_proto(acl: AclBinding) -> security_pb2.Acl:
    return security_pb2.Acl(
        resource_type=int(acl.resource_type), resource_name=acl.resource_name,
        pattern_type=int(acl.pattern_type), principal=acl.principal, host=acl.host,
        operation=int(acl.operation), permission=int(acl.permission))


def filter_from_proto(wanted: security_pb2.AclFilter) -> AclFilter:
    return AclFilter(
        resource_type=acl_model.resource_type(wanted.resource_type or 1),
        resource_name=wanted.resource_name if wanted.HasField("resource_name") else None,
        pattern_type=acl_model.pattern_type(wanted.pattern_type or 1),
        principal=wanted.principal if wanted.HasField("principal") else None,
        host=wanted.host if wanted.HasField("host") else None,
        operation=acl_model.operation(wanted.operation or 1),
        permission=acl_model.permission(wanted.permission or 1))


def create_acls(
    image: MetadataImage, request: security_pb2.CreateAclsRequest, new_id: Callable[[], str]
) -> ControllerResult[security_pb2.CreateAclsResponse]:
    """One result per creation, in order. An ACL equal to a stored one is not stored twice
    (success, as in Kafka)."""
    response = security_pb2.CreateAclsResponse()
    if len(request.creations) > ACLS_PER_REQUEST_MAX:
        for _ in request.creations:
            response.results.add(error_code=INVALID_REQUEST,
                                 error_message=f"at most {ACLS_PER_REQUEST_MAX} ACLs a request")
        return ControllerResult((), response)
    existing = set(image.acls.values())
    out = []
    for creation in request.creations:
        try:
            binding = binding_from_proto(creation)
        except AclError as exc:
            response.results.add(error_code=INVALID_REQUEST, error_message=str(exc))
            continue
        response.results.add(error_code=0)
        if binding not in existing:
            existing.add(binding)
            out.append(records.access_control_entry(new_id(), binding))
    return ControllerResult(tuple(out), response)


def delete_acls(
    image: MetadataImage, request: security_pb2.DeleteAclsRequest
) -> ControllerResult[security_pb2.DeleteAclsResponse]:
    """One result per filter, naming the ACLs it removed (an ACL matched by two filters is
    removed once and reported by the first)."""
    response = security_pb2.DeleteAclsResponse()
    removed: set[str] = set()
    out = []
    for wanted in request.filters:
        result = response.results.add()
        try:
            selected = acl_model.select(image.acls, filter_from_proto(wanted))
        except (AclError, ValueError) as exc:
            result.error_code = INVALID_REQUEST
            result.error_message = str(exc)
            continue
        for acl_id, binding in selected:
            if acl_id in removed:
                continue
            removed.add(acl_id)
            out.append(records.remove_access_control_entry(acl_id))
            result.deleted.append(binding_to_proto(binding))
    return ControllerResult(tuple(out), response)
