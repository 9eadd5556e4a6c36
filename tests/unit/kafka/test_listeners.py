"""Named listeners: parsing `listeners` / `advertised.listeners` (and the grpc. ones), the
broker config that uses them, and which address a client is told for the listener it came in
on."""

from __future__ import annotations

import pytest

from raftka.broker.config import BrokerConfig, ConfigError
from raftka.broker.listeners import ListenerConfigError, ListenerEndpoint, kafka_endpoints
from raftka.cluster.image import BrokerRegistration


def test_each_listener_is_advertised_at_its_own_address() -> None:
    endpoints = kafka_endpoints(
        "PLAINTEXT://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094",
        "PLAINTEXT://raftka-1:9092,EXTERNAL://127.0.0.1:19092",
        default_host="raftka-1", protocol_map="EXTERNAL:PLAINTEXT",
    )
    assert endpoints == [
        ListenerEndpoint("PLAINTEXT", "0.0.0.0", 9092, "raftka-1", 9092),
        ListenerEndpoint("EXTERNAL", "0.0.0.0", 9094, "127.0.0.1", 19092),
    ]


def test_without_an_advertised_entry_the_bind_or_broker_host_is_used() -> None:
    endpoints = kafka_endpoints("internal://:9092,LOCAL://127.0.0.2:9093", "", "broker-1",
                                protocol_map="INTERNAL:PLAINTEXT,local:SSL")
    assert [(e.name, e.host, e.port, e.security_protocol) for e in endpoints] == [
        ("INTERNAL", "broker-1", 9092, "PLAINTEXT"), ("LOCAL", "127.0.0.2", 9093, "SSL")]
    assert endpoints[0].bind_host == "0.0.0.0"


@pytest.mark.parametrize(("listeners", "advertised", "message"), [
    ("PLAINTEXT:9092", "", "must look like NAME://HOST:PORT"),
    ("PLAINTEXT://:0", "", "port in 1..65535"),
    ("A://:9092,a://:9093", "", "listener A is named twice"),
    ("A://:9092", "B://h:1", "advertised.listeners names B"),
    ("A://:9092", "A://0.0.0.0:9092", "must name a host clients can reach"),
])
def test_bad_listener_settings_name_what_is_wrong(listeners: str, advertised: str,
                                                   message: str) -> None:
    with pytest.raises(ListenerConfigError, match=message):
        kafka_endpoints(listeners, advertised, "h", protocol_map="A:PLAINTEXT")


def test_broker_config_kafka_port_is_a_plaintext_listener() -> None:
    config = BrokerConfig(broker_id=1, data_dir="/d", listen="0.0.0.0:9090",
                          advertised_host="raftka-1", kafka_port=9092).validate()
    assert config.kafka_endpoints == [
        ListenerEndpoint("PLAINTEXT", "0.0.0.0", 9092, "raftka-1", 9092)]
    assert BrokerConfig(broker_id=1, data_dir="/d").kafka_endpoints == []


def test_broker_config_takes_kafkas_setting_names_and_refuses_both_forms() -> None:
    from raftka.broker.config import settings_from_mapping

    values = settings_from_mapping({"listeners": "PLAINTEXT://:9092,EXTERNAL://:9094",
                                    "advertised.listeners": "EXTERNAL://localhost:19092",
                                    "listener.security.protocol.map": "EXTERNAL:SASL_PLAINTEXT"})
    config = BrokerConfig(broker_id=1, data_dir="/d", **values).validate()
    assert [(e.name, e.host, e.port, e.security_protocol) for e in config.kafka_endpoints] == [
        ("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT"),
        ("EXTERNAL", "localhost", 19092, "SASL_PLAINTEXT")]
    with pytest.raises(ConfigError, match="kafka_port or listeners"):
        BrokerConfig(broker_id=1, data_dir="/d", kafka_port=9092, **values).validate()
    with pytest.raises(ConfigError, match=r"advertised\.listeners"):
        BrokerConfig(broker_id=1, data_dir="/d", kafka_listeners="A://:1",
                     kafka_advertised_listeners="A://:1",
                     listener_security_protocol_map="A:PLAINTEXT").validate()


