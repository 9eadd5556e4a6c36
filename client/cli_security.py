"""`raftka users ...` and `raftka acls ...`: SCRAM users and ACLs of a cluster.

Passwords come from a file (--password-file), $RAFTKA_NEW_PASSWORD, or a prompt; never a
command-line argument (others can read those in `ps`). --cluster-secret-file acts with the
cluster's own authority (how the first admin user of a secured cluster is made).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from raftka.client.cli_common import EXIT_OK, CliError, add_bootstrap, add_json
from raftka.cluster import acl as acl_model
from raftka.cluster import scram
from raftka.cluster.acl import AclBinding, AclError, AclFilter, PatternType, Permission

NEW_PASSWORD_ENV = "RAFTKA_NEW_PASSWORD"
_RESOURCE_FLAGS = ("topic", "group", "transactional_id")


def register(commands: Any) -> None:
    users = commands.add_parser("users", help="SCRAM users (SASL and gRPC credentials)")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a user, or set a new password")
    create.add_argument("name")
    create.add_argument("--new-password-file", metavar="FILE",
                        help=f"file holding the new password (else ${NEW_PASSWORD_ENV}, "
                             "else a prompt)")
    create.add_argument("--mechanism", action="append", choices=sorted(scram.MECHANISMS),
                        help="SCRAM mechanism(s) to store (default: both)")
    create.add_argument("--iterations", type=int, default=scram.DEFAULT_ITERATIONS,
                        help=f"PBKDF2 iterations ({scram.MIN_ITERATIONS}.."
                             f"{scram.MAX_ITERATIONS}; default {scram.DEFAULT_ITERATIONS})")
    delete = actions.add_parser("delete", help="delete a user's credentials")
    delete.add_argument("name")
    delete.add_argument("--mechanism", action="append", choices=sorted(scram.MECHANISMS),
                        help="only these mechanisms (default: all the user has)")
    listing = actions.add_parser("list", help="users and their SCRAM mechanisms")
    for parser, handler in ((create, run_users_create), (delete, run_users_delete),
                            (listing, run_users_list)):
        _common(parser)
        parser.set_defaults(handler=handler)

    acls = commands.add_parser("acls", help="access control lists (Kafka's model)")
    acl_actions = acls.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = acl_actions.add_parser("add", help="allow (or --deny) operations to a principal")
    _resource_flags(add, required=True)
    add.add_argument("--principal", action="append", required=True,
                     help="User:NAME or User:* (repeatable)")
    add.add_argument("--operation", action="append", required=True,
                     help="READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, "
                          "DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL "
                          "(repeatable)")
    add.add_argument("--host", default="*", help="client host the ACL applies to (default *)")
    add.add_argument("--deny", action="store_true", help="a DENY ACL (deny wins over allow)")
    acl_list = acl_actions.add_parser("list", help="ACLs, optionally filtered")
    remove = acl_actions.add_parser("remove", help="remove the ACLs a filter selects")
    for parser, required in ((acl_list, False), (remove, True)):
        _resource_flags(parser, required=required)
        parser.add_argument("--principal", help="only this principal")
        parser.add_argument("--operation", help="only this operation")
        parser.add_argument("--host", help="only this host")
        parser.add_argument("--permission", choices=["ALLOW", "DENY"], help="only these")
    for parser, handler in ((add, run_acls_add), (acl_list, run_acls_list),
                            (remove, run_acls_remove)):
        _common(parser)
        parser.set_defaults(handler=handler)


def _common(parser: argparse.ArgumentParser) -> None:
    add_bootstrap(parser)
    add_json(parser)
    parser.add_argument("--cluster-secret-file", metavar="FILE",
                        help="act with the cluster secret's authority instead of a user's "
                             "(to create the first admin user)")


def _resource_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    which = parser.add_mutually_exclusive_group(required=required)
    which.add_argument("--topic", metavar="NAME")
    which.add_argument("--group", metavar="NAME")
    which.add_argument("--transactional-id", metavar="ID", dest="transactional_id")
    which.add_argument("--cluster", action="store_true", help="the cluster resource")
    parser.add_argument("--prefixed", action="store_true",
                        help="the name is a prefix (PREFIXED pattern) rather than a literal")


def _admin(args: argparse.Namespace) -> Any:
    from raftka.client.security_admin import SecurityAdmin

    return SecurityAdmin(args.bootstrap, cluster_secret_file=args.cluster_secret_file,
                         request_timeout_ms=getattr(args, "request_timeout_ms", 30_000))


def _new_password(args: argparse.Namespace) -> str:
    if args.new_password_file:
        try:
            return Path(args.new_password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read --new-password-file: {exc}") from None
    if os.environ.get(NEW_PASSWORD_ENV):
        return os.environ[NEW_PASSWORD_ENV]
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the passwords differ")
    return first


def run_users_create(args: argparse.Namespace) -> int:
    password = _new_password(args)
    mechanisms = args.mechanism or sorted(scram.MECHANISMS)
    with _admin(args) as admin:
        admin.create_user(args.name, password, mechanisms=mechanisms,
                          iterations=args.iterations)
    if args.json:
        print(json.dumps({"user": args.name, "mechanisms": mechanisms,
                          "iterations": args.iterations}))
    else:
        print(f"user {args.name}: {', '.join(mechanisms)} credential(s) stored "
              f"({args.iterations} iterations)")
    return EXIT_OK


def run_users_delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        removed = admin.delete_user(args.name, args.mechanism)
    if args.json:
        print(json.dumps({"user": args.name, "removed": removed}))
    else:
        print(f"user {args.name}: removed {', '.join(removed)}")
    return EXIT_OK


def run_users_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        users = admin.list_users()
    if args.json:
        print(json.dumps([{"user": u.name, "mechanisms": u.mechanisms} for u in users]))
        return EXIT_OK
    if not users:
        print("no users")
    for user in users:
        mechanisms = ", ".join(f"{m} ({i} iterations)" for m, i in
                               sorted(user.mechanisms.items()))
        print(f"{user.name}\t{mechanisms}")
    return EXIT_OK


def _resource(args: argparse.Namespace) -> tuple[acl_model.ResourceType | None, str | None]:
    if getattr(args, "cluster", False):
        return acl_model.ResourceType.CLUSTER, acl_model.CLUSTER_RESOURCE
    for flag in _RESOURCE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            return acl_model.resource_type(flag.upper()), value
    return None, None


def run_acls_add(args: argparse.Namespace) -> int:
    kind, name = _resource(args)
    assert kind is not None and name is not None
    pattern = PatternType.PREFIXED if args.prefixed else PatternType.LITERAL
    permission = Permission.DENY if args.deny else Permission.ALLOW
    try:
        bindings = [AclBinding(kind, name, pattern, principal, args.host,
                               acl_model.operation(op), permission).validate()
                    for principal in args.principal for op in args.operation]
    except AclError as exc:
        raise CliError(str(exc)) from None
    with _admin(args) as admin:
        admin.add_acls(bindings)
    _print_acls(args, bindings, "added")
    return EXIT_OK


def _filter(args: argparse.Namespace) -> AclFilter:
    kind, name = _resource(args)
    try:
        return AclFilter(
            resource_type=kind or acl_model.ResourceType.ANY, resource_name=name,
            pattern_type=(PatternType.PREFIXED if args.prefixed else PatternType.LITERAL)
            if name is not None else PatternType.ANY,
            principal=args.principal, host=args.host,
            operation=acl_model.operation(args.operation) if args.operation
            else acl_model.Operation.ANY,
            permission=acl_model.permission(args.permission) if args.permission
            else Permission.ANY)
    except AclError as exc:
        raise CliError(str(exc)) from None


def run_acls_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        found = admin.list_acls(_filter(args))
    _print_acls(args, found, None)
    return EXIT_OK


def run_acls_remove(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        removed = admin.remove_acls(_filter(args))
    _print_acls(args, removed, "removed")
    return EXIT_OK


def acl_as_dict(binding: AclBinding) -> dict[str, str]:
    return {"resource_type": binding.resource_type.name, "resource_name": binding.resource_name,
            "pattern_type": binding.pattern_type.name, "principal": binding.principal,
            "host": binding.host, "operation": binding.operation.name,
            "permission": binding.permission.name}


def _print_acls(args: argparse.Namespace, bindings: list[AclBinding], verb: str | None) -> None:
    if args.json:
        print(json.dumps([acl_as_dict(b) for b in bindings]))
        return
    if not bindings:
        print("no ACLs" if verb is None else f"no ACLs {verb}")
    for binding in bindings:
        print(f"{verb + ': ' if verb else ''}{binding.describe()}")
