"""Access control lists in Kafka's model, and the decision whether one request may go on.
Pure: bindings and settings in, a decision out.

The rules are Kafka's AclAuthorizer's (StandardAuthorizer in KRaft):
- a super user may do anything;
- an ACL matches a resource when it is LITERAL with the same name or the wildcard "*", or
  PREFIXED with a prefix of the name; it matches a request when its principal is the
  caller's or User:*, its host the caller's or "*", and its operation the asked one or ALL;
- a matching DENY wins over everything; then a matching ALLOW allows. DESCRIBE is implied by
  READ, WRITE, DELETE and ALTER, DESCRIBE_CONFIGS by ALTER_CONFIGS;
- a resource that no ACL names at all is allowed only when allow.everyone.if.no.acl.found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


WILDCARD_RESOURCE = "*"
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"
CLUSTER_RESOURCE = "kafka-cluster"
ANONYMOUS = "User:ANONYMOUS"
_IMPLIES = {
    Operation.DESCRIBE: frozenset({Operation.DESCRIBE, Operation.READ, Operation.WRITE,
                                   Operation.DELETE, Operation.ALTER}),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS,
                                           Operation.ALTER_CONFIGS}),
}


class AclError(ValueError):
    """An ACL or filter that cannot be stored or used; the message names the part."""


def _parse_enum(kind: type[IntEnum], value: str | int, what: str) -> IntEnum:
    if isinstance(value, int):
        try:
            return kind(value)
        except ValueError:
            raise AclError(f"unknown {what} {value}") from None
    try:
        return kind[value.strip().upper().replace("-", "_")]
    except KeyError:
        names = ", ".join(m.name for m in kind if m.name not in ("UNKNOWN", "ANY", "MATCH"))
        raise AclError(f"unknown {what} {value!r}; use one of {names}") from None


def resource_type(value: str | int) -> ResourceType:
    return ResourceType(_parse_enum(ResourceType, value, "resource type"))


def pattern_type(value: str | int) -> PatternType:
    return PatternType(_parse_enum(PatternType, value, "pattern type"))


def operation(value: str | int) -> Operation:
    return Operation(_parse_enum(Operation, value, "operation"))


def permission(value: str | int) -> Permission:
    return Permission(_parse_enum(Permission, value, "permission"))


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def validate(self) -> AclBinding:
        """Self, if it can be stored (Kafka's checks for CreateAcls); AclError otherwise."""
        if self.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
            raise AclError("an ACL needs a resource type: TOPIC, GROUP, CLUSTER or "
                           "TRANSACTIONAL_ID")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise AclError("an ACL's pattern type must be LITERAL or PREFIXED")
        if self.operation in (Operation.UNKNOWN, Operation.ANY):
            raise AclError("an ACL needs an operation")
        if self.permission not in (Permission.ALLOW, Permission.DENY):
            raise AclError("an ACL's permission must be ALLOW or DENY")
        if not self.resource_name:
            raise AclError("an ACL needs a resource name ('*' for every resource)")
        if self.pattern_type == PatternType.PREFIXED and self.resource_name == "*":
            raise AclError("a PREFIXED ACL cannot use the wildcard '*'; use LITERAL '*'")
        if (self.resource_type == ResourceType.CLUSTER
                and self.resource_name != CLUSTER_RESOURCE):
            raise AclError(f"the CLUSTER resource is named {CLUSTER_RESOURCE!r}")
        kind, _, name = self.principal.partition(":")
        if kind != "User" or not name:
            raise AclError(f"principal {self.principal!r} must look like User:NAME "
                           "(User:* for everyone)")
        if not self.host:
            raise AclError("an ACL needs a host ('*' for any)")
        return self

    def matches_resource(self, kind: ResourceType, name: str) -> bool:
        if self.resource_type != kind:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name in (name, WILDCARD_RESOURCE)
        return name.startswith(self.resource_name)

    def describe(self) -> str:
        return (f"{self.permission.name} {self.principal} from {self.host} to "
                f"{self.operation.name} {self.resource_type.name} "
                f"{self.pattern_type.name} {self.resource_name!r}")


@dataclass(frozen=True, slots=True)
class AclFilter:
    """What DescribeAcls and DeleteAcls select: None / ANY fields match everything; pattern
    MATCH selects the ACLs that would apply to the named resource (Kafka's semantics)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, acl: AclBinding) -> bool:
        if self.resource_type != ResourceType.ANY and acl.resource_type != self.resource_type:
            return False
        if self.principal is not None and acl.principal != self.principal:
            return False
        if self.host is not None and acl.host != self.host:
            return False
        if self.operation != Operation.ANY and acl.operation != self.operation:
            return False
        if self.permission != Permission.ANY and acl.permission != self.permission:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is None:
                return True
            return acl.matches_resource(acl.resource_type, self.resource_name)
        if self.pattern_type != PatternType.ANY and acl.pattern_type != self.pattern_type:
            return False
        return self.resource_name is None or acl.resource_name == self.resource_name


@dataclass(frozen=True, slots=True)
class AuthorizerSettings:
    enabled: bool = False  # authorizer.enabled
    super_users: frozenset[str] = frozenset()  # super.users
    allow_everyone_if_no_acl_found: bool = False  # allow.everyone.if.no.acl.found


def parse_super_users(value: str) -> frozenset[str]:
    """Kafka's `super.users`: principals separated by ';' (User:alice;User:bob)."""
    users = frozenset(p.strip() for p in value.split(";") if p.strip())
    for user in users:
        kind, _, name = user.partition(":")
        if kind != "User" or not name:
            raise AclError(f"super.users: {user!r} must look like User:NAME")
    return users


class AclIndex:
    """The ACLs of one metadata image, grouped by resource type for quick decisions."""

    def __init__(self, acls: Iterable[AclBinding]) -> None:
        self._by_type: dict[ResourceType, list[AclBinding]] = {}
        for acl in acls:
            self._by_type.setdefault(acl.resource_type, []).append(acl)

    def of_type(self, kind: ResourceType) -> list[AclBinding]:
        return self._by_type.get(kind, [])

    def for_resource(self, kind: ResourceType, name: str) -> list[AclBinding]:
        return [a for a in self._by_type.get(kind, ()) if a.matches_resource(kind, name)]


def authorize(
    index: AclIndex,
    settings: AuthorizerSettings,
    principal: str,
    host: str,
    op: Operation,
    kind: ResourceType,
    name: str,
) -> bool:
    if not settings.enabled or principal in settings.super_users:
        return True
    acls = index.for_resource(kind, name)
    if not acls:
        return settings.allow_everyone_if_no_acl_found
    applicable = [a for a in acls
                  if a.principal in (principal, WILDCARD_PRINCIPAL)
                  and a.host in (host, WILDCARD_HOST)]
    if any(a.permission == Permission.DENY and a.operation in (op, Operation.ALL)
           for a in applicable):
        return False
    allowing = _IMPLIES.get(op, frozenset({op}))
    return any(a.permission == Permission.ALLOW
               and (a.operation == Operation.ALL or a.operation in allowing)
               for a in applicable)


def may_somewhere(
    index: AclIndex, settings: AuthorizerSettings, principal: str, host: str, op: Operation,
    kind: ResourceType,
) -> bool:
    """Whether some ACL lets `principal` do `op` on some resource of `kind` (KIP-679: an
    idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on any topic). A DENY
    on every resource of the kind (LITERAL '*') rules it out."""
    if not settings.enabled or principal in settings.super_users:
        return True
    applicable = [a for a in index.of_type(kind)
                  if a.principal in (principal, WILDCARD_PRINCIPAL)
                  and a.host in (host, WILDCARD_HOST) and a.operation in (op, Operation.ALL)]
    if any(a.permission == Permission.DENY and a.pattern_type == PatternType.LITERAL
           and a.resource_name == WILDCARD_RESOURCE for a in applicable):
        return False
    return any(a.permission == Permission.ALLOW for a in applicable)


def select(acls: Mapping[str, AclBinding], wanted: AclFilter) -> list[tuple[str, AclBinding]]:
    """(id, ACL) of every stored ACL `wanted` selects, in a stable order."""
    return sorted(((acl_id, acl) for acl_id, acl in acls.items() if wanted.matches(acl)),
                  key=lambda item: (item[1].resource_type, item[1].resource_name, item[0]))
