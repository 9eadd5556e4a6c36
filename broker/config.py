"""BrokerConfig: everything one broker process runs with, validated at start-up.

Settings can come from command-line flags, a TOML file, or `--set key=value`; keys are either
the field names below or Kafka's broker config names (aliases), so a Kafka operator's
`log.retention.ms` or `num.partitions` works as is.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from raftka import cpuset
from raftka.broker.listeners import (
    DEFAULT_LISTENER,
    PLAINTEXT,
    SECURITY_PROTOCOLS,
    TLS_PROTOCOLS,
    ListenerConfigError,
    ListenerEndpoint,
    kafka_endpoints,
)
from raftka.broker.sasl import ENABLED_MECHANISMS
from raftka.cluster import topic_config
from raftka.cluster.acl import AclError, parse_super_users

# Kafka's broker config names -> field names.
KAFKA_ALIASES = {
    "node.id": "broker_id",
    "broker.id": "broker_id",
    "log.dirs": "data_dir",
    "log.dir": "data_dir",
    "controller.quorum.voters": "voters",
    "num.partitions": "num_partitions",
    "default.replication.factor": "default_replication_factor",
    "auto.create.topics.enable": "auto_create_topics_enable",
    "min.insync.replicas": "min_insync_replicas",
    "log.retention.ms": "log_retention_ms",
    "log.retention.bytes": "log_retention_bytes",
    "log.segment.bytes": "log_segment_bytes",
    "log.roll.ms": "log_roll_ms",
    "message.max.bytes": "message_max_bytes",
    "log.retention.check.interval.ms": "log_retention_check_interval_ms",
    "broker.session.timeout.ms": "broker_session_timeout_ms",
    "broker.heartbeat.interval.ms": "broker_heartbeat_interval_ms",
    "replica.lag.time.max.ms": "replica_lag_time_max_ms",
    "replica.high.watermark.checkpoint.interval.ms":
        "replica_high_watermark_checkpoint_interval_ms",
    "socket.request.max.bytes": "request_max_bytes",
    "fetch.max.bytes": "fetch_max_bytes",
    "offsets.topic.num.partitions": "offsets_topic_num_partitions",
    "offsets.topic.replication.factor": "offsets_topic_replication_factor",
    "unclean.leader.election.enable": "unclean_leader_election_enable",
    "auto.leader.rebalance.enable": "auto_leader_rebalance_enable",
    "group.consumer.session.timeout.ms": "group_consumer_session_timeout_ms",
    "group.consumer.heartbeat.interval.ms": "group_consumer_heartbeat_interval_ms",
    "offsets.topic.segment.bytes": "offsets_topic_segment_bytes",
    "group.initial.rebalance.delay.ms": "group_initial_rebalance_delay_ms",
    "listeners": "kafka_listeners",
    "advertised.listeners": "kafka_advertised_listeners",
    "grpc.listeners": "grpc_listeners",
    "grpc.advertised.listeners": "grpc_advertised_listeners",
    "listener.security.protocol.map": "listener_security_protocol_map",
    "grpc.security.protocol": "grpc_security_protocol",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.client.auth": "ssl_client_auth",
    "cluster.secret.file": "cluster_secret_file",
    "cluster.secret.rotation.file": "cluster_secret_rotation_file",
    "raft.bind": "raft_bind",
    "metrics.listen": "metrics_listen",
    "replication.listen": "replication_listen",
    "replication.transport": "replication_transport",
    "controlled.shutdown.enable": "controlled_shutdown_enable",
    "controlled.shutdown.timeout.ms": "controlled_shutdown_timeout_ms",
    # client authentication and ACLs (broker/security.py)
    "authorizer.enabled": "authorizer_enabled",
    "super.users": "super_users",
    "allow.everyone.if.no.acl.found": "allow_everyone_if_no_acl_found",
    "connections.max.reauth.ms": "connections_max_reauth_ms",
    "sasl.enabled.mechanisms": "sasl_enabled_mechanisms",
    # not Kafka's: Raftka's own (raftka/cpuset.py)
    "cpu.affinity": "cpu_affinity",
}

# Broker-level defaults that become topic-level defaults (Kafka: log.* -> topic configs).
_TOPIC_DEFAULTS = {
    "log_retention_ms": "retention.ms",
    "log_retention_bytes": "retention.bytes",
    "log_segment_bytes": "segment.bytes",
    "log_roll_ms": "segment.ms",
    "message_max_bytes": "max.message.bytes",
    "min_insync_replicas": "min.insync.replicas",
    "unclean_leader_election_enable": "unclean.leader.election.enable",
}


REPLICATION_STREAM, REPLICATION_GRPC = "stream", "grpc"
REPLICATION_TRANSPORTS = (REPLICATION_STREAM, REPLICATION_GRPC)
# The default replication listener's port, past the gRPC port (Raft is +1, Kafka +2 and
# metrics +3 in `raftka cluster up`'s layout).
REPLICATION_PORT_OFFSET = 4


class ConfigError(ValueError):
    """A broker setting is missing, unknown or out of range; the message names it."""


def parse_address(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT with a port in 1..65535, got {value!r}")
    return host or "127.0.0.1", int(port)


def parse_voters(value: str) -> dict[int, str]:
    """'1@host:port,2@host:port' (Kafka's controller.quorum.voters format)."""
    voters: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        node, sep, address = item.partition("@")
        if not sep or not node.isdigit():
            raise ConfigError(f"voter {item!r} must look like ID@HOST:PORT")
        host, port = parse_address(address, f"voter {node}")
        voters[int(node)] = f"{host}:{port}"
    if not voters:
        raise ConfigError("voters is empty")
    return voters


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    broker_id: int
    data_dir: str
    listen: str = "127.0.0.1:9090"
    # Host that clients and other brokers should use; default: the listen host.
    advertised_host: str = ""
    # Raft (metadata quorum) listener; default: listen port + 1. It is also this voter's
    # address in `voters`, and where the listener binds unless raft_bind says otherwise.
    raft_listen: str = ""
    # Where the Raft listener binds when that differs from raft_listen (e.g. 0.0.0.0:9091 in
    # a container whose voters name it raftka-1:9091). Default: raft_listen's host and port.
    raft_bind: str = ""
    # File holding the cluster secret shared by every broker (see broker/cluster_secret.py;
    # also RAFTKA_CLUSTER_SECRET_FILE / RAFTKA_CLUSTER_SECRET).
    cluster_secret_file: str = ""
    # While rotating the secret: a second one that peers may use, accepted but never used to
    # sign or encrypt (README "Rotating the cluster secret").
    cluster_secret_rotation_file: str = ""
    # Run a multi-broker cluster with no secret: Raft and internal RPCs unauthenticated, so
    # anyone who reaches a port can run code here. For labs only; logged as a warning.
    allow_no_cluster_secret: bool = False
    # How far apart two brokers' clocks may be for internal-call tokens (ms).
    internal_auth_max_clock_skew_ms: int = 120_000
    # "1@host:port,..." Raft voters; default: this broker alone (a one-node cluster).
    voters: str = ""
    # Kafka wire-protocol listener port (a listener named PLAINTEXT on the listen host); 0: none.
    kafka_port: int = 0
    # Kafka's `listeners` / `advertised.listeners` ("NAME://host:port,..."): several named Kafka
    # listeners, each advertised at its own address (see broker/listeners.py). `listeners`
    # replaces kafka_port.
    kafka_listeners: str = ""
    kafka_advertised_listeners: str = ""
    # Extra gRPC listeners besides `listen` (which is named PLAINTEXT), each advertised at its
    # own address, e.g. for clients outside a container network. Same format.
    grpc_listeners: str = ""
    grpc_advertised_listeners: str = ""
    # Kafka's listener.security.protocol.map ("NAME:PROTOCOL,..."), for the Kafka listeners
    # and the extra gRPC listeners; a listener it leaves out must be named after a protocol.
    listener_security_protocol_map: str = ""
    # The protocol of the main gRPC listener (`listen`), which the other brokers call too:
    # SSL or SASL_SSL makes every broker-to-broker call TLS.
    grpc_security_protocol: str = PLAINTEXT
    # PEM files for the SSL / SASL_SSL listeners and this broker's calls to other brokers
    # (broker/tls.py): its certificate, its unencrypted key, the CA that signs peers and
    # clients; ssl_client_auth none | requested | required (mutual TLS), as in Kafka.
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    ssl_ca_location: str = ""
    ssl_client_auth: str = "none"
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = True
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    log_retention_ms: int = 7 * 24 * 3600 * 1000
    log_retention_bytes: int = -1
    log_segment_bytes: int = 1024**3
    log_roll_ms: int = 7 * 24 * 3600 * 1000
    message_max_bytes: int = 1048588
    log_retention_check_interval_ms: int = 30_000
    log_flush_check_interval_ms: int = 1_000
    broker_session_timeout_ms: int = 3_000
    broker_heartbeat_interval_ms: int = 500
    replica_lag_time_max_ms: int = 10_000
    # Every this often the high watermarks and recovery points of all partitions are
    # written to one checkpoint file each per log directory, if they changed (ms; Kafka's
    # default). Checked on the log.flush.check.interval rounds.
    replica_high_watermark_checkpoint_interval_ms: int = 5_000
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_ms: int = 30_000
    request_max_bytes: int = 100 * 1024 * 1024
    fetch_max_bytes: int = 55 * 1024 * 1024
    fetch_wait_max_ms: int = 30_000
    produce_timeout_max_ms: int = 120_000
    metadata_write_timeout_ms: int = 5_000
    # SIGTERM hands leadership over before the broker exits (Kafka's controlled.shutdown.
    # enable), waiting at most controlled_shutdown_timeout_ms for the controller to fence it
    # and for this broker to apply that; then it stops anyway.
    controlled_shutdown_enable: bool = True
    controlled_shutdown_timeout_ms: int = 5_000
    offsets_topic_num_partitions: int = 10
    offsets_topic_replication_factor: int = 3
    group_consumer_session_timeout_ms: int = 10_000
    group_consumer_heartbeat_interval_ms: int = 1_000
    # The group coordinator snapshots its offsets and drops older log every N records.
    offsets_snapshot_every_records: int = 1_000
    offsets_topic_segment_bytes: int = 1024 * 1024
    # Kafka's group.initial.rebalance.delay.ms (Kafka: 3 s), for the classic group protocol.
    group_initial_rebalance_delay_ms: int = 300
    # Compact the Raft journal into a snapshot past this many entries (see cluster/raft.py).
    metadata_log_compaction_entries: int = 20_000
    # Sync the Raft journal to disk before a metadata change counts (off: power loss on a
    # majority can undo committed metadata; for measuring only).
    metadata_log_fsync: bool = True
    # HOST:PORT of the Prometheus endpoint (GET /metrics, broker/metrics.py); "": none. Off
    # unless asked for, like any port a broker opens (`raftka cluster up` turns it on).
    metrics_listen: str = ""
    # How followers here copy their leaders' logs: "stream" (broker/replication/
    # stream_wire.py: a plain TCP connection per leader, batches sent with sendfile) or
    # "grpc" (BrokerService.Fetch, the older path). A follower streams only from a leader
    # that advertises a replication listener; otherwise, and with "grpc", it uses gRPC.
    replication_transport: str = REPLICATION_STREAM
    # HOST:PORT this broker's replication listener binds (served whatever the transport,
    # unless the transport is "grpc"); its port is advertised at the gRPC advertised host.
    # Default: the listen host at the gRPC port + 4 (`raftka cluster up` leaves it free);
    # when that is another listener's port, or cannot be bound, the broker runs without one
    # (with a warning) and its followers fetch from it over gRPC.
    replication_listen: str = ""
    # Client authentication and ACLs (README "Security"). ACLs are enforced on every Kafka and
    # gRPC client API when authorizer_enabled (Kafka: authorizer.class.name set); super_users
    # ("User:a;User:b") skip them; a resource no ACL names is allowed only with
    # allow_everyone_if_no_acl_found (Kafka's default: false).
    authorizer_enabled: bool = False
    super_users: str = ""
    allow_everyone_if_no_acl_found: bool = False
    # KIP-368: a SASL session on a Kafka listener lasts this long (ms) before the client must
    # re-authenticate (or be disconnected); 0: no limit (Kafka's default).
    connections_max_reauth_ms: int = 0
    # Mechanisms SASL_* Kafka listeners offer (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    sasl_enabled_mechanisms: str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    # File descriptors (broker/fd_budget.py): the RLIMIT_NOFILE to run with (0: raise the
    # soft limit to the hard one), and how many of them segment files may never take — kept
    # for sockets, the Raft journal, checkpoints and sendfile/fsync duplicates. The rest is
    # the pool of open segment and index files, and bounds the replicas this broker hosts.
    max_open_files: int = 0
    fd_reserve: int = 1024
    # The CPUs this broker runs on (raftka/cpuset.py): "" leaves it to the OS; "auto" pins
    # it to one of the CPUs it may use, chosen by broker id (brokers sharing a machine
    # spread over its CPUs); or a CPU list such as "0" or "2-3". A Python broker runs
    # Python on one core at a time, and pinned its threads stop waiting for each other
    # across cores (BENCHMARKS.md, "Pinning each Python process to one core").
    cpu_affinity: str = ""
    raft_options: Mapping[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------------- derived
    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_address(self.listen, "listen")

    @property
    def advertised(self) -> tuple[str, int]:
        host, port = self.listen_address
        if self.advertised_host:
            return self.advertised_host, port
        return ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host), port

    @property
    def kafka_endpoints(self) -> list[ListenerEndpoint]:
        """The Kafka listeners to open, first one first (its port is the broker's
        `kafka_port` in metadata)."""
        if self.kafka_listeners and self.kafka_port:
            raise ConfigError("set kafka_port or listeners, not both")
        listeners = self.kafka_listeners
        if not listeners and self.kafka_port > 0:
            host = self.listen_address[0]
            listeners = f"PLAINTEXT://{f'[{host}]' if ':' in host else host}:{self.kafka_port}"
        try:
            return kafka_endpoints(listeners, self.kafka_advertised_listeners,
                                   self.advertised[0],
                                   protocol_map=self.listener_security_protocol_map)
        except ListenerConfigError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def grpc_extra_endpoints(self) -> list[ListenerEndpoint]:
        """The extra gRPC listeners to open (the main one is `listen`)."""
        try:
            endpoints = kafka_endpoints(self.grpc_listeners, self.grpc_advertised_listeners,
                                        self.advertised[0], prefix="grpc.",
                                        protocol_map=self.listener_security_protocol_map)
        except ListenerConfigError as exc:
            raise ConfigError(str(exc)) from None
        if any(e.name == DEFAULT_LISTENER for e in endpoints):
            raise ConfigError(f"grpc.listeners: {DEFAULT_LISTENER} is the main listener "
                              "(listen); name the extra ones otherwise")
        return endpoints

    @property
    def grpc_uses_tls(self) -> bool:
        """The main gRPC listener is TLS, so other brokers (and this one) call it over TLS."""
        return self.grpc_security_protocol in TLS_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        """Some listener of this broker serves TLS (so the ssl.* files are needed)."""
        return self.grpc_uses_tls or any(
            e.uses_tls for e in [*self.kafka_endpoints, *self.grpc_extra_endpoints])

    @property
    def replication_address(self) -> tuple[str, int] | None:
        """Where the replication listener binds; None when this broker runs none
        (replication.transport=grpc, or the default address is unusable: see
        replication_default_unusable)."""
        if self.replication_transport != REPLICATION_STREAM:
            return None
        if self.replication_listen:
            return parse_address(self.replication_listen, "replication.listen")
        if self.replication_default_unusable is not None:
            return None
        host, port = self.listen_address
        return host, port + REPLICATION_PORT_OFFSET

    @property
    def replication_default_unusable(self) -> str | None:
        """Why the default replication listener (gRPC port + 4) is not opened, when it is
        another listener's port or past 65535: a configuration that worked before the
        listener existed keeps working (followers then fetch from this broker over gRPC),
        with a warning at start-up. None when it is usable or replication.listen is set."""
        if self.replication_transport != REPLICATION_STREAM or self.replication_listen:
            return None
        host, port = self.listen_address
        port += REPLICATION_PORT_OFFSET
        if port >= 65536:
            return f"its default port (gRPC port + {REPLICATION_PORT_OFFSET}) is past 65535"
        other = self._listener_at(host, port)
        if other is not None:
            return (f"its default address {host}:{port} (gRPC port + "
                    f"{REPLICATION_PORT_OFFSET}) is the {other}'s")
        return None

    def _listener_at(self, host: str, port: int) -> str | None:
        """The name of this broker's other listener bound where (host, port) is, if any."""
        others = {"gRPC listener": self.listen_address,
                  "raft listener": parse_address(self.raft_bind_address, "raft_bind")}
        for endpoint in self.kafka_endpoints:
            others[f"Kafka listener {endpoint.name}"] = (endpoint.bind_host, endpoint.bind_port)
        for endpoint in self.grpc_extra_endpoints:
            others[f"gRPC listener {endpoint.name}"] = (endpoint.bind_host, endpoint.bind_port)
        if self.metrics_listen:
            others["metrics listener"] = parse_address(self.metrics_listen, "metrics_listen")
        wildcard = ("", "0.0.0.0", "::")
        for name, (other_host, other_port) in others.items():
            if other_port == port and (other_host == host or other_host in wildcard
                                       or host in wildcard):
                return name
        return None

    @property
    def raft_address(self) -> str:
        if self.raft_listen:
            host, port = parse_address(self.raft_listen, "raft_listen")
            return f"{host}:{port}"
        host, port = self.advertised
        return f"{host}:{port + 1}"

    @property
    def raft_bind_address(self) -> str:
        if self.raft_bind:
            host, port = parse_address(self.raft_bind, "raft_bind")
            return f"{host}:{port}"
        return self.raft_address

    @property
    def is_single_node(self) -> bool:
        """No other voter: nobody else needs to know this broker's secret to form a quorum."""
        return set(self.voter_map) <= {self.broker_id}

    def listen_hosts(self) -> list[str]:
        """Every host this broker binds (gRPC, Raft, Kafka, extra gRPC listeners)."""
        hosts = [self.listen_address[0], self.raft_bind_address.rpartition(":")[0]]
        hosts += [e.bind_host for e in self.kafka_endpoints]
        hosts += [e.bind_host for e in self.grpc_extra_endpoints]
        if self.replication_address is not None:
            hosts.append(self.replication_address[0])
        return hosts

    @property
    def voter_map(self) -> dict[int, str]:
        if self.voters:
            return parse_voters(self.voters)
        return {self.broker_id: self.raft_address}

    @property
    def is_voter(self) -> bool:
        return self.broker_id in self.voter_map

    @property
    def log_dir(self) -> str:
        return os.path.join(self.data_dir, "logs")

    @property
    def metadata_dir(self) -> str:
        return os.path.join(self.data_dir, "metadata")

    def topic_config_defaults(self) -> dict[str, str]:
        out = {}
        for field_name, topic_key in _TOPIC_DEFAULTS.items():
            value = getattr(self, field_name)
            out[topic_key] = str(value).lower() if isinstance(value, bool) else str(value)
        return out

    # ------------------------------------------------------------------- checking
    def validate(self) -> BrokerConfig:
        if self.broker_id < 0:
            raise ConfigError(f"broker id must be >= 0, got {self.broker_id}")
        if not self.data_dir:
            raise ConfigError("data_dir is required")
        self.listen_address  # noqa: B018 - parses and raises ConfigError
        self.kafka_endpoints  # noqa: B018
        self.grpc_extra_endpoints  # noqa: B018
        if self.grpc_security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"grpc.security.protocol is {self.grpc_security_protocol!r}; use one of "
                f"{', '.join(SECURITY_PROTOCOLS)}")
        if self.uses_tls and not (self.ssl_certificate_location and self.ssl_key_location):
            raise ConfigError("a TLS listener (SSL or SASL_SSL) needs ssl.certificate.location "
                              "and ssl.key.location (PEM files)")
        if self.ssl_client_auth not in ("none", "requested", "required"):
            raise ConfigError(f"ssl.client.auth is {self.ssl_client_auth!r}; use one of none, "
                              "requested, required")
        self.raft_bind_address  # noqa: B018
        if self.metrics_listen:
            parse_address(self.metrics_listen, "metrics_listen")
        if self.replication_transport not in REPLICATION_TRANSPORTS:
            raise ConfigError(
                f"replication.transport is {self.replication_transport!r}; use one of "
                f"{', '.join(REPLICATION_TRANSPORTS)}")
        if self.replication_listen and self.replication_transport == REPLICATION_GRPC:
            raise ConfigError("replication.listen is set but replication.transport is grpc "
                              "(no replication listener runs then); drop one of them")
        self._check_replication_port_free()
        voters = self.voter_map
        if self.voters and self.broker_id in voters and voters[self.broker_id] != self.raft_address:
            raise ConfigError(
                f"this broker is voter {self.broker_id} at {voters[self.broker_id]} in voters, "
                f"but its raft listener is {self.raft_address}"
            )
        positive = [
            "num_partitions",
            "default_replication_factor",
            "min_insync_replicas",
            "log_segment_bytes",
            "log_roll_ms",
            "log_retention_check_interval_ms",
            "log_flush_check_interval_ms",
            "broker_session_timeout_ms",
            "broker_heartbeat_interval_ms",
            "replica_lag_time_max_ms",
            "replica_high_watermark_checkpoint_interval_ms",
            "request_max_bytes",
            "fetch_max_bytes",
            "metadata_write_timeout_ms",
            "controlled_shutdown_timeout_ms",
            "offsets_topic_num_partitions",
            "offsets_topic_replication_factor",
            "produce_timeout_max_ms",
            "metadata_log_compaction_entries",
            "leader_imbalance_check_interval_ms",
            "group_consumer_session_timeout_ms",
            "group_consumer_heartbeat_interval_ms",
            "offsets_snapshot_every_records",
            "offsets_topic_segment_bytes",
            "internal_auth_max_clock_skew_ms",
            "fd_reserve",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        self._validate_security()
        if self.max_open_files < 0:
            raise ConfigError(
                f"max_open_files must be 0 (the hard RLIMIT_NOFILE) or positive, got "
                f"{self.max_open_files}"
            )
        if self.broker_heartbeat_interval_ms * 2 > self.broker_session_timeout_ms:
            raise ConfigError("broker_session_timeout_ms must be at least 2 heartbeat intervals")
        try:
            cpuset.check_setting(self.cpu_affinity, "cpu.affinity")
        except cpuset.CpuSetError as exc:
            raise ConfigError(str(exc)) from None
        try:
            topic_config.validate(self.topic_config_defaults())
        except topic_config.InvalidConfigError as exc:
            raise ConfigError(f"broker default for a topic config: {exc}") from None
        return self


    def _check_replication_port_free(self) -> None:
        """An explicit replication.listen may not be another listener's address."""
        where = self.replication_address
        if where is None or not self.replication_listen:
            return
        other = self._listener_at(*where)
        if other is not None:
            raise ConfigError(f"replication.listen {where[0]}:{where[1]} is also the {other}'s "
                              "address; give it a free port")

    def _validate_security(self) -> None:
        if self.connections_max_reauth_ms < 0:
            raise ConfigError("connections.max.reauth.ms must be >= 0 (0: no limit), got "
                              f"{self.connections_max_reauth_ms}")
        try:
            parse_super_users(self.super_users)
        except AclError as exc:
            raise ConfigError(str(exc)) from None
        mechanisms = [m.strip() for m in self.sasl_enabled_mechanisms.split(",") if m.strip()]
        unknown = [m for m in mechanisms if m not in ENABLED_MECHANISMS]
        if unknown or not mechanisms:
            raise ConfigError(f"sasl.enabled.mechanisms: {', '.join(unknown) or 'none'} "
                              f"(use some of {', '.join(ENABLED_MECHANISMS)})")


_FIELD_TYPES = {f.name: f.type for f in fields(BrokerConfig)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false"):
                raise ValueError(value)
            return text == "true"
        if kind == "str":
            return str(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a valid {kind}") from None
    return value


def settings_from_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Field values from a mapping keyed by field names or Kafka aliases."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = KAFKA_ALIASES.get(key, key.replace("-", "_").replace(".", "_"))
        if name not in _FIELD_TYPES:
            raise ConfigError(f"unknown broker setting {key!r}")
        out[name] = _coerce(name, value)
    return out


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return settings_from_mapping(tomllib.load(handle))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def build_config(file_settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> BrokerConfig:
    merged = {**file_settings, **{k: v for k, v in overrides.items() if v is not None}}
    if "broker_id" not in merged or "data_dir" not in merged:
        raise ConfigError("a broker needs an id (--id) and a data directory (--data-dir)")
    base = BrokerConfig(broker_id=merged.pop("broker_id"), data_dir=merged.pop("data_dir"))
    return replace(base, **merged).validate()
