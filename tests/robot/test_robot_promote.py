"""Policy promotion: a signed promote names a file in the robot's policies directory; the node loads it off
its control thread and swaps it in at a chunk boundary; a file that fails the runtime's checks, or whose
bytes are not the signed ones, is refused and the old policy keeps commanding. Unit tests on the in-memory
transport, one over rclpy stand-ins, one across processes."""

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from robot_helpers import PUSH_ACTIONS, PUSH_OBS, MemoryTransport, arm_over_dds, make_policy, signed, trusting
from steer.robot import messages as m
from steer.robot.config import load_robot_config
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.policy_node import PolicyNode
from steer.robot.promotion import file_sha256
from steer.robot.promotion import NOT_AVAILABLE
from steer.robot.spec import SafetyState

ROBOT = trusting(load_robot_config())
CMD = "/pusher_velocity_controller/commands"
PERIOD = ROBOT.control_period_s
OLD, NEW = [0.1, 0.0], [0.0, 0.1]


def make_wide_policy(path, bias, hidden=150_000, chunk_len=4):
    """A PlanarPush policy with a wide hidden layer (a few MB, so loading it takes a while) whose output
    is ``bias`` (the second layer is zero), repeated over the chunk."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.01 * rng.standard_normal((len(PUSH_OBS), hidden))).astype(np.float32), "W1"),
             numpy_helper.from_array(np.zeros((hidden, len(PUSH_ACTIONS)), np.float32), "W2"),
             numpy_helper.from_array(np.asarray(bias, np.float32), "b"),
             numpy_helper.from_array(np.array([1, chunk_len, 1], np.int64), "reps"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("MatMul", ["obs", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"]), helper.make_node("Add", ["y", "b"], ["a"]),
             helper.make_node("Unsqueeze", ["a", "axis1"], ["a3"]),
             helper.make_node("Tile", ["a3", "reps"], ["action"])]
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", len(PUSH_OBS)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", chunk_len, len(PUSH_ACTIONS)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = {"format": "steer.policy/1", "kind": "dsrl", "task": "steer/PlanarPush-v0", "obs_names": list(PUSH_OBS),
            "action_names": list(PUSH_ACTIONS), "obs_dim": len(PUSH_OBS), "action_dim": len(PUSH_ACTIONS),
            "chunk_len": chunk_len, "noise_input": False, "control_rate_hz": ROBOT.control_rate_hz,
            "action_low": [-0.3, -0.3], "action_high": [0.3, 0.3], "source_run": "tests"}
    from steer.robot.spec import graph_sha256

    spec["weights_sha256"] = graph_sha256(model.SerializeToString())
    helper.set_model_props(model, {"steer.spec": json.dumps(spec)})
    onnx.save(model, str(path))
    return Path(path)


def promotion(path, sha256=None, **kwargs):
    """The signed promote an operator publishes: the file's name in the policies directory and its sha256."""
    path = Path(path)
    return signed("promote", sha256 or file_sha256(path), args={"policy": path.name}, **kwargs)


def same(command, expected):
    return bool(np.allclose(command, expected, atol=1e-6))


def safety_values(status):
    return vars(SafetyState.from_message(status))


