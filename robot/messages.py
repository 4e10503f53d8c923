"""ROS 2 message types as cyclonedds IDL structs.

Each class carries the DDS type name that rmw_cyclonedds uses
(``<pkg>::msg::dds_::<Msg>_``), is final and keyless, and is serialized as XCDR1:
that is the wire format of a ROS 2 node, so these messages interoperate with
``ros2 topic echo`` and with rclpy nodes without any ROS installation here.

The safety state goes out as ``diagnostic_msgs/msg/DiagnosticStatus``: a standard
type, so a robot needs no extra interface package to decode it and
``rqt_robot_monitor`` can show it.
"""


import time
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32


def _dds_name(ros_name: str) -> str:
    pkg, kind, msg = ros_name.split("/")
    return f"{pkg}::{kind}::dds_::{msg}_"


@dataclass
@final
class Time(IdlStruct, typename=_dds_name("builtin_interfaces/msg/Time")):
    """``builtin_interfaces/msg/Time``."""

    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@final
class Duration(IdlStruct, typename=_dds_name("builtin_interfaces/msg/Duration")):
    """``builtin_interfaces/msg/Duration``."""

    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@final
class Header(IdlStruct, typename=_dds_name("std_msgs/msg/Header")):
    """``std_msgs/msg/Header``."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
@final
class JointState(IdlStruct, typename=_dds_name("sensor_msgs/msg/JointState")):
    """``sensor_msgs/msg/JointState``."""

    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
@final
class MultiArrayDimension(IdlStruct, typename=_dds_name("std_msgs/msg/MultiArrayDimension")):
    """``std_msgs/msg/MultiArrayDimension``."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
@final
class MultiArrayLayout(IdlStruct, typename=_dds_name("std_msgs/msg/MultiArrayLayout")):
    """``std_msgs/msg/MultiArrayLayout``."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
@final
class Float64MultiArray(IdlStruct, typename=_dds_name("std_msgs/msg/Float64MultiArray")):
    """``std_msgs/msg/Float64MultiArray``: the command of a forward_command_controller."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


@dataclass
@final
class Bool(IdlStruct, typename=_dds_name("std_msgs/msg/Bool")):
    """``std_msgs/msg/Bool``: the e-stop."""

    data: bool = False


