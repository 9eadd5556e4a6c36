"""kafkajs (Node.js) over SSL and mutual TLS against a TLS Raftka cluster's Kafka listener.
Needs Node.js 20+ and examples/nestjs/node_modules (`npm install` there; `make test` does)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.node_harness import NEST_DIR, NODE, json_lines, node_skip_reason
from tests.tls_harness import secure

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).with_name("kafkajs_ssl.js")


@pytest.mark.skipif(node_skip_reason() is not None, reason=node_skip_reason() or "")
@pytest.mark.parametrize("client_auth", ["none", "required"])
def test_kafkajs_produces_and_consumes_over_tls(cluster_factory, tmp_path, client_auth):
    cluster = cluster_factory(1, {"offsets.topic.replication.factor": "1"})
    ca = secure(cluster, tmp_path, client_auth=client_auth)
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    certificate = [ca.client_cert, ca.client_key] if client_auth == "required" else []
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(SCRIPT), cluster.kafka_bootstrap, ca.ca, f"js-{client_auth}", "25",
         *certificate],
        cwd=NEST_DIR, capture_output=True, text=True, timeout=90,
        env={**os.environ, "NODE_PATH": str(NEST_DIR / "node_modules")},
    )
    assert result.returncode == 0, result.stderr[-3000:] + cluster.logs()
    assert json_lines(result.stdout)[-1] == {"produced": 25, "consumed": 25}
    if client_auth == "required":
        # Without its certificate the same client is refused.
        refused = subprocess.run(
            [NODE, str(SCRIPT), cluster.kafka_bootstrap, ca.ca, "js-refused", "1"],
            cwd=NEST_DIR, capture_output=True, text=True, timeout=120,
            env={**os.environ, "NODE_PATH": str(NEST_DIR / "node_modules"), "RETRIES": "1"},
        )
        assert refused.returncode != 0
