"""The rclpy transport: lazy import, and message conversion checked against rosbags' classes."""

import subprocess
import sys
import types

import pytest

from steer.robot import messages as m
from steer.robot.rclpy_transport import from_ros, to_ros

SAMPLES = [
    m.JointState(header=m.Header(m.Time(1, 2), "base"), name=["a", "b"], position=[1.0, 2.0], velocity=[0.5, 0.0],
                 effort=[]),
    m.JointTrajectory(header=m.Header(m.Time(3, 4), ""), joint_names=["j"],
                      points=[m.JointTrajectoryPoint(positions=[0.1], velocities=[0.2],
                                                     time_from_start=m.Duration(1, 5))]),
    m.DiagnosticStatus(level=2, name="safety", message="e-stop", hardware_id="r",
                       values=[m.KeyValue("mode", "estopped")]),
    m.Twist(linear=m.Vector3(1.0, 0.0, 0.0), angular=m.Vector3(0.0, 0.0, -0.5)),
    m.Float64MultiArray(layout=m.MultiArrayLayout(dim=[m.MultiArrayDimension("joints", 2, 2)]), data=[0.1, 0.2]),
    m.Bool(True),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_conversion_round_trip(msg):
    ros = to_ros(msg, resolve=lambda name: types.SimpleNamespace)
    assert from_ros(ros, type(msg)) == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_conversion_from_rosbags_objects(msg):
    # rosbags' generated classes have the fields (and numpy arrays) of rclpy's.
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    ros = store.deserialize_cdr(m.serialize(msg), m.ros_name(type(msg)))
    assert from_ros(ros, type(msg)) == msg


def test_creating_the_transport_without_rclpy_is_one_sentence():
    code = ("from steer.robot.rclpy_transport import RclpyTransport\n"
            "try:\n    RclpyTransport()\nexcept Exception as e:\n"
            "    assert getattr(e, 'user_facing', False), e\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    try:
        import rclpy  # noqa: F401
    except ImportError:
        assert out.returncode == 0 and "rclpy is not installed" in out.stdout, out.stderr
    else:
        pytest.skip("rclpy is installed here; the missing-rclpy message cannot be shown")
