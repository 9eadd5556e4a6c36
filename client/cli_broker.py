"""`raftka broker`: run one broker in the foreground."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from raftka.client.cli_common import CliError, parse_key_values

if TYPE_CHECKING:
    from raftka.broker.config import BrokerConfig


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "broker",
        help="run a broker process",
        description="Run one broker (and Raft voter or observer) until SIGTERM/Ctrl-C.",
    )
    parser.add_argument("--id", type=int, dest="broker_id", help="broker id (node.id)")
    parser.add_argument("--data-dir", help="directory for logs and metadata (log.dirs)")
    parser.add_argument("--listen", help="gRPC HOST:PORT (default 127.0.0.1:9090)")
    parser.add_argument("--raft-listen", help="Raft HOST:PORT (default: gRPC port + 1)")
    parser.add_argument("--advertised-host", help="host name clients should use")
    parser.add_argument("--voters", help="Raft voters ID@HOST:PORT,... (default: this broker)")
    parser.add_argument("--kafka-port", type=int,
                        help="Kafka wire-protocol listener port (default: none)")
    parser.add_argument("--listeners", dest="kafka_listeners", metavar="NAME://HOST:PORT,...",
                        help="named Kafka listeners instead of --kafka-port (Kafka's listeners)")
    parser.add_argument("--advertised-listeners", dest="kafka_advertised_listeners",
                        metavar="NAME://HOST:PORT,...",
                        help="where clients reach each listener (advertised.listeners)")
    parser.add_argument("--cluster-secret-file", metavar="FILE",
                        help="the cluster's shared secret (or RAFTKA_CLUSTER_SECRET_FILE / "
                             "RAFTKA_CLUSTER_SECRET); a lone broker makes DATA/cluster.secret")
    parser.add_argument("--cluster-secret-rotation-file", metavar="FILE",
                        help="while rotating: a second secret accepted from peers, never used "
                             "to sign")
    parser.add_argument("--allow-no-cluster-secret", action="store_true", default=None,
                        help="labs only: run Raft and internal RPCs unauthenticated")
    parser.add_argument("--raft-bind", help="HOST:PORT the Raft listener binds "
                        "(default: --raft-listen)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics "
                             "(metrics.listen; default: off)")
    parser.add_argument("--config", dest="config_file", help="TOML file with broker settings")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a broker setting by field or Kafka name, e.g. num.partitions=3",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    """TOML file, then --set, then flags; a flag left out does not undo a --set."""
    from raftka.broker.config import ConfigError, build_config, load_toml, settings_from_mapping

    try:
        file_settings = load_toml(args.config_file) if args.config_file else {}
        overrides = settings_from_mapping(parse_key_values(args.set, "--set"))
        flags = {
            "broker_id": args.broker_id,
            "data_dir": args.data_dir,
            "listen": args.listen,
            "raft_listen": args.raft_listen,
            "raft_bind": args.raft_bind,
            "metrics_listen": args.metrics_listen,
            "cluster_secret_file": args.cluster_secret_file,
            "cluster_secret_rotation_file": args.cluster_secret_rotation_file,
            "allow_no_cluster_secret": args.allow_no_cluster_secret,
            "advertised_host": args.advertised_host,
            "voters": args.voters,
            "kafka_port": args.kafka_port,
            "kafka_listeners": args.kafka_listeners,
            "kafka_advertised_listeners": args.kafka_advertised_listeners,
        }
        overrides.update({key: value for key, value in flags.items() if value is not None})
        return build_config(file_settings, overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from raftka.broker.main import run as run_broker

    return run_broker(config_from_args(args), args.log_level)
