"""Prometheus metrics of one broker, served at `/metrics` on their own port (metrics_listen).

How it works: the paths count what passes through them (records and bytes in and out per
topic, requests and their latency per API, ISR shrinks and expands) on counters and
histograms of the official prometheus_client; what is a state rather than an event (under-
replicated and offline partitions, the active controller, purgatory size, the Raft term,
commit index and leader) is read at scrape time by a collector, from callables the server
wires in, so no gauge goes stale. Every broker has its own registry (the tests run several
in one process), with the process and platform collectors on it.

Names follow Kafka's JMX metrics as Prometheus' jmx_exporter spells them
(`kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions` ->
`kafka_server_replicamanager_underreplicatedpartitions`); what Kafka has no name for is
`raftka_*`. Scrapes run on the event loop (MetricsServer below), so the collector reads the
broker's state without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftka.broker.groups.lag import consumer_group_lag, local_end_offsets

log = logging.getLogger("raftka.metrics")

# Request latency buckets (s): from a cached metadata answer to a long-polled fetch.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# A scrape request's head (request line and headers) larger than this is refused (bytes).
REQUEST_HEAD_MAX_BYTES = 8 * 1024
# How long a scraper may take to send its request head (s).
REQUEST_HEAD_TIMEOUT_S = 5.0
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class BrokerState:
    """What the scrape-time collector reads; each callable answers for this moment."""

    broker_id: int
    partitions: Callable[[], Iterable[Any]]  # hosted Partition objects (broker/partition.py)
    image: Callable[[], Any]  # the applied MetadataImage
    is_controller: Callable[[], bool]
    purgatory_size: Callable[[], int]
    raft_status: Callable[[], dict[str, object]]
    fenced: Callable[[], bool]
    # (group, topic, partition, committed offset) of the groups this broker coordinates.
    committed_offsets: Callable[[], Iterable[tuple[str, str, int, int]]] = lambda: ()
    # (topic, partition) -> end offset, also of partitions not hosted here (learned from
    # their leaders: broker/groups/end_offsets.py); None: the hosted replicas' only.
    end_offsets: Callable[[], Mapping[tuple[str, int], int]] | None = None
    # The controller's AlterPartition counts on this node (cluster/quorum.py
    # AlterPartitionStats); None where there is no controller.
    alter_partition_stats: Callable[[], Any] = lambda: None


class BrokerMetrics:
    """Counters the request paths move; `registry` is what /metrics serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.messages_in = Counter(
            "kafka_server_brokertopicmetrics_messagesin", "Records appended as leader",
            ["topic"], registry=registry,
        )
        self.bytes_in = Counter(
            "kafka_server_brokertopicmetrics_bytesin", "Record batch bytes appended as leader",
            ["topic"], registry=registry,
        )
        self.bytes_out = Counter(
            "kafka_server_brokertopicmetrics_bytesout",
            "Record batch bytes served to consumers", ["topic"], registry=registry,
        )
        self.messages_out = Counter(
            "raftka_brokertopicmetrics_messagesout",
            "Offsets served to consumers, every fetch path (gRPC, Kafka listener), counted "
            "from the fetch offset to the end of the batches sent; Kafka has no such metric",
            ["topic"], registry=registry,
        )
        self.replication_bytes_out = Counter(
            "kafka_server_brokertopicmetrics_replicationbytesout",
            "Record batch bytes served to follower replicas", ["topic"], registry=registry,
        )
        self.failed_produce = Counter(
            "kafka_server_brokertopicmetrics_failedproducerequests",
            "Partition produce requests answered with an error", ["topic"], registry=registry,
        )
        self.isr_shrinks = Counter(
            "kafka_server_replicamanager_isrshrinks",
            "ISR shrinks this broker proposed as leader and the controller accepted",
            registry=registry,
        )
        self.isr_expands = Counter(
            "kafka_server_replicamanager_isrexpands",
            "ISR expands this broker proposed as leader and the controller accepted",
            registry=registry,
        )
        self.requests = Counter(
            "kafka_network_requestmetrics_requests", "Requests answered, by API and protocol",
            ["request", "protocol", "error"], registry=registry,
        )
        self.request_seconds = Histogram(
            "kafka_network_requestmetrics_totaltime_seconds",
            "Time from request received to response ready, by API and protocol",
            ["request", "protocol"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )

        # Label children by their label values: prometheus_client's labels() validates and
        # locks on every call, and the paths call it several times per produce round.
        # Nothing is ever removed from these metrics, so neither is a child from here.
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._in_children: dict[str, tuple[Any, Any]] = {}
        self._out_children: dict[tuple[str, bool], Any] = {}

    def watch(self, state: BrokerState) -> None:
        """Read `state` at every scrape (once; the server calls it after wiring)."""
        self.registry.register(_StateCollector(state))

    def watch_gc(self, pauses: Collector) -> None:
        """Serve the process's garbage-collector pauses too (broker/gc_pauses.py; once)."""
        self.registry.register(pauses)

    # ------------------------------------------------------------------ the paths
    def appended(self, topic: str, records: int, size_bytes: int) -> None:
        children = self._in_children.get(topic)
        if children is None:
            children = (self.messages_in.labels(topic), self.bytes_in.labels(topic))
            self._in_children[topic] = children
        children[0].inc(records)
        children[1].inc(size_bytes)

    def served(self, topic: str, size_bytes: int, follower: bool) -> None:
        if size_bytes <= 0:
            return
        child = self._out_children.get((topic, follower))
        if child is None:
            child = (self.replication_bytes_out if follower else self.bytes_out).labels(topic)
            self._out_children[(topic, follower)] = child
        child.inc(size_bytes)

    def request_done(self, request: str, protocol: str, seconds: float, error: str) -> None:
        key = (request, protocol, error)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(request, protocol, error),
                        self.request_seconds.labels(request, protocol))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def isr_changed(self, old: Iterable[int], new: Iterable[int]) -> None:
        before, after = set(old), set(new)
        if after < before:
            self.isr_shrinks.inc()
        elif after > before:
            self.isr_expands.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: BrokerState) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return []  # collected fresh at every scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        state = self._state
        partitions = list(state.partitions())
        leading = [p for p in partitions if p.is_leader]
        under_replicated = sum(1 for p in leading if len(p.isr) < len(p.replicas))
        under_min_isr = sum(1 for p in leading if len(p.isr) < p.min_insync_replicas)
        yield _gauge("kafka_server_replicamanager_partitioncount",
                     "Partitions hosted here", len(partitions))
        yield _gauge("kafka_server_replicamanager_leadercount",
                     "Partitions led here", len(leading))
        yield _gauge("kafka_server_replicamanager_underreplicatedpartitions",
                     "Partitions led here whose ISR is smaller than their replicas",
                     under_replicated)
        yield _gauge("kafka_cluster_partition_underminisr",
                     "Partitions led here whose ISR is below min.insync.replicas",
                     under_min_isr)
        controller = state.is_controller()
        yield _gauge("kafka_controller_kafkacontroller_activecontrollercount",
                     "1 on the broker that leads the metadata quorum", int(controller))
        image = state.image()
        offline = 0
        if controller:  # as in Kafka, only the active controller reports it
            offline = sum(
                1 for topic in image.topics.values() for p in topic.partitions if p.leader < 0
            )
        yield _gauge("kafka_controller_kafkacontroller_offlinepartitionscount",
                     "Partitions without a leader (active controller only)", offline)
        fenced = sum(1 for b in image.brokers.values() if b.fenced)
        yield _gauge("kafka_controller_kafkacontroller_fencedbrokercount",
                     "Registered brokers the controller has fenced", fenced)
        yield _gauge("kafka_controller_kafkacontroller_activebrokercount",
                     "Registered brokers that are unfenced", len(image.brokers) - fenced)
        yield _gauge("kafka_server_delayedoperationpurgatory_purgatorysize",
                     "Requests waiting in purgatory (acks=all produce, long-poll fetch)",
                     state.purgatory_size())
        yield _gauge("raftka_broker_fenced", "1 while this broker is fenced", int(state.fenced()))
        yield _gauge("kafka_server_raft_metrics_current_metadata_offset",
                     "Offset of the metadata image applied here", image.offset)
        status = state.raft_status()
        for key, name, doc in (
            ("term", "kafka_server_raft_metrics_current_epoch", "Raft term"),
            ("commit_index", "kafka_server_raft_metrics_high_watermark", "Raft commit index"),
            ("last_applied", "raftka_raft_last_applied", "Raft entries applied here"),
            ("leader_id", "kafka_server_raft_metrics_current_leader",
             "Broker id of the Raft leader (-1: none known)"),
        ):
            value = status.get(key)
            yield _gauge(name, doc, value if isinstance(value, int) else -1)
        stats = state.alter_partition_stats()
        if stats is not None:
            for name, doc, value in (
                ("raftka_controller_alter_partition_requests",
                 "AlterPartition requests this node answered as controller", stats.requests),
                ("raftka_controller_alter_partition_partitions",
                 "Partitions those AlterPartition requests named", stats.partitions),
                ("raftka_controller_alter_partition_batches",
                 "Metadata batches (Raft entries) AlterPartition committed: one per request "
                 "that changed anything", stats.commits),
                ("raftka_controller_alter_partition_changes",
                 "ISR changes committed by AlterPartition", stats.changes),
            ):
                yield CounterMetricFamily(name, doc, value=value)
        lag = GaugeMetricFamily(
            "raftka_consumergroup_lag",
            "High watermark minus the group's committed offset, per partition (reported by "
            "the group's coordinator; end offsets of partitions it has no replica of are "
            "asked of their leaders at scrape time)",
            labels=["group", "topic", "partition"],
        )
        end_offsets = (state.end_offsets() if state.end_offsets is not None
                       else local_end_offsets(partitions))
        for group, topic, partition, value in consumer_group_lag(
            state.committed_offsets(), end_offsets
        ):
            lag.add_metric([group, topic, str(partition)], value)
        yield lag


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# ---------------------------------------------------------------------------- gRPC
class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary gRPC call by method name (`Produce`, `Fetch`, ...);
    a streaming call is counted when it ends."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        inner = handler.unary_unary
        metrics = self._metrics

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            error = "NONE"
            try:
                return await inner(request, context)
            except BaseException:
                error = "EXCEPTION"
                raise
            finally:
                metrics.request_done(method, "grpc", time.perf_counter() - started, error)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# ------------------------------------------------------------------------- /metrics
class MetricsServer:
    """A minimal HTTP/1.1 server for GET /metrics (and GET / with a link), on the loop.
    `before_scrape` runs before each /metrics answer (the group coordinator asks leaders
    for end offsets there); if it fails the scrape is answered anyway."""

    def __init__(self, metrics: BrokerMetrics, host: str, port: int,
                 before_scrape: Callable[[], Awaitable[None]] | None = None) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=REQUEST_HEAD_MAX_BYTES
        )
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_HEAD_TIMEOUT_S)
            request_line = head.split(b"\r\n", 1)[0]
            if self._before_scrape is not None and b" /metrics" in request_line:
                try:
                    await self._before_scrape()
                except Exception:
                    log.exception("before answering a scrape")
            status, content_type, body = self.answer(request_line)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, request_line: bytes) -> tuple[str, str, bytes]:
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        path = parts[1].split("?", 1)[0]
        if path == "/metrics":
            body = self._metrics.render()
            return "200 OK", TEXT_FORMAT, b"" if parts[0] == "HEAD" else body
        if path == "/":
            return "200 OK", "text/html", b'<a href="/metrics">/metrics</a>\n'
        return "404 Not Found", "text/plain", b"see /metrics\n"
