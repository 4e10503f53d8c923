"""ROS 2 topics through rclpy, for a robot with a ROS 2 installation.

A thin adapter: the node and the robot keep using the message classes of
:mod:`steer.robot.messages`; this module converts them field by field to and from
the generated ROS 2 classes. rclpy is imported when a transport is created, never at
module import, because it exists only on machines with /opt/ros.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any, Callable

from steer.robot import messages
from steer.robot.errors import RobotError

_IDL_BY_NAME = {name: cls for cls, name in messages.ROS_NAMES.items()}


def ros_class(ros_name: str) -> type:
    """The generated rclpy class of ``pkg/msg/Name`` (e.g. ``sensor_msgs.msg.JointState``)."""
    pkg, kind, name = ros_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def to_ros(msg: Any, resolve: Callable[[str], type] = ros_class) -> Any:
    """Convert one of our messages to the ROS class that ``resolve`` returns for its name."""
    target = resolve(messages.ros_name(type(msg)))()
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_ros(value, resolve)
        elif isinstance(value, list):
            value = [to_ros(v, resolve) if dataclasses.is_dataclass(v) else v for v in value]
        if isinstance(getattr(target, f.name, None), bytes):
            value = bytes([value])  # rclpy represents `byte` fields as bytes of length 1
        setattr(target, f.name, value)
    return target


def from_ros(ros_msg: Any, idl_type: type) -> Any:
    """Convert a ROS message (rclpy or any object with the same fields) to our class ``idl_type``."""
    hints = {f.name: f for f in dataclasses.fields(idl_type)}
    values = {}
    for name, f in hints.items():
        value = getattr(ros_msg, name)
        nested = _nested_type(idl_type, name)
        if nested is not None and isinstance(value, (list, tuple)):
            value = [from_ros(v, nested) for v in value]
        elif nested is not None:
            value = from_ros(value, nested)
        elif isinstance(value, bytes):
            value = value[0] if value else 0
        elif hasattr(value, "tolist"):
            value = value.tolist()  # numpy arrays and array.array
        elif isinstance(value, tuple):
            value = list(value)
        values[name] = value
    return idl_type(**values)


def _nested_type(idl_type: type, field_name: str) -> type | None:
    """The message class of a field (or of a sequence's elements), None for plain values."""
    default = getattr(idl_type(), field_name)
    if dataclasses.is_dataclass(default):
        return type(default)
    annotation = idl_type.__annotations__.get(field_name)
    for arg in getattr(annotation, "__metadata__", ()):  # sequence[T] is Annotated[..., typedef(T)]
        inner = getattr(arg, "subtype", None)
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            return inner
    return None


class _RclpyPublisher:
    def __init__(self, publisher: Any):
        self._pub = publisher

    def publish(self, msg: Any) -> None:
        self._pub.publish(to_ros(msg))

    def matched(self) -> int:
        return int(self._pub.get_subscription_count())

    def wait_acked(self, timeout_s: float) -> bool:
        from rclpy.duration import Duration

        return bool(self._pub.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9))))


class _RclpySubscription:
    def __init__(self, node: Any, topic: str, msg_type: type, qos: Any, received: list[int]):
        self._received = received
        self._queue: list[tuple[Any, int]] = []
        self._type = msg_type
        self._topic = topic
        self._node = node
        self._sub = node.create_subscription(ros_class(messages.ros_name(msg_type)), topic, self._callback, qos)

    def _callback(self, ros_msg: Any) -> None:
        self._queue.append((from_ros(ros_msg, self._type), time.monotonic_ns()))
        self._received[0] += 1

    def take(self) -> list[tuple[Any, int]]:
        items, self._queue = self._queue, []
        return items

    def matched(self) -> int:
        return int(self._node.count_publishers(self._topic))


class RclpyTransport:
    """The :class:`~steer.robot.transport.Transport` over an rclpy node (single-threaded executor)."""

    def __init__(self, domain_id: int = 0, node_name: str = "steer_policy"):
        try:
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
            from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        except ImportError:
            raise RobotError("rclpy is not installed; source your ROS 2 setup (e.g. /opt/ros/jazzy/setup.bash) "
                             "or use --transport dds.") from None
        self._rclpy = rclpy
        self._context = rclpy.context.Context()
        try:  # the node process handles SIGINT/SIGTERM itself (final hold command, last bag)
            from rclpy.signals import SignalHandlerOptions

            rclpy.init(context=self._context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        except ImportError:
            rclpy.init(context=self._context, domain_id=domain_id)
        self.node = rclpy.create_node(node_name, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self.received = [0]  # messages received by all subscriptions (shared counter)
        self._executor.add_node(self.node)
        self._qos_default = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                       durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
        self._qos_latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                       durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)

    def publisher(self, topic: str, msg_type: type, latched: bool = False) -> _RclpyPublisher:
        """A publisher with rclpy's default QoS, or transient-local when ``latched``."""
        qos = self._qos_latched if latched else self._qos_default
        return _RclpyPublisher(self.node.create_publisher(ros_class(messages.ros_name(msg_type)), topic, qos))

    def subscription(self, topic: str, msg_type: type, latched: bool = False) -> _RclpySubscription:
        """A subscription with rclpy's default QoS, or transient-local when ``latched``."""
        return _RclpySubscription(self.node, topic, msg_type, self._qos_latched if latched else self._qos_default,
                                  self.received)

    def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a message, then run every callback that is ready.

        spin_once runs one callback; draining the rest lets the node see a step's goal and
        joint state together, as the DDS transport does.
        """
        self._executor.spin_once(timeout_sec=max(0.0, timeout_s))  # rclpy waits forever on a negative timeout
        for _ in range(16):
            before = self.received[0]
            self._executor.spin_once(timeout_sec=0.0)
            if self.received[0] == before:
                break

    def close(self) -> None:
        """Destroy the node and shut its context down."""
        self._executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self._context)
