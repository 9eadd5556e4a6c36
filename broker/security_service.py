"""SecurityService servicer: users (SCRAM credentials) and ACLs over gRPC, for the SDK and
CLI, and the door brokers forward these changes through to the active controller.

Who may: changing users or ACLs needs ALTER on the cluster, reading them DESCRIBE (Kafka's
rules for Alter/DescribeUserScramCredentials and Create/Delete/DescribeAcls); forwarded
calls need the cluster's credentials instead.
"""

from __future__ import annotations

import grpc

from raftka.broker.controller_client import FORWARDED_HEADER
from raftka.broker.core import BrokerCore
from raftka.broker.grpc_guard import guarded
from raftka.broker.grpc_security import GrpcGate
from raftka.broker.internal_auth import method_path
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.cluster.acl import Operation
from raftka.proto.raftka.v1 import security_pb2, security_pb2_grpc


def _path(method: str) -> str:
    return method_path("SecurityService", method)


class SecurityServicer(security_pb2_grpc.SecurityServiceServicer):
    def __init__(self, core: BrokerCore, listener: str = DEFAULT_LISTENER) -> None:
        self._core = core
        self._gate = GrpcGate(core, listener)

    async def _forwarded_or_allowed(self, context: grpc.aio.ServicerContext, method: str,
                                    op: Operation) -> bool:
        """True for a (checked) forward from another broker; else the caller must be
        allowed `op` on the cluster (the call is aborted otherwise)."""
        if any(key == FORWARDED_HEADER for key, _ in (context.invocation_metadata() or ())):
            await self._core.internal_auth.require(context, _path(method))
            return True
        principal = await self._gate.caller(context, _path(method))
        await self._gate.require_cluster(context, principal, op)
        return False

    @guarded
    async def AlterUserScramCredentials(
        self, request: security_pb2.AlterUserScramCredentialsRequest,
        context: grpc.aio.ServicerContext,
    ) -> security_pb2.AlterUserScramCredentialsResponse:
        forwarded = await self._forwarded_or_allowed(context, "AlterUserScramCredentials",
                                                     Operation.ALTER)
        return await self._core.security.alter_user_scram_credentials(request,
                                                                      forwarded=forwarded)

    @guarded
    async def DescribeUserScramCredentials(
        self, request: security_pb2.DescribeUserScramCredentialsRequest,
        context: grpc.aio.ServicerContext,
    ) -> security_pb2.DescribeUserScramCredentialsResponse:
        await self._forwarded_or_allowed(context, "DescribeUserScramCredentials",
                                         Operation.DESCRIBE)
        return self._core.security.describe_users(request)

    @guarded
    async def CreateAcls(
        self, request: security_pb2.CreateAclsRequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.CreateAclsResponse:
        forwarded = await self._forwarded_or_allowed(context, "CreateAcls", Operation.ALTER)
        return await self._core.security.create_acls(request, forwarded=forwarded)

    @guarded
    async def DescribeAcls(
        self, request: security_pb2.DescribeAclsRequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.DescribeAclsResponse:
        await self._forwarded_or_allowed(context, "DescribeAcls", Operation.DESCRIBE)
        return self._core.security.describe_acls(request.filter)

    @guarded
    async def DeleteAcls(
        self, request: security_pb2.DeleteAclsRequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.DeleteAclsResponse:
        forwarded = await self._forwarded_or_allowed(context, "DeleteAcls", Operation.ALTER)
        return await self._core.security.delete_acls(request, forwarded=forwarded)
