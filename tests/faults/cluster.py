"""Brokers in network namespaces: tests/harness.py's BrokerProcess and LocalCluster, each
broker listening (gRPC, Raft, Kafka) on its own namespace's address instead of 127.0.0.1.

Every broker uses the same ports (its address is its own), so no port hunting is needed;
the voters list names the namespace addresses, and every broker gets the cluster secret
file as in LocalCluster. The broker runs as `ip netns exec <ns> python -m raftka broker
...`; `ip netns exec` execs the command, so the Popen pid is the broker's own and the
nemesis's SIGKILL/SIGSTOP/SIGCONT reach it directly.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.netns import FaultNetwork
from tests.harness import BrokerProcess, LocalCluster, write_secret_file

GRPC_PORT = 9090
RAFT_PORT = 9091
KAFKA_PORT = 9092


class NamespacedBroker(BrokerProcess):
    def __init__(
        self,
        broker_id: int,
        data_dir: Path,
        network: FaultNetwork,
        voters: str,
        settings: dict[str, str],
        secret_file: Path,
    ) -> None:
        super().__init__(broker_id, data_dir, GRPC_PORT, voters, settings, secret_file)
        self.network = network
        self.host = network.address(broker_id)
        self.raft_port = RAFT_PORT
        self.kafka_port = KAFKA_PORT

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kafka_address(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def command(self) -> list[str]:
        command = super().command()
        # the base class binds Raft on 127.0.0.1: this broker's Raft address is its own
        at = command.index("--raft-listen")
        command[at + 1] = f"{self.host}:{self.raft_port}"
        return self.network.command_prefix(self.broker_id) + command

    @property
    def partition_dirs(self) -> Path:
        return self.data_dir / "logs"


class NamespacedCluster(LocalCluster):
    """`nodes` brokers, the first `voter_count` voting in the metadata quorum, each in the
    namespace that `network` made for it. The network must be created first."""

    def __init__(
        self,
        root: Path,
        network: FaultNetwork,
        settings: dict[str, str] | None = None,
        voter_count: int | None = None,
    ) -> None:
        # LocalCluster.__init__ picks 127.0.0.1 ports; only its methods are reused here.
        ids = network.broker_ids
        voter_count = min(len(ids), 3) if voter_count is None else voter_count
        voters = ",".join(f"{i}@{network.address(i)}:{RAFT_PORT}" for i in ids[:voter_count])
        defaults = {
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "250",
            "log.flush.check.interval.ms": "200",
        }
        defaults.update(settings or {})
        self.network = network
        self.voter_ids = ids[:voter_count]
        self.secret_file = write_secret_file(root / "cluster.secret")
        self.brokers: dict[int, BrokerProcess] = {
            i: NamespacedBroker(
                i, root / f"broker-{i}", network, voters, defaults, self.secret_file
            )
            for i in ids
        }

    def broker(self, broker_id: int) -> NamespacedBroker:
        broker = self.brokers[broker_id]
        assert isinstance(broker, NamespacedBroker)
        return broker

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(self.broker(i).kafka_address for i in self.brokers)
