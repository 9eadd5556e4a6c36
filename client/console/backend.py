"""The console's one door to the cluster: the SDK (Admin, GroupAdmin, Producer) and the
public gRPC API, over every bootstrap broker, so a page still answers while one is down.

Calls block (gRPC's sync stubs); server.py runs them on worker threads. Replies become dicts
in views.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import grpc

from raftka.client.admin import Admin
from raftka.client.cluster_view import ClusterSnapshot, snapshot_from
from raftka.client.console import views
from raftka.client.errors import BrokerNotAvailableError, error_for
from raftka.client.producer import Producer
from raftka.client.transport import Connections, bootstrap_list, translate_rpc_error
from raftka.proto.raftka.v1 import admin_pb2, broker_pb2, common_pb2

# Records one message-browser page may hold.
BROWSE_RECORDS_MAX = 500
# The first fetch of a page asks for this many bytes, each further one (the page is not
# full yet) for twice as many, up to the most (bytes): a page of 50 small records reads
# ~64 KiB of the partition, not 4 MiB of it (which the broker would decode, every record).
BROWSE_FETCH_FIRST_BYTES = 64 * 1024
BROWSE_FETCH_MAX_BYTES = 4 * 1024 * 1024
# How long one call to a broker may take before the next broker is tried (s).
CALL_TIMEOUT_S = 3.0
# How long a record produced from the UI may take to be acknowledged (s).
PRODUCE_TIMEOUT_S = 15.0
EARLIEST, LATEST = -2, -1


class ConsoleInputError(ValueError):
    """A page asked for something malformed (HTTP 400); the message says what."""


@dataclass(frozen=True, slots=True)
class BrowseRequest:
    topic: str
    partition: int
    start: str  # "earliest", "latest" (the newest `limit`), "offset" or "timestamp"
    value: int = 0  # the offset or timestamp (ms) for "offset" / "timestamp"
    limit: int = 50

    def validate(self) -> BrowseRequest:
        if self.start not in ("earliest", "latest", "offset", "timestamp"):
            raise ConsoleInputError(f"from must be earliest, latest, offset or timestamp, "
                                    f"got {self.start!r}")
        if not 1 <= self.limit <= BROWSE_RECORDS_MAX:
            raise ConsoleInputError(f"limit must be 1..{BROWSE_RECORDS_MAX}, got {self.limit}")
        if self.partition < 0:
            raise ConsoleInputError("partition must be >= 0")
        return self


class ClusterBackend:
    def __init__(self, bootstrap: str | list[str]) -> None:
        self.bootstrap = bootstrap_list(bootstrap)
        self.admin = Admin(self.bootstrap, request_timeout_ms=int(CALL_TIMEOUT_S * 3000))
        self._connections = Connections()  # the live poll's own channels
        self._producer: Producer | None = None
        self._producer_lock = threading.Lock()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
        self.admin.close()
        self._connections.close()

    # ------------------------------------------------------------------------ cluster
    def _newest_cluster(self) -> tuple[admin_pb2.DescribeClusterResponse, str]:
        """Ask every bootstrap broker; believe the newest metadata (a broker that just
        restarted answers from an old image until it has caught up)."""
        best: tuple[admin_pb2.DescribeClusterResponse, str] | None = None
        problems = []
        for address in self.bootstrap:
            try:
                described = self._connections.admin(address).DescribeCluster(
                    admin_pb2.DescribeClusterRequest(), timeout=CALL_TIMEOUT_S
                )
            except grpc.RpcError as exc:
                problems.append(str(translate_rpc_error(exc, address)))
                continue
            if best is None or described.metadata_offset > best[0].metadata_offset:
                best = (described, address)
        if best is None:
            raise BrokerNotAvailableError("no broker answered: " + "; ".join(problems))
        return best

    def _metadata(self, address: str) -> broker_pb2.MetadataResponse:
        return self._connections.broker(address).Metadata(
            broker_pb2.MetadataRequest(), timeout=CALL_TIMEOUT_S
        )

    def snapshot(self) -> ClusterSnapshot:
        """What `raftka watch` diffs (cluster_view.snapshot_from)."""
        described, address = self._newest_cluster()
        return snapshot_from(described, self._metadata(address), None)

    def overview(self) -> dict[str, Any]:
        described, address = self._newest_cluster()
        return views.overview(described, self._metadata(address))

    # ------------------------------------------------------------------------- topics
    def topics(self) -> list[dict[str, Any]]:
        listings = self.admin.list_topics(include_internal=True)
        _, address = self._newest_cluster()
        return views.topic_list(listings, self._metadata(address))

    def topic(self, name: str) -> dict[str, Any]:
        return views.topic_detail(self.admin.describe_topic(name))

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     configs: dict[str, str]) -> dict[str, Any]:
        if not name:
            raise ConsoleInputError("a topic needs a name")
        result = self.admin.create_topic(name, partitions, replication_factor, configs)
        return {"name": result.name, "topic_id": result.topic_id,
                "partitions": result.num_partitions,
                "replication_factor": result.replication_factor}

    def delete_topic(self, name: str) -> None:
        self.admin.delete_topic(name)

    def alter_configs(self, name: str, set_configs: dict[str, str], delete: list[str]) -> None:
        if not set_configs and not delete:
            raise ConsoleInputError("nothing to change: give configs to set or delete")
        self.admin.alter_configs(name, set_configs, delete)

    def add_partitions(self, name: str, count: int) -> None:
        self.admin.create_partitions(name, count)

    def delete_records(self, name: str, partition: int, before: int) -> int:
        return self.admin.delete_records(name, partition, before)

    # ----------------------------------------------------------------------- messages
    def _leader(self, topic: str, partition: int) -> str:
        metadata = self.admin.metadata
        metadata.refresh([topic])
        address = metadata.leader_address(topic, partition)
        if address is None:
            raise error_for(common_pb2.ErrorCode.LEADER_NOT_AVAILABLE,
                            f"{topic}-{partition} has no leader now")
        return address

    def _list_offset(self, address: str, topic: str, partition: int, spec: int) -> int:
        reply = self._connections.broker(address).ListOffsets(
            broker_pb2.ListOffsetsRequest(partitions=[broker_pb2.ListOffsetsPartition(
                topic=topic, partition=partition, timestamp_ms=spec)]),
            timeout=CALL_TIMEOUT_S,
        ).partitions[0]
        if reply.error_code:
            raise error_for(reply.error_code, reply.error_message)
        return int(reply.offset)

    def browse(self, request: BrowseRequest) -> dict[str, Any]:
        """Up to `limit` records of one partition from an offset, read from its leader with
        one small fetch (plus larger ones while the page is not full and records remain):
        a page, never the partition. The next page starts at `next_offset`."""
        request.validate()
        topic, partition = request.topic, request.partition
        address = self._leader(topic, partition)
        start_offset = self._list_offset(address, topic, partition, EARLIEST)
        end_offset = self._list_offset(address, topic, partition, LATEST)
        if request.start == "earliest":
            offset = start_offset
        elif request.start == "latest":
            offset = max(start_offset, end_offset - request.limit)
        elif request.start == "timestamp":
            offset = self._list_offset(address, topic, partition, max(0, request.value))
            offset = end_offset if offset < 0 else offset
        else:
            offset = min(max(request.value, start_offset), end_offset)
        records: list[dict[str, Any]] = []
        position = offset
        fetch_bytes = BROWSE_FETCH_FIRST_BYTES
        while position < end_offset and len(records) < request.limit:
            reply = self._connections.broker(address).Fetch(
                broker_pb2.FetchRequest(
                    replica_id=-1, max_wait_ms=0, max_bytes=fetch_bytes,
                    decode_records=True,
                    partitions=[broker_pb2.FetchPartition(
                        topic=topic, partition=partition, fetch_offset=position,
                        partition_max_bytes=fetch_bytes, current_leader_epoch=-1)],
                ),
                timeout=CALL_TIMEOUT_S,
            ).partitions[0]
            fetch_bytes = min(2 * fetch_bytes, BROWSE_FETCH_MAX_BYTES)
            if reply.error_code:
                raise error_for(reply.error_code, reply.error_message)
            fresh = [r for r in reply.records if r.offset >= position]
            if not fresh:
                break
            for record in fresh[: request.limit - len(records)]:
                records.append(views.record_view(record, partition))
                position = record.offset + 1  # the page ends here: the next one starts here
        return {
            "topic": topic, "partition": partition, "from_offset": offset,
            "log_start_offset": start_offset, "high_watermark": end_offset,
            "next_offset": position, "records": records,
        }

    def produce(self, topic: str, partition: int | None, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes | None]]) -> dict[str, Any]:
        with self._producer_lock:
            if self._producer is None:
                self._producer = Producer(self.bootstrap, acks="all", linger_ms=0,
                                          allow_auto_create_topics=False)
            producer = self._producer
        metadata = producer.send(topic, value=value, key=key, headers=headers,
                                 partition=partition).get(timeout=PRODUCE_TIMEOUT_S)
        return {"topic": metadata.topic, "partition": metadata.partition,
                "offset": metadata.offset, "timestamp_ms": metadata.timestamp_ms}

    # ------------------------------------------------------------------------- groups
    def groups(self) -> dict[str, Any]:
        return views.group_list(self.admin.groups.list_groups())

    def group(self, group_id: str) -> dict[str, Any]:
        groups = self.admin.groups
        description = groups.describe_group(group_id)
        return views.group_detail(description, groups.lag(description))

    def reset_offsets(self, group_id: str, topic: str, to: str, offset: int) -> dict[str, Any]:
        if to not in ("earliest", "latest", "offset"):
            raise ConsoleInputError(f"to must be earliest, latest or offset, got {to!r}")
        targets = self.admin.groups.reset_offsets(group_id, topic, to=to, offset=offset)
        return {"topic": topic, "offsets": {str(p): o for p, o in targets.items()}}

    def delete_group(self, group_id: str) -> None:
        self.admin.groups.delete_group(group_id)
