"""Proof of death, the I/O half: the controller's watches and probes, and the stream each broker
serves to be watched. What proves what is decided in cluster/liveness.py.

How it works: on the broker whose controller is active, `BrokerWatcher.reconcile` (every
controller tick) keeps one task per live broker. A task probes the broker's port: refused ->
the controller fences it at once (QuorumController.fence_proven_dead); answered -> it opens a
WatchBroker stream and sits on it; the stream breaking (the process died: its kernel closed
the connection) sends it straight back to probing. A silent or unreachable port is retried
with a bounded backoff and never fenced from here: silence is the session timeout's to judge.
A controller that takes over starts every task at once, so a broker that died with the old
controller is fenced after one probe instead of one session timeout.

Every broker serves the other side, `WatchServer`: the stream names this broker's incarnation
once, then stays open and silent until the broker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from raftka.broker.internal_auth import WATCH_BROKER, InternalAuth
from raftka.broker.tls import aio_channel
from raftka.cluster.image import MetadataImage
from raftka.cluster.liveness import (
    ProbeOutcome,
    WatchTarget,
    proves_death,
    watch_changes,
    watch_targets,
)
from raftka.cluster.probe import probe
from raftka.cluster.quorum import QuorumController
from raftka.proto.raftka.v1 import controller_pb2, controller_pb2_grpc

log = logging.getLogger("raftka.liveness")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    # A probe that has not connected by then is SILENT (not proof).
    probe_timeout_s: float = 1.0
    # Between probes of a broker that is silent, unreachable or whose stream will not open.
    retry_min_s: float = 0.05
    retry_max_s: float = 1.0
    # A stream that stayed open this long was healthy: when it breaks, probe at once.
    healthy_stream_s: float = 1.0

    def validate(self) -> WatchSettings:
        if not 0 < self.probe_timeout_s <= 10:
            raise ValueError("probe_timeout_s must be in (0, 10]")
        if not 0 < self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_min_s <= retry_max_s")
        if self.healthy_stream_s <= 0:
            raise ValueError("healthy_stream_s must be positive")
        return self


class BrokerWatcher:
    """The active controller's watch on every live broker (see the module docstring)."""

    def __init__(
        self,
        broker_id: int,
        quorum: QuorumController,
        auth: InternalAuth,
        settings: WatchSettings | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._credentials = credentials  # TLS to the watched brokers; None: plaintext
        self._broker_id = broker_id
        self._quorum = quorum
        self._auth = auth
        self._settings = (settings or WatchSettings()).validate()
        self._watching: dict[int, WatchTarget] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def reconcile(self, image: MetadataImage) -> None:
        """Watch exactly the live brokers of `image` while this controller is active."""
        wanted = watch_targets(image, self._broker_id) if self._quorum.active else {}
        stop, start = watch_changes(self._watching, wanted)
        for broker_id in stop:
            self._watching.pop(broker_id, None)
            task = self._tasks.pop(broker_id, None)
            if task is not None:
                task.cancel()
        for target in start:
            self._watching[target.broker_id] = target
            self._tasks[target.broker_id] = asyncio.create_task(
                self._watch(target), name=f"watch-broker-{target.broker_id}"
            )

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._watching.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _watch(self, target: WatchTarget) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        backoff = settings.retry_min_s
        last_stream_failed = False
        while True:
            outcome = await probe(target.host, target.port, settings.probe_timeout_s)
            if proves_death(outcome):
                proof = f"its process is gone ({target.host}:{target.port} refused a connection)"
                if await self._quorum.fence_proven_dead(
                    target.broker_id, target.broker_epoch, proof
                ):
                    return
            elif outcome is ProbeOutcome.ANSWERED:
                if last_stream_failed:  # do not spin on a stream that will not stay open
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, settings.retry_max_s)
                opened = loop.time()
                same = await self._hold(target)
                last_stream_failed = not same or loop.time() - opened < settings.healthy_stream_s
                if not last_stream_failed:
                    backoff = settings.retry_min_s
                continue  # the stream ended: probe at once
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max_s)

    async def _hold(self, target: WatchTarget) -> bool:
        """Sit on the broker's watch stream until it ends or breaks. False if another
        process answered (not the incarnation watched): it registers itself, and that
        registration replaces this one."""
        stub = controller_pb2_grpc.ControllerServiceStub(self._channel(target))
        call = stub.WatchBroker(
            controller_pb2.WatchBrokerRequest(broker_id=target.broker_id),
            metadata=self._auth.metadata(WATCH_BROKER),
        )
        try:
            async for event in call:
                if (event.broker_id, event.incarnation_id) != (
                    target.broker_id, target.incarnation_id,
                ):
                    return False
        except grpc.aio.AioRpcError as exc:
            log.debug("watch of broker %d ended: %s", target.broker_id, exc.code().name)
        finally:
            call.cancel()
        return True

    def _channel(self, target: WatchTarget) -> grpc.aio.Channel:
        address = f"{target.host}:{target.port}"
        channel = self._channels.get(address)
        if channel is None:
            # Reconnect quickly: after a break the next attempt is a fresh look, and the
            # probe (not this channel) is what decides.
            channel = self._channels[address] = aio_channel(
                address,
                self._credentials,
                [
                    ("grpc.initial_reconnect_backoff_ms", 50),
                    ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        return channel


# Watch streams one broker serves at once: one per controller that watches it, so a few;
# more are refused (RESOURCE_EXHAUSTED) rather than held open.
WATCHES_SERVED_MAX = 64


class WatchServer:
    """The watched side: every broker serves WatchBroker with its own identity."""

    def __init__(
        self, broker_id: int, incarnation_id: str, served_max: int = WATCHES_SERVED_MAX
    ) -> None:
        self._broker_id = broker_id
        self._incarnation_id = incarnation_id
        self._served_max = served_max
        self._served = 0
        self._closed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self._served >= self._served_max

    async def watch(
        self, request: controller_pb2.WatchBrokerRequest
    ) -> AsyncIterator[controller_pb2.WatchBrokerEvent]:
        self._served += 1
        try:
            yield controller_pb2.WatchBrokerEvent(
                broker_id=self._broker_id, incarnation_id=self._incarnation_id
            )
            if request.broker_id == self._broker_id:
                await self._closed.wait()
        finally:
            self._served -= 1

    def close(self) -> None:
        """The broker is stopping: end every stream (the watchers then probe)."""
        self._closed.set()
