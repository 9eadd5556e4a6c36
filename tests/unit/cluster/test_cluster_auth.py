"""Tokens that prove cluster membership (cluster/cluster_auth.py) and where the secret comes
from (broker/cluster_secret.py)."""

from __future__ import annotations

import stat

import pytest

from raftka.broker.cluster_secret import (
    ENV_SECRET,
    ENV_SECRET_FILE,
    SECRET_FILE_NAME,
    resolve_cluster_secret,
)
from raftka.broker.config import BrokerConfig, ConfigError
from raftka.broker.internal_auth import InternalAuth
from raftka.cluster.cluster_auth import (
    AUTH_HEADER,
    CLUSTER_SECRET_MIN_BYTES,
    ClusterAuthError,
    ClusterCredentials,
    ReportThrottle,
    raft_password,
)

SECRET = b"0123456789abcdef0123456789abcdef"
METHOD = "/raftka.v1.ControllerService/RegisterBroker"
NOW = 1_700_000_000_000


def test_a_token_verifies_and_names_the_caller():
    credentials = ClusterCredentials(SECRET)
    assert credentials.verify(credentials.token(METHOD, 7, NOW), METHOD, NOW + 5) == 7


@pytest.mark.parametrize(
    "token, reason",
    [
        (None, "no cluster credentials"),
        ("", "no cluster credentials"),
        ("garbage", "malformed"),
        ("v2.1.2.abc", "malformed"),
        ("v1.x.2.abc", "malformed"),
    ],
)
def test_missing_or_malformed_tokens_are_refused(token, reason):
    with pytest.raises(ClusterAuthError, match=reason):
        ClusterCredentials(SECRET).verify(token, METHOD, NOW)


def test_another_secret_is_refused():
    forged = ClusterCredentials(b"another secret, 32 bytes long!!!").token(METHOD, 1, NOW)
    with pytest.raises(ClusterAuthError, match="wrong cluster credentials"):
        ClusterCredentials(SECRET).verify(forged, METHOD, NOW)


def test_a_token_is_bound_to_its_method_and_broker_id():
    credentials = ClusterCredentials(SECRET)
    token = credentials.token("/raftka.v1.ControllerService/BrokerHeartbeat", 1, NOW)
    with pytest.raises(ClusterAuthError, match="wrong"):
        credentials.verify(token, "/raftka.v1.ControllerService/AlterPartition", NOW)
    _, _, ms, mac = token.split(".")
    with pytest.raises(ClusterAuthError, match="wrong"):
        credentials.verify(f"v1.2.{ms}.{mac}", "/raftka.v1.ControllerService/BrokerHeartbeat", NOW)


def test_a_token_outside_the_clock_skew_window_is_refused():
    credentials = ClusterCredentials(SECRET, max_skew_ms=1_000)
    token = credentials.token(METHOD, 1, NOW)
    assert credentials.verify(token, METHOD, NOW + 1_000) == 1
    with pytest.raises(ClusterAuthError, match="off this broker's clock"):
        credentials.verify(token, METHOD, NOW + 1_001)
    with pytest.raises(ClusterAuthError, match="off this broker's clock"):
        credentials.verify(token, METHOD, NOW - 1_001)


def test_short_secrets_are_refused():
    with pytest.raises(ValueError, match=f"at least {CLUSTER_SECRET_MIN_BYTES}"):
        ClusterCredentials(b"  short  ")


def test_the_raft_password_differs_from_the_token_key_and_between_secrets():
    assert raft_password(SECRET) != raft_password(SECRET + b"x")
    assert SECRET.decode() not in raft_password(SECRET)


def test_internal_auth_signs_and_checks_metadata():
    clock = [NOW]
    auth = InternalAuth(ClusterCredentials(SECRET), 3, lambda: clock[0])
    metadata = auth.metadata(METHOD, (("x-raftka-forwarded", "3"),))
    assert metadata[0][0] == AUTH_HEADER and metadata[1] == ("x-raftka-forwarded", "3")
    assert auth.check(metadata, METHOD) == 3
    with pytest.raises(ClusterAuthError):
        auth.check((("x-raftka-forwarded", "3"),), METHOD)
    open_door = InternalAuth(None, 3)
    assert open_door.metadata(METHOD) == () and open_door.check((), METHOD) is None


# ----------------------------------------------------------------- where secrets come from
def _config(tmp_path, **kwargs):
    return BrokerConfig(broker_id=1, data_dir=str(tmp_path / "data"), **kwargs).validate()


def test_a_lone_broker_makes_its_own_secret_file_once(tmp_path):
    first = resolve_cluster_secret(_config(tmp_path), {})
    path = tmp_path / "data" / SECRET_FILE_NAME
    assert first.value is not None and first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_cluster_secret(_config(tmp_path), {}).value == first.value


