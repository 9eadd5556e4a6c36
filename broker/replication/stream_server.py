"""The leader's side of the replication stream (format: stream_wire.py): a plain asyncio TCP
listener that answers followers' fetches with the stored batches sent from the segment files.

Why a listener of its own: see stream_wire.py. What a fetch does is FetchPath.fetch_slices,
the same call the Kafka listener makes; this module only authenticates the connection,
frames the answer and sends each partition's FileSlice with sendfile (copied in chunks over
TLS, where the kernel cannot encrypt). Slices are closed whatever happens, also when the
follower goes away or the broker stops mid-send. A follower that asks for a fetch session
(fetch_session.py) gets one for the connection's lifetime.

A connection that fails the handshake, or sends anything the format does not allow, gets
one log line (throttled across connections, so a port scan cannot flood the log) and is
closed; nothing it asked for is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from raftka.broker.fetch_path import FetchPath, close_slices
from raftka.broker.internal_auth import InternalAuth
from raftka.broker.kafka.zero_copy import SENDFILE_MIN_BYTES, SliceChangedError, send
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.metrics import BrokerMetrics
from raftka.broker.replication import stream_wire as wire
from raftka.broker.replication.fetch_session import LeaderFetchSession, SessionError
from raftka.cluster.cluster_auth import ReportThrottle
from raftka.proto.raftka.v1 import broker_pb2

log = logging.getLogger("raftka.replication")
# An accepted connection must finish TLS and the replication handshake within this (s).
HANDSHAKE_TIMEOUT_S = 10.0
PROTOCOL = "replication"


class ReplicationListener:
    def __init__(
        self,
        fetch_path: FetchPath,
        auth: InternalAuth,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        metrics: BrokerMetrics | None = None,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._fetch_path = fetch_path
        self._auth = auth
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._metrics = metrics
        self._nonce = nonce
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopping = False
        # One log line per kind and interval: refused credentials, broken framing.
        self._refusals = {kind: ReportThrottle() for kind in ("credentials", "framing")}

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_address=True, ssl=self._ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self._ssl_context else None)
        log.info("replication listener on %s:%d%s", self._host, self.port,
                 " (TLS)" if self._ssl_context else "")

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            broker_id = await asyncio.wait_for(self._handshake(reader, writer, peer),
                                               HANDSHAKE_TIMEOUT_S)
            if broker_id is not None:
                await self._answer_fetches(broker_id, reader, writer)
        except wire.WireError as exc:
            self._refuse("framing", peer, str(exc))
        except TimeoutError:
            self._refuse("framing", peer, f"no handshake within {HANDSHAKE_TIMEOUT_S:g} s")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the follower went away (it reconnects), or broke the TLS session
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled it: end normally, since asyncio's stream protocol asks a
            # connection's finished task for its exception and logged an ERROR traceback
            # for every cancelled one at each clean shutdown
        except Exception:
            log.exception("replication listener: serving %s failed; closing", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _refuse(self, kind: str, peer: Any, why: str) -> None:
        left_out = self._refusals[kind].report(time.monotonic())
        if left_out is not None:
            more = f" ({left_out} more refused since the last report)" if left_out else ""
            log.warning("replication listener: closing %s: %s%s", peer, why, more)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         peer: Any) -> int | None:
        """The follower's broker id once it proved cluster membership; None if refused."""
        broker_id, follower_nonce = wire.parse_hello(await reader.readexactly(wire.HELLO.size))
        leader_nonce = self._nonce(wire.NONCE_BYTES)
        writer.write(wire.challenge(leader_nonce))
        proof = await reader.readexactly(wire.PROOF_BYTES)
        if not self._auth.handshake_proven(proof, follower_nonce, leader_nonce, broker_id):
            writer.write(wire.VERDICT.pack(wire.REFUSED))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            self._refuse("credentials", peer, f"handshake as broker {broker_id} without "
                         "valid cluster credentials (another secret?)")
            return None
        writer.write(wire.VERDICT.pack(wire.ACCEPTED))
        await writer.drain()
        return broker_id

    async def _answer_fetches(self, broker_id: int, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        copy = self._ssl_context is not None
        loop = asyncio.get_running_loop()
        metrics = self._metrics
        session: LeaderFetchSession | None = None  # from the first request that asks for one
        while True:
            length = wire.request_length(await reader.readexactly(wire.REQUEST_PREFIX.size))
            try:
                request = broker_pb2.FetchRequest.FromString(await reader.readexactly(length))
            except DecodeError:
                raise wire.WireError("a fetch request that is not a FetchRequest") from None
            if request.replica_id != broker_id:
                raise wire.WireError(
                    f"fetch for replica {request.replica_id} on a connection authenticated "
                    f"as broker {broker_id} (consumers fetch over gRPC or Kafka)")
            if request.session and session is None:
                session = LeaderFetchSession()
            elif session is not None and not request.session:
                raise wire.WireError("a fetch without a session on a connection that keeps one")
            started = loop.time()
            try:
                response, slices = await self._fetch_path.fetch_slices(request, session)
            except SessionError as exc:
                raise wire.WireError(str(exc)) from None
            try:
                await send(writer, _pieces(response, slices), copy=copy)
            finally:
                close_slices(slices)
            if metrics is not None:
                metrics.request_done("Fetch", PROTOCOL, loop.time() - started, "NONE")


def _pieces(response: broker_pb2.FetchResponse,
            slices: dict[int, FileSlice]) -> list[bytes | FileSlice]:
    """The response as written: head, then each slice (small ones read: cheaper than a
    sendfile call)."""
    order = sorted(index for index, found in slices.items() if found.length > 0)
    raw: list[bytes | FileSlice] = []
    for index in order:
        found = slices[index]
        if found.length >= SENDFILE_MIN_BYTES:
            raw.append(found)
            continue
        data = found.read()
        if len(data) != found.length:
            raise SliceChangedError(f"read {len(data)} of {found.length} bytes: the segment "
                                    "was truncated meanwhile")
        raw.append(data)
    head = wire.response_head(response.SerializeToString(),
                              [(index, slices[index].length) for index in order])
    return [head, *raw]
