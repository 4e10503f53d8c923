"""Cross-process checks over DDS on loopback: closed loop, e-stop, killed robot, killed node.

Each test has its own DDS domain; the simulated robot and the policy node are real
processes, the test process listens on the same topics.
"""

import signal
import time

import numpy as np
import pytest

from robot_helpers import arm_over_dds, make_policy, push_gain, signed

pytestmark = pytest.mark.slow
PERIOD = 0.05  # the PlanarPush robot runs at 20 Hz
LONG_EPISODE = {"max_steps": 100_000}


@pytest.fixture
def listener(dds_env):
    from steer.robot import messages as m
    from steer.robot.dds_transport import DdsTransport

    transport = DdsTransport(dds_env["domain"])
    subs = {"cmd": transport.subscription("/pusher_velocity_controller/commands", m.Float64MultiArray),
            "js": transport.subscription("/joint_states", m.JointState),
            "safety": transport.subscription("/safety_state", m.DiagnosticStatus)}
    pubs = {"estop": transport.publisher("/estop", m.Bool, latched=True),
            "operator": transport.publisher("/operator_command", m.DiagnosticStatus)}
    log = {k: [] for k in subs}

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            transport.wait(0.005)
            for k, sub in subs.items():
                # Stamped with the writer's clock: a listener slowed by other work does not delay them.
                log[k].extend((sent, msg) for msg, sent in sub.take_timed())

    return {"pump": pump, "log": log, "pubs": pubs, "m": m, "transport": transport}


