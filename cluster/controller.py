"""Controller command handlers: (image, request, ...) -> (records, response). Pure.

How it works (KRaft's *ControlManager pattern): a handler validates a request against the
current image and returns the records that would carry it out plus the reply to send once
they commit. It mutates nothing; only applying committed records changes state (delta.py).
The runtime (quorum.py) runs one handler at a time on the Raft leader, proposes the records,
and answers after they are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from raftka.cluster import records, topic_config
from raftka.cluster.delta import MetadataDelta
from raftka.cluster.image import (
    CONSUMER_OFFSETS_TOPIC,
    NO_LEADER,
    MetadataImage,
    PartitionRegistration,
)
from raftka.cluster.naming import InvalidTopicNameError, collides, validate_topic_name
from raftka.cluster.partition_change import build_change
from raftka.cluster.placement import (
    CapacityError,
    PlacementError,
    ReplicaPlacer,
    default_replication_factor,
)
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, controller_pb2

R = TypeVar("R")
Code = common_pb2.ErrorCode
# Producer ids are handed out one per request; a block keeps Raft writes rare.
PRODUCER_ID_BLOCK = 1000


@dataclass(frozen=True, slots=True)
class ControllerResult(Generic[R]):
    records: tuple[records.MetadataRecord, ...]
    response: R


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Broker-wide defaults the controller applies (Kafka's names in the comments)."""

    num_partitions: int = 1  # num.partitions
    default_replication_factor: int = 1  # default.replication.factor
    partitions_max: int = 10_000  # bound on one topic's partition count
    topics_per_request_max: int = 1_000
    topic_config_defaults: Mapping[str, str] = field(default_factory=dict)
    offsets_topic_partitions: int = 10  # offsets.topic.num.partitions
    offsets_topic_replication_factor: int = 3  # offsets.topic.replication.factor
    # Brokers the cluster is meant to have at least (its Raft voters): a default replication
    # factor is capped at the cluster's size, never at the brokers that happen to be up.
    cluster_size_min: int = 0


class _Scratch:
    """The image as it will be after the records gathered so far; lets one command make
    several dependent decisions (e.g. fence two brokers) on a consistent view."""

    def __init__(self, image: MetadataImage) -> None:
        self.image = image
        self.records: list[records.MetadataRecord] = []

    def add(self, *new: records.MetadataRecord | None) -> None:
        present = [r for r in new if r is not None]
        if not present:
            return
        delta = MetadataDelta(self.image)
        for record in present:
            delta.replay(record)
        self.image = delta.apply()
        self.records.extend(present)


def _live(image: MetadataImage) -> frozenset[int]:
    return frozenset(image.unfenced_broker_ids())


def _unclean_allowed(image: MetadataImage, topic_name: str, settings: ControllerSettings) -> bool:
    topic = image.topics[topic_name]
    effective = topic_config.resolve(topic.configs, settings.topic_config_defaults)
    return topic_config.as_bool(effective, "unclean.leader.election.enable")


