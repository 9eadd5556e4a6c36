"""Raftka (gRPC SDK, pre-built batches, confluent-kafka via the Kafka listener) and NATS
JetStream R3 side by side, in one run on the same workload, with the issue 17 targets.

    python bench/compare.py [--records 300000] [--size 100] [--set KEY=VALUE ...]
                            [--only ROWS] [--skip ROWS] [--tree PATH] [--profile]
                            [--json] [--markdown FILE]

Why one run: this 2-core machine is shared and noisy, so figures from different sittings do
not compare; a ratio taken inside one run does. One Raftka cluster (3 brokers, RF=3,
acks=all, min.insync.replicas=2, topics of 3 partitions) and one NATS JetStream cluster (3
nats-server processes, a stream of 3 replicas on file storage; started just before the
first NATS row and stopped after the last) run on free ports below the ephemeral range, and
these rows run one after the other, each client a process of its own (so its CPU and its
py-spy profile are its own):

  batches        `raftka bench produce --mode batches --rpc stream`: pre-built RecordBatch
                 v2 batches on the ProduceStream (the SDK producer's RPC), 4 in flight
  batches-unary  the same with a unary Produce call per batch (the figure before 2026-12-04;
                 a --tree older than that has no --rpc: skip both there, or run the
                 batches row with that tree's own compare.py)
  sdk-send       `raftka bench produce --mode sdk`: Producer.send() per record
  sdk-send-0.5ms the same with --switch-interval-ms 0.5: the GIL handed to the producer's
                 sender and reply threads within 0.5 ms instead of Python's 5 ms (README,
                 "Throughput and the GIL"); a setting of the application, not of the SDK
  sdk-send-many  `raftka bench produce --mode sdk-many`: Producer.send_many()
  sdk-consume    `raftka bench consume --mode sdk` of the batches topic
  raw-fetch      `raftka bench consume --mode raw`: fetches without decoding
  kafka-produce  confluent-kafka through the Kafka listener (bench/kafka_bench.py)
  kafka-consume  confluent-kafka, assigned partitions, from offset 0
  nats-publish   nats-py js.publish_async, acks batched by a window (bench/nats_bench.py)
  nats-consume   nats-py pull consumer (ack policy none) fetching batches of the stream
  latency-1000, latency-10000
                 SDK acks=all open-loop produce / end-to-end latency (bench/latency.py)
  latency-10000-kafka
                 the same with confluent-kafka through the Kafka listener producing
                 (bench/latency.py --client kafka): what the client and protocol add
  sync-sdk, sync-kafka
                 one send, wait for its ack, repeat: SDK and confluent-kafka, acks=all
                 (bench/sync_send_latency.py)

For every row: records/s, MB/s (10^6 bytes of values), and CPU seconds per million records of
the client and of each server process (utime+stime from /proc/PID/stat before and after the
row; the client's own process_time() of the measured part when it reports one, else its
whole rusage). The topic's partition leaders are listed per row. The latency rows' consumer
child (bench/latency.py) is not in the client's CPU.

--profile: py-spy (`record -p PID --native --threads -r RATE -f raw`) samples the client and
every server process during each row; each profile is summarized as the top frames by own
time, leaving out samples whose innermost frame only waits (epoll_wait, poll/select,
nanosleep, futex and pthread condition waits, semaphore waits, Python's selectors.select,
threading waits, queue.get — see bench/compare_report.py's IDLE_* sets) and interpreter
start-up (importlib). "Busy" still holds blocking I/O calls (fsync, write, sendmsg): wall
time of a thread, not only CPU. py-spy stops each process RATE times a second to unwind its
stacks, so a profiled run's throughput is far lower (pre-built batches 330,000 -> 20,000
rec/s at 100 Hz in one loaded run): take figures from a run without --profile.
Why --native: without it a thread blocked in C (a gRPC call, a C queue's get, select.poll)
shows as busy in the Python frame that called in; with it the kernel wait is the leaf and is
dropped. Caveat: py-spy put 50-70% of the SDK consumer's busy samples in libpython's
gc_collect_main, yet turning the cyclic GC off cut that client's CPU by only ~20% (and the
producer's by nothing) in a side-by-side check, so read libpython frames' shares with care.

--tree PATH: the brokers and the clients (`raftka` imported from PATH) from another
checkout, e.g. `git archive main | tar -x -C /tmp/main-tree`, for before/after. This script,
its bench helpers, the brokers' command line (LocalCluster.command) and the latency rows'
consumer child stay this tree's.
--set KEY=VALUE: a broker setting (repeatable), passed to every broker as --set.
--pin-brokers: every broker pinned to one CPU (`cpu.affinity=auto`: broker N on the Nth
allowed CPU, in turn). --pin-clients: every `raftka bench` client row run on one CPU (`--cpu`):
the one the fewest brokers got, the lowest of those. Why pin Python processes at all:
raftka/cpuset.py. They are separate because on a 2-core machine they pull against each
other: pinned brokers cost less CPU per record, but a pinned producer then shares its core
with a broker that cannot move (BENCHMARKS.md, "Pinning each Python process to one core").
The kafka, NATS, latency and sync clients are never pinned, nor the NATS servers. A --tree
older than 2026-12-04 knows neither setting.
--only/--skip: comma-separated row names or groups (raftka, sdk, kafka, nats, latency,
sync). A consume row whose producing row is not selected fills its topic first, unmeasured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402,F401  (this tree's bench/, before --tree's raftka goes first)

# A row's client process imports raftka from the tree under test (--tree).
_TREE_ENV = "RAFTKA_COMPARE_TREE"
if os.environ.get(_TREE_ENV):
    sys.path.insert(0, os.environ[_TREE_ENV])
    # Bound now: every bench module puts this tree first on sys.path when imported.
    import raftka  # noqa: F401

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from bench import compare_report as report  # noqa: E402

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
SERVERS = ("server 1", "server 2", "server 3")
# The brokers' ids in the cluster this script starts (LocalCluster numbers them from 1).
BROKER_IDS = (1, 2, 3)
CPU_COLUMNS = ("client", *SERVERS)
# Longest wait for the brokers to register and be unfenced, and for a topic's leaders (s).
CLUSTER_READY_TIMEOUT_S = 120.0
TOPIC_READY_TIMEOUT_S = 60.0
# How often the start-up checks that no broker has exited while waiting for them (s).
READY_POLL_S = 2.0
# Longest a row's client may run (s): far above any row at the default sizes.
ROW_TIMEOUT_S = 1800.0
# Records per nats-py fetch() in nats-consume.
NATS_FETCH_BATCH = 5000
# Unacknowledged publishes in flight in nats-publish (bench/nats_bench.py's default).
NATS_WINDOW = 4000
# Records nats_bench.produce_to sends (and the stream holds) before timing starts.
NATS_WARMUP_RECORDS = 1000


@dataclass(frozen=True)
class RowSpec:
    name: str
    what: str
    tags: tuple[str, ...]
    fills: str = ""  # the topic (or stream) this row writes, for the rows that read it
    reads: str = ""


ROWS: tuple[RowSpec, ...] = (
    RowSpec("batches", "Raftka pre-built batches, ProduceStream, 4 in flight", ("raftka",),
            fills="batches"),
    RowSpec("batches-unary", "Raftka pre-built batches, unary Produce, 4 in flight",
            ("raftka",)),
    RowSpec("sdk-send", "Raftka SDK Producer.send()", ("raftka", "sdk")),
    RowSpec("sdk-send-0.5ms", "Raftka SDK Producer.send(), switch interval 0.5 ms",
            ("raftka", "sdk")),
    RowSpec("sdk-send-many", "Raftka SDK Producer.send_many()", ("raftka", "sdk")),
    RowSpec("sdk-consume", "Raftka SDK Consumer.poll()", ("raftka", "sdk"), reads="batches"),
    RowSpec("raw-fetch", "Raftka raw Fetch (no decoding)", ("raftka",), reads="batches"),
    RowSpec("kafka-produce", "confluent-kafka produce, Kafka listener", ("raftka", "kafka"),
            fills="kafka"),
    RowSpec("kafka-consume", "confluent-kafka consume, Kafka listener", ("raftka", "kafka"),
            reads="kafka"),
    RowSpec("nats-publish", "NATS JetStream R3 publish_async", ("nats",), fills="nats"),
    RowSpec("nats-consume", "NATS JetStream R3 pull consumer", ("nats",), reads="nats"),
    RowSpec("latency-1000", "SDK acks=all open loop, 1,000 rec/s", ("raftka", "latency")),
    RowSpec("latency-10000", "SDK acks=all open loop, 10,000 rec/s", ("raftka", "latency")),
    RowSpec("latency-10000-kafka", "confluent-kafka acks=all open loop, 10,000 rec/s",
            ("raftka", "kafka", "latency")),
    RowSpec("sync-sdk", "SDK sync send, acks=all", ("raftka", "sdk", "latency", "sync")),
    RowSpec("sync-kafka", "confluent-kafka sync send, acks=all",
            ("raftka", "kafka", "latency", "sync")),
)


def select_rows(only: str | None, skip: str | None) -> list[RowSpec]:
    """The rows --only/--skip leave (names or tags, comma-separated); ValueError on an
    unknown one."""
    known = {r.name for r in ROWS} | {t for r in ROWS for t in r.tags}

    def parse(text: str | None) -> set[str]:
        words = {w.strip() for w in (text or "").split(",") if w.strip()}
        unknown = words - known
        if unknown:
            raise ValueError(f"unknown row(s) {sorted(unknown)}; rows: "
                             f"{', '.join(r.name for r in ROWS)}; groups: "
                             f"{', '.join(sorted({t for r in ROWS for t in r.tags}))}")
        return words

    wanted, dropped = parse(only), parse(skip)

    def matches(row: RowSpec, words: set[str]) -> bool:
        return row.name in words or bool(words.intersection(row.tags))

    return [r for r in ROWS if (not wanted or matches(r, wanted)) and not matches(r, dropped)]


def pinned_client_cpu(allowed: frozenset[int], broker_ids: tuple[int, ...]) -> int:
    """The CPU for the client rows under --pin-clients: the one `cpu.affinity=auto` gave the
    fewest of the pinned `broker_ids` (the lowest of those), so the client shares a core
    with as few as it can."""
    from raftka import cpuset

    brokers_on = Counter(cpuset.auto_cpu(allowed, broker_id) for broker_id in broker_ids)
    return min(sorted(allowed), key=lambda cpu: brokers_on[cpu])


def parse_settings(items: list[str]) -> dict[str, str]:
    settings = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    return settings


# =========================================================================== client roles
# `compare.py --role NAME --params JSON` runs one client in a process of its own and prints
# one JSON line: its figures and the CPU its measured part used.
def _role_kafka_produce(p: dict[str, Any]) -> dict[str, Any]:
    from bench.kafka_bench import kafka_produce

    return kafka_produce(p["kafka_bootstrap"], p["topic"], p["records"], p["size"])


def _role_kafka_consume(p: dict[str, Any]) -> dict[str, Any]:
    from bench.kafka_bench import kafka_consume

    return kafka_consume(p["kafka_bootstrap"], p["topic"], p["records"], p["partitions"],
                         False)


def _role_nats_publish(p: dict[str, Any]) -> dict[str, Any]:
    from bench.nats_bench import produce_to

    return asyncio.run(produce_to(p["nats_url"], p["records"], p["size"], NATS_WINDOW))


async def _nats_consume(url: str, subject: str, records: int) -> dict[str, Any]:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from bench.nats_bench import connect

    nc = await connect(url)
    try:
        js = nc.jetstream(timeout=10)
        subscription = await js.pull_subscribe(
            subject, config=ConsumerConfig(ack_policy=AckPolicy.NONE,
                                           deliver_policy=DeliverPolicy.ALL))
        count = payload = 0
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while count < records and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                for message in await subscription.fetch(
                        min(NATS_FETCH_BATCH, records - count), timeout=2):
                    count += 1
                    payload += len(message.data)
        seconds = time.perf_counter() - started
        await subscription.unsubscribe()
    finally:
        await nc.close()
    if count < records:
        raise RuntimeError(f"only {count} of {records} records read from the stream")
    return {"records": count, "seconds": round(seconds, 3),
            "records_per_s": round(count / seconds), "mb_per_s": round(payload / seconds / 1e6, 2)}


def _role_nats_consume(p: dict[str, Any]) -> dict[str, Any]:
    from bench.nats_bench import PRODUCE_SUBJECT

    return asyncio.run(_nats_consume(p["nats_url"], PRODUCE_SUBJECT, p["records"]))


def _role_latency(p: dict[str, Any]) -> dict[str, Any]:
    from bench.latency import run_rate

    options = argparse.Namespace(seconds=p["seconds"], warmup_s=p["warmup_s"], size=p["size"],
                                 linger_ms=1, batch_size=262_144, partitions=p["partitions"],
                                 tick_ms=p["tick_ms"], client=p["client"],
                                 kafka_bootstrap=p["kafka_bootstrap"])
    figures = run_rate(p["bootstrap"], p["topic"], p["rate"], options)
    out: dict[str, Any] = {"records": figures["records"],
                           "rate": p["rate"], "consumer_saw": figures["consumer_saw"],
                           "worst_send_lag_ms": figures["worst_send_lag_ms"]}
    for kind in ("produce", "end_to_end"):
        for key, value in figures[f"{kind}_ms"].items():
            if key != "samples":
                out[f"{kind}_{key}_ms"] = value
    return out


def _role_sync(p: dict[str, Any]) -> dict[str, Any]:
    from bench.sync_send_latency import kafka_sends, percentiles, sdk_sends

    run = sdk_sends if p["client"] == "sdk" else kafka_sends
    samples = run(p["address"], p["topic"], "all", p["sends"])
    return {"records": len(samples),
            **{f"produce_{k}_ms": v for k, v in percentiles(samples).items()}}


ROLES = {
    "kafka-produce": _role_kafka_produce, "kafka-consume": _role_kafka_consume,
    "nats-publish": _role_nats_publish, "nats-consume": _role_nats_consume,
    "latency": _role_latency, "sync": _role_sync,
}


def run_role(name: str, params: dict[str, Any]) -> int:
    started = time.process_time()
    figures = ROLES[name](params)
    figures["client_cpu_s"] = round(time.process_time() - started, 3)
    print(json.dumps(figures), flush=True)
    return 0


# =========================================================================== processes
def cpu_s(pid: int) -> float:
    return report.cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text(), CLOCK_TICKS_PER_S)


@dataclass
class Profiler:
    """py-spy on a set of processes for the length of one row (stopped with SIGINT, on
    which py-spy writes what it has)."""

    rate_hz: int
    into: Path
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def attach(self, label: str, pid: int) -> None:
        out = self.into / f"{label.replace(' ', '-')}.txt"
        command = [PY_SPY, "record", "-p", str(pid), "-d", str(int(ROW_TIMEOUT_S)), "-r",
                   str(self.rate_hz), "-f", "raw", "-o", str(out), "--native", "--threads"]
        with open(out.with_suffix(".log"), "wb") as spy_log:
            self.spies[label] = (subprocess.Popen(command, stdout=spy_log,
                                                  stderr=subprocess.STDOUT), out)

    def stop(self, top: int) -> dict[str, dict[str, Any]]:
        summaries = {}
        for label, (spy, out) in self.spies.items():
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            if out.exists():
                summaries[label] = report.summarize_raw_profile(out.read_text(), top)
            else:
                problem = out.with_suffix(".log").read_text(errors="replace").strip()
                log(f"  no py-spy profile of the {label}: {problem.splitlines()[:1]}")
        self.spies.clear()
        return summaries


@dataclass
class Servers:
    """The server processes a row's CPU is counted for: column label -> pid."""

    pids: dict[str, int]
    python: bool = True  # py-spy can profile them (nats-server is Go: it cannot)

    def cpu(self) -> dict[str, float]:
        return {label: cpu_s(pid) for label, pid in self.pids.items()}


