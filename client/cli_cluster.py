"""`raftka cluster up|status|kill|start|stop` and `raftka watch`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from raftka.client.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_bootstrap,
    add_json,
    parse_key_values,
)
from raftka.client.cluster_view import (
    ClusterSnapshot,
    LeaderGaps,
    diff,
    render,
    snapshot_from,
)
from raftka.client.local_cluster import (
    DEFAULT_DATA_DIR,
    ClusterLayout,
    LocalCluster,
    LocalClusterError,
)

READY_TIMEOUT_S = 60
# How often start-up readiness is checked (s).
READY_POLL_S = 0.2
# How often `cluster up` looks for brokers that exited or were started again (s).
SUPERVISE_INTERVAL_S = 0.5
WATCH_EVENTS_MAX = 15


def register(commands: Any) -> None:
    cluster = commands.add_parser("cluster", help="run and inspect a local cluster")
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)

    up = actions.add_parser(
        "up",
        help="start a local cluster in the foreground (Ctrl-C stops it)",
        description="Start N brokers on this machine as child processes. Run it again on "
        "the same --data-dir to restart the same cluster with its data.",
    )
    up.add_argument("--nodes", type=int, help="number of brokers (default 3; first run only)")
    up.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    up.add_argument(
        "--base-port",
        type=int,
        help="gRPC port of broker 1; broker N uses base+10*(N-1) (default 9090)",
    )
    up.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="broker setting for every node, e.g. num.partitions=3",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="TLS on every gRPC and Kafka listener and between brokers, with a local CA and "
        "certificates made in DATA_DIR/tls (recorded: later commands on this directory use "
        "TLS by themselves)",
    )
    up.set_defaults(handler=run_up)

    status = actions.add_parser("status", help="controller, brokers, leaders and ISR")
    status.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    add_bootstrap(status)
    add_json(status)
    status.set_defaults(handler=run_status)

    kill = actions.add_parser("kill", help="SIGKILL one local broker (the failover drill)")
    kill.add_argument("broker_id", type=int)
    kill.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    kill.set_defaults(handler=run_kill)

    start = actions.add_parser("start", help="start one stopped local broker again")
    start.add_argument("broker_id", type=int)
    start.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    start.add_argument("--no-wait", action="store_true", help="do not wait until it is alive")
    add_bootstrap(start)
    start.set_defaults(handler=run_start)

    stop = actions.add_parser("stop", help="stop every broker of a local cluster (SIGTERM)")
    stop.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    stop.set_defaults(handler=run_stop)

    secret = actions.add_parser(
        "secret",
        help="write a new cluster secret to FILE (mode 0600) unless it exists",
        description="Make the secret every broker of a cluster shares (--cluster-secret-file, "
        "RAFTKA_CLUSTER_SECRET_FILE): 64 random hex characters. An existing file is kept.",
    )
    secret.add_argument("file", help="where to write it, e.g. /run/raftka/cluster.secret")
    secret.set_defaults(handler=run_secret)

    watch = commands.add_parser(
        "watch", help="live view of controller, brokers, leaders and ISR, with changes"
    )
    watch.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    watch.add_argument("--interval-ms", type=int, default=250)
    watch.add_argument("--once", action="store_true", help="print one view and exit")
    add_bootstrap(watch)
    watch.set_defaults(handler=run_watch)


# ------------------------------------------------------------------------- snapshots
def _target(
    args: argparse.Namespace,
) -> tuple[str | None, LocalCluster | None, ClusterLayout | None]:
    """Where to ask: --bootstrap wins; else every broker of the local cluster in --data-dir,
    if any; else $RAFTKA_BOOTSTRAP or the default local cluster's brokers (None)."""
    local = LocalCluster(args.data_dir)
    layout = local.load_layout() if local.layout_path().exists() else None
    if args.bootstrap:
        return args.bootstrap, (local if layout else None), layout
    if layout is not None:
        return layout.bootstrap, local, layout
    return None, None, None


