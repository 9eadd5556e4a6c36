"""A Docker engine, a base image and a compose project for the end-to-end tests.

DockerEngine.start() uses an engine that already answers (`docker info`); otherwise, as
root with Debian's docker.io installed, it starts `dockerd` in the background, and stop()
ends that process by its PID (SIGTERM, then SIGKILL) and nothing else. It returns the reason
the engine cannot run instead, for the test to skip with.

No image is ever pulled (the build machines reach no registry): the base image is one that is
already present (python:3.11-slim, or RAFTKA_E2E_BASE_IMAGE), or one deploy/base-image.sh
makes from Debian's mirror with mmdebstrap.

ComposeProject drives `docker-compose` (Debian's v1) or `docker compose` (v2) for one project
name, finds its containers and volumes by compose's labels, and tells what `down` left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
BASE_IMAGE_SCRIPT = REPO / "deploy" / "base-image.sh"
PUBLIC_BASE_IMAGE = "python:3.11-slim"
LOCAL_BASE_IMAGE = "raftka-base:bookworm"
ENGINE_START_TIMEOUT_S = 60
ENGINE_STOP_TIMEOUT_S = 30
DOCKER_COMMAND_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 900
# the host ports deploy/docker-compose.yml publishes (gRPC and Kafka EXTERNAL listeners)
HOST_PORTS = (19090, 19092, 19100, 19102, 19110, 19112, 8080)
# pip's settings that reach a package index; passed to the build as build args of these names
PIP_INDEX_SETTINGS = {
    "PIP_INDEX_URL": "global.index-url",
    "PIP_EXTRA_INDEX_URL": "global.extra-index-url",
    "PIP_TRUSTED_HOST": "global.trusted-host",
}


def docker(*args: str, timeout_s: float = DOCKER_COMMAND_TIMEOUT_S, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout_s, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: exit {result.returncode}\n"
                           f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result


class DockerEngine:
    """The engine the tests talk to; started here only when none answers."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None  # the dockerd this started
        self.log_path = work_dir / "dockerd.log"

    def answers(self) -> bool:
        if shutil.which("docker") is None:
            return False
        try:
            return docker("info", timeout_s=20, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> str | None:
        """None once an engine answers; else why none can run here."""
        if shutil.which("docker") is None:
            return ("Docker is not installed (apt-get install docker.io docker-compose "
                    "mmdebstrap; .ci/run does it)")
        if compose_command() is None:
            return "neither docker-compose nor the docker compose plugin is installed"
        if self.answers():
            return None
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            return ("no Docker engine answers and dockerd is not installed "
                    "(apt-get install docker.io)")
        if os.geteuid() != 0:
            return "no Docker engine answers, and starting dockerd needs root"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"dockerd exited ({self.process.returncode}): {self.log_tail()}"
            if self.answers():
                return None
            time.sleep(0.3)
        self.stop()
        return f"dockerd did not answer within {ENGINE_START_TIMEOUT_S}s: {self.log_tail()}"

    def log_tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        """End the dockerd this started (it stops its containerd); leave any other alone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(ENGINE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def ensure_base_image(log_path: Path) -> tuple[str | None, str]:
    """(image, how it was found) or (None, why there is none). Never pulls."""
    wanted = os.environ.get("RAFTKA_E2E_BASE_IMAGE")
    if wanted:
        if image_exists(wanted):
            return wanted, f"{wanted} (RAFTKA_E2E_BASE_IMAGE)"
        return None, f"RAFTKA_E2E_BASE_IMAGE={wanted} is not present locally"
    for name in (PUBLIC_BASE_IMAGE, LOCAL_BASE_IMAGE):
        if image_exists(name):
            return name, f"{name} (present)"
    if shutil.which("mmdebstrap") is None or os.geteuid() != 0:
        return None, (f"no base image: {PUBLIC_BASE_IMAGE} is not present (no registry is "
                      "reached here) and deploy/base-image.sh needs root and mmdebstrap")
    started = time.monotonic()
    with open(log_path, "w") as log:
        made = subprocess.run(["sh", str(BASE_IMAGE_SCRIPT), LOCAL_BASE_IMAGE], stdout=log,
                              stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"deploy/base-image.sh failed ({made.returncode}):\n"
                           f"{log_path.read_text(errors='replace')[-3000:]}")
    return LOCAL_BASE_IMAGE, f"{LOCAL_BASE_IMAGE} (made in {time.monotonic() - started:.1f}s)"


def reachable_index_url(url: str) -> bool:
    """Whether a container can use this pip index address as the host does: not a local
    directory, not the host's own loopback."""
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and parsed.hostname not in (
        "localhost", "127.0.0.1", "::1", None)


def host_pip_settings(python: str) -> dict[str, str]:
    """How the host's pip reaches its package index, as build args: the PIP_* environment
    and pip's configuration files (`pip config list`), keeping only addresses a container
    can reach. The host's CA certificates are in the base image (deploy/base-image.sh)."""
    found: dict[str, str] = {}
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, timeout=60, check=False)
    config = {}
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        config[key.strip()] = value.strip().strip("'\"")
    for arg, key in PIP_INDEX_SETTINGS.items():
        value = os.environ.get(arg) or config.get(key, "")
        if arg == "PIP_TRUSTED_HOST":
            kept = value.split()
        else:
            kept = [url for url in value.split() if reachable_index_url(url)]
        if kept:
            found[arg] = " ".join(kept)
    return found


