"""Followers copy their leaders' logs: one fetch loop per leader broker (Kafka's pull model).

How it works: a loop asks its leader, in one Fetch, for every partition this broker follows
there, each from its log end offset and with the epoch of its last batch. The leader answers
with stored batches (appended here unchanged, on the writer thread), its high watermark, or
word that the follower's log diverged — then the follower truncates (follower_state.py) and
asks again. The leader long-polls, so an idle loop costs one request per `max_wait_ms`, and
new data flows as soon as the leader has it. Failures back off for a bounded time; changes
of leader arrive through metadata and move partitions between loops.

A partition added to a loop (this broker must now follow it there, or at a new leader epoch)
cuts the loop's in-flight long poll short: the poll is cancelled and the next round asks for
it at once, instead of up to FETCH_WAIT_MAX_MS later, which after a failover is time the new
leader's acks=all writes wait for this follower. Only the wait on the RPC is cancelled, never
the appending of a reply that has arrived.

Transport: a leader that advertises a replication listener is fetched from over the
replication stream (stream_client.py: one reused, authenticated TCP connection, batches sent
by sendfile) when this broker's replication.transport is "stream"; otherwise over gRPC
BrokerService.Fetch. Both give the same FetchResponse, so everything below is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from raftka.broker.controller_client import ChannelPool
from raftka.broker.internal_auth import FETCH
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.replication import stream_wire
from raftka.broker.replication.fetch_session import FollowerFetchSession
from raftka.broker.replication.follower_state import StartOver, TruncateTo, resolve_divergence
from raftka.broker.replication.stream_client import (
    StreamConnection,
    StreamDialer,
    StreamRefusedError,
    StreamUnreachableError,
)
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2

log = logging.getLogger("raftka.replication")
Code = common_pb2.ErrorCode
FETCH_WAIT_MAX_MS = 500
PARTITION_FETCH_BYTES_MAX = 1024 * 1024
FETCH_BYTES_MAX = 16 * 1024 * 1024
# How long one fetch may take, over its long poll.
FETCH_TIMEOUT_S = FETCH_WAIT_MAX_MS / 1000 + 10
# A leader whose replication listener cannot be reached (a firewall that lets only its gRPC
# port through, say; or a leader restarting) is fetched from over gRPC for this long before
# the stream is tried again.
STREAM_RETRY_AFTER_S = 15.0
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0
_WAIT_FOR_METADATA = {
    Code.NOT_LEADER_OR_FOLLOWER,
    Code.FENCED_LEADER_EPOCH,
    Code.UNKNOWN_LEADER_EPOCH,
    Code.UNKNOWN_TOPIC_OR_PARTITION,
    Code.LEADER_NOT_AVAILABLE,
}

OnWriter = Callable[..., Awaitable[Any]]
# (size_bytes, function, *args): LogWriter.run_small
OnWriterSmall = Callable[..., Awaitable[Any]]
# Read once: each `Code.X` is a Python-level lookup in protobuf's enum wrapper, and the
# round's loop over every partition's reply made it 2.5% of a broker's samples at 3,000
# partitions.
_NONE = Code.NONE


class LeaderFetcher:
    def __init__(self, manager: FetcherManager, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.partitions: dict[TopicPartition, Partition] = {}
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._added = asyncio.Event()  # a partition joined since this round's request
        self._call: asyncio.Future[broker_pb2.FetchResponse] | None = None  # the RPC awaited
        self._refused = False  # the leader refused our credentials (and we said so)
        self._stream: StreamConnection | None = None  # to the leader's replication listener
        self._stream_retry_at = 0.0  # loop time; before it, fetch over gRPC (unreachable)
        self._grpc_meanwhile = False  # gRPC fetches worked while the stream was unreachable
        self._fallback_said = False  # and a warning said so

    def add(self, partition: Partition) -> None:
        self.partitions[partition.tp] = partition
        self._changed.set()
        self._added.set()
        call = self._call
        if call is not None and not call.done():
            call.cancel()  # the round's long poll is cut short (see _unless_added)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"fetch-from-{self.leader_id}")

    def remove(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)
        self._changed.set()

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def _run(self) -> None:
        try:
            await self._rounds()
        finally:
            self.close_stream()

    async def _rounds(self) -> None:
        backoff = BACKOFF_S
        while self.partitions:
            self._changed.clear()
            try:
                healthy = await self._fetch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fetching from broker %d failed", self.leader_id)
                healthy = False
            if healthy:  # the leader's long poll paces a healthy loop; no sleeping here
                backoff = BACKOFF_S
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _fetch_once(self) -> bool:
        """One Fetch round; False when the leader could not be asked or some partition needs
        fresher metadata (then the loop backs off a little)."""
        manager = self.manager
        target = manager.endpoint_of(self.leader_id)
        if target is None:
            return False
        self._added.clear()
        asked = dict(self.partitions)
        epochs = {tp: p.leader_epoch for tp, p in asked.items()}
        stream = self._stream_to(self.leader_id)
        try:
            if stream is not None:
                call: Awaitable[broker_pb2.FetchResponse] = stream.fetch(
                    lambda session: self._request(asked, session), FETCH_TIMEOUT_S)
            else:
                stub = broker_pb2_grpc.BrokerServiceStub(manager.channels.get(target))
                call = stub.Fetch(self._request(asked, None), timeout=FETCH_TIMEOUT_S,
                                  metadata=manager.channels.auth.metadata(FETCH))
            response = await self._unless_added(call)
            if self._stream_retry_at:
                self._note_fallback(stream is not None)
            if response is None:
                return True  # a partition joined: ask again at once, with it
        except StreamUnreachableError as exc:
            # Also what a leader that died or restarts looks like: said only when it stays
            # so across a retry while gRPC works (a blocked port).
            log.debug("broker %d: %s", self.leader_id, exc)
            if self._grpc_meanwhile and not self._fallback_said:
                self._fallback_said = True
                log.warning("broker %d: its replication listener is unreachable (%s) but gRPC "
                            "works; fetching over gRPC, trying the stream every %g s",
                            self.leader_id, exc, STREAM_RETRY_AFTER_S)
            self._stream_retry_at = asyncio.get_running_loop().time() + STREAM_RETRY_AFTER_S
            self.close_stream()
            return False  # after the backoff, this leader is asked over gRPC
        except StreamRefusedError as exc:
            if not self._refused:
                self._refused = True
                log.warning("broker %d refused our replica fetch: %s", self.leader_id, exc)
            return False
        except (OSError, EOFError, TimeoutError, stream_wire.WireError) as exc:
            # OSError covers refused connections and resets; EOFError a short read.
            log.debug("stream fetch from broker %d: %s: %s", self.leader_id,
                      type(exc).__name__, exc)
            return False
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and not self._refused:
                self._refused = True  # said once, until a fetch goes through again
                log.warning("broker %d refused our replica fetch: %s", self.leader_id,
                            exc.details())
            else:
                log.debug("fetch from broker %d: %s", self.leader_id, exc.code().name)
            return False
        self._refused = False
        healthy = True
        appends: list[tuple[Partition, Any]] = []
        absorbed: list[TopicPartition] = []
        try:
            for reply in response.partitions:
                tp = TopicPartition(reply.topic, reply.partition)
                partition = self.partitions.get(tp)
                if partition is None or partition.leader_epoch != epochs.get(tp):
                    continue  # moved or changed epoch while the fetch was out (named again)
                if reply.error_code == _NONE and not reply.diverged:
                    if _reply_changes_something(partition, reply):
                        appends.append((partition, reply))
                else:
                    absorbed.append(tp)
                    healthy &= await self._absorb(partition, reply)
            if appends:
                await self._append_all(appends)
        except BaseException:
            # Some answer may be half taken: a new connection (and fetch session) names
            # every partition again, so nothing rests on what the leader thinks it told us.
            if stream is not None:
                stream.close()
            raise
        if stream is not None and absorbed:
            # Named again, so the leader answers them once they are fine even if nothing
            # else changed (fetch_session.py).
            stream.session.ask_again(absorbed)
        return healthy

    def _request(self, asked: dict[TopicPartition, Partition],
                 session: FollowerFetchSession | None) -> broker_pb2.FetchRequest:
        """This round's FetchRequest for `asked` (every partition followed on this leader):
        every one of them, or, on a stream with a fetch session, those whose position changed
        since the connection last named them and the ones no longer followed."""
        manager = self.manager
        positions = {tp: (p.log_end_offset, p.leader_epoch, p.log.last_batch_epoch())
                     for tp, p in asked.items()}
        forgotten: list[TopicPartition]
        if session is None:
            named, forgotten = list(positions), []
        else:
            named, forgotten = session.changes(positions)
        return broker_pb2.FetchRequest(
            replica_id=manager.broker_id,
            replica_broker_epoch=manager.broker_epoch(),
            max_wait_ms=FETCH_WAIT_MAX_MS,
            min_bytes=1,
            max_bytes=FETCH_BYTES_MAX,
            session=session is not None,
            forgotten=[broker_pb2.FetchForgotten(topic=tp.topic, partition=tp.partition)
                       for tp in forgotten],
            partitions=[
                broker_pb2.FetchPartition(
                    topic=tp.topic,
                    partition=tp.partition,
                    fetch_offset=positions[tp][0],
                    partition_max_bytes=PARTITION_FETCH_BYTES_MAX,
                    current_leader_epoch=positions[tp][1],
                    last_fetched_epoch=positions[tp][2],
                )
                for tp in named
            ],
        )

    def _note_fallback(self, streamed: bool) -> None:
        """A fetch went through while the stream was (or had been) unreachable."""
        if not streamed:
            self._grpc_meanwhile = True
            return
        if self._fallback_said:
            log.info("broker %d: fetching over the replication stream again", self.leader_id)
        self._stream_retry_at = 0.0
        self._grpc_meanwhile = self._fallback_said = False

    def _stream_to(self, leader_id: int) -> StreamConnection | None:
        """The connection to the leader's replication listener (made on first use, new
        when its address changed); None when this fetch goes over gRPC."""
        dialer = self.manager.streams
        where = dialer.endpoint_of(leader_id) if dialer is not None else None
        if (where is not None and self._stream_retry_at
                and asyncio.get_running_loop().time() < self._stream_retry_at):
            where = None  # unreachable a moment ago: gRPC until the retry time
        stream = self._stream
        if stream is not None and (where is None or (stream.host, stream.port) != where):
            self.close_stream()
            stream = None
        if stream is None and where is not None and dialer is not None:
            stream = self._stream = dialer.connection(*where)
        return stream

    async def _unless_added(
        self, call: Awaitable[broker_pb2.FetchResponse]
    ) -> broker_pb2.FetchResponse | None:
        """The reply of `call`, or None if a partition was added first (`add` cancels the
        call; only the call: a reply that arrived is appended). One future per round, no
        asyncio.wait: this runs for every fetch, and the wait's extra futures showed in a
        follower's CPU per round."""
        reply = asyncio.ensure_future(call)
        if self._added.is_set():
            reply.cancel()
        self._call = reply
        try:
            return await reply
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the loop itself is being stopped
            return None
        finally:
            self._call = None

    async def _append_all(self, appends: list[tuple[Partition, Any]]) -> None:
        """Append every partition's batches (and take the leader's high watermark) in one
        job on the writer thread, then sync those flush.messages says to, in one more.

        One job per reply, not per partition: a round with data for 3,333 partitions (10,000
        partitions on 3 brokers) made 3,333 writer round trips, one after another, each a
        thread hand-off, so rounds took seconds and followers fell out of the ISR under
        load. The same steps in the same order as before; a partition that fails does not
        stop the others, and its error is raised once all of them are done."""
        on_writer = self.manager.on_writer
        now_ms = self.manager.clock_ms()
        if all(partition.appends_keep_the_epoch() for partition, _ in appends):
            size = sum(len(reply.record_batches) for _, reply in appends)
            outcomes = await self.manager.on_writer_small(size, _append_each, appends, now_ms)
        else:
            outcomes = await on_writer(_append_each, appends, now_ms)
        failure: BaseException | None = None
        due: list[Partition] = []
        for (partition, _reply), outcome in zip(appends, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                continue
            if partition.log.flush_due_by_count():
                due.append(partition)
        if due:
            # Synced before the next fetch reports these positions to the leader, so the
            # high watermark (and acks=all) only passes records on disk everywhere.
            flush_failure = await on_writer(_flush_each, due, self.manager.clock_ms())
            failure = failure or flush_failure
        for (partition, reply), outcome in zip(appends, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                continue
            if outcome is not None:
                self.manager.notify(partition.tp)
            if reply.log_start_offset > partition.log_start_offset:  # leader trimmed its log
                await on_writer(partition.log.advance_start_offset, reply.log_start_offset)
        if failure is not None:
            raise failure

    async def _absorb(self, partition: Partition, reply: Any) -> bool:
        """Apply one partition's divergence or error reply (records go through
        _append_all); False when it was an error to wait out."""
        if reply.error_code == Code.NONE and reply.diverged:
            decision = resolve_divergence(
                reply.diverging_epoch,
                reply.diverging_end_offset,
                partition.log.epochs,
                partition.log_end_offset,
                reply.log_start_offset,
            )
            return await self._cut(partition, decision, "diverged from the leader")
        if reply.error_code == Code.OFFSET_OUT_OF_RANGE:
            if partition.log_end_offset < reply.log_start_offset:
                return await self._cut(
                    partition,
                    StartOver(reply.log_start_offset),
                    "fell behind the leader's log start",
                )
            return await self._cut(
                partition, TruncateTo(reply.log_end_offset), "is ahead of the leader"
            )
        if reply.error_code not in _WAIT_FOR_METADATA:
            log.warning(
                "%s: fetch from broker %d failed: %s %s",
                partition.tp,
                self.leader_id,
                Code.Name(reply.error_code),
                reply.error_message,
            )
        return False

    async def _cut(self, partition: Partition, decision: TruncateTo | StartOver, why: str) -> bool:
        on_writer = self.manager.on_writer
        if isinstance(decision, StartOver):
            log.warning("%s %s: starting over at offset %d", partition.tp, why, decision.offset)
            await on_writer(partition.start_over_at, decision.offset)
            return True
        before = (partition.log_end_offset, partition.log.last_batch_epoch())
        end = await on_writer(partition.truncate_to, decision.offset)
        after = (end, partition.log.last_batch_epoch())
        if after == before:
            # Nothing moved: back off rather than spin (the next fetch asks again).
            log.warning(
                "%s %s, but truncating to %d changed nothing", partition.tp, why, decision.offset
            )
            return False
        log.info("%s %s: truncated from %d to %d", partition.tp, why, before[0], end)
        return True


def _reply_changes_something(partition: Partition, reply: Any) -> bool:
    """Whether a partition's error-free reply has anything to apply: records, a high
    watermark that moves this log's, or a later log start. Most partitions of a round have
    none (one fetch names every partition followed there), and skipping them spares the
    writer thread a locked no-op each — and a round with nothing at all its thread hop."""
    if reply.record_batches or reply.log_start_offset > partition.log_start_offset:
        return True
    log = partition.log
    return bool(log.clamped_high_watermark(reply.high_watermark) != log.high_watermark)


def _append_each(appends: list[tuple[Partition, Any]], now_ms: int) -> list[Any]:
    """Writer thread (or the event loop while it is idle: log_writer.py): each partition's
    append_as_follower result, or the exception it raised (so one partition's failure
    leaves the others appended)."""
    outcomes: list[Any] = []
    for partition, reply in appends:
        try:
            outcomes.append(
                partition.append_as_follower(reply.record_batches, reply.high_watermark, now_ms))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _flush_each(partitions: list[Partition], now_ms: int) -> BaseException | None:
    """Writer thread: flush every partition's log; the first error, after trying them all."""
    failure: BaseException | None = None
    for partition in partitions:
        try:
            partition.log.flush(now_ms)
        except Exception as exc:
            failure = failure or exc
    return failure


class FetcherManager:
    def __init__(
        self,
        broker_id: int,
        channels: ChannelPool,
        endpoint_of: Callable[[int], str | None],
        on_writer: OnWriter,
        clock_ms: Callable[[], int],
        broker_epoch: Callable[[], int],
        notify: Callable[[TopicPartition], None],
        streams: StreamDialer | None = None,
        on_writer_small: OnWriterSmall | None = None,
    ) -> None:
        """`streams`: how to reach leaders' replication listeners; None fetches over gRPC
        only (replication.transport=grpc). `on_writer_small`: LogWriter.run_small, for
        appends that may run on the event loop; None runs them as `on_writer` does."""
        self.broker_id = broker_id
        self.streams = streams
        self.channels = channels
        self.endpoint_of = endpoint_of
        self.on_writer = on_writer
        self.on_writer_small: OnWriterSmall = (
            on_writer_small if on_writer_small is not None
            else lambda _size, function, *args: on_writer(function, *args))
        self.clock_ms = clock_ms
        self.broker_epoch = broker_epoch
        self.notify = notify
        self._fetchers: dict[int, LeaderFetcher] = {}
        self._leader_of: dict[TopicPartition, int] = {}

    def follow(self, partition: Partition, leader_id: int) -> None:
        """Fetch `partition` from `leader_id` (moving it off any other leader's loop)."""
        self.unfollow(partition.tp)
        if leader_id < 0 or leader_id == self.broker_id:
            return
        fetcher = self._fetchers.get(leader_id)
        if fetcher is None:
            fetcher = self._fetchers[leader_id] = LeaderFetcher(self, leader_id)
        fetcher.add(partition)
        self._leader_of[partition.tp] = leader_id

    def unfollow(self, tp: TopicPartition) -> None:
        leader_id = self._leader_of.pop(tp, None)
        if leader_id is not None and leader_id in self._fetchers:
            self._fetchers[leader_id].remove(tp)

    def following(self) -> dict[TopicPartition, int]:
        return dict(self._leader_of)

    async def close(self) -> None:
        tasks = [f.task for f in self._fetchers.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for fetcher in self._fetchers.values():
            fetcher.close_stream()
        self._fetchers.clear()
        self._leader_of.clear()
