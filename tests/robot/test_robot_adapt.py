"""Adapting on a robot over DDS: simulated robot, steered policy node and learner, three real processes.

The robot runs at twice real time (``time_scale``) with 20-step episodes so that the tests stay short.
The test process is the operator: it arms the node and starts the session with signed commands.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_helpers import operator_key, trusting_keys

pytestmark = pytest.mark.slow
SCALE = 2.0
EPISODE = {"max_steps": 20}


@pytest.fixture(scope="module")
def bc_run(tiny_bc, tmp_path_factory):
    """A BC run directory as `steer bc` writes it (names and rate in its metadata) and its ONNX export."""
    import gymnasium as gym

    import steer.sim  # noqa: F401
    from steer.agent.bc import save_policy
    from steer.agent.export import export_run

    policy, ckpt = tiny_bc
    run = tmp_path_factory.mktemp("bcrun") / "bc"
    (run / "checkpoints").mkdir(parents=True)
    env = gym.make("steer/PlanarPush-v0")
    u = env.unwrapped
    save_policy(run / "checkpoints", policy,
                {"task": "steer/PlanarPush-v0", "obs_names": list(u.obs_names), "action_names": list(u.action_names),
                 "control_rate_hz": float(u.control_rate_hz), "action_low": env.action_space.low.tolist(),
                 "action_high": env.action_space.high.tolist()})
    export_run(run, run.parent / "bc.onnx")
    return run, run.parent / "bc.onnx"


class Rig:
    """The three processes and the operator's side (a DDS participant in the test process)."""

    def __init__(self, robot_processes, dds_env, bc_run, tmp_path):
        from steer.robot import messages as m
        from steer.robot.dds_transport import DdsTransport

        self.procs, self.dds, self.tmp = robot_processes, dds_env, tmp_path
        self.run_dir, self.onnx = bc_run
        self.robot = {"trusted_operator_keys": trusting_keys(), "time_scale": SCALE}
        self.t = DdsTransport(dds_env["domain"])
        self.m = m
        self.subs = {k: self.t.subscription(t, m.DiagnosticStatus) for k, t in
                     (("safety", "/safety_state"), ("status", "/adapt_status"), ("executed", "/latent_executed"),
                      ("latent", "/latent"))}
        self.subs["cmd"] = self.t.subscription("/pusher_velocity_controller/commands", m.Float64MultiArray)
        self.control = self.t.publisher("/adapt_control", m.DiagnosticStatus)
        self.log = {k: [] for k in self.subs}
        self.learner = None

    def start_robot(self):
        self.node = self.procs.start("node", policy=str(self.onnx), robot=dict(self.robot), steered=True,
                                     stats=str(self.tmp / "node.json"), status_every_s=0)
        self.sim = self.procs.start("sim", robot=dict(self.robot), episodes=0, seed=3, wait_for_node_s=60.0,
                                    task_kwargs=EPISODE, status_every_s=0)

    def start_learner(self, *extra):
        args = [sys.executable, "-m", "steer.ops.cli", "adapt", "--policy", str(self.run_dir), "--domain-id",
                str(self.dds["domain"]), "--name", "adapt", "--runs", str(self.tmp / "runs"), "--session", "s1",
                "--no-progress", "--dsrl.warmup-env-steps", "40", "--dsrl.utd", "2", "--dsrl.batch-size", "32",
                "--dsrl.hidden-dim", "32", "--dsrl.num-layers", "2", "--dsrl.buffer-size", "5000",
                "--dsrl.checkpoint-every", "40", "--dsrl.conservative.min-baseline-episodes", "2", *extra]
        self.learner = subprocess.Popen(args, env=self.dds["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.procs.procs.append(self.learner)
        return self.learner

    def operate(self):
        """Arm the node and start session s1 (signed), as the console does."""
        from steer.robot.closed_loop import send_signed_command
        from steer.robot.config import load_robot_config
        from steer.robot.promotion import file_sha256

        config = load_robot_config()
        sha = file_sha256(self.onnx)
        send_signed_command(self.t, config, operator_key(), "arm", sha, until=lambda s: s.armed, timeout_s=60)
        send_signed_command(self.t, config, operator_key(), "adapt_start", sha, args={"session": "s1"},
                            until=lambda s: s.adapt_session == "s1", timeout_s=30)

    def pump(self, seconds, until=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.t.wait(0.01)
            for k, s in self.subs.items():
                self.log[k].extend(msg for msg, _ in s.take())
            if until is not None and until():
                return True
        return False

    def safety(self):
        from steer.robot.spec import SafetyState

        return SafetyState.from_message(self.log["safety"][-1]) if self.log["safety"] else None

    def status(self):
        from steer.robot.spec import AdaptStatus

        return AdaptStatus.from_message(self.log["status"][-1]) if self.log["status"] else None

    def send(self, command):
        from steer.robot.spec import AdaptControl

        self.control.publish(AdaptControl(command, session="s1").to_message("planar_push"))

    def summary(self):
        return json.loads((self.tmp / "runs" / "adapt" / "summary.json").read_text())


@pytest.fixture
def rig(robot_processes, dds_env, bc_run, tmp_path):
    r = Rig(robot_processes, dds_env, bc_run, tmp_path)
    yield r
    r.t.close()


def test_the_learner_steers_the_node_over_dds_and_learns_from_the_robots_episodes(rig):
    from steer.robot.onnx_policy import OnnxPolicy
    from steer.robot.spec import LatentChunk

    rig.start_robot()
    learner = rig.start_learner("--dsrl.env-steps", "200")
    rig.operate()
    assert rig.pump(60, until=lambda: learner.poll() is not None), "the learner did not reach its budget"
    out, err = learner.communicate()
    assert learner.returncode == 0, err[-2000:]
    summary = rig.summary()
    assert summary["env_steps"] >= 200 and summary["episodes"] >= 8
    assert summary["latents_used"] > 0
    # Learner latents ran exactly as sent, and they changed the commands: the node's command for a steered
    # chunk is the policy's first action for that latent, not for the baseline's noise.
    executed = [LatentChunk.from_message(x) for x in rig.log["executed"]]
    sent = {(c.episode, c.chunk): c.noise for c in map(LatentChunk.from_message, rig.log["latent"])}
    steered = [e for e in executed if e.source == "learner"]
    assert len(steered) >= 10, (len(executed), rig.safety())
    assert all(sent[(e.episode, e.chunk)] == e.noise for e in steered)
    policy = OnnxPolicy(rig.onnx)
    commands = [np.array(c.data) for c in rig.log["cmd"]]
    # (The shield's rate limit may shorten a jump at a chunk boundary on a loaded machine: not every one matches.)
    shown = 0
    for e in steered[:20]:
        obs = np.array(e.obs)
        first = np.clip(policy(obs, e.array())[0], -0.3, 0.3)
        base = np.clip(policy(obs, np.zeros((4, 2)))[0], -0.3, 0.3)
        shown += any(np.allclose(c, first, atol=1e-5) for c in commands) and not np.allclose(first, base, atol=1e-3)
    assert shown >= 5, shown
    status = rig.status()
    assert status.state == "done" and status.episodes == summary["episodes"] and status.algo == "sac"
    assert 0.0 <= status.baseline_success <= 1.0 and status.threshold <= status.baseline_success


def test_killing_the_learner_leaves_the_robot_on_the_baseline_and_resume_continues(rig):
    rig.start_robot()
    learner = rig.start_learner("--dsrl.env-steps", "240")
    rig.operate()
    ckpt = rig.tmp / "runs" / "adapt" / "checkpoints" / "adapt_trainer.safetensors"
    assert rig.pump(60, until=lambda: ckpt.exists() and (rig.status() or 0) and rig.status().episodes >= 4)
    learner.send_signal(signal.SIGKILL)
    learner.wait(10)
    # Latents the learner sent before it died may still arrive and run; after a second none are left.
    rig.pump(1.0)
    before = rig.safety()
    n_cmd = len(rig.log["cmd"])
    rig.pump(2.0)
    after = rig.safety()
    # The node kept commanding at its rate, on the baseline's noise, without a watchdog trip.
    assert len(rig.log["cmd"]) - n_cmd >= 0.7 * 2.0 * 20 * SCALE
    assert after.mode == "running" and after.watchdog_trips == before.watchdog_trips
    assert after.latents_fallback > before.latents_fallback and after.latents_used == before.latents_used
    assert after.adapt_session == "s1"
    resumed = rig.start_learner("--dsrl.env-steps", "240", "--resume")
    assert rig.pump(90, until=lambda: resumed.poll() is not None)
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err[-2000:]
    summary = rig.summary()
    assert summary["env_steps"] >= 240
    metrics = [json.loads(line) for line in (rig.tmp / "runs" / "adapt" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in metrics if "charts/episodes" in r]
    assert steps == sorted(steps)  # rewound to the checkpoint, then continued: no step counted twice
    assert rig.safety().latents_used > after.latents_used


def test_killing_the_node_ends_the_learners_episode_cleanly(rig):
    from steer.robot.spec import LatentChunk

    rig.start_robot()
    learner = rig.start_learner("--dsrl.env-steps", "100000")
    rig.operate()
    assert rig.pump(60, until=lambda: (rig.status() or 0) and rig.status().episodes >= 2)
    # Kill the node with an episode in flight: just after the learner sent an early chunk of a new episode
    # (killing it right after an episode ended would leave nothing to discard).
    seen = len(rig.log["latent"])
    assert rig.pump(30, until=lambda: any(LatentChunk.from_message(x).chunk <= 2 for x in rig.log["latent"][seen:]))
    rig.node.send_signal(signal.SIGKILL)
    rig.node.wait(10)
    # The learner notices (no safety state), drops the episode in flight and waits; it does not crash.
    assert rig.pump(10, until=lambda: rig.status().state == "waiting")
    assert learner.poll() is None
    rig.send("stop")
    assert rig.pump(30, until=lambda: learner.poll() is not None)
    out, err = learner.communicate()
    assert learner.returncode == 0, err[-2000:]
    summary = rig.summary()
    assert summary["discarded"] >= 1 and summary["episodes"] >= 2
