"""A connection's answers go out in request order: ready ones at once when nothing waits,
pending ones (a produce waiting for its acks) in turn, ready ones queued behind them."""

from __future__ import annotations

import asyncio

import pytest

from raftka.broker.kafka.responder import (
    ConnectionClosedError,
    OrderedResponder,
    PendingResponse,
)


class FakeWriter:
    def __init__(self, fail_after: int | None = None) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self._fail_after = fail_after

    def write(self, data: bytes) -> None:
        if self._fail_after is not None and len(self.written) >= self._fail_after:
            raise ConnectionResetError("peer went away")
        self.written.append(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True


def test_answers_are_written_in_request_order_whatever_finishes_first():
    async def scenario() -> list[bytes]:
        writer = FakeWriter()
        responder = OrderedResponder(writer, copy=True, peer="p")  # type: ignore[arg-type]
        await responder.put(b"0")  # nothing waits: written at once
        assert writer.written == [b"0"]
        first_acks, second_acks = asyncio.Event(), asyncio.Event()

        async def acked(event: asyncio.Event, answer: bytes) -> bytes:
            await event.wait()
            return answer

        await responder.put(PendingResponse(asyncio.create_task(acked(first_acks, b"1"))))
        await responder.put(PendingResponse(asyncio.create_task(acked(second_acks, b"2"))))
        await responder.put(b"3")  # ready, but behind the pending ones
        second_acks.set()  # the later produce is acknowledged first
        await asyncio.sleep(0.01)
        assert writer.written == [b"0"]
        first_acks.set()
        await responder.drained()
        await responder.close()
        return writer.written

    assert asyncio.run(scenario()) == [b"0", b"1", b"2", b"3"]


def test_a_writer_that_fails_stops_the_connection_and_later_answers_are_refused():
    async def scenario() -> bool:
        writer = FakeWriter(fail_after=0)
        responder = OrderedResponder(writer, copy=True, peer="p")  # type: ignore[arg-type]

        async def ready() -> bytes:
            return b"x"

        await responder.put(PendingResponse(asyncio.create_task(ready())))
        await responder.drained()  # returns: the writer stopped
        with pytest.raises(ConnectionClosedError):
            await responder.put(b"y")
        await responder.close()
        return writer.closed

    assert asyncio.run(scenario())


def test_close_cancels_what_still_waits():
    async def scenario() -> bool:
        responder = OrderedResponder(FakeWriter(), copy=True, peer="p")  # type: ignore[arg-type]
        never = asyncio.create_task(asyncio.Event().wait())
        await responder.put(PendingResponse(never))  # type: ignore[arg-type]
        await responder.close()
        await asyncio.sleep(0)
        return never.cancelled()

    assert asyncio.run(scenario())
