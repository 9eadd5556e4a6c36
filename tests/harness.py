"""Real broker processes on 127.0.0.1 for integration tests.

Every broker is a `python -m raftka broker` child process with its own data directory
under the test's tmp_path and ports no other run holds (each broker takes a block of five:
gRPC, Raft, Kafka, Prometheus metrics, replication listener). Processes are stopped by PID
when the test ends, pass or fail.

RAFTKA_TEST_TLS=1 runs every cluster made here with mutual TLS on its gRPC and Kafka
listeners and between its brokers (tests/tls_harness.py), and points the SDK of the test
process (and CLI children) at its CA and client certificate: the replication and failover
tests, run so, show that TLS between brokers changes nothing they check.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftka.cluster.cluster_auth import AUTH_HEADER, ClusterCredentials
from raftka.proto.raftka.v1 import admin_pb2, admin_pb2_grpc

PORTS_PER_BROKER = 5
TLS_MODE_ENV = "RAFTKA_TEST_TLS"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(p) for p in ports.read().split())
        return low, high
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port_block(count: int) -> int:
    """A base port such that base..base+count-1 are all free right now, chosen below the
    kernel's ephemeral range when there is room: a port picked there can be taken by some
    outgoing connection before the broker binds it."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    low, _ = _ephemeral_range()
    top = low - count if low - count > 15_000 else 60_000 - count
    for _ in range(500):
        base = rng.randrange(10_000, top)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port block found")


