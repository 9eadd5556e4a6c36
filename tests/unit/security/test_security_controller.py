"""Users and ACLs through the controller's records and back out of the image (and its
snapshot)."""

from __future__ import annotations

import itertools

from raftka.cluster import scram, security_controller
from raftka.cluster.delta import MetadataDelta, decode_snapshot, encode_snapshot
from raftka.cluster.image import EMPTY_IMAGE, MetadataImage
from raftka.proto.raftka.v1 import security_pb2

SALT = b"s" * 16


def applied(image: MetadataImage, result: object) -> MetadataImage:
    delta = MetadataDelta(image)
    for record in result.records:  # type: ignore[attr-defined]
        delta.replay(record)
    return delta.apply()


def upsert(name: str, password: str, mechanism: str = "SCRAM-SHA-256",
           iterations: int = 4096) -> security_pb2.ScramCredentialUpsertion:
    return security_pb2.ScramCredentialUpsertion(
        name=name, mechanism=mechanism, iterations=iterations, salt=SALT,
        salted_password=scram.salted_password(mechanism, password, SALT, iterations))


def test_users_are_stored_salted_and_survive_a_snapshot() -> None:
    request = security_pb2.AlterUserScramCredentialsRequest(
        upsertions=[upsert("alice", "pw"), upsert("alice", "pw", "SCRAM-SHA-512")])
    result = security_controller.alter_user_scram_credentials(EMPTY_IMAGE, request)
    assert [r.error_code for r in result.response.results] == [0]
    image = applied(EMPTY_IMAGE, result)
    credential = image.scram_credentials[("alice", "SCRAM-SHA-256")]
    assert scram.password_matches(credential, "pw")
    assert decode_snapshot(encode_snapshot(image)).scram_credentials == image.scram_credentials


def test_user_errors_use_kafkas_codes_and_change_nothing() -> None:
    request = security_pb2.AlterUserScramCredentialsRequest(
        upsertions=[upsert("a", "pw", iterations=4096), upsert("b", "pw"), upsert("b", "pw"),
                    security_pb2.ScramCredentialUpsertion(name="c", mechanism="MD5")],
        deletions=[security_pb2.ScramCredentialDeletion(name="d", mechanism="SCRAM-SHA-256")])
    result = security_controller.alter_user_scram_credentials(EMPTY_IMAGE, request)
    codes = {r.name: r.error_code for r in result.response.results}
    assert codes == {"a": 0, "b": security_controller.DUPLICATE_RESOURCE,
                     "c": security_controller.UNSUPPORTED_SASL_MECHANISM,
                     "d": security_controller.RESOURCE_NOT_FOUND}
    assert set(applied(EMPTY_IMAGE, result).scram_credentials) == {("a", "SCRAM-SHA-256")}
    weak = security_controller.alter_user_scram_credentials(
        EMPTY_IMAGE, security_pb2.AlterUserScramCredentialsRequest(
            upsertions=[upsert("e", "pw", iterations=4096)]))
    assert weak.response.results[0].error_code == 0


def test_user_deletion() -> None:
    image = applied(EMPTY_IMAGE, security_controller.alter_user_scram_credentials(
        EMPTY_IMAGE, security_pb2.AlterUserScramCredentialsRequest(upsertions=[upsert("a", "p")])))
    result = security_controller.alter_user_scram_credentials(
        image, security_pb2.AlterUserScramCredentialsRequest(deletions=[
            security_pb2.ScramCredentialDeletion(name="a", mechanism="SCRAM-SHA-256")]))
    assert result.response.results[0].error_code == 0
    assert not applied(image, result).scram_credentials


def test_acls_create_dedupe_delete_and_snapshot() -> None:
    ids = (f"id{n}" for n in itertools.count())
    good = security_pb2.Acl(resource_type=2, resource_name="orders", pattern_type=3,
                            principal="User:alice", host="*", operation=3, permission=3)
    bad = security_pb2.Acl(resource_type=2, resource_name="orders", pattern_type=3,
                           principal="alice", host="*", operation=3, permission=3)
    result = security_controller.create_acls(
        EMPTY_IMAGE, security_pb2.CreateAclsRequest(creations=[good, bad, good]),
        lambda: next(ids))
    assert [r.error_code for r in result.response.results] == [0, 42, 0]
    assert "User:NAME" in result.response.results[1].error_message
    image = applied(EMPTY_IMAGE, result)
    assert len(image.acls) == 1
    assert decode_snapshot(encode_snapshot(image)).acls == image.acls
    again = security_controller.create_acls(
        image, security_pb2.CreateAclsRequest(creations=[good]), lambda: next(ids))
    assert again.records == ()
    deleted = security_controller.delete_acls(image, security_pb2.DeleteAclsRequest(filters=[
        security_pb2.AclFilter(resource_type=2, principal="User:alice"),
        security_pb2.AclFilter(resource_type=1)]))
    assert [len(r.deleted) for r in deleted.response.results] == [1, 0]
    assert not applied(image, deleted).acls
