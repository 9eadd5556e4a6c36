"""replication.transport and replication.listen: defaults, and clear errors at start-up."""

from __future__ import annotations

import pytest

from raftka.broker.config import ConfigError, build_config


def config(**settings: str):
    return build_config({}, {"broker_id": 1, "data_dir": "/tmp/x", "listen": "127.0.0.1:9090",
                             **settings})


def test_the_stream_is_the_default_at_the_grpc_port_plus_four():
    assert config().replication_address == ("127.0.0.1", 9094)
    assert config(replication_listen="0.0.0.0:7000").replication_address == ("0.0.0.0", 7000)
    assert config(replication_transport="grpc").replication_address is None


def test_bad_replication_settings_name_themselves():
    with pytest.raises(ConfigError, match=r"replication\.transport is 'udp'"):
        config(replication_transport="udp")
    with pytest.raises(ConfigError, match=r"replication\.listen must be HOST:PORT"):
        config(replication_listen="nowhere")
    with pytest.raises(ConfigError, match="transport is grpc"):
        config(replication_transport="grpc", replication_listen="127.0.0.1:7000")


def test_a_replication_port_another_listener_has_is_refused_or_left_out():
    external = {"kafka_listeners": "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094",
                "listener_security_protocol_map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"}
    with pytest.raises(ConfigError, match="Kafka listener EXTERNAL's address"):
        config(**external, replication_listen="0.0.0.0:9094")
    with pytest.raises(ConfigError, match="metrics listener"):
        config(metrics_listen="127.0.0.1:7000", replication_listen="127.0.0.1:7000")
    # The default taken by another listener (a configuration from before the replication
    # listener): no listener, and why, for the start-up warning.
    taken = config(**external)
    assert taken.replication_address is None
    assert "Kafka listener EXTERNAL" in str(taken.replication_default_unusable)
    assert config(listen="127.0.0.1:65533").replication_address is None
    assert config(**external, replication_listen="0.0.0.0:9096").replication_address == (
        "0.0.0.0", 9096)
