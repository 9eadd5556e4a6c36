"""What every `raftka` subcommand shares: exit codes, the one-line error, common flags."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raftka.client.credentials import PASSWORD_ENV, USER_ENV
from raftka.client.local_cluster import DEFAULT_DATA_DIR, recorded_bootstrap, recorded_tls
from raftka.client.tls_options import CA_ENV, CERT_ENV, KEY_ENV, TlsOptions
from raftka.client.transport import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 1."""


# How long an admin command retries unreachable brokers before it gives up (ms): long enough
# to ride out a failover, short enough that a mistyped address is reported in half a minute.
DEFAULT_REQUEST_TIMEOUT_MS = 30_000


def cli_admin(args: argparse.Namespace) -> Any:
    """The Admin client of a command: its --bootstrap and --request-timeout-ms, retrying out
    loud."""
    from raftka.client.admin import Admin

    timeout_ms = getattr(args, "request_timeout_ms", DEFAULT_REQUEST_TIMEOUT_MS)
    return Admin(args.bootstrap, request_timeout_ms=timeout_ms,
                 on_retry=report_retrying(timeout_ms))


def positive_ms(text: str) -> int:
    """An argparse type: a whole number of milliseconds above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of ms") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} ms: must be above 0")
    return value


def report_retrying(timeout_ms: int) -> Callable[[str], None]:
    """For an admin client's on_retry: one line on stderr the first time no broker answered,
    so a person waiting on a wrong or dead address knows what is happening."""
    said: list[bool] = []

    def say(problems: str) -> None:
        if not said:
            said.append(True)
            print(f"raftka: no broker answered yet ({problems}); retrying for up to "
                  f"{timeout_ms / 1000:g} s (--request-timeout-ms)", file=sys.stderr, flush=True)

    return say


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        "--bootstrap-server",
        dest="bootstrap",
        default=None,
        help=f"HOST:PORT[,HOST:PORT...] of any broker (env {BOOTSTRAP_ENV}; default: every "
        f"broker of the local cluster in ./{DEFAULT_DATA_DIR}, else {DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--request-timeout-ms", type=positive_ms, default=DEFAULT_REQUEST_TIMEOUT_MS,
        metavar="MS",
        help="how long to keep retrying brokers that do not answer, in milliseconds "
        f"(Kafka's default.api.timeout.ms; default {DEFAULT_REQUEST_TIMEOUT_MS})",
    )
    tls = parser.add_argument_group("TLS (default: $RAFTKA_TLS_*, else what `raftka cluster "
                                    "up --tls` recorded in the data directory)")
    tls.add_argument("--tls", action="store_true", default=None,
                     help="connect with TLS, trusting the system's CAs unless --tls-ca")
    tls.add_argument("--tls-ca", metavar="PEM", help=f"CA file to trust (env {CA_ENV})")
    tls.add_argument("--tls-cert", metavar="PEM",
                     help=f"client certificate for mutual TLS (env {CERT_ENV})")
    tls.add_argument("--tls-key", metavar="PEM", help=f"its private key (env {KEY_ENV})")
    auth = parser.add_argument_group("authentication (brokers whose gRPC listener is SASL_*)")
    auth.add_argument("--user", metavar="NAME", help=f"user name (env {USER_ENV})")
    auth.add_argument("--password-file", metavar="FILE",
                      help=f"file holding the password (env {PASSWORD_ENV} instead)")


def apply_credentials(args: argparse.Namespace) -> None:
    """--user/--password-file for every channel this command opens (via $RAFTKA_USER and
    $RAFTKA_PASSWORD, which client/credentials.py reads)."""
    user = getattr(args, "user", None)
    password_file = getattr(args, "password_file", None)
    if password_file:
        try:
            password = Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read --password-file {password_file}: {exc}") from None
        os.environ[PASSWORD_ENV] = password
    if user:
        os.environ[USER_ENV] = user
        if not os.environ.get(PASSWORD_ENV):
            raise CliError(f"--user {user} needs --password-file or ${PASSWORD_ENV}")


def apply_tls(args: argparse.Namespace, data_dir: str = DEFAULT_DATA_DIR) -> TlsOptions | None:
    """Make every channel this command opens use the TLS it was given: --tls* flags, else
    $RAFTKA_TLS_*, else the local cluster's in `data_dir` when the command talks to it (no
    --bootstrap of its own). Sets $RAFTKA_TLS_* for this process and its children."""
    flags = [getattr(args, name, None) for name in ("tls_ca", "tls_cert", "tls_key")]
    if any(flags) or getattr(args, "tls", None):
        options: TlsOptions | None = TlsOptions(*(flag or "" for flag in flags))
    else:
        options = TlsOptions.from_env()
        if options is not None:
            return options
        if getattr(args, "bootstrap", None) and not hasattr(args, "data_dir"):
            return None
        options = recorded_tls(getattr(args, "data_dir", None) or data_dir)
    if options is not None:
        os.environ.update(options.environment())
    return options


def resolve_bootstrap(explicit: str | None, data_dir: str = DEFAULT_DATA_DIR) -> str:
    """Whom a command talks to: --bootstrap; else $RAFTKA_BOOTSTRAP; else every broker of
    the local cluster in `data_dir` (./raftka-data is where `make cluster` keeps it, with
    its ports in cluster.json); else the default local cluster's brokers. Never one broker
    alone, so the failover drill's `raftka cluster kill 1` leaves every command working."""
    if explicit:
        return explicit
    return os.environ.get(BOOTSTRAP_ENV) or recorded_bootstrap(data_dir) or DEFAULT_BOOTSTRAP


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