# ------------------------------------------------------------------------------ topics
def create_topics(
    image: MetadataImage,
    request: admin_pb2.CreateTopicsRequest,
    settings: ControllerSettings,
    new_topic_id: Callable[[], str],
    *,
    allow_internal: bool = False,
) -> ControllerResult[admin_pb2.CreateTopicsResponse]:
    response = admin_pb2.CreateTopicsResponse()
    scratch = _Scratch(image)
    if len(request.topics) > settings.topics_per_request_max:
        for new in request.topics:
            response.topics.add(
                name=new.name,
                error_code=Code.INVALID_REQUEST,
                error_message=f"at most {settings.topics_per_request_max} topics per request",
            )
        return ControllerResult((), response)
    placer = ReplicaPlacer(image, image.unfenced_broker_ids())
    for new in request.topics:
        result = response.topics.add(name=new.name)
        try:
            planned = _plan_topic(scratch.image, new, settings, placer, allow_internal)
        except _Refused as refused:
            result.error_code = refused.code
            result.error_message = str(refused)
            continue
        partitions, replication_factor, configs = planned
        result.num_partitions = len(partitions)
        result.replication_factor = replication_factor
        if request.validate_only:
            continue
        topic_id = new_topic_id()
        result.topic_id = topic_id
        internal = new.name == CONSUMER_OFFSETS_TOPIC
        # One delta for the topic and all its partitions: a delta per record rebuilt the
        # image once per partition, which made creating N partitions O(N^2).
        scratch.add(
            records.topic(new.name, topic_id, configs, internal=internal),
            *(records.partition(topic_id, index, replicas, replicas, replicas[0])
              for index, replicas in enumerate(partitions)),
        )
    return ControllerResult(tuple(scratch.records), response)


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _plan_topic(
    image: MetadataImage,
    new: admin_pb2.NewTopic,
    settings: ControllerSettings,
    placer: ReplicaPlacer,
    allow_internal: bool,
) -> tuple[list[tuple[int, ...]], int, dict[str, str]]:
    try:
        validate_topic_name(new.name)
    except InvalidTopicNameError as exc:
        raise _Refused(Code.INVALID_TOPIC_EXCEPTION, str(exc)) from None
    if new.name == CONSUMER_OFFSETS_TOPIC and not allow_internal:
        raise _Refused(Code.INVALID_REQUEST, f"'{new.name}' is an internal topic")
    if new.name in image.topics:
        raise _Refused(Code.TOPIC_ALREADY_EXISTS, f"topic '{new.name}' already exists")
    clash = next((name for name in image.topics if collides(new.name, name)), None)
    if clash is not None:
        raise _Refused(
            Code.INVALID_TOPIC_EXCEPTION,
            f"topic '{new.name}' collides with existing topic '{clash}' "
            "('.' and '_' are interchangeable in metric names)",
        )
    count = new.num_partitions if new.num_partitions > 0 else settings.num_partitions
    if count > settings.partitions_max:
        raise _Refused(
            Code.INVALID_PARTITIONS,
            f"{count} partitions is above the limit of {settings.partitions_max}",
        )
    live = len(image.unfenced_broker_ids())
    if new.replication_factor > 0:
        replication_factor = new.replication_factor
    else:
        replication_factor = default_replication_factor(
            settings.default_replication_factor, image, settings.cluster_size_min
        )
        if replication_factor > live:
            raise _Refused(
                Code.INVALID_REPLICATION_FACTOR,
                f"replication factor {replication_factor} (default.replication.factor) is "
                f"larger than the {live} available broker(s); start the missing broker(s) "
                "or ask for a replication factor",
            )
    try:
        configs = topic_config.validate(dict(new.configs))
    except topic_config.InvalidConfigError as exc:
        raise _Refused(Code.INVALID_CONFIG, str(exc)) from None
    if live == 0:
        raise _Refused(Code.INVALID_REPLICATION_FACTOR, "no live brokers to place replicas on")
    try:
        partitions = placer.place(count, replication_factor)
    except CapacityError as exc:
        raise _Refused(Code.POLICY_VIOLATION, str(exc)) from None
    except PlacementError as exc:
        raise _Refused(Code.INVALID_REPLICATION_FACTOR, str(exc)) from None
    return partitions, replication_factor, configs


def delete_topics(
    image: MetadataImage, request: admin_pb2.DeleteTopicsRequest
) -> ControllerResult[admin_pb2.DeleteTopicsResponse]:
    response = admin_pb2.DeleteTopicsResponse()
    found: list[records.MetadataRecord] = []
    seen: set[str] = set()
    for name in request.names:
        result = response.topics.add(name=name)
        topic = image.topics.get(name)
        if topic is None or name in seen:
            result.error_code = Code.UNKNOWN_TOPIC_OR_PARTITION
            result.error_message = f"topic '{name}' does not exist"
            continue
        if topic.internal:
            result.error_code = Code.INVALID_REQUEST
            result.error_message = f"'{name}' is an internal topic and cannot be deleted"
            continue
        seen.add(name)
        found.append(records.remove_topic(topic.topic_id))
    return ControllerResult(tuple(found), response)


