"""The metadata image: an immutable picture of the cluster at one metadata offset.

Why immutable: the Raft thread builds a new image per committed batch while the event loop
reads the current one; handing over a reference is then the whole synchronisation. A new
image reuses every sub-object that did not change, so `old.topics[name] is new.topics[name]`
tells a broker cheaply that nothing in that topic moved (see local_changes.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from raftka.cluster.acl import AclBinding
from raftka.cluster.scram import ScramCredential

NO_LEADER = -1
CONSUMER_OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    broker_id: int
    incarnation_id: str
    host: str
    port: int
    kafka_port: int
    # (name, advertised host, port) of each Kafka listener; see broker/listeners.py.
    kafka_listeners: tuple[tuple[str, str, int], ...]
    # (name, advertised host, port) of each extra gRPC listener; host:port is "PLAINTEXT".
    grpc_listeners: tuple[tuple[str, str, int], ...]
    voter: bool
    pid: int
    fenced: bool
    # Metadata offset of the registration; heartbeats must carry it (stale ones are refused).
    epoch: int
    # Partition replicas the broker can host (its file-descriptor budget); 0: no limit.
    max_replicas: int = 0
    # Port of the replication listener at `host` (broker/replication/); 0: none, fetch over
    # gRPC (registrations from before the field, or replication.transport=grpc).
    replication_port: int = 0

    def kafka_endpoint(self, listener: str) -> tuple[str, int] | None:
        """Where a Kafka client that came in on `listener` reaches this broker; None when
        the broker has no such listener (Kafka then leaves it out of Metadata)."""
        for name, host, port in self.kafka_listeners:
            if name == listener:
                return host, port
        if not self.kafka_listeners and self.kafka_port > 0 and listener == "PLAINTEXT":
            return self.host, self.kafka_port
        return None

    def grpc_endpoint(self, listener: str) -> tuple[str, int]:
        """Where a gRPC client that came in on `listener` reaches this broker; the main
        address when the broker has no such listener (every broker has that one)."""
        for name, host, port in self.grpc_listeners:
            if name == listener:
                return host, port
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class PartitionRegistration:
    # Invariant: isr is a subset of replicas; leader is NO_LEADER or a member of isr.
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0] if self.replicas else NO_LEADER


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: str
    configs: Mapping[str, str]
    internal: bool
    # Index in the tuple is the partition id.
    partitions: tuple[PartitionRegistration, ...]

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class MetadataImage:
    # Number of metadata records applied so far; grows with every record.
    offset: int = 0
    cluster_id: str = ""
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: _frozen({}))
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: _frozen({}))
    topic_names_by_id: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    next_producer_id: int = 0
    # The controller's clock in the last applied batch (replay never reads a local clock).
    last_timestamp_ms: int = 0
    # (user name, mechanism) -> salted SCRAM credential (cluster/scram.py).
    scram_credentials: Mapping[tuple[str, str], ScramCredential] = field(
        default_factory=lambda: _frozen({}))
    # ACL id -> ACL (cluster/acl.py).
    acls: Mapping[str, AclBinding] = field(default_factory=lambda: _frozen({}))

    # ------------------------------------------------------------------------ queries
    def topic_by_id(self, topic_id: str) -> TopicImage | None:
        name = self.topic_names_by_id.get(topic_id)
        return self.topics.get(name) if name is not None else None

    def partition(self, topic: str, partition: int) -> PartitionRegistration | None:
        image = self.topics.get(topic)
        if image is None or not 0 <= partition < len(image.partitions):
            return None
        return image.partitions[partition]

    def unfenced_broker_ids(self) -> list[int]:
        return sorted(b.broker_id for b in self.brokers.values() if not b.fenced)

    def iter_partitions(self) -> Iterator[tuple[TopicImage, int, PartitionRegistration]]:
        for topic in self.topics.values():
            for index, registration in enumerate(topic.partitions):
                yield topic, index, registration

    def partitions_led_by(self, broker_id: int) -> list[tuple[str, int]]:
        return [
            (topic.name, index)
            for topic, index, registration in self.iter_partitions()
            if registration.leader == broker_id
        ]


EMPTY_IMAGE = MetadataImage()
