"""A cluster of broker processes on this machine: layout, ports, start, stop, kill.

Layout under the data directory (kept between runs, so `raftka cluster up` on the same
directory restarts the same cluster with its data):

    cluster.json        nodes, voters, ports and settings, written on the first run
    cluster.secret      the brokers' shared secret (mode 0600, made on the first run): Raft
                        and broker-to-broker calls are authenticated with it
    node-N/             broker N's data directory (logs/, metadata/)
    node-N.log          broker N's output
    node-N.pid          broker N's process id while it runs
    tls/                with `cluster up --tls`: the local CA, each broker's certificate and
                        key and a client certificate (client/local_ca.py)

Ports: broker N uses base + 10*(N-1) for gRPC, +1 for Raft, +2 for the Kafka listener and
+3 for Prometheus metrics (GET /metrics) and +4 for the replication listener (followers copy
its logs there), so with the default base 9090 the first broker answers gRPC on 9090, Kafka
on 9092, metrics on 9093 and replication on 9094.

Which process is a broker: the command that started it holds its process handle (Popen)
and judges it by that alone — `cluster up` while it supervises, `cluster start` while it
waits for the broker to be ready — so no start-up race can make a live broker look dead.
Other commands (kill, stop, status) go by `node-N.pid` and check in /proc that the PID still
runs this broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raftka.client.tls_options import TlsOptions

if TYPE_CHECKING:  # imported when used: `cryptography` is only needed for --tls
    from raftka.client.local_ca import LocalCa

DEFAULT_DATA_DIR = "raftka-data"
DEFAULT_BASE_PORT = 9090
PORT_STRIDE = 10
LAYOUT_FILE = "cluster.json"
SECRET_FILE = "cluster.secret"
SECRET_BYTES = 32
# How long pid_of waits for a just-started child to finish exec (s).
EXEC_SETTLE_S = 1.0
# What a local dev cluster runs with unless told otherwise: Kafka-safe replication.
DEFAULT_SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
}


class LocalClusterError(RuntimeError):
    """The local cluster's files or processes are not as expected; the message says how."""