# ----------------------------------------------------------------------------- brokers
def register_broker(
    image: MetadataImage,
    request: controller_pb2.RegisterBrokerRequest,
    settings: ControllerSettings,
) -> ControllerResult[controller_pb2.RegisterBrokerResponse]:
    """A (re)starting broker announces itself. A new incarnation means the process restarted
    and lost its in-memory state: it leaves every ISR and leadership first (as a fence does),
    and is registered fenced until a heartbeat shows it caught up with the metadata."""
    response = controller_pb2.RegisterBrokerResponse()
    endpoint = request.endpoint
    if request.broker_id < 0 or not request.incarnation_id or not endpoint.host:
        response.error_code = Code.INVALID_REQUEST
        response.error_message = "broker_id, incarnation_id and endpoint.host are required"
        return ControllerResult((), response)
    existing = image.brokers.get(request.broker_id)
    if existing is not None and existing.incarnation_id == request.incarnation_id:
        response.broker_epoch = existing.epoch
        return ControllerResult((), response)
    scratch = _Scratch(image)
    if existing is not None and not existing.fenced:
        _fence_one(scratch, request.broker_id, settings)
    scratch.add(
        records.register_broker(
            request.broker_id,
            request.incarnation_id,
            endpoint.host,
            endpoint.port,
            endpoint.kafka_port,
            voter=request.voter,
            pid=request.pid,
            fenced=True,
            kafka_listeners=[(k.name, k.host, k.port) for k in endpoint.kafka_listeners],
            grpc_listeners=[(g.name, g.host, g.port) for g in endpoint.grpc_listeners],
            max_replicas=max(0, request.max_replicas),
            replication_port=endpoint.replication_port,
        )
    )
    # The epoch is the offset of the registration record once applied.
    response.broker_epoch = scratch.image.offset
    return ControllerResult(tuple(scratch.records), response)


def broker_heartbeat(
    image: MetadataImage,
    request: controller_pb2.BrokerHeartbeatRequest,
    settings: ControllerSettings,
) -> ControllerResult[controller_pb2.BrokerHeartbeatResponse]:
    """Unfence a registered broker once it has applied all the metadata the controller has.

    All of it, not just up to its registration: a leader that was paused (SIGSTOP, a long GC,
    a frozen VM) past its session was fenced and replaced, and wakes with an image that still
    names it leader. Were it unfenced at once, its lease would be renewed and it would take
    writes for partitions it no longer leads; caught up, it knows it lost them (as in Kafka,
    where a broker is unfenced only once it has caught up with the metadata log)."""
    response = controller_pb2.BrokerHeartbeatResponse()
    broker = image.brokers.get(request.broker_id)
    if broker is None or broker.epoch != request.broker_epoch:
        response.error_code = Code.STALE_BROKER_EPOCH
        response.error_message = (
            f"broker {request.broker_id} epoch {request.broker_epoch} is not the registered "
            f"one ({broker.epoch if broker else 'none'}); register again"
        )
        response.fenced = True
        return ControllerResult((), response)
    if not broker.fenced:
        response.fenced = False
        return ControllerResult((), response)
    if request.metadata_offset < max(broker.epoch, image.offset):
        response.fenced = True
        return ControllerResult((), response)
    scratch = _Scratch(image)
    _unfence_one(scratch, request.broker_id, settings)
    response.fenced = False
    return ControllerResult(tuple(scratch.records), response)


def fence_brokers(
    image: MetadataImage, broker_ids: Collection[int], settings: ControllerSettings
) -> tuple[records.MetadataRecord, ...]:
    """Records that fence the given brokers (missed their session) and move leadership."""
    scratch = _Scratch(image)
    for broker_id in sorted(broker_ids):
        broker = scratch.image.brokers.get(broker_id)
        if broker is not None and not broker.fenced:
            _fence_one(scratch, broker_id, settings)
    return tuple(scratch.records)


def fence_dead_brokers(
    image: MetadataImage, dead: Mapping[int, int], settings: ControllerSettings
) -> tuple[records.MetadataRecord, ...]:
    """Records that fence brokers proven dead (their port refused a connection) without
    waiting out their session. `dead` maps each broker id to the broker epoch the proof is
    about: a broker that registered again since (a new incarnation, which may well be the
    one now listening) is left alone, as is one already fenced."""
    current = [
        broker_id
        for broker_id, epoch in dead.items()
        if (broker := image.brokers.get(broker_id)) is not None
        and broker.epoch == epoch
        and not broker.fenced
    ]
    return fence_brokers(image, current, settings)


def controlled_shutdown(
    image: MetadataImage,
    request: controller_pb2.ControlledShutdownRequest,
    settings: ControllerSettings,
) -> ControllerResult[controller_pb2.ControlledShutdownResponse]:
    """A stopping broker hands over before it exits (KIP-841): it is fenced now, while it
    still answers, so each partition it leads moves to another live in-sync replica and it
    leaves every ISR it is not the last member of (no one else has all the committed
    records there; such a partition goes leaderless until the broker returns, as it would
    once the broker had gone). Fenced, it cannot rejoin an ISR or be given new replicas.

    The reply's `metadata_offset` is where all this is applied; a broker already fenced
    gets the current offset (a retried request is answered the same way)."""
    response = controller_pb2.ControlledShutdownResponse()
    broker = image.brokers.get(request.broker_id)
    if broker is None or broker.epoch != request.broker_epoch:
        response.error_code = Code.STALE_BROKER_EPOCH
        response.error_message = (
            f"broker {request.broker_id} epoch {request.broker_epoch} is not the registered "
            f"one ({broker.epoch if broker else 'none'})"
        )
        return ControllerResult((), response)
    scratch = _Scratch(image)
    if not broker.fenced:
        _fence_one(scratch, request.broker_id, settings)
    response.metadata_offset = scratch.image.offset
    response.partitions_without_leader = sum(
        1
        for _, _, registration in scratch.image.iter_partitions()
        if registration.leader == NO_LEADER and registration.isr == (request.broker_id,)
    )
    return ControllerResult(tuple(scratch.records), response)