def run_client(command: list[str], env: dict[str, str], cwd: Path, servers: Servers,
               profiler: Profiler | None, top: int) -> dict[str, Any]:
    """One row: the client's JSON answer, with CPU per million records of every process."""
    before = servers.cpu()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        client = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        if profiler is not None:
            profiler.attach("client", client.pid)
            for label, pid in servers.pids.items() if servers.python else ():
                profiler.attach(label, pid)
        _, status, usage = os.wait4(client.pid, 0)
        client.returncode = os.waitstatus_to_exitcode(status)
        after = servers.cpu()
        profiles = profiler.stop(top) if profiler is not None else {}
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if client.returncode != 0:
        raise RuntimeError(f"{shlex.join(command[:6])} ... failed: {stderr[-2000:]}")
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{shlex.join(command[:6])} ... printed no JSON: {stdout[-500:]}")
    row: dict[str, Any] = json.loads(lines[-1])
    records = int(row["records"])
    client_s = float(row.get("client_cpu_s", usage.ru_utime + usage.ru_stime))
    row["cpu_s_per_m"] = {"client": report.cpu_per_million(0.0, client_s, records),
                          **{label: report.cpu_per_million(before[label], after[label], records)
                             for label in servers.pids}}
    if profiles:
        row["profiles"] = profiles
    return row


