"""`raftka console`: the web UI (client/console/), a process of its own like kafka-ui."""

from __future__ import annotations

import argparse
import os
from typing import Any

from raftka.client.cli_common import EXIT_OK, CliError, add_bootstrap
from raftka.client.local_cluster import DEFAULT_DATA_DIR, LocalCluster
from raftka.client.transport import BOOTSTRAP_ENV

DEFAULT_CONSOLE_PORT = 8080


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "console",
        help="serve the web console (topics, messages, groups, live failover view)",
        description="Serve a web UI for the cluster over its public API. Give every broker "
        "in --bootstrap so the console keeps working while any one is down.",
    )
    add_bootstrap(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=DEFAULT_CONSOLE_PORT,
                        help=f"port to serve on (default {DEFAULT_CONSOLE_PORT})")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="without --bootstrap: the local cluster here (raftka cluster up)")
    parser.add_argument("--metrics", metavar="HOST:PORT,...",
                        help="the brokers' metrics listeners (metrics.listen), read for the "
                             "Overview's throughput chart (default: those of the local "
                             "cluster in --data-dir when it is the one shown)")
    parser.set_defaults(handler=run)


def metrics_for(args: argparse.Namespace) -> list[str]:
    """--metrics, else the local cluster's metrics ports when no other cluster was named
    (brokers do not advertise their metrics listener in metadata)."""
    if args.metrics:
        addresses = [a.strip() for a in str(args.metrics).split(",") if a.strip()]
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise CliError(f"--metrics takes HOST:PORT,..., got {address!r}")
        return addresses
    if args.bootstrap or os.environ.get(BOOTSTRAP_ENV):
        return []
    local = LocalCluster(args.data_dir)
    if not local.layout_path().exists():
        return []
    return [f"127.0.0.1:{node.metrics_port}" for node in local.load_layout().all_nodes()]


def bootstrap_for(args: argparse.Namespace) -> str:
    """--bootstrap, else RAFTKA_BOOTSTRAP, else every broker of the local cluster."""
    if args.bootstrap:
        return str(args.bootstrap)
    if os.environ.get(BOOTSTRAP_ENV):
        return os.environ[BOOTSTRAP_ENV]
    local = LocalCluster(args.data_dir)
    if local.layout_path().exists():
        return local.load_layout().bootstrap
    raise CliError("no cluster given: --bootstrap HOST:PORT,... (or RAFTKA_BOOTSTRAP, or "
                   "a local cluster in --data-dir)")


def run(args: argparse.Namespace) -> int:
    from raftka.client.console.server import run as serve

    if not 0 < args.port < 65536:
        raise CliError(f"--port must be 1..65535, got {args.port}")
    serve(bootstrap_for(args), args.host, args.port, metrics_for(args))
    return EXIT_OK
