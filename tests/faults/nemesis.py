"""The nemesis: one fault at a time, chosen by a seeded random.Random, each held a few
seconds and then healed, every start and end recorded in the history.

Faults (the exact commands are recorded in each FaultEvent.commands):

kill                SIGKILL a broker (no flush, no goodbye), hold, start it again (same data
                    directory, same command line).
sigterm             SIGTERM a partition's leader (a controlled shutdown: it hands its
                    leaderships, and the controller if it holds it, over before it exits),
                    wait for it to exit, hold, start it again.
pause               SIGSTOP a broker, hold, SIGCONT: a process that is alive but silent (a
                    long GC pause, a VM stall); it wakes up believing it is still leader.
partition-halves    split the brokers at random into a minority and a majority (1|2 of 3;
                    1|4 or 2|3 of 5), cut both ways between the sides.
isolate-leader      cut the leader of a random partition of the workload topic from every
                    other broker, both ways (it may also be the controller: noted).
isolate-controller  the same for the controller (the Raft leader of the metadata quorum).
cut-one-way         packets from A to B dropped, B to A still delivered; A is the controller
                    or the leader of a random partition, B another broker.
link-down           the broker's only interface down: cut from brokers and clients alike.
torn-tail           kill -9 a partition's leader, cut up to 4 KiB off its active segment or
                    flip one byte in that tail (a torn write, a bad sector), restart at once.
power-loss          kill -9 a broker and lose what it had not fsynced, in every partition
                    (tests/faults/disk_damage.py: a random part of each log after its
                    recovery point, torn mid-batch, and any newer segment file), restart.

In the partition faults the clients (the root namespace) still reach every broker: a
cut-off leader keeps being offered writes, which it must not acknowledge.

Every kind of fault is injected once per cycle, in a seeded order. The run lasts
`duration_s`, longer only to finish its first cycle: even a short run has every kind.

Between faults the nemesis waits until the cluster is whole again (every broker serving
and unfenced, every partition led and its ISR full; at most `recover_timeout_s`) and then a
random quiet gap, so that each fault is a single fault. A run that cannot recover is noted
in the history and goes on.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftka import Admin
from tests.faults.cluster import NamespacedCluster
from tests.faults.disk_damage import power_cut_broker
from tests.faults.history import FaultEvent, History
from tests.faults.netns import FaultNetwork
from tests.harness import wait_for

log = logging.getLogger("raftka.faults.nemesis")
# How long a SIGTERMed broker may take to exit (its controlled shutdown is bounded by
# controlled.shutdown.timeout.ms, 5 s by default) before the nemesis kills it (seconds).
SIGTERM_EXIT_TIMEOUT_S = 20.0
# A torn tail: at most this many bytes cut off, or the flipped byte within them (bytes).
TORN_TAIL_MAX_BYTES = 4096

KINDS = (
    "kill",
    "sigterm",
    "pause",
    "partition-halves",
    "isolate-leader",
    "isolate-controller",
    "cut-one-way",
    "link-down",
    "torn-tail",
    "power-loss",
)
# Opt-in kinds (--kinds): none at present. (torn-tail was, until the bugs its first run found
# were fixed: BENCHMARKS.md "RELIABILITY".)
EXTRA_KINDS: tuple[str, ...] = ()
ALL_KINDS = KINDS + EXTRA_KINDS
PARTITION_KINDS = ("partition-halves", "isolate-leader", "isolate-controller", "cut-one-way",
                   "link-down")


@dataclass
class Schedule:
    """How long faults and the quiet between them last (seconds, uniform in [low, high])."""

    hold: tuple[float, float] = (3.0, 6.0)
    gap: tuple[float, float] = (1.5, 3.0)
    first_delay_s: float = 3.0
    recover_timeout_s: float = 30.0


class Nemesis:
    def __init__(
        self,
        cluster: NamespacedCluster,
        network: FaultNetwork,
        history: History,
        rng: random.Random,
        topic: str,
        partitions: int,
        kinds: Sequence[str] = KINDS,
        schedule: Schedule | None = None,
    ) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.cluster = cluster
        self.network = network
        self.history = history
        self.rng = rng
        self.topic = topic
        self.partitions = partitions
        self.kinds = list(kinds)
        self.schedule = schedule or Schedule()
        self.broker_ids = sorted(cluster.brokers)
        self._cycle: list[str] = []
        self._last_kind = ""
        self.cycles_started = 0
        self._killed: set[int] = set()
        self._paused: set[int] = set()
        self._admin = Admin(cluster.bootstrap, request_timeout_ms=4_000)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------- the loop
    def start(self, stop: threading.Event, duration_s: float) -> None:
        self.thread = threading.Thread(
            target=self._run, args=(stop, duration_s), name="nemesis", daemon=True
        )
        self.thread.start()

    def join(self, timeout_s: float = 120) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)

    def _run(self, stop: threading.Event, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s
        try:
            if stop.wait(self.schedule.first_delay_s):
                return
            while not stop.is_set() and (time.monotonic() < deadline or self._first_cycle_open):
                kind = self.next_kind()
                hold = self.rng.uniform(*self.schedule.hold)
                event, heal = self.inject(kind)
                try:
                    stop.wait(hold)
                finally:
                    heal()
                    self.history.end_fault(event)
                self.await_recovery(event)
                if stop.wait(self.rng.uniform(*self.schedule.gap)):
                    return
        except BaseException as exc:  # reported by the runner; the run then heals and stops
            log.exception("nemesis failed")
            self.error = exc
            self.history.note(f"nemesis failed: {type(exc).__name__}: {exc}")

    @property
    def _first_cycle_open(self) -> bool:
        return self.cycles_started == 1 and bool(self._cycle)

    def next_kind(self) -> str:
        """Every kind once per cycle, in a seeded random order; a cycle never starts with
        the kind that ended the previous one."""
        if not self._cycle:
            cycle = list(self.kinds)
            self.rng.shuffle(cycle)
            if len(cycle) > 1 and cycle[0] == self._last_kind:
                cycle.append(cycle.pop(0))
            self._cycle = cycle
            self.cycles_started += 1
        self._last_kind = self._cycle.pop(0)
        return self._last_kind

    # ---------------------------------------------------------------- the faults
    def inject(self, kind: str) -> tuple[FaultEvent, Callable[[], None]]:
        inject = {
            "kill": self._kill,
            "sigterm": self._sigterm,
            "pause": self._pause,
            "partition-halves": self._partition_halves,
            "isolate-leader": self._isolate_leader,
            "isolate-controller": self._isolate_controller,
            "cut-one-way": self._cut_one_way,
            "link-down": self._link_down,
            "torn-tail": self._torn_tail,
            "power-loss": self._power_loss,
        }[kind]
        journal_start = len(self.network.journal)
        targets, description, commands, heal = inject()
        event = self.history.start_fault(kind, targets, description)
        event.commands.extend(commands)
        event.commands.extend(self.network.journal[journal_start:])
        log.info("fault %s: %s", kind, description)

        def heal_and_record() -> None:
            heal_start = len(self.network.journal)
            heal_commands = heal()
            event.commands.extend(heal_commands)
            event.commands.extend(self.network.journal[heal_start:])

        return event, heal_and_record

    def _kill(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        target = self.rng.choice(self.broker_ids)
        broker = self.cluster.brokers[target]
        pid = broker.pid
        role = self._role(target)
        broker.kill()
        self._killed.add(target)

        def heal() -> list[str]:
            broker.start()
            self._killed.discard(target)
            return [f"restart broker {target}: {shlex.join(broker.command())}"]

        return [target], f"kill -9 broker {target}{role}", [f"kill -KILL {pid}"], heal

    def _sigterm(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        """SIGTERM a leader and wait for it to exit: the controlled shutdown hands over while
        the broker still answers, so no acknowledged write may be lost and clients should
        barely notice. A broker that has not exited after SIGTERM_EXIT_TIMEOUT_S is killed
        (and that is noted: a controlled shutdown that hangs is a bug of its own)."""
        target = self._leader_of(self.rng.randrange(self.partitions))
        if target is None:
            target = self.rng.choice(self.broker_ids)
        broker = self.cluster.brokers[target]
        pid, role = broker.pid, self._role(target)
        commands = [f"kill -TERM {pid}"]
        broker.signal(signal.SIGTERM)
        assert broker.process is not None
        started = time.monotonic()
        try:
            code = broker.process.wait(SIGTERM_EXIT_TIMEOUT_S)
            commands.append(f"exited with {code} after {time.monotonic() - started:.2f}s")
        except subprocess.TimeoutExpired:
            broker.kill()
            note = f"broker {target} had not exited {SIGTERM_EXIT_TIMEOUT_S:.0f}s after SIGTERM"
            self.history.note(note)
            commands.append(f"{note}: kill -KILL {pid}")
        self._killed.add(target)

        def heal() -> list[str]:
            broker.start()
            self._killed.discard(target)
            return [f"restart broker {target}: {shlex.join(broker.command())}"]

        return [target], f"SIGTERM broker {target}{role}", commands, heal

    def _torn_tail(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        """kill -9 a partition's leader, damage the tail of that partition's active segment
        on its disk (cut up to 4 KiB off, or flip one byte in the last 4 KiB: a torn write
        or a bad sector), and restart it at once: it must cut its log back to the last good
        batch and catch up from the new leader, never lead with the damaged log."""
        partition = self.rng.randrange(self.partitions)
        target = self._leader_of(partition)
        if target is None:
            target = self.rng.choice(self.broker_ids)
        broker = self.cluster.brokers[target]
        pid, role = broker.pid, self._role(target)
        broker.kill()
        segments = sorted((broker.data_dir / "logs" / f"{self.topic}-{partition}").glob("*.log"))
        damage = f"no segment of p{partition} on broker {target}"
        if segments and segments[-1].stat().st_size > 0:
            active = segments[-1]
            size = active.stat().st_size
            span = self.rng.randint(1, min(size, TORN_TAIL_MAX_BYTES))
            if self.rng.random() < 0.5:
                os.truncate(active, size - span)
                damage = f"cut {span} bytes off {active.name} of p{partition}"
            else:
                at = size - span
                with open(active, "r+b") as handle:
                    handle.seek(at)
                    byte = handle.read(1)
                    handle.seek(at)
                    handle.write(bytes([byte[0] ^ 0xFF]))
                damage = f"flipped byte {at} of {active.name} of p{partition}"
        broker.start()
        description = f"kill -9 broker {target}{role}, {damage}, restarted at once"
        return [target], description, [f"kill -KILL {pid}", damage], lambda: []

    def _power_loss(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        """kill -9 a broker (a leader when one is known) and take from its disk what a power
        cut would (disk_damage.power_cut_broker), then restart it at once."""
        target = self._leader_of(self.rng.randrange(self.partitions))
        if target is None:
            target = self.rng.choice(self.broker_ids)
        broker = self.cluster.brokers[target]
        pid, role = broker.pid, self._role(target)
        broker.kill()
        cuts = power_cut_broker(broker.data_dir / "logs", self.rng)
        lost = [c for c in cuts if c.bytes_lost]
        broker.start()
        description = (f"kill -9 broker {target}{role}, power loss: {len(lost)} of {len(cuts)} "
                       f"partitions lost {sum(c.bytes_lost for c in lost)} unsynced bytes, "
                       f"restarted at once")
        return [target], description, [f"kill -KILL {pid}", *(c.describe() for c in lost)], \
            lambda: []

    def _pause(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        target = self.rng.choice(self.broker_ids)
        broker = self.cluster.brokers[target]
        pid = broker.pid
        role = self._role(target)
        broker.signal(signal.SIGSTOP)
        self._paused.add(target)

        def heal() -> list[str]:
            broker.signal(signal.SIGCONT)
            self._paused.discard(target)
            return [f"kill -CONT {pid}"]

        return [target], f"SIGSTOP broker {target}{role}", [f"kill -STOP {pid}"], heal

    def _partition_halves(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        shuffled = list(self.broker_ids)
        self.rng.shuffle(shuffled)
        size = self.rng.randint(1, (len(shuffled) - 1) // 2)
        minority, majority = sorted(shuffled[:size]), sorted(shuffled[size:])
        roles = ", ".join(f"{b}{self._role(b)}" for b in minority)
        self.network.partition(minority, majority)
        return (minority, f"partition {minority} | {majority} (minority: {roles})", [],
                self._heal_network)

    def _isolate(self, target: int, why: str) -> tuple[list[int], str, list[str],
                                                        Callable[[], list[str]]]:
        others = [b for b in self.broker_ids if b != target]
        description = f"isolate broker {target} ({why}{self._role(target)}) from {others}"
        self.network.partition([target], others)
        return [target], description, [], self._heal_network

    def _isolate_leader(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        partition = self.rng.randrange(self.partitions)
        leader = self._leader_of(partition)
        if leader is None:
            leader = self.rng.choice(self.broker_ids)
            return self._isolate(leader, f"leader of p{partition} unknown, chosen at random")
        return self._isolate(leader, f"leader of p{partition}")

    def _isolate_controller(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        controller = self._controller()
        if controller is None:
            return self._isolate(self.rng.choice(self.broker_ids), "controller unknown")
        return self._isolate(controller, "controller")

    def _cut_one_way(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        if self.rng.random() < 0.5:
            source, why = self._controller(), "controller"
        else:
            partition = self.rng.randrange(self.partitions)
            source, why = self._leader_of(partition), f"leader of p{partition}"
        if source is None:
            source, why = self.rng.choice(self.broker_ids), "random"
        target = self.rng.choice([b for b in self.broker_ids if b != source])
        description = f"one-way cut {source} -> {target} (source: {why}{self._role(source)})"
        self.network.cut(source, target)
        return [source, target], description, [], self._heal_network

    def _link_down(self) -> tuple[list[int], str, list[str], Callable[[], list[str]]]:
        target = self.rng.choice(self.broker_ids)
        role = self._role(target)
        self.network.link_down(target)
        return [target], f"link down on broker {target}{role} (clients cut too)", [], \
            self._heal_network

    def _heal_network(self) -> list[str]:
        self.network.heal()
        return []

    # ----------------------------------------------------------------- recovery
    def heal_everything(self) -> None:
        """End whatever is in force: network healed, paused brokers continued, killed (or
        exited) brokers started. For the end of a run, and for its clean-up."""
        problems: list[str] = []
        try:
            self.network.heal()
        except RuntimeError as exc:
            problems.append(str(exc))
        for broker_id, broker in self.cluster.brokers.items():
            if broker.running:
                broker.signal(signal.SIGCONT)
            elif broker.process is not None:
                if broker_id not in self._killed:
                    code = broker.process.returncode
                    self.history.note(f"broker {broker_id} had exited by itself (code {code})")
                broker.start()
        self._paused.clear()
        self._killed.clear()
        if problems:
            raise RuntimeError("; ".join(problems))

    def await_recovery(self, event: FaultEvent | None, timeout_s: float | None = None) -> bool:
        """Wait until the cluster is whole; record when (or that it was not)."""
        timeout_s = self.schedule.recover_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        try:
            wait_for(self.whole, timeout_s, "the cluster to be whole", interval_s=0.25)
        except (TimeoutError, RuntimeError) as exc:
            text = f"not whole {timeout_s:.0f}s after healing: {exc}"
            self.history.note(text)
            if event is not None:
                event.note = text
            return False
        if event is not None:
            event.recovered_s = self.history.now()
        log.info("whole again after %.1fs", time.monotonic() - started)
        return True

    def whole(self) -> bool:
        return self._ready() and self._isr_full()

    def _ready(self) -> bool:
        wanted = set(self.cluster.brokers)
        for broker_id in wanted:
            if not self.cluster.brokers[broker_id].running:
                return False
        response = self.cluster.describe(timeout_s=2.0)
        unfenced = {b.endpoint.broker_id for b in response.brokers if not b.fenced}
        if response.controller_id < 0 or not wanted <= unfenced:
            return False
        return all(self.cluster.brokers[b].serving() for b in wanted)

    def _isr_full(self) -> bool:
        description = self._admin.describe_topic(self.topic)
        return all(
            p.leader_id >= 0 and set(p.isr) == set(p.replicas) for p in description.partitions
        )

    # ------------------------------------------------------------------ lookups
    def _controller(self) -> int | None:
        try:
            controller = self.cluster.describe(timeout_s=2.0).controller_id
        except RuntimeError:
            return None
        return controller if controller >= 0 else None

    def _leader_of(self, partition: int) -> int | None:
        try:
            leader = self._admin.describe_topic(self.topic).partitions[partition].leader_id
        except Exception:  # the describe may time out while the cluster recovers
            return None
        return leader if leader >= 0 else None

    def _role(self, broker_id: int) -> str:
        """', the controller' and/or the partitions it leads, for descriptions."""
        parts: list[str] = []
        if broker_id == self._controller():
            parts.append("controller")
        try:
            description = self._admin.describe_topic(self.topic)
            led = [p.partition for p in description.partitions if p.leader_id == broker_id]
        except Exception:
            led = []
        if led:
            parts.append("leads " + ",".join(f"p{p}" for p in led))
        return f" [{'; '.join(parts)}]" if parts else ""

    def close(self) -> None:
        self._admin.close()


def signal_all(cluster: NamespacedCluster, signum: int) -> None:
    """Send `signum` to every broker process this cluster started and that still runs."""
    for broker in cluster.brokers.values():
        if broker.running:
            os.kill(broker.pid, signum)