def compose_command() -> list[str] | None:
    """Debian's docker-compose (v1) if installed, else the `docker compose` plugin (v2)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    ).returncode == 0:
        return ["docker", "compose"]
    return None


def busy_ports(ports: Sequence[int] = HOST_PORTS) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


class ComposeProject:
    """deploy/docker-compose.yml as one compose project, with its own name and settings."""

    def __init__(self, name: str, environment: dict[str, str], log_path: Path) -> None:
        command = compose_command()
        assert command is not None, "checked by DockerEngine.start()"
        self.command = [*command, "--project-name", name, "--file", str(COMPOSE_FILE)]
        self.name = name
        self.env = {**os.environ, **environment}
        self.log_path = log_path
        # volumes that existed before: any other one still there at the end is this project's
        # (an anonymous volume carries no compose label)
        self.volumes_before = set(docker("volume", "ls", "--quiet").stdout.split())

    def run(self, *args: str, timeout_s: float = DOCKER_COMMAND_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout_s, cwd=REPO)
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(self.command[:1])} {' '.join(args)} -> "
                      f"{result.returncode}\n{result.stdout}{result.stderr}\n")
        if check and result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)}: exit {result.returncode}\n"
                               f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        return result

    def _label(self, kind: str, extra: Sequence[str] = ()) -> list[str]:
        """IDs of this project's containers ("ps"), networks or volumes, by compose's labels."""
        args = ["ps", "--all", "--quiet"] if kind == "ps" else [kind, "ls", "--quiet"]
        for item in (f"label=com.docker.compose.project={self.name}", *extra):
            args += ["--filter", item]
        return [line for line in docker(*args).stdout.split() if line]

    def container(self, service: str) -> str:
        (found,) = self._label("ps", [f"label=com.docker.compose.service={service}"])
        return found

    def volume_path(self, volume: str) -> Path:
        """Where a named volume's files are on the host (root reads them directly)."""
        (found,) = self._label("volume", [f"label=com.docker.compose.volume={volume}"])
        return Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}", found)
                    .stdout.strip())

    def health(self, service: str) -> str:
        return docker("inspect", "--format",
                      "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}"
                      "{{end}}", self.container(service)).stdout.strip()

    def wait_healthy(self, services: Sequence[str], timeout_s: float) -> float:
        """Seconds until every service's container reports healthy."""
        started = time.monotonic()
        states: dict[str, str] = {}
        while time.monotonic() - started < timeout_s:
            states = {s: self.health(s) for s in services}
            if all(state == "healthy" for state in states.values()):
                return time.monotonic() - started
            if any(state in ("exited", "dead") for state in states.values()):
                break
            time.sleep(0.25)
        raise AssertionError(f"not healthy after {time.monotonic() - started:.0f}s: {states}\n"
                             f"{self.logs()}")

    def wait_completed(self, service: str, timeout_s: float) -> float:
        """Seconds until a one-shot service's container has exited with 0 (compose's
        service_completed_successfully); an exit with another code fails at once."""
        started = time.monotonic()
        state = ""
        while time.monotonic() - started < timeout_s:
            state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                           self.container(service)).stdout.strip()
            if state == "exited 0":
                return time.monotonic() - started
            if state.startswith(("exited", "dead")):
                break
            time.sleep(0.25)
        raise AssertionError(f"{service} did not complete: {state}\n{self.logs()}")

    def published(self, service: str) -> list[str]:
        """The host addresses the service's ports are published on, "IP:PORT"."""
        lines = docker("port", self.container(service)).stdout.splitlines()
        return sorted(line.split(" -> ")[1] for line in lines if " -> " in line)

    def logs(self, chars: int = 6000) -> str:
        with contextlib.suppress(Exception):
            return self.run("logs", "--no-color", "--tail", "60", check=False).stdout[-chars:]
        return ""

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist, and volumes
        made since it was created (anonymous ones too)."""
        left = {kind: self._label(kind) for kind in ("ps", "network", "volume")}
        made = set(docker("volume", "ls", "--quiet").stdout.split()) - self.volumes_before
        left["volume"] = sorted(set(left["volume"]) | made)
        return {kind: ids for kind, ids in left.items() if ids}

    def remove(self, left: dict[str, list[str]]) -> None:
        """Remove what leftovers() found (so a failed run leaves nothing either)."""
        commands = {"ps": ["rm", "--force", "--volumes"], "network": ["network", "rm"],
                    "volume": ["volume", "rm", "--force"]}
        for kind, command in commands.items():
            if left.get(kind):
                docker(*command, *left[kind], check=False)
