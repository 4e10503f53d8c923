"""The transport interface the policy node and the simulated robot are written against.

Two implementations: :mod:`steer.robot.dds_transport` (Cyclone DDS, speaks the ROS 2
wire protocol, no ROS install needed) and :mod:`steer.robot.rclpy_transport` (rclpy,
on a robot with ROS 2). Both use the message classes of :mod:`steer.robot.messages`.
"""

from __future__ import annotations

from typing import Any, Protocol

LOOPBACK_CONFIG = """<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <Peers><Peer address="127.0.0.1"/></Peers>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>40</MaxAutoParticipantIndex>
    </Discovery>
    <Internal>
      <!-- Fast heartbeats: a writer waiting for acknowledgements (the robot at an episode start) gets them in ms. -->
      <HeartbeatInterval min="1ms" minsched="2ms">5ms</HeartbeatInterval>
    </Internal>
  </Domain>
</CycloneDDS>
"""
"""Cyclone XML that keeps all traffic on loopback (for tests, benchmarks and local demos)."""


class Publisher(Protocol):
    """Writes messages of one type on one topic."""

    def publish(self, msg: Any) -> None:
        """Send one message."""

    def matched(self) -> int:
        """Number of subscriptions currently matched (0 when unknown)."""

    def wait_acked(self, timeout_s: float) -> bool:
        """Block until every matched reliable subscription acknowledged all messages; False on timeout."""


class Subscription(Protocol):
    """Receives messages of one type on one topic."""

    def take(self) -> list[tuple[Any, int]]:
        """All messages received since the last call, with their receive time (ns, monotonic)."""

    def matched(self) -> int:
        """Number of publishers currently matched (0 when unknown)."""


class Transport(Protocol):
    """Topics in, topics out; nothing else (no services, no parameters)."""

    def publisher(self, topic: str, msg_type: type, latched: bool = False) -> Publisher:
        """A publisher with ROS 2 default QoS, or transient-local when ``latched``."""

    def subscription(self, topic: str, msg_type: type, latched: bool = False) -> Subscription:
        """A subscription with ROS 2 default QoS, or transient-local when ``latched``."""

    def wait(self, timeout_s: float) -> None:
        """Block until a subscription has data or the timeout passes."""

    def close(self) -> None:
        """Release every endpoint."""