@dataclass
class RaftkaCluster:
    """Three brokers from `tree`, started detached, stopped by their handles."""

    scratch: Path
    tree: Path
    settings: dict[str, str]
    handles: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        from bench.cluster_timings import free_base_port
        from bench.sdk_compare import wait_for_brokers
        from raftka.client.local_cluster import LocalCluster

        self.local = LocalCluster(self.scratch / "raftka")
        self.layout = self.local.create_or_load(3, free_base_port(), self.settings)
        env = {**os.environ, "PYTHONPATH": str(self.tree)}
        for node in self.layout.all_nodes():
            self.local.node_dir(node.broker_id).mkdir(parents=True, exist_ok=True)
            with open(self.local.log_path(node.broker_id), "ab") as log:
                process = subprocess.Popen(
                    self.local.command(self.layout, node.broker_id), cwd=self.tree, env=env,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            self.handles[node.broker_id] = process
            self.local.pid_path(node.broker_id).write_text(f"{process.pid}\n")
        deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
        while True:
            for broker_id, process in self.handles.items():
                if process.poll() is not None:  # e.g. a --set it does not know
                    tail = self.local.log_path(broker_id).read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"broker {broker_id} exited ({process.returncode}):\n"
                                       f"{tail}")
            try:
                wait_for_brokers(self.layout.bootstrap, 3, READY_POLL_S)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(1.0)  # their heartbeats unfence them just after registering

    @property
    def servers(self) -> Servers:
        return Servers({f"server {b}": p.pid for b, p in self.handles.items()})

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.kafka_port}" for n in self.layout.all_nodes())

    def topic(self, name: str, partitions: int) -> str:
        """Create `name` (RF=3) and wait for its leaders: 'p0: broker 2, ...'."""
        from raftka.client.admin import Admin
        from raftka.client.errors import TopicAlreadyExistsError
        from raftka.client.metadata import ClusterMetadata
        from raftka.client.transport import Connections, bootstrap_list

        with Admin(self.layout.bootstrap) as admin, contextlib.suppress(
                TopicAlreadyExistsError):
            admin.create_topic(name, partitions, 3)
        connections = Connections()
        metadata = ClusterMetadata(bootstrap_list(self.layout.bootstrap), connections)
        deadline = time.monotonic() + TOPIC_READY_TIMEOUT_S
        try:
            while True:
                metadata.refresh([name])
                infos = metadata.topics.get(name, [])
                if len(infos) == partitions and all(i.leader_id > 0 and len(i.isr) == 3
                                                    for i in infos):
                    return ", ".join(f"p{i.partition}: broker {i.leader_id}"
                                     for i in sorted(infos, key=lambda i: i.partition))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {name} has no leaders and full ISR: {infos}")
                time.sleep(0.2)
        finally:
            connections.close()

    def stop(self) -> None:
        if hasattr(self, "layout"):
            self.local.stop_all(self.layout, children=self.handles)


