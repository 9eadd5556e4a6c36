"""The container files, end to end: docker compose up of three brokers, then the CLI against
them. Needs a Docker engine and the python:3.11-slim base image (no registry is reachable from
the build machines), so it skips with the reason when either is missing; the same behaviour is
covered by the process-based tests in tests/integration/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "no Docker engine is running"
    base = subprocess.run(
        ["docker", "image", "inspect", "python:3.11-slim"], capture_output=True, timeout=30
    )
    if base.returncode != 0:
        return "base image python:3.11-slim is not present locally and no registry is reachable"
    return None


def test_compose_cluster_serves_the_cli():
    reason = _docker_ready()
    if reason:
        pytest.skip(reason)
    from testcontainers.compose import DockerCompose

    with DockerCompose(
        str(REPO), compose_file_name=str(COMPOSE.relative_to(REPO)), build=True, wait=False
    ):
        env = {**os.environ, "RAFTKA_BOOTSTRAP": "127.0.0.1:19090,127.0.0.1:19100"}

        def raftka(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "raftka", *args],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=60,
            )

        wait_for(lambda: raftka("cluster", "status").returncode == 0, 120, "the cluster")
        assert raftka("topics", "create", "compose", "--partitions", "3").returncode == 0
        produced = subprocess.run(
            [sys.executable, "-m", "raftka", "produce", "compose"],
            input="a\nb\nc\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert produced.returncode == 0, produced.stderr
        consumed = raftka("consume", "compose", "--from-beginning", "--max-messages", "3")
        assert sorted(consumed.stdout.split()) == ["a", "b", "c"]

        # Kafka clients on the host use the EXTERNAL listener's published ports
        from confluent_kafka import Consumer as KafkaConsumer

        consumer = KafkaConsumer({"bootstrap.servers": "127.0.0.1:19092", "group.id": "host",
                                  "auto.offset.reset": "earliest"})
        consumer.subscribe(["compose"])
        values: list[bytes] = []

        def read_three() -> bool:
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                values.append(message.value())
            return len(values) >= 3

        wait_for(read_three, 60, "three records over the Kafka listener")
        consumer.close()
        assert sorted(values) == [b"a", b"b", b"c"]
