"""Hands out producer ids to idempotent producers from blocks the controller allocates.

A block of ids costs one metadata write, so creating producers stays cheap for the quorum.
Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from raftka.broker.errors import BrokerError
from raftka.proto.raftka.v1 import controller_pb2

Allocate = Callable[[], Awaitable[controller_pb2.AllocateProducerIdsResponse]]


class ProducerIdManager:
    def __init__(self, allocate: Allocate) -> None:
        self._allocate = allocate
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def next_id(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                response = await self._allocate()
                if response.error_code:
                    error = BrokerError(response.error_message)
                    error.code = response.error_code
                    raise error
                self._next = response.first_producer_id
                self._end = response.first_producer_id + response.count
            producer_id = self._next
            self._next += 1
            return producer_id