@dataclass
class NatsCluster:
    scratch: Path

    def start(self) -> None:
        from bench.nats_bench import Cluster, create_stream, find_nats_server
        from tests.harness import free_port_block

        base = free_port_block(9)
        self.cluster = Cluster(find_nats_server(), self.scratch / "nats",
                               ports=list(range(base, base + 9)))
        self.cluster.configure()
        for name in self.cluster.nodes:
            self.cluster.start(name)

        async def form() -> str:
            await self.cluster.wait_ready(timeout=60)
            info = await create_stream(self.cluster, next(iter(self.cluster.nodes.values())).url)
            assert info.cluster is not None and info.cluster.leader is not None
            return info.cluster.leader

        self.leader = asyncio.run(form())

    @property
    def servers(self) -> Servers:
        return Servers({f"server {i}": node.process.pid
                        for i, node in enumerate(self.cluster.nodes.values(), 1)
                        if node.process is not None}, python=False)

    @property
    def leader_text(self) -> str:
        names = list(self.cluster.nodes)
        return f"stream leader: server {names.index(self.leader) + 1} ({self.leader})"

    def stop(self) -> None:
        if hasattr(self, "cluster"):
            self.cluster.stop_all()


# =========================================================================== the run
@dataclass
class Run:
    options: argparse.Namespace
    tree: Path
    scratch: Path
    raftka: RaftkaCluster | None = None
    nats: NatsCluster | None = None
    filled: set[str] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)
    # --pin-clients: the CPU of the `raftka bench` client rows (None: not pinned)
    client_cpu: int | None = None
    nats_version: str = ""

    def client_env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": f"{self.tree}{os.pathsep}{ROOT}"}
        if self.tree != ROOT:
            env[_TREE_ENV] = str(self.tree)
        return env

    def raftka_bench(self, args: list[str]) -> list[str]:
        assert self.raftka is not None
        pin = ["--cpu", str(self.client_cpu)] if self.client_cpu is not None else []
        return [sys.executable, "-m", "raftka", "bench", *args, *pin, "--bootstrap",
                self.raftka.layout.bootstrap, "--json"]

    def role(self, name: str, params: dict[str, Any]) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--role", name, "--params",
                json.dumps(params)]

    def command(self, spec: RowSpec) -> tuple[list[str], Servers, str]:
        """The client command of a row, the servers it runs against, and who leads what."""
        o = self.options
        n, size = str(o.records), str(o.size)
        if spec.name.startswith("nats"):
            assert self.nats is not None
            node = self.nats.cluster.nodes[self.nats.leader]
            params = {"nats_url": node.url, "records": o.records, "size": o.size}
            role = "nats-publish" if spec.name == "nats-publish" else "nats-consume"
            return self.role(role, params), self.nats.servers, self.nats.leader_text
        assert self.raftka is not None
        cluster = self.raftka
        topic = {"batches": "cmp-batches", "sdk-consume": "cmp-batches",
                 "raw-fetch": "cmp-batches", "kafka-consume": "cmp-kafka",
                 "kafka-produce": "cmp-kafka"}.get(spec.name, f"cmp-{spec.name}")
        partitions = 1 if spec.name.startswith("sync") else 3
        leaders = cluster.topic(topic, partitions)
        produce = ["produce", "--topic", topic, "--records", n, "--size", size, "--acks", "all",
                   "--partitions", str(partitions), "--replication-factor", "3", "--mode"]
        consume = ["consume", "--topic", topic, "--records", n, "--mode"]
        commands = {
            "batches": self.raftka_bench([*produce, "batches", "--rpc", "stream"]),
            "batches-unary": self.raftka_bench([*produce, "batches", "--rpc", "unary"]),
            "sdk-send": self.raftka_bench([*produce, "sdk"]),
            "sdk-send-0.5ms": self.raftka_bench([*produce, "sdk", "--switch-interval-ms",
                                                 "0.5"]),
            "sdk-send-many": self.raftka_bench([*produce, "sdk-many"]),
            "sdk-consume": self.raftka_bench([*consume, "sdk"]),
            "raw-fetch": self.raftka_bench([*consume, "raw"]),
        }
        if spec.name in commands:
            return commands[spec.name], cluster.servers, leaders
        kafka = {"kafka_bootstrap": cluster.kafka_bootstrap, "topic": topic,
                 "records": o.records, "size": o.size, "partitions": partitions}
        if spec.name.startswith("kafka"):
            return self.role(spec.name, kafka), cluster.servers, leaders
        if spec.name.startswith("latency"):
            params = {"bootstrap": cluster.layout.bootstrap, "topic": topic,
                      "kafka_bootstrap": cluster.kafka_bootstrap,
                      "client": "kafka" if spec.name.endswith("-kafka") else "sdk",
                      "rate": int(spec.name.split("-")[1]), "seconds": o.latency_seconds,
                      "warmup_s": 1.0, "size": o.size, "partitions": partitions,
                      "tick_ms": o.latency_tick_ms}
            return self.role("latency", params), cluster.servers, leaders
        client = spec.name.split("-")[1]
        address = cluster.layout.bootstrap if client == "sdk" else cluster.kafka_bootstrap
        params = {"client": client, "address": address, "topic": topic, "sends": o.sends}
        return self.role("sync", params), cluster.servers, leaders

    def measure(self, spec: RowSpec, profile: bool) -> dict[str, Any]:
        command, servers, leaders = self.command(spec)
        profiler = None
        if profile:
            into = (self.options.profile_dir or self.scratch / "profiles") / spec.name
            into.mkdir(parents=True, exist_ok=True)
            profiler = Profiler(self.options.profile_rate, into)
        unwritten = report.unwritten_mb(Path("/proc/meminfo").read_text())
        row = run_client(command, self.client_env(), self.tree, servers, profiler,
                         self.options.profile_top)
        row.update(name=spec.name, what=spec.what, leaders=leaders,
                   unwritten_mb_before=unwritten)
        if spec.fills:
            self.filled.add(spec.fills)
        return row

    def fill(self, source: str) -> None:
        """Write the records a consume row reads when their producing row is not selected."""
        producer = next(r for r in ROWS if r.fills == source)
        log(f"filling for the consume row: {producer.name} (not measured)")
        self.measure(producer, profile=False)

    def start_nats(self) -> None:
        """Just before the first NATS row: a JetStream cluster that has just started works
        for seconds (its meta group, the stream's replicas), so started with the others it
        ran beside the Raftka rows, unmeasured: every Raftka row was 0.68-0.81x its figure
        in the next run, the same but for this (BENCHMARKS.md, 2026-12-04, "A JetStream
        cluster just started")."""
        from bench.nats_bench import nats_server_version

        self.nats = NatsCluster(self.scratch)
        self.nats.start()
        self.nats_version = nats_server_version(self.nats.cluster.binary)

    def run(self, specs: list[RowSpec]) -> None:
        nats_started = False
        for index, spec in enumerate(specs):
            if "nats" in spec.tags and not nats_started:
                self.start_nats()
                nats_started = True
            if spec.reads and spec.reads not in self.filled:
                self.fill(spec.reads)
            log(f"{spec.name}: {spec.what}")
            row = self.measure(spec, self.options.profile)
            self.rows.append(row)
            log(f"  {summary_line(row)}")
            if self.nats is not None and not any("nats" in s.tags for s in specs[index + 1:]):
                # Its servers hold the stream of every NATS row and are not in the later
                # rows' CPU columns: stopped, so nothing unmeasured runs beside those rows.
                log("NATS rows done: stopping the NATS servers")
                self.nats.stop()
                self.nats = None


