"""Client TLS options: explicit, from the environment, or recorded by `cluster up --tls`;
and the broker command lines a TLS local cluster gets."""

from __future__ import annotations

import pytest

from raftka.client.cli import build_parser
from raftka.client.cli_common import apply_tls
from raftka.client.local_cluster import LocalCluster, recorded_tls
from raftka.client.tls_options import TlsOptions, TlsOptionsError


def test_a_certificate_needs_its_key():
    with pytest.raises(TlsOptionsError, match="--tls-cert and --tls-key together"):
        TlsOptions(ca="ca.pem", cert="client.pem")


def test_options_come_from_the_environment_and_go_back_to_it():
    assert TlsOptions.from_env({}) is None
    assert TlsOptions.from_env({"RAFTKA_TLS": "0"}) is None
    assert TlsOptions.from_env({"RAFTKA_TLS": "1"}) == TlsOptions()
    options = TlsOptions("ca.pem", "c.pem", "c.key")
    assert TlsOptions.from_env(options.environment()) == options


def test_an_unreadable_file_is_named():
    with pytest.raises(TlsOptionsError, match=r"TLS CA file /nonexistent/ca\.pem"):
        TlsOptions("/nonexistent/ca.pem").channel_credentials()


def test_a_tls_local_cluster_records_it_and_its_brokers_serve_tls(tmp_path):
    local = LocalCluster(tmp_path)
    layout = local.create_or_load(3, 9090, {"ssl.client.auth": "required"}, tls=True)
    assert LocalCluster(tmp_path).load_layout().tls
    command = local.command(layout, 2)
    settings = [command[i + 1] for i, part in enumerate(command) if part == "--set"]
    assert "--kafka-port" not in command
    assert "listeners=SSL://127.0.0.1:9102" in settings
    assert "grpc.security.protocol=SSL" in settings
    assert f"ssl.certificate.location={tmp_path}/tls/broker-2.pem" in settings
    # --set comes after what --tls adds, so it can raise client auth to required.
    assert settings.index("ssl.client.auth=required") > settings.index(
        "grpc.security.protocol=SSL")
    assert recorded_tls(tmp_path) == TlsOptions(f"{tmp_path}/tls/ca.pem",
                                                f"{tmp_path}/tls/client.pem",
                                                f"{tmp_path}/tls/client.key")
    # Once on, a later run without --tls keeps it.
    assert local.create_or_load(None, None, {}).tls


def test_a_plaintext_local_cluster_has_no_tls(tmp_path):
    local = LocalCluster(tmp_path)
    layout = local.create_or_load(1, 9090, {})
    assert "--kafka-port" in local.command(layout, 1)
    assert recorded_tls(tmp_path) is None


def test_cli_tls_flags_win_then_env_then_the_recorded_cluster(tmp_path, monkeypatch):
    for name in ("RAFTKA_TLS", "RAFTKA_TLS_CA", "RAFTKA_TLS_CERT", "RAFTKA_TLS_KEY"):
        # setenv first so monkeypatch records the variable as it was (unset, usually):
        # apply_tls sets them behind its back, and a bare delenv(raising=False) of an unset
        # variable records nothing, so the later delenv recorded this test's temporary CA
        # and teardown put it back for every test after this one.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    LocalCluster(tmp_path).create_or_load(1, 9090, {}, tls=True)
    parser = build_parser()
    args = parser.parse_args(["cluster", "status", "--data-dir", str(tmp_path)])
    assert apply_tls(args) == recorded_tls(tmp_path)
    # This process's channels now use it (set in the environment for children too).
    assert TlsOptions.from_env() == recorded_tls(tmp_path)

    monkeypatch.delenv("RAFTKA_TLS_CA")
    monkeypatch.setenv("RAFTKA_TLS", "0")
    for name in ("RAFTKA_TLS_CERT", "RAFTKA_TLS_KEY"):
        monkeypatch.delenv(name)
    args = parser.parse_args(["topics", "list", "--bootstrap", "h:1", "--tls-ca", "x.pem"])
    assert apply_tls(args) == TlsOptions("x.pem")
    monkeypatch.setenv("RAFTKA_TLS", "0")
    monkeypatch.delenv("RAFTKA_TLS_CA")
    # A command given another cluster's --bootstrap does not take the local cluster's TLS.
    args = parser.parse_args(["topics", "list", "--bootstrap", "h:1"])
    assert apply_tls(args) is None
