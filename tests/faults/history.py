"""What a fault run did and saw, as plain records: the checker's only input.

Times are seconds since the run started (time.monotonic() based). Every record is a small
dataclass that turns into one JSON object, so a run's history can be written out as JSON
lines, read back, and checked again (`History.load`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK = "ok"
FAIL = "fail"  # the client reported an error: the write may or may not be in the log
PENDING = "pending"  # never completed (still in flight when the run ended): unknown


@dataclass
class WriteOp:
    """One produced value: invoked, then acknowledged at (partition, offset) or failed."""

    value: int
    producer: str
    seq: int  # the producer's own send order (0, 1, ...)
    invoke_s: float
    outcome: str = PENDING
    complete_s: float | None = None
    partition: int = -1
    offset: int | None = -1  # None: acknowledged without an offset (librdkafka can say so)
    error: str = ""


@dataclass
class FaultEvent:
    """One fault: when it was injected and healed, what it did (its commands)."""

    kind: str
    targets: list[int]
    start_s: float
    end_s: float | None = None
    description: str = ""
    commands: list[str] = field(default_factory=list)
    recovered_s: float | None = None  # when the cluster was whole again after the heal
    note: str = ""


DEFAULT_GROUP = "faults-group"


@dataclass
class CommitOp:
    """One consumer-group commit of one partition's position."""

    partition: int
    offset: int
    invoke_s: float
    outcome: str = PENDING
    complete_s: float | None = None
    error: str = ""
    group: str = DEFAULT_GROUP
    member: str = ""


@dataclass
class Ownership:
    """A member of a group held a partition from `start_s` to `end_s` (None: to the end),
    as its client reported (assignment callbacks, or the assignment seen between polls)."""

    group: str
    member: str
    partition: int
    start_s: float
    end_s: float | None = None


@dataclass
class Consumed:
    """A record the group consumer received while the faults ran."""

    partition: int
    offset: int
    value: int
    time_s: float


@dataclass(frozen=True)
class ReadRecord:
    """A record of the final read (after healing), in the order it was read."""

    partition: int
    offset: int
    value: int


@dataclass
class ReplicaBatch:
    """One RecordBatch as a replica stores it on disk."""

    base_offset: int
    last_offset: int
    data: bytes


@dataclass
class ReplicaLog:
    """One partition's log as one broker holds it, read from its segment files after every
    broker was stopped."""

    broker: int
    partition: int
    batches: list[ReplicaBatch]