def registration(kafka_port: int, listeners: tuple[tuple[str, str, int], ...],
                 grpc_listeners: tuple[tuple[str, str, int], ...] = ()) -> BrokerRegistration:
    return BrokerRegistration(broker_id=1, incarnation_id="i", host="grpc-host", port=9090,
                              kafka_port=kafka_port, kafka_listeners=listeners,
                              grpc_listeners=grpc_listeners, voter=True, pid=1, fenced=False,
                              epoch=1)


def test_clients_are_told_the_address_of_the_listener_they_came_in_on() -> None:
    broker = registration(9092, (("PLAINTEXT", "raftka-1", 9092),
                                 ("EXTERNAL", "127.0.0.1", 19092)))
    assert broker.kafka_endpoint("PLAINTEXT") == ("raftka-1", 9092)
    assert broker.kafka_endpoint("EXTERNAL") == ("127.0.0.1", 19092)
    assert broker.kafka_endpoint("OTHER") is None


def test_registrations_from_before_named_listeners_mean_one_plaintext_listener() -> None:
    assert registration(9092, ()).kafka_endpoint("PLAINTEXT") == ("grpc-host", 9092)
    assert registration(9092, ()).kafka_endpoint("EXTERNAL") is None
    assert registration(0, ()).kafka_endpoint("PLAINTEXT") is None


def test_raftka_broker_takes_listeners_from_flags_or_set() -> None:
    # Regression: flags left out (None) overwrote the same settings given with --set, so
    # `--set listeners=...` opened no Kafka listener at all.
    from raftka.client.cli import build_parser
    from raftka.client.cli_broker import config_from_args

    parser = build_parser()
    by_set = config_from_args(parser.parse_args([
        "broker", "--id", "1", "--data-dir", "/d", "--set", "listeners=A://:9092",
        "--set", "advertised.listeners=A://a.example:19092",
        "--set", "listener.security.protocol.map=A:SASL_PLAINTEXT"]))
    assert [(e.name, e.host, e.port) for e in by_set.kafka_endpoints] == [
        ("A", "a.example", 19092)]
    by_flags = config_from_args(parser.parse_args([
        "broker", "--id", "1", "--data-dir", "/d", "--listeners", "A://:9092",
        "--advertised-listeners", "A://a.example:19092",
        "--set", "listener.security.protocol.map=A:SASL_PLAINTEXT"]))
    assert by_flags.kafka_endpoints == by_set.kafka_endpoints
    assert by_set.kafka_endpoints[0].security_protocol == "SASL_PLAINTEXT"


def test_grpc_clients_get_their_listeners_address_or_the_main_one() -> None:
    broker = registration(0, (), (("EXTERNAL", "127.0.0.1", 19090),))
    assert broker.grpc_endpoint("EXTERNAL") == ("127.0.0.1", 19090)
    assert broker.grpc_endpoint("PLAINTEXT") == ("grpc-host", 9090)
    assert broker.grpc_endpoint("OTHER") == ("grpc-host", 9090)


def test_extra_grpc_listeners_are_configured_like_kafkas() -> None:
    from raftka.broker.config import settings_from_mapping

    values = settings_from_mapping({"grpc.listeners": "EXTERNAL://0.0.0.0:9095",
                                    "grpc.advertised.listeners": "EXTERNAL://127.0.0.1:19090",
                                    "listener.security.protocol.map": "EXTERNAL:PLAINTEXT"})
    config = BrokerConfig(broker_id=1, data_dir="/d", **values).validate()
    assert config.grpc_extra_endpoints == [
        ListenerEndpoint("EXTERNAL", "0.0.0.0", 9095, "127.0.0.1", 19090)]
    with pytest.raises(ConfigError, match="PLAINTEXT is the main listener"):
        BrokerConfig(broker_id=1, data_dir="/d", grpc_listeners="PLAINTEXT://:9095").validate()
    with pytest.raises(ConfigError, match=r"grpc\.advertised\.listeners names B"):
        BrokerConfig(broker_id=1, data_dir="/d", grpc_listeners="A://:9095",
                     grpc_advertised_listeners="B://h:1",
                     listener_security_protocol_map="A:PLAINTEXT").validate()


