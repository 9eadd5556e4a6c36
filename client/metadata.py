"""The SDK's view of the cluster: brokers, topics, partition leaders.

Refreshed from any reachable broker (bootstrap list first, then known brokers) when a
request hits NOT_LEADER, an unknown topic, or an unreachable broker. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc

from raftka.client.errors import BrokerNotAvailableError, error_for
from raftka.client.transport import Connections, translate_rpc_error
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

Code = common_pb2.ErrorCode


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class ClusterMetadata:
    def __init__(
        self, bootstrap: list[str], connections: Connections, request_timeout_s: float = 10.0
    ) -> None:
        self._bootstrap = list(bootstrap)
        self._connections = connections
        self._timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self.brokers: dict[int, str] = {}
        self.topics: dict[str, list[PartitionInfo]] = {}
        self.controller_id = -1
        self.cluster_id = ""
        self.last_refresh = 0.0

    def candidates(self) -> list[str]:
        with self._lock:
            known = list(self.brokers.values())
        return list(dict.fromkeys(self._bootstrap + known))

    def refresh(
        self, topics: list[str] | None = None, allow_auto_create: bool = False
    ) -> broker_pb2.MetadataResponse:
        """Ask the first broker that answers; update the view; return the raw reply."""
        request = broker_pb2.MetadataRequest(
            topics=topics or [], allow_auto_topic_creation=allow_auto_create
        )
        problems = []
        for address in self.candidates():
            try:
                response = self._connections.broker(address).Metadata(
                    request, timeout=self._timeout_s
                )
            except grpc.RpcError as exc:
                problems.append(str(translate_rpc_error(exc, address)))
                continue
            self._absorb(response, replace_all=not topics)
            return response
        raise BrokerNotAvailableError("no broker answered: " + "; ".join(problems))

    def _absorb(self, response: broker_pb2.MetadataResponse, replace_all: bool) -> None:
        with self._lock:
            self.brokers = {b.broker_id: f"{b.host}:{b.port}" for b in response.brokers}
            self.controller_id = response.controller_id
            self.cluster_id = response.cluster_id
            if replace_all:
                self.topics = {}
            for topic in response.topics:
                if topic.error_code == Code.UNKNOWN_TOPIC_OR_PARTITION:
                    self.topics.pop(topic.name, None)
                    continue
                if topic.error_code:
                    continue
                self.topics[topic.name] = [
                    PartitionInfo(
                        topic.name,
                        p.partition,
                        p.leader_id,
                        p.leader_epoch,
                        tuple(p.replicas),
                        tuple(p.isr),
                    )
                    for p in sorted(topic.partitions, key=lambda p: p.partition)
                ]
            self.last_refresh = time.monotonic()

    def partitions_for(self, topic: str) -> list[PartitionInfo] | None:
        with self._lock:
            return self.topics.get(topic)

    def leader_address(self, topic: str, partition: int) -> str | None:
        with self._lock:
            partitions = self.topics.get(topic)
            if partitions is None or partition >= len(partitions):
                return None
            return self.brokers.get(partitions[partition].leader_id)

    def ensure_topic(self, topic: str, allow_auto_create: bool) -> list[PartitionInfo]:
        """Partitions of `topic`, fetching metadata (and auto-creating it) if needed."""
        known = self.partitions_for(topic)
        if known:
            return known
        response = self.refresh([topic], allow_auto_create=allow_auto_create)
        for item in response.topics:
            if item.name == topic and item.error_code:
                raise error_for(item.error_code, item.error_message)
        found = self.partitions_for(topic)
        if not found:
            raise error_for(Code.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{topic}' has no partitions")
        return found

    def any_broker(self) -> str:
        return self.candidates()[0]
