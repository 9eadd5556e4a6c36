"""The deploy/ files, checked without an engine or a cluster: the entrypoint turns environment
variables into the right broker flags; the Kubernetes manifests match the Kubernetes API's
schemas (kubernetes-validate, offline) and agree with each other and with the image; the
compose file and the Dockerfile keep the promises deploy/README.md makes. tests/e2e runs the
compose file for real; nothing here applies the manifests to a Kubernetes cluster."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
MANIFESTS = DEPLOY / "k8s" / "raftka.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
# The oldest Kubernetes with gRPC probes on by default, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.27.0", "latest")
NOT_INSTALLED = "{} is not installed (`pip install -e '.[dev]'` brings it)"


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "raftka"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    return subprocess.run(
        ["sh", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=10,
        env={"PATH": f"{tmp_path}:{os.environ['PATH']}", **env},
    )


def test_statefulset_ordinal_becomes_broker_id_and_settings_become_flags(tmp_path):
    result = run_entrypoint(
        tmp_path,
        {
            "HOSTNAME": "raftka-2",
            "RAFTKA_ADVERTISED": "raftka-2.raftka",
            "RAFTKA_VOTERS": "1@a:9091,2@b:9091,3@c:9091",
            "RAFTKA_SETTINGS": "min.insync.replicas=2 num.partitions=3",
        },
    )
    assert result.returncode == 0, result.stderr
    args = result.stdout.split("\n")
    assert args[:3] == ["broker", "--id", "3"]
    joined = " ".join(args)
    assert "--advertised-host raftka-2.raftka" in joined
    assert "--raft-listen raftka-2.raftka:9091" in joined
    assert "--voters 1@a:9091,2@b:9091,3@c:9091" in joined
    assert "--set min.insync.replicas=2 --set num.partitions=3" in joined


@pytest.mark.parametrize("hostname", ["broker", "raftka-x"])
def test_an_id_that_cannot_be_derived_is_a_clear_error(tmp_path, hostname):
    result = run_entrypoint(tmp_path, {"HOSTNAME": hostname})
    assert result.returncode == 2 and "set RAFTKA_ID" in result.stderr


def test_compose_file_names_three_voters():
    assert "1@raftka-1:9091,2@raftka-2:9091,3@raftka-3:9091" in COMPOSE.read_text()


def test_voters_derived_from_the_statefulset_ordinal_and_domain(tmp_path):
    result = run_entrypoint(tmp_path, {"HOSTNAME": "raftka-1", "RAFTKA_VOTER_COUNT": "3",
                                       "RAFTKA_ADVERTISED": "raftka-1.raftka.prod.svc"})
    assert result.returncode == 0, result.stderr
    assert ("--voters 1@raftka-0.raftka.prod.svc:9091,2@raftka-1.raftka.prod.svc:9091,"
            "3@raftka-2.raftka.prod.svc:9091") in " ".join(result.stdout.split("\n"))
    # an explicit list wins
    result = run_entrypoint(tmp_path, {"HOSTNAME": "raftka-1", "RAFTKA_VOTER_COUNT": "3",
                                       "RAFTKA_VOTERS": "1@a:9091"})
    assert "--voters 1@a:9091" in " ".join(result.stdout.split("\n"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOSTNAME": "raftka-1", "RAFTKA_VOTER_COUNT": "three"}, "positive number"),
        ({"HOSTNAME": "raftka-1", "RAFTKA_VOTER_COUNT": "0"}, "positive number"),
        ({"HOSTNAME": "broker", "RAFTKA_ID": "1", "RAFTKA_VOTER_COUNT": "3"}, "<name>-<ordinal>"),
        ({"HOSTNAME": "raftka-1", "RAFTKA_VOTER_COUNT": "3", "RAFTKA_ADVERTISED": "other.raftka"},
         "advertised name"),
    ],
)
def test_voters_that_cannot_be_derived_are_a_clear_error(tmp_path, env, message):
    result = run_entrypoint(tmp_path, env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_containers_bind_raft_as_told_and_share_a_secret(tmp_path):
    result = run_entrypoint(tmp_path, {"HOSTNAME": "raftka-0"})
    joined = " ".join(result.stdout.split("\n"))
    assert "--raft-bind 0.0.0.0:9091" in joined
    result = run_entrypoint(tmp_path, {"HOSTNAME": "raftka-0", "RAFTKA_RAFT_BIND": "10.1.2.3:9091"})
    assert "--raft-bind 10.1.2.3:9091" in " ".join(result.stdout.split("\n"))
    out = subprocess.run(  # compose's raftka-secret service
        ["sh", str(ENTRYPOINT), "make-secret", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=10,
        env={"PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )
    assert out.stdout.split("\n")[:3] == ["cluster", "secret", str(tmp_path / "s")]
    compose = COMPOSE.read_text()
    assert "RAFTKA_CLUSTER_SECRET_FILE: /run/raftka/cluster.secret" in compose
    assert 'command: ["make-secret", "/run/raftka/cluster.secret"]' in compose
    assert "secretKeyRef: { name: raftka-cluster-secret, key: secret }" in MANIFESTS.read_text()


# ------------------------------------------------------------------------------- Kubernetes
def manifests() -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason=NOT_INSTALLED.format("PyYAML"))
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version):
    validator = pytest.importorskip(
        "kubernetes_validate", reason=NOT_INSTALLED.format("kubernetes-validate"))
    docs = manifests()
    assert set(docs) == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "Job"}
    wanted = validator.latest_version() if version == "latest" else version
    for doc in docs.values():
        validator.validate(doc, wanted, strict=True)  # strict: no unknown fields either
    # the validator can fail: a misspelt field and a wrongly typed one are caught
    broken = copy.deepcopy(docs["StatefulSet"])
    broken["spec"]["replica"] = 3
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, wanted, strict=True)
    broken = copy.deepcopy(docs["StatefulSet"])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, wanted, strict=True)


def test_kubernetes_manifests_agree_with_each_other_and_the_image():
    docs = manifests()
    service, stateful, budget = docs["Service"], docs["StatefulSet"], docs["PodDisruptionBudget"]
    config = docs["ConfigMap"]["data"]
    labels = stateful["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], stateful["spec"]["selector"]["matchLabels"],
                     budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # headless: a DNS name per pod
    assert stateful["spec"]["serviceName"] == service["metadata"]["name"]
    assert int(config["RAFTKA_VOTER_COUNT"]) == stateful["spec"]["replicas"]
    assert budget["spec"]["maxUnavailable"] == 1  # two of three voters keep the quorum
    pod = stateful["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uid = re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text())
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["fsGroup"] == int(uid.group(1))  # the volume is writable
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert container["volumeMounts"][0]["mountPath"] == "/var/lib/raftka"
    # secured as the compose file is; the Job makes the super user with the cluster secret
    assert config["RAFTKA_SECURITY"] == "sasl" and config["RAFTKA_ADMIN_USER"]
    job = docs["Job"]["spec"]["template"]["spec"]
    (creator,) = job["containers"]
    assert creator["command"][:4] == ["raftka", "users", "create", "$(RAFTKA_ADMIN_USER)"]
    mount = creator["volumeMounts"][0]["mountPath"]
    assert f"{mount}/cluster.secret" in creator["command"]
    (volume,) = job["volumes"]
    cluster_secret = next(e for e in container["env"] if e["name"] == "RAFTKA_CLUSTER_SECRET")
    assert volume["secret"]["secretName"] == (
        cluster_secret["valueFrom"]["secretKeyRef"]["name"])
    assert f"{docs['Job']['metadata']['labels']['app']}" != labels["app"]  # not a broker
    bootstrap = creator["command"][creator["command"].index("--bootstrap") + 1]
    assert bootstrap == ",".join(f"raftka-{i}.raftka:{ports['grpc']}" for i in range(3))


def pod_environment(ordinal: int) -> dict[str, str]:
    """What the kubelet gives pod raftka-N: the ConfigMap (envFrom), then env with $(VAR)
    references expanded; the Secret's value stands in."""
    docs = manifests()
    (container,) = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    name = f"{docs['StatefulSet']['metadata']['name']}-{ordinal}"
    env = {"HOSTNAME": name, **docs["ConfigMap"]["data"]}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = name
        else:
            env[item["name"]] = "secret-from-the-cluster"
    return env