def _fence_one(scratch: _Scratch, broker_id: int, settings: ControllerSettings) -> None:
    scratch.add(records.fence_broker(broker_id))
    live = _live(scratch.image)
    for topic, index, registration in list(scratch.image.iter_partitions()):
        if broker_id not in registration.isr and registration.leader != broker_id:
            continue
        scratch.add(
            build_change(
                topic.topic_id,
                index,
                registration,
                live,
                unclean=_unclean_allowed(scratch.image, topic.name, settings),
            )
        )


def _unfence_one(scratch: _Scratch, broker_id: int, settings: ControllerSettings) -> None:
    scratch.add(records.unfence_broker(broker_id))
    live = _live(scratch.image)
    for topic, index, registration in list(scratch.image.iter_partitions()):
        if registration.leader != NO_LEADER or broker_id not in registration.replicas:
            continue
        scratch.add(
            build_change(
                topic.topic_id,
                index,
                registration,
                live,
                unclean=_unclean_allowed(scratch.image, topic.name, settings),
            )
        )


# ---------------------------------------------------------------------------- replication
def alter_partition(
    image: MetadataImage,
    request: controller_pb2.AlterPartitionRequest,
) -> ControllerResult[controller_pb2.AlterPartitionResponse]:
    """A leader asks to change the ISR of partitions it leads: every change it has pending
    (`request.partitions`), or one in the older single-partition form (the top-level fields,
    answered in the response's top-level fields).

    Each partition is judged on its own, against the image as the request found it (Kafka's
    AlterPartition rules): only the current leader, at the current leader and partition
    epochs, may change it; new members must be live replicas, and the leader stays in. A
    refused partition gets its error and the current registration, and does not hold back
    the others. The accepted changes are one batch of records, so a broker's whole round of
    ISR changes costs one metadata commit, not one per partition."""
    if not request.partitions:
        item = controller_pb2.AlterPartitionItem(
            topic=request.topic, partition=request.partition,
            leader_epoch=request.leader_epoch, partition_epoch=request.partition_epoch,
            new_isr=request.new_isr,
        )
        result, record = _alter_one(image, request.broker_id, request.broker_epoch, item)
        single = controller_pb2.AlterPartitionResponse(
            error_code=result.error_code, error_message=result.error_message,
            leader_id=result.leader_id, leader_epoch=result.leader_epoch,
            partition_epoch=result.partition_epoch, isr=result.isr,
        )
        return ControllerResult(() if record is None else (record,), single)
    response = controller_pb2.AlterPartitionResponse(leader_id=-1)
    batch: list[records.MetadataRecord] = []
    seen: set[tuple[str, int]] = set()
    for item in request.partitions:
        key = (item.topic, item.partition)
        if key in seen:
            response.partitions.add(
                topic=item.topic, partition=item.partition, leader_id=-1,
                error_code=Code.INVALID_REQUEST,
                error_message=f"{item.topic}-{item.partition} appears more than once",
            )
            continue
        seen.add(key)
        result, record = _alter_one(image, request.broker_id, request.broker_epoch, item)
        response.partitions.append(result)
        if record is not None:
            batch.append(record)
    return ControllerResult(tuple(batch), response)


