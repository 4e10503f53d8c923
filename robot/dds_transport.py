"""ROS 2 topics over Cyclone DDS, without a ROS installation.

Topic ``/x`` is the DDS topic ``rt/x``; endpoints carry ``typehash=RIHS01_…;`` in
USER_DATA as ROS 2 (Iron and later) does; QoS is rclpy's default (reliable,
keep-last 10, volatile) or, for latched topics such as ``/estop``, transient-local
with depth 1.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from cyclonedds.core import DDSException, InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from steer.robot import messages
from steer.robot.transport import LOOPBACK_CONFIG

HISTORY_DEPTH = 10
MAX_SAMPLE_BYTES = 64 * 1024
"""Received samples larger than this (serialized) are dropped undecoded; robot messages are a few kB."""

try:  # the binding's raw take: serialized bytes, so oversize samples are never decoded
    from cyclonedds._clayer import ddspy_take as _raw_take
except ImportError:  # pragma: no cover - another binding version: decode everything, the node still bounds sizes
    _raw_take = None


def dds_topic_name(topic: str) -> str:
    """ROS topic name → DDS topic name (``/ns/joint_states`` → ``rt/ns/joint_states``)."""
    return "rt/" + topic.lstrip("/")


def endpoint_qos(msg_type: type, latched: bool) -> Qos:
    """rclpy's default QoS (or the latched variant) with the ROS 2 type hash in USER_DATA."""
    user_data = Policy.Userdata(data=f"typehash={messages.type_hash(msg_type)};".encode())
    if latched:
        return Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.TransientLocal,
                   Policy.History.KeepLast(1), user_data)
    return Qos(Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.Durability.Volatile,
               Policy.History.KeepLast(HISTORY_DEPTH), user_data)


_OWN_CONFIG = "STEER_LOOPBACK_CYCLONEDDS_URI"
"""Environment key that marks ``CYCLONEDDS_URI`` as the loopback config a steer process made."""


def use_loopback_config() -> str:
    """Point Cyclone at a loopback-only config (unless ``CYCLONEDDS_URI`` is set); returns the URI.

    The config is a private temporary file (0600, unpredictable name, removed when this
    process exits): a file at a fixed path in a shared temp dir could be planted, or swapped
    for a symlink, by another user. Child processes inherit the URI and reuse the file; one
    that outlives its creator (the file is gone) makes its own.
    """
    uri = os.environ.get("CYCLONEDDS_URI")
    ours = uri is not None and uri == os.environ.get(_OWN_CONFIG)
    if not uri or (ours and not Path(uri.removeprefix("file://")).is_file()):
        fd, path = tempfile.mkstemp(prefix="steer-cyclonedds-", suffix=".xml")
        with os.fdopen(fd, "w") as f:
            f.write(LOOPBACK_CONFIG)
        atexit.register(_remove_config, path)
        uri = f"file://{path}"
        os.environ["CYCLONEDDS_URI"] = os.environ[_OWN_CONFIG] = uri
    return uri


def _remove_config(path: str) -> None:
    Path(path).unlink(missing_ok=True)


class DdsPublisher:
    """A ROS 2 publisher on a DDS data writer."""

    def __init__(self, participant: DomainParticipant, topic: str, msg_type: type, latched: bool):
        self.topic = topic
        qos = endpoint_qos(msg_type, latched)
        self._topic = Topic(participant, dds_topic_name(topic), msg_type, qos=qos)
        self._writer = DataWriter(participant, self._topic, qos=qos)

    def publish(self, msg: Any) -> None:
        """Send one message."""
        self._writer.write(msg)

    def matched(self) -> int:
        """Number of matched subscriptions."""
        return len(self._writer.get_matched_subscriptions())

    def matched_participants(self) -> set:
        """Keys of the participants whose readers are matched with this writer."""
        keys = set()
        for handle in self._writer.get_matched_subscriptions():
            data = self._writer.get_matched_subscription_data(handle)
            if data is not None:
                keys.add(data.participant_key)
        return keys

    def wait_acked(self, timeout_s: float) -> bool:
        """Block until every matched reliable reader acknowledged all samples; False on timeout.

        A reader acknowledges only once it has discovered this writer too, so this is also the
        way to know that discovery finished in both directions.
        """
        try:
            return bool(self._writer.wait_for_acks(max(0, int(timeout_s * 1e9))))
        except Exception:  # noqa: BLE001 - the binding raises AttributeError instead of returning False on timeout
            return False


