"""The SDK's view of the cluster: brokers, topics, partition leaders.

Refreshed from any reachable broker (bootstrap list first, then known brokers) when a
request hits NOT_LEADER, an unknown topic, or an unreachable broker. Thread-safe.

Two things keep one dead or slow broker from stalling the SDK:
- Addresses that just failed go to the back of `candidates()` for `ADDRESS_PENALTY_S`, so
  after `raftka cluster kill 1` the next Metadata goes to a live broker first instead of
  waiting on broker 1 every time.
- A NOT_LEADER_OR_FOLLOWER answer names the new leader and, in the reply's node_endpoints,
  its address (KIP-951); `use_leader_hint()` takes it when its leader epoch is newer than
  ours, so the retry goes straight there without a Metadata round trip. An older or equal
  epoch is ignored, so two brokers that disagree cannot bounce a request between them.
`refresh_in_background()` refreshes on its own thread (one at a time), for callers such as
the producer's sender that must keep serving the other brokers meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import grpc

from raftka.client.errors import (
    AuthenticationError,
    AuthorizationError,
    BrokerNotAvailableError,
    error_for,
)
from raftka.client.transport import Connections, translate_rpc_error
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

Code = common_pb2.ErrorCode
log = logging.getLogger("raftka.client")
# How long an address that failed is tried after the others (s).
ADDRESS_PENALTY_S = 10.0
# Longest wait for one broker's Metadata answer before asking the next (s). A broker answers
# from its own image at once, so a silent one (paused, cut off) is skipped after this rather
# than after the whole request timeout. Auto-creating a topic may wait on the controller, so
# those calls keep the request timeout.
METADATA_ATTEMPT_TIMEOUT_S = 3.0


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
        self.refreshes = 0  # Metadata answers taken in (tests count round trips with it)
        self._failed_at: dict[str, float] = {}  # address -> monotonic time of its failure
        self._refreshing = False

    def candidates(self) -> list[str]:
        """Every address to try, each once: bootstrap then known brokers, those that failed
        within ADDRESS_PENALTY_S last."""
        now = time.monotonic()
        with self._lock:
            known = list(self.brokers.values())
            failed = {a for a, at in self._failed_at.items() if now - at < ADDRESS_PENALTY_S}
        ordered = list(dict.fromkeys(self._bootstrap + known))
        return [a for a in ordered if a not in failed] + [a for a in ordered if a in failed]

    def note_unreachable(self, address: str) -> None:
        """`address` did not answer: try it after the others for a while."""
        with self._lock:
            self._failed_at[address] = time.monotonic()

    def note_reachable(self, address: str) -> None:
        with self._lock:
            self._failed_at.pop(address, None)

    def refresh(
        self, topics: list[str] | None = None, allow_auto_create: bool = False
    ) -> broker_pb2.MetadataResponse:
        """Ask the first broker that answers; update the view; return the raw reply."""
        request = broker_pb2.MetadataRequest(
            topics=topics or [], allow_auto_topic_creation=allow_auto_create
        )
        problems = []
        timeout_s = (
            self._timeout_s if allow_auto_create
            else min(self._timeout_s, METADATA_ATTEMPT_TIMEOUT_S)
        )
        for address in self.candidates():
            try:
                response = self._connections.broker(address).Metadata(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                error = translate_rpc_error(exc, address)
                if isinstance(error, (AuthenticationError, AuthorizationError)):
                    raise error from None  # another broker would refuse alike
                self.note_unreachable(address)
                problems.append(str(error))
                continue
            self.note_reachable(address)
            self._absorb(response, replace_all=not topics)
            return response
        raise BrokerNotAvailableError("no broker answered: " + "; ".join(problems))

    def refresh_in_background(self) -> None:
        """Refresh on another thread unless a refresh is already running; failures are
        logged (the next retry asks again)."""
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(
            target=self._refresh_quietly, name="raftka-metadata-refresh", daemon=True
        ).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # RaftkaError, or a channel closed under us at close()
            log.debug("metadata refresh failed: %s", exc)
        finally:
            with self._lock:
                self._refreshing = False

    def use_leader_hint(
        self,
        topic: str,
        partition: int,
        leader_id: int,
        leader_epoch: int,
        endpoints: Sequence[common_pb2.BrokerEndpoint] = (),
    ) -> bool:
        """Take a NOT_LEADER answer's leader (KIP-951) if its epoch is newer than ours and
        its address is known (from `endpoints` or earlier metadata). True when the next
        request for the partition can go to that leader without a refresh."""
        if leader_id < 0:
            return False
        with self._lock:
            for endpoint in endpoints:
                self.brokers[endpoint.broker_id] = f"{endpoint.host}:{endpoint.port}"
            partitions = self.topics.get(topic)
            if partitions is None or not 0 <= partition < len(partitions):
                return False
            known = partitions[partition]
            if leader_epoch <= known.leader_epoch or leader_id not in self.brokers:
                return False
            updated = list(partitions)
            updated[partition] = replace(known, leader_id=leader_id, leader_epoch=leader_epoch)
            self.topics[topic] = updated
            return True

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
            self.refreshes += 1

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
