"""A longer fault-injection run: the nemesis of tests/faults/ for M minutes, then the checker.

    sudo python bench/fault_run.py --minutes 10 --seed 7 --brokers 3 [--json]

Needs root and iproute2 (network namespaces; see tests/faults/netns.py). Brokers run in
their own namespaces on 10.213.N.0/24, joined by a bridge; the producers (raftka acks=all,
idempotent; --kafka-producers adds confluent_kafka ones) and two consumer groups (raftka
KIP-848 members, --group-members; confluent_kafka classic members, --kafka-consumers) record a
history; faults come one at a time in a seeded order (kill -9, SIGSTOP, partitions, one-way
cuts, link down). Progress is printed every 10 s; at the end, a table of faults by kind and
of the checker's counts (lost, duplicated, reordered, diverged, ... must all be 0), and with
--json the whole summary as JSON on stdout. Exit status 0 when the checker found nothing,
1 when it found an anomaly, 2 when the machine cannot run it. The work directory (broker
logs, history.jsonl, summary.json) is kept when something was found or --keep is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raftka.client.cli_common import CliError, parse_key_values  # noqa: E402
from tests.faults.nemesis import ALL_KINDS, KINDS, Schedule  # noqa: E402
from tests.faults.netns import unavailable_reason  # noqa: E402
from tests.faults.runner import TrialConfig, TrialResult, run_trial  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--brokers", type=int, choices=(3, 5), default=3,
                        help="3 (all voters) or 5 (3 voters + 2 observers)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--producers", type=int, default=3, help="raftka producers")
    parser.add_argument("--kafka-producers", type=int, default=1,
                        help="confluent_kafka producers on the Kafka listeners")
    parser.add_argument("--group-members", type=int, default=2,
                        help="members of the raftka (KIP-848) consumer group")
    parser.add_argument("--kafka-consumers", type=int, default=2,
                        help="members of a classic Kafka consumer group (confluent_kafka)")
    parser.add_argument("--rate", type=float, default=60.0, help="values/s per producer")
    parser.add_argument("--acks", choices=("all", "1"), default="all",
                        help="producers' acks (1: a control run, where losses are expected)")
    parser.add_argument("--no-consumer", action="store_true", help="no group consumer")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated fault kinds (default: {','.join(KINDS)}; "
                             f"also: {','.join(k for k in ALL_KINDS if k not in KINDS)})")
    parser.add_argument("--hold", default="3,6", metavar="LOW,HIGH",
                        help="seconds each fault lasts, uniform in [LOW, HIGH] (default 3,6)")
    parser.add_argument("--work-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verbose", action="store_true", help="show librdkafka's log too")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a broker setting for every broker (repeatable), e.g. "
                        "cpu.affinity=auto, to check a configuration under faults")
    args = parser.parse_args(argv)
    try:
        args.settings = parse_key_values(args.settings, "--set")
    except CliError as error:
        parser.error(str(error))
    return args


def table(result: TrialResult) -> str:
    report = result.report
    lines = [
        f"seed {result.config.seed}, {result.config.brokers} brokers "
        f"({result.config.voters} voters), {result.elapsed_s:.0f} s",
        "",
        "faults by kind",
        *(f"  {kind:<20} {count:>6}" for kind, count in result.faults_by_kind.items()),
        f"  {'total':<20} {sum(result.faults_by_kind.values()):>6}",
        "",
        report.table(),
    ]
    notes = result.history.notes + result.final.notes
    if notes:
        lines += ["", "notes", *(f"  {n}" for n in notes)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:  # librdkafka reports every refused connection and timeout
        logging.getLogger("raftka.faults.librdkafka").setLevel(logging.CRITICAL)
    low, high = (float(x) for x in args.hold.split(","))
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="raftka-faults-"))
    config = TrialConfig(
        seed=args.seed,
        brokers=args.brokers,
        voters=3,
        duration_s=args.minutes * 60,
        partitions=args.partitions,
        producers=args.producers,
        kafka_producers=args.kafka_producers,
        group_members=args.group_members,
        kafka_consumers=args.kafka_consumers,
        rate_per_producer=args.rate,
        consumer=not args.no_consumer,
        acks=args.acks,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        schedule=Schedule(hold=(low, high)),
        settings=args.settings,
    )
    started = time.monotonic()
    out = sys.stderr if args.json else sys.stdout

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {text}", file=out, flush=True)

    progress(f"work directory {work_dir}")
    result = run_trial(config, work_dir, progress)
    print(table(result), file=out)
    if args.json:
        print(json.dumps(result.summary(), indent=2, default=str))
    found = not result.report.ok
    if found or args.keep or args.work_dir:
        print(f"kept {work_dir}", file=out)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
