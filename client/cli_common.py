"""What every `raftka` subcommand shares: exit codes, the one-line error, common flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from raftka.client.transport import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP

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
