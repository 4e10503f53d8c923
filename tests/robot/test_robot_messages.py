"""Wire format of the ROS 2 message types: CDR bytes must equal rosbags' encoder."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steer.robot import messages as m

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is the independent encoder")
TS = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)
IDL_BY_NAME = {name: cls for cls, name in m.ROS_NAMES.items()}
TOP_LEVEL = ["sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray", "geometry_msgs/msg/Twist",
             "trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Bool", "diagnostic_msgs/msg/DiagnosticStatus"]

_BASE = {
    "float64": st.floats(width=64, allow_nan=True, allow_infinity=True),
    "int32": st.integers(-2**31, 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "byte": st.integers(0, 127),  # rosbags packs `byte` as a signed char
    "uint8": st.integers(0, 255),
    "bool": st.booleans(),
    "string": st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
}


def _value(desc):
    """A hypothesis strategy of plain values (dicts, lists) for one rosbags field description."""
    kind, rest = desc[0].name, desc[1]
    if kind == "BASE":
        return _BASE[rest[0]]
    if kind == "NAME":
        return _message(rest)
    if kind == "SEQUENCE":
        return st.lists(_value(rest[0]), max_size=4).map(lambda v: ("seq", rest[0], v))
    raise AssertionError(f"unexpected field kind {kind}")


def _message(name):
    fields = TS.fielddefs[name][1]
    return st.fixed_dictionaries({f: _value(d) for f, d in fields}).map(lambda v: (name, v))


def _to_rosbags(value):
    if isinstance(value, tuple) and value[0] == "seq":
        _, elem, items = value
        if elem[0].name == "BASE" and elem[1][0] not in ("string",):
            return np.array(items, dtype={"float64": np.float64, "byte": np.uint8, "uint8": np.uint8,
                                          "int32": np.int32, "uint32": np.uint32, "bool": np.bool_}[elem[1][0]])
        return [_to_rosbags(i) for i in items]
    if isinstance(value, tuple):
        name, fields = value
        return TS.types[name](**{k: _to_rosbags(v) for k, v in fields.items()})
    return value


def _to_idl(value):
    if isinstance(value, tuple) and value[0] == "seq":
        return [_to_idl(i) for i in value[2]]
    if isinstance(value, tuple):
        name, fields = value
        return IDL_BY_NAME[name](**{k: _to_idl(v) for k, v in fields.items()})
    return value


def _same_cdr(ours: bytes, theirs: bytes) -> bool:
    # Cyclone may pad the end to 4 bytes (as rmw_cyclonedds does); the payload must match exactly.
    if ours == theirs:
        return True
    pad = len(ours) - len(theirs)
    return 0 < pad < 4 and ours[4:len(theirs)] == theirs[4:] and ours[len(theirs):] == b"\0" * pad


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_type_hash_matches_rosbags(name):
    cls = IDL_BY_NAME[name]
    assert m.type_hash(cls) == TS.hash_rihs01(name)
    assert cls.__idl_typename__.replace(".", "::") == name.replace("/msg/", "::msg::dds_::") + "_"


def test_every_hash_constant_is_recomputed():
    assert {k: TS.hash_rihs01(k) for k in m.TYPE_HASHES} == m.TYPE_HASHES


@pytest.mark.parametrize("name", TOP_LEVEL)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_cdr_bytes_equal_rosbags(name, data):
    value = data.draw(_message(name))
    ours = m.serialize(_to_idl(value))
    theirs = bytes(TS.serialize_cdr(_to_rosbags(value), name))
    assert _same_cdr(ours, theirs), (ours.hex(), theirs.hex())
    # And both decoders read the other's bytes back to the same message.
    assert m.serialize(m.deserialize(IDL_BY_NAME[name], theirs)) == ours
    back = TS.deserialize_cdr(ours, name)
    assert bytes(TS.serialize_cdr(back, name)) == theirs


def test_known_joint_state_bytes():
    # Hand-checked layout: stamp, frame id, 2 names, 2 positions (offset 40, 8-aligned),
    # empty velocity, 1 effort.
    msg = m.JointState(header=m.Header(stamp=m.Time(3, 5), frame_id="ab"), name=["a", "bc"],
                       position=[1.0, 2.0], velocity=[], effort=[3.0])
    assert m.serialize(msg).hex() == (
        "00010000" "03000000" "05000000" "03000000" "61620000" "02000000" "02000000" "61000000"
        "03000000" "62630000" "02000000" "000000000000f03f" "0000000000000040"
        "00000000" "01000000" "0000000000000840")
