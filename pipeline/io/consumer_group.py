"""The streaming job's consumer group seen from outside: members, who holds which partition, how far behind.

Why: a worker that holds no partitions consumes nothing and reports no lag of its own, so a group
whose rebalance is stuck (a dead member the broker never expires) looked healthy from every
worker's metrics while posts piled up. The group's lag is read from the committed offsets and the
partitions' ends, which need no membership: any worker, and `triage stream --status`, can tell.
They are read through clients of their own, never the member's consumer: offset and metadata
requests from a consumer that is still joining its group kept it from ever joining on tansu.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from core.clients import kafka_options
from core.config import KafkaSettings
from core.terminal import printable


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: Optional[int]  # None: the group never committed here (it starts at the beginning)
    end: int
    lag: int
    owner: Optional[str] = None  # the member's instance id (or member id) holding it, if any


@dataclass
class GroupStatus:
    group: str
    state: str
    members: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[PartitionLag] = field(default_factory=list)
    note: Optional[str] = None  # why members are not shown, when the broker's description could not be read

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "state": self.state, "lag": self.lag, "members": self.members,
                "partitions": [asdict(p) for p in self.partitions], "note": self.note}


def partition_lags(consumer: KafkaConsumer, topics: list[str],
                   committed: dict[TopicPartition, Optional[int]]) -> list[PartitionLag]:
    """Lag of every partition of `topics`, from the group's committed offsets (None: never committed)."""
    tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    if not tps:
        return []
    ends, starts = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
    return [PartitionLag(tp.topic, tp.partition, committed.get(tp), ends[tp],
                         max(0, ends[tp] - (committed.get(tp) if committed.get(tp) is not None else starts[tp])))
            for tp in tps]


def _committed(admin: KafkaAdminClient, group: str) -> dict[TopicPartition, Optional[int]]:
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp: (o.offset if o.offset >= 0 else None) for tp, o in offsets.items()}


class GroupWatch:
    """The group's lag, read from outside the group (an admin client and a consumer that joins nothing)."""

    def __init__(self, cfg: KafkaSettings, group: str, topics: list[str]) -> None:
        self.group, self.topics = group, topics
        self._admin = KafkaAdminClient(**kafka_options(cfg))
        self._consumer = KafkaConsumer(**kafka_options(cfg), group_id=None, enable_auto_commit=False)

    def lags(self) -> list[PartitionLag]:
        return partition_lags(self._consumer, self.topics, _committed(self._admin, self.group))

    def describe(self) -> dict[str, Any]:
        return self._admin.describe_groups([self.group]).get(self.group, {})

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


def _members(description: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[tuple[str, int], str]]:
    members, owners = [], {}
    for member in description.get("members", []):
        name = member.get("group_instance_id") or member["member_id"]
        assignment = member.get("member_assignment") or {}
        held = [(a["topic"], p) for a in (assignment.get("assigned_partitions") or []) for p in a["partitions"]]
        members.append({"instance_id": member.get("group_instance_id"), "member_id": member["member_id"],
                        "host": member.get("client_host"), "partitions": [f"{t}/{p}" for t, p in held]})
        owners.update({tp: name for tp in held})
    return members, owners


def group_status(cfg: KafkaSettings, group: str, topics: list[str]) -> GroupStatus:
    """Members, assignment and lag of `group` on `topics`, from the broker (joins nothing)."""
    watch = GroupWatch(cfg, group, topics)
    try:
        note = None
        try:
            description = watch.describe()
        except (KafkaError, ValueError) as exc:  # tansu's answer carries fields kafka-python cannot parse
            description, note = {}, f"the broker's group description could not be read ({type(exc).__name__})"
        members, owners = _members(description)
        lags = [PartitionLag(**{**asdict(p), "owner": owners.get((p.topic, p.partition))}) for p in watch.lags()]
        return GroupStatus(group, description.get("group_state") or "Unknown", members, lags, note)
    finally:
        watch.close()


def format_status(status: GroupStatus) -> str:
    """The status as a person reads it: the group, its members, then every partition with its lag."""
    lines = [f"group {printable(status.group)}: {status.state}, {len(status.members)} member(s), "
             f"lag {status.lag}"] + ([f"  note: {status.note}; members and owners unknown"] if status.note else [])
    for member in status.members:
        name = member["instance_id"] or member["member_id"]
        lines.append(f"  member {printable(name):<32} {printable(str(member['host'])):<16} "
                     f"{', '.join(member['partitions']) or '(no partitions)'}")
    lines.append(f"  {'partition':<40} {'committed':>10} {'end':>10} {'lag':>8}  owner")
    for p in status.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        lines.append(f"  {printable(p.topic + '/' + str(p.partition)):<40} {committed:>10} {p.end:>10} {p.lag:>8}  "
                     f"{printable(p.owner) if p.owner else '(unassigned)'}")
    if status.lag and status.members and not any(p.owner for p in status.partitions):
        lines.append("  WARNING: the group has lag and no member holds a partition: is a rebalance stuck?")
    return "\n".join(lines)
