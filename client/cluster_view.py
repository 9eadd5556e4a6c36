"""What `raftka cluster status` and `raftka watch` show: a snapshot of the cluster, the
changes between two snapshots, and their text rendering. Pure, so it is tested without a
cluster; cli_cluster.py does the fetching and printing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# The first process of a PID namespace: a broker in a container (see snapshot_from).
CONTAINER_INIT_PID = 1


@dataclass(frozen=True, slots=True)
class BrokerView:
    broker_id: int
    address: str
    fenced: bool
    voter: bool
    pid: int | None
    # Every listener: (protocol "grpc" or "kafka", listener name, "host:port").
    listeners: tuple[tuple[str, str, str], ...] = ()

    @property
    def kafka_address(self) -> str | None:
        """The first Kafka listener's address (what a Kafka client bootstraps from)."""
        return next((a for kind, _, a in self.listeners if kind == "kafka"), None)


@dataclass(frozen=True, slots=True)
class PartitionView:
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    cluster_id: str
    controller: int
    metadata_offset: int
    brokers: tuple[BrokerView, ...]
    partitions: tuple[PartitionView, ...]

    def to_json(self) -> dict[str, Any]:
        """The stable contract of `raftka cluster status --json`."""
        topics: dict[str, list[dict[str, Any]]] = {}
        for p in self.partitions:
            topics.setdefault(p.topic, []).append(
                {
                    "partition": p.partition,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": list(p.replicas),
                    "isr": list(p.isr),
                }
            )
        return {
            "cluster_id": self.cluster_id,
            "controller": self.controller,
            "metadata_offset": self.metadata_offset,
            "brokers": [
                {
                    "id": b.broker_id,
                    "address": b.address,
                    "fenced": b.fenced,
                    "alive": not b.fenced,
                    "voter": b.voter,
                    "pid": b.pid,
                    "kafka_address": b.kafka_address,
                    "listeners": [
                        {"protocol": kind, "name": name, "address": address}
                        for kind, name, address in b.listeners
                    ],
                }
                for b in self.brokers
            ],
            "bootstrap": {
                "grpc": ",".join(b.address for b in self.brokers if not b.fenced),
                "kafka": ",".join(
                    b.kafka_address for b in self.brokers if not b.fenced and b.kafka_address
                ),
            },
            "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
        }


def snapshot_from(
    cluster: Any, metadata: Any, local_pids: dict[int, int | None] | None
) -> ClusterSnapshot:
    """From DescribeClusterResponse + MetadataResponse. `local_pids`: PIDs of brokers running
    on this machine (None: not running); without it, the PIDs brokers registered with, except
    PID 1: a broker that is PID 1 runs in a container's own PID namespace (the image's
    entrypoint execs it), where its PID says nothing to anyone outside."""
    brokers = []
    for status in cluster.brokers:
        broker_id = status.endpoint.broker_id
        if local_pids is not None:
            pid = local_pids.get(broker_id)
        else:
            pid = status.pid if status.pid > CONTAINER_INIT_PID and not status.fenced else None
        brokers.append(
            BrokerView(
                broker_id,
                f"{status.endpoint.host}:{status.endpoint.port}",
                status.fenced,
                status.voter,
                pid,
                _listeners(status.endpoint),
            )
        )
    partitions = [
        PartitionView(
            topic.name, p.partition, p.leader_id, p.leader_epoch, tuple(p.replicas), tuple(p.isr)
        )
        for topic in sorted(metadata.topics, key=lambda t: t.name)
        for p in sorted(topic.partitions, key=lambda p: p.partition)
    ]
    return ClusterSnapshot(
        cluster.cluster_id,
        cluster.controller_id,
        cluster.metadata_offset,
        tuple(sorted(brokers, key=lambda b: b.broker_id)),
        tuple(partitions),
    )


def _listeners(endpoint: Any) -> tuple[tuple[str, str, str], ...]:
    """Every listener of a BrokerEndpoint: the main gRPC one ("PLAINTEXT"), the extra gRPC
    ones, then the Kafka ones (one "PLAINTEXT" at kafka_port from brokers that list none)."""
    found = [("grpc", "PLAINTEXT", f"{endpoint.host}:{endpoint.port}")]
    found += [("grpc", g.name, f"{g.host}:{g.port}") for g in endpoint.grpc_listeners
              if g.name != "PLAINTEXT"]
    kafka = [("kafka", k.name, f"{k.host}:{k.port}") for k in endpoint.kafka_listeners]
    if not kafka and endpoint.kafka_port > 0:
        kafka = [("kafka", "PLAINTEXT", f"{endpoint.host}:{endpoint.kafka_port}")]
    return tuple(found + kafka)


