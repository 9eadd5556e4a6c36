"""`raftka produce` (stdin lines -> records) and `raftka consume` (records -> stdout lines)."""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import time
from typing import Any

from raftka.client.cli_common import EXIT_FAILED, EXIT_OK, CliError, add_bootstrap, add_json

PROGRESS_INTERVAL_S = 5.0


def register(commands: Any) -> None:
    produce = commands.add_parser(
        "produce",
        help="send stdin lines as records",
        description="Send one record per line of standard input. Exits 0 once every line is "
        "acknowledged, 1 if any record failed.",
    )
    produce.add_argument("topic")
    produce.add_argument(
        "--key-separator", metavar="SEP", help="split each line at the first SEP into key and value"
    )
    produce.add_argument(
        "--acks",
        default="all",
        choices=["0", "1", "all", "-1"],
        help="0: no wait, 1: leader stored it, all: every in-sync replica has it (default)",
    )
    produce.add_argument("--partition", type=int, help="send every record to this partition")
    produce.add_argument("--linger-ms", type=int, default=5)
    produce.add_argument("--batch-size", type=int, default=16_384)
    produce.add_argument(
        "--timeout-ms",
        type=int,
        default=120_000,
        help="give up on a record after this long (delivery.timeout.ms)",
    )
    produce.add_argument("--quiet", action="store_true", help="no summary on stderr")
    add_bootstrap(produce)
    produce.set_defaults(handler=run_produce)

    consume = commands.add_parser(
        "consume",
        help="print records, one value per line",
        description="Print records of a topic. Without --from-beginning or --offset, only "
        "records produced from now on are shown.",
    )
    consume.add_argument("topic")
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest offset (else at the end)",
    )
    consume.add_argument("--partition", type=int, help="read only this partition")
    consume.add_argument(
        "--offset", help="start offset: a number, 'earliest' or 'latest' (with --partition)"
    )
    consume.add_argument("--max-messages", type=int, help="exit after this many records")
    consume.add_argument("--timeout-ms", type=int, help="exit when no record arrives for this long")
    consume.add_argument("--print-key", action="store_true", help="print key<TAB>value")
    consume.add_argument("--print-offset", action="store_true", help="prefix partition:offset<TAB>")
    consume.add_argument(
        "--group",
        help="consume as a member of this consumer group: "
        "share partitions, resume from committed offsets",
    )
    add_bootstrap(consume)
    add_json(consume)
    consume.set_defaults(handler=run_consume)


# ---------------------------------------------------------------------------- produce
def _records_from_stdin(separator: str | None) -> Any:
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\r\n")
        if separator is not None:
            key, sep, value = line.partition(separator.encode())
            if not sep:
                raise CliError(f"line {line[:60]!r} has no key separator {separator!r}")
            yield key, value
        else:
            yield None, line


def run_produce(args: argparse.Namespace) -> int:
    from raftka.client.producer import Producer

    producer = Producer(
        args.bootstrap,
        acks=args.acks,
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        delivery_timeout_ms=args.timeout_ms,
        request_timeout_ms=min(30_000, args.timeout_ms),
    )
    futures = []
    sent = 0
    started = last_report = time.monotonic()
    if not args.quiet:
        producer.on_retry = _retry_reporter()
    try:
        for key, value in _records_from_stdin(args.key_separator):
            futures.append(producer.send(args.topic, value, key, partition=args.partition))
            sent += 1
            if time.monotonic() - last_report >= PROGRESS_INTERVAL_S and not args.quiet:
                last_report = time.monotonic()
                done = sum(1 for f in futures if f.done())
                print(f"... {sent} records read, {done} acknowledged", file=sys.stderr)
        producer.flush(timeout=args.timeout_ms / 1000 + 5)
    finally:
        producer.close(timeout=5)
    failures = [f.exception() for f in futures if f.exception() is not None]
    elapsed = time.monotonic() - started
    if failures:
        print(
            f"raftka: error: {len(failures)} of {sent} records failed; first: {failures[0]}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if not args.quiet:
        carried = ""
        if producer.retries:
            causes = ", ".join(f"{name} x{count}" for name, count in producer.retries.items())
            carried = f"; carried on through {sum(producer.retries.values())} retries ({causes})"
        print(
            f"Produced {sent} records to {args.topic} in {elapsed:.2f}s (acks={args.acks})"
            f"{carried}.",
            file=sys.stderr,
        )
    return EXIT_OK


def _retry_reporter() -> Any:
    """Say (at most once a second) when the producer rides through a failure."""
    last = [0.0]

    def report(topic: str, partition: int, error: BaseException) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0:
            return
        last[0] = now
        reason = str(error).splitlines()[0][:160]
        print(
            f"... {time.strftime('%H:%M:%S')} {topic}-{partition}: {reason}; retrying "
            "(refreshing leaders)",
            file=sys.stderr,
            flush=True,
        )

    return report


# ---------------------------------------------------------------------------- consume
def _text(data: Any) -> str:
    if data is None:
        return ""
    try:
        return bytes(data).decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode()


def _format(record: Any, args: argparse.Namespace) -> str:
    if args.json:
        return json.dumps(
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "key": None if record.key is None else _text(record.key),
                "value": None if record.value is None else _text(record.value),
                "headers": {k: _text(v) for k, v in record.headers},
            }
        )
    parts = []
    if args.print_offset:
        parts.append(f"{record.partition}:{record.offset}")
    if args.print_key:
        parts.append(_text(record.key))
    parts.append(_text(record.value))
    return "\t".join(parts)