class Drive:
    """The node on the in-memory transport, fed one observation a period like the simulated robot.

    Records, per tick: the command, the tick's duration and whether a finished load was waiting.
    """

    def __init__(self, policy_path, bag=None):
        self.transport = MemoryTransport()
        robot = ROBOT.replace(policies_dir=str(Path(policy_path).parent))
        self.node = PolicyNode(robot, OnnxPolicy(policy_path, robot=robot), self.transport, bag=bag)
        self.durations_ns, self.ready_at_start, self.commands = [], [], []
        self.sent_at = []
        self._goal = self.transport.publisher("/goal", m.Float64MultiArray)
        self._joints = self.transport.publisher("/joint_states", m.JointState)
        self._promote = self.transport.publisher("/operator_command", m.DiagnosticStatus)
        self._promote.publish(signed("arm", self.node.policy_sha256))
        tick = self.node.tick

        def timed_tick(recv_ns):
            self.ready_at_start.append(self.node.loader.ready())
            start = time.perf_counter_ns()
            out = tick(recv_ns)
            self.durations_ns.append(time.perf_counter_ns() - start)
            self.commands.append(list(self.transport.sent[CMD][-1].data))
            return out

        self.node.tick = timed_tick

    def promote(self, message):
        self._promote.publish(message)

    def step(self):
        """One period: an observation, the node's tick for it, then wait for the next period."""
        start = time.monotonic()
        before = len(self.commands)
        self._goal.publish(m.Float64MultiArray(data=[0.2, 0.1]))
        self._joints.publish(m.JointState(name=["pusher_x", "pusher_y", "puck_x", "puck_y"],
                                          position=[0.01, 0.02, 0.03, 0.04], velocity=[0.0] * 4))
        self.sent_at.append(time.monotonic_ns())
        while len(self.commands) == before and time.monotonic() - start < 5 * PERIOD:
            self.node.spin_once()
        assert len(self.commands) == before + 1, "the node did not tick on the observation"
        while time.monotonic() - start < PERIOD:
            self.node.spin_once(PERIOD - (time.monotonic() - start))

    def safety(self):
        return safety_values(self.transport.sent["/safety_state"][-1])

    def close(self):
        self.node.loader.close()


def test_promoted_policy_takes_over_at_the_next_chunk_boundary_without_a_late_tick(tmp_path):
    old = make_policy(tmp_path / "old.onnx", bias=OLD)
    new = make_wide_policy(tmp_path / "new.onnx", bias=NEW)
    drive = Drive(old)
    try:
        for _ in range(5):  # ticks 0-3 are the first chunk, tick 4 starts the second
            drive.step()
        assert all(same(c, OLD) for c in drive.commands) and drive.node.stats.queries == 2
        promoted_at = len(drive.commands)
        drive.promote(promotion(new))
        for _ in range(40):
            drive.step()
            if sum(same(c, NEW) for c in drive.commands) >= 6:
                break
    finally:
        drive.close()
    switched = next(i for i, c in enumerate(drive.commands) if not same(c, OLD))
    # The load had finished at the start of tick `ready` (a load that finishes inside the switching
    # tick's first microseconds is seen by that tick alone); the chunk in progress ran to its end first.
    ready = next((i for i, r in enumerate(drive.ready_at_start) if r), switched)
    assert switched == ready + (-ready) % 4, (switched, ready)
    assert switched % 4 == 0 and switched > promoted_at
    assert all(same(c, OLD) for c in drive.commands[:switched])
    assert len(drive.commands) - switched >= 6 and all(same(c, NEW) for c in drive.commands[switched:])
    # The node never waited for the load: every observation got its command within the period.
    worst_tick = max(drive.durations_ns) / 1e6
    worst_latency = max(drive.node.stats.latencies_ns) / 1e6
    switch_tick = drive.durations_ns[switched] / 1e6
    print(f"promotion: loaded after {ready - promoted_at} ticks, switched at tick {switched}; "
          f"switch tick {switch_tick:.2f} ms, worst tick {worst_tick:.2f} ms, "
          f"worst observation->command {worst_latency:.2f} ms (period {PERIOD * 1e3:.0f} ms)")
    assert worst_tick < PERIOD * 1e3 and worst_latency < PERIOD * 1e3
    assert drive.node.stats.promotions == 1 and drive.node.stats.refusals == 0
    state = drive.safety()
    assert state["policy"] == str(new.resolve()) and state["policy_sha256"] == file_sha256(new)
    assert state["promote_error"] == "" and state["mode"] == "running"
    assert drive.node.policy.path == new.resolve() and drive.node.loader.pending is None


