"""Serving Fetch, ListOffsets and OffsetForLeaderEpoch from partition leaders.

How it works: a fetch reads stored batches straight from the segment files — consumers below
the high watermark, followers (replica_id >= 0) up to the log end offset. A follower's fetch
is also how the leader learns the follower's position (which may move the high watermark and
release acks=all producers) and where the leader checks that the follower's log has not
diverged. With too little data, the request long-polls in the purgatory until something
moves or max_wait_ms passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftka.broker.errors import (
    BrokerFencedError,
    InvalidRequestError,
    StaleBrokerEpochError,
    fill_error,
)
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.metrics import BrokerMetrics
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.replica_manager import ReplicaManager
from raftka.broker.replication.fetch_session import LeaderFetchSession, QuietSnapshot
from raftka.broker.replication.follower_state import leader_divergence
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import decode_batches

log = logging.getLogger("raftka.broker")
DEFAULT_PARTITION_FETCH_BYTES = 1024 * 1024
# A zero-copy fetch keeps a duplicated descriptor per partition until the response is sent;
# past this many in one response the rest are read into memory instead, so a consumer of
# 10,000 partitions cannot take 10,000 descriptors at once (they are outside the file pool's
# budget, inside the reserve).
MAX_SLICES_PER_FETCH = 128
LIST_OFFSETS_EARLIEST = -2
LIST_OFFSETS_LATEST = -1


class FetchPath:
    def __init__(
        self,
        replicas: ReplicaManager,
        *,
        fetch_max_bytes: int,
        fetch_wait_max_ms: int,
        lease_problem: Callable[[], str | None] | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._replicas = replicas
        self._metrics = metrics
        # A leader whose lease lapsed (paused, cut off) may have been replaced without knowing
        # it yet; it serves no consumer reads then, so none sees a stale end of the log.
        self._lease_problem = lease_problem
        self._fetch_max_bytes = fetch_max_bytes
        self._wait_max_ms = fetch_wait_max_ms

    # ----------------------------------------------------------------------------- fetch
    async def fetch(self, request: broker_pb2.FetchRequest) -> broker_pb2.FetchResponse:
        response, slices = await self._fetch(request, zero_copy=False)
        assert not slices
        if request.decode_records:
            for item, asked in zip(response.partitions, request.partitions, strict=True):
                if item.record_batches:
                    item.records.extend(to_proto_records(item.record_batches, asked.fetch_offset))
        return response

    async def fetch_slices(
        self, request: broker_pb2.FetchRequest, session: LeaderFetchSession | None = None
    ) -> tuple[broker_pb2.FetchResponse, dict[int, FileSlice]]:
        """As `fetch`, but each partition's batches stay in the segment file: a FileSlice per
        index of response.partitions (whose record_batches are then empty), for a listener
        that sends them with sendfile. The caller closes the slices.

        With `session` (the replication stream's, fetch_session.py) the request only changes
        the session; every partition in it is fetched, and only those with news answered."""
        return await self._fetch(request, zero_copy=True, session=session)

    async def _fetch(
        self,
        request: broker_pb2.FetchRequest,
        *,
        zero_copy: bool,
        session: LeaderFetchSession | None = None,
    ) -> tuple[broker_pb2.FetchResponse, dict[int, FileSlice]]:
        loop = asyncio.get_running_loop()
        wait_ms = min(max(request.max_wait_ms, 0), self._wait_max_ms)
        deadline = loop.time() + wait_ms / 1000
        max_bytes = request.max_bytes if request.max_bytes > 0 else self._fetch_max_bytes
        max_bytes = min(max_bytes, self._fetch_max_bytes)
        if session is not None:
            asked, keys = session.apply(request)
        else:
            asked = list(request.partitions)
            keys = [TopicPartition(p.topic, p.partition) for p in asked]
        while True:
            slices: dict[int, FileSlice] | None = {} if zero_copy else None
            told: list[tuple[TopicPartition, int, int]] = []  # this pass's, see _read_all
            response, total_bytes, ends, served = self._read_all(
                request, asked, keys, max_bytes, slices, session, told)
            settled = any(p.error_code or p.diverged for p in response.partitions)
            remaining = deadline - loop.time()
            if total_bytes >= max(request.min_bytes, 1) or settled or remaining <= 0:
                break

            moved = self._moved_check(ends, request.replica_id >= 0)
            try:
                # `ends` are this pass's: nothing moved since, in this turn of the loop.
                # False: the wait ran out with moved() just seen false, so this pass's
                # response is still the answer (checking again walked every partition
                # once more per idle round).
                if not await self._replicas.purgatory.wait_until(keys, moved, remaining,
                                                                 known_false=True):
                    break
            except BaseException:
                close_slices(slices)
                raise
            close_slices(slices)
        if session is not None:
            response.session = True
            session.told(told)  # `response` is the pass that made `told`
        if self._metrics is not None:
            follower = request.replica_id >= 0
            for index, item in enumerate(response.partitions):
                found = slices.get(index) if slices else None
                size = found.length if found is not None else len(item.record_batches)
                self._metrics.served(item.topic, size, follower)
                if index in served:
                    self._metrics.messages_out.labels(item.topic).inc(served[index])
        return response, slices or {}

    def _moved_check(self, ends: dict[TopicPartition, int],
                     follower: bool) -> Callable[[], bool]:
        """Whether any partition's visible end (the log end for a follower, the high
        watermark for a consumer) is no longer what `ends` says, or it is gone. Called per
        wake-up of a long poll over every partition of the fetch, hence the inlined reads."""
        hosted = self._replicas.partitions

        def moved() -> bool:
            for tp, end in ends.items():
                partition = hosted.get(tp)
                if partition is None:
                    return True
                log = partition.log
                if (log.log_end_offset if follower else log.high_watermark) != end:
                    return True
            return False

        return moved

    def _visible_end(self, tp: TopicPartition, replica_id: int) -> int:
        partition = self._replicas.partitions.get(tp)
        if partition is None:
            return -1
        return partition.log_end_offset if replica_id >= 0 else partition.high_watermark

    def _read_all(
        self,
        request: broker_pb2.FetchRequest,
        asked_partitions: list[broker_pb2.FetchPartition],
        keys: list[TopicPartition],
        max_bytes: int,
        slices: dict[int, FileSlice] | None,
        session: LeaderFetchSession | None = None,
        told: list[tuple[TopicPartition, int, int]] | None = None,
    ) -> tuple[broker_pb2.FetchResponse, int, dict[TopicPartition, int], dict[int, int]]:
        """One pass over the asked partitions (`keys`: theirs, in order, made once per fetch
        rather than once per pass); with `slices`, batches go there (by index of the
        response's partitions) instead of into record_batches. With `session`, a partition
        with nothing new for the follower gets no reply at all, and the record-less answers
        it does get are added to `told` (for session.told once this pass's response is the
        one sent). Last: for a consumer's
        fetch, the offsets served per response index (from the fetch offset to the end of
        what was read; the records themselves are never decoded for this count).

        Each partition's answer is worked out first and its reply made only when it is
        sent: building a protobuf reply was most of the cost of a quiet partition."""
        response = broker_pb2.FetchResponse()
        replies = response.partitions
        total = 0
        ends: dict[TopicPartition, int] = {}
        served: dict[int, int] = {}
        replica_id = request.replica_id
        consumer = replica_id < 0
        # The quiet-partition shortcut (fetch_session.QuietSnapshot) only when the checks
        # that hold for the whole request pass: no lapsed lease, the follower's current
        # broker epoch. Otherwise every partition takes the full path and gets its error.
        shortcut = (session is not None and not consumer
                    and self._request_problem(replica_id, request.replica_broker_epoch) is None)
        hosted = self._replicas.partitions
        now_ms = self._replicas.clock_ms() if shortcut else 0  # one pass, one event loop turn
        if told is None:
            told = []
        for asked, tp in zip(asked_partitions, keys, strict=True):
            if shortcut:
                assert session is not None
                snapshot = session.quiet_snapshot(tp)
                if snapshot is not None:
                    quiet = snapshot.partition
                    log = quiet.log
                    if (hosted.get(tp) is quiet
                            and quiet.leader_state is snapshot.leader_state
                            and log.log_end_offset == snapshot.log_end_offset
                            and log.log_start_offset == snapshot.log_start_offset):
                        if quiet.record_follower_fetch(replica_id, asked.fetch_offset, now_ms):
                            self._replicas.purgatory.notify(tp)
                        ends[tp] = snapshot.log_end_offset
                        high_watermark = log.high_watermark
                        if session.quiet(tp, high_watermark, snapshot.log_start_offset):
                            continue  # nothing new
                        told.append((tp, high_watermark, snapshot.log_start_offset))
                        replies.add(
                            topic=asked.topic,
                            partition=asked.partition,
                            high_watermark=high_watermark,
                            log_start_offset=snapshot.log_start_offset,
                            log_end_offset=snapshot.log_end_offset,
                            leader_id=quiet.leader_id,
                            leader_epoch=quiet.leader_epoch,
                            diverging_epoch=-1,
                            diverging_end_offset=-1,
                        )
                        continue
                    session.remember(tp, None)  # something changed: check everything
            leader_id = leader_epoch_seen = -1
            log_start = log_end = high_watermark = -1
            divergence: tuple[int, int] | None = None
            data = b""
            found: FileSlice | None = None
            error: Exception | None = None
            try:
                partition = self._replicas.leader_partition(tp, asked.current_leader_epoch)
                # Consumers and followers alike: a leader whose lease lapsed, or a broker
                # just restarted and not yet registered, may lead nothing any more (its
                # followers must not copy, or truncate to, a log that lost its tail).
                if self._lease_problem is not None:
                    problem = self._lease_problem()
                    if problem is not None:
                        raise BrokerFencedError(problem)
                leader_id = partition.leader_id
                leader_epoch_seen = partition.leader_epoch
                log_start = partition.log_start_offset
                log_end = partition.log_end_offset
                if not consumer:
                    divergence = self._follower_fetch(
                        partition, replica_id, request.replica_broker_epoch, asked)
                high_watermark = partition.high_watermark
                if divergence is None:
                    upper = None if not consumer else high_watermark
                    budget = max(0, max_bytes - total)
                    limit = min(asked.partition_max_bytes or DEFAULT_PARTITION_FETCH_BYTES,
                                budget)
                    if slices is None and not consumer:
                        data = partition.log.read(
                            asked.fetch_offset, limit, upper, min_one_batch=total == 0)
                        total += len(data)
                    else:
                        found = partition.log.read_slice(
                            asked.fetch_offset, limit, upper, min_one_batch=total == 0)
                        if found is not None:
                            total += found.length
                    ends[tp] = self._visible_end(tp, replica_id)
            except Exception as exc:
                error = exc
            if session is not None:
                if error is None and divergence is None and found is None and not data:
                    if asked.fetch_offset == log_end:  # caught up: the next pass may skip
                        session.remember(tp, QuietSnapshot(  # the checks
                            partition, partition.leader_state, log_end, log_start))
                    if session.quiet(tp, high_watermark, log_start):
                        continue
                    told.append((tp, high_watermark, log_start))
                else:
                    session.answered(tp)
            index = len(replies)
            reply = replies.add(
                topic=asked.topic,
                partition=asked.partition,
                high_watermark=high_watermark,
                log_start_offset=log_start,
                log_end_offset=log_end,
                leader_id=leader_id,
                diverging_epoch=-1,
                diverging_end_offset=-1,
            )
            if leader_epoch_seen != -1:
                reply.leader_epoch = leader_epoch_seen
            if error is not None:
                if found is not None:
                    found.close()
                fill_error(reply, error)
                continue
            if divergence is not None:
                reply.diverged = True
                reply.diverging_epoch, reply.diverging_end_offset = divergence
                continue
            if data:
                reply.record_batches = data
            elif found is not None:
                if slices is None or len(slices) >= MAX_SLICES_PER_FETCH:
                    with found:
                        reply.record_batches = found.read()
                else:
                    slices[index] = found
                if consumer:
                    served[index] = max(0, found.next_offset - asked.fetch_offset)
        return response, total, ends, served

    def _request_problem(self, replica_id: int, replica_broker_epoch: int) -> str | None:
        """Why no partition of a follower's fetch can be served as is, or None: the same
        lease and broker-epoch checks every partition's full path makes."""
        if self._lease_problem is not None:
            problem = self._lease_problem()
            if problem is not None:
                return problem
        registered = self._replicas.image.brokers.get(replica_id)
        if registered is not None and replica_broker_epoch < registered.epoch:
            return "stale broker epoch"
        return None

    def _follower_fetch(
        self,
        partition: Partition,
        replica_id: int,
        replica_broker_epoch: int,
        asked: broker_pb2.FetchPartition,
    ) -> tuple[int, int] | None:
        """Check the follower's log against ours and note its position; the divergence
        (epoch, end offset) when its log diverged (then the reply carries no records)."""
        state = partition.check_leader()
        if not state.is_replica(replica_id):
            raise InvalidRequestError(f"broker {replica_id} is not a replica of {partition.tp}")
        registered = self._replicas.image.brokers.get(replica_id)
        if registered is not None and replica_broker_epoch < registered.epoch:
            # KIP-903: only the follower's current incarnation may count for the ISR and
            # the high watermark.
            raise StaleBrokerEpochError(
                f"broker {replica_id} fetched with broker epoch {replica_broker_epoch}; "
                f"its registration is at {registered.epoch}"
            )
        divergence = leader_divergence(
            partition.log.epochs,
            partition.log_end_offset,
            asked.last_fetched_epoch,
            asked.fetch_offset,
        )
        if divergence is not None:
            return divergence
        if partition.record_follower_fetch(
            replica_id, asked.fetch_offset, self._replicas.clock_ms()
        ):
            self._replicas.purgatory.notify(partition.tp)
        return None

    # ---------------------------------------------------------------------------- offsets
    def list_offsets(
        self, request: broker_pb2.ListOffsetsRequest
    ) -> broker_pb2.ListOffsetsResponse:
        response = broker_pb2.ListOffsetsResponse()
        for asked in request.partitions:
            reply = response.partitions.add(
                topic=asked.topic,
                partition=asked.partition,
                offset=-1,
                timestamp_ms=-1,
                leader_id=-1,
            )
            try:
                partition = self._replicas.leader_partition(
                    TopicPartition(asked.topic, asked.partition)
                )
                problem = self._lease_problem() if self._lease_problem is not None else None
                if problem is not None:  # a replaced leader's end offset may be stale
                    raise BrokerFencedError(problem)
                reply.leader_id = partition.leader_id
                if asked.timestamp_ms == LIST_OFFSETS_EARLIEST:
                    reply.offset = partition.log_start_offset
                elif asked.timestamp_ms == LIST_OFFSETS_LATEST:
                    reply.offset = partition.high_watermark
                elif asked.timestamp_ms < 0:
                    raise InvalidRequestError(
                        f"timestamp_ms {asked.timestamp_ms}: use -2 (earliest), -1 (latest) "
                        "or a time in ms"
                    )
                else:
                    found = partition.log.offset_for_timestamp(asked.timestamp_ms)
                    if found is not None:
                        reply.offset, reply.timestamp_ms = found
            except Exception as exc:
                fill_error(reply, exc)
        return response

    def offset_for_leader_epoch(
        self, request: broker_pb2.OffsetForLeaderEpochRequest
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        response = broker_pb2.OffsetForLeaderEpochResponse()
        for asked in request.partitions:
            reply = response.partitions.add(
                topic=asked.topic, partition=asked.partition, leader_epoch=-1, end_offset=-1
            )
            try:
                partition = self._replicas.leader_partition(
                    TopicPartition(asked.topic, asked.partition), asked.current_leader_epoch
                )
                reply.leader_epoch, reply.end_offset = partition.log.epochs.end_offset_for(
                    asked.leader_epoch, partition.log_end_offset
                )
            except Exception as exc:
                fill_error(reply, exc)
        return response


def close_slices(slices: dict[int, FileSlice] | None) -> None:
    for found in (slices or {}).values():
        found.close()


def to_proto_records(data: bytes, from_offset: int) -> list[common_pb2.Record]:
    out = []
    for record in decode_batches(data, from_offset=from_offset):
        proto = common_pb2.Record(timestamp_ms=record.timestamp_ms, offset=record.offset)
        if record.key is not None:
            proto.key = record.key
        if record.value is not None:
            proto.value = record.value
        for key, value in record.headers:
            header = proto.headers.add(key=key)
            if value is not None:
                header.value = value
        out.append(proto)
    return out
