"""Secured test clusters: a local CA (client/local_ca.py) and each broker of a harness
LocalCluster serving TLS on its gRPC and Kafka listeners, and calling the others over TLS.

`secure(cluster, root, client_auth)` rewrites the brokers' settings before they start and
gives the harness TLS channels for its own readiness checks. The Kafka listener is named SSL
(Kafka's rule: a listener named after a protocol needs no map entry).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from raftka.client.local_ca import LocalCa, write_local_ca
from raftka.client.tls_options import TlsOptions
from tests.harness import LocalCluster


def secure(cluster: LocalCluster, root: Path, client_auth: str = "none",
           kafka_protocol: str = "SSL") -> LocalCa:
    ca = write_local_ca(str(root / "tls"), {i: "127.0.0.1" for i in cluster.brokers})
    client = client_options(ca)
    for broker_id, broker in cluster.brokers.items():
        cert, key = ca.broker(broker_id)
        broker.settings = {
            **broker.settings,
            "listeners": f"{kafka_protocol}://127.0.0.1:{broker.kafka_port}",
            "grpc.security.protocol": "SSL",
            "ssl.certificate.location": cert,
            "ssl.key.location": key,
            "ssl.ca.location": ca.ca,
            "ssl.client.auth": client_auth,
        }
        broker.credentials = client.channel_credentials()
    return ca


def client_options(ca: LocalCa) -> TlsOptions:
    """The client certificate too: accepted whether or not the brokers require one."""
    return TlsOptions(ca.ca, ca.client_cert, ca.client_key)


def trust_only(ca: LocalCa) -> grpc.ChannelCredentials:
    return TlsOptions(ca.ca).channel_credentials()


class _SignedAsBroker(grpc.AuthMetadataPlugin):
    """Signs every call with the cluster secret, as a broker's internal calls are."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._cluster = cluster

    def __call__(self, context: grpc.AuthMetadataContext,
                 callback: grpc.AuthMetadataPluginCallback) -> None:
        service = context.service_url.rsplit("/", 1)[-1]
        callback(self._cluster.internal_metadata(f"/{service}/{context.method_name}"), None)


def sign_harness_calls(cluster: LocalCluster, ca: LocalCa) -> None:
    """The harness's readiness checks over TLS, signed as a broker: for clusters whose main
    gRPC listener is SASL_SSL (user + password on every client call), where the harness has
    no user of its own before the first one is made."""
    credentials = grpc.composite_channel_credentials(
        client_options(ca).channel_credentials(),
        grpc.metadata_call_credentials(_SignedAsBroker(cluster)))
    for broker in cluster.brokers.values():
        broker.credentials = credentials
