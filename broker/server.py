"""One broker process: wiring and lifecycle. Every broker is also a Raft voter (the first
ones, as configured) or observer of the metadata quorum — KRaft's "combined mode".

Start order: lock the data dir, open the metadata log's subscribers, start gRPC, then Raft
(whose journal replay feeds the replica manager), then registration/heartbeats and the
periodic maintenance. Stop: first a controlled shutdown (broker/shutdown.py: leadership moves
to the other replicas while this broker still answers), then the reverse of the start; logs
are flushed and closed last, so SIGTERM leaves nothing to recover.

While this broker's controller is active it also watches every other live broker
(broker/liveness.py) and fences one at once when its process is provably gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
import uuid
from contextlib import suppress
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from raftka.broker import tls as broker_tls
from raftka.broker.config import REPLICATION_STREAM, BrokerConfig, parse_address
from raftka.broker.controller_client import (
    GRPC_MESSAGE_MAX_BYTES,
    BrokerLifecycle,
    ChannelPool,
    ControllerClient,
)
from raftka.broker.core import BrokerCore
from raftka.broker.fd_budget import FdBudget, apply_limit
from raftka.broker.fetch_path import FetchPath
from raftka.broker.group_service import GroupServicer
from raftka.broker.groups.classic_protocol import ClassicProtocol
from raftka.broker.groups.coordinator import GroupCoordinator, GroupSettings
from raftka.broker.groups.directory import GroupDirectory
from raftka.broker.groups.end_offsets import EndOffsetsFromLeaders
from raftka.broker.internal_auth import InternalAuth
from raftka.broker.kafka.listener import KafkaListener
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.broker.liveness import BrokerWatcher, WatchServer
from raftka.broker.log.handles import shared_pool
from raftka.broker.log_admin import LogAdmin
from raftka.broker.log_writer import LogWriter
from raftka.broker.metrics import (
    BrokerMetrics,
    BrokerState,
    GrpcMetricsInterceptor,
    MetricsServer,
)
from raftka.broker.produce_path import ProducePath
from raftka.broker.producer_ids import ProducerIdManager
from raftka.broker.purgatory import Purgatory
from raftka.broker.replica_manager import ReplicaManager, ReplicaManagerSettings
from raftka.broker.replication.fetcher import FetcherManager
from raftka.broker.replication.isr_updater import IsrUpdater
from raftka.broker.replication.stream_client import StreamDialer
from raftka.broker.replication.stream_server import ReplicationListener
from raftka.broker.security import BrokerSecurity
from raftka.broker.security_service import SecurityServicer
from raftka.broker.service import AdminServicer, BrokerServicer, ControllerServicer
from raftka.broker.shutdown import ControlledShutdown, GrpcPeers
from raftka.broker.topic_admin import TopicAdmin
from raftka.cluster.cluster_auth import ClusterCredentials, raft_password
from raftka.cluster.controller import ControllerSettings
from raftka.cluster.quorum import ControllerTimeoutError, QuorumController
from raftka.cluster.raft import RaftMetadataLog, RaftSettings
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
)

log = logging.getLogger("raftka.broker")
Code = common_pb2.ErrorCode
CONTROLLER_TICK_S = 0.05
GROUP_TICK_S = 0.1


def now_ms() -> int:
    return int(time.time() * 1000)


class DataDirLockedError(RuntimeError):
    """Another process runs a broker on this data directory."""


class BrokerServer:
    def __init__(
        self,
        config: BrokerConfig,
        cluster_secret: bytes | None,
        also_accepted: tuple[bytes, ...] = (),
    ) -> None:
        """`cluster_secret` authenticates Raft and internal RPCs (broker/cluster_secret.py);
        None runs without (allow_no_cluster_secret). `also_accepted`: while rotating."""
        self.config = config
        self._cluster_secret = cluster_secret
        self._also_accepted = also_accepted
        self.internal_auth = InternalAuth(
            ClusterCredentials(
                cluster_secret, config.internal_auth_max_clock_skew_ms, also_accepted
            )
            if cluster_secret is not None
            else None,
            config.broker_id,
        )
        self.incarnation_id = uuid.uuid4().hex
        # TLS material when a listener is SSL / SASL_SSL; the gRPC listener being TLS makes
        # this broker's calls to the others TLS too (they call that listener).
        self.tls = broker_tls.for_broker(config)
        self._peer_credentials = (
            self.tls.grpc_channel_credentials()
            if self.tls is not None and config.grpc_uses_tls else None
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._heartbeats: asyncio.Task[None] | None = None
        self._lock_fd = -1
        self.grpc_server: grpc.aio.Server | None = None
        self.extra_grpc_servers: list[grpc.aio.Server] = []
        self._broker_servicers: list[BrokerServicer] = []  # one per gRPC server
        self.kafka_listeners: list[KafkaListener] = []
        self.replication_listener: ReplicationListener | None = None
        self.metrics = BrokerMetrics()
        self.metrics_server: MetricsServer | None = None
        self.port = 0

    # ------------------------------------------------------------------------ wiring
    async def start(self) -> None:
        config = self.config
        self.fd_budget = self._apply_fd_budget()
        os.makedirs(config.data_dir, exist_ok=True)
        self._lock_data_dir()
        loop = asyncio.get_running_loop()
        self.metadata_log = RaftMetadataLog(
            RaftSettings(
                node_id=config.broker_id,
                voters=config.voter_map,
                data_dir=config.metadata_dir,
                compaction_entries_min=config.metadata_log_compaction_entries,
                journal_fsync=config.metadata_log_fsync,
                password=(
                    raft_password(self._cluster_secret)
                    if self._cluster_secret is not None
                    else None
                ),
                accepted_passwords=tuple(raft_password(s) for s in self._also_accepted),
                bind_address=config.raft_bind_address,
                extra=dict(config.raft_options),
            ),
            loop,
        )
        self.quorum = QuorumController(
            config.broker_id,
            self.metadata_log,
            self._controller_settings(),
            now_ms,
            session_timeout_ms=config.broker_session_timeout_ms,
            write_timeout_s=config.metadata_write_timeout_ms / 1000,
            leader_rebalance_interval_ms=(
                config.leader_imbalance_check_interval_ms
                if config.auto_leader_rebalance_enable
                else 0
            ),
        )
        self.channels = ChannelPool(self.internal_auth, self._peer_credentials)
        self.controller_client = ControllerClient(
            config.broker_id, self.metadata_log, self.quorum, self.channels
        )
        self.watcher = BrokerWatcher(config.broker_id, self.quorum, self.internal_auth,
                                     credentials=self._peer_credentials)
        self.core = self._build_core()
        self.replica_manager = self.core.replica_manager
        self.metadata_log.subscribe(self.replica_manager.on_metadata)
        self.replica_manager.start()
        self.end_offsets = EndOffsetsFromLeaders(
            config.broker_id, self.channels, self._endpoint_of,
            lambda: self.replica_manager.image,
            lambda: self.replica_manager.partitions.values(),
            self.core.group_coordinator.committed_offsets,
        )
        self.metrics.watch(
            BrokerState(
                broker_id=config.broker_id,
                partitions=lambda: self.replica_manager.partitions.values(),
                image=lambda: self.replica_manager.image,
                is_controller=self.metadata_log.is_leader,
                purgatory_size=lambda: self.replica_manager.purgatory.waiting,
                raft_status=self.metadata_log.status,
                fenced=lambda: self.lifecycle.fenced,
                committed_offsets=self.core.group_coordinator.committed_offsets,
                end_offsets=self.end_offsets.end_offsets,
                alter_partition_stats=lambda: self.quorum.alter_partition_stats,
            )
        )
        await self._start_grpc()
        if config.metrics_listen:
            self.metrics_server = MetricsServer(
                self.metrics, *parse_address(config.metrics_listen, "metrics_listen"),
                before_scrape=self.end_offsets.refresh,
            )
            await self.metrics_server.start()
        for endpoint in config.kafka_endpoints:
            listener = KafkaListener(
                self.core, endpoint, config.request_max_bytes,
                self.tls.kafka_server_context() if self.tls and endpoint.uses_tls else None)
            self.kafka_listeners.append(listener)
            await listener.start()
        # Before registering: the registration advertises the listener's port.
        await self._start_replication_listener()
        self.metadata_log.start()
        self._heartbeats = asyncio.create_task(self.lifecycle.run(), name="heartbeats")
        self._tasks = [
            asyncio.create_task(self._controller_ticks(), name="controller-ticks"),
            self._heartbeats,
            asyncio.create_task(self._maintenance(), name="log-maintenance"),
            asyncio.create_task(self._isr_rounds(), name="isr-updates"),
            asyncio.create_task(self._group_rounds(), name="group-coordinator"),
        ]
        host = config.advertised[0]
        log.info(
            "broker %d listening on %s:%d (raft %s, voters %s)",
            config.broker_id,
            host,
            self.port,
            config.raft_address,
            config.voter_map,
        )

    async def _start_replication_listener(self) -> None:
        """Open the replication listener and advertise its port; without one (transport
        grpc, or the default address unusable) followers fetch from this broker over gRPC."""
        config = self.config
        unusable = config.replication_default_unusable
        if unusable is not None:
            log.warning("no replication listener: %s; followers fetch from this broker over "
                        "gRPC (set replication.listen to a free HOST:PORT)", unusable)
        where = config.replication_address
        if where is None:
            self.lifecycle.advertise_replication_port(0)
            return
        tls = self.tls if config.grpc_uses_tls else None
        listener = ReplicationListener(
            self.core.fetch_path, self.internal_auth, *where,
            ssl_context=tls.kafka_server_context() if tls is not None else None,
            metrics=self.metrics)
        try:
            await listener.start()
        except OSError as exc:
            problem = f"cannot listen on {where[0]}:{where[1]}: {exc.strerror or exc}"
            if config.replication_listen:
                raise OSError(f"{problem} (replication.listen)") from None
            log.warning("no replication listener: %s (the default, gRPC port + 4); followers "
                        "fetch from this broker over gRPC (set replication.listen to a free "
                        "HOST:PORT)", problem)
            self.lifecycle.advertise_replication_port(0)
            return
        self.replication_listener = listener
        self.lifecycle.advertise_replication_port(listener.port)

    def _stream_dialer(self) -> StreamDialer | None:
        """How this broker's followers reach leaders' replication listeners; None with
        replication.transport=grpc."""
        if self.config.replication_transport != REPLICATION_STREAM:
            return None
        tls = self.tls if self.config.grpc_uses_tls else None
        return StreamDialer(self.config.broker_id, self.internal_auth,
                            self._replication_endpoint_of,
                            tls.client_context() if tls is not None else None)

    def _replication_endpoint_of(self, broker_id: int) -> tuple[str, int] | None:
        registration = self.metadata_log.image.brokers.get(broker_id)
        if registration is None or registration.fenced or registration.replication_port <= 0:
            return None
        return registration.host, registration.replication_port

    def _build_core(self) -> BrokerCore:
        """Every collaborator the adapters need, in dependency order, before any adapter
        exists (so no adapter sees a half-built broker)."""
        config = self.config
        timeout_s = config.metadata_write_timeout_ms / 1000
        writer, purgatory = LogWriter(), Purgatory()
        fetchers = FetcherManager(
            config.broker_id,
            self.channels,
            self._endpoint_of,
            writer.run,
            now_ms,
            lambda: self.lifecycle.broker_epoch,
            purgatory.notify,
            self._stream_dialer(),
            on_writer_small=writer.run_small,
        )
        replicas = ReplicaManager(
            ReplicaManagerSettings(
                broker_id=config.broker_id,
                log_dir=config.log_dir,
                topic_config_defaults=config.topic_config_defaults(),
                replica_lag_time_max_ms=config.replica_lag_time_max_ms,
                high_watermark_checkpoint_interval_ms=(
                    config.replica_high_watermark_checkpoint_interval_ms),
            ),
            now_ms,
            writer,
            purgatory,
            fetchers,
        )
        replicas.on_leader_isr_change = self.metrics.isr_changed
        host, port = config.advertised
        self.lifecycle = BrokerLifecycle(
            self.controller_client,
            BrokerLifecycle.registration(
                config.broker_id,
                self.incarnation_id,
                host,
                port,
                config.is_voter,
                config.kafka_endpoints,
                config.grpc_extra_endpoints,
                self.fd_budget.max_replicas,
            ),
            lambda: replicas.applied_offset,
            config.broker_heartbeat_interval_ms / 1000,
            config.broker_session_timeout_ms / 1000,
            self._on_first_unfenced,
            replicas.on_registered,
        )
        topics = TopicAdmin(config, self.controller_client, self.quorum, replicas)
        produce_path = ProducePath(
            replicas,
            produce_timeout_max_ms=config.produce_timeout_max_ms,
            auto_create=topics.auto_create if config.auto_create_topics_enable else None,
            lease_problem=self.lifecycle.lease_problem,
            metrics=self.metrics,
        )
        fetch_path = FetchPath(
            replicas,
            fetch_max_bytes=config.fetch_max_bytes,
            fetch_wait_max_ms=config.fetch_wait_max_ms,
            lease_problem=self.lifecycle.lease_problem,
            metrics=self.metrics,
        )
        self.isr_updater = IsrUpdater(
            config.broker_id,
            lambda request: self.controller_client.alter_partition(request, timeout_s),
            lambda: self.lifecycle.broker_epoch,
            now_ms,
            config.replica_lag_time_max_ms,
            self.metrics,
            eligible=lambda broker_id: (
                (broker := self.replica_manager.image.brokers.get(broker_id)) is not None
                and not broker.fenced
            ),
        )
        groups = GroupCoordinator(
            replicas,
            produce_path,
            now_ms,
            GroupSettings(
                session_timeout_ms=config.group_consumer_session_timeout_ms,
                heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
                snapshot_every_records=config.offsets_snapshot_every_records,
                classic_initial_delay_ms=config.group_initial_rebalance_delay_ms,
            ),
            self.lifecycle.lease_problem,
        )
        producer_ids = ProducerIdManager(
            lambda: self.controller_client.allocate_producer_ids(
                controller_pb2.AllocateProducerIdsRequest(
                    broker_id=config.broker_id, broker_epoch=self.lifecycle.broker_epoch
                ),
                timeout_s,
            )
        )
        return BrokerCore(
            config=config,
            replica_manager=replicas,
            produce_path=produce_path,
            fetch_path=fetch_path,
            producer_ids=producer_ids,
            topics=topics,
            log_admin=LogAdmin(replicas, config.log_dir, self.lifecycle.lease_problem),
            group_coordinator=groups,
            classic_groups=ClassicProtocol(groups),
            group_directory=GroupDirectory(config, topics, groups, self.channels),
            quorum=self.quorum,
            internal_auth=self.internal_auth,
            controller_id=self.metadata_log.leader_id,
            raft_image=lambda: self.metadata_log.image,
            fenced=lambda: self.lifecycle.fenced,
            metrics=self.metrics,
            watch_server=WatchServer(config.broker_id, self.incarnation_id),
            security=BrokerSecurity(config, replicas, self.controller_client, self.quorum),
        )

    def _endpoint_of(self, broker_id: int) -> str | None:
        registration = self.metadata_log.image.brokers.get(broker_id)
        if registration is None or registration.fenced:
            return None
        return f"{registration.host}:{registration.port}"

    def _controller_settings(self) -> ControllerSettings:
        config = self.config
        return ControllerSettings(
            num_partitions=config.num_partitions,
            default_replication_factor=config.default_replication_factor,
            topic_config_defaults=config.topic_config_defaults(),
            offsets_topic_partitions=config.offsets_topic_num_partitions,
            offsets_topic_replication_factor=config.offsets_topic_replication_factor,
            cluster_size_min=len(config.voter_map),
        )

    def _apply_fd_budget(self) -> FdBudget:
        """Set RLIMIT_NOFILE and size the segment-file pool before any file is opened."""
        budget = apply_limit(self.config.max_open_files, self.config.fd_reserve)
        shared_pool().set_capacity(budget.pool_capacity)
        log.info("file descriptors: %s", budget.describe())
        return budget

    def _lock_data_dir(self) -> None:
        path = os.path.join(self.config.data_dir, ".lock")
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DataDirLockedError(
                f"{self.config.data_dir} is in use by another broker process"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())

    def _grpc_server(self, listener: str) -> grpc.aio.Server:
        """A gRPC server with every service; metadata answers name the brokers' addresses
        for `listener` (see broker/listeners.py)."""
        message_max = max(self.config.request_max_bytes, GRPC_MESSAGE_MAX_BYTES)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.request_max_bytes),
                ("grpc.max_send_message_length", message_max),
                ("grpc.so_reuseport", 0),
            ],
            interceptors=[GrpcMetricsInterceptor(self.metrics)],
        )
        core = self.core
        broker_servicer = BrokerServicer(core, listener)
        self._broker_servicers.append(broker_servicer)
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(broker_servicer, server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(core, listener), server)
        group_pb2_grpc.add_GroupServiceServicer_to_server(GroupServicer(core, listener), server)
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(
            ControllerServicer(core), server
        )
        security_pb2_grpc.add_SecurityServiceServicer_to_server(
            SecurityServicer(core, listener), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        return server

    def _add_port(self, server: grpc.aio.Server, address: str, uses_tls: bool) -> int:
        if not uses_tls:
            return server.add_insecure_port(address)
        assert self.tls is not None
        return server.add_secure_port(address, self.tls.grpc_server_credentials())

    async def _start_grpc(self) -> None:
        self.health = health.aio.HealthServicer()
        server = self._grpc_server(DEFAULT_LISTENER)
        services = (
            broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            group_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
            controller_pb2.DESCRIPTOR.services_by_name["ControllerService"].full_name,
            security_pb2.DESCRIPTOR.services_by_name["SecurityService"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(services, server)
        host, port = self.config.listen_address
        self.port = self._add_port(server, f"{host}:{port}", self.config.grpc_uses_tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(services[0], health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc_server = server
        for endpoint in self.config.grpc_extra_endpoints:
            extra = self._grpc_server(endpoint.name)
            reflection.enable_server_reflection(services, extra)
            address = f"{endpoint.bind_host}:{endpoint.bind_port}"
            if self._add_port(extra, address, endpoint.uses_tls) == 0:
                raise OSError(f"cannot listen on {address} (gRPC listener {endpoint.name})")
            await extra.start()
            self.extra_grpc_servers.append(extra)
            log.info("gRPC listener %s on %s, advertised as %s:%d", endpoint.name, address,
                     endpoint.host, endpoint.port)

    # ------------------------------------------------------------------------- loops
    async def _controller_ticks(self) -> None:
        while True:
            try:
                await self.quorum.tick()
                self.watcher.reconcile(self.metadata_log.image)
            except Exception:
                log.exception("controller tick failed")
            await asyncio.sleep(CONTROLLER_TICK_S)

    async def _maintenance(self) -> None:
        flush_s = self.config.log_flush_check_interval_ms / 1000
        retention_every = max(
            1,
            self.config.log_retention_check_interval_ms // self.config.log_flush_check_interval_ms,
        )
        round_number = 0
        while True:
            await asyncio.sleep(flush_s)
            round_number += 1
            try:
                await self.replica_manager.run_maintenance(
                    retention=round_number % retention_every == 0
                )
            except Exception:
                log.exception("log maintenance failed")

    async def _isr_rounds(self) -> None:
        interval_s = min(0.25, self.config.replica_lag_time_max_ms / 4000)
        while True:
            await asyncio.sleep(interval_s)
            if self.lifecycle.lease_problem() is not None:
                continue  # fenced or cut off: this broker's view of its ISRs is not current
            try:
                self.isr_updater.run_once(self.replica_manager.partitions.values())
            except Exception:
                log.exception("ISR update round failed")

    async def _group_rounds(self) -> None:
        while True:
            await asyncio.sleep(GROUP_TICK_S)
            try:
                self.core.group_coordinator.refresh()
                self.core.group_coordinator.expire_members()
            except Exception:
                log.exception("group coordinator round failed")

    async def _on_first_unfenced(self) -> None:
        await self.replica_manager.remove_stray_logs()
        await self.health.set(
            broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
            health_pb2.HealthCheckResponse.SERVING,
        )

    # --------------------------------------------------------------------- shutdown
    async def _controlled_shutdown(self) -> None:
        config = self.config
        if not config.controlled_shutdown_enable or self._heartbeats is None:
            return
        # No heartbeat may follow: one answered after the fence would lift it again.
        self._heartbeats.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._heartbeats
        handover = ControlledShutdown(
            config.broker_id,
            self.controller_client,
            self.metadata_log,
            self.replica_manager,
            lambda: self.lifecycle.broker_epoch,
            config.controlled_shutdown_timeout_ms / 1000,
            GrpcPeers(self.channels, lambda: self.metadata_log.image),
        )
        try:
            outcome = await handover.run()
        except Exception:
            log.exception("controlled shutdown failed; stopping anyway")
            return
        log.info("broker %d controlled shutdown: %s", config.broker_id, outcome)

    async def stop(self) -> None:
        log.info("broker %d shutting down", self.config.broker_id)
        await self._controlled_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        await self.watcher.close()
        self.core.watch_server.close()  # else each watch stream holds gRPC's grace period
        for servicer in self._broker_servicers:  # and each producer's stream likewise
            servicer.end_produce_streams()
        for listener in self.kafka_listeners:
            await listener.stop()
        if self.replication_listener is not None:
            await self.replication_listener.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        for extra in self.extra_grpc_servers:
            await extra.stop(grace=1.0)
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1.0)
        await self.channels.close()
        await self.replica_manager.close()
        self.metadata_log.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info("broker %d stopped cleanly", self.config.broker_id)


__all__ = ["BrokerServer", "ControllerTimeoutError", "DataDirLockedError"]
