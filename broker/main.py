"""`raftka broker`: run one broker process until SIGTERM or SIGINT, then stop cleanly."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys

from raftka import cpuset
from raftka.broker import tls as broker_tls
from raftka.broker.cluster_secret import ClusterSecret, resolve_cluster_secret
from raftka.broker.config import BrokerConfig, ConfigError
from raftka.broker.fd_budget import FdBudgetError
from raftka.broker.gc_pauses import GcPauses, freeze_startup_heap
from raftka.broker.server import BrokerServer, DataDirLockedError

log = logging.getLogger("raftka.broker")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stderr,
    )
    # pysyncobj logs every reconnect attempt at WARNING; keep it to real problems.
    logging.getLogger("pysyncobj").setLevel(logging.ERROR)


async def serve(config: BrokerConfig, cluster_secret: ClusterSecret,
                gc_pauses: GcPauses | None = None) -> None:
    server = BrokerServer(config, cluster_secret.value, cluster_secret.also_accepted)
    if gc_pauses is not None:
        server.metrics.watch_gc(gc_pauses)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    # Every object start-up made out of the full collections' reach (broker/gc_pauses.py).
    log.info("start-up heap frozen: %d objects out of the garbage collector's scans",
             freeze_startup_heap())
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(config: BrokerConfig, log_level: str = "INFO") -> int:
    configure_logging(log_level)
    # `kill -USR1 <pid>` prints every thread's stack to the log (a Python jstack): what a
    # broker that does not stop, or stalls, is waiting for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        secret = resolve_cluster_secret(config, os.environ)
        broker_tls.for_broker(config)  # every TLS file checked before anything starts
        # before any thread starts: the threads started from here on inherit it
        pinned = cpuset.apply(config.cpu_affinity, config.broker_id, "cpu.affinity")
    except (ConfigError, cpuset.CpuSetError) as exc:
        log.error("%s", exc)
        return 2
    if secret.value is not None:
        log.info("cluster secret from %s", secret.source)
    if pinned is not None:
        log.info("pinned to CPU %s (cpu.affinity=%s)", cpuset.format_cpu_list(pinned),
                 config.cpu_affinity)
    gc_pauses = GcPauses()
    gc_pauses.install()
    try:
        asyncio.run(serve(config, secret, gc_pauses))
    except (DataDirLockedError, FdBudgetError) as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("broker failed: %s", exc)
        return 1
    return 0
