"""Broker TLS: the PEM files are checked at start-up with errors naming the setting; a TLS
listener needs them; the principal a client certificate gives; fetches over TLS are copied
(sendfile cannot encrypt) byte for byte."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl

import pytest

from raftka.broker import tls
from raftka.broker.config import BrokerConfig, ConfigError
from raftka.broker.kafka import zero_copy
from raftka.broker.kafka.zero_copy import SliceChangedError
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.tls_principal import (
    ANONYMOUS,
    kafka_connection_principal,
    principal_of_certificate,
)
from raftka.client.local_ca import LocalCa, write_local_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCa:
    return write_local_ca(str(tmp_path_factory.mktemp("tls")), {1: "broker-1.example"})


def files(local: LocalCa, client_auth: str = "none", **paths: str) -> tls.TlsFiles:
    cert, key = local.broker(1)
    return tls.TlsFiles(paths.get("cert", cert), paths.get("key", key),
                        paths.get("ca", local.ca), client_auth)


def test_good_files_load(ca):
    loaded = tls.load(files(ca, "required"))
    assert loaded.kafka_server_context().verify_mode == ssl.CERT_REQUIRED
    assert loaded.grpc_server_credentials() is not None
    assert loaded.grpc_channel_credentials() is not None


def test_each_bad_file_is_named(ca, tmp_path):
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82garbage")
    cases = [
        (files(ca, cert=str(tmp_path / "missing.pem")),
         r"ssl\.certificate\.location: .*missing\.pem does not exist"),
        (files(ca, key=""), r"ssl\.key\.location is required"),
        (files(ca, cert=str(not_pem)), r"ssl\.certificate\.location: .*cert\.der is not a PEM"),
        (files(ca, key=ca.client_key), "the key does not belong to the certificate"),
        (files(ca, ca=ca.client_key), r"ssl\.ca\.location .*not a usable CA"),
        (files(ca, "required", ca=""), r"ssl\.client\.auth=required needs ssl\.ca\.location"),
        (files(ca, "sometimes"), r"ssl\.client\.auth is 'sometimes'"),
    ]
    for given, message in cases:
        with pytest.raises(tls.TlsConfigError, match=message):
            tls.load(given)


def test_a_tls_error_is_a_config_error_so_the_broker_exits_with_usage(ca):
    assert issubclass(tls.TlsConfigError, ConfigError)


def test_a_tls_listener_needs_certificate_and_key(ca):
    with pytest.raises(ConfigError, match=r"needs ssl\.certificate\.location and ssl\.key"):
        BrokerConfig(broker_id=1, data_dir="/d", kafka_listeners="SSL://:9093").validate()
    with pytest.raises(ConfigError, match=r"needs ssl\.certificate"):
        BrokerConfig(broker_id=1, data_dir="/d", grpc_security_protocol="SSL").validate()
    with pytest.raises(ConfigError, match=r"ssl\.client\.auth is 'yes'"):
        BrokerConfig(broker_id=1, data_dir="/d", ssl_client_auth="yes").validate()
    plain = BrokerConfig(broker_id=1, data_dir="/d", kafka_port=9092).validate()
    assert not plain.uses_tls and tls.for_broker(plain) is None
    cert, key = ca.broker(1)
    secured = BrokerConfig(broker_id=1, data_dir="/d", kafka_listeners="SASL_SSL://:9093",
                           ssl_certificate_location=cert, ssl_key_location=key).validate()
    assert secured.uses_tls and not secured.grpc_uses_tls
    assert tls.for_broker(secured) is not None


def test_the_principal_is_the_certificates_subject_as_kafka_writes_it(ca):
    with open(ca.client_cert, "rb") as handle:
        pem = handle.read()
    assert principal_of_certificate(pem) == "User:CN=raftka-client,O=Raftka"
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    assert principal_of_certificate(der) == "User:CN=raftka-client,O=Raftka"
    assert principal_of_certificate(None) == ANONYMOUS
    assert kafka_connection_principal(None) is None


def client_context(ca: LocalCa, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.ca)
    if with_cert:
        context.load_cert_chain(ca.client_cert, ca.client_key)
    return context


async def serve_once(server_context: ssl.SSLContext, client: ssl.SSLContext, pieces,
                     server_hostname: str = "127.0.0.1") -> tuple[bytes, str | None]:
    """A TLS connection; the server side sends `pieces` by the copy path and reports the
    principal it saw."""
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            principal = kafka_connection_principal(writer.get_extra_info("ssl_object"))
            await zero_copy.send(writer, pieces, copy=True)
            done.set_result(principal)
        except Exception as exc:
            done.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                   server_hostname=server_hostname)
    received = await reader.read()
    writer.close()
    server.close()
    return received, await done


def slice_of(tmp_path, data: bytes) -> FileSlice:
    path = tmp_path / "segment"
    path.write_bytes(b"head" + data + b"tail")
    return FileSlice(os.open(path, os.O_RDONLY), 4, len(data))


def test_fetch_slices_over_tls_are_copied_not_sendfiled(ca, tmp_path, monkeypatch):
    def no_sendfile(*args):
        raise AssertionError("sendfile on a TLS connection")

    monkeypatch.setattr(os, "sendfile", no_sendfile)
    big = os.urandom(zero_copy.COPY_CHUNK_BYTES * 2 + 12345)
    found = slice_of(tmp_path, big)
    server = tls.load(files(ca, "requested")).kafka_server_context()
    received, principal = asyncio.run(
        serve_once(server, client_context(ca, True), [b"before", found, b"after"]))
    assert received == b"before" + big + b"after"
    assert principal == "User:CN=raftka-client,O=Raftka"
    found.close()


def test_a_tls_client_without_a_certificate_is_anonymous(ca, tmp_path):
    server = tls.load(files(ca, "requested")).kafka_server_context()
    received, principal = asyncio.run(
        serve_once(server, client_context(ca, False), [b"x"], server_hostname="localhost"))
    assert (received, principal) == (b"x", ANONYMOUS)


def test_a_slice_that_shrank_breaks_a_tls_connection_too(ca, tmp_path):
    found = slice_of(tmp_path, os.urandom(100_000))
    os.truncate(tmp_path / "segment", 50_000)
    server = tls.load(files(ca)).kafka_server_context()
    with pytest.raises(SliceChangedError):
        asyncio.run(serve_once(server, client_context(ca, False), [found]))
    found.close()


def test_the_certificate_names_the_brokers_advertised_host(ca, tmp_path):
    server = tls.load(files(ca)).kafka_server_context()
    received, _ = asyncio.run(serve_once(server, client_context(ca, False), [b"ok"],
                                         server_hostname="broker-1.example"))
    assert received == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(serve_once(server, client_context(ca, False), [b"ok"],
                               server_hostname="other.example"))


def test_a_renewed_ca_directory_keeps_its_ca(ca, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ca.directory, copy)
    before = (copy / "ca.pem").read_bytes()
    again = write_local_ca(str(copy), {1: "broker-1.example", 2: "127.0.0.1"})
    assert (copy / "ca.pem").read_bytes() == before
    assert os.path.exists(again.broker(2)[0])
    assert oct(os.stat(again.broker(2)[1]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(again.path("ca.key")).st_mode & 0o777) == "0o600"


async def grpc_principal_seen(loaded: tls.BrokerTls, client) -> str | None:
    """One call to a TLS gRPC server built from `loaded`; what grpc_call_principal saw."""
    import grpc

    from raftka.broker.tls_principal import grpc_call_principal

    seen: list[str | None] = []

    async def whoami(request: bytes, context) -> bytes:
        seen.append(grpc_call_principal(context))
        return b"ok"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)})])
    port = server.add_secure_port("127.0.0.1:0", loaded.grpc_server_credentials())
    await server.start()
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", client) as channel:
            assert await channel.unary_unary("/test.Who/Am")(b"", timeout=10) == b"ok"
    finally:
        await server.stop(None)
    return seen[0]


def test_grpc_calls_carry_the_client_certificates_principal(ca):
    from raftka.client.tls_options import TlsOptions

    loaded = tls.load(files(ca, "required"))
    with_cert = TlsOptions(ca.ca, ca.client_cert, ca.client_key).channel_credentials()
    assert asyncio.run(grpc_principal_seen(loaded, with_cert)) == "User:CN=raftka-client,O=Raftka"
    # A broker calling another presents its own certificate: its principal is the broker's.
    assert asyncio.run(grpc_principal_seen(loaded, loaded.grpc_channel_credentials())) == (
        "User:CN=raftka-broker-1,O=Raftka")
    no_auth = tls.load(files(ca, "none"))
    assert asyncio.run(grpc_principal_seen(no_auth, TlsOptions(ca.ca).channel_credentials())) == (
        ANONYMOUS)