def fetch_snapshot(
    bootstrap: str | None,
    local: LocalCluster | None,
    layout: ClusterLayout | None,
    timeout_ms: int = 3000,
) -> ClusterSnapshot:
    """Ask every broker and believe the one with the newest metadata: a broker that just
    restarted answers from an old image until it has caught up with the Raft log."""
    import grpc

    from raftka.client.transport import Connections, bootstrap_list
    from raftka.proto.raftka.v1 import admin_pb2, broker_pb2

    connections = Connections()
    try:
        best: tuple[Any, str] | None = None
        problems = []
        for address in bootstrap_list(bootstrap):
            try:
                described = connections.admin(address).DescribeCluster(
                    admin_pb2.DescribeClusterRequest(), timeout=timeout_ms / 1000
                )
            except grpc.RpcError as exc:
                problems.append(f"{address}: {exc.code().name}")
                continue
            if best is None or described.metadata_offset > best[0].metadata_offset:
                best = (described, address)
        if best is None:
            raise CliError("no broker answered (" + ", ".join(problems) + ")")
        described, address = best
        metadata = connections.broker(address).Metadata(
            broker_pb2.MetadataRequest(), timeout=timeout_ms / 1000
        )
    finally:
        connections.close()
    pids = None
    if local is not None and layout is not None:
        pids = {i: local.pid_of(i) for i in range(1, layout.nodes + 1)}
    return snapshot_from(described, metadata, pids)


def run_status(args: argparse.Namespace) -> int:
    bootstrap, local, layout = _target(args)
    snapshot = fetch_snapshot(bootstrap, local, layout)
    if args.json:
        print(json.dumps(snapshot.to_json()))
    else:
        print(render(snapshot))
    return EXIT_OK


# -------------------------------------------------------------------------------- up
def _stop_on_sigterm() -> None:
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def _exited(processes: dict[int, subprocess.Popen[bytes]]) -> tuple[int, int] | None:
    """(broker id, exit code) of a started broker whose process has ended, if any: judged
    by the process handle, never by /proc, which a child still in exec can fool."""
    for broker_id, process in processes.items():
        code = process.poll()
        if code is not None:
            return broker_id, code
    return None


