"""Node.js example scripts (examples/nestjs) as child processes, for the tests that run them
against a cluster: the in-process one (tests/integration) and the compose one (tests/e2e)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from tests.harness import ProcessExitedError, wait_for

NEST_DIR = Path(__file__).resolve().parents[1] / "examples" / "nestjs"
NODE = shutil.which("node")
TIMEOUT_S = 45


def node_major(node: str) -> int:
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        return int(version.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def node_skip_reason() -> str | None:
    """Why the Node.js examples cannot run here, or None."""
    if NODE is None:
        return "node is not on the PATH (Node.js 20+ is needed)"
    if node_major(NODE) < 20:
        return f"{NODE} is older than Node.js 20 (NestJS needs it)"
    if not (NEST_DIR / "node_modules").is_dir():
        return (f"{NEST_DIR / 'node_modules'} is missing: run `npm install` in {NEST_DIR} "
                "(`make test` does it)")
    return None


def run_node(*args: str, timeout_s: float = TIMEOUT_S, cwd: Path = NEST_DIR,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`env`: extra environment variables (e.g. KAFKA_SASL_MECHANISM) over this process's."""
    assert NODE is not None
    return subprocess.run(
        [NODE, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def json_lines(text: str) -> list[dict]:
    """The JSON objects among a script's output lines (Nest may log plain lines too)."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


class NodeProcess:
    """A long-running node script; its stdout JSON lines are collected as they come."""

    def __init__(self, *args: str, stderr_path: Path, cwd: Path = NEST_DIR,
                 env: dict[str, str] | None = None) -> None:
        assert NODE is not None
        self.lines: list[dict] = []
        self.stdout_text: list[str] = []
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [NODE, *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_text.append(line)
            self.lines.extend(json_lines(line))

    def wait_for_line(self, predicate, timeout_s: float, what: str) -> dict:
        def found() -> dict | None:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                raise ProcessExitedError(
                    f"{what}: the process exited ({self.process.returncode})\n{self.output()}"
                )
            return None

        try:
            result = wait_for(found, timeout_s, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from exc
        assert isinstance(result, dict)
        return result

    def output(self) -> str:
        return (
            f"stdout:\n{''.join(self.stdout_text)[-4000:]}\n"
            f"stderr:\n{self.stderr_path.read_text(errors='replace')[-4000:]}"
        )

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL by PID if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._reader.join(5)
        self._stderr.close()
