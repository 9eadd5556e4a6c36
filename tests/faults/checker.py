"""The safety checker: a pure function of a run's recorded history and final state.

No I/O, no clock, no randomness: `check(history, final)` reads the records of
tests/faults/history.py and returns a Report. What it counts (each must be 0):

lost          an acknowledged write (acks=all) whose value the final read did not return.
duplicated    a value the final read returned more than once (at two offsets, or in two
              partitions): idempotent retries must not store a record twice. Not counted
              here (information, `renumbered_by_client`): copies a Kafka client wrote
              under different epochs of one producer id. librdkafka bumps its producer
              epoch after a permanent error (a message that timed out) and renumbers from
              sequence 0 every message it still holds, even ones an earlier attempt may have
              stored (rdkafka_request.c, "message sequence gap"); to any broker the new
              epoch's batch is new data. The batches' producer ids and epochs come from the
              replicas' logs, so a broker that stored one producer epoch's batch twice is
              still counted.
reordered     an acknowledged value read somewhere other than the (partition, offset) its ack
              named, or read before a value that the same producer sent to the same
              partition earlier (one producer's records keep their order in a partition).
diverged      replicas disagreeing about a partition's committed records: every replica in
              the final ISR must hold, on disk, the same RecordBatch bytes for every offset
              below the high watermark (HW = the ISR's common log end, so each of them must
              have them all), and those records must be the ones the final read returned.
              One count per (partition, replica) that differs from the majority, plus one
              per partition whose majority disagrees with the final read or whose final
              read returned two values at one offset.
unexpected    a value read that no producer ever sent.
phantom_reads a record a group consumer received while the faults ran that is not in the
              final log at that offset: it read something that was never committed (a
              stale read: past what the cluster committed, from a deposed leader).
lost_commits  a partition whose final committed group offset is below an acknowledged
              commit (checked only where no later commit asked for a lower offset).
two_owners    a partition two members of one group held at once, with commits of it from
              both acknowledged in that time (see _check_owners).

Failed and pending (unknown outcome) writes may or may not be present: they are counted
for information only, as are offset gaps and replicas outside the final ISR.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from raftka.records import NO_PRODUCER_ID, decode_batches, read_header
from tests.faults.history import (
    FAIL,
    OK,
    PENDING,
    CommitOp,
    FaultEvent,
    FinalState,
    History,
    Ownership,
    ReadRecord,
    ReplicaLog,
    WriteOp,
)

SAFETY = (
    "lost",
    "duplicated",
    "reordered",
    "diverged",
    "unexpected",
    "phantom_reads",
    "lost_commits",
    "two_owners",
)
DETAILS_PER_CATEGORY = 20


@dataclass
class Anomaly:
    category: str
    detail: str


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAFETY, 0))
    info: dict[str, int] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.counts.get(category, 0) for category in SAFETY)

    def flag(self, category: str, detail: str, count: int = 1) -> None:
        self.counts[category] += count
        if sum(1 for a in self.anomalies if a.category == category) < DETAILS_PER_CATEGORY:
            self.anomalies.append(Anomaly(category, detail))

    def table(self) -> str:
        width = max(len(k) for k in [*self.counts, *self.info])
        lines = ["safety (must be 0)".ljust(width + 12)]
        lines += [f"  {k.ljust(width)}  {v:>8}" for k, v in self.counts.items()]
        lines.append("information")
        lines += [f"  {k.ljust(width)}  {v:>8}" for k, v in self.info.items()]
        if self.anomalies:
            lines.append("anomalies")
            lines += [f"  [{a.category}] {a.detail}" for a in self.anomalies]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "counts": dict(self.counts),
            "info": dict(self.info),
            "anomalies": [{"category": a.category, "detail": a.detail} for a in self.anomalies],
        }


def check(history: History, final: FinalState) -> Report:
    report = Report()
    writes = {w.value: w for w in history.writes}
    reads = _unique_reads(final.reads, report)
    located: dict[int, list[ReadRecord]] = defaultdict(list)
    for record in reads:
        located[record.value].append(record)
    at: dict[tuple[int, int], int] = {(r.partition, r.offset): r.value for r in reads}

    _count_outcomes(history.writes, located, report)
    _check_lost(writes, located, at, history.faults, report)
    _check_duplicates(located, writes, _producer_epochs(final), report)
    _check_order(history.writes, located, report)
    _check_unexpected(writes, located, report)
    _check_gaps(reads, final, report)
    _check_divergence(final, reads, report)
    _check_consumed(history, at, final, report)
    _check_commits(history, final, report)
    _check_owners(history, report)
    report.info["faults"] = len(history.faults)
    return report


# ------------------------------------------------------------------------ the reads
def _unique_reads(reads: Sequence[ReadRecord], report: Report) -> list[ReadRecord]:
    """The final read without exact repeats of one (partition, offset, value) (a reader
    that re-fetched); two values at one offset is divergence of what leaders served."""
    seen: dict[tuple[int, int], int] = {}
    unique: list[ReadRecord] = []
    for record in reads:
        key = (record.partition, record.offset)
        if key in seen:
            if seen[key] != record.value:
                report.flag("diverged", f"p{record.partition}@{record.offset}: the final read "
                            f"returned {seen[key]} and then {record.value}")
            continue
        seen[key] = record.value
        unique.append(record)
    report.info["read"] = len(unique)
    return unique


def _count_outcomes(
    writes: Sequence[WriteOp], located: dict[int, list[ReadRecord]], report: Report
) -> None:
    outcomes = Counter(w.outcome for w in writes)
    report.info["invoked"] = len(writes)
    report.info["acked"] = outcomes[OK]
    report.info["failed"] = outcomes[FAIL]
    report.info["pending"] = outcomes[PENDING]
    # Legal (an error or a timeout leaves the outcome unknown), counted to show retries work.
    report.info["failed_but_present"] = sum(
        1 for w in writes if w.outcome == FAIL and w.value in located
    )
    report.info["pending_but_present"] = sum(
        1 for w in writes if w.outcome == PENDING and w.value in located
    )


def _during(faults: Iterable[FaultEvent], start: float, end: float | None) -> str:
    """The faults that overlapped [start, end] (or started after `start`, if end is None)."""
    hits = [
        f"{f.kind}{f.targets}@{f.start_s:.1f}-{f.end_s if f.end_s is None else round(f.end_s, 1)}"
        for f in faults
        if f.start_s <= (end if end is not None else float("inf"))
        and (f.end_s is None or f.end_s >= start)
    ]
    return ", ".join(hits) or "no fault"


def _check_lost(
    writes: dict[int, WriteOp],
    located: dict[int, list[ReadRecord]],
    at: dict[tuple[int, int], int],
    faults: Sequence[FaultEvent],
    report: Report,
) -> None:
    for value, op in writes.items():
        if op.outcome != OK or value in located:
            continue
        there = at.get((op.partition, op.offset)) if op.offset is not None else None
        report.flag(
            "lost",
            f"value {value} ({op.producer} #{op.seq}) acked at p{op.partition}@{op.offset} "
            f"(t={op.invoke_s:.2f}-{op.complete_s}) was not read; that offset holds "
            f"{'nothing' if there is None else there}; during: "
            f"{_during(faults, op.invoke_s, op.complete_s)}",
        )


# Producers (by name prefix) that are Kafka clients which renumber after an epoch bump.
RENUMBERING_PRODUCERS = ("kafka-",)


def _producer_epochs(final: FinalState) -> dict[tuple[int, int], tuple[int, int]]:
    """(partition, offset) -> (producer id, producer epoch) of the batch that holds it, from
    the replicas' logs (below the high watermark, where the replicas must agree)."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for log in final.replica_logs:
        high_watermark = final.high_watermarks.get(log.partition, 0)
        for stored in log.batches:
            if stored.base_offset >= high_watermark:
                break
            header = read_header(stored.data, 0)
            for offset in range(stored.base_offset, stored.last_offset + 1):
                out.setdefault((log.partition, offset),
                               (header.producer_id, header.producer_epoch))
    return out