def _wait_ready(
    layout: ClusterLayout,
    local: LocalCluster,
    processes: dict[int, subprocess.Popen[bytes]],
    timeout_s: float,
    bootstrap: str | None = None,
) -> ClusterSnapshot:
    """Until the brokers of `processes` are registered and unfenced *as these processes*
    (the PID each registered with is the one we started: right after `cluster kill` the
    controller still shows the old incarnation unfenced for a session timeout) and a
    controller exists; CliError when one exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    problem = ""
    ids = set(processes)
    while time.monotonic() < deadline:
        exited = _exited(processes)
        if exited is not None:
            broker_id, code = exited
            tail = local.log_path(broker_id).read_text(errors="replace")[-1500:]
            raise CliError(
                f"broker {broker_id} exited during start-up (exit code {code}); its log "
                f"ends with:\n{tail}"
            )
        try:
            # Without the local PIDs, the snapshot shows the PIDs brokers registered with.
            snapshot = fetch_snapshot(bootstrap or layout.bootstrap, None, None,
                                      timeout_ms=1000)
            alive = {
                b.broker_id
                for b in snapshot.brokers
                if not b.fenced and b.broker_id in ids and b.pid == processes[b.broker_id].pid
            }
            if snapshot.controller >= 0 and ids <= alive:
                return snapshot
            problem = f"alive so far: {sorted(alive)}"
        except Exception as exc:
            problem = str(exc).splitlines()[0]
        time.sleep(READY_POLL_S)
    raise CliError(
        f"cluster not ready after {timeout_s:.0f}s ({problem}); see {local.root}/node-*.log"
    )


def run_up(args: argparse.Namespace) -> int:
    local = LocalCluster(args.data_dir)
    children: dict[int, subprocess.Popen[bytes]] = {}
    layout: ClusterLayout | None = None
    try:
        layout = local.create_or_load(
            args.nodes, args.base_port, parse_key_values(args.set, "--set"),
            tls=bool(getattr(args, "tls", False)),
        )
        if layout.tls:
            local.ensure_tls(layout)
            os.environ.update(local.client_tls().environment())
        running = [i for i in range(1, layout.nodes + 1) if local.pid_of(i) is not None]
        if running:
            raise CliError(
                f"brokers {running} of {local.root} are already running; "
                "`raftka cluster stop` first"
            )
        _stop_on_sigterm()
        started = time.monotonic()
        print(f"Starting {layout.nodes} broker(s) in {local.root} ({layout.voters} Raft voter(s)):")
        print(f"  {'ID':>2}  {'PID':>7}  {'GRPC':<16} {'KAFKA':<16} {'RAFT':<16} "
              f"{'METRICS':<16} LOG")
        for node in layout.all_nodes():
            process = local.start_node(layout, node.broker_id, detach=False)
            children[node.broker_id] = process
            print(
                f"  {node.broker_id:>2}  {process.pid:>7}  {node.address:<16} "
                f"{node.kafka_address:<16} 127.0.0.1:{node.raft_port:<6} "
                f"127.0.0.1:{node.metrics_port:<6} "
                f"{local.log_path(node.broker_id)}"
            )
        snapshot = _wait_ready(layout, local, dict(children), READY_TIMEOUT_S)
    except LocalClusterError as exc:
        _shutdown(local, layout, children)
        raise CliError(str(exc)) from None
    except BaseException:  # CliError, Ctrl-C, or a bug: stop every broker started here
        _shutdown(local, layout, children)
        raise
    print(
        f"\nCluster {snapshot.cluster_id} ready in {time.monotonic() - started:.1f}s; "
        f"controller: broker {snapshot.controller}."
    )
    print(f"  gRPC bootstrap:  {layout.bootstrap}   (RAFTKA_BOOTSTRAP, --bootstrap)")
    print(f"  Kafka bootstrap: {layout.kafka_bootstrap}   (bootstrap.servers)")
    if layout.tls:
        material = local.tls_material()
        print(f"  TLS:  every listener; CA {material.ca}")
        print(f"        client certificate {material.client_cert}, key {material.client_key}")
        print("        Kafka clients: security.protocol=SSL ssl.ca.location=<CA>")
    print(f"  try:   raftka watch --data-dir {args.data_dir}")
    print(f"         raftka console --bootstrap {layout.bootstrap}   (http://127.0.0.1:8080)")
    print(f"         raftka cluster kill {snapshot.controller} --data-dir {args.data_dir}")
    print("Ctrl-C stops every broker.\n", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        _supervise(local, layout, children)
    _shutdown(local, layout, children)
    return EXIT_OK


def _current_pid(
    local: LocalCluster, broker_id: int, children: dict[int, subprocess.Popen[bytes]]
) -> int | None:
    """Broker N's running process: our own child while it lives, else whatever its pid
    file names (a broker restarted by `raftka cluster start`, which is not our child)."""
    child = children.get(broker_id)
    if child is not None and child.poll() is None:
        return child.pid
    return local.pid_of(broker_id)


def _supervise(
    local: LocalCluster, layout: ClusterLayout, children: dict[int, subprocess.Popen[bytes]]
) -> None:
    """Report brokers that exit or come back until interrupted (Ctrl-C or SIGTERM); it
    never ends on its own, however many brokers are down or were restarted elsewhere."""
    known = {i: _current_pid(local, i, children) for i in range(1, layout.nodes + 1)}
    while True:
        time.sleep(SUPERVISE_INTERVAL_S)
        for broker_id in known:
            pid = _current_pid(local, broker_id, children)
            if pid != known[broker_id]:
                stamp = time.strftime("%H:%M:%S")
                if pid is None:
                    print(
                        f"[{stamp}] broker {broker_id} (pid {known[broker_id]}) exited", flush=True
                    )
                else:
                    print(f"[{stamp}] broker {broker_id} started (pid {pid})", flush=True)
                known[broker_id] = pid


def _shutdown(
    local: LocalCluster,
    layout: ClusterLayout | None,
    children: dict[int, subprocess.Popen[bytes]],
) -> None:
    """Stop every broker of the cluster once this `cluster up` has started any (its own
    children by their handles, brokers restarted by `cluster start` by their pid files).
    A `cluster up` that started nothing (say, the cluster was already running) stops
    nothing."""
    if layout is None or not children:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("\nStopping brokers...", flush=True)
    stopped = local.stop_all(layout, children=children)
    done = f"Stopped brokers {stopped}." if stopped else "No broker was still running."
    print(f"{done} Data kept in {local.root}.", flush=True)


# -------------------------------------------------------------------- kill / start
def run_secret(args: argparse.Namespace) -> int:
    from raftka.client.local_cluster import write_secret_file

    path = Path(args.file)
    written = write_secret_file(path)
    print(f"{'wrote a new cluster secret to' if written else 'kept the existing'} {path}")
    return 0


def run_kill(args: argparse.Namespace) -> int:
    local = LocalCluster(args.data_dir)
    try:
        local.load_layout().node(args.broker_id)
        pid = local.kill_node(args.broker_id)
    except LocalClusterError as exc:
        raise CliError(str(exc)) from None
    print(f"Killed broker {args.broker_id} (pid {pid}) with SIGKILL.")
    return EXIT_OK


def run_start(args: argparse.Namespace) -> int:
    """Start broker N detached; unless --no-wait, wait until it is registered and unfenced,
    judging its liveness by the process handle: exit 0 only once it is alive, 1 (with its
    log's tail) if it exited."""
    local = LocalCluster(args.data_dir)
    try:
        layout = local.load_layout()
        layout.node(args.broker_id)
        process = local.start_node(layout, args.broker_id, detach=True)
    except LocalClusterError as exc:
        raise CliError(str(exc)) from None
    print(
        f"Started broker {args.broker_id} (pid {process.pid}); log: "
        f"{local.log_path(args.broker_id)}", flush=True
    )
    if not args.no_wait:
        _wait_ready(layout, local, {args.broker_id: process}, READY_TIMEOUT_S, args.bootstrap)
        print(f"Broker {args.broker_id} is alive (registered and unfenced).")
    return EXIT_OK


def run_stop(args: argparse.Namespace) -> int:
    local = LocalCluster(args.data_dir)
    try:
        layout = local.load_layout()
    except LocalClusterError as exc:
        raise CliError(str(exc)) from None
    stopped = local.stop_all(layout)
    print(f"Stopped brokers {stopped}." if stopped else "No broker was running.")
    return EXIT_OK


# ---------------------------------------------------------------------------- watch
def run_watch(args: argparse.Namespace) -> int:
    bootstrap, local, layout = _target(args)
    interactive = sys.stdout.isatty() and not args.once
    previous: ClusterSnapshot | None = None
    events: list[tuple[float, str]] = []
    gaps = LeaderGaps(knows_pids=local is not None)
    failures = 0
    while True:
        try:
            snapshot = fetch_snapshot(bootstrap, local, layout, timeout_ms=1500)
            failures = 0
        except Exception as exc:
            failures += 1
            if args.once:
                raise
            line = f"cluster unreachable: {str(exc).splitlines()[0]}"
            if not events or events[-1][1] != line:
                events.append((time.time(), line))
                if not interactive:
                    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            time.sleep(args.interval_ms / 1000)
            continue
        now = time.time()
        changes = diff(previous, snapshot) + gaps.observe(snapshot, now)
        events.extend((now, text) for text in changes)
        del events[:-WATCH_EVENTS_MAX]
        if interactive:
            sys.stdout.write("\x1b[H\x1b[2J" + render(snapshot, events) + "\n")
            sys.stdout.flush()
        elif args.once:
            print(render(snapshot))
            return EXIT_OK
        else:
            for text in changes:
                print(
                    f"{time.strftime('%H:%M:%S')}.{int(now * 1000) % 1000:03d} {text}", flush=True
                )
        previous = snapshot
        time.sleep(args.interval_ms / 1000)
    return EXIT_FAILED if failures else EXIT_OK
