"""What the console's JSON API answers: the cluster's protobuf replies turned into plain
dicts, record bytes shown as JSON, text or hex, and the live change log. Pure: the replies
and the time come in as arguments, so every page's data is tested without a cluster
(backend.py fetches, server.py serves).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from raftka.client.cluster_view import ClusterSnapshot, diff

# Record keys and values longer than this are cut in the message browser (bytes).
PREVIEW_MAX_BYTES = 64 * 1024
# Live events the console keeps for a page that (re)connects.
EVENTS_KEPT_MAX = 500


def render_bytes(data: bytes | None) -> dict[str, Any]:
    """A key or value as the message browser shows it: kind "null", "json" (pretty),
    "text" (UTF-8) or "binary"; hex always (of the preview)."""
    if data is None:
        return {"kind": "null", "text": None, "hex": "", "size": 0, "truncated": False}
    preview = data[:PREVIEW_MAX_BYTES]
    out: dict[str, Any] = {
        "size": len(data),
        "truncated": len(data) > PREVIEW_MAX_BYTES,
        "hex": preview.hex(" "),
    }
    try:
        text = preview.decode("utf-8")
    except UnicodeDecodeError:
        return {**out, "kind": "binary", "text": None}
    if not out["truncated"]:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        else:
            if isinstance(parsed, dict | list):
                return {**out, "kind": "json", "text": json.dumps(parsed, indent=2)}
    return {**out, "kind": "text", "text": text}


def record_view(record: Any, partition: int) -> dict[str, Any]:
    """A decoded common_pb2.Record."""
    return {
        "partition": partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": render_bytes(record.key if record.HasField("key") else None),
        "value": render_bytes(record.value if record.HasField("value") else None),
        "headers": [
            {"key": h.key, "value": render_bytes(h.value if h.HasField("value") else None)}
            for h in record.headers
        ],
    }


def overview(cluster: Any, metadata: Any) -> dict[str, Any]:
    """From DescribeClusterResponse and MetadataResponse (include internal topics)."""
    led: dict[int, int] = {}
    hosted: dict[int, int] = {}
    under, offline, partitions = [], [], 0
    for topic in metadata.topics:
        for p in topic.partitions:
            partitions += 1
            led[p.leader_id] = led.get(p.leader_id, 0) + 1
            for replica in p.replicas:
                hosted[replica] = hosted.get(replica, 0) + 1
            name = {"topic": topic.name, "partition": p.partition}
            if p.leader_id < 0:
                offline.append(name)
            elif len(p.isr) < len(p.replicas):
                under.append(name)
    brokers = []
    for status in sorted(cluster.brokers, key=lambda b: b.endpoint.broker_id):
        endpoint = status.endpoint
        listeners = [{"protocol": "grpc", "name": "PLAINTEXT",
                      "address": f"{endpoint.host}:{endpoint.port}"}]
        listeners += [{"protocol": "grpc", "name": e.name, "address": f"{e.host}:{e.port}"}
                      for e in endpoint.grpc_listeners]
        kafka = [{"protocol": "kafka", "name": e.name, "address": f"{e.host}:{e.port}"}
                 for e in endpoint.kafka_listeners]
        if not kafka and endpoint.kafka_port > 0:
            kafka = [{"protocol": "kafka", "name": "PLAINTEXT",
                      "address": f"{endpoint.host}:{endpoint.kafka_port}"}]
        brokers.append({
            "id": endpoint.broker_id,
            "state": "fenced" if status.fenced else "alive",
            "voter": status.voter,
            "controller": endpoint.broker_id == cluster.controller_id,
            "pid": status.pid or None,
            "listeners": listeners + kafka,
            "partitions_led": led.get(endpoint.broker_id, 0),
            "replicas": hosted.get(endpoint.broker_id, 0),
        })
    return {
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller_id,
        "quorum": {
            "leader": cluster.controller_id,
            "voters": [b["id"] for b in brokers if b["voter"]],
            "observers": [b["id"] for b in brokers if not b["voter"]],
            "applied_offset": cluster.metadata_offset,
        },
        "brokers": brokers,
        "alive": sum(1 for b in brokers if b["state"] == "alive"),
        "fenced": sum(1 for b in brokers if b["state"] == "fenced"),
        "topics": len(metadata.topics),
        "partitions": partitions,
        "under_replicated": under,
        "offline": offline,
    }


def topic_list(listings: Any, metadata: Any) -> list[dict[str, Any]]:
    """From ListTopicsResponse.topics and a MetadataResponse of the same topics."""
    by_name = {t.name: t for t in metadata.topics}
    out = []
    for listing in sorted(listings, key=lambda t: t.name):
        topic = by_name.get(listing.name)
        parts = list(topic.partitions) if topic is not None else []
        out.append({
            "name": listing.name,
            "topic_id": listing.topic_id,
            "internal": listing.internal,
            "partitions": listing.num_partitions,
            "replication_factor": listing.replication_factor,
            "under_replicated": sum(1 for p in parts if p.leader_id >= 0
                                    and len(p.isr) < len(p.replicas)),
            "offline": sum(1 for p in parts if p.leader_id < 0),
        })
    return out


def topic_detail(description: Any) -> dict[str, Any]:
    """From a TopicDescription (offsets filled in by Admin.describe_topic)."""
    partitions = []
    for p in sorted(description.partitions, key=lambda p: p.partition):
        known = p.high_watermark >= 0
        partitions.append({
            "partition": p.partition,
            "leader": p.leader_id,
            "leader_epoch": p.leader_epoch,
            "replicas": list(p.replicas),
            "isr": list(p.isr),
            "under_replicated": len(p.isr) < len(p.replicas),
            "log_start_offset": p.log_start_offset if known else None,
            "high_watermark": p.high_watermark if known else None,
            "records": p.high_watermark - p.log_start_offset if known else None,
        })
    return {
        "name": description.name,
        "topic_id": description.topic_id,
        "internal": description.internal,
        "partitions": partitions,
        "records": sum(p["records"] or 0 for p in partitions),
        "configs": [{"name": c.name, "value": c.value, "default": c.is_default}
                    for c in sorted(description.configs, key=lambda c: c.name)],
    }


def group_list(reply: Any) -> dict[str, Any]:
    return {
        "groups": [{"group_id": g.group_id, "state": g.state, "members": g.members,
                    "coordinator": g.coordinator_id}
                   for g in sorted(reply.groups, key=lambda g: g.group_id)],
        "unreachable_brokers": list(reply.unreachable_brokers),
    }


def group_detail(description: Any, lags: list[Any]) -> dict[str, Any]:
    """From DescribeGroupResponse and GroupAdmin.lag's PartitionLag list."""
    return {
        "group_id": description.group_id,
        "state": description.state,
        "protocol": "consumer (KIP-848)" if description.assignor else "classic",
        "assignor": description.assignor,
        "group_epoch": description.group_epoch,
        "coordinator": description.coordinator_id,
        "members": [{
            "member_id": m.member_id,
            "client_id": m.client_id,
            "member_epoch": m.member_epoch,
            "subscribed": list(m.subscribed_topic_names) or m.subscribed_topic_regex,
            "assignment": [{"topic": a.topic, "partitions": list(a.partitions)}
                           for a in m.assignment],
        } for m in description.members],
        "offsets": [{"topic": lag.topic, "partition": lag.partition,
                     "committed": lag.committed, "end": lag.end, "lag": lag.lag}
                    for lag in lags],
        "total_lag": sum(lag.lag or 0 for lag in lags),
    }


