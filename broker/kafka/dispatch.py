"""Kafka api key -> the handler that answers it. Handlers are plain functions of
(BrokerCore, Request) returning the response's fields (or None when no reply is due; or
DeferredValues when they follow once something the connection need not wait for is done)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from raftka.broker.core import BrokerCore
from raftka.broker.kafka import (
    acl_guard,
    acl_handlers,
    admin_handlers,
    admin_ops_handlers,
    data_handlers,
    group_handlers,
    sasl_handlers,
)
from raftka.broker.kafka.codec import Request
from raftka.broker.kafka.responder import DeferredValues
from raftka.broker.kafka.zero_copy import SplicedResponse

Handler = Callable[[BrokerCore, Request],
                   Awaitable[dict[str, Any] | SplicedResponse | DeferredValues | None]]

HANDLERS: dict[int, Handler] = {
    0: data_handlers.produce, 1: data_handlers.fetch, 2: data_handlers.list_offsets,
    22: data_handlers.init_producer_id, 23: data_handlers.offset_for_leader_epoch,
    3: admin_handlers.metadata, 18: admin_handlers.api_versions,
    19: admin_handlers.create_topics, 20: admin_handlers.delete_topics,
    32: admin_handlers.describe_configs, 60: admin_handlers.describe_cluster,
    8: group_handlers.offset_commit, 9: group_handlers.offset_fetch,
    10: group_handlers.find_coordinator, 11: group_handlers.join_group,
    12: group_handlers.heartbeat, 13: group_handlers.leave_group,
    14: group_handlers.sync_group, 15: group_handlers.describe_groups,
    16: group_handlers.list_groups,
    21: admin_ops_handlers.delete_records, 33: admin_ops_handlers.alter_configs,
    35: admin_ops_handlers.describe_log_dirs, 37: admin_ops_handlers.create_partitions,
    42: admin_ops_handlers.delete_groups, 44: admin_ops_handlers.incremental_alter_configs,
    47: admin_ops_handlers.offset_delete,
}
# Security APIs (kept apart from the table above to ease merging).
HANDLERS.update({
    17: sasl_handlers.sasl_handshake, 36: sasl_handlers.sasl_authenticate,
    29: acl_handlers.describe_acls, 30: acl_handlers.create_acls, 31: acl_handlers.delete_acls,
    50: acl_handlers.describe_user_scram_credentials,
    51: acl_handlers.alter_user_scram_credentials,
})
# Every handler behind its ACL check (broker/kafka/acl_guard.py); with no authorizer the
# guard is one attribute test.
HANDLERS = {key: acl_guard.guarded(key, handler) for key, handler in HANDLERS.items()}
