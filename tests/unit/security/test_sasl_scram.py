"""SCRAM credentials and the SASL server exchanges, against kafka-python's own SCRAM client
(an independent implementation of RFC 5802)."""

from __future__ import annotations

import pytest
from kafka.net.sasl.scram import ScramClient

from raftka.broker import sasl
from raftka.broker.sasl import PlainServer, SaslConnection, SaslFailure, ScramServer
from raftka.cluster import scram

SALT = b"0123456789abcdef0123456789abcdef"


def lookup_for(users: dict[str, str], iterations: int = 4096) -> sasl.CredentialLookup:
    stored = {(name, mech): scram.make_credential(mech, password, SALT, iterations)
              for name, password in users.items() for mech in scram.MECHANISMS}
    return lambda name, mech: stored.get((name, mech))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_exchange_with_an_independent_client(mechanism: str) -> None:
    server = ScramServer(mechanism, lookup_for({"alice": "s3cret"}), "servernonce", b"k")
    client = ScramClient("alice", "s3cret", mechanism)
    server_first = server.step(client.first_message())
    assert server_first.startswith(b"r=" + client.nonce + b"servernonce,")
    client.process_server_first_message(server_first)
    server_final = server.step(client.final_message())
    client.process_server_final_message(server_final)  # raises on a wrong server signature
    assert server.done and server.username == "alice"


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "s3cret")])
def test_wrong_password_and_unknown_user_fail_alike(user: str, password: str) -> None:
    server = ScramServer("SCRAM-SHA-256", lookup_for({"alice": "s3cret"}), "n1", b"k")
    client = ScramClient(user, password, "SCRAM-SHA-256")
    first = server.step(client.first_message())
    assert b",s=" in first and b",i=" in first  # an unknown user gets a decoy salt too
    client.process_server_first_message(first)
    with pytest.raises(SaslFailure) as failure:
        server.step(client.final_message())
    assert failure.value.username == user
    assert not server.done


def test_unknown_users_decoy_salt_is_stable() -> None:
    def first(nonce: str) -> bytes:
        server = ScramServer("SCRAM-SHA-256", lookup_for({}), nonce, b"key")
        return server.step(b"n,,n=ghost,r=abc").split(b",", 1)[1]
    assert first("x") == first("y")


def test_scram_rejects_a_tampered_nonce_and_replays() -> None:
    server = ScramServer("SCRAM-SHA-256", lookup_for({"alice": "pw"}), "n1", b"k")
    client = ScramClient("alice", "pw", "SCRAM-SHA-256")
    client.process_server_first_message(server.step(client.first_message()))
    final = client.final_message().replace(b"n1,p=", b"n2,p=")
    with pytest.raises(SaslFailure, match="nonce"):
        server.step(final)
    with pytest.raises(SaslFailure):
        server.step(client.final_message())  # the exchange is over


@pytest.mark.parametrize("message", [b"", b"p=tls-unique,,n=a,r=b", b"n,,r=b,n=a",
                                     b"n,,n=a,r=b,m=ext", b"\xff"])
def test_malformed_client_first(message: bytes) -> None:
    server = ScramServer("SCRAM-SHA-512", lookup_for({"a": "pw"}), "n", b"k")
    with pytest.raises(SaslFailure):
        server.step(message)


def test_scram_user_name_escapes() -> None:
    server = ScramServer("SCRAM-SHA-256", lookup_for({"a,b=c": "pw"}), "n", b"k")
    server.step(b"n,,n=a=2Cb=3Dc,r=x")
    assert server.username == "a,b=c"


def test_plain_checks_the_scram_credential() -> None:
    lookup = lookup_for({"bob": "hunter2"})
    ok = PlainServer(lookup)
    assert ok.step(b"\0bob\0hunter2") == b"" and ok.done and ok.username == "bob"
    for token in (b"\0bob\0hunter3", b"\0eve\0hunter2", b"bob\0hunter2", b"x\0bob\0hunter2"):
        with pytest.raises(SaslFailure):
            PlainServer(lookup).step(token)


def test_credentials_never_hold_the_password() -> None:
    credential = scram.make_credential("SCRAM-SHA-256", "topsecret", SALT, 4096)
    assert b"topsecret" not in credential.stored_key + credential.server_key + credential.salt
    assert scram.password_matches(credential, "topsecret")
    assert not scram.password_matches(credential, "topsecreT")


def test_credential_limits() -> None:
    with pytest.raises(scram.ScramCredentialError, match="iterations"):
        scram.make_credential("SCRAM-SHA-256", "pw", SALT, 4095)
    with pytest.raises(scram.ScramCredentialError, match="mechanism"):
        scram.make_credential("SCRAM-MD5", "pw", SALT)
    with pytest.raises(scram.ScramCredentialError, match="salt"):
        scram.from_salted_password("SCRAM-SHA-256", b"x" * 32, b"short", 4096)
    with pytest.raises(scram.ScramCredentialError, match="does not fit"):
        scram.from_salted_password("SCRAM-SHA-512", b"x" * 32, SALT, 4096)
    with pytest.raises(scram.ScramCredentialError):
        scram.validate_username("a,b")


def test_connection_gate_and_reauthentication() -> None:
    connection = SaslConnection(max_reauth_ms=1000)
    assert connection.allows(sasl.API_VERSIONS, 0)
    assert not connection.allows(0, 0)  # produce before authenticating
    assert connection.authenticated("alice", now_ms=100) == 1000
    assert connection.principal == "User:alice"
    assert connection.allows(0, 1099)
    assert not connection.allows(0, 1100)  # session over: only re-authentication
    assert connection.allows(sasl.SASL_HANDSHAKE, 5000)
    assert connection.authenticated("alice", now_ms=5000) == 1000
    assert connection.allows(0, 5999)
    with pytest.raises(SaslFailure, match="re-authentication"):
        connection.authenticated("bob", now_ms=6000)


def test_sessions_without_a_limit_never_expire() -> None:
    connection = SaslConnection(max_reauth_ms=0)
    assert connection.authenticated("a", 0) == 0
    assert connection.allows(0, 10**12)