def _renumbered_by_client(places: Sequence[ReadRecord], write: WriteOp | None,
                          epochs: dict[tuple[int, int], tuple[int, int]]) -> bool:
    """Every copy in a batch of one producer id, each under its own producer epoch, sent by
    a Kafka client that renumbers after bumping its epoch."""
    if write is None or not write.producer.startswith(RENUMBERING_PRODUCERS):
        return False
    identities = [epochs.get((r.partition, r.offset)) for r in places]
    if any(i is None or i[0] == NO_PRODUCER_ID for i in identities):
        return False
    return (len({i[0] for i in identities if i}) == 1
            and len({i[1] for i in identities if i}) == len(identities))


def _check_duplicates(located: dict[int, list[ReadRecord]], writes: dict[int, WriteOp],
                      epochs: dict[tuple[int, int], tuple[int, int]], report: Report) -> None:
    copies = renumbered = 0
    for value, places in located.items():
        if len(places) > 1:
            copies += len(places) - 1
            if _renumbered_by_client(places, writes.get(value), epochs):
                renumbered += len(places) - 1
                continue
            where = ", ".join(f"p{r.partition}@{r.offset}" for r in places)
            report.flag("duplicated", f"value {value} read {len(places)} times: {where}")
    report.info["duplicate_copies"] = copies
    report.info["renumbered_by_client"] = renumbered


