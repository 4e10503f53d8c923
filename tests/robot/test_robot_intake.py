"""The policy node's observation intake against hostile input, on a fake clock: per-joint freshness,
header stamps, size bounds, malformed fields, tick rate and rate limits under bursts, and bags that
cannot be written."""

import errno
import os

import numpy as np
import pytest

from robot_helpers import FakeClock, MemoryTransport, arm, trusting
from steer.robot import messages as m
from steer.robot.config import load_robot_config
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.intake import MAX_SEQUENCE
from steer.robot.policy_node import PolicyNode

ROBOT = load_robot_config()
CMD = "/pusher_velocity_controller/commands"
JOINTS = ("pusher_x", "pusher_y", "puck_x", "puck_y")


def _node(policy_factory, bag=None, **kwargs):
    """A node on the fake clock, with the test operator's signed arm queued (a node starts unarmed)."""
    clock = FakeClock()
    transport = MemoryTransport(clock)
    config = trusting(ROBOT)
    node = PolicyNode(config, OnnxPolicy(policy_factory(**kwargs), robot=config), transport, bag=bag, clock=clock)
    arm(transport, node)
    return node, transport, clock


def _joints(transport, names=JOINTS, value=0.01, stamp=None, **fields):
    n = len(names)
    state = m.JointState(name=list(names), position=[value] * n, velocity=[0.0] * n)
    if stamp is not None:
        state.header.stamp = m.stamp_of(stamp)
    for k, v in fields.items():
        setattr(state, k, v)
    transport.publisher("/joint_states", m.JointState).publish(state)


def _goal(transport, data=(0.2, 0.1)):
    transport.publisher("/goal", m.Float64MultiArray).publish(m.Float64MultiArray(data=list(data)))


def test_joint_states_for_other_joints_do_not_refresh_the_watchdog(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _goal(transport)
    _joints(transport)
    node.spin_once()
    assert np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1])
    for _ in range(20):  # 200 ms of fresh puck_x only: the other three observed joints go stale
        clock.advance(0.01)
        _joints(transport, names=("puck_x",))
        node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0] and node.safety_state().watchdog_tripped
    assert (clock.monotonic_ns() - node.assembler.joint_time_ns) / 1e9 == pytest.approx(0.2)


def test_header_stamps_in_the_future_are_refused_and_old_ones_are_stale(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _goal(transport)
    _joints(transport, stamp=clock.time_ns())
    node.spin_once()
    assert np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1])
    clock.advance(0.05)
    _joints(transport, value=0.3, stamp=clock.time_ns() + 10**9)  # a second ahead of this node's clock
    node.spin_once()
    assert node.safety_state().rejected_messages == 1 and node.assembler.joint_values(JOINTS, 0)[0] == 0.01
    for _ in range(8):  # stamped 200 ms before they arrive: too old to act on, however often they come
        clock.advance(0.0125)
        _joints(transport, stamp=clock.time_ns() - 200_000_000)
        node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0] and node.safety_state().watchdog_tripped


def test_oversize_and_malformed_messages_are_dropped_and_counted(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _goal(transport)
    _joints(transport)
    node.spin_once()
    _joints(transport, names=[f"x{i}" for i in range(MAX_SEQUENCE + 1)], value=5.0)  # too many names
    _joints(transport, names=JOINTS, position=[1.0] * 3)  # one position short
    _joints(transport, names=JOINTS, velocity=[0.0] * 200_000)  # far too long
    _joints(transport, names=["pusher_x" + "x" * 5000])  # a name over the text bound
    _goal(transport, data=[0.0] * 200_000)
    transport.publisher("/episode", m.DiagnosticStatus).publish(
        m.DiagnosticStatus(values=[m.KeyValue("episode", "abc")]))
    clock.advance(0.05)
    node.spin_once()
    assert node.safety_state().rejected_messages == 6
    assert np.array_equal(node.assembler.joint_values(JOINTS, 0), [0.01] * 4)
    assert np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1])  # still commanding on the robot's values


def test_memory_keeps_only_configured_joints(policy_factory):
    node, transport, clock = _node(policy_factory)
    for k in range(40):  # 20k unique unknown names, within the per-message bound
        _joints(transport, names=[f"j{k}_{i}" for i in range(500)] + ["puck_x"])
        node.spin_once()
        clock.advance(0.001)
    assert set(node.assembler._joint) == {"puck_x"} and set(node.assembler._joint_ns) == {"puck_x"}


