"""Which Kafka APIs and versions this broker serves (what ApiVersions answers)."""

from __future__ import annotations

# api key -> (min version, max version) this broker serves. Maxima stay below versions that
# address topics by id only (Fetch 13+, Produce 13+), so name-based clients keep working.
# Produce 10 adds KIP-951's CurrentLeader and NodeEndpoints (a NOT_LEADER answer says where
# the new leader is); Produce 11 and 12 concern transactions, which Raftka does not serve.
# Fetch 12 already carries CurrentLeader; Fetch's NodeEndpoints come only in v16 (by id).
SUPPORTED: dict[int, tuple[int, int]] = {
    0: (3, 10),    # Produce
    1: (4, 12),    # Fetch
    2: (1, 7),     # ListOffsets
    3: (0, 12),    # Metadata
    8: (2, 8),     # OffsetCommit
    9: (1, 7),     # OffsetFetch
    10: (0, 4),    # FindCoordinator
    11: (0, 9),    # JoinGroup
    12: (0, 4),    # Heartbeat
    13: (0, 5),    # LeaveGroup
    14: (0, 5),    # SyncGroup
    15: (0, 5),    # DescribeGroups
    16: (0, 4),    # ListGroups
    18: (0, 3),    # ApiVersions
    19: (2, 7),    # CreateTopics
    20: (1, 6),    # DeleteTopics
    22: (0, 4),    # InitProducerId
    23: (2, 4),    # OffsetForLeaderEpoch
    32: (1, 4),    # DescribeConfigs
    60: (0, 1),    # DescribeCluster
    # Admin operations (admin_ops_handlers.py)
    21: (0, 2),    # DeleteRecords
    33: (0, 2),    # AlterConfigs
    35: (1, 4),    # DescribeLogDirs
    37: (0, 3),    # CreatePartitions
    42: (0, 2),    # DeleteGroups
    44: (0, 1),    # IncrementalAlterConfigs
    47: (0, 0),    # OffsetDelete
    # security (broker/kafka/sasl_handlers.py, acl_handlers.py)
    17: (0, 1),    # SaslHandshake
    36: (0, 2),    # SaslAuthenticate
    29: (1, 3),    # DescribeAcls
    30: (1, 3),    # CreateAcls
    31: (1, 3),    # DeleteAcls
    50: (0, 0),    # DescribeUserScramCredentials
    51: (0, 0),    # AlterUserScramCredentials
}

# api key -> Kafka's name for it (request metrics are labelled with these).
API_NAMES: dict[int, str] = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    15: "DescribeGroups",
    16: "ListGroups",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    22: "InitProducerId",
    23: "OffsetForLeaderEpoch",
    32: "DescribeConfigs",
    60: "DescribeCluster",
    21: "DeleteRecords",
    33: "AlterConfigs",
    35: "DescribeLogDirs",
    37: "CreatePartitions",
    42: "DeleteGroups",
    44: "IncrementalAlterConfigs",
    47: "OffsetDelete",
    17: "SaslHandshake",
    36: "SaslAuthenticate",
    29: "DescribeAcls",
    30: "CreateAcls",
    31: "DeleteAcls",
    50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials",
}


def api_versions() -> list[dict[str, int]]:
    """ApiVersions' api_keys field."""
    return [{"api_key": key, "min_version": low, "max_version": high}
            for key, (low, high) in sorted(SUPPORTED.items())]