def _check_order(
    writes: Sequence[WriteOp], located: dict[int, list[ReadRecord]], report: Report
) -> None:
    flagged: set[int] = set()
    for op in writes:
        if op.outcome != OK or op.value not in located:
            continue
        places = [(r.partition, r.offset) for r in located[op.value]]
        if op.offset is None:
            # Acknowledged without an offset (librdkafka reports a retried batch the broker
            # had already stored as persisted, offset unknown): where it sits is not known,
            # only that it must be there once and in its producer's order (checked below).
            report.info["acked_without_offset"] = (
                report.info.get("acked_without_offset", 0) + 1
            )
            if not any(p == op.partition for p, _ in places):
                flagged.add(op.value)
                report.flag("reordered", f"value {op.value} acked in p{op.partition} but read "
                            f"at {', '.join(f'p{p}@{o}' for p, o in places)}", 0)
            continue
        if (op.partition, op.offset) not in places:
            flagged.add(op.value)
            report.flag("reordered", f"value {op.value} acked at p{op.partition}@{op.offset} "
                        f"but read at {', '.join(f'p{p}@{o}' for p, o in places)}", 0)
    # One producer's acknowledged records in one partition: send order == offset order.
    streams: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
    for op in writes:
        if op.outcome == OK and op.value in located:
            first = located[op.value][0]
            streams[(op.producer, first.partition)].append((op.seq, first.offset, op.value))
    for (producer, partition), stream in streams.items():
        stream.sort()
        for (seq_a, offset_a, value_a), (seq_b, offset_b, value_b) in pairwise(stream):
            if offset_b <= offset_a:
                flagged.add(value_b)
                report.flag("reordered", f"{producer} sent {value_a} (#{seq_a}) before "
                            f"{value_b} (#{seq_b}) to p{partition}, but they sit at offsets "
                            f"{offset_a} and {offset_b}", 0)
    report.counts["reordered"] += len(flagged)


def _check_unexpected(
    writes: dict[int, WriteOp], located: dict[int, list[ReadRecord]], report: Report
) -> None:
    for value, places in located.items():
        if value not in writes:
            report.flag("unexpected", f"value {value} read at p{places[0].partition}@"
                        f"{places[0].offset} was never sent")


