"""deploy/docker-compose.yml for real: the image built from deploy/Dockerfile, three brokers
up and healthy, and clients on the host using the EXTERNAL listeners the compose publishes on
127.0.0.1: the Raftka CLI and SDK over gRPC, confluent-kafka and the NestJS example over the
Kafka protocol. The compose file is secured by default (SASL_PLAINTEXT + SCRAM-SHA-512, gRPC
credentials, ACLs): every client here is the admin user, whose password the test sets through
RAFTKA_ADMIN_PASSWORD (over deploy/.env's default), and clients without it are refused.
A partition leader's container is killed under acks=all load, restarted and seen back in
the ISR; the cluster goes down and up again on its volumes; nothing acknowledged
is lost (the fault checker of tests/faults judges the history, replica files included).

Starts what it needs (tests/e2e/engine.py): the Docker engine if none runs (stopped again at
the end), a base image if none is present (deploy/base-image.sh; no registry is reached). It
skips, with the reason, only where no engine can run. Every test's compose project is taken
down with its volumes, pass or fail, and the test fails if a container, network or volume of
it is left. The images stay, as the build cache: raftka-e2e:latest and the base.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftka import Admin
from tests.e2e.engine import (
    BUILD_TIMEOUT_S,
    ComposeProject,
    DockerEngine,
    busy_ports,
    compose_command,
    docker,
    ensure_base_image,
    host_pip_settings,
)
from tests.faults.checker import check
from tests.faults.history import FinalState, History
from tests.faults.workload import (
    GroupConsumer,
    KafkaProducer,
    RaftkaProducer,
    Values,
    describe_partitions,
    final_read,
    group_offsets,
    read_replica_logs,
)
from tests.harness import wait_for
from tests.node_harness import NodeProcess, json_lines, node_skip_reason, run_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
IMAGE = "raftka-e2e:latest"
BROKERS = ("raftka-1", "raftka-2", "raftka-3")
GRPC_BOOTSTRAP = "127.0.0.1:19090,127.0.0.1:19100,127.0.0.1:19110"
KAFKA_BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19102,127.0.0.1:19112"
ADMIN_USER = "admin"  # deploy/.env's RAFTKA_ADMIN_USER
# this run's admin password, given to compose as RAFTKA_ADMIN_PASSWORD (the environment wins
# over deploy/.env)
ADMIN_PASSWORD = f"e2e-{secrets.token_urlsafe(12)}"
KAFKA_SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
              "sasl.username": ADMIN_USER, "sasl.password": ADMIN_PASSWORD}
HEALTHY_TIMEOUT_S = 120
FAILOVER_TIMEOUT_S = 60
LOAD_RATE_PER_PRODUCER = 100  # values a second
LOAD_IN_FLIGHT_MAX = 50
FIGURES = REPO / "build" / "e2e-compose-figures.json"  # the last run's timings (BENCHMARKS.md)


def record_figure(name: str, value: float) -> None:
    print(f"e2e figure: {name} = {value:.2f}")
    FIGURES.parent.mkdir(exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = round(value, 2)
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, suite_notes: list[str]
           ) -> Iterator[DockerEngine]:
    engine = DockerEngine(tmp_path_factory.mktemp("docker"))
    try:
        reason = engine.start()
        if reason is not None:
            pytest.skip(reason)
        how = ("already running" if engine.process is None else
               f"started dockerd (pid {engine.process.pid}), stopped at the end")
        compose = " ".join(compose_command() or [])
        suite_notes.append(f"tests/e2e: Docker engine {how}; compose: {compose}")
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def image(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory,
          suite_notes: list[str]) -> str:
    """The project image, built by compose from deploy/Dockerfile on a local base image,
    with the host's pip index settings as build args."""
    work = tmp_path_factory.mktemp("build")
    base, how = ensure_base_image(work / "base-image.log")
    if base is None:
        pytest.skip(how)
    pip_settings = host_pip_settings(sys.executable)
    settings = {"RAFTKA_BASE_IMAGE": base, "RAFTKA_IMAGE": IMAGE, **pip_settings}
    builder = ComposeProject("raftka-e2e-build", settings, work / "compose.log")
    started = time.monotonic()
    builder.run("build", timeout_s=BUILD_TIMEOUT_S)
    build_s = time.monotonic() - started
    record_figure("image_build_s", build_s)
    suite_notes.append(f"tests/e2e: base image {how}; {IMAGE} built by compose in "
                       f"{build_s:.1f}s (pip build args: {sorted(pip_settings) or 'none'})")
    # the previous build's image, untagged now (only raftka's: the Dockerfile labels it)
    docker("image", "prune", "--force", "--filter", "label=org.opencontainers.image.title=raftka")
    return IMAGE