def test_a_burst_of_joint_states_neither_speeds_ticks_up_nor_steepens_commands(policy_factory):
    gain = np.zeros((2, 10))
    gain[0, 2] = gain[1, 3] = 1.0  # command = puck position: the burst alternates it between ±1
    node, transport, clock = _node(policy_factory, gain=gain, chunk_len=1)
    _goal(transport)
    start = clock.monotonic_ns()
    sign = 1.0
    while clock.monotonic_ns() - start < 1_000_000_000:  # 10 kHz for one second
        _joints(transport, position=[0.0, 0.0, sign, sign])  # pusher in the middle, puck jumping
        sign = -sign
        node.spin_once()
        clock.advance(0.0001)
    ticks = np.array(node.stats.tick_times_ns)
    assert 19 <= len(ticks) <= 22  # the control rate (20 Hz), not the traffic's
    sent = np.array([c.data for c in transport.sent[CMD]])
    times = ticks[-len(sent):] / 1e9
    slope = np.abs(np.diff(sent, axis=0)) / np.diff(times)[:, None]
    assert slope.max() <= 12.0 / 0.95 + 1e-9 and slope.max() > 6.0  # bound, and binding


def test_a_node_that_cannot_write_its_bag_says_so_and_keeps_commanding(policy_factory, tmp_path, capfd):
    from steer.robot.bag import EpisodeBagWriter

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    # Root ignores directory permissions: there, a path under a regular file fails the same way.
    target = readonly / "bags" if not os.access(readonly, os.W_OK) else (tmp_path / "file").resolve() / "bags"
    (tmp_path / "file").write_text("")
    bag = EpisodeBagWriter(target)
    node, transport, clock = _node(policy_factory, bag=bag, bias=[0.1, 0.1])
    for episode in ("1", "2"):
        transport.publisher("/episode", m.DiagnosticStatus).publish(
            m.DiagnosticStatus(values=[m.KeyValue("episode", episode)]))
        for _ in range(5):
            _goal(transport)
            _joints(transport)
            node.spin_once()
            clock.advance(0.05)
    assert bag.flush()
    _joints(transport)
    node.spin_once()
    state = node.safety_state()
    assert state.bag_error.startswith("cannot write bags to") and state.bag_dropped > 0
    assert state.mode == "running" and np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1])
    assert bag.close() == []
    assert "cannot write bags to" in capfd.readouterr().err


class _FullDisk:
    """A bag writer whose writes fail as on a full disk, after the bag was opened."""

    def __init__(self, path):
        self.path = path

    def open(self):
        self.path.mkdir(parents=True)

    def add_connection(self, topic, msgtype, typestore=None):
        return topic

    def write(self, connection, time_ns, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        pass


def test_a_full_disk_is_reported_and_the_next_episode_tries_again(tmp_path, capfd):
    from steer.robot.bag import EpisodeBagWriter

    writers = [_FullDisk, None]  # the first episode's disk is full, the second's has room again

    def open_writer(path):
        from steer.robot.bag import _rosbags_writer

        kind = writers.pop(0)
        return kind(path) if kind else _rosbags_writer(path)

    bag = EpisodeBagWriter(tmp_path / "bags", open_writer=open_writer)
    bag.start_episode(0)
    for i in range(3):
        bag.record("/goal", m.Float64MultiArray(data=[float(i)]), 1_000 + i)
    assert bag.flush()
    assert "No space left on device" in bag.error and bag.dropped == 3
    bag.start_episode(1)
    bag.record("/goal", m.Float64MultiArray(data=[1.0]), 2_000)
    assert bag.close() == [tmp_path / "bags" / "episode_0001"] and bag.error == ""
    assert capfd.readouterr().err.count("No space left on device") == 1


def test_dds_drops_oversize_samples_before_decoding_them(dds_env):
    import time

    from steer.robot.dds_transport import MAX_SAMPLE_BYTES, DdsTransport

    transport = DdsTransport(dds_env["domain"])
    try:
        sub = transport.subscription("/intake_test", m.Float64MultiArray)
        pub = transport.publisher("/intake_test", m.Float64MultiArray)
        big = MAX_SAMPLE_BYTES // 8 + 1  # one float64 over the bound
        for data in ([1.0, 2.0], [0.0] * big, [3.0]):
            pub.publish(m.Float64MultiArray(data=data))
        got, deadline = [], time.monotonic() + 5
        while (len(got) < 2 or sub.oversize < 1) and time.monotonic() < deadline:
            transport.wait(0.05)
            got += [s.data for s, _ in sub.take()]
        assert got == [[1.0, 2.0], [3.0]] and sub.oversize == 1
    finally:
        transport.close()


def test_a_joint_state_before_its_tick_is_acted_on_when_the_tick_is_due(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _goal(transport)
    _joints(transport)
    node.spin_once()
    clock.advance(0.005)
    _joints(transport)  # 5 ms later: the next tick is due 12.5 ms after the first
    node.spin_once()
    assert len(node.stats.tick_times_ns) == 1
    for _ in range(3):
        node.spin_once()  # nothing new arrives: the waiting joint state still gets its tick
    ticks = np.diff(node.stats.tick_times_ns) / 1e6
    assert len(ticks) == 1 and ticks[0] == pytest.approx(12.5)
    assert node.stats.latencies_ns[-1] == pytest.approx(7.5e6)  # it waited 7.5 ms for its tick