def log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary_line(row: dict[str, Any]) -> str:
    figures = [f"{k}={row[k]:,}" for k in ("records_per_s",) if k in row]
    figures += [f"{k}={row[k]}" for k in ("mb_per_s", "produce_p50_ms", "produce_p99_ms")
                if k in row]
    return f"{' '.join(figures)}  CPU-s/M {row['cpu_s_per_m']}"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def git_commit(tree: Path) -> str:
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        return f"(no git checkout at {tree})"
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


# =========================================================================== output
CPU_HEADERS = [*(f"CPU-s/M {c}" for c in CPU_COLUMNS), "CPU-s/M servers"]
UNWRITTEN_HEADER = "unwritten MB before"
THROUGHPUT_HEADERS = ["row", "what", "records", "records/s", "MB/s", *CPU_HEADERS,
                      UNWRITTEN_HEADER]
LATENCY_HEADERS = ["row", "what", "p50 ms", "p99 ms", "p99.9 ms", "e2e p99 ms", *CPU_HEADERS,
                   UNWRITTEN_HEADER]
TARGET_HEADERS = ["figure", "value", "target", "value / target", "met"]
PROFILE_HEADERS = ["row / process", "#", "own time", "frame"]


def leader_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"- {row['name']}: {row['leaders']}" for row in rows if row.get("leaders")]


