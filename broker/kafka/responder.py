"""A Kafka connection's responses, written in request order while later requests are read.

Why: Kafka clients pipeline requests on one connection (librdkafka keeps up to 1,000,000 in
flight without idempotence, 5 with) and expect the answers in order. The listener still
handles each request to the end of its side effects before reading the next — a produce's
records are appended, a commit is applied — so nothing happens out of order; only what a
request then *waits* for (a produce's acks=all replication) goes on while the next requests
are read. Answering each produce before reading the next one made a connection carry one
replication round trip per request: at 3,000 partitions a confluent-kafka producer's
requests queued for over 60 s and timed out (BENCHMARKS.md, "Kafka producers at 3,000 and
10,000 partitions").

How: a PendingResponse (a task that completes with the response) goes into a bounded
queue that one writer task per connection empties in order, waiting for each in turn. A
ready response is written at once by the reader when nothing is queued (the common case,
as before), else queued behind the pending ones; either way the listener lets it be
written before it reads the next request (drained()), so only pending answers pile up —
at most pending_max, then the reader waits for room — and a client that never reads holds
at most one ready response (and its file slices) in the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

from raftka.broker.kafka import zero_copy
from raftka.broker.log.file_slice import FileSlice

log = logging.getLogger("raftka.kafka")
Response = bytes | list[bytes | FileSlice]
# Requests of one connection whose responses may wait to be written (Kafka's
# queued.max.requests is 500 for the whole broker).
PENDING_RESPONSES_MAX = 500


class DeferredValues:
    """What a handler returns when its response waits on something that need not hold up
    the connection (a produce's acks): `values` completes with the response's values."""

    __slots__ = ("values",)

    def __init__(self, values: Awaitable[dict[str, Any] | None]) -> None:
        self.values = values


class PendingResponse:
    """A response still being worked out: `task` completes with it (None: no response)."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Response | None]) -> None:
        self.task = task


class ConnectionClosedError(ConnectionError):
    """The connection's writer stopped (the peer went away, or writing failed)."""


class OrderedResponder:
    def __init__(self, writer: asyncio.StreamWriter, *, copy: bool, peer: object,
                 pending_max: int = PENDING_RESPONSES_MAX) -> None:
        if pending_max < 1:
            raise ValueError(f"pending_max must be at least 1, got {pending_max}")
        self._writer = writer
        self._copy = copy  # TLS: no sendfile
        self._peer = peer
        self._queue: asyncio.Queue[Response | PendingResponse] = asyncio.Queue(pending_max)
        self._unwritten = 0  # queued, or taken by the writer and not yet written
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._run(), name=f"kafka-responses-{peer}")

    async def put(self, item: Response | PendingResponse) -> None:
        """The next response: written now if nothing is queued and it is ready, else
        queued (waits while pending_max are queued)."""
        if self._task.done():
            _discard(item)
            raise ConnectionClosedError("the connection's writer stopped")
        if self._unwritten == 0 and not isinstance(item, PendingResponse):
            await self._send(item)  # the writer task is idle: nothing to keep order with
            return
        self._unwritten += 1
        self._idle.clear()
        await self._queue.put(item)

    async def drained(self) -> None:
        """Wait until every queued response is written (or the writer stopped)."""
        if self._unwritten == 0:
            return
        idle = asyncio.ensure_future(self._idle.wait())
        await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
        idle.cancel()

    async def close(self) -> None:
        """Stop writing; what is still queued is dropped (pending work is cancelled; its
        appends, already done, stay)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        while not self._queue.empty():
            _discard(self._queue.get_nowait())

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                response = await item.task if isinstance(item, PendingResponse) else item
                if response is not None:
                    await self._send(response)
            except asyncio.CancelledError:
                _discard(item)
                raise
            except (ConnectionError, asyncio.IncompleteReadError):
                self._writer.close()  # the peer went away (or a sent slice changed)
                return
            except Exception:
                log.exception("closing %s after an unexpected error answering it", self._peer)
                self._writer.close()
                return
            finally:
                self._queue.task_done()
                self._unwritten -= 1
                if self._unwritten == 0:
                    self._idle.set()

    async def _send(self, response: Response) -> None:
        if isinstance(response, bytes):
            self._writer.write(response)
            await self._writer.drain()
            return
        try:
            await zero_copy.send(self._writer, response, copy=self._copy)
        finally:
            for piece in response:
                if isinstance(piece, FileSlice):
                    piece.close()


def _discard(item: Response | PendingResponse) -> None:
    """Release what an unsent response holds: a pending task, a response's file slices."""
    if isinstance(item, PendingResponse):
        item.task.cancel()
        return
    if isinstance(item, list):
        for piece in item:
            if isinstance(piece, FileSlice):
                piece.close()