def test_each_pod_of_the_statefulset_becomes_its_broker(tmp_path):
    voters = "1@raftka-0.raftka:9091,2@raftka-1.raftka:9091,3@raftka-2.raftka:9091"
    for ordinal in range(3):
        result = run_entrypoint(tmp_path, pod_environment(ordinal))
        assert result.returncode == 0, result.stderr
        args = result.stdout.split("\n")
        joined = " ".join(args)
        assert args[:3] == ["broker", "--id", str(ordinal + 1)]
        assert f"--advertised-host raftka-{ordinal}.raftka" in joined
        assert f"--raft-listen raftka-{ordinal}.raftka:9091" in joined
        assert f"--voters {voters}" in joined
        assert "--set min.insync.replicas=2" in joined
        assert "--set super.users=User:admin" in joined  # RAFTKA_SECURITY=sasl
        assert "--set listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT" in joined


# ---------------------------------------------------------------------- compose, Dockerfile
def compose_file() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason=NOT_INSTALLED.format("PyYAML"))
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_publishes_on_loopback_and_advertises_what_it_publishes():
    services = compose_file()["services"]
    brokers = {name: s for name, s in services.items() if name.startswith("raftka-")
               and name not in ("raftka-secret", "raftka-admin")}
    assert sorted(brokers) == ["raftka-1", "raftka-2", "raftka-3"]
    console = services["console"]  # the web console where the seed notes had kafka-ui
    # it acts as the admin for whoever reaches it: on loopback unless told, apart from the
    # brokers
    assert console["ports"] == ["${RAFTKA_CONSOLE_PUBLISH_ADDRESS:-127.0.0.1}:8080:8080"]
    assert console["command"][:2] == ["console", "--bootstrap"]
    assert console["read_only"] is True and console["cap_drop"] == ["ALL"]
    for name, service in brokers.items():
        published = {}
        for port in service["ports"]:
            address, host_port, container_port = port.rsplit(":", 2)
            assert address == "${RAFTKA_PUBLISH_ADDRESS:-127.0.0.1}", f"{name}: {port}"
            published[int(container_port)] = int(host_port)
        env = service["environment"]
        external = "${RAFTKA_EXTERNAL_HOST:-127.0.0.1}"
        # EXTERNAL Kafka listener on 9094, EXTERNAL gRPC on 9095: told as the host ports
        assert env["RAFTKA_KAFKA_ADVERTISED_LISTENERS"] == f"EXTERNAL://{external}:{published[9094]}"
        assert env["RAFTKA_GRPC_ADVERTISED_LISTENERS"] == f"EXTERNAL://{external}:{published[9095]}"
        assert "auto.create.topics.enable=true" in env["RAFTKA_SETTINGS"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_compose_is_secured_by_default_with_the_admin_from_the_environment():
    services = compose_file()["services"]
    for name in ("raftka-1", "raftka-2", "raftka-3"):
        env = services[name]["environment"]
        assert env["RAFTKA_SECURITY"] == "${RAFTKA_SECURITY:-sasl}"
        assert env["RAFTKA_ADMIN_USER"] == "${RAFTKA_ADMIN_USER:-admin}"
        assert "protocol.map" not in env["RAFTKA_SETTINGS"]  # the entrypoint writes it
    admin = services["raftka-admin"]  # the first admin, with the cluster secret's authority
    assert admin["command"][:3] == ["users", "create", "${RAFTKA_ADMIN_USER:-admin}"]
    assert "/run/raftka/cluster.secret" in admin["command"]
    assert admin["environment"]["RAFTKA_NEW_PASSWORD"].startswith("${RAFTKA_ADMIN_PASSWORD:?")
    assert all(admin["depends_on"][b] == {"condition": "service_healthy"}
               for b in ("raftka-1", "raftka-2", "raftka-3"))
    console = services["console"]
    assert console["depends_on"] == {
        "raftka-admin": {"condition": "service_completed_successfully"}}
    assert console["environment"]["RAFTKA_USER"] == "${RAFTKA_ADMIN_USER:-admin}"
    dotenv = dict(line.split("=", 1) for line in (DEPLOY / ".env").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert dotenv["RAFTKA_ADMIN_USER"] == "admin" and dotenv["RAFTKA_SECURITY"] == "sasl"
    assert "change-me" in dotenv["RAFTKA_ADMIN_PASSWORD"]  # README says: change it


def test_entrypoint_secures_every_listener_under_raftka_security_sasl(tmp_path):
    listeners = {"HOSTNAME": "raftka-1", "RAFTKA_ID": "1",
                 "RAFTKA_KAFKA_LISTENERS": "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094",
                 "RAFTKA_GRPC_LISTENERS": "EXTERNAL://0.0.0.0:9095"}
    result = run_entrypoint(tmp_path, {**listeners, "RAFTKA_SECURITY": "sasl",
                                       "RAFTKA_ADMIN_USER": "admin"})
    assert result.returncode == 0, result.stderr
    joined = " ".join(result.stdout.split("\n"))
    for setting in ("listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,"
                    "EXTERNAL:SASL_PLAINTEXT", "grpc.security.protocol=SASL_PLAINTEXT",
                    "sasl.enabled.mechanisms=SCRAM-SHA-512", "authorizer.enabled=true",
                    "super.users=User:admin"):
        assert f"--set {setting}" in joined, joined
    result = run_entrypoint(tmp_path, {**listeners, "RAFTKA_SECURITY": "off"})
    joined = " ".join(result.stdout.split("\n"))
    assert "--set listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT" in joined
    assert "authorizer" not in joined and "SASL" not in joined
    unset = " ".join(run_entrypoint(tmp_path, listeners).stdout.split("\n"))
    assert "protocol.map" not in unset  # Kubernetes and hand-made setups: as before


@pytest.mark.parametrize(
    ("env", "message"),
    [({"RAFTKA_SECURITY": "tls"}, "must be sasl or off"),
     ({"RAFTKA_SECURITY": "sasl"}, "needs RAFTKA_ADMIN_USER"),
     ({"RAFTKA_SECURITY": "sasl", "RAFTKA_ADMIN_USER": "a;b"}, "needs RAFTKA_ADMIN_USER")],
)
def test_entrypoint_refuses_a_security_mode_it_cannot_apply(tmp_path, env, message):
    result = run_entrypoint(tmp_path, {"HOSTNAME": "raftka-1", **env})
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_v1_accepts_the_file():
    result = subprocess.run(["docker-compose", "--file", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_dockerfile_builds_from_a_chosen_base_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG BASE_IMAGE=python:3.11-slim"  # what users pull by default
    assert [line for line in lines if line.startswith("FROM ")] == [
        "FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    final = text[text.rindex("FROM ${BASE_IMAGE}"):]
    assert re.search(r"^USER 10001", final, re.M) and "HEALTHCHECK" in final
    assert "PIP_INDEX_URL" not in final  # pip's settings stay in the build stage
    # dependencies are installed before the sources are copied: a source change keeps them
    build = text[:text.rindex("FROM ${BASE_IMAGE}")]
    assert build.index("-r requirements.txt") < build.index("COPY broker")


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    ignore = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (.git, .venv, node_modules, data) stays out
    copied = set()
    for match in re.finditer(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M):
        copied.update(match.group(1).split())
    assert copied == allowed