def render(result: dict[str, Any], markdown: bool) -> str:
    rows = result["rows"]
    by_name = {row["name"]: row for row in rows}
    parts = [report.render_table(THROUGHPUT_HEADERS, report.throughput_body(rows, CPU_COLUMNS),
                                 markdown)]
    latency = report.latency_body(rows, CPU_COLUMNS)
    if latency:
        parts.append(report.render_table(LATENCY_HEADERS, latency, markdown))
    targets = report.target_body(by_name)
    if targets:
        parts.append(report.render_table(TARGET_HEADERS, targets, markdown))
    parts.append("Servers (CPU columns): Raftka rows broker 1..3, NATS rows nats-server n1..n3; "
                 "leaders per row:\n" + "\n".join(leader_lines(rows)))
    profiles = {f"{row['name']} {process}": summary for row in rows
                for process, summary in row.get("profiles", {}).items()}
    if profiles:
        parts.append(report.render_table(PROFILE_HEADERS,
                                         report.profile_body(profiles, result["profile_top"]),
                                         markdown))
    return "\n\n".join(parts)


def markdown_section(result: dict[str, Any]) -> str:
    o = result
    return "\n".join([
        "## Side by side: Raftka and NATS JetStream, one run (bench/compare.py)",
        "",
        f"Measured {o['date']} on this shared 2-core machine, **load average before: "
        f"{o['uptime_before'].split('load average:')[-1].strip()}**, after: "
        f"{o['uptime_after'].split('load average:')[-1].strip()}. Commit {o['commit']}"
        + (f", brokers and clients from {o['tree']}" if o["tree"] != str(ROOT) else "")
        + (f", broker settings {o['settings']}" if o["settings"] else "")
        + (f"; the `raftka bench` clients pinned to CPU {o['client_cpu']}"
           if o.get("client_cpu") is not None else "") + ".",
        "",
        "```",
        o["command"],
        "```",
        "",
        f"3 brokers, RF=3, acks=all, min.insync.replicas=2, topics of 3 partitions; NATS "
        f"JetStream {o.get('nats_version', '')} 3 servers, stream R3 on file storage; "
        f"{o['size']}-byte values, {o['records']:,} records per throughput row. CPU-s/M: CPU "
        "seconds (user+system) per million records, of the client process and of each server "
        "process during the row. Unwritten MB before: Dirty + Writeback of /proc/meminfo as "
        "the row started (earlier rows' data still going to disk, which competes with it).",
        "",
        render(result, markdown=True),
        "",
        "value / target: at or above 1 meets a ≥ target, at or below 1 a ≤ target (latency). "
        "Ratios are records/s of one row over another's in this run.",
        "",
        f"uptime before: `{o['uptime_before']}`  ",
        f"uptime after: `{o['uptime_after']}`",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000,
                        help="records per throughput row (default sized for a few minutes)")
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--latency-seconds", type=float, default=10.0,
                        help="per latency rate (the first second is not counted)")
    parser.add_argument("--latency-tick-ms", type=float, default=1.0,
                        help="the load generator's shortest sleep (bench/latency.py --tick-ms)")
    parser.add_argument("--sends", type=int, default=500, help="sync sends per client")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="broker setting (repeatable)")
    parser.add_argument("--pin-brokers", action="store_true",
                        help="every broker on one CPU (cpu.affinity=auto)")
    parser.add_argument("--pin-clients", action="store_true",
                        help="every raftka bench client row on one CPU (--cpu)")
    parser.add_argument("--only", help="rows or groups to run, comma-separated")
    parser.add_argument("--skip", help="rows or groups to leave out, comma-separated")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="run the brokers and clients from this checkout")
    parser.add_argument("--profile", action="store_true", help="py-spy every process per row")
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples/s")
    parser.add_argument("--profile-top", type=int, default=8, help="frames per profile")
    parser.add_argument("--profile-dir", type=Path,
                        help="keep the raw py-spy files here (ROW/PROCESS.txt)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write a BENCHMARKS.md section here")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.role:
        return run_role(options.role, json.loads(options.params or "{}"))
    try:
        specs = select_rows(options.only, options.skip)
        settings = parse_settings(options.settings)
    except ValueError as error:
        parser.error(str(error))
    if options.pin_brokers:
        settings.setdefault("cpu.affinity", "auto")
    if options.records < 1 or options.size < 1 or options.sends < 1:
        parser.error("--records, --size and --sends must be >= 1")
    if options.latency_seconds <= 1.0:
        parser.error("--latency-seconds must be more than the 1 s warm-up")
    if not specs:
        parser.error("--only/--skip left no rows")
    tree = options.tree.resolve()
    if not (tree / "raftka" / "__init__.py").exists():
        parser.error(f"--tree {tree}: no raftka package there")
    if options.profile and not Path(PY_SPY).exists():
        parser.error(f"--profile needs py-spy at {PY_SPY}")
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/compare.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "uptime_before": uptime(), "commit": git_commit(ROOT), "tree": str(tree),
        "settings": settings, "records": options.records, "size": options.size,
        "profile_top": options.profile_top,
    }
    # SIGTERM unwinds through the finally below, which stops every server this run started.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(options, specs, settings, tree, result)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(options: argparse.Namespace, specs: list[RowSpec], settings: dict[str, str],
         tree: Path, result: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory(prefix="raftka-compare-") as scratch:
        run = Run(options, tree, Path(scratch))
        if options.pin_clients:
            from raftka import cpuset

            pinned_ids = BROKER_IDS if settings.get("cpu.affinity") == "auto" else ()
            run.client_cpu = pinned_client_cpu(cpuset.allowed_cpus(), pinned_ids)
            result["client_cpu"] = run.client_cpu
        try:
            if any("raftka" in s.tags for s in specs):
                run.raftka = RaftkaCluster(Path(scratch), tree, settings)
                run.raftka.start()
            run.run(specs)
            if run.nats_version:
                result["nats_version"] = run.nats_version
        except (RuntimeError, TimeoutError) as error:
            print(f"compare: error: {error}", file=sys.stderr)
            return 1
        finally:
            for cluster in (run.raftka, run.nats):
                if cluster is not None:
                    cluster.stop()
    result["uptime_after"] = uptime()
    result["rows"] = run.rows
    if options.markdown:
        options.markdown.write_text(markdown_section(result))
        log(f"wrote {options.markdown}")
    if options.json:
        print(json.dumps(result))
    else:
        print(render(result, markdown=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