def _check_gaps(reads: Sequence[ReadRecord], final: FinalState, report: Report) -> None:
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in reads:
        by_partition[record.partition].append(record.offset)
    gaps = short = 0
    for partition, high_watermark in final.high_watermarks.items():
        offsets = sorted(by_partition.get(partition, []))
        start = offsets[0] if offsets else high_watermark
        gaps += (high_watermark - start) - len([o for o in offsets if o < high_watermark])
        if offsets and offsets[-1] + 1 < high_watermark:
            short += 1
    report.info["offset_gaps"] = max(0, gaps)
    report.info["partitions_read_short"] = short


# ---------------------------------------------------------------------- divergence
def _committed_prefix(log: ReplicaLog, high_watermark: int) -> bytes:
    return b"".join(b.data for b in log.batches if b.base_offset < high_watermark)


def _log_end(log: ReplicaLog) -> int:
    return log.batches[-1].last_offset + 1 if log.batches else 0


def _values(data: bytes, high_watermark: int) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for record in decode_batches(data, verify_crc=False):
        if record.offset < high_watermark:
            out[record.offset] = _as_int(record.value)
    return out


def _as_int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _first_difference(a: dict[int, int | None], b: dict[int, int | None]) -> str:
    for offset in sorted(set(a) | set(b)):
        if a.get(offset, "missing") != b.get(offset, "missing"):
            return f"offset {offset}: {a.get(offset, 'missing')} vs {b.get(offset, 'missing')}"
    return "same records, different batch bytes (headers: epoch, producer, sequence)"


def _check_divergence(final: FinalState, reads: Sequence[ReadRecord], report: Report) -> None:
    logs: dict[int, dict[int, ReplicaLog]] = defaultdict(dict)
    for log in final.replica_logs:
        logs[log.partition][log.broker] = log
    read_values: dict[int, dict[int, int | None]] = defaultdict(dict)
    for record in reads:
        read_values[record.partition][record.offset] = record.value
    compared = outside_isr = uncommitted_tails = 0
    for partition, high_watermark in sorted(final.high_watermarks.items()):
        isr = final.isr.get(partition, [])
        replicas = final.replicas.get(partition, isr)
        outside_isr += len(set(replicas) - set(isr))
        members = {b: logs[partition][b] for b in isr if b in logs[partition]}
        for broker in set(isr) - set(members):
            report.flag("diverged", f"p{partition}: replica {broker} is in the ISR but its "
                        "log was not found")
        if not members:
            continue
        prefixes = {b: _committed_prefix(log, high_watermark) for b, log in members.items()}
        majority, _ = Counter(prefixes.values()).most_common(1)[0]
        reference = _values(majority, high_watermark)
        for broker, prefix in sorted(prefixes.items()):
            compared += 1
            end = _log_end(members[broker])
            if end > high_watermark:
                uncommitted_tails += 1
            if prefix == majority and end >= high_watermark:
                continue
            if end < high_watermark:
                detail = f"its log ends at {end}, below the high watermark {high_watermark}"
            else:
                detail = _first_difference(reference, _values(prefix, high_watermark))
            report.flag("diverged", f"p{partition}: replica {broker} differs from the "
                        f"majority of the ISR {sorted(isr)} below HW {high_watermark}: {detail}")
        served = {o: v for o, v in read_values[partition].items() if o < high_watermark}
        if served != reference:
            report.flag("diverged", f"p{partition}: the final read and the replicas' logs "
                        f"differ: {_first_difference(served, reference)}")
    report.info["replica_logs_compared"] = compared
    report.info["replicas_outside_final_isr"] = outside_isr
    report.info["uncommitted_tails"] = uncommitted_tails


# ------------------------------------------------------------------------ consumer
def _check_consumed(
    history: History, at: dict[tuple[int, int], int], final: FinalState, report: Report
) -> None:
    for item in history.consumed:
        stored = at.get((item.partition, item.offset))
        if stored != item.value:
            hw = final.high_watermarks.get(item.partition, -1)
            report.flag("phantom_reads", f"the group consumer read {item.value} at "
                        f"p{item.partition}@{item.offset} (t={item.time_s:.2f}); the final log "
                        f"holds {'nothing' if stored is None else stored} there (HW {hw}); "
                        f"during: {_during(history.faults, item.time_s, item.time_s)}")
    report.info["consumed"] = len(history.consumed)