@dataclass(frozen=True)
class NodeSpec:
    broker_id: int
    grpc_port: int
    raft_port: int
    kafka_port: int
    metrics_port: int
    replication_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def kafka_address(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"


@dataclass(frozen=True)
class ClusterLayout:
    nodes: int
    voters: int
    base_port: int
    settings: dict[str, str] = field(default_factory=dict)
    # TLS on every gRPC and Kafka listener and between brokers (`cluster up --tls`); the
    # CLI run against this directory then uses TLS by itself.
    tls: bool = False

    def node(self, broker_id: int) -> NodeSpec:
        if not 1 <= broker_id <= self.nodes:
            raise LocalClusterError(
                f"no broker {broker_id}: this cluster has brokers 1..{self.nodes}"
            )
        base = self.base_port + PORT_STRIDE * (broker_id - 1)
        return NodeSpec(broker_id, base, base + 1, base + 2, base + 3, base + 4)

    def all_nodes(self) -> list[NodeSpec]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    @property
    def voters_spec(self) -> str:
        return ",".join(
            f"{n.broker_id}@127.0.0.1:{n.raft_port}" for n in self.all_nodes()[: self.voters]
        )

    @property
    def bootstrap(self) -> str:
        """Every broker's gRPC address: clients carry on when any one of them is down."""
        return ",".join(n.address for n in self.all_nodes())

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker's Kafka listener, for Kafka clients (bootstrap.servers)."""
        return ",".join(n.kafka_address for n in self.all_nodes())


TLS_DIR = "tls"


def recorded_bootstrap(data_dir: str | Path) -> str | None:
    """The gRPC bootstrap of the local cluster in `data_dir` (all its brokers, from its
    cluster.json), or None when there is none there."""
    local = LocalCluster(data_dir)
    try:
        return local.load_layout().bootstrap
    except (LocalClusterError, ValueError, TypeError, OSError):
        return None


def recorded_tls(data_dir: str | Path) -> TlsOptions | None:
    """The TLS options to reach the local cluster in `data_dir` (its CA and client
    certificate) when it runs with TLS, else None."""
    local = LocalCluster(data_dir)
    try:
        layout = local.load_layout()
    except (LocalClusterError, ValueError, TypeError, OSError):
        return None
    return local.client_tls() if layout.tls else None


class LocalCluster:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir).resolve()

    # ---------------------------------------------------------------------- layout
    def layout_path(self) -> Path:
        return self.root / LAYOUT_FILE

    def load_layout(self) -> ClusterLayout:
        try:
            data = json.loads(self.layout_path().read_text())
        except FileNotFoundError:
            raise LocalClusterError(
                f"no cluster in {self.root}: run `raftka cluster up --data-dir {self.root}` first"
            ) from None
        return ClusterLayout(**data)

    def create_or_load(
        self,
        nodes: int | None,
        base_port: int | None,
        settings: dict[str, str],
        voters: int | None = None,
        tls: bool = False,
    ) -> ClusterLayout:
        """`tls`: turn TLS on (it stays on for this directory once recorded)."""
        if self.layout_path().exists():
            layout = self.load_layout()
            if nodes is not None and nodes != layout.nodes:
                raise LocalClusterError(
                    f"{self.root} holds a {layout.nodes}-node cluster; use another --data-dir "
                    f"for {nodes} nodes"
                )
            if base_port is not None and base_port != layout.base_port:
                raise LocalClusterError(
                    f"{self.root} uses base port {layout.base_port}; omit --base-port or use "
                    "another --data-dir"
                )
            if settings or (tls and not layout.tls):
                layout = ClusterLayout(
                    layout.nodes, layout.voters, layout.base_port, {**layout.settings, **settings},
                    layout.tls or tls,
                )
        else:
            count = nodes or 3
            if not 1 <= count <= 9:
                raise LocalClusterError(f"--nodes must be 1..9, got {count}")
            voter_count = voters or min(count, 3)
            merged = dict(DEFAULT_SETTINGS)
            if count < 3:
                merged.update(
                    {
                        "default.replication.factor": str(count),
                        "min.insync.replicas": "1",
                        "offsets.topic.replication.factor": str(count),
                    }
                )
            merged.update(settings)
            layout = ClusterLayout(count, voter_count, base_port or DEFAULT_BASE_PORT, merged,
                                   tls)
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout_path().write_text(json.dumps(asdict(layout), indent=2) + "\n")
        return layout

    # ------------------------------------------------------------------------ files
    def secret_path(self) -> Path:
        return self.root / SECRET_FILE

    def ensure_secret(self) -> Path:
        """The cluster secret file, made (mode 0600) if this cluster has none yet."""
        path = self.secret_path()
        write_secret_file(path)
        return path

    def tls_material(self) -> LocalCa:
        from raftka.client.local_ca import LocalCa

        return LocalCa(str(self.root / TLS_DIR))

    def ensure_tls(self, layout: ClusterLayout) -> LocalCa:
        """The CA and certificates, made on the first TLS run (the CA is kept after that,
        so clients that trust it keep working)."""
        material = self.tls_material()
        wanted = [material.ca, material.client_cert, material.client_key]
        wanted += [path for n in layout.all_nodes() for path in material.broker(n.broker_id)]
        if not all(os.path.exists(path) for path in wanted):
            from raftka.client.local_ca import write_local_ca

            write_local_ca(material.directory, {n.broker_id: "127.0.0.1"
                                                for n in layout.all_nodes()})
        return material

    def client_tls(self) -> TlsOptions:
        material = self.tls_material()
        return TlsOptions(material.ca, material.client_cert, material.client_key)

    def node_dir(self, broker_id: int) -> Path:
        return self.root / f"node-{broker_id}"

    def log_path(self, broker_id: int) -> Path:
        return self.root / f"node-{broker_id}.log"

    def pid_path(self, broker_id: int) -> Path:
        return self.root / f"node-{broker_id}.pid"

    def pid_of(self, broker_id: int) -> int | None:
        """PID of broker N if a process with that PID runs *this* broker; else None."""
        try:
            pid = int(self.pid_path(broker_id).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        deadline = time.monotonic() + EXEC_SETTLE_S
        while True:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (FileNotFoundError, PermissionError):
                return None
            # Right after start the child can still be in exec, with an empty cmdline:
            # that is a broker starting, not one that exited.
            if raw or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        cmdline = raw.split(b"\0")
        expected = str(self.node_dir(broker_id)).encode()
        if expected not in cmdline:
            return None
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
        return None if status and status[0] == "Z" else pid

    # -------------------------------------------------------------------- processes
    def command(self, layout: ClusterLayout, broker_id: int) -> list[str]:
        node = layout.node(broker_id)
        command = [
            sys.executable,
            "-m",
            "raftka",
            "broker",
            "--id",
            str(broker_id),
            "--data-dir",
            str(self.node_dir(broker_id)),
            "--listen",
            node.address,
            "--raft-listen",
            f"127.0.0.1:{node.raft_port}",
            "--voters",
            layout.voters_spec,
            "--metrics-listen",
            f"127.0.0.1:{node.metrics_port}",
            "--cluster-secret-file",
            str(self.ensure_secret()),
        ]
        transport = {k.replace("-", "_").replace(".", "_"): v
                     for k, v in layout.settings.items()}.get("replication_transport", "stream")
        if transport != "grpc":  # else no replication listener runs
            command += ["--set", f"replication.listen=127.0.0.1:{node.replication_port}"]
        if layout.tls:
            material = self.ensure_tls(layout)
            cert, key = material.broker(broker_id)
            # A listener named SSL is SSL (Kafka's rule); ssl.client.auth can be raised to
            # required with --set, which comes after these.
            for setting in (f"listeners=SSL://127.0.0.1:{node.kafka_port}",
                            "grpc.security.protocol=SSL", f"ssl.certificate.location={cert}",
                            f"ssl.key.location={key}", f"ssl.ca.location={material.ca}"):
                command += ["--set", setting]
        else:
            command += ["--kafka-port", str(node.kafka_port)]
        for key, value in layout.settings.items():
            command += ["--set", f"{key}={value}"]
        return command

    def start_node(
        self, layout: ClusterLayout, broker_id: int, *, detach: bool
    ) -> subprocess.Popen[bytes]:
        running = self.pid_of(broker_id)
        if running is not None:
            raise LocalClusterError(f"broker {broker_id} is already running (pid {running})")
        self.node_dir(broker_id).mkdir(parents=True, exist_ok=True)
        with open(self.log_path(broker_id), "ab") as log:
            process = subprocess.Popen(
                self.command(layout, broker_id),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
        self.pid_path(broker_id).write_text(f"{process.pid}\n")
        return process

    def kill_node(self, broker_id: int, signum: int = signal.SIGKILL) -> int:
        pid = self.pid_of(broker_id)
        if pid is None:
            raise LocalClusterError(f"broker {broker_id} is not running")
        os.kill(pid, signum)
        return pid

    def stop_all(
        self,
        layout: ClusterLayout,
        timeout_s: float = 20,
        children: Mapping[int, subprocess.Popen[bytes]] | None = None,
    ) -> list[int]:
        """SIGTERM every running broker of this cluster, wait, SIGKILL stragglers; the ids
        of those that ran. `children`: brokers this process started, stopped by their
        handles whatever their pid files say (so a failed `cluster up` leaves none behind)."""
        targets: dict[int, set[int]] = {}
        for i in range(1, layout.nodes + 1):
            pid = self.pid_of(i)
            if pid is not None:
                targets.setdefault(i, set()).add(pid)
        for i, child in (children or {}).items():
            if child.poll() is None:
                targets.setdefault(i, set()).add(child.pid)
        handles = {child.pid: child for child in (children or {}).values()}
        everyone = {pid for pids in targets.values() for pid in pids}
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_alive(p, handles) for p in everyone):
            reap_children()
            time.sleep(0.1)
        for pid in everyone:
            if _alive(pid, handles):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for child in handles.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        reap_children()
        for i in targets:
            self.pid_path(i).unlink(missing_ok=True)
        return sorted(targets)


def _alive(pid: int, handles: Mapping[int, subprocess.Popen[bytes]]) -> bool:
    """Whether `pid` still runs: by its handle when we started it, else by /proc (a zombie
    counts as gone)."""
    if pid in handles:
        return handles[pid].poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except OSError:
        return False
    return bool(state) and state[0] != "Z"


def write_secret_file(path: Path) -> bool:
    """Write a new random cluster secret to `path` (mode 0600) unless the file exists;
    True if it was written. Never overwrites: a changed secret locks brokers out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(SECRET_BYTES) + "\n")
    return True


def reap_children() -> None:
    """Collect exited child brokers so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