def _alter_one(
    image: MetadataImage, broker_id: int, broker_epoch: int,
    item: controller_pb2.AlterPartitionItem,
) -> tuple[controller_pb2.AlterPartitionResult, records.MetadataRecord | None]:
    """One partition's verdict: its result, and the record carrying the change (None when
    refused or when the ISR is already the one asked for)."""
    result = controller_pb2.AlterPartitionResult(
        topic=item.topic, partition=item.partition, leader_id=-1)
    registration = image.partition(item.topic, item.partition)
    if registration is None:
        result.error_code = Code.UNKNOWN_TOPIC_OR_PARTITION
        result.error_message = f"unknown partition {item.topic}-{item.partition}"
        return result, None
    result.leader_id = registration.leader
    result.leader_epoch = registration.leader_epoch
    result.partition_epoch = registration.partition_epoch
    result.isr.extend(registration.isr)
    broker = image.brokers.get(broker_id)
    problem: tuple[int, str] | None = None
    if broker is None or broker.epoch != broker_epoch or broker.fenced:
        problem = (
            Code.STALE_BROKER_EPOCH,
            f"broker {broker_id} is not registered with epoch {broker_epoch} (or is fenced)",
        )
    elif registration.leader != broker_id:
        problem = (
            Code.NOT_LEADER_OR_FOLLOWER,
            f"broker {broker_id} does not lead {item.topic}-{item.partition}; "
            f"{registration.leader} does",
        )
    elif item.leader_epoch != registration.leader_epoch:
        problem = (
            Code.FENCED_LEADER_EPOCH,
            f"leader epoch {item.leader_epoch} is not {registration.leader_epoch}",
        )
    elif item.partition_epoch != registration.partition_epoch:
        problem = (
            Code.INVALID_UPDATE_VERSION,
            f"partition epoch {item.partition_epoch} is not {registration.partition_epoch}",
        )
    else:
        problem = _isr_problem(image, registration, set(item.new_isr), broker_id)
    if problem is not None:
        result.error_code = problem[0]  # type: ignore[assignment]
        result.error_message = problem[1]
        return result, None
    new_isr = tuple(r for r in registration.replicas if r in set(item.new_isr))
    if new_isr == registration.isr:
        return result, None
    topic = image.topics[item.topic]
    record = records.partition_change(topic.topic_id, item.partition, isr=new_isr)
    del result.isr[:]
    result.isr.extend(new_isr)
    result.partition_epoch = registration.partition_epoch + 1
    return result, record


def _isr_problem(
    image: MetadataImage, registration: PartitionRegistration, new_isr: set[int], leader: int
) -> tuple[int, str] | None:
    if leader not in new_isr:
        return Code.INVALID_REQUEST, "the leader must stay in the ISR"
    outsiders = new_isr - set(registration.replicas)
    if outsiders:
        return Code.INELIGIBLE_REPLICA, f"brokers {sorted(outsiders)} are not replicas"
    joining = new_isr - set(registration.isr)
    dead = [b for b in joining if b not in image.brokers or image.brokers[b].fenced]
    if dead:
        return Code.INELIGIBLE_REPLICA, f"brokers {sorted(dead)} are fenced"
    return None


def allocate_producer_ids(
    image: MetadataImage,
    request: controller_pb2.AllocateProducerIdsRequest,
) -> ControllerResult[controller_pb2.AllocateProducerIdsResponse]:
    broker = image.brokers.get(request.broker_id)
    if broker is None or broker.epoch != request.broker_epoch:
        return ControllerResult(
            (),
            controller_pb2.AllocateProducerIdsResponse(
                error_code=Code.STALE_BROKER_EPOCH,
                error_message=f"broker {request.broker_id} epoch {request.broker_epoch} is stale",
            ),
        )
    first = image.next_producer_id
    return ControllerResult(
        (records.producer_ids(first + PRODUCER_ID_BLOCK),),
        controller_pb2.AllocateProducerIdsResponse(
            first_producer_id=first, count=PRODUCER_ID_BLOCK
        ),
    )


def preferred_leader_elections(image: MetadataImage) -> tuple[records.MetadataRecord, ...]:
    """Move leadership back to each partition's preferred (first) replica where it is alive
    and in sync (Kafka's auto.leader.rebalance.enable), so load spreads again after a broker
    returns."""
    live = _live(image)
    out = []
    for topic, index, registration in image.iter_partitions():
        preferred = registration.preferred_leader
        if registration.leader == preferred or preferred not in live:
            continue
        if preferred not in registration.isr:
            continue
        out.append(build_change(topic.topic_id, index, registration, live, prefer_preferred=True))
    return tuple(r for r in out if r is not None)


# ---------------------------------------------------------------------------- bootstrap
def bootstrap(
    image: MetadataImage, new_cluster_id: Callable[[], str]
) -> tuple[records.MetadataRecord, ...]:
    """What a newly elected controller writes first: a no-op whose commit proves it has
    applied everything before it, and the cluster id if none exists yet."""
    out = [records.noop()]
    if not image.cluster_id:
        out.append(records.cluster_id(new_cluster_id()))
    return tuple(out)