def _check_commits(history: History, final: FinalState, report: Report) -> None:
    """The group's final offset must be at least every acknowledged commit that no later
    commit (acknowledged or not: a failed one may still have been stored) asked to lower."""
    ambiguous = 0
    by_partition: dict[tuple[str, int], list[CommitOp]] = defaultdict(list)
    for op in history.commits:
        by_partition[(op.group, op.partition)].append(op)
    for (group, partition), ops in sorted(by_partition.items()):
        ops = sorted(ops, key=lambda op: op.invoke_s)
        binding: CommitOp | None = None
        lowest_later = None
        for op in reversed(ops):
            if (op.outcome == OK and (lowest_later is None or op.offset <= lowest_later)
                    and (binding is None or op.offset > binding.offset)):
                binding = op
            lowest_later = op.offset if lowest_later is None else min(lowest_later, op.offset)
        if binding is None:
            ambiguous += any(op.outcome == OK for op in ops)
            continue
        # final.committed: the run's main group (whatever its name); others by name
        offsets = final.group_committed.get(group, final.committed)
        committed = offsets.get(partition, -1)
        if committed < binding.offset:
            report.flag("lost_commits", f"{group} p{partition}: commit of offset "
                        f"{binding.offset} was "
                        f"acknowledged at t={binding.complete_s}, but the group's committed "
                        f"offset is {committed} after healing; during: "
                        f"{_during(history.faults, binding.invoke_s, binding.complete_s)}")
    report.info["commits_acked"] = sum(1 for op in history.commits if op.outcome == OK)
    report.info["commit_partitions_ambiguous"] = ambiguous


def _check_owners(history: History, report: Report) -> None:
    """No partition with two owners in one group: two members whose holdings of a partition
    overlap in time, and whose commits of it were both acknowledged inside that overlap.

    Holding alone is not enough: a member the coordinator removed (its session lapsed while
    it could not reach the coordinator) still believes it holds its partitions until it
    hears so, as in Kafka; what the coordinator must never do is accept commits from both."""
    by_key: dict[tuple[str, int], list[Ownership]] = defaultdict(list)
    for held in history.ownerships:
        by_key[(held.group, held.partition)].append(held)
    acked: dict[tuple[str, int, str], list[CommitOp]] = defaultdict(list)
    for op in history.commits:
        if op.outcome == OK:
            acked[(op.group, op.partition, op.member)].append(op)
    # still held at the end: up to the last thing recorded
    end_of_run = max([history.now(), *(o.start_s for o in history.ownerships),
                      *(o.end_s for o in history.ownerships if o.end_s is not None),
                      *(op.complete_s for op in history.commits if op.complete_s is not None)])
    overlaps = 0
    for (group, partition), held in sorted(by_key.items()):
        for i, a in enumerate(held):
            for b in held[i + 1:]:
                if a.member == b.member:
                    continue
                start = max(a.start_s, b.start_s)
                end = min(a.end_s if a.end_s is not None else end_of_run,
                          b.end_s if b.end_s is not None else end_of_run)
                if start >= end:
                    continue
                overlaps += 1
                both = [[op for op in acked[(group, partition, m)] if start <= op.invoke_s <= end]
                        for m in (a.member, b.member)]
                if both[0] and both[1]:
                    report.flag("two_owners", f"{group} p{partition}: members {a.member} and "
                                f"{b.member} both held it from t={start:.2f} to t={end:.2f} and "
                                f"both had commits acknowledged then (offsets "
                                f"{both[0][0].offset}, {both[1][0].offset}); during: "
                                f"{_during(history.faults, start, end)}")
    report.info["ownership_overlaps"] = overlaps
