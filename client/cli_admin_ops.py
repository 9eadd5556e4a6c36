"""`raftka topics alter-config|add-partitions|delete-records`, `raftka groups delete-offsets`
and `raftka log-dirs`: the admin operations that change a topic or a group, and what each
broker's log directory holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

from raftka.client.cli_common import (
    EXIT_OK,
    CliError,
    add_bootstrap,
    add_json,
    cli_admin,
    parse_key_values,
)


def _admin(args: argparse.Namespace) -> Any:
    return cli_admin(args)


def register_topic_actions(actions: Any) -> None:
    alter = actions.add_parser("alter-config", help="set or delete a topic's configs")
    alter.add_argument("name")
    alter.add_argument("--set", action="append", metavar="KEY=VALUE", dest="set_configs",
                       help="config to set, e.g. retention.ms=3600000 (repeatable)")
    alter.add_argument("--delete", action="append", metavar="KEY", dest="delete_configs",
                       help="config to delete, back to its default (repeatable)")
    alter.add_argument("--validate-only", action="store_true",
                       help="check the change but make none")
    add_bootstrap(alter)
    add_json(alter)
    alter.set_defaults(handler=alter_config)

    grow = actions.add_parser("add-partitions", help="grow a topic's partition count")
    grow.add_argument("name")
    grow.add_argument("--partitions", type=int, required=True, metavar="N",
                      help="the new total partition count (larger than the current one)")
    add_bootstrap(grow)
    add_json(grow)
    grow.set_defaults(handler=add_partitions)

    trim = actions.add_parser("delete-records",
                              help="delete a partition's records below an offset")
    trim.add_argument("name")
    trim.add_argument("--partition", type=int, required=True)
    trim.add_argument("--before", type=int, required=True, metavar="OFFSET",
                      help="records below this offset go (-1: everything below the high "
                           "watermark)")
    add_bootstrap(trim)
    add_json(trim)
    trim.set_defaults(handler=delete_records)


def register_group_actions(actions: Any) -> None:
    forget = actions.add_parser("delete-offsets",
                                help="delete a group's committed offsets of a topic")
    forget.add_argument("group")
    forget.add_argument("--topic", action="append", required=True, dest="topics",
                        help="topic whose offsets go (repeatable)")
    add_bootstrap(forget)
    add_json(forget)
    forget.set_defaults(handler=delete_offsets)


def register(commands: Any) -> None:
    dirs = commands.add_parser("log-dirs",
                               help="each broker's log directory: partition sizes and lag")
    dirs.add_argument("--topic", help="only this topic's partitions")
    add_bootstrap(dirs)
    add_json(dirs)
    dirs.set_defaults(handler=log_dirs)


def alter_config(args: argparse.Namespace) -> int:
    set_configs = parse_key_values(args.set_configs, "--set")
    deleted = list(args.delete_configs or [])
    if not set_configs and not deleted:
        raise CliError("say what to change: --set KEY=VALUE and/or --delete KEY")
    with _admin(args) as admin:
        admin.alter_configs(args.name, set_configs, deleted, validate_only=args.validate_only)
        description = admin.describe_topic(args.name)
    explicit = {c.name: c.value for c in description.configs if not c.is_default}
    if args.json:
        print(json.dumps({"topic": args.name, "validate_only": args.validate_only,
                          "set": set_configs, "deleted": deleted, "configs_set": explicit}))
        return EXIT_OK
    verb = "Would alter" if args.validate_only else "Altered"
    print(f"{verb} topic {args.name}: "
          + ", ".join([f"{k}={v}" for k, v in set_configs.items()]
                      + [f"-{k}" for k in deleted]))
    print("Configs set now: " + (", ".join(f"{k}={v}" for k, v in explicit.items())
                                 or "(all defaults)"))
    return EXIT_OK


def add_partitions(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.create_partitions(args.name, args.partitions)
        description = admin.describe_topic(args.name)
    if args.json:
        print(json.dumps({"topic": args.name, "partitions": len(description.partitions)}))
        return EXIT_OK
    print(f"Topic {args.name} now has {len(description.partitions)} partitions.")
    return EXIT_OK


def delete_records(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        start = admin.delete_records(args.name, args.partition, args.before)
    if args.json:
        print(json.dumps({"topic": args.name, "partition": args.partition,
                          "log_start_offset": start}))
        return EXIT_OK
    print(f"{args.name}-{args.partition}: records below offset {start} are deleted "
          f"(log start offset {start}).")
    return EXIT_OK


def delete_offsets(args: argparse.Namespace) -> int:
    from raftka.proto.raftka.v1 import common_pb2

    with _admin(args) as admin:
        results = admin.groups.delete_offsets(args.group, args.topics)
    rows = [{"topic": r.topic,
             "error": common_pb2.ErrorCode.Name(r.error_code) if r.error_code else None,
             "message": r.error_message or None,
             "partitions_deleted": r.partitions_deleted} for r in results]
    if args.json:
        print(json.dumps({"group": args.group, "topics": rows}))
    else:
        for row in rows:
            if row["error"]:
                print(f"{row['topic']}: {row['error']}: {row['message']}")
            else:
                print(f"{row['topic']}: deleted the committed offsets of "
                      f"{row['partitions_deleted']} partition(s)")
    return EXIT_OK if not any(row["error"] for row in rows) else 1


def log_dirs(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        brokers = admin.describe_log_dirs()
    data = [{
        "broker": b.broker_id, "log_dir": b.log_dir, "total_bytes": b.total_bytes,
        "usable_bytes": b.usable_bytes,
        "partitions": [{"topic": p.topic, "partition": p.partition, "size_bytes": p.size_bytes,
                        "offset_lag": p.offset_lag, "leader": p.leader,
                        "log_start_offset": p.log_start_offset,
                        "log_end_offset": p.log_end_offset, "high_watermark": p.high_watermark}
                       for p in b.partitions if args.topic in (None, p.topic)],
    } for b in brokers]
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    for broker in data:
        used = sum(p["size_bytes"] for p in broker["partitions"])
        print(f"Broker {broker['broker']}  {broker['log_dir']}  {used} bytes in "
              f"{len(broker['partitions'])} partition(s), "
              f"{broker['usable_bytes']} of {broker['total_bytes']} bytes free on the disk")
        print(f"  {'PARTITION':<32} {'ROLE':<8} {'SIZE':>12} {'START':>10} {'END':>10} "
              f"{'LAG':>6}")
        for p in broker["partitions"]:
            role = "leader" if p["leader"] else "follower"
            print(f"  {p['topic'] + '-' + str(p['partition']):<32} {role:<8} "
                  f"{p['size_bytes']:>12} {p['log_start_offset']:>10} "
                  f"{p['log_end_offset']:>10} {p['offset_lag']:>6}")
    return EXIT_OK
