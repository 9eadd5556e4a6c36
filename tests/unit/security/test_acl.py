"""The authorizer's rules (Kafka's AclAuthorizer), one rule per test."""

from __future__ import annotations

import pytest

from raftka.cluster import acl
from raftka.cluster.acl import (
    AclBinding,
    AclError,
    AclFilter,
    AclIndex,
    AuthorizerSettings,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)

ON = AuthorizerSettings(enabled=True)
T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED


def rule(kind: ResourceType, name: str, op: Operation, permission: Permission = Permission.ALLOW,
         principal: str = "User:alice", host: str = "*", pattern: PatternType = LIT) -> AclBinding:
    return AclBinding(kind, name, pattern, principal, host, op, permission).validate()


def allowed(rules: list[AclBinding], op: Operation, kind: ResourceType, name: str,
            principal: str = "User:alice", host: str = "10.0.0.1",
            settings: AuthorizerSettings = ON) -> bool:
    return acl.authorize(AclIndex(rules), settings, principal, host, op, kind, name)


def test_disabled_authorizer_allows_everything() -> None:
    assert allowed([], Operation.DELETE, T, "x", settings=AuthorizerSettings(enabled=False))


def test_no_acl_denies_unless_allow_everyone() -> None:
    assert not allowed([], Operation.READ, T, "orders")
    everyone = AuthorizerSettings(enabled=True, allow_everyone_if_no_acl_found=True)
    assert allowed([], Operation.READ, T, "orders", settings=everyone)
    # ...but once any ACL names the resource, only its rules count
    assert not allowed([rule(T, "orders", Operation.READ, principal="User:bob")],
                       Operation.READ, T, "orders", settings=everyone)


def test_super_users_skip_the_acls() -> None:
    settings = AuthorizerSettings(enabled=True, super_users=frozenset({"User:admin"}))
    deny_all = [rule(T, "*", Operation.ALL, Permission.DENY, principal="User:*")]
    assert allowed(deny_all, Operation.DELETE, T, "x", principal="User:admin", settings=settings)
    assert not allowed(deny_all, Operation.DELETE, T, "x", settings=settings)


def test_literal_prefixed_and_wildcard_resources() -> None:
    rules = [rule(T, "orders", Operation.READ), rule(T, "logs.", Operation.WRITE, pattern=PRE),
             rule(G, "*", Operation.READ)]
    assert allowed(rules, Operation.READ, T, "orders")
    assert not allowed(rules, Operation.READ, T, "orders2")
    assert allowed(rules, Operation.WRITE, T, "logs.app")
    assert not allowed(rules, Operation.WRITE, T, "logs")
    assert allowed(rules, Operation.READ, G, "any-group")
    assert not allowed(rules, Operation.READ, T, "logs.app")  # WRITE does not give READ


def test_deny_wins_over_allow() -> None:
    rules = [rule(T, "*", Operation.ALL), rule(T, "secret", Operation.READ, Permission.DENY)]
    assert allowed(rules, Operation.WRITE, T, "secret")
    assert not allowed(rules, Operation.READ, T, "secret")
    assert allowed(rules, Operation.READ, T, "public")
    deny_all = [rule(T, "a", Operation.READ), rule(T, "a", Operation.ALL, Permission.DENY)]
    assert not allowed(deny_all, Operation.READ, T, "a")


@pytest.mark.parametrize("granted", [Operation.READ, Operation.WRITE, Operation.DELETE,
                                     Operation.ALTER])
def test_describe_is_implied(granted: Operation) -> None:
    assert allowed([rule(T, "t", granted)], Operation.DESCRIBE, T, "t")


def test_describe_configs_implied_by_alter_configs_only() -> None:
    assert allowed([rule(T, "t", Operation.ALTER_CONFIGS)], Operation.DESCRIBE_CONFIGS, T, "t")
    assert not allowed([rule(T, "t", Operation.READ)], Operation.DESCRIBE_CONFIGS, T, "t")


def test_deny_of_read_does_not_deny_describe() -> None:
    rules = [rule(T, "t", Operation.DESCRIBE), rule(T, "t", Operation.READ, Permission.DENY)]
    assert allowed(rules, Operation.DESCRIBE, T, "t")


def test_principal_and_host_matching() -> None:
    rules = [rule(T, "t", Operation.READ, principal="User:*", host="10.0.0.1")]
    assert allowed(rules, Operation.READ, T, "t", principal="User:anyone")
    assert not allowed(rules, Operation.READ, T, "t", host="10.0.0.2")
    assert not allowed([rule(T, "t", Operation.READ)], Operation.READ, T, "t",
                       principal="User:bob")


def test_cluster_resource() -> None:
    rules = [rule(C, acl.CLUSTER_RESOURCE, Operation.IDEMPOTENT_WRITE)]
    assert allowed(rules, Operation.IDEMPOTENT_WRITE, C, acl.CLUSTER_RESOURCE)
    assert not allowed(rules, Operation.CREATE, C, acl.CLUSTER_RESOURCE)


@pytest.mark.parametrize("bad,message", [
    (AclBinding(T, "t", PatternType.MATCH, "User:a", "*", Operation.READ, Permission.ALLOW),
     "LITERAL or PREFIXED"),
    (AclBinding(T, "*", PRE, "User:a", "*", Operation.READ, Permission.ALLOW), "wildcard"),
    (AclBinding(T, "t", LIT, "alice", "*", Operation.READ, Permission.ALLOW), "User:NAME"),
    (AclBinding(C, "other", LIT, "User:a", "*", Operation.READ, Permission.ALLOW),
     "kafka-cluster"),
    (AclBinding(T, "t", LIT, "User:a", "*", Operation.ANY, Permission.ALLOW), "operation"),
    (AclBinding(T, "t", LIT, "User:a", "*", Operation.READ, Permission.ANY), "ALLOW or DENY"),
    (AclBinding(ResourceType.ANY, "t", LIT, "User:a", "*", Operation.READ, Permission.ALLOW),
     "resource type"),
])
def test_invalid_acls_are_refused(bad: AclBinding, message: str) -> None:
    with pytest.raises(AclError, match=message):
        bad.validate()


def test_filters() -> None:
    stored = {"1": rule(T, "orders", Operation.READ), "2": rule(T, "ord", Operation.WRITE,
                                                                pattern=PRE),
              "3": rule(G, "g", Operation.READ, principal="User:bob")}
    assert [i for i, _ in acl.select(stored, AclFilter())] == ["2", "1", "3"]
    assert [i for i, _ in acl.select(stored, AclFilter(resource_type=T,
                                                       pattern_type=PatternType.MATCH,
                                                       resource_name="orders"))] == ["2", "1"]
    assert [i for i, _ in acl.select(stored, AclFilter(pattern_type=LIT,
                                                       resource_name="ord"))] == []
    assert [i for i, _ in acl.select(stored, AclFilter(principal="User:bob"))] == ["3"]
    assert [i for i, _ in acl.select(stored, AclFilter(operation=Operation.WRITE))] == ["2"]


def test_names_parse_like_kafkas_tools() -> None:
    assert acl.operation("idempotent-write") == Operation.IDEMPOTENT_WRITE
    assert acl.resource_type("topic") == T
    with pytest.raises(AclError, match="unknown operation 'fly'"):
        acl.operation("fly")
    assert acl.parse_super_users("User:a; User:b") == {"User:a", "User:b"}
    with pytest.raises(AclError):
        acl.parse_super_users("alice")
