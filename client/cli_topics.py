"""`raftka topics create|list|describe|delete` (alter-config, add-partitions and
delete-records: cli_admin_ops.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raftka.client.cli_common import EXIT_OK, add_bootstrap, add_json, cli_admin, parse_key_values
from raftka.client.errors import TopicAlreadyExistsError


def register(commands: Any) -> None:
    topics = commands.add_parser("topics", help="create, list, describe, alter, delete topics")
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="partition count (default: the broker's num.partitions)",
    )
    create.add_argument(
        "--replication-factor",
        type=int,
        default=0,
        help="replicas per partition (default: the broker's default, capped "
        "at the live broker count)",
    )
    create.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="topic config, e.g. retention.ms=3600000 (repeatable)",
    )
    create.add_argument(
        "--if-not-exists", action="store_true", help="succeed when the topic exists already"
    )
    add_bootstrap(create)
    add_json(create)
    create.set_defaults(handler=create_topic)

    listing = actions.add_parser("list", help="list topics")
    listing.add_argument("--internal", action="store_true", help="include internal topics")
    add_bootstrap(listing)
    add_json(listing)
    listing.set_defaults(handler=list_topics)

    describe = actions.add_parser("describe", help="partitions, leaders, ISR and configs")
    describe.add_argument("name")
    add_bootstrap(describe)
    add_json(describe)
    describe.set_defaults(handler=describe_topic)

    delete = actions.add_parser("delete", help="delete a topic and its data on every broker")
    delete.add_argument("name")
    add_bootstrap(delete)
    delete.set_defaults(handler=delete_topic)

    from raftka.client import cli_admin_ops

    cli_admin_ops.register_topic_actions(actions)


def _admin(args: argparse.Namespace) -> Any:
    return cli_admin(args)


def create_topic(args: argparse.Namespace) -> int:
    configs = parse_key_values(args.config, "--config")
    with _admin(args) as admin:
        try:
            result = admin.create_topic(
                args.name, args.partitions, args.replication_factor, configs
            )
        except TopicAlreadyExistsError:
            if not args.if_not_exists:
                raise
            print(f"Topic {args.name} already exists.")
            return EXIT_OK
    if args.json:
        print(
            json.dumps(
                {
                    "name": result.name,
                    "topic_id": result.topic_id,
                    "partitions": result.num_partitions,
                    "replication_factor": result.replication_factor,
                }
            )
        )
    else:
        print(
            f"Created topic {result.name} with {result.num_partitions} partition(s), "
            f"replication factor {result.replication_factor}."
        )
    return EXIT_OK


def list_topics(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        topics = admin.list_topics(include_internal=args.internal)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "topic_id": t.topic_id,
                        "partitions": t.num_partitions,
                        "replication_factor": t.replication_factor,
                        "internal": t.internal,
                    }
                    for t in topics
                ]
            )
        )
        return EXIT_OK
    for topic in topics:
        print(topic.name)
    return EXIT_OK


def describe_as_dict(description: Any) -> dict[str, Any]:
    return {
        "name": description.name,
        "topic_id": description.topic_id,
        "internal": description.internal,
        "partitions": [
            {
                "partition": p.partition,
                "leader": p.leader_id,
                "leader_epoch": p.leader_epoch,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
            }
            for p in description.partitions
        ],
        "configs": {c.name: c.value for c in description.configs},
        "configs_set": {c.name: c.value for c in description.configs if not c.is_default},
    }


def describe_topic(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        description = admin.describe_topic(args.name)
    data = describe_as_dict(description)
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    partitions = data["partitions"]
    rf = len(partitions[0]["replicas"]) if partitions else 0
    print(
        f"Topic: {data['name']}  Id: {data['topic_id']}  Partitions: {len(partitions)}  "
        f"ReplicationFactor: {rf}"
    )
    if data["configs_set"]:
        print("Configs: " + ", ".join(f"{k}={v}" for k, v in data["configs_set"].items()))
    header = (
        f"{'PARTITION':>9}  {'LEADER':>6}  {'EPOCH':>5}  {'REPLICAS':<12} {'ISR':<12} "
        f"{'START':>8} {'HW':>10}"
    )
    print(header)
    for p in partitions:
        leader = p["leader"] if p["leader"] >= 0 else "none"
        print(
            f"{p['partition']:>9}  {leader!s:>6}  {p['leader_epoch']:>5}  "
            f"{','.join(map(str, p['replicas'])):<12} {','.join(map(str, p['isr'])):<12} "
            f"{p['log_start_offset']:>8} {p['high_watermark']:>10}"
        )
    return EXIT_OK


def delete_topic(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.delete_topic(args.name)
    print(f"Deleted topic {args.name}.")
    return EXIT_OK
