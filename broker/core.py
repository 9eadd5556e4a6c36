"""BrokerCore: everything the adapters serve from, built completely before any adapter.

Why: the gRPC servicers and the Kafka listener are thin translations of one core. They used to
hang off a half-built BrokerServer (collaborators attached in start(), adapters reaching each
other through it, server <-> servicer import circles). Now broker/server.py builds every
collaborator, puts them here, and hands this object to each adapter; adapters import this
module, never the server or each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftka.broker.config import BrokerConfig
from raftka.broker.fetch_path import FetchPath
from raftka.broker.groups.classic_protocol import ClassicProtocol
from raftka.broker.groups.coordinator import GroupCoordinator
from raftka.broker.groups.directory import GroupDirectory
from raftka.broker.internal_auth import InternalAuth
from raftka.broker.liveness import WatchServer
from raftka.broker.log_admin import LogAdmin
from raftka.broker.metrics import BrokerMetrics
from raftka.broker.partition import TopicPartition
from raftka.broker.produce_path import ProducePath
from raftka.broker.producer_ids import ProducerIdManager
from raftka.broker.replica_manager import ReplicaManager
from raftka.broker.security import BrokerSecurity
from raftka.broker.topic_admin import TopicAdmin
from raftka.cluster.image import MetadataImage
from raftka.cluster.quorum import QuorumController


@dataclass(frozen=True, slots=True)
class BrokerCore:
    config: BrokerConfig
    replica_manager: ReplicaManager  # hosted partitions and the image they follow
    produce_path: ProducePath
    fetch_path: FetchPath
    producer_ids: ProducerIdManager
    topics: TopicAdmin  # create/delete/auto-create, for every adapter
    log_admin: LogAdmin  # DeleteRecords and DescribeLogDirs on this broker's logs
    group_coordinator: GroupCoordinator  # KIP-848 groups and committed offsets
    classic_groups: ClassicProtocol  # JoinGroup/SyncGroup over the Kafka wire
    group_directory: GroupDirectory  # find-coordinator, list-groups, __consumer_offsets
    quorum: QuorumController  # answers controller calls when this broker leads Raft
    internal_auth: InternalAuth  # checks broker-to-broker calls
    controller_id: Callable[[], int | None]
    raft_image: Callable[[], MetadataImage]  # the newest committed image (DescribeCluster)
    # Whether this incarnation is not (yet, or no longer) unfenced by the controller: just
    # restarted, its saved metadata may name it leader of partitions it lost meanwhile.
    fenced: Callable[[], bool]
    metrics: BrokerMetrics  # what /metrics serves; the adapters time their requests on it
    watch_server: WatchServer  # the stream the active controller watches this broker by
    security: BrokerSecurity  # who calls (SASL, gRPC credentials) and what ACLs allow

    @property
    def not_leading(self) -> int | None:
        """This broker's id while it must not claim leadership in Metadata answers. (A
        leader whose lease merely lapsed still shows: its produce/fetch answers say why.)"""
        return self.config.broker_id if self.fenced() else None

    @property
    def image(self) -> MetadataImage:
        """The metadata whose local changes are in effect here (what requests see)."""
        return self.replica_manager.image

    @property
    def caught_up(self) -> bool:
        """Whether this broker has applied the metadata holding its own registration."""
        return self.replica_manager.caught_up

    @property
    def metadata_image(self) -> MetadataImage:
        """What Metadata requests are answered from: the applied image, or while this broker
        is still catching up (nothing applied yet) the newest one its Raft node has, so a
        starting broker does not answer that every topic is unknown (clients would drop
        the topic, and auto-creation would try to create it again)."""
        return self.image if self.caught_up else self.raft_image()

    def local_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start, high watermark) of a partition this broker leads; (-1, -1) else."""
        hosted = self.replica_manager.partitions.get(TopicPartition(topic, partition))
        if hosted is None or not hosted.is_leader:
            return -1, -1
        return hosted.log_start_offset, hosted.high_watermark