def _wait_for_commands(listener, timeout=40.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        listener["pump"](0.1)
        moving = [c for _, c in listener["log"]["cmd"] if any(abs(x) > 0 for x in c.data)]
        if len(moving) >= 5:
            return
    pytest.fail("the policy node never sent a non-zero command")


def _drive(robot_processes, listener, tmp_path, velocity=0.05):
    policy = make_policy(tmp_path / "drive.onnx", bias=[velocity, 0.0])
    node = robot_processes.start("node", policy=str(policy), stats=str(tmp_path / "node.json"))
    arm_over_dds(listener["transport"], policy)  # the node starts unarmed
    sim = robot_processes.start("sim", episodes=1, seed=3, wait_for_node_s=40.0, task_kwargs=LONG_EPISODE,
                                results=str(tmp_path / "sim.json"))
    return node, sim


def test_closed_loop_matches_in_process_and_bags_are_readable(dds_env, tmp_path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from steer.robot.closed_loop import evaluate_in_process, run_closed_loop

    policy = make_policy(tmp_path / "push.onnx", gain=push_gain(3.0, 2.0), chunk_len=4)
    task_kwargs = {"max_steps": 30}
    result = run_closed_loop(policy, episodes=3, seed=1_000_000, domain_id=dds_env["domain"], progress=True,
                             rt_priority=10,
                             bag_dir=tmp_path / "bags", task_kwargs=task_kwargs)
    rate, successes, finals = evaluate_in_process(policy, episodes=3, seed=1_000_000, task_kwargs=task_kwargs)
    assert result.episodes == 3 and result.missed_deadlines == 0 and result.overruns == 0
    # Same seeds, same chunking: the trajectories over DDS are the in-process ones, bit for bit.
    assert np.array_equal(np.array(result.final_obs), np.array(finals))
    assert result.success_rate == rate and list(result.successes) == successes
    assert 0 < result.latency_ms_p50 < result.latency_ms_p99 < PERIOD * 1e3

    assert len(result.bags) == 3
    with AnyReader([tmp_path / "bags" / "episode_0001"], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        topics = {c.topic: c.msgtype for c in r.connections}
        counts = {t: 0 for t in topics}
        commands = []
        for conn, _, raw in r.messages():
            counts[conn.topic] += 1
            if conn.topic == "/pusher_velocity_controller/commands":
                commands.append(r.deserialize(raw, conn.msgtype).data)
    assert topics["/joint_states"] == "sensor_msgs/msg/JointState"
    assert topics["/pusher_velocity_controller/commands"] == "std_msgs/msg/Float64MultiArray"
    assert topics["/goal"] == "std_msgs/msg/Float64MultiArray"
    # 30 steps: 30 observations (the last one of an episode ends it) and a command for each.
    assert counts["/joint_states"] == 30 and counts["/pusher_velocity_controller/commands"] >= 30
    assert np.all(np.abs(np.array(commands)) <= 0.3)

    # The first episode also holds the safety events (the node arming and starting) ...
    with AnyReader([tmp_path / "bags" / "episode_0000"], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        safety = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages() if c.topic == "/safety_state"]
    assert {dict((kv.key, kv.value) for kv in s.values)["mode"] for s in safety} == {"running"}
    # ... and the .mcap file decodes with the independent MCAP ROS 2 decoder (what Foxglove reads).
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = (tmp_path / "bags" / "episode_0001").glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = [(ch.topic, msg) for _, ch, _, msg in reader.iter_decoded_messages(topics=["/joint_states"])]
    assert len(decoded) == 30 and list(decoded[0][1].name) == ["pusher_x", "pusher_y", "puck_x", "puck_y"]


def test_estop_stops_within_one_period_latches_and_killing_the_robot_stops_commands(
        robot_processes, listener, tmp_path):
    m, log, pump = listener["m"], listener["log"], listener["pump"]
    node, sim = _drive(robot_processes, listener, tmp_path)
    _wait_for_commands(listener)

    # E-stop: the first zero command comes within one period, and no motion command after it.
    t_press = time.time_ns()
    listener["pubs"]["estop"].publish(m.Bool(True))
    pump(0.6)
    after = [(t, c.data) for t, c in log["cmd"] if t > t_press]
    assert after, "no command after the e-stop"
    # Commands arrive in publishing order: the stop is the first of the trailing run of zeros
    # (a zero from before the press, e.g. a watchdog hold, does not count).
    last_moving = max((i for i, (_, d) in enumerate(after) if any(d)), default=-1)
    assert last_moving < len(after) - 1, "no zero command after the e-stop"
    stopped_at = after[last_moving + 1][0]
    assert (stopped_at - t_press) / 1e9 < PERIOD
    # Releasing the button does not restart anything: the e-stop is latched.
    t_release = time.time_ns()
    listener["pubs"]["estop"].publish(m.Bool(False))
    pump(0.6)
    assert all(not any(c.data) for t, c in log["cmd"] if t > t_release)
    latest = dict((kv.key, kv.value) for kv in log["safety"][-1][1].values)
    assert latest["mode"] == "estopped" and latest["estop_latched"] == "true"
    # Only the operator's signed release and arm bring the commands back.
    from steer.robot.promotion import file_sha256

    sha = file_sha256(tmp_path / "drive.onnx")
    t_reset = time.time_ns()
    listener["pubs"]["operator"].publish(signed("release", sha))
    pump(0.6)
    assert all(not any(c.data) for t, c in log["cmd"] if t > t_reset)
    listener["pubs"]["operator"].publish(signed("arm", sha))
    pump(0.6)
    assert any(any(c.data) for t, c in log["cmd"] if t > t_reset)

    # Kill the robot: the node's commands become the safe (zero) command within two periods.
    sim.send_signal(signal.SIGKILL)
    sim.wait()
    t_kill = time.time_ns()
    pump(0.8)
    last_state = max(t for t, _ in log["js"])
    moving_after = [t for t, c in log["cmd"] if t > last_state and any(c.data)]
    zero_after = [t for t, c in log["cmd"] if t > last_state and not any(c.data)]
    assert zero_after, "the node never sent a safe command after the robot died"
    stop_at = max([zero_after[0]] + moving_after)
    assert (stop_at - last_state) / 1e9 <= 2 * PERIOD
    assert not [t for t in moving_after if t > zero_after[0]]
    assert t_kill >= last_state
    assert node.poll() is None, "the node must keep running (and holding) when the robot disappears"


def test_killing_the_node_makes_the_robot_hold_within_its_timeout(robot_processes, listener, tmp_path):
    log, pump = listener["log"], listener["pump"]
    node, sim = _drive(robot_processes, listener, tmp_path, velocity=0.05)
    _wait_for_commands(listener)
    pump(0.5)
    speeds = [abs(s.velocity[0]) for _, s in log["js"][-5:]]
    assert min(speeds) > 0.04, f"the pusher should move at 0.05 m/s before the kill, got {speeds}"
    node.send_signal(signal.SIGKILL)
    node.wait()
    t_kill = time.time_ns()
    pump(0.8)
    last_cmd = max(t for t, _ in log["cmd"])
    states = [(t, abs(s.velocity[0])) for t, s in log["js"] if t > t_kill]
    still = [t for t, v in states if v < 1e-3]
    assert still, f"the robot never held after the node died: {states[:10]}"
    timeout = 0.1  # command_timeout_ms of the PlanarPush config
    # Holding starts at the first step after the timeout; its joint state comes one period later.
    assert (still[0] - last_cmd) / 1e9 <= timeout + 2 * PERIOD
    assert all(v < 1e-3 for t, v in states if t >= still[0])
    assert sim.poll() is None


def test_robot_loop_benchmark_runs_and_writes_its_figures(dds_env, tmp_path):
    import json
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "robot_loop.py"
    out = tmp_path / "robot_loop.json"
    proc = subprocess.run([dds_env["python"], str(script), "--seconds", "2", "--repeats", "1", "--domain",
                           str(dds_env["domain"]), "--rt-priority", "0", "--out", str(out)], env=dds_env["env"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert {"latency_p50_ms", "latency_p99_ms", "jitter_p99_ms", "missed_deadlines"} <= set(figures)
    # 2 s at 100 Hz. Start-up takes a few ticks, and this smoke test runs beside the rest of the
    # suite without real-time priority: a loop at full rate gives 183-190, one at half rate 100.
    assert 150 <= figures["steps"] <= 201
    # The median is the loop's own cost (0.5 ms alone on the machine); the tail is the neighbours'.
    # Beside a DSRL test on the other core, a fresh-clone CI run measured a p99 of 10.2 ms: a tick
    # late now and then is load, three ticks late would be the loop.
    assert 0 < figures["latency_p50_ms"] < 5.0
    assert figures["latency_p50_ms"] <= figures["latency_p99_ms"] < 30.0
    assert set(result["machine"]) == {"cpu", "cores", "gpu"} and result["date"]
    assert "observation→command p99" in proc.stdout


def test_a_robot_that_measured_nothing_writes_valid_json_with_nulls():
    """No episode ended and no command came (e.g. stopped before the node appeared): the summary's
    figures are null, not NaN, so the results file stays valid JSON for any reader."""
    import json

    from steer.robot.sim_robot import SimStats

    summary = SimStats().summary(period_s=0.05)
    text = json.dumps(summary, allow_nan=False)  # raises on NaN
    back = json.loads(text)
    assert back["episodes"] == 0 and back["success_rate"] is None and back["latency_p99_ms"] is None
    stats = SimStats(latencies_ns=[2_000_000, 4_000_000], step_times_ns=[0, 50_000_000, 101_000_000])
    s = stats.summary(period_s=0.05)
    assert s["latency_p50_ms"] == pytest.approx(3.0) and s["jitter_p99_ms"] == pytest.approx(0.99, abs=0.02)
