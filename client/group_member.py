"""Group membership for the Consumer: find the coordinator, heartbeat, carry assignments.

How it works (the member's side of KIP-848): a background thread sends
ConsumerGroupHeartbeat to the group's coordinator every heartbeat interval, reporting the
partitions the consumer owns right now; each reply carries the partitions it should own.
The consumer's own thread takes new assignments in poll() — committing and dropping revoked
partitions first — and reports what it owns, which wakes the heartbeat so the coordinator
can hand revoked partitions to others at once. Losing the coordinator (failover, NOT_COORDINATOR)
means finding it again; being unknown to it (session expired, coordinator restarted) means
joining again with the same member id, still reporting owned partitions so nobody else gets
them before they are released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from raftka.client.errors import RaftkaError, error_for
from raftka.client.metadata import ClusterMetadata
from raftka.client.transport import Connections, translate_rpc_error
from raftka.client.types import TopicPartition
from raftka.proto.raftka.v1 import common_pb2, group_pb2, group_pb2_grpc

log = logging.getLogger("raftka.client")
Code = common_pb2.ErrorCode
REJOIN_CODES = {Code.UNKNOWN_MEMBER_ID, Code.FENCED_MEMBER_EPOCH}
REFIND_CODES = {
    Code.NOT_COORDINATOR,
    Code.COORDINATOR_NOT_AVAILABLE,
    Code.COORDINATOR_LOAD_IN_PROGRESS,
}
BACKOFF_S = 0.1


class CommitFailedError(RaftkaError):
    """The group no longer counts this member (session expired, or it was fenced): its
    partitions may already belong to another member, so its positions were not stored."""


def _grouped(partitions: Iterable[TopicPartition]) -> list[group_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return [
        group_pb2.TopicPartitions(topic=t, partitions=sorted(p))
        for t, p in sorted(by_topic.items())
    ]


class GroupMembership:
    def __init__(
        self,
        group_id: str,
        topics: list[str],
        regex: str,
        *,
        connections: Connections,
        metadata: ClusterMetadata,
        client_id: str,
        session_timeout_ms: int,
        assignor: str,
        request_timeout_s: float,
    ) -> None:
        if not group_id:
            raise ValueError("group_id must not be empty")
        self.group_id = group_id
        self._topics = list(topics)
        self._regex = regex
        self._connections = connections
        self._metadata = metadata
        self._client_id = client_id
        self._session_timeout_ms = session_timeout_ms
        self._assignor = assignor
        self._timeout_s = request_timeout_s
        self.member_id = ""
        self.member_epoch = 0
        self._interval_s = 1.0
        self._coordinator: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._owned: frozenset[TopicPartition] = frozenset()
        self._target: frozenset[TopicPartition] | None = None
        self._target_taken = True
        self._send_subscription = True
        self.last_error: RaftkaError | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"raftka-group-{group_id}", daemon=True
        )

    # ----------------------------------------------------------------- consumer side
    def start(self) -> None:
        self._thread.start()

    def take_assignment(self) -> frozenset[TopicPartition] | None:
        """The newest assignment, once; None when nothing changed since the last call."""
        with self._lock:
            if self._target_taken:
                return None
            self._target_taken = True
            return self._target

    def report_owned(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._owned = frozenset(partitions)
        self._wake.set()

    def close(self, leave: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self._timeout_s + 2)
        if leave and self.member_id:
            try:
                self._heartbeat(leaving=True)
            except RaftkaError as exc:
                log.debug("leaving group %s: %s", self.group_id, exc)

    # ------------------------------------------------------------------ heartbeats
    def _run(self) -> None:
        while not self._stop.is_set():
            wait_s = self._interval_s
            try:
                self._heartbeat()
            except RaftkaError as exc:
                self.last_error = exc
                wait_s = BACKOFF_S
                log.debug("group %s heartbeat: %s", self.group_id, exc)
            self._wake.wait(wait_s)
            self._wake.clear()

    def _heartbeat(self, leaving: bool = False) -> None:
        coordinator = self._find_coordinator()
        with self._lock:
            owned = self._owned
        request = group_pb2.ConsumerGroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=-1 if leaving else self.member_epoch,
            subscribed_topic_names=self._topics if self._send_subscription else [],
            has_subscription=self._send_subscription and not self._regex,
            subscribed_topic_regex=self._regex,
            server_assignor=self._assignor,
            owned_partitions=_grouped(owned),
            session_timeout_ms=self._session_timeout_ms,
            client_id=self._client_id,
        )
        try:
            reply = self._stub(coordinator).ConsumerGroupHeartbeat(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            self._coordinator = None
            raise translate_rpc_error(exc, coordinator) from None  # type: ignore[misc]
        if reply.error_code:
            self._on_error(reply.error_code, reply.error_message)
        if leaving:
            return
        self.member_id = reply.member_id
        self.member_epoch = reply.member_epoch
        self._send_subscription = False
        self._interval_s = max(0.05, reply.heartbeat_interval_ms / 1000)
        assignment = frozenset(
            TopicPartition(t.topic, p) for t in reply.assignment for p in t.partitions
        )
        with self._lock:
            if assignment != self._target:
                self._target = assignment
                self._target_taken = False
        self.last_error = None

    def _on_error(self, code: int, message: str) -> None:
        if code in REFIND_CODES:
            self._coordinator = None
        elif code in REJOIN_CODES:
            log.info("group %s: %s; joining again", self.group_id, message)
            self.member_epoch = 0
            self._send_subscription = True
        raise error_for(code, message)

    def _stub(self, address: str) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self._connections.channel(address))

    def _find_coordinator(self) -> str:
        if self._coordinator is not None:
            return self._coordinator
        request = group_pb2.FindCoordinatorRequest(group_id=self.group_id)
        last: RaftkaError | None = None
        for address in self._metadata.candidates():
            try:
                reply = self._stub(address).FindCoordinator(request, timeout=self._timeout_s)
            except grpc.RpcError as exc:
                last = translate_rpc_error(exc, address)  # type: ignore[assignment]
                continue
            if reply.error_code:
                last = error_for(reply.error_code, reply.error_message)
                continue
            endpoint = reply.coordinator
            self._coordinator = f"{endpoint.host}:{endpoint.port}"
            return self._coordinator
        raise last or error_for(Code.COORDINATOR_NOT_AVAILABLE, "no broker answered")

    # --------------------------------------------------------------------- offsets
    def commit(self, offsets: Mapping[TopicPartition, tuple[int, str]], timeout_s: float) -> None:
        """Store positions; retries coordinator moves and stale epochs until timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._commit_once(offsets)
                return
            except CommitFailedError:
                # A new coordinator does not know us until we rejoin (membership is not
                # stored). If we still hold these partitions after rejoining, commit again.
                if not self._rejoined_holding(offsets.keys(), deadline):
                    raise
            except RaftkaError as exc:
                if time.monotonic() > deadline or not (
                    exc.retriable
                    or exc.code in (Code.STALE_MEMBER_EPOCH, Code.COORDINATOR_LOAD_IN_PROGRESS)
                ):
                    raise
                self._wake.set()
                time.sleep(BACKOFF_S)

    def _rejoined_holding(self, partitions: Iterable[TopicPartition], deadline: float) -> bool:
        wanted = set(partitions)
        self.member_epoch = 0
        self._send_subscription = True
        self._wake.set()
        while time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(BACKOFF_S / 2)
            with self._lock:
                target = self._target
            if self.member_epoch > 0 and self.last_error is None and target is not None:
                return wanted <= target
        return False

    def _commit_once(self, offsets: Mapping[TopicPartition, tuple[int, str]]) -> None:
        coordinator = self._find_coordinator()
        request = group_pb2.OffsetCommitRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=self.member_epoch,
            partitions=[
                group_pb2.OffsetCommitPartition(
                    topic=tp.topic, partition=tp.partition, offset=offset, metadata=metadata
                )
                for tp, (offset, metadata) in offsets.items()
            ],
        )
        try:
            reply = self._stub(coordinator).OffsetCommit(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            self._coordinator = None
            raise translate_rpc_error(exc, coordinator) from None  # type: ignore[misc]
        if reply.error_code in REJOIN_CODES:
            raise CommitFailedError(
                f"commit refused for group {self.group_id}: {reply.error_message}", reply.error_code
            )
        if reply.error_code:
            if reply.error_code in REFIND_CODES:
                self._coordinator = None
            raise error_for(reply.error_code, reply.error_message)
        for item in reply.partitions:
            if item.error_code:
                raise error_for(item.error_code, item.error_message)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets (-1: none) of these partitions."""
        request = group_pb2.OffsetFetchRequest(
            group_id=self.group_id, partitions=_grouped(partitions)
        )
        deadline = time.monotonic() + self._timeout_s
        while True:
            coordinator = self._find_coordinator()
            try:
                reply = self._stub(coordinator).OffsetFetch(request, timeout=self._timeout_s)
            except grpc.RpcError as exc:
                self._coordinator = None
                error: Any = translate_rpc_error(exc, coordinator)
            else:
                if not reply.error_code:
                    return {TopicPartition(o.topic, o.partition): o.offset for o in reply.offsets}
                error = error_for(reply.error_code, reply.error_message)
                if reply.error_code in REFIND_CODES:
                    self._coordinator = None
            if time.monotonic() > deadline or not getattr(error, "retriable", True):
                raise error
            time.sleep(BACKOFF_S)
