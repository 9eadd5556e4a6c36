"""The follower's side of the replication stream (format: stream_wire.py): one connection
per leader, authenticated once and then reused for every fetch round.

`StreamConnection.fetch` sends a FetchRequest and returns the FetchResponse with each
partition's record_batches filled from the raw bytes that follow it, so the fetch loop
(fetcher.py) treats it exactly as a gRPC answer. Anything that goes wrong mid-exchange — an
error, a timeout, or the loop cancelling its long poll because a partition joined — leaves
the connection's framing unknown, so the connection is closed then; the next round
reconnects (after the fetch loop's backoff when it was an error).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from raftka.broker.internal_auth import InternalAuth
from raftka.broker.replication import stream_wire as wire
from raftka.broker.replication.fetch_session import FollowerFetchSession
from raftka.proto.raftka.v1 import broker_pb2

# The stream reader's buffer (bytes): big enough that a fetch of large batches is not read
# in many pause/resume steps of the transport.
READ_BUFFER_BYTES = 4 * 1024 * 1024
# How long opening the connection (TCP and TLS) may take (s): short, because a follower
# waits that long before falling back to gRPC when a firewall drops the port's packets.
CONNECT_TIMEOUT_S = 5.0
# How long the replication handshake may take once connected (s).
HANDSHAKE_TIMEOUT_S = 10.0


class StreamRefusedError(ConnectionError):
    """The leader refused this broker's handshake (its cluster secret differs)."""


class StreamUnreachableError(ConnectionError):
    """No connection to the leader's replication listener could be opened (refused, timed
    out, unroutable): the fetch loop tries gRPC for a while (fetcher.py)."""


@dataclass(frozen=True)
class StreamDialer:
    """What every connection from this broker needs: its id, its cluster credentials, the
    TLS context when the brokers talk TLS, and where each leader's listener is."""

    broker_id: int
    auth: InternalAuth
    endpoint_of: Callable[[int], tuple[str, int] | None]
    ssl_context: ssl.SSLContext | None = None
    nonce: Callable[[int], bytes] = os.urandom

    def connection(self, host: str, port: int) -> StreamConnection:
        return StreamConnection(self, host, port)


class StreamConnection:
    def __init__(self, dialer: StreamDialer, host: str, port: int) -> None:
        self.dialer = dialer
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # What this connection named so far (fetch_session.py): starts empty with each
        # connection, so the first request after a (re)connect names every partition.
        self.session = FollowerFetchSession()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        """Open the connection and prove cluster membership; StreamRefusedError if the
        leader refuses, WireError if the other end is no replication listener."""
        dialer = self.dialer
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=READ_BUFFER_BYTES, ssl=dialer.ssl_context,
                    server_hostname=self.host if dialer.ssl_context is not None else None)
        except (OSError, TimeoutError) as exc:
            raise StreamUnreachableError(
                f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
            ) from exc
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            try:
                follower_nonce = dialer.nonce(wire.NONCE_BYTES)
                writer.write(wire.hello(dialer.broker_id, follower_nonce))
                leader_nonce = wire.parse_challenge(
                    await reader.readexactly(wire.CHALLENGE.size))
                writer.write(dialer.auth.handshake_proof(follower_nonce, leader_nonce))
                if not wire.parse_verdict(await reader.readexactly(wire.VERDICT.size)):
                    raise StreamRefusedError(
                        f"{self.host}:{self.port} refused our replication handshake "
                        "(another cluster secret?)")
            except BaseException:
                writer.close()
                raise
        self.session.reset()
        self._reader, self._writer = reader, writer

    async def fetch(
        self,
        build: Callable[[FollowerFetchSession], broker_pb2.FetchRequest],
        timeout_s: float,
    ) -> broker_pb2.FetchResponse:
        """One exchange: connect if need be, `build` the request against this connection's
        fetch session (after connecting, so a new connection's first request names every
        partition), send it, read the answer."""
        if self._writer is None:
            await self.connect()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            request = build(self.session)  # a failure here too leaves the session unknown
            async with asyncio.timeout(timeout_s):
                writer.write(wire.request_frame(request.SerializeToString()))
                header_length, count = wire.response_sizes(
                    await reader.readexactly(wire.RESPONSE_PREFIX.size))
                head = await reader.readexactly(header_length + count * wire.TABLE_ENTRY.size)
                try:
                    response = broker_pb2.FetchResponse.FromString(head[:header_length])
                except DecodeError:
                    raise wire.WireError("a fetch response that is not a FetchResponse") from None
                parts = response.partitions
                for index, length in wire.parse_table(head, header_length, count, len(parts)):
                    parts[index].record_batches = await reader.readexactly(length)
                self.session.answered(response)
        except BaseException:
            self.close()  # mid-exchange: the framing is lost, the next round reconnects
            raise
        return response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self.session.reset()