def _ids(values: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def diff(old: ClusterSnapshot | None, new: ClusterSnapshot) -> list[str]:
    """Human-readable changes from `old` to `new`, most important first."""
    if old is None:
        return [
            f"watching cluster {new.cluster_id or '?'}: controller {new.controller}, "
            f"{len(new.brokers)} broker(s), {len(new.partitions)} partition(s)"
        ]
    events = []
    if old.controller != new.controller:
        if new.controller < 0:
            events.append(f"CONTROLLER lost (was broker {old.controller}): election running")
        else:
            events.append(f"CONTROLLER is now broker {new.controller} (was {old.controller})")
    old_brokers = {b.broker_id: b for b in old.brokers}
    for broker in new.brokers:
        before = old_brokers.get(broker.broker_id)
        if before is None:
            events.append(f"BROKER {broker.broker_id} registered at {broker.address}")
        elif before.fenced != broker.fenced:
            state = "FENCED (by the controller)" if broker.fenced else "unfenced (alive again)"
            events.append(f"BROKER {broker.broker_id} {state}")
        elif before.pid != broker.pid and broker.pid is not None and before.pid is not None:
            events.append(f"BROKER {broker.broker_id} restarted (pid {broker.pid})")
    old_partitions = {(p.topic, p.partition): p for p in old.partitions}
    new_keys = set()
    for p in new.partitions:
        key = (p.topic, p.partition)
        new_keys.add(key)
        earlier = old_partitions.get(key)
        name = f"{p.topic}-{p.partition}"
        if earlier is None:
            continue
        if earlier.leader != p.leader:
            leader = f"broker {p.leader}" if p.leader >= 0 else "NONE (offline)"
            events.append(
                f"LEADER of {name}: {leader} (was {earlier.leader}), epoch {p.leader_epoch}"
            )
        if earlier.isr != p.isr:
            events.append(f"ISR of {name}: {_ids(p.isr)} (was {_ids(earlier.isr)})")
    created = sorted(
        {p.topic for p in new.partitions if (p.topic, p.partition) not in old_partitions}
    )
    deleted = sorted({topic for topic, part in old_partitions if (topic, part) not in new_keys})
    events.extend(f"TOPIC {t} created" for t in created)
    events.extend(f"TOPIC {t} deleted" for t in deleted)
    return events


class LeaderGaps:
    """How long each partition was without a usable leader, as `raftka watch` saw it: from
    the first snapshot in which its leader was gone (no leader, or one that is fenced, or —
    on a local cluster, where the watch knows the PIDs — whose process is not running) to
    the first with a usable leader again, reported as "orders-0: leader 1 -> 2 after 640 ms".
    Accurate to within one watch interval. Pure: snapshots and times come in."""

    def __init__(self, knows_pids: bool) -> None:
        self._knows_pids = knows_pids
        # (topic, partition) -> (its last usable leader, or -1; when first seen without one)
        self._since: dict[tuple[str, int], tuple[int, float]] = {}
        self._last_leader: dict[tuple[str, int], int] = {}

    def observe(self, snapshot: ClusterSnapshot, now_s: float) -> list[str]:
        usable = {
            b.broker_id
            for b in snapshot.brokers
            if not b.fenced and (b.pid is not None or not self._knows_pids)
        }
        events = []
        for p in snapshot.partitions:
            key = (p.topic, p.partition)
            if p.leader >= 0 and p.leader in usable:
                gap = self._since.pop(key, None)
                if gap is not None:
                    before = str(gap[0]) if gap[0] >= 0 else "none"
                    waited_ms = round((now_s - gap[1]) * 1000)
                    events.append(
                        f"{p.topic}-{p.partition}: leader {before} -> {p.leader} "
                        f"after {waited_ms} ms"
                    )
                self._last_leader[key] = p.leader
            elif key not in self._since:
                self._since[key] = (self._last_leader.get(key, p.leader), now_s)
        present = {(p.topic, p.partition) for p in snapshot.partitions}
        for gone in [key for key in self._since if key not in present]:  # topic deleted
            del self._since[gone]
        return events


def render(
    snapshot: ClusterSnapshot,
    events: list[tuple[float, str]] | None = None,
    partitions_max: int = 40,
) -> str:
    """The status table (and recent events) as text."""
    lines = [
        f"Cluster {snapshot.cluster_id or '?'}   controller: "
        f"{snapshot.controller if snapshot.controller >= 0 else 'NONE (election)'}   "
        f"metadata offset: {snapshot.metadata_offset}",
        "",
        f"{'BROKER':>6}  {'ADDRESS':<21} {'STATE':<8} {'ROLE':<10} {'PID':>7}",
    ]
    for b in snapshot.brokers:
        role = (
            "controller"
            if b.broker_id == snapshot.controller
            else "voter"
            if b.voter
            else "observer"
        )
        state = "FENCED" if b.fenced else "alive"
        lines.append(
            f"{b.broker_id:>6}  {b.address:<21} {state:<8} {role:<10} {b.pid if b.pid else '-':>7}"
        )
    lines += ["", f"{'PARTITION':<28} {'LEADER':>6} {'EPOCH':>5}  {'REPLICAS':<10} ISR"]
    for p in snapshot.partitions[:partitions_max]:
        leader = str(p.leader) if p.leader >= 0 else "NONE"
        under = "  (under-replicated)" if len(p.isr) < len(p.replicas) else ""
        lines.append(
            f"{p.topic + '-' + str(p.partition):<28} {leader:>6} {p.leader_epoch:>5}  "
            f"{_ids(p.replicas):<10} {_ids(p.isr)}{under}"
        )
    if len(snapshot.partitions) > partitions_max:
        lines.append(f"... and {len(snapshot.partitions) - partitions_max} more partitions")
    if not snapshot.partitions:
        lines.append("(no topics yet)")
    if events:
        lines += ["", "Recent changes:"]
        lines += [
            f"  {time.strftime('%H:%M:%S', time.localtime(ts))}.{int(ts * 1000) % 1000:03d}  {text}"
            for ts, text in events
        ]
    return "\n".join(lines)
