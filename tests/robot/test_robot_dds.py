"""DDS endpoints look like ROS 2 ones: topic and type names, RIHS01 hash in USER_DATA, rclpy QoS, latched e-stop."""

import time

import pytest

from steer.robot import messages as m
from steer.robot.dds_transport import DdsTransport


def _publications(domain, wanted, timeout=10.0):
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.domain import DomainParticipant

    participant = DomainParticipant(domain)  # must outlive the reader
    reader = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)
    found = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end and not wanted <= set(found):
        for sample in reader.take(N=100):
            if getattr(sample, "topic_name", None):
                found[sample.topic_name] = sample
        time.sleep(0.05)
    return found


def test_endpoints_carry_ros2_names_hash_and_qos(dds_env):
    from cyclonedds.qos import Policy

    transport = DdsTransport(dds_env["domain"])
    transport.publisher("/joint_states", m.JointState)
    transport.publisher("/estop", m.Bool, latched=True)
    found = _publications(dds_env["domain"], {"rt/joint_states", "rt/estop"})
    js, estop = found["rt/joint_states"], found["rt/estop"]
    assert js.type_name == "sensor_msgs::msg::dds_::JointState_"
    assert estop.type_name == "std_msgs::msg::dds_::Bool_"
    assert js.qos[Policy.Userdata].data == b"typehash=" + m.TYPE_HASHES["sensor_msgs/msg/JointState"].encode() + b";"
    assert isinstance(js.qos[Policy.Reliability], Policy.Reliability.Reliable)
    assert js.qos[Policy.Durability] == Policy.Durability.Volatile
    assert js.qos[Policy.History] == Policy.History.KeepLast(10)
    assert estop.qos[Policy.Durability] == Policy.Durability.TransientLocal
    # XCDR1 only: ROS 2 rejects XCDR2 samples.
    assert js.qos[Policy.DataRepresentation] == Policy.DataRepresentation(use_cdrv0_representation=True)


def test_latched_estop_reaches_a_late_subscriber(dds_env):
    writer = DdsTransport(dds_env["domain"])
    pub = writer.publisher("/estop", m.Bool, latched=True)
    pub.publish(m.Bool(True))
    late = DdsTransport(dds_env["domain"])
    sub = late.subscription("/estop", m.Bool, latched=True)
    end, got = time.monotonic() + 10, []
    while time.monotonic() < end and not got:
        late.wait(0.1)
        got = sub.take()
    assert [msg.data for msg, _ in got] == [True]


def test_volatile_topic_round_trip_and_writer_exit_is_filtered(dds_env):
    a, b = DdsTransport(dds_env["domain"]), DdsTransport(dds_env["domain"])
    sub = b.subscription("/cmd", m.Float64MultiArray)
    pub = a.publisher("/cmd", m.Float64MultiArray)
    end = time.monotonic() + 10
    while pub.matched() == 0 and time.monotonic() < end:
        time.sleep(0.02)
    pub.publish(m.Float64MultiArray(data=[1.0, -2.0]))
    received = []
    while time.monotonic() < end and not received:
        b.wait(0.1)
        received = sub.take()
    assert [list(msg.data) for msg, _ in received] == [[1.0, -2.0]]
    del pub
    a.close()
    del a
    import gc

    gc.collect()
    b.wait(0.3)
    assert sub.take() == []  # the writer leaving delivers an invalid sample, which is dropped


@pytest.mark.parametrize("topic, expected", [("/joint_states", "rt/joint_states"),
                                             ("/ns/x/commands", "rt/ns/x/commands")])
def test_topic_names(topic, expected):
    from steer.robot.dds_transport import dds_topic_name

    assert dds_topic_name(topic) == expected


_CONFIG_PROBE = """
import json, os, stat, sys
from steer.robot.dds_transport import DdsTransport, use_loopback_config
uri = use_loopback_config()
path = uri.removeprefix("file://")
again = use_loopback_config()
transport = DdsTransport(int(sys.argv[1]))  # Cyclone reads the file and accepts it
print(json.dumps({"uri": uri, "again": again, "mode": stat.S_IMODE(os.stat(path).st_mode), "text": open(path).read()}))
"""


def test_loopback_config_is_a_private_temp_file_removed_at_exit(dds_env, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from steer.robot.transport import LOOPBACK_CONFIG

    # What another user could plant at the old fixed path: a symlink to a file of ours.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "steer-cyclonedds-loopback.xml").symlink_to(victim)
    base = {k: v for k, v in os.environ.items() if k not in ("CYCLONEDDS_URI", "STEER_LOOPBACK_CYCLONEDDS_URI")}
    base["TMPDIR"] = str(tmp_path)

    def probe(**env):
        out = subprocess.run([sys.executable, "-c", _CONFIG_PROBE, str(dds_env["domain"])], env=base | env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    first, second = probe(), probe()
    for r in (first, second):
        path = Path(r["uri"].removeprefix("file://"))
        assert path.parent == tmp_path and path.name.startswith("steer-cyclonedds-")
        assert r["mode"] == 0o600 and r["text"] == LOOPBACK_CONFIG and r["again"] == r["uri"]
        assert not path.exists(), "the config must be removed when its process exits"
    assert first["uri"] != second["uri"]
    assert victim.read_text() == "keep"
    # A process that inherited the URI of a config whose creator already exited makes its own ...
    gone = first["uri"]
    orphan = probe(CYCLONEDDS_URI=gone, STEER_LOOPBACK_CYCLONEDDS_URI=gone)
    assert orphan["uri"] != gone and orphan["mode"] == 0o600
    # ... and a config the user chose is used as it is.
    mine = tmp_path / "mine.xml"
    mine.write_text(LOOPBACK_CONFIG)
    assert probe(CYCLONEDDS_URI=f"file://{mine}")["uri"] == f"file://{mine}"
    assert mine.exists()
