"""The policy node on an in-memory transport: observation by name, shield on every command, watchdog, e-stop.

Every node here runs on a fake clock: time passes only when a test advances it or the node waits
with nothing to read, so watchdog and timer figures are exact and nothing sleeps.
"""

import numpy as np
import pytest

from robot_helpers import FakeClock, MemoryTransport, arm, signed, trusting
from steer.robot import messages as m
from steer.robot.config import load_robot_config
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.policy_node import PolicyNode

ROBOT = load_robot_config()
CMD = "/pusher_velocity_controller/commands"


def _node(policy_factory, config=ROBOT, trigger="observation", bag=None, armed=True, **kwargs):
    """A node on the fake clock whose config trusts the test operator key; ``armed``: a signed arm is queued."""
    clock = FakeClock()
    transport = MemoryTransport(clock)
    config = trusting(config)
    node = PolicyNode(config, OnnxPolicy(policy_factory(**kwargs), robot=config), transport, bag=bag,
                      trigger=trigger, clock=clock)
    if armed:
        arm(transport, node)
    return node, transport, clock


def _observe(transport, goal=(0.2, 0.1), names=("puck_y", "pusher_x", "puck_x", "pusher_y")):
    values = {"pusher_x": (0.01, 0.1), "pusher_y": (0.02, 0.2), "puck_x": (0.03, 0.3), "puck_y": (0.04, 0.4)}
    transport.publisher("/goal", m.Float64MultiArray).publish(m.Float64MultiArray(data=list(goal)))
    transport.publisher("/joint_states", m.JointState).publish(m.JointState(
        name=list(names), position=[values[n][0] for n in names], velocity=[values[n][1] for n in names]))


def test_observation_is_built_by_name(policy_factory):
    gain = np.zeros((2, 10))
    gain[0, 6] = 1.0  # puck_x.vel
    gain[1, 9] = 1.0  # goal.y
    node, transport, _ = _node(policy_factory, gain=gain)
    _observe(transport)
    node.spin_once()
    assert np.allclose(node.assembler.vector(), [0.01, 0.02, 0.03, 0.04, 0.1, 0.2, 0.3, 0.4, 0.2, 0.1])
    assert np.allclose(transport.sent[CMD][-1].data, [0.3, 0.1])
    status = transport.sent["/safety_state"][-1]
    assert dict((kv.key, kv.value) for kv in status.values)["mode"] == "running"


def test_policy_output_never_bypasses_the_shield(policy_factory):
    node, transport, _ = _node(policy_factory, bias=[np.nan, 0.0])
    _observe(transport)
    node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0]
    assert node.shield.counters.non_finite == 1
    node2, transport2, _ = _node(policy_factory, bias=[5.0, -5.0], bound=1e6)
    _observe(transport2)
    node2.spin_once()
    assert transport2.sent[CMD][-1].data == [0.3, -0.3]


def test_watchdog_holds_a_silent_robot(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _observe(transport)
    node.spin_once()
    assert np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1])
    assert node.safety_message().level == m.DIAG_OK
    spins = 0
    while transport.sent[CMD][-1].data != [0.0, 0.0] and spins < 100:
        node.spin_once()
        spins += 1
    waited = (clock.monotonic_ns() - node.assembler.joint_time_ns) / 1e9
    # Watchdog 75 ms, checked every quarter period (12.5 ms): the first check past 75 ms, at 87.5 ms, holds.
    assert spins == 7 and waited == pytest.approx(0.0875)
    assert node.safety_message().level == m.DIAG_ERROR and node.safety_state().watchdog_tripped


def test_estop_latches_until_reset(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _observe(transport)
    node.spin_once()
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0] and node.shield.mode.value == "estopped"
    transport.publisher("/estop", m.Bool).publish(m.Bool(False))
    _observe(transport)
    node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0] and node.shield.mode.value == "estopped"
    # A signed release clears the latch but does not move the robot: that takes a signed arm too.
    command = transport.publisher("/operator_command", m.DiagnosticStatus)
    command.publish(signed("release", node.policy_sha256, clock))
    clock.advance(0.05)
    _observe(transport)
    node.spin_once()
    assert node.shield.mode.value == "idle" and not node.safety_state().armed
    clock.advance(0.05)
    _observe(transport)
    node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0]
    command.publish(signed("arm", node.policy_sha256, clock))
    clock.advance(0.05)
    _observe(transport)
    node.spin_once()
    assert np.allclose(transport.sent[CMD][-1].data, [0.1, 0.1]) and node.shield.mode.value == "running"
    assert node.safety_state().armed and node.stats.operator_refusals == 0


def test_release_is_refused_while_the_button_is_pressed(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    transport.publisher("/operator_command", m.DiagnosticStatus).publish(signed("release", node.policy_sha256, clock))
    _observe(transport)
    node.spin_once()
    assert node.shield.mode.value == "estopped"
    assert node.safety_state().last_refusal == ("release refused: the e-stop still reads pressed; release the "
                                                "button first.")


def test_new_episode_restarts_the_chunk(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1], chunk_len=4)
    status = transport.publisher("/episode", m.DiagnosticStatus)
    for episode in ("0", "0", "1"):
        for _ in range(2):
            status.publish(m.DiagnosticStatus(values=[m.KeyValue("episode", episode)]))
            _observe(transport)
            node.spin_once()
            clock.advance(0.045)
    # Episode 0: 4 ticks = one chunk; episode 1 starts a new chunk at its first tick.
    assert node.executor.queries == 2 and node.stats.queries == 2


