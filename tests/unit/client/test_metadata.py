"""The SDK's cluster view: a dead broker is asked last, a silent one is given up on after a
short per-attempt timeout, and leader hints are taken only when newer."""

from __future__ import annotations

import grpc
import pytest

from raftka.client.errors import BrokerNotAvailableError
from raftka.client.metadata import METADATA_ATTEMPT_TIMEOUT_S, ClusterMetadata
from raftka.proto.raftka.v1 import broker_pb2, common_pb2


class Refused(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "failed to connect to all addresses; last error: Connection refused"


class Stub:
    def __init__(self, log, address, up):
        self._log, self._address, self._up = log, address, up

    def Metadata(self, request, timeout):
        self._log.append((self._address, timeout))
        if not self._up:
            raise Refused()
        response = broker_pb2.MetadataResponse(cluster_id="c", controller_id=2)
        response.brokers.add(broker_id=2, host="b", port=1)
        topic = response.topics.add(name="t")
        topic.partitions.add(partition=0, leader_id=2, leader_epoch=4, replicas=[1, 2],
                             isr=[1, 2])
        return response


class Connections:
    def __init__(self, down):
        self.down = set(down)
        self.calls: list[tuple[str, float]] = []

    def broker(self, address):
        return Stub(self.calls, address, address not in self.down)


def test_a_dead_broker_is_asked_after_the_others_and_named_once():
    connections = Connections(down={"a:1"})
    metadata = ClusterMetadata(["a:1", "b:1"], connections, request_timeout_s=30)  # type: ignore[arg-type]
    metadata.refresh()
    metadata.refresh()
    assert [address for address, _ in connections.calls] == ["a:1", "b:1", "b:1"]
    assert all(timeout == METADATA_ATTEMPT_TIMEOUT_S for _, timeout in connections.calls)
    connections.down.add("b:1")
    with pytest.raises(BrokerNotAvailableError) as failure:
        metadata.refresh()
    message = str(failure.value)
    assert message.count("a:1") == 1 and message.count("b:1") == 1, message
    assert "connection refused" in message


def test_leader_hints_are_taken_only_when_newer_and_reachable():
    metadata = ClusterMetadata(["b:1"], Connections(down=()), request_timeout_s=30)  # type: ignore[arg-type]
    metadata.refresh()
    assert not metadata.use_leader_hint("t", 0, 3, 4)  # same epoch: not newer
    assert not metadata.use_leader_hint("t", 0, 3, 5)  # newer, but where is broker 3?
    endpoint = common_pb2.BrokerEndpoint(broker_id=3, host="c", port=1)
    assert metadata.use_leader_hint("t", 0, 3, 5, [endpoint])
    assert metadata.leader_address("t", 0) == "c:1"
    assert not metadata.use_leader_hint("t", 0, 2, 4)  # older again: ignored
    assert not metadata.use_leader_hint("t", 7, 3, 9)  # no such partition