def test_a_policy_for_other_joints_is_refused_and_the_old_one_keeps_commanding(tmp_path):
    old = make_policy(tmp_path / "old.onnx", bias=OLD, chunk_len=16)
    from steer.robot.bag import EpisodeBagWriter

    wrong = make_policy(tmp_path / "wrong.onnx", bias=NEW, action_names=("pusher_x", "puck_x"))
    bag = EpisodeBagWriter(tmp_path / "bags")
    bag.start_episode(0)  # as an episode message from the robot would
    drive = Drive(old, bag=bag)
    try:
        drive.step()
        drive.promote(promotion(wrong))
        reported = None
        for i in range(12):
            drive.step()
            if reported is None and drive.safety()["promote_error"]:
                reported = i + 1
        # A refusal changes nothing that runs: it is reported without waiting for the chunk (16 ticks) to end.
        assert reported is not None and reported < 8, reported
        # The refusal is in the bag too, with the policy that kept running.
        from rosbags.highlevel import AnyReader

        (written,) = bag.close()
        with AnyReader([written]) as reader:
            recorded = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                        if c.topic == "/safety_state"]
        assert any(safety_values(s)["promote_error"] and safety_values(s)["policy"] == str(old.resolve())
                   for s in recorded)
    finally:
        drive.close()
    assert len(drive.commands) == 13 and all(same(c, OLD) for c in drive.commands)
    state = drive.safety()
    assert "commands ['pusher_x', 'puck_x']" in state["promote_error"] and "wrong.onnx" in state["promote_error"]
    assert state["policy"] == str(old.resolve()) and state["policy_sha256"] == file_sha256(old)
    assert drive.node.stats.refusals == 1 and drive.node.stats.promotions == 0


def test_a_file_that_changed_since_it_was_checked_is_refused(tmp_path):
    old = make_policy(tmp_path / "old.onnx", bias=OLD)
    checked = make_policy(tmp_path / "new.onnx", bias=NEW)
    sha_checked = file_sha256(checked)
    make_policy(checked, bias=[0.3, 0.3])  # rewritten after the operator checked it
    drive = Drive(old)
    try:
        drive.step()
        drive.promote(promotion(checked, sha256=sha_checked))
        for _ in range(8):
            drive.step()
        error = drive.safety()["promote_error"]
        # The old unsigned form (absolute path and hash) and a signed promote without a file name are
        # refused at once, before anything is read.
        drive.promote(m.DiagnosticStatus(values=[m.KeyValue("policy", str(checked)), m.KeyValue("sha256", "ab")]))
        drive.step()
        unsigned = drive.node.safety_state().last_refusal
        drive.promote(signed("promote", sha_checked))
        drive.step()
        nameless = drive.node.safety_state().last_refusal
    finally:
        drive.close()
    assert len(drive.commands) == 11 and all(same(c, OLD) for c in drive.commands)
    # What differs is not said, nor any digit of either hash.
    assert error == NOT_AVAILABLE and sha_checked[:6] not in error and file_sha256(checked)[:6] not in error
    assert unsigned == "malformed operator command: it needs command, timestamp, nonce and signature."
    assert nameless == "promote refused: the command names no policy (args.policy)."
    assert drive.node.stats.refusals == 1 and drive.node.stats.operator_refusals == 2
    assert drive.safety()["policy"] == str(old.resolve())


def test_a_promotion_while_estopped_is_taken_at_once_and_a_repeat_is_ignored(tmp_path):
    old = make_policy(tmp_path / "old.onnx", bias=OLD)
    new = make_policy(tmp_path / "new.onnx", bias=NEW)
    drive = Drive(old)
    node = drive.node
    try:
        drive.step()
        drive.transport.publisher("/estop", m.Bool).publish(m.Bool(True))
        drive.step()
        assert node.shield.mode.value == "estopped"
        drive.promote(promotion(new))
        end = time.monotonic() + 10
        while node.stats.promotions == 0 and time.monotonic() < end:
            node.spin_once()  # no ticks are due while e-stopped and observed: the swap happens anyway
        assert drive.safety()["policy"] == str(new.resolve())
        drive.promote(promotion(new))  # the same bytes again: nothing to load
        node.spin_once()
        assert node.loader.pending is None and node.stats.promotions == 1
    finally:
        drive.close()