@dataclass
@final
class Vector3(IdlStruct, typename=_dds_name("geometry_msgs/msg/Vector3")):
    """``geometry_msgs/msg/Vector3``."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@final
class Twist(IdlStruct, typename=_dds_name("geometry_msgs/msg/Twist")):
    """``geometry_msgs/msg/Twist``: the command of a mobile base."""

    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@dataclass
@final
class JointTrajectoryPoint(IdlStruct, typename=_dds_name("trajectory_msgs/msg/JointTrajectoryPoint")):
    """``trajectory_msgs/msg/JointTrajectoryPoint``."""

    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
@final
class JointTrajectory(IdlStruct, typename=_dds_name("trajectory_msgs/msg/JointTrajectory")):
    """``trajectory_msgs/msg/JointTrajectory``: the command of a trajectory controller."""

    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
@final
class KeyValue(IdlStruct, typename=_dds_name("diagnostic_msgs/msg/KeyValue")):
    """``diagnostic_msgs/msg/KeyValue``."""

    key: str = ""
    value: str = ""


@dataclass
@final
class DiagnosticStatus(IdlStruct, typename=_dds_name("diagnostic_msgs/msg/DiagnosticStatus")):
    """``diagnostic_msgs/msg/DiagnosticStatus``: the safety state for the console."""

    level: uint8 = 0  # ROS `byte` is an octet on the wire
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: sequence[KeyValue] = field(default_factory=list)


# Diagnostic levels (the constants of DiagnosticStatus).
DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE = 0, 1, 2, 3

ROS_NAMES: dict[type, str] = {
    Time: "builtin_interfaces/msg/Time",
    Duration: "builtin_interfaces/msg/Duration",
    Header: "std_msgs/msg/Header",
    JointState: "sensor_msgs/msg/JointState",
    MultiArrayDimension: "std_msgs/msg/MultiArrayDimension",
    MultiArrayLayout: "std_msgs/msg/MultiArrayLayout",
    Float64MultiArray: "std_msgs/msg/Float64MultiArray",
    Bool: "std_msgs/msg/Bool",
    Vector3: "geometry_msgs/msg/Vector3",
    Twist: "geometry_msgs/msg/Twist",
    JointTrajectoryPoint: "trajectory_msgs/msg/JointTrajectoryPoint",
    JointTrajectory: "trajectory_msgs/msg/JointTrajectory",
    KeyValue: "diagnostic_msgs/msg/KeyValue",
    DiagnosticStatus: "diagnostic_msgs/msg/DiagnosticStatus",
}
"""ROS 2 interface name of every message class."""

# RIHS01 hashes of the ROS 2 Jazzy definitions (REP 2011). They are constants here
# so that a robot need not compute them; a test recomputes them with rosbags.
TYPE_HASHES: dict[str, str] = {
    "builtin_interfaces/msg/Time": "RIHS01_b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
    "builtin_interfaces/msg/Duration": "RIHS01_e8d009f659816f758b75334ee1a9ca5b5c0b859843261f14c7f937349599d93b",
    "std_msgs/msg/Header": "RIHS01_f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    "sensor_msgs/msg/JointState": "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
    "std_msgs/msg/MultiArrayDimension": "RIHS01_5e773a60a4c7fc8a54985f307c7837aa2994252a126c301957a24e31282c9cbe",
    "std_msgs/msg/MultiArrayLayout": "RIHS01_4c66e6f78e740ac103a94cf63259f968e48c617e7699e829b63c21a5cb50dac6",
    "std_msgs/msg/Float64MultiArray": "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
    "std_msgs/msg/Bool": "RIHS01_feb91e995ff9ebd09c0cb3d2aed18b11077585839fb5db80193b62d74528f6c9",
    "geometry_msgs/msg/Vector3": "RIHS01_cc12fe83e4c02719f1ce8070bfd14aecd40f75a96696a67a2a1f37f7dbb0765d",
    "geometry_msgs/msg/Twist": "RIHS01_9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
    "trajectory_msgs/msg/JointTrajectoryPoint":
        "RIHS01_de8907036d8bd45aac6f30cc9044a3d4a329c42cbf719aff7d95a584cfa532d7",
    "trajectory_msgs/msg/JointTrajectory": "RIHS01_179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e",
    "diagnostic_msgs/msg/KeyValue": "RIHS01_d68081eaa540288c5440753baecef0c4e16e81a5f78ad68902ded5100413bb42",
    "diagnostic_msgs/msg/DiagnosticStatus":
        "RIHS01_b0e3e692ea2d54a8af2f4ef1930e81556a2db55216b771f8a7d2724ed47bf0e4",
}
"""``RIHS01_<sha256>`` of every message, by ROS 2 name."""


def ros_name(msg_type: type) -> str:
    """The ROS 2 interface name (``pkg/msg/Name``) of a message class."""
    return ROS_NAMES[msg_type]


def type_hash(msg_type: type) -> str:
    """The RIHS01 type hash of a message class, as ROS 2 puts it in USER_DATA."""
    return TYPE_HASHES[ROS_NAMES[msg_type]]


def stamp_of(ns: int) -> Time:
    """A ROS time stamp of nanoseconds since the epoch."""
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_now() -> Time:
    """The current wall-clock time as a ROS time stamp."""
    return stamp_of(time.time_ns())


def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds since the epoch of a ROS time stamp."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def serialize(msg: IdlStruct) -> bytes:
    """CDR bytes (XCDR1, little endian, with the 4-byte encapsulation header) of a message."""
    return msg.serialize(use_version_2=False)


def deserialize(msg_type: type, data: bytes) -> IdlStruct:
    """Decode CDR bytes written by :func:`serialize` or by a ROS 2 node."""
    return msg_type.deserialize(data)
