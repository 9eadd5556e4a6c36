"""End offsets of partitions this broker has no replica of, asked of their leaders when
/metrics is scraped, so the group coordinator reports a lag for every partition its groups
committed (broker/groups/lag.py says why the coordinator asks, and decides whom).

Bounded: one ListOffsets per leader per round, all its partitions in it, sent to every
leader at once and waited for at most CALL_TIMEOUT_S; scrapes closer together than
REFRESH_MIN_INTERVAL_S share one round; at most PARTITIONS_MAX partitions per round. Nothing
is asked while nobody scrapes, or when every committed partition is hosted here (RF = the
number of brokers). Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from raftka.broker.controller_client import ChannelPool
from raftka.broker.groups.lag import (
    TopicPartitionKey,
    end_offsets_to_ask,
    fresh_end_offsets,
    local_end_offsets,
)
from raftka.broker.internal_auth import method_path
from raftka.cluster.image import MetadataImage
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc

log = logging.getLogger("raftka.metrics")
LIST_OFFSETS = method_path("BrokerService", "ListOffsets")
LIST_OFFSETS_LATEST = -1
# Scrapes closer together than this share one round of requests (s).
REFRESH_MIN_INTERVAL_S = 1.0
# How long one leader's ListOffsets may take; a scrape waits at most this long (s).
CALL_TIMEOUT_S = 2.0
# An end offset learned longer ago than this is dropped, not reported stale (s).
MAX_AGE_S = 30.0
# Partitions asked for in one round, over all leaders.
PARTITIONS_MAX = 50_000


class EndOffsetsFromLeaders:
    def __init__(
        self,
        broker_id: int,
        channels: ChannelPool,
        endpoint_of: Callable[[int], str | None],
        image: Callable[[], MetadataImage],
        partitions: Callable[[], Iterable[Any]],
        committed: Callable[[], Iterable[tuple[str, str, int, int]]],
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._broker_id = broker_id
        self._channels = channels
        self._endpoint_of = endpoint_of
        self._image = image
        self._partitions = partitions
        self._committed = committed
        self._clock_s = clock_s
        self._learned: dict[TopicPartitionKey, tuple[int, float]] = {}
        self._last_round_s = float("-inf")
        self._lock = asyncio.Lock()
        self._left_out_reported = 0

    def end_offsets(self) -> dict[TopicPartitionKey, int]:
        """Every end offset known now: the hosted replicas' own, then the leaders' answers."""
        remote = fresh_end_offsets(self._learned, self._clock_s(), MAX_AGE_S)
        return {**remote, **local_end_offsets(self._partitions())}

    async def refresh(self) -> None:
        """One round of ListOffsets to the leaders (skipped if one ran just before)."""
        async with self._lock:
            if self._clock_s() - self._last_round_s < REFRESH_MIN_INTERVAL_S:
                return
            image = self._image()
            hosted = {(p.tp.topic, p.tp.partition) for p in self._partitions()}
            plan, left_out = end_offsets_to_ask(
                list(self._committed()), hosted, _leaders_in(image), self._broker_id,
                PARTITIONS_MAX)
            if left_out and left_out != self._left_out_reported:
                log.warning("consumer lag: %d partitions over the %d asked per scrape get no "
                            "lag sample", left_out, PARTITIONS_MAX)
            self._left_out_reported = left_out
            await asyncio.gather(*(self._ask(leader, wanted) for leader, wanted in plan.items()))
            self._last_round_s = self._clock_s()
            now = self._last_round_s
            self._learned = {k: v for k, v in self._learned.items() if now - v[1] <= MAX_AGE_S}

    async def _ask(self, leader: int, wanted: list[TopicPartitionKey]) -> None:
        address = self._endpoint_of(leader)
        if address is None:  # fenced or unknown: its partitions wait for a new leader
            return
        request = broker_pb2.ListOffsetsRequest(partitions=[
            broker_pb2.ListOffsetsPartition(topic=topic, partition=partition,
                                            timestamp_ms=LIST_OFFSETS_LATEST)
            for topic, partition in wanted])
        try:
            reply = await broker_pb2_grpc.BrokerServiceStub(self._channels.get(address)) \
                .ListOffsets(request, timeout=CALL_TIMEOUT_S,
                             metadata=self._channels.auth.metadata(LIST_OFFSETS))
        except grpc.RpcError as exc:
            log.debug("consumer lag: ListOffsets to broker %d failed: %s", leader, exc)
            return
        now = self._clock_s()
        for answer in reply.partitions:
            if answer.error_code == 0 and answer.offset >= 0:
                self._learned[(answer.topic, answer.partition)] = (int(answer.offset), now)


def _leaders_in(image: MetadataImage) -> Callable[[str, int], int]:
    def leader_of(topic: str, partition: int) -> int:
        found = image.topics.get(topic)
        if found is None or not 0 <= partition < len(found.partitions):
            return -1
        return found.partitions[partition].leader

    return leader_of
