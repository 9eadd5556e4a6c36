"""The container entrypoint turns environment variables into the right broker flags."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[1] / "deploy" / "entrypoint.sh"


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


def test_compose_and_k8s_files_name_three_voters():
    deploy = ENTRYPOINT.parent
    compose = (deploy / "docker-compose.yml").read_text()
    assert "1@raftka-1:9091,2@raftka-2:9091,3@raftka-3:9091" in compose
    k8s = (deploy / "k8s" / "raftka.yaml").read_text()
    assert "1@raftka-0.raftka:9091,2@raftka-1.raftka:9091,3@raftka-2.raftka:9091" in k8s
    assert "replicas: 3" in k8s


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
    deploy = ENTRYPOINT.parent
    compose = (deploy / "docker-compose.yml").read_text()
    assert "RAFTKA_CLUSTER_SECRET_FILE: /run/raftka/cluster.secret" in compose
    assert 'command: ["make-secret", "/run/raftka/cluster.secret"]' in compose
    k8s = (deploy / "k8s" / "raftka.yaml").read_text()
    assert "secretKeyRef: { name: raftka-cluster-secret, key: secret }" in k8s
