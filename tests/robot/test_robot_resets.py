"""The simulated robot keeps publishing joint states through episode resets (real processes, DDS on loopback).

A robot that goes quiet while it resets trips the node's watchdog at every episode start;
in normal running the watchdog must stay silent.
"""

import json
import signal
import time

import numpy as np
import pytest

from robot_helpers import arm_over_dds, make_policy, push_gain

pytestmark = pytest.mark.slow
PERIOD = 0.05  # the PlanarPush robot runs at 20 Hz
WATCHDOG = 0.075  # watchdog_ms of the PlanarPush config


def test_joint_states_flow_through_episode_resets_without_watchdog_trips(robot_processes, dds_env, tmp_path):
    from steer.robot import messages as m
    from steer.robot.dds_transport import DdsTransport

    transport = DdsTransport(dds_env["domain"])
    joint_sub = transport.subscription("/joint_states", m.JointState)
    episode_sub = transport.subscription("/episode", m.DiagnosticStatus)
    safety_sub = transport.subscription("/safety_state", m.DiagnosticStatus)

    policy = make_policy(tmp_path / "push.onnx", gain=push_gain(3.0, 2.0), chunk_len=4)
    node = robot_processes.start("node", policy=str(policy), stats=str(tmp_path / "node.json"))
    arm_over_dds(transport, policy)  # the node starts unarmed
    # 20-step episodes (1 s each) so that a short run spans many resets.
    sim = robot_processes.start("sim", episodes=0, seed=11, wait_for_node_s=40.0, task_kwargs={"max_steps": 20},
                                results=str(tmp_path / "sim.json"))
    arrivals, starts, safety = [], [], []
    end = None
    deadline = time.monotonic() + 60.0
    while time.monotonic() < (end or deadline):
        transport.wait(0.005)
        # Publish times from the header stamps: the robot's cadence, whatever delays this process.
        arrivals += [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s, _ in joint_sub.take() if s.name]
        for s, _ in episode_sub.take():
            values = {kv.key: kv.value for kv in s.values}
            if values.get("event") == "start":
                starts.append(time.time_ns())
        safety += [{kv.key: kv.value for kv in s.values} for s, _ in safety_sub.take()]
        if end is None and starts:
            end = time.monotonic() + 8.0  # measure 8 s from the first episode on
    # The node first (a robot that stops before the node rightly trips its watchdog), then the robot.
    node.send_signal(signal.SIGINT)
    node.wait(timeout=30)
    sim.send_signal(signal.SIGINT)
    sim.wait(timeout=30)

    assert len(starts) >= 6, f"only {len(starts)} episodes started in 8 s"
    # From the first to the last episode start, joint states keep about one period apart.
    window = np.array([t for t in arrivals if starts[0] - 10**9 <= t <= starts[-1]], dtype=np.int64)
    gaps = np.diff(window) / 1e9
    assert len(gaps) >= 20 * (len(starts) - 1) - 2
    assert gaps.max() < WATCHDOG, f"joint states stopped for {gaps.max() * 1e3:.0f} ms"
    assert np.percentile(gaps, 50) == pytest.approx(PERIOD, abs=0.01)

    # The node saw the same: no watchdog trip, in its safety state and in its final stats.
    running = [s for s in safety if s.get("mode") == "running"]
    assert running, "the node never reported running"
    assert int(running[-1]["watchdog_trips"]) == 0
    stats = json.loads((tmp_path / "node.json").read_text())
    assert stats["watchdog_trips"] == 0
    sim_summary = json.loads((tmp_path / "sim.json").read_text())
    assert sim_summary["episodes"] >= 6
    # Every episode that finished while the node ran got a fresh command for every step.
    assert [e["held_steps"] for e in sim_summary["results"][:-1]] == [0] * (sim_summary["episodes"] - 1)