def _start_group_consumer(args: argparse.Namespace) -> Any:
    from raftka.client.consumer import Consumer

    if args.partition is not None or args.offset is not None:
        raise CliError(
            "--partition and --offset do not combine with --group (the group "
            "assigns partitions; use `raftka groups reset-offsets` to move it)"
        )
    consumer = Consumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        client_id="raftka-cli",
    )
    consumer.metadata.ensure_topic(args.topic, allow_auto_create=False)
    consumer.subscribe([args.topic])
    return consumer


def _start_consumer(args: argparse.Namespace) -> Any:
    from raftka.client.consumer import Consumer, TopicPartition

    if args.group:
        return _start_group_consumer(args)

    consumer = Consumer(
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
    )
    infos = consumer.metadata.ensure_topic(args.topic, allow_auto_create=False)
    if args.partition is not None:
        if not 0 <= args.partition < len(infos):
            raise CliError(
                f"partition {args.partition} does not exist: '{args.topic}' has {len(infos)}"
            )
        partitions = [TopicPartition(args.topic, args.partition)]
    else:
        if args.offset not in (None, "earliest", "latest"):
            raise CliError("--offset N needs --partition")
        partitions = [TopicPartition(args.topic, i.partition) for i in infos]
    consumer.assign(partitions)
    if args.offset == "earliest":
        consumer.seek_to_beginning()
    elif args.offset == "latest":
        consumer.seek_to_end()
    elif args.offset is not None:
        try:
            offset = int(args.offset)
        except ValueError:
            raise CliError(
                f"--offset must be a number, 'earliest' or 'latest', not {args.offset!r}"
            ) from None
        start, end = (
            consumer.beginning_offsets(partitions)[partitions[0]],
            consumer.end_offsets(partitions)[partitions[0]],
        )
        if not start <= offset <= end:
            raise CliError(
                f"offset {offset} is out of range for {args.topic}-{args.partition} "
                f"(log start {start}, end {end})"
            )
        consumer.seek(partitions[0], offset)
    else:
        for tp in partitions:
            consumer.position(tp)  # fix the start now: "latest" means "from this moment"
    return consumer


class _Stopped(Exception):
    """SIGTERM or Ctrl-C: stop consuming, commit, leave the group, report, exit 0."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped


def run_consume(args: argparse.Namespace) -> int:
    consumer = _start_consumer(args)
    count = 0
    idle_since = time.monotonic()
    out = sys.stdout
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        while args.max_messages is None or count < args.max_messages:
            wanted = None if args.max_messages is None else args.max_messages - count
            batch = consumer.poll(timeout_ms=200, max_records=wanted)
            if not batch:
                if (
                    args.timeout_ms is not None
                    and (time.monotonic() - idle_since) * 1000 >= args.timeout_ms
                ):
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    out.write(_format(record, args) + "\n")
                    count += 1
            out.flush()
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        consumer.close()
    print(f"Processed {count} records.", file=sys.stderr)
    return EXIT_OK