def test_a_cluster_broker_without_a_secret_refuses_to_start(tmp_path):
    config = _config(tmp_path, voters="1@127.0.0.1:9091,2@127.0.0.1:9101")
    with pytest.raises(ConfigError, match="shared cluster secret"):
        resolve_cluster_secret(config, {})
    assert not (tmp_path / "data" / SECRET_FILE_NAME).exists()


def test_labs_may_run_without_a_secret(tmp_path, caplog):
    config = _config(
        tmp_path, voters="1@127.0.0.1:9091,2@127.0.0.1:9101", allow_no_cluster_secret=True,
        listen="0.0.0.0:9090", raft_bind="0.0.0.0:9091",
    )
    assert resolve_cluster_secret(config, {}).value is None
    assert "WITHOUT a cluster secret" in caplog.text and "0.0.0.0" in caplog.text


def test_secret_sources_in_order(tmp_path):
    flag_file, env_file = tmp_path / "flag.secret", tmp_path / "env.secret"
    flag_file.write_text("flag-secret-0123456789\n")
    env_file.write_text("env-file-secret-0123456789")
    voters = "1@127.0.0.1:9091,2@127.0.0.1:9101"
    env = {ENV_SECRET_FILE: str(env_file), ENV_SECRET: "env-secret-0123456789"}
    with_flag = _config(tmp_path, voters=voters, cluster_secret_file=str(flag_file))
    assert resolve_cluster_secret(with_flag, env).value == b"flag-secret-0123456789"
    without = _config(tmp_path, voters=voters)
    assert resolve_cluster_secret(without, env).value == b"env-file-secret-0123456789"
    assert resolve_cluster_secret(without, {ENV_SECRET: "env-secret-0123456789"}).value == (
        b"env-secret-0123456789"
    )


def test_bad_secret_files_are_named(tmp_path):
    short = tmp_path / "short.secret"
    short.write_text("tiny\n")
    with pytest.raises(ConfigError, match=r"short\.secret is 4 bytes"):
        resolve_cluster_secret(_config(tmp_path, cluster_secret_file=str(short)), {})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_cluster_secret(_config(tmp_path, cluster_secret_file=str(tmp_path / "no")), {})
    with pytest.raises(ConfigError, match=ENV_SECRET):
        resolve_cluster_secret(_config(tmp_path), {ENV_SECRET: "tiny"})


def test_the_raft_listener_binds_where_told(tmp_path):
    config = _config(tmp_path, listen="127.0.0.1:9090")
    assert config.raft_bind_address == "127.0.0.1:9091"
    config = _config(tmp_path, raft_listen="raftka-1:9091", raft_bind="0.0.0.0:9091",
                     voters="1@raftka-1:9091")
    assert config.raft_bind_address == "0.0.0.0:9091"
    with pytest.raises(ConfigError, match="raft_bind"):
        _config(tmp_path, raft_bind="nowhere")


def test_while_rotating_both_secrets_are_accepted_but_only_the_primary_signs():
    old, new = SECRET, b"the next cluster secret, 32 bytes"
    phase_1 = ClusterCredentials(old, also_accepted=[new])  # accepts new, signs with old
    phase_2 = ClusterCredentials(new, also_accepted=[old])  # signs with new, accepts old
    done = ClusterCredentials(new)
    assert phase_1.verify(phase_2.token(METHOD, 1, NOW), METHOD, NOW) == 1
    assert phase_2.verify(phase_1.token(METHOD, 2, NOW), METHOD, NOW) == 2
    assert done.verify(phase_2.token(METHOD, 1, NOW), METHOD, NOW) == 1
    with pytest.raises(ClusterAuthError):
        done.verify(phase_1.token(METHOD, 2, NOW), METHOD, NOW)
    with pytest.raises(ClusterAuthError):
        ClusterCredentials(old).verify(phase_2.token(METHOD, 1, NOW), METHOD, NOW)


def test_a_rotation_secret_needs_a_primary_and_a_readable_file(tmp_path):
    rotation = tmp_path / "next.secret"
    rotation.write_text("the-next-secret-0123456789\n")
    voters = "1@127.0.0.1:9091,2@127.0.0.1:9101"
    labs = _config(tmp_path, voters=voters, allow_no_cluster_secret=True,
                   cluster_secret_rotation_file=str(rotation))
    with pytest.raises(ConfigError, match="rotation secret needs a cluster secret"):
        resolve_cluster_secret(labs, {})
    rotating = _config(tmp_path, voters=voters, cluster_secret_rotation_file=str(rotation))
    resolved = resolve_cluster_secret(rotating, {ENV_SECRET: "env-secret-0123456789"})
    assert resolved.also_accepted == (b"the-next-secret-0123456789",)


def test_refusals_are_reported_once_per_interval_with_a_count():
    throttle = ReportThrottle(interval_s=10)
    assert throttle.report(100.0) == 0
    assert throttle.report(101.0) is None and throttle.report(109.9) is None
    assert throttle.report(110.0) == 2
    assert throttle.report(125.0) == 0