def test_the_newest_promotion_wins_even_when_it_names_the_running_policy(tmp_path):
    old = make_policy(tmp_path / "old.onnx", bias=OLD)
    new = make_wide_policy(tmp_path / "new.onnx", bias=NEW)
    other = make_policy(tmp_path / "other.onnx", bias=[-0.1, 0.0])
    drive = Drive(old)
    try:
        drive.step()
        drive.promote(promotion(new))
        drive.promote(promotion(old))  # the operator changed their mind before the load finished
        for _ in range(8):
            drive.step()
        assert all(same(c, OLD) for c in drive.commands) and len(drive.commands) == 9
        assert drive.node.loader.pending is None and drive.node.stats.promotions == 0
        drive.promote(promotion(new))
        drive.promote(promotion(other))
        for _ in range(12):
            drive.step()
    finally:
        drive.close()
    assert drive.node.stats.promotions == 1 and drive.node.policy.path == other.resolve()
    assert not any(same(c, NEW) for c in drive.commands) and same(drive.commands[-1], [-0.1, 0.0])


def _stub_rclpy(monkeypatch):
    """Just enough of rclpy (and of the generated message packages) to build the rclpy transport here."""
    created = []

    class Node:
        def __init__(self):
            self.subscriptions, self.publishers = {}, {}

        def create_subscription(self, cls, topic, callback, qos):
            self.subscriptions[topic] = (cls, callback, qos)

        def create_publisher(self, cls, topic, qos):
            pub = types.SimpleNamespace(sent=[], get_subscription_count=lambda: 0)
            pub.publish = pub.sent.append
            self.publishers[topic] = pub
            return pub

        def count_publishers(self, topic):
            return 0

        def destroy_node(self):
            pass

    def create_node(name, context=None):
        created.append(Node())
        return created[-1]

    class Executor:
        def __init__(self, context=None):
            pass

        def add_node(self, node):
            pass

        def spin_once(self, timeout_sec=None):
            time.sleep(min(timeout_sec or 0.0, 0.001))

        def shutdown(self):
            pass

    enum = types.SimpleNamespace
    qos = types.ModuleType("rclpy.qos")
    qos.QoSProfile = lambda **kw: types.SimpleNamespace(**kw)
    qos.ReliabilityPolicy = enum(RELIABLE="reliable")
    qos.DurabilityPolicy = enum(VOLATILE="volatile", TRANSIENT_LOCAL="transient_local")
    qos.HistoryPolicy = enum(KEEP_LAST="keep_last")
    executors = types.ModuleType("rclpy.executors")
    executors.SingleThreadedExecutor = Executor
    signals = types.ModuleType("rclpy.signals")
    signals.SignalHandlerOptions = enum(NO="no")
    rclpy = types.ModuleType("rclpy")
    rclpy.context = types.SimpleNamespace(Context=object)
    rclpy.init = lambda **kw: None
    rclpy.shutdown = lambda **kw: None
    rclpy.create_node = create_node
    for name, mod in {"rclpy": rclpy, "rclpy.qos": qos, "rclpy.executors": executors,
                      "rclpy.signals": signals}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    for package in {name.split("/")[0] for name in m.ROS_NAMES.values()}:
        msg_module = types.ModuleType(f"{package}.msg")
        msg_module.__getattr__ = lambda name: types.SimpleNamespace  # every message: a plain namespace
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
        monkeypatch.setitem(sys.modules, f"{package}.msg", msg_module)
    return created