@pytest.fixture
def cluster(image: str, tmp_path: Path, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ComposeProject]:
    """The compose cluster, up and healthy, its admin user made; down with its volumes at
    the end, pass or fail. The SDK in this process (and the Node examples it starts) act as
    the admin: RAFTKA_USER/RAFTKA_PASSWORD, KAFKA_USERNAME/KAFKA_PASSWORD."""
    for name, value in (("RAFTKA_USER", ADMIN_USER), ("RAFTKA_PASSWORD", ADMIN_PASSWORD),
                        ("KAFKA_USERNAME", ADMIN_USER), ("KAFKA_PASSWORD", ADMIN_PASSWORD)):
        monkeypatch.setenv(name, value)
    yield from compose_cluster(image, tmp_path, request, monkeypatch, {})


@pytest.fixture
def unsecured_cluster(image: str, tmp_path: Path, request: pytest.FixtureRequest,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[ComposeProject]:
    """The compose cluster with RAFTKA_SECURITY=off; clients here carry no credentials."""
    for name in ("RAFTKA_USER", "RAFTKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    yield from compose_cluster(image, tmp_path, request, monkeypatch, {"RAFTKA_SECURITY": "off"})


def compose_cluster(image: str, tmp_path: Path, request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]
                    ) -> Iterator[ComposeProject]:
    busy = busy_ports()
    assert not busy, (f"host ports {busy} are taken: another compose cluster? "
                      "(`docker ps`; `docker-compose -p NAME down`)")
    for name in ("RAFTKA_SECURITY", "RAFTKA_ADMIN_USER"):  # deploy/.env's defaults apply
        monkeypatch.delenv(name, raising=False)
    project = ComposeProject(f"raftka-e2e-{os.getpid()}",
                             {"RAFTKA_IMAGE": image, "RAFTKA_ADMIN_PASSWORD": ADMIN_PASSWORD,
                              **settings}, tmp_path / "compose.log")
    try:
        started = time.monotonic()
        project.run("up", "--detach", "--no-build")
        project.wait_healthy(BROKERS, HEALTHY_TIMEOUT_S)
        record_figure("up_to_healthy_s", time.monotonic() - started)
        project.wait_completed("raftka-admin", HEALTHY_TIMEOUT_S)
        yield project
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(project.logs())
        project.run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        left = project.leftovers()
        project.remove(left)
        assert not left, f"compose down left {left} behind"


def raftka(*args: str, stdin: str | None = None, bootstrap: str = GRPC_BOOTSTRAP,
           user: str | None = ADMIN_USER, password: str = ADMIN_PASSWORD,
           ) -> subprocess.CompletedProcess[str]:
    """The Raftka CLI on the host, told every broker's EXTERNAL gRPC address, as `user`
    (None: no credentials at all)."""
    env = {**os.environ, "RAFTKA_BOOTSTRAP": bootstrap}
    env.pop("RAFTKA_USER", None)
    env.pop("RAFTKA_PASSWORD", None)
    if user is not None:
        env.update(RAFTKA_USER=user, RAFTKA_PASSWORD=password)
    return subprocess.run(
        [sys.executable, "-m", "raftka", *args], input=stdin, capture_output=True, text=True,
        env=env, cwd=REPO, timeout=90,
    )


def kafka_read(topics: list[str], group: str, count: int, timeout_s: float = 60) -> list[bytes]:
    """`count` values read by a confluent-kafka consumer group from the host (as the admin)."""
    from confluent_kafka import Consumer

    consumer = Consumer({**KAFKA_SASL, "bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    values: list[bytes] = []
    try:
        consumer.subscribe(topics)

        def read() -> bool:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
            return len(values) >= count

        wait_for(read, timeout_s, f"{count} records of {topics} over the Kafka listeners")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def test_the_image_runs_as_its_own_user_and_keeps_no_build_settings(image: str):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001" and config["Healthcheck"]["Test"][0] == "CMD"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "PIP_" not in history and "PIP_" not in " ".join(config["Env"])
    # the broker's user cannot change the installed code; the data directory is its own
    probe = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "id -u; touch /opt/raftka/venv/probe 2>/dev/null && echo code-writable; "
                   "touch /var/lib/raftka/probe && echo data-writable")
    assert probe.stdout.split() == ["10001", "data-writable"], probe.stdout + probe.stderr


def test_host_clients_use_the_external_listeners(cluster: ComposeProject):
    for service in BROKERS:
        published = cluster.published(service)
        assert len(published) == 2 and all(a.startswith("127.0.0.1:") for a in published), (
            f"{service} is published on {published}: only 127.0.0.1 by default")
    status = raftka("cluster", "status", "--json")
    assert status.returncode == 0, status.stderr
    brokers = json.loads(status.stdout)["brokers"]
    assert sorted(b["address"] for b in brokers) == GRPC_BOOTSTRAP.split(",")
    assert all(b["alive"] for b in brokers)
    assert [b["pid"] for b in brokers] == [None, None, None]  # each is PID 1 of its container

    # the CLI over gRPC; confluent-kafka over the Kafka protocol, its topic auto-created
    assert raftka("topics", "create", "from-cli", "--partitions", "3").returncode == 0
    produced = raftka("produce", "from-cli", stdin="a\nb\nc\n")
    assert produced.returncode == 0, produced.stderr
    from confluent_kafka import Producer

    producer = Producer({**KAFKA_SASL, "bootstrap.servers": KAFKA_BOOTSTRAP, "acks": "all",
                         "enable.idempotence": True})
    try:
        for value in (b"x", b"y", b"z"):
            producer.produce("from-kafka", value)
        assert producer.flush(60) == 0
    finally:
        producer.close()  # librdkafka's threads would go on connecting after the test

    # one group reads both topics; the CLI joins a group of its own
    values = kafka_read(["from-cli", "from-kafka"], "host-group", 6)
    assert sorted(values) == [b"a", b"b", b"c", b"x", b"y", b"z"]
    consumed = raftka("consume", "from-kafka", "--group", "cli-group", "--from-beginning",
                      "--max-messages", "3", "--timeout-ms", "30000")
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == ["x", "y", "z"]
    described = raftka("groups", "describe", "host-group", "--json")
    assert described.returncode == 0, described.stderr
    # the Kafka client's commits (on the partitions that have records), seen over gRPC
    committed = [o for o in json.loads(described.stdout)["offsets"] if o["committed"] is not None]
    assert sum(o["committed"] for o in committed) == 6 and all(o["lag"] == 0 for o in committed)


def kafka_refusal(config: dict[str, Any]) -> list[Any]:
    """The errors a confluent-kafka AdminClient on the host reports when it asks for the
    cluster's metadata with `config`; it must get no metadata."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[Any] = []
    client = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP, "error_cb": errors.append,
                          "socket.timeout.ms": 5_000, **config})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=15)
    client.poll(1)  # deliver the error callbacks
    return errors


def test_clients_without_the_admin_credentials_are_refused(cluster: ComposeProject):
    """Secured by default: Kafka clients without SASL or with a wrong password, gRPC calls
    without credentials, and users no ACL lets in are refused; the admin is let in."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**KAFKA_SASL, "bootstrap.servers": KAFKA_BOOTSTRAP})
    assert len(admin.list_topics(timeout=30).brokers) == 3  # the listeners do answer SASL
    kafka_refusal({})  # PLAINTEXT: the broker closes a connection that does not start SASL
    wrong = kafka_refusal({**KAFKA_SASL, "sasl.password": "not-the-password"})
    assert any(e.code() == KafkaError._AUTHENTICATION and "Invalid username or password"
               in e.str() for e in wrong), [e.str() for e in wrong]

    anonymous = raftka("topics", "list", user=None)
    assert anonymous.returncode == 1 and "requires authentication" in anonymous.stderr, (
        anonymous.stderr)
    guessed = raftka("topics", "list", password="not-the-password")
    assert guessed.returncode == 1 and "Invalid username or password" in guessed.stderr, (
        guessed.stderr)

    # a user of its own, no ACL: authenticated but not authorized (the authorizer is on)
    created = subprocess.run(
        [sys.executable, "-m", "raftka", "users", "create", "alice", "--bootstrap",
         GRPC_BOOTSTRAP], capture_output=True, text=True, cwd=REPO, timeout=90,
        env={**os.environ, "RAFTKA_NEW_PASSWORD": "alice-password"})
    assert created.returncode == 0, created.stderr
    refused = raftka("produce", "alice-topic", stdin="x\n", user="alice",
                     password="alice-password")
    assert refused.returncode == 1 and "AUTHORIZATION_FAILED" in refused.stderr, refused.stderr
    assert raftka("produce", "admin-topic", stdin="x\n").returncode == 0  # the super user


def test_raftka_security_off_runs_it_plaintext_without_acls(unsecured_cluster: ComposeProject):
    """The lab switch: PLAINTEXT Kafka and gRPC, no authorizer, no credentials needed."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "acks": "all"})
    try:
        producer.produce("open-topic", b"plain")
        assert producer.flush(60) == 0
    finally:
        producer.close()
    consumed = raftka("consume", "open-topic", "--from-beginning", "--max-messages", "1",
                      "--timeout-ms", "30000", user=None)
    assert consumed.returncode == 0 and consumed.stdout.split() == ["plain"], consumed.stderr


CONSOLE_URL = "http://127.0.0.1:8080"


def test_the_console_serves_the_cluster_on_8080(cluster: ComposeProject):
    """The console service (kafka-ui's place in the seed notes), from the host."""
    import urllib.request

    assert cluster.published("console") == ["127.0.0.1:8080"]
    overview: dict[str, object] = {}

    def answered() -> bool:
        try:
            with urllib.request.urlopen(f"{CONSOLE_URL}/api/overview", timeout=5) as reply:
                overview.update(json.loads(reply.read()))
        except OSError:
            return False
        return overview.get("alive") == 3

    wait_for(answered, 60, "the console's overview naming three live brokers")
    assert sorted(b["id"] for b in overview["brokers"]) == [1, 2, 3]  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"{CONSOLE_URL}/", timeout=5) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    # it reads what the admin wrote: its calls carry the admin's credentials (under the
    # authorizer an anonymous caller would see no topic at all)
    created = raftka("topics", "create", "seen-by-console", "--partitions", "1")
    assert created.returncode == 0, created.stderr
    produced = raftka("produce", "seen-by-console", stdin="hello\n")
    assert produced.returncode == 0, produced.stderr
    with urllib.request.urlopen(f"{CONSOLE_URL}/api/topics", timeout=10) as reply:
        topics = json.loads(reply.read())["topics"]
    assert "seen-by-console" in [t["name"] for t in topics], topics
    url = f"{CONSOLE_URL}/api/topics/seen-by-console/partitions/0/messages?from=earliest"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert "hello" in reply.read().decode()


def leaders(topic: str) -> dict[int, int]:
    with Admin(GRPC_BOOTSTRAP, request_timeout_ms=10_000) as admin:
        return {p.partition: p.leader_id for p in admin.describe_topic(topic).partitions}


def test_a_killed_leader_container_loses_no_acknowledged_record(cluster: ComposeProject):
    topic, group, partitions = "load", "load-group", 3
    with Admin(GRPC_BOOTSTRAP) as admin:
        admin.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
    wait_for(lambda: all(len(isr) == 3 for isr in describe_partitions(GRPC_BOOTSTRAP, topic)[1]
                         .values()), 30, "the topic's ISRs to fill")
    history, values = History(), Values()
    producers: list[RaftkaProducer | KafkaProducer] = [
        RaftkaProducer("raftka-sdk", GRPC_BOOTSTRAP, topic, history, values,
                       LOAD_RATE_PER_PRODUCER, LOAD_IN_FLIGHT_MAX),
        KafkaProducer("confluent", KAFKA_BOOTSTRAP, topic, history, values,
                      LOAD_RATE_PER_PRODUCER, LOAD_IN_FLIGHT_MAX, config=KAFKA_SASL),
    ]
    consumer = GroupConsumer(GRPC_BOOTSTRAP, topic, group, history)
    try:
        for client in (*producers, consumer):
            client.start()
        wait_for(lambda: history.counts()["ok"] >= 200, 60, "200 acknowledged writes")

        victim = leaders(topic)[0]
        led = {p for p, leader in leaders(topic).items() if leader == victim}
        container = cluster.container(f"raftka-{victim}")
        fault = history.start_fault("kill", [victim], f"docker kill raftka-{victim}")
        docker("kill", container)  # SIGKILL; returns once it is delivered
        killed_at = history.now()
        fault.commands.append(f"docker kill {container}")

        # a client given every broker still starts with the first one down
        listed = raftka("topics", "list")
        assert listed.returncode == 0 and topic in listed.stdout, listed.stderr
        wait_for(lambda: all(leaders(topic)[p] not in (victim, -1) for p in led),
                 FAILOVER_TIMEOUT_S, "new leaders for the killed broker's partitions")
        record_figure("kill_to_new_leader_s", history.now() - killed_at)

        def acked_after_kill() -> float | None:
            """Seconds from the kill to the first ack, on every partition the victim led,
            of a write sent after the kill (None until each has one)."""
            firsts = []
            for partition in led:
                acks = [w.complete_s for w in history.writes if w.partition == partition
                        and w.outcome == "ok" and w.invoke_s > killed_at and w.complete_s]
                if not acks:
                    return None
                firsts.append(min(acks) - killed_at)
            return max(firsts)

        resumed = wait_for(acked_after_kill, FAILOVER_TIMEOUT_S, "acks after the kill")
        assert isinstance(resumed, float)
        record_figure("kill_to_acks_resumed_s", resumed)
        time.sleep(3)  # load on the remaining two brokers

        docker("start", container)
        history.end_fault(fault)
        restarted_at = history.now()
        wait_for(lambda: all(victim in isr for isr in describe_partitions(GRPC_BOOTSTRAP, topic)
                             [1].values()), FAILOVER_TIMEOUT_S, f"broker {victim} in every ISR")
        record_figure("restart_to_isr_rejoined_s", history.now() - restarted_at)
        time.sleep(2)
    finally:
        for client in producers:
            client.stop(flush_timeout_s=40)
        consumer.stop()
    counts = history.counts()
    acked_after = sum(1 for w in history.writes if w.outcome == "ok" and w.invoke_s > killed_at)
    print(f"e2e load: {counts}, {acked_after} acknowledged after the kill")
    assert acked_after > 0

    final = FinalState()
    final.reads, final.high_watermarks = final_read(GRPC_BOOTSTRAP, topic, partitions)
    final.replicas, final.isr = describe_partitions(GRPC_BOOTSTRAP, topic)
    final.committed = group_offsets(GRPC_BOOTSTRAP, group, topic)
    cluster.run("stop", "--timeout", "20")  # every broker stopped: their files are still
    try:
        final.replica_logs = read_replica_logs(
            {i: cluster.volume_path(f"raftka-{i}-data") for i in (1, 2, 3)}, topic, partitions)
    except PermissionError as exc:  # the volumes are root's: compare what the leaders served
        final.notes.append(f"replica files not compared: {exc}")
    report = check(history, final)
    print(report.table())
    assert report.ok, f"{report.table()}\n{final.notes}"
    assert final.replica_logs, "no replica file was read"

    # down (the volumes stay) and up again: every record is still there, where it was
    started = time.monotonic()
    cluster.run("down", "--timeout", "20")
    cluster.run("up", "--detach", "--no-build")
    cluster.wait_healthy(BROKERS, HEALTHY_TIMEOUT_S)
    record_figure("down_up_to_healthy_s", time.monotonic() - started)
    again, _ = final_read(GRPC_BOOTSTRAP, topic, partitions)
    assert sorted(again, key=lambda r: (r.partition, r.offset)) == sorted(
        final.reads, key=lambda r: (r.partition, r.offset))


NODE_SKIP = node_skip_reason()


@pytest.mark.node
@pytest.mark.skipif(NODE_SKIP is not None, reason=str(NODE_SKIP))
def test_the_nestjs_example_runs_against_the_compose_cluster(cluster: ComposeProject,
                                                             tmp_path: Path):
    # as the admin: KAFKA_USERNAME/KAFKA_PASSWORD (the cluster fixture sets them)
    sasl = ("--sasl-mechanism", "scram-sha-512")
    app = NodeProcess("nest-app.js", "--brokers", KAFKA_BOOTSTRAP, "--group-id", "compose",
                      *sasl, stderr_path=tmp_path / "nest-app.stderr")
    try:
        app.wait_for_line(lambda line: line.get("ready") is True, 60, "the Nest app to start")
        result = run_node("nest-client.js", "--brokers", KAFKA_BOOTSTRAP, "--group-id",
                          "compose", "--timeout-ms", "30000", *sasl, timeout_s=90)
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        lines: list[dict[str, Any]] = json_lines(result.stdout)
        assert {"pattern": "math.sum", "request": [1, 2, 3], "reply": 6} in lines
        (emitted,) = [line for line in lines if line.get("emitted") == "events.created"]
        app.wait_for_line(lambda line: line.get("event") == "events.created"
                          and line.get("payload") == emitted["payload"], 30,
                          "the Nest app to print the emitted event")
    finally:
        app.stop()