# --------------------------------------------------------------------------- live view
@dataclass(frozen=True, slots=True)
class LiveEvent:
    seq: int
    ts_ms: int
    kind: str  # CONTROLLER, BROKER, LEADER, ISR, TOPIC, or WATCHING for the first line
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts_ms": self.ts_ms, "kind": self.kind, "text": self.text}


class LiveLog:
    """The `raftka watch` change stream (cluster_view.diff) with sequence numbers, the time
    each partition went without a leader, and the newest EVENTS_KEPT_MAX kept.

    Invariant: seq grows by one per event, so a page can ask for what it missed."""

    def __init__(self) -> None:
        self.snapshot: ClusterSnapshot | None = None
        self.events: deque[LiveEvent] = deque(maxlen=EVENTS_KEPT_MAX)
        self._seq = 0
        self._leaderless_since_ms: dict[tuple[str, int], int] = {}

    def advance(self, snapshot: ClusterSnapshot, now_ms: int) -> list[LiveEvent]:
        texts = diff(self.snapshot, snapshot)
        if self.snapshot is not None:
            texts = [self._with_downtime(text, snapshot, now_ms) for text in texts]
        for p in snapshot.partitions:
            key = (p.topic, p.partition)
            if p.leader < 0:
                self._leaderless_since_ms.setdefault(key, now_ms)
        self.snapshot = snapshot
        new = []
        for text in texts:
            self._seq += 1
            kind = "WATCHING" if text.startswith("watching") else text.split(" ", 1)[0]
            new.append(LiveEvent(self._seq, now_ms, kind, text))
        self.events.extend(new)
        return new

    def _with_downtime(self, text: str, snapshot: ClusterSnapshot, now_ms: int) -> str:
        if not text.startswith("LEADER of ") or "NONE (offline)" in text:
            return text
        name = text[len("LEADER of "):].split(":", 1)[0]
        topic, _, partition = name.rpartition("-")
        since = self._leaderless_since_ms.pop((topic, int(partition)), None)
        if since is None:
            return text
        return f"{text}; no leader for {now_ms - since} ms"

    def since(self, seq: int) -> list[LiveEvent]:
        return [e for e in self.events if e.seq > seq]

    def state(self) -> dict[str, Any] | None:
        return self.snapshot.to_json() if self.snapshot is not None else None