def test_config_overrides_and_bad_yaml(tmp_path):
    from steer.robot.config import RobotConfig
    from steer.robot.errors import RobotError

    c = ROBOT.replace(namespace="arm1", control_rate_hz=None)
    assert c.command_topic == "/arm1/pusher_velocity_controller/commands" and c.control_rate_hz == 20.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspeed_limit: 3\n")
    with pytest.raises(RobotError, match="unknown robot config keys"):
        RobotConfig.from_yaml(bad)
    with pytest.raises(RobotError, match="does not exist"):
        RobotConfig.from_yaml(tmp_path / "none.yaml")


def test_timer_trigger_ticks_at_the_control_rate(policy_factory):
    node, transport, clock = _node(policy_factory, trigger="timer", bias=[0.1, 0.0])
    start = clock.monotonic_ns()
    while clock.monotonic_ns() - start < 500_000_000:
        _observe(transport)  # observations every 5 ms, ten per period, do not make extra ticks
        node.spin_once()
        clock.advance(0.005)
    ticks = np.diff(np.array(node.stats.tick_times_ns)) / 1e6
    assert len(node.stats.tick_times_ns) == 10 and np.all(ticks == 50.0)
    assert node.stats.queries == 3  # 10 ticks of chunk 4


def test_robot_without_episode_topic_gets_one_bag(policy_factory, tmp_path):
    from rosbags.highlevel import AnyReader

    from steer.robot.bag import EpisodeBagWriter

    bag = EpisodeBagWriter(tmp_path / "bags")
    node, transport, clock = _node(policy_factory, config=ROBOT.replace(episode_topic=""), bag=bag, bias=[0.1, 0.0])
    for _ in range(3):
        _observe(transport)
        node.spin_once()
        clock.advance(0.05)
    transport.publisher("/estop", m.Bool).publish(m.Bool(True))
    node.spin_once()
    assert bag.close() == [tmp_path / "bags" / "episode_0000"]
    with AnyReader([tmp_path / "bags" / "episode_0000"]) as reader:
        counts = {}
        modes = []
        for conn, _, raw in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if conn.topic == "/safety_state":
                modes.append(dict((kv.key, kv.value) for kv in reader.deserialize(raw, conn.msgtype).values)["mode"])
    assert counts["/joint_states"] == 3 and counts["/goal"] == 3 and counts[CMD] == 4
    assert modes == ["armed", "running", "estopped"]


def test_nan_in_an_observation_gives_the_safe_command(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _observe(transport)
    node.spin_once()
    clock.advance(0.03)
    _observe(transport, goal=(float("nan"), 0.1))
    node.spin_once()
    assert transport.sent[CMD][-1].data == [0.0, 0.0]
    assert node.shield.counters.non_finite == 1 and node.stats.queries == 1


@pytest.mark.parametrize("message", ["Twist", "JointTrajectory"])
def test_other_command_messages(policy_factory, message):
    config = ROBOT.replace(command_message=message, twist_fields=("linear.x", "angular.z") if message == "Twist"
                           else ())
    node, transport, clock = _node(policy_factory, config=config, bias=[0.1, -0.2])
    _observe(transport)
    node.spin_once()
    if message == "Twist":
        (sent,) = transport.sent["/cmd_vel"]
        assert np.allclose([sent.linear.x, sent.angular.z], [0.1, -0.2]) and sent.linear.y == 0.0
    else:
        (sent,) = transport.sent["/pusher_velocity_controller/joint_trajectory"]
        assert sent.joint_names == ["pusher_x", "pusher_y"] and len(sent.points) == 1
        point = sent.points[0]
        assert np.allclose(point.velocities, [0.1, -0.2]) and point.positions == []
        assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 50_000_000)
        stamp = sent.header.stamp  # the node's wall clock
        assert stamp.sec * 1_000_000_000 + stamp.nanosec == clock.time_ns()


def test_twist_needs_a_field_per_joint():
    from steer.robot.errors import RobotError

    with pytest.raises(RobotError, match="twist_fields"):
        ROBOT.replace(command_message="Twist", twist_fields=("linear.x",))


def test_a_joint_state_right_after_a_watchdog_tick_still_gets_its_command(policy_factory):
    node, transport, clock = _node(policy_factory, bias=[0.1, 0.1])
    _observe(transport)
    node.spin_once()
    while transport.sent[CMD][-1].data != [0.0, 0.0]:  # the robot is silent: the watchdog holds
        node.spin_once()
    clock.advance(0.005)
    _observe(transport)  # a late joint state, 5 ms after the watchdog tick
    node.spin_once()
    # It ticks and queries; the command leaves the hold at the rate limit (12/s for 5 ms).
    assert np.allclose(transport.sent[CMD][-1].data, [0.06, 0.06]) and node.stats.queries == 2


def test_a_deadline_already_passed_is_a_wait_of_zero_not_a_negative_one(policy_factory):
    """A caller that computes ``period - elapsed`` can pass a negative timeout; a transport must never see it
    (rclpy's spin_once blocks forever on a negative timeout, time.sleep raises)."""
    node, transport, clock = _node(policy_factory)
    seen = []
    inner = transport.wait
    transport.wait = lambda timeout_s: (seen.append(timeout_s), inner(timeout_s))[1]
    node.spin_once(-3e-7)
    node.spin_once(-1.0)
    node.spin_once(0.001)
    assert seen[:2] == [0.0, 0.0] and seen[2] == pytest.approx(0.001)