def write_secret_file(path: Path, value: str | None = None) -> Path:
    """A cluster secret file (mode 0600), random unless `value` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((value or secrets.token_hex(32)) + "\n")
    path.chmod(0o600)
    return path


class ProcessExitedError(RuntimeError):
    """A broker the test waits for has exited; waiting longer cannot help."""


def wait_for(
    condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05
) -> object:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except ProcessExitedError:
            raise
        except Exception as exc:  # conditions may poll services that are still starting
            last_error = exc
        time.sleep(interval_s)
    raise TimeoutError(
        f"timed out after {timeout_s}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


class BrokerProcess:
    def __init__(
        self,
        broker_id: int,
        data_dir: Path,
        port: int,
        voters: str | None,
        settings: dict[str, str],
        secret_file: Path | None = None,
    ) -> None:
        self.broker_id = broker_id
        # The cluster's shared secret; None starts the broker without one.
        self.secret_file = secret_file
        self.data_dir = data_dir
        self.port = port
        self.raft_port = port + 1
        self.kafka_port = port + 2
        self.metrics_port = port + 3
        self.replication_port = port + 4  # the broker's default replication.listen
        self.voters = voters
        self.settings = settings
        self.log_path = data_dir.parent / f"broker-{broker_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        # TLS to this broker's gRPC listener (tests/tls_harness.py); None: plaintext.
        self.credentials: grpc.ChannelCredentials | None = None

    def channel(self) -> grpc.Channel:
        """A channel to this broker's gRPC listener, TLS when it serves TLS."""
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "raftka",
            "broker",
            "--id",
            str(self.broker_id),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.address,
            "--raft-listen",
            f"127.0.0.1:{self.raft_port}",
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
        ]
        if "listeners" not in self.settings:  # named Kafka listeners replace the port
            command += ["--kafka-port", str(self.kafka_port)]
        if self.voters:
            command += ["--voters", self.voters]
        if self.secret_file is not None:
            command += ["--cluster-secret-file", str(self.secret_file)]
        for key, value in self.settings.items():
            command += ["--set", f"{key}={value}"]
        return command

    def start(self) -> None:
        assert not self.running, f"broker {self.broker_id} is already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (a crash)."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM and wait; returns the exit code. A broker still running after timeout_s
        dumps its threads' stacks (SIGUSR1) into its log, which the error shows, and is
        killed."""
        assert self.process is not None
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            seen = len(self.log_text())
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(1)
            stacks = self.log_text()[seen:]
            self.kill()
            tail = self.log_text()[max(0, seen - 6000):seen]
            raise AssertionError(
                f"broker {self.broker_id} did not stop within {timeout_s} s of SIGTERM; "
                f"its log's end:\n{tail}\nits stacks:\n{stacks}") from None

    def serving(self) -> bool:
        """The broker's own health check: SERVING once this incarnation is unfenced."""
        try:
            with self.channel() as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="raftka.v1.BrokerService"), timeout=2
                )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LocalCluster:
    """N brokers, the first `voter_count` of which vote in the metadata quorum."""

    def __init__(
        self,
        root: Path,
        nodes: int = 1,
        settings: dict[str, str] | None = None,
        voter_count: int | None = None,
    ) -> None:
        base = free_port_block(nodes * PORTS_PER_BROKER)
        voter_count = min(nodes, 3) if voter_count is None else voter_count
        ports = [base + i * PORTS_PER_BROKER for i in range(nodes)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[i] + 1}" for i in range(voter_count))
        defaults = {
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "250",
            "log.flush.check.interval.ms": "200",
        }
        defaults.update(settings or {})
        self.secret_file = write_secret_file(root / "cluster.secret")
        self.brokers = {
            i + 1: BrokerProcess(
                i + 1, root / f"broker-{i + 1}", ports[i], voters, defaults, self.secret_file
            )
            for i in range(nodes)
        }
        if os.environ.get(TLS_MODE_ENV) == "1":
            from tests.tls_harness import client_options, secure

            ca = secure(self, root, client_auth="required")
            os.environ.update(client_options(ca).environment())

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def internal_metadata(
        self, method: str, extra: tuple[tuple[str, str], ...] = (), broker_id: int = 0
    ) -> tuple[tuple[str, str], ...]:
        """gRPC metadata proving cluster membership for `method` (/raftka.v1.Service/Rpc), as
        a broker of this cluster would send it: for tests that play a broker."""
        credentials = ClusterCredentials(self.secret_file.read_bytes())
        token = credentials.token(method, broker_id, int(time.time() * 1000))
        return ((AUTH_HEADER, token), *extra)

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka wire-protocol listeners, for unmodified Kafka clients."""
        return ",".join(f"127.0.0.1:{b.kafka_port}" for b in self.brokers.values())

    def start(self, ids: Iterable[int] | None = None) -> None:
        for broker_id in ids or self.brokers:
            self.brokers[broker_id].start()

    def describe(
        self, via: int | None = None, timeout_s: float = 2.0
    ) -> admin_pb2.DescribeClusterResponse:
        candidates = [self.brokers[via]] if via else [b for b in self.brokers.values() if b.running]
        last: Exception | None = None
        for broker in candidates:
            try:
                with broker.channel() as channel:
                    return admin_pb2_grpc.AdminServiceStub(channel).DescribeCluster(
                        admin_pb2.DescribeClusterRequest(), timeout=timeout_s
                    )
            except grpc.RpcError as exc:
                last = exc
        raise RuntimeError(f"no broker answered DescribeCluster: {last}")

    def wait_ready(self, ids: Iterable[int] | None = None, timeout_s: float = 30) -> None:
        """Until the given brokers are registered and unfenced and a controller exists, and
        each broker says so itself (its health check). The metadata alone is not enough after
        a restart: while the journal replays, the old incarnation shows as unfenced before
        the rest of the metadata (its topics) is back."""
        wanted = set(ids or [i for i, b in self.brokers.items() if b.running])

        def ready() -> bool:
            for broker_id in wanted:
                if not self.brokers[broker_id].running:
                    raise ProcessExitedError(
                        f"broker {broker_id} exited:\n" + self.brokers[broker_id].log_text()[-3000:]
                    )
            response = self.describe()
            unfenced = {b.endpoint.broker_id for b in response.brokers if not b.fenced}
            if response.controller_id < 0 or not wanted <= unfenced:
                return False
            return all(self.brokers[broker_id].serving() for broker_id in wanted)

        wait_for(ready, timeout_s, f"brokers {sorted(wanted)} to be ready")

    def stop_all(self) -> None:
        for broker in self.brokers.values():
            if broker.running:
                broker.signal(signal.SIGKILL)
        for broker in self.brokers.values():
            if broker.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    broker.process.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- broker {i} ---\n{b.log_text()[-4000:]}" for i, b in self.brokers.items()
        )
