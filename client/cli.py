"""`raftka`: the command line. Subcommands live in cli_*.py; this module parses and dispatches.

Exit codes: 0 success; 1 the operation failed (one line on stderr says why); 2 bad usage;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raftka.client.cli_common import (  # noqa: F401 - re-exported for the cli_* modules
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Handler,
    add_bootstrap,
    add_json,
    apply_credentials,
    apply_tls,
    parse_key_values,
    resolve_bootstrap,
)


def build_parser() -> argparse.ArgumentParser:
    from raftka.client import (
        bench,
        cli_admin_ops,
        cli_broker,
        cli_cluster,
        cli_console,
        cli_groups,
        cli_io,
        cli_security,
        cli_topics,
    )

    parser = argparse.ArgumentParser(
        prog="raftka",
        description="Raftka: a replicated commit log in the spirit of Kafka (KRaft mode).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_broker.register(commands)
    cli_topics.register(commands)
    cli_io.register(commands)
    cli_cluster.register(commands)
    cli_groups.register(commands)
    cli_admin_ops.register(commands)
    cli_security.register(commands)
    cli_console.register(commands)
    bench.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        if hasattr(args, "bootstrap") or hasattr(args, "data_dir"):
            apply_tls(args)
            apply_credentials(args)
        if hasattr(args, "bootstrap") and not hasattr(args, "data_dir"):
            # Commands with --data-dir (cluster ..., watch) pick their brokers themselves.
            args.bootstrap = resolve_bootstrap(args.bootstrap)
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except (CliError, ValueError) as exc:
        print(f"raftka: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from raftka.client.errors import RaftkaError

        if isinstance(exc, RaftkaError):
            print(f"raftka: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