# ------------------------------------------------------- listener.security.protocol.map
def test_a_listener_named_after_a_protocol_takes_it_without_a_map() -> None:
    endpoints = kafka_endpoints("PLAINTEXT://:9092,SSL://:9093,SASL_PLAINTEXT://:9094,"
                                "SASL_SSL://:9095", "", "h")
    assert [(e.name, e.security_protocol, e.uses_tls, e.uses_sasl) for e in endpoints] == [
        ("PLAINTEXT", "PLAINTEXT", False, False), ("SSL", "SSL", True, False),
        ("SASL_PLAINTEXT", "SASL_PLAINTEXT", False, True), ("SASL_SSL", "SASL_SSL", True, True)]


def test_the_map_overrides_a_protocol_named_listener_and_may_name_unopened_ones() -> None:
    # As in Kafka: the map is a lookup, so PLAINTEXT may be mapped to SSL, and entries for
    # listeners this broker does not open are fine (the default map names all four).
    endpoints = kafka_endpoints("PLAINTEXT://:9092,CLIENTS://:9093", "", "h",
                                protocol_map=" plaintext:ssl , CLIENTS:SASL_SSL,OTHER:SSL")
    assert [e.security_protocol for e in endpoints] == ["SSL", "SASL_SSL"]


@pytest.mark.parametrize(("protocol_map", "message"), [
    ("EXTERNAL", "must look like NAME:PROTOCOL"),
    (":SSL", "must look like NAME:PROTOCOL"),
    ("EXTERNAL:TLS", "names protocol 'TLS'; use one of PLAINTEXT, SSL"),
    ("EXTERNAL:SSL,external:PLAINTEXT", "listener EXTERNAL is named twice"),
])
def test_a_bad_protocol_map_names_the_entry(protocol_map: str, message: str) -> None:
    with pytest.raises(ListenerConfigError, match=message):
        kafka_endpoints("PLAINTEXT://:9092", "", "h", protocol_map=protocol_map)


def test_a_listener_with_no_protocol_is_a_start_up_error() -> None:
    # A listener meant to be secured must never open in plaintext because its name was
    # left out of the map.
    with pytest.raises(ConfigError, match=r"listeners: listener EXTERNAL has no security "
                                          r"protocol; name it in listener\.security\."
                                          r"protocol\.map"):
        BrokerConfig(broker_id=1, data_dir="/d",
                     kafka_listeners="PLAINTEXT://:9092,EXTERNAL://:9094").validate()
    with pytest.raises(ConfigError, match=r"grpc\.listeners: listener EXTERNAL"):
        BrokerConfig(broker_id=1, data_dir="/d", grpc_listeners="EXTERNAL://:9095").validate()


def test_the_main_grpc_listeners_protocol_is_its_own_setting() -> None:
    from raftka.broker.config import settings_from_mapping

    assert not BrokerConfig(broker_id=1, data_dir="/d").validate().grpc_uses_tls
    values = settings_from_mapping({"grpc.security.protocol": "SASL_SSL",
                                    "ssl.certificate.location": "/c.pem",
                                    "ssl.key.location": "/c.key"})
    assert BrokerConfig(broker_id=1, data_dir="/d", **values).validate().grpc_uses_tls
    with pytest.raises(ConfigError, match=r"grpc\.security\.protocol is 'TLS'; use one of"):
        BrokerConfig(broker_id=1, data_dir="/d", grpc_security_protocol="TLS").validate()
