"""The Kafka wire-protocol listener: unmodified Kafka clients talk to every broker here.

How it works: one asyncio server per broker (its own port). Each connection reads
size-prefixed requests and answers them in order (Kafka clients rely on that), calling the
same core the gRPC services use: the produce and fetch paths, the controller (forwarded), the
group coordinator. Each request is handled to the end of its side effects before the next
is read; a produce's wait for its acks goes on while the following requests are read, and
the responses are written in order (responder.py) — Kafka producers pipeline requests.
Produce with acks=0 gets no reply, as in Kafka. A frame that is too big or
cannot be parsed closes that connection (the broker carries on); an unknown API or version
gets Kafka's answer for it (ApiVersions always answers, at version 0 if need be).

An SSL or SASL_SSL listener does the TLS handshake on each accepted connection itself
(StreamWriter.start_tls) rather than leaving it to asyncio's server: a failed handshake,
above all a plaintext client on a TLS port, is then one warning line naming the peer and the
likely cause, and the connection closes; asyncio's own handshake failures are silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka import codec, zero_copy
from raftka.broker.kafka.api_table import API_NAMES, SUPPORTED, api_versions
from raftka.broker.kafka.codec import MalformedRequestError, UnsupportedVersionError
from raftka.broker.kafka.dispatch import HANDLERS
from raftka.broker.kafka.responder import (
    DeferredValues,
    OrderedResponder,
    PendingResponse,
    Response,
)
from raftka.broker.kafka.sasl_handlers import now_ms
from raftka.broker.kafka.sasl_handlers import step as sasl_step
from raftka.broker.kafka.session import ConnectionSession
from raftka.broker.kafka.zero_copy import SplicedResponse
from raftka.broker.listeners import ListenerEndpoint
from raftka.broker.sasl import SaslConnection, SaslFailure
from raftka.broker.tls_principal import kafka_connection_principal
from raftka.cluster.acl import ANONYMOUS

log = logging.getLogger("raftka.kafka")
_SIZE = struct.Struct(">i")
UNSUPPORTED_VERSION = 35
# A client gets this long to finish the TLS handshake before the connection is dropped (s).
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# OpenSSL's reasons when the first bytes are not a TLS record: a plaintext client.
_PLAINTEXT_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                      "RECORD_LAYER_FAILURE", "UNEXPECTED_RECORD", "PACKET_LENGTH_TOO_LONG")

# How long a connection whose authentication failed stays open after the refusal (s).
FAILED_AUTHENTICATION_CLOSE_DELAY_S = 0.1


class KafkaListener:
    def __init__(self, core: BrokerCore, endpoint: ListenerEndpoint,
                 request_max_bytes: int, ssl_context: ssl.SSLContext | None = None) -> None:
        if endpoint.uses_tls and ssl_context is None:
            raise ValueError(f"Kafka listener {endpoint.name} is {endpoint.security_protocol} "
                             "but was given no TLS context")
        self._core = core
        self._name = endpoint.name
        self._protocol = endpoint.security_protocol
        self._ssl_context = ssl_context if endpoint.uses_tls else None
        self._host = endpoint.bind_host
        self._port = endpoint.bind_port
        self._request_max_bytes = request_max_bytes
        # SASL_PLAINTEXT / SASL_SSL: every connection authenticates first (sasl_handlers.py).
        self._sasl = endpoint.uses_sasl
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port,
                                                  reuse_address=True)
        log.info("Kafka protocol listener %s (%s) on %s:%d", self._name, self._protocol,
                 self._host, self.port)

    async def stop(self) -> None:
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
        session = ConnectionSession(self._name, self._protocol, peer)
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        sasl = SaslConnection(self._core.security.max_reauth_ms,
                              peer=":".join(map(str, peer[:2])) if host else str(peer)) \
            if self._sasl else None
        responder: OrderedResponder | None = None
        try:
            if self._ssl_context is not None:
                if not await self._handshake(writer, peer):
                    return
                session.tls_principal = kafka_connection_principal(
                    writer.get_extra_info("ssl_object"))
            responder = OrderedResponder(writer, copy=self._ssl_context is not None, peer=peer)
            while True:
                try:
                    head = await reader.readexactly(4)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                (size,) = _SIZE.unpack(head)
                if not 0 < size <= self._request_max_bytes:
                    log.warning("closing %s: request of %d bytes (limit %d)", peer, size,
                                self._request_max_bytes)
                    return
                frame = await reader.readexactly(size)
                if sasl is not None and sasl.raw_tokens:
                    # After SaslHandshake v0: a bare token in, a bare token out.
                    try:
                        challenge, _ = sasl_step(self._core, sasl, frame, sasl.peer)
                    except SaslFailure:
                        return
                    await responder.put(_SIZE.pack(len(challenge)) + challenge)
                    continue
                # SASL's user on SASL_* listeners, else the certificate's, else anonymous.
                principal = (sasl.principal if sasl is not None else None) or \
                    session.tls_principal or ANONYMOUS
                # Handled to the end of its side effects here, in order; only a response
                # that waits (a produce's acks) is finished while the next is read.
                response = await self._answer(frame, session, principal, host, sasl)
                if response is not None:
                    await responder.put(response)
                    if not isinstance(response, PendingResponse):
                        # As before: a ready answer is written before the next request is
                        # read, so a client that never reads cannot make the broker hold
                        # hundreds of fetch responses (memory, file descriptors) for it.
                        await responder.drained()
                if sasl is not None and sasl.close_after_reply:
                    # Kafka's connection.failed.authentication.delay.ms: the client reads
                    # the refusal before the close, and a guesser gets fewer tries a second.
                    await responder.drained()
                    await asyncio.sleep(FAILED_AUTHENTICATION_CLOSE_DELAY_S)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except MalformedRequestError as exc:
            log.warning("closing %s: %s", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing %s after an unexpected error", peer)
        finally:
            self._connections.discard(task)
            if responder is not None:
                await responder.close()
            writer.close()

    def _request_done(self, api_key: int, started: float, error: str) -> None:
        self._core.metrics.request_done(API_NAMES[api_key], "kafka",
                                        time.perf_counter() - started, error)

    async def _finish(self, deferred: DeferredValues, api_key: int, api_version: int,
                      correlation_id: int, started: float) -> bytes | None:
        """A deferred response, encoded once its values are ready."""
        try:
            values = await deferred.values
        except BaseException:
            self._request_done(api_key, started, "EXCEPTION")
            raise
        self._request_done(api_key, started, "NONE")
        if values is None:
            return None
        return codec.encode_response(api_key, api_version, correlation_id, values)

    async def _handshake(self, writer: asyncio.StreamWriter, peer: Any) -> bool:
        """TLS on an accepted connection; False (after one warning) when it fails."""
        assert self._ssl_context is not None
        try:
            await writer.start_tls(self._ssl_context,
                                   ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
        except ssl.SSLError as exc:
            text = str(exc)
            if any(reason in text for reason in _PLAINTEXT_REASONS):
                log.warning("closing %s on %s listener %s: the client did not speak TLS "
                            "(a plaintext client on a TLS port?)", peer, self._protocol,
                            self._name)
            else:
                log.warning("closing %s on %s listener %s: TLS handshake failed: %s", peer,
                            self._protocol, self._name, exc.reason or text)
            return False
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("closing %s on %s listener %s: no TLS handshake (%s)", peer,
                        self._protocol, self._name, type(exc).__name__)
            return False
        return True

    async def _answer(self, frame: bytes, session: ConnectionSession,
                      principal: str = ANONYMOUS, host: str = "",
                      sasl: SaslConnection | None = None,
                      ) -> Response | PendingResponse | None:
        """The encoded response: one frame, or for fetches pieces of one with FileSlices
        (which the caller sends and closes); None when none is due (acks=0); a
        PendingResponse when the handler's side effects are done but its answer waits
        (a produce's acks=all)."""
        api_key, api_version, correlation_id = codec.peek_header(frame)
        if sasl is not None and not sasl.allows(api_key, now_ms()):
            state = "before authenticating" if sasl.principal is None else \
                "after its session expired (connections.max.reauth.ms) without " \
                "re-authenticating"
            raise MalformedRequestError(f"api {api_key} {state}")
        supported = SUPPORTED.get(api_key)
        if api_key == codec.API_VERSIONS_KEY and (
                supported is None or not supported[0] <= api_version <= supported[1]):
            # Kafka's rule: answer an unknown ApiVersions version at v0, with the error and
            # the versions this broker has, so the client can retry with one of them.
            return codec.encode_response(api_key, 0, correlation_id, {
                "error_code": UNSUPPORTED_VERSION, "api_keys": api_versions()})
        if supported is None or not supported[0] <= api_version <= supported[1]:
            raise MalformedRequestError(
                f"api {api_key} v{api_version} is not supported (see ApiVersions)")
        try:
            request = codec.decode_request(frame, listener=self._name, session=session,
                                           principal=principal, host=host, sasl=sasl)
        except UnsupportedVersionError as exc:
            raise MalformedRequestError(str(exc)) from exc
        started = time.perf_counter()
        try:
            values = await HANDLERS[api_key](self._core, request)
        except BaseException:
            self._request_done(api_key, started, "EXCEPTION")
            raise
        if isinstance(values, DeferredValues):
            return PendingResponse(asyncio.create_task(
                self._finish(values, api_key, api_version, correlation_id, started)))
        self._request_done(api_key, started, "NONE")
        if values is None:
            return None
        if not isinstance(values, SplicedResponse):
            return codec.encode_response(api_key, api_version, correlation_id, values)
        try:
            frame = codec.encode_response(api_key, api_version, correlation_id, values.values)
            return zero_copy.splice(frame, codec.response_is_flexible(api_key, api_version),
                                    values.slices)
        except BaseException:
            values.close()
            raise