def test_the_rclpy_transport_carries_the_volatile_signed_promotion(monkeypatch, tmp_path):
    from steer.robot.rclpy_transport import RclpyTransport, to_ros

    created = _stub_rclpy(monkeypatch)
    old = make_policy(tmp_path / "old.onnx", bias=OLD)
    new = make_policy(tmp_path / "new.onnx", bias=NEW)
    robot = ROBOT.replace(policies_dir=str(tmp_path))
    node = PolicyNode(robot, OnnxPolicy(old, robot=robot), RclpyTransport())
    try:
        (ros_node,) = created
        _, callback, qos = ros_node.subscriptions["/operator_command"]
        # Volatile: a restarted node never gets an old command again.
        assert (qos.durability, qos.reliability) == ("volatile", "reliable")
        callback(to_ros(promotion(new), resolve=lambda name: types.SimpleNamespace))
        end = time.monotonic() + 10
        while node.stats.promotions == 0 and time.monotonic() < end:
            node.spin_once()
        assert node.policy.path == new.resolve()
        published = ros_node.publishers["/safety_state"].sent[-1]
        assert {kv.key: kv.value for kv in published.values}["policy"] == str(new.resolve())
    finally:
        node.loader.close()


@pytest.mark.slow
def test_a_promotion_over_dds_is_reported_active_by_the_node(robot_processes, dds_env, tmp_path):
    from steer.robot.dds_transport import DdsTransport

    old = make_policy(tmp_path / "old.onnx", bias=[0.04, 0.0])
    new = make_wide_policy(tmp_path / "new.onnx", bias=[0.0, 0.04])
    transport = DdsTransport(dds_env["domain"])
    commands = transport.subscription(CMD, m.Float64MultiArray)
    safety = transport.subscription("/safety_state", m.DiagnosticStatus)
    promote = transport.publisher("/operator_command", m.DiagnosticStatus)
    log = {"cmd": [], "safety": []}

    def pump(seconds, until=lambda: False):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            transport.wait(0.005)
            log["cmd"].extend((recv, list(c.data)) for c, recv in commands.take())
            log["safety"].extend((recv, safety_values(s)) for s, recv in safety.take())
        return until()

    node = robot_processes.start("node", policy=str(old), stats=str(tmp_path / "node.json"),
                                 robot={"policies_dir": str(tmp_path)})
    arm_over_dds(transport, old)
    robot_processes.start("sim", episodes=1, seed=3, wait_for_node_s=40.0, task_kwargs={"max_steps": 100_000})
    assert pump(60.0, lambda: sum(same(c, [0.04, 0.0]) for _, c in log["cmd"]) >= 5), \
        "the node never drove the robot with the old policy"
    assert log["safety"][-1][1]["policy"] == str(old.resolve())

    t_sent = time.monotonic_ns()
    promote.publish(promotion(new))

    def active():
        return any(v.get("policy") == str(new.resolve()) for _, v in log["safety"])

    assert pump(30.0, active), f"the node never reported the promoted policy: {log['safety'][-1][1]}"
    t_active, state = next((t, v) for t, v in log["safety"] if v.get("policy") == str(new.resolve()))
    assert state["policy_sha256"] == file_sha256(new) and state["promote_error"] == ""
    assert state["mode"] == "running"
    pump(0.5)
    after = [c for t, c in log["cmd"] if t > t_active]
    assert len(after) >= 5 and all(same(c, [0.0, 0.04]) for c in after)
    # Commands kept coming at the control rate across the switch.
    times = [t for t, _ in log["cmd"] if t > t_sent]
    gaps = np.diff(times) / 1e9
    print(f"promotion over DDS: active {(t_active - t_sent) / 1e6:.0f} ms after it was sent; "
          f"largest command gap across the switch {gaps.max() * 1e3:.1f} ms")
    assert gaps.max() < 3 * PERIOD
    assert node.poll() is None
