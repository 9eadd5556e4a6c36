"""Requests that wait for a partition to move: acks=all produce and long-poll fetch.

How it works: a waiter registers interest in one or more partitions and sleeps on an asyncio
future; whoever moves a partition (an append, a follower fetch that advances the high
watermark, a role change) calls `notify(tp)`, which wakes that partition's waiters; each waiter
then re-checks its own condition. Bounded: past `waiters_max` new waits are refused, so a flood
of long polls cannot grow memory without limit. Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable

from raftka.broker.errors import BrokerError
from raftka.proto.raftka.v1 import common_pb2


class TooManyWaitersError(BrokerError):
    code = common_pb2.ErrorCode.REQUEST_TIMED_OUT


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Purgatory:
    def __init__(self, waiters_max: int = 100_000) -> None:
        self._waiters: defaultdict[Hashable, set[asyncio.Future[None]]] = defaultdict(set)
        self._count = 0
        self.waiters_max = waiters_max

    @property
    def waiting(self) -> int:
        """Requests waiting now (Kafka's PurgatorySize)."""
        return self._count

    def notify(self, key: Hashable) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def notify_all(self) -> None:
        for key in list(self._waiters):
            self.notify(key)

    async def wait_until(
        self,
        keys: Iterable[Hashable],
        condition: Callable[[], bool],
        timeout_s: float,
        *,
        known_false: bool = False,
    ) -> bool:
        """Wait until `condition()` holds (re-checked whenever a key is notified) or the
        timeout passes; return the condition's final value. `known_false`: the caller has
        just seen the condition fail (in this turn of the event loop, so nothing can have
        changed): it is not checked before the first wait — a long poll's condition walks
        every partition of the fetch."""
        keys = list(keys)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        skip_check = known_false
        while skip_check or not condition():
            skip_check = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._count >= self.waiters_max:
                raise TooManyWaitersError(
                    f"{self._count} requests are already waiting; try again later"
                )
            future: asyncio.Future[None] = loop.create_future()
            for key in keys:
                self._waiters[key].add(future)
            self._count += 1
            # A timer that resolves the future, rather than wait_for(shield(...)): every
            # acks=all produce and every long poll waits here, and wait_for's extra task
            # machinery was a visible share of a broker's CPU per request.
            timer = loop.call_later(remaining, _expire, future)
            try:
                await future
            finally:
                timer.cancel()
                self._count -= 1
                for key in keys:
                    waiting = self._waiters.get(key)
                    if waiting is not None:
                        waiting.discard(future)
                        if not waiting:
                            del self._waiters[key]
        return True
