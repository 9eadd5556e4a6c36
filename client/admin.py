"""Admin: create, delete, list, describe and alter topics (configs, partitions, records);
log directories; describe the cluster.

Any broker answers (it forwards changes to the controller). Calls go to the first broker that
answers; NOT_CONTROLLER or a timeout during a controller election is retried until
`request_timeout_ms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from raftka.client.credentials import resolve as resolve_credentials
from raftka.client.errors import (
    AuthenticationError,
    AuthorizationError,
    BrokerNotAvailableError,
    RaftkaError,
    error_for,
)
from raftka.client.group_admin import GroupAdmin
from raftka.client.metadata import ClusterMetadata
from raftka.client.tls_options import TlsOptions
from raftka.client.transport import Connections, bootstrap_list, translate_rpc_error
from raftka.proto.raftka.v1 import admin_pb2, broker_pb2, common_pb2

Code = common_pb2.ErrorCode
T = TypeVar("T")
_RETRY_CODES = {Code.NOT_CONTROLLER, Code.REQUEST_TIMED_OUT}
_LEADER_MOVED = {Code.NOT_LEADER_OR_FOLLOWER, Code.LEADER_NOT_AVAILABLE}
# Pause between rounds over every broker while no broker answers, or the controller is
# being elected (s).
ADMIN_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int = 0  # 0: the broker's num.partitions
    replication_factor: int = 0  # 0: the broker's default.replication.factor
    configs: Mapping[str, str] = field(default_factory=dict)


class Admin:
    def __init__(
        self, bootstrap_servers: str | list[str] | None = None, *, request_timeout_ms: int = 30_000,
        tls: TlsOptions | None = None,
        username: str | None = None,
        password: str | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`on_retry(problems)` is called each time no broker answered and the call will be
        tried again (the CLI says so once); `request_timeout_ms` bounds the retrying."""
        self.request_timeout_s = request_timeout_ms / 1000
        self._on_retry = on_retry
        self._connections = Connections(tls, resolve_credentials(username, password))
        self.metadata = ClusterMetadata(
            bootstrap_list(bootstrap_servers), self._connections, self.request_timeout_s
        )

    def _call(self, invoke: Callable[[str], T], retry_if: Callable[[T], bool] | None = None) -> T:
        deadline = time.monotonic() + self.request_timeout_s
        problems: dict[str, str] = {}  # the latest problem of each address, named once
        while True:
            for address in self.metadata.candidates():
                try:
                    response = invoke(address)
                except grpc.RpcError as exc:
                    error = translate_rpc_error(exc, address)
                    if isinstance(error, (AuthenticationError, AuthorizationError)):
                        raise error from None  # another broker would refuse alike
                    self.metadata.note_unreachable(address)
                    problems[address] = str(error)
                    continue
                self.metadata.note_reachable(address)
                if retry_if is not None and retry_if(response) and time.monotonic() < deadline:
                    break
                return response
            if time.monotonic() >= deadline:
                raise BrokerNotAvailableError("no broker answered: " + "; ".join(problems.values()))
            if problems and self._on_retry is not None:
                self._on_retry("; ".join(problems.values()))
            time.sleep(ADMIN_RETRY_S)

    # ------------------------------------------------------------------------- topics
    def create_topics(
        self, topics: list[NewTopic], validate_only: bool = False
    ) -> list[admin_pb2.CreateTopicResult]:
        request = admin_pb2.CreateTopicsRequest(
            validate_only=validate_only,
            topics=[
                admin_pb2.NewTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs=dict(t.configs),
                )
                for t in topics
            ],
        )
        response = self._call(
            lambda address: self._connections.admin(address).CreateTopics(
                request, timeout=self.request_timeout_s
            ),
            lambda r: any(t.error_code in _RETRY_CODES for t in r.topics),
        )
        return list(response.topics)

    def create_topic(
        self,
        name: str,
        num_partitions: int = 0,
        replication_factor: int = 0,
        configs: Mapping[str, str] | None = None,
    ) -> admin_pb2.CreateTopicResult:
        """Create one topic; raise the matching RaftkaError if the broker refuses."""
        (result,) = self.create_topics(
            [NewTopic(name, num_partitions, replication_factor, configs or {})]
        )
        if result.error_code:
            raise error_for(result.error_code, result.error_message)
        return result

    def delete_topics(self, names: list[str]) -> list[admin_pb2.DeleteTopicResult]:
        request = admin_pb2.DeleteTopicsRequest(names=names)
        response = self._call(
            lambda address: self._connections.admin(address).DeleteTopics(
                request, timeout=self.request_timeout_s
            ),
            lambda r: any(t.error_code in _RETRY_CODES for t in r.topics),
        )
        return list(response.topics)

    def delete_topic(self, name: str) -> None:
        (result,) = self.delete_topics([name])
        if result.error_code:
            raise error_for(result.error_code, result.error_message)

    def list_topics(self, include_internal: bool = False) -> list[admin_pb2.TopicListing]:
        request = admin_pb2.ListTopicsRequest(include_internal=include_internal)
        response = self._call(
            lambda address: self._connections.admin(address).ListTopics(
                request, timeout=self.request_timeout_s
            )
        )
        return list(response.topics)

    def describe_topics(self, names: list[str]) -> list[admin_pb2.TopicDescription]:
        request = admin_pb2.DescribeTopicsRequest(names=names)
        response = self._call(
            lambda address: self._connections.admin(address).DescribeTopics(
                request, timeout=self.request_timeout_s
            )
        )
        descriptions = list(response.topics)
        self._fill_offsets(descriptions)
        return descriptions

    def describe_topic(self, name: str) -> admin_pb2.TopicDescription:
        (description,) = self.describe_topics([name])
        if description.error_code:
            raise error_for(description.error_code, description.error_message)
        return description

    def _fill_offsets(self, descriptions: list[admin_pb2.TopicDescription]) -> None:
        """The answering broker knows offsets only for partitions it leads: ask the others."""
        missing = [
            (d.name, p)
            for d in descriptions
            if not d.error_code
            for p in d.partitions
            if p.high_watermark < 0 and p.leader_id >= 0
        ]
        if not missing:
            return
        try:
            self.metadata.refresh()
        except RaftkaError:
            return
        # One ListOffsets per leader and spec, not two per partition: a 1,000-partition
        # topic page made ~1,300 sequential calls (minutes on a busy machine).
        by_leader: dict[str, list[tuple[str, admin_pb2.PartitionDescription]]] = {}
        for name, partition in missing:
            address = self.metadata.leader_address(name, partition.partition)
            if address is not None:
                by_leader.setdefault(address, []).append((name, partition))
        for address, wanted in by_leader.items():
            offsets: dict[tuple[str, int], dict[int, int]] = {}
            for spec in (-2, -1):
                request = broker_pb2.ListOffsetsRequest(
                    partitions=[
                        broker_pb2.ListOffsetsPartition(
                            topic=name, partition=partition.partition, timestamp_ms=spec
                        )
                        for name, partition in wanted
                    ]
                )
                try:
                    reply = self._connections.broker(address).ListOffsets(
                        request, timeout=self.request_timeout_s
                    )
                except grpc.RpcError:
                    break
                for item in reply.partitions:
                    if not item.error_code:
                        offsets.setdefault((item.topic, item.partition), {})[spec] = item.offset
            for name, partition in wanted:
                found = offsets.get((name, partition.partition), {})
                if len(found) == 2:
                    partition.log_start_offset, partition.high_watermark = found[-2], found[-1]

    # ----------------------------------------------------------------- altering topics
    def alter_configs(
        self,
        topic: str,
        set_configs: Mapping[str, str] | None = None,
        delete: list[str] | None = None,
        *,
        replace_all: bool = False,
        validate_only: bool = False,
    ) -> None:
        """Set and/or delete a topic's configs (Kafka's IncrementalAlterConfigs; with
        `replace_all`, AlterConfigs: `set_configs` becomes the whole explicit config).
        InvalidConfigError names a bad key or value; then nothing changed."""
        request = admin_pb2.AlterConfigsRequest(validate_only=validate_only, topics=[
            admin_pb2.TopicConfigAlteration(topic=topic, set=dict(set_configs or {}),
                                            delete=list(delete or []),
                                            replace_all=replace_all)])
        response = self._call(
            lambda address: self._connections.admin(address).AlterConfigs(
                request, timeout=self.request_timeout_s
            ),
            lambda r: any(t.error_code in _RETRY_CODES for t in r.topics),
        )
        (result,) = response.topics
        if result.error_code:
            raise error_for(result.error_code, result.error_message)

    def create_partitions(self, topic: str, count: int, *, validate_only: bool = False) -> None:
        """Grow `topic` to `count` partitions (never shrink: InvalidPartitionsError)."""
        request = admin_pb2.CreatePartitionsRequest(validate_only=validate_only, topics=[
            admin_pb2.PartitionCountChange(topic=topic, count=count)])
        response = self._call(
            lambda address: self._connections.admin(address).CreatePartitions(
                request, timeout=self.request_timeout_s
            ),
            lambda r: any(t.error_code in _RETRY_CODES for t in r.topics),
        )
        (result,) = response.topics
        if result.error_code:
            raise error_for(result.error_code, result.error_message)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete the records of `topic`-`partition` below `before_offset` (-1: below the
        high watermark); returns the new log start offset. Asks the partition's leader,
        following it when it moves."""
        request = admin_pb2.DeleteRecordsRequest(partitions=[admin_pb2.DeleteRecordsPartition(
            topic=topic, partition=partition, offset=before_offset)])
        deadline = time.monotonic() + self.request_timeout_s
        while True:
            self.metadata.refresh([topic])
            known = self.metadata.partitions_for(topic)
            if known is None or not 0 <= partition < len(known):
                raise error_for(Code.UNKNOWN_TOPIC_OR_PARTITION,
                                f"topic {topic} has no partition {partition}")
            address = self.metadata.leader_address(topic, partition)
            result = None
            if address is not None:
                try:
                    result = self._connections.admin(address).DeleteRecords(
                        request, timeout=self.request_timeout_s).partitions[0]
                except grpc.RpcError as exc:
                    error = translate_rpc_error(exc, address)
                    if time.monotonic() > deadline or isinstance(
                            error, (AuthenticationError, AuthorizationError)):
                        raise error from None
            if result is not None and result.error_code not in _LEADER_MOVED:
                if result.error_code:
                    raise error_for(result.error_code, result.error_message)
                return int(result.low_watermark)
            if time.monotonic() > deadline:
                raise error_for(result.error_code if result is not None
                                else Code.LEADER_NOT_AVAILABLE,
                                result.error_message if result is not None
                                else f"{topic}-{partition} has no leader")
            time.sleep(ADMIN_RETRY_S)

    def describe_log_dirs(self) -> list[admin_pb2.DescribeLogDirsResponse]:
        """Every live broker's log directory: size and offsets of each partition it hosts.
        A broker that does not answer is left out; a refusal (DESCRIBE on the cluster is
        needed) is raised, as every broker would refuse alike."""
        self.metadata.refresh()
        out = []
        for _, address in sorted(self.metadata.brokers.items()):
            try:
                out.append(self._connections.admin(address).DescribeLogDirs(
                    admin_pb2.DescribeLogDirsRequest(), timeout=self.request_timeout_s))
            except grpc.RpcError as exc:
                error = translate_rpc_error(exc, address)
                if isinstance(error, (AuthenticationError, AuthorizationError)):
                    raise error from None
                continue
        return out

    # ------------------------------------------------------------------------- groups
    @property
    def groups(self) -> GroupAdmin:
        """Consumer group operations: list, describe (with lag), reset offsets, delete."""
        return GroupAdmin(self._connections, self.metadata, self.request_timeout_s)

    # ------------------------------------------------------------------------ cluster
    def describe_cluster(self) -> admin_pb2.DescribeClusterResponse:
        request = admin_pb2.DescribeClusterRequest()
        return self._call(
            lambda address: self._connections.admin(address).DescribeCluster(
                request, timeout=self.request_timeout_s
            )
        )

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