class DdsSubscription:
    """A ROS 2 subscription on a DDS data reader; invalid samples (a writer leaving) are dropped.

    Samples whose serialized size exceeds ``max_sample_bytes`` are dropped before they are
    deserialized (counted in ``oversize``): a hostile participant cannot make this process
    decode arbitrarily large messages.
    """

    def __init__(self, participant: DomainParticipant, waitset: WaitSet, topic: str, msg_type: type, latched: bool,
                 max_sample_bytes: int = 0):
        self.topic = topic
        self.max_sample_bytes = max_sample_bytes
        self.oversize = 0
        self._msg_type = msg_type
        qos = endpoint_qos(msg_type, latched)
        self._topic = Topic(participant, dds_topic_name(topic), msg_type, qos=qos)
        self._reader = DataReader(participant, self._topic, qos=qos)
        self._condition = ReadCondition(self._reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
        waitset.attach(self._condition)

    def take(self) -> list[tuple[Any, int]]:
        """Messages received since the last call, with the (monotonic) time they were taken."""
        now = time.monotonic_ns()
        return [(m, now) for m, _ in self.take_timed()]

    def take_timed(self) -> list[tuple[Any, int]]:
        """Messages received since the last call, with the time their writer wrote them (ns since the epoch):
        messages of several topics from one writer process sort into the order they were sent."""
        if not self.max_sample_bytes or _raw_take is None:
            samples = self._reader.take(N=64)
            # A writer that exits delivers an invalid sample (no data): filter it.
            return [(s, s.sample_info.source_timestamp) for s in samples
                    if getattr(getattr(s, "sample_info", None), "valid_data", False)]
        raw = _raw_take(self._reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any, 64)
        if isinstance(raw, int):
            raise DDSException(raw, f"Occurred while taking data on {self.topic}")
        out = []
        for data, info in raw:
            if not info.valid_data:
                continue  # a writer that exits delivers an invalid sample (no data)
            if len(data) > self.max_sample_bytes:
                self.oversize += 1
                continue
            out.append((self._msg_type.deserialize(data), int(info.source_timestamp)))
        return out

    def matched(self) -> int:
        """Number of matched publishers."""
        return len(self._reader.get_matched_publications())

    def matched_participants(self) -> set:
        """Keys of the participants whose writers are matched with this reader."""
        keys = set()
        for handle in self._reader.get_matched_publications():
            data = self._reader.get_matched_publication_data(handle)
            if data is not None:
                keys.add(data.participant_key)
        return keys


class DdsTransport:
    """The :class:`~steer.robot.transport.Transport` over one Cyclone DDS participant."""

    def __init__(self, domain_id: int = 0, max_sample_bytes: int = MAX_SAMPLE_BYTES):
        self.domain_id = domain_id
        self.max_sample_bytes = max_sample_bytes
        self.participant = DomainParticipant(domain_id)
        self._waitset = WaitSet(self.participant)
        self._endpoints: list[Any] = []

    def publisher(self, topic: str, msg_type: type, latched: bool = False) -> DdsPublisher:
        """A publisher with ROS 2 default QoS, or transient-local when ``latched``."""
        pub = DdsPublisher(self.participant, topic, msg_type, latched)
        self._endpoints.append(pub)
        return pub

    def subscription(self, topic: str, msg_type: type, latched: bool = False) -> DdsSubscription:
        """A subscription with ROS 2 default QoS, or transient-local when ``latched``."""
        sub = DdsSubscription(self.participant, self._waitset, topic, msg_type, latched, self.max_sample_bytes)
        self._endpoints.append(sub)
        return sub

    def wait(self, timeout_s: float) -> None:
        """Block until a subscription has unread data or the timeout passes."""
        self._waitset.wait(max(0, int(timeout_s * 1e9)))

    def close(self) -> None:
        """Drop every endpoint; the participant goes with the object."""
        self._endpoints.clear()
