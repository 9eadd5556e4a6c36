"""`raftka groups list|describe|reset-offsets|delete`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raftka.client.cli_common import EXIT_OK, CliError, add_bootstrap, add_json, cli_admin


def register(commands: Any) -> None:
    groups = commands.add_parser("groups", help="consumer groups: members, offsets, lag")
    actions = groups.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every consumer group of the cluster")
    add_bootstrap(listing)
    add_json(listing)
    listing.set_defaults(handler=run_list)

    describe = actions.add_parser("describe", help="members, assignment, offsets and lag")
    describe.add_argument("group")
    add_bootstrap(describe)
    add_json(describe)
    describe.set_defaults(handler=run_describe)

    reset = actions.add_parser(
        "reset-offsets", help="move an empty group's committed offsets of a topic"
    )
    reset.add_argument("group")
    reset.add_argument("--topic", required=True)
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true")
    where.add_argument("--to-latest", action="store_true")
    where.add_argument("--to-offset", type=int, metavar="N")
    add_bootstrap(reset)
    reset.set_defaults(handler=run_reset)

    delete = actions.add_parser("delete", help="delete an empty group and its offsets")
    delete.add_argument("group")
    add_bootstrap(delete)
    delete.set_defaults(handler=run_delete)

    from raftka.client import cli_admin_ops

    cli_admin_ops.register_group_actions(actions)


def _admin(args: argparse.Namespace) -> Any:
    return cli_admin(args)


def run_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        reply = admin.groups.list_groups()
    groups = sorted(reply.groups, key=lambda g: g.group_id)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "group_id": g.group_id,
                        "state": g.state,
                        "members": g.members,
                        "coordinator": g.coordinator_id,
                    }
                    for g in groups
                ]
            )
        )
        return EXIT_OK
    for group in groups:
        print(f"{group.group_id}\t{group.state}\t{group.members} member(s)")
    if reply.unreachable_brokers:
        print(
            f"(brokers {list(reply.unreachable_brokers)} did not answer; their groups are missing)"
        )
    return EXIT_OK


def describe_as_dict(description: Any, lags: list[Any]) -> dict[str, Any]:
    return {
        "group_id": description.group_id,
        "state": description.state,
        "group_epoch": description.group_epoch,
        "assignor": description.assignor,
        "coordinator": description.coordinator_id,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "member_epoch": m.member_epoch,
                "subscribed_topics": list(m.subscribed_topic_names),
                "assignment": [
                    {"topic": t.topic, "partition": p} for t in m.assignment for p in t.partitions
                ],
            }
            for m in description.members
        ],
        "offsets": [
            {
                "topic": lag.topic,
                "partition": lag.partition,
                "committed": lag.committed,
                "end": lag.end,
                "lag": lag.lag,
            }
            for lag in lags
        ],
    }


def run_describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        description = admin.groups.describe_group(args.group)
        data = describe_as_dict(description, admin.groups.lag(description))
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    print(
        f"Group {data['group_id']}  state {data['state']}  epoch {data['group_epoch']}  "
        f"assignor {data['assignor']}  coordinator broker {data['coordinator']}"
    )
    owner = {}
    for member in data["members"]:
        for tp in member["assignment"]:
            owner[(tp["topic"], tp["partition"])] = member["member_id"][:12]
    print(f"{'TOPIC':<24} {'PART':>4} {'COMMITTED':>10} {'END':>10} {'LAG':>8}  MEMBER")
    for row in data["offsets"]:
        committed = "-" if row["committed"] is None else row["committed"]
        lag = "-" if row["lag"] is None else row["lag"]
        print(
            f"{row['topic']:<24} {row['partition']:>4} {committed!s:>10} {row['end']:>10} "
            f"{lag!s:>8}  {owner.get((row['topic'], row['partition']), '-')}"
        )
    if not data["members"]:
        print("(no active members)")
    return EXIT_OK


def run_reset(args: argparse.Namespace) -> int:
    to = "earliest" if args.to_earliest else "latest" if args.to_latest else "offset"
    if to == "offset" and args.to_offset < 0:
        raise CliError("--to-offset must be >= 0")
    with _admin(args) as admin:
        targets = admin.groups.reset_offsets(
            args.group, args.topic, to=to, offset=args.to_offset or 0
        )
    for partition, offset in sorted(targets.items()):
        print(f"{args.topic}-{partition}: {offset}")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.groups.delete_group(args.group)
    print(f"Deleted group {args.group}.")
    return EXIT_OK
