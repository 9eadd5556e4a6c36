"""Where a broker's cluster secret comes from (the I/O around cluster/cluster_auth.py).

In this order:
1. `cluster_secret_file` (`--cluster-secret-file`, `--set cluster.secret.file=...`, TOML);
2. the file named by RAFTKA_CLUSTER_SECRET_FILE;
3. the secret itself in RAFTKA_CLUSTER_SECRET (compose / Kubernetes secrets as env);
4. a single-node cluster (no other voter) uses DATA/cluster.secret, made on first start with
   mode 0600: nobody else has to know it, so `raftka broker` alone needs no set-up (an
   observer joining it is given that file);
5. otherwise the broker refuses to start, unless `allow_no_cluster_secret` is set (labs):
   then Raft and the internal RPCs are unauthenticated and a warning says so.

While a secret is rotated, `cluster_secret_rotation_file` (or RAFTKA_CLUSTER_SECRET_ROTATION_FILE)
names a second secret that peers may use: accepted, never used to sign.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from raftka.broker.config import BrokerConfig, ConfigError
from raftka.cluster.cluster_auth import validate_secret

log = logging.getLogger("raftka.broker")

ENV_SECRET = "RAFTKA_CLUSTER_SECRET"
ENV_SECRET_FILE = "RAFTKA_CLUSTER_SECRET_FILE"
ENV_ROTATION_FILE = "RAFTKA_CLUSTER_SECRET_ROTATION_FILE"
SECRET_FILE_NAME = "cluster.secret"
# A generated secret: this many random bytes, written as hex.
GENERATED_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class ClusterSecret:
    value: bytes | None  # None: running without one (allow_no_cluster_secret)
    source: str
    # Secrets also accepted from peers (rotation); never used to sign.
    also_accepted: tuple[bytes, ...] = ()


def generate_secret_file(path: str) -> bytes:
    """Write a new random secret to `path` (mode 0600, never over an existing file)."""
    value = secrets.token_hex(GENERATED_SECRET_BYTES).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
    return value


def read_secret_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"cluster secret file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read cluster secret file {path}: {exc.strerror}") from None
    try:
        return validate_secret(raw, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume others can reach it


def resolve_cluster_secret(config: BrokerConfig, environ: Mapping[str, str]) -> ClusterSecret:
    primary = _primary_secret(config, environ)
    rotation = config.cluster_secret_rotation_file or environ.get(ENV_ROTATION_FILE, "")
    if not rotation:
        return primary
    if primary.value is None:
        raise ConfigError("a rotation secret needs a cluster secret beside it")
    other = read_secret_file(rotation)
    log.info("also accepting the rotation secret from %s", rotation)
    return ClusterSecret(primary.value, primary.source, (other,))


def _primary_secret(config: BrokerConfig, environ: Mapping[str, str]) -> ClusterSecret:
    if config.cluster_secret_file:
        path = config.cluster_secret_file
        return ClusterSecret(read_secret_file(path), path)
    if environ.get(ENV_SECRET_FILE):
        path = environ[ENV_SECRET_FILE]
        return ClusterSecret(read_secret_file(path), f"{ENV_SECRET_FILE}={path}")
    if environ.get(ENV_SECRET):
        try:
            return ClusterSecret(validate_secret(environ[ENV_SECRET].encode(), ENV_SECRET),
                                 ENV_SECRET)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if config.is_single_node and not config.allow_no_cluster_secret:
        os.makedirs(config.data_dir, exist_ok=True)
        path = os.path.join(config.data_dir, SECRET_FILE_NAME)
        if not os.path.exists(path):
            generate_secret_file(path)
            log.info("generated a cluster secret in %s; brokers joining this one need it "
                     "(--cluster-secret-file)", path)
        return ClusterSecret(read_secret_file(path), path)
    if not config.allow_no_cluster_secret:
        raise ConfigError(
            "the brokers of a cluster need a shared cluster secret: --cluster-secret-file "
            f"FILE, {ENV_SECRET_FILE} or {ENV_SECRET} (`raftka cluster up` makes one; "
            "--allow-no-cluster-secret runs without, for labs only)"
        )
    exposed = [host for host in config.listen_hosts() if not _is_loopback(host)]
    where = f"on {', '.join(sorted(set(exposed)))}" if exposed else "on this machine"
    log.warning(
        "running WITHOUT a cluster secret (allow_no_cluster_secret): anyone who reaches this "
        "broker's Raft port %s can run code in it, and anyone can call its internal RPCs",
        where,
    )
    return ClusterSecret(None, "none")