@dataclass
class FinalState:
    """What the run found once the cluster was whole again."""

    reads: list[ReadRecord] = field(default_factory=list)
    high_watermarks: dict[int, int] = field(default_factory=dict)
    replicas: dict[int, list[int]] = field(default_factory=dict)
    isr: dict[int, list[int]] = field(default_factory=dict)
    replica_logs: list[ReplicaLog] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)  # the main group's final offsets
    # the other groups' final offsets, by group id
    group_committed: dict[str, dict[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class History:
    """Thread-safe recorder of one run's operations and faults."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        self.writes: list[WriteOp] = []
        self.faults: list[FaultEvent] = []
        self.commits: list[CommitOp] = []
        self.consumed: list[Consumed] = []
        self.ownerships: list[Ownership] = []
        self.notes: list[str] = []

    def now(self) -> float:
        return round(self._clock() - self._origin, 4)

    # ------------------------------------------------------------------- writes
    def invoke_write(self, value: int, producer: str, seq: int) -> WriteOp:
        op = WriteOp(value, producer, seq, self.now())
        with self._lock:
            self.writes.append(op)
        return op

    def ack_write(self, op: WriteOp, partition: int, offset: int) -> None:
        with self._lock:
            op.outcome, op.complete_s = OK, self.now()
            op.partition, op.offset = partition, offset

    def fail_write(self, op: WriteOp, error: BaseException | str) -> None:
        with self._lock:
            op.outcome, op.complete_s = FAIL, self.now()
            op.error = _describe(error)

    # ------------------------------------------------------------------ faults
    def start_fault(self, kind: str, targets: list[int], description: str) -> FaultEvent:
        event = FaultEvent(kind, list(targets), self.now(), description=description)
        with self._lock:
            self.faults.append(event)
        return event

    def end_fault(self, event: FaultEvent) -> None:
        with self._lock:
            event.end_s = self.now()

    # ------------------------------------------------------------------ consumer
    def invoke_commit(self, partition: int, offset: int, group: str = DEFAULT_GROUP,
                      member: str = "") -> CommitOp:
        op = CommitOp(partition, offset, self.now(), group=group, member=member)
        with self._lock:
            self.commits.append(op)
        return op

    def owned(self, group: str, member: str, partitions: set[int]) -> None:
        """`member` of `group` holds exactly `partitions` now: open and close intervals."""
        now = self.now()
        with self._lock:
            current = {o.partition: o for o in self.ownerships
                       if o.group == group and o.member == member and o.end_s is None}
            for partition, interval in current.items():
                if partition not in partitions:
                    interval.end_s = now
            for partition in sorted(partitions - set(current)):
                self.ownerships.append(Ownership(group, member, partition, now))

    def complete_commit(self, op: CommitOp, error: BaseException | None) -> None:
        with self._lock:
            op.complete_s = self.now()
            op.outcome = OK if error is None else FAIL
            op.error = "" if error is None else _describe(error)

    def consume(self, partition: int, offset: int, value: int) -> None:
        item = Consumed(partition, offset, value, self.now())
        with self._lock:
            self.consumed.append(item)

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(f"{self.now():9.3f} {text}")

    # ------------------------------------------------------------------ counts
    def counts(self) -> dict[str, int]:
        with self._lock:
            outcomes = [w.outcome for w in self.writes]
        return {
            "invoked": len(outcomes),
            "ok": outcomes.count(OK),
            "fail": outcomes.count(FAIL),
            "pending": outcomes.count(PENDING),
            "faults": len(self.faults),
            "consumed": len(self.consumed),
            "commits": len(self.commits),
        }

    # ------------------------------------------------------------- persistence
    def dump(self, path: Path, final: FinalState | None = None) -> None:
        """JSON lines: one object per record, with a "type" field."""
        with self._lock, path.open("w") as out:
            for kind, items in (
                ("write", self.writes),
                ("fault", self.faults),
                ("commit", self.commits),
                ("consumed", self.consumed),
                ("owned", self.ownerships),
            ):
                for item in items:
                    out.write(json.dumps({"type": kind, **dataclasses.asdict(item)}) + "\n")
            for text in self.notes:
                out.write(json.dumps({"type": "note", "text": text}) + "\n")
            if final is not None:
                summary = dataclasses.asdict(final)
                summary.pop("replica_logs")
                summary["reads"] = [[r.partition, r.offset, r.value] for r in final.reads]
                out.write(json.dumps({"type": "final", **summary}) + "\n")

    @classmethod
    def load(cls, path: Path) -> tuple[History, FinalState | None]:
        """A dumped history (replica logs are not dumped: divergence cannot be re-checked)."""
        history = cls()
        final: FinalState | None = None
        for line in path.read_text().splitlines():
            item = json.loads(line)
            kind = item.pop("type")
            if kind == "write":
                history.writes.append(WriteOp(**item))
            elif kind == "fault":
                history.faults.append(FaultEvent(**item))
            elif kind == "commit":
                history.commits.append(CommitOp(**item))
            elif kind == "consumed":
                history.consumed.append(Consumed(**item))
            elif kind == "owned":
                history.ownerships.append(Ownership(**item))
            elif kind == "note":
                history.notes.append(item["text"])
            elif kind == "final":
                final = FinalState(
                    reads=[ReadRecord(*r) for r in item["reads"]],
                    high_watermarks={int(k): v for k, v in item["high_watermarks"].items()},
                    replicas={int(k): v for k, v in item["replicas"].items()},
                    isr={int(k): v for k, v in item["isr"].items()},
                    committed={int(k): v for k, v in item["committed"].items()},
                    group_committed={
                        g: {int(k): v for k, v in offsets.items()}
                        for g, offsets in item.get("group_committed", {}).items()
                    },
                    notes=item["notes"],
                )
        return history, final


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"[:300]
