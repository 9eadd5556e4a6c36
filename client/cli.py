"""`raftka`: the command line. Subcommands live in cli_*.py; this module parses and dispatches.

Exit codes: 0 success; 1 the operation failed (one line on stderr says why); 2 bad usage;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from client.transport import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 1."""


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        "--bootstrap-server",
        dest="bootstrap",
        default=None,
        help=f"HOST:PORT[,HOST:PORT...] of any broker (env {BOOTSTRAP_ENV}; default "
        f"{DEFAULT_BOOTSTRAP})",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def parse_key_values(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {item!r} must look like KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    from client import cli_broker, cli_cluster, cli_io, cli_topics

    parser = argparse.ArgumentParser(
        prog="raftka",
        description="Raftka: a replicated commit log in the spirit of Kafka (KRaft mode).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_broker.register(commands)
    cli_topics.register(commands)
    cli_io.register(commands)
    cli_cluster.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except (CliError, ValueError) as exc:
        print(f"raftka: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from client.errors import RaftkaError

        if isinstance(exc, RaftkaError):
            print(f"raftka: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
