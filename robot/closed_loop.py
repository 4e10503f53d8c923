"""Closed-loop episodes of an ONNX policy over DDS: simulated robot and policy node as two processes.

This is what ``steer demo`` calls to check that the exported policy works on the
robot side as it did in training::

    from steer.robot.closed_loop import run_closed_loop
    result = run_closed_loop("runs/demo/policy.onnx", episodes=20, seed=1_000_000)
    result.success_rate, result.latency_ms_p99

:func:`evaluate_in_process` runs the same policy on the same seeds without DDS, with
the same open-loop chunk execution, for comparison.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steer.robot.errors import RobotError
from steer.robot.sim_robot import DEFAULT_TASK

if TYPE_CHECKING:
    from steer.robot.config import RobotConfig
    from steer.robot.spec import SafetyState


@dataclass(frozen=True)
class ClosedLoopResult:
    """Outcome of closed-loop episodes over DDS."""

    episodes: int
    """Episodes completed."""
    success_rate: float
    """Share of episodes with ``info["is_success"]``."""
    latency_ms_p50: float
    """Median time from the robot publishing a joint state to it receiving the command (ms)."""
    latency_ms_p99: float
    """99th percentile of the same round trip (ms)."""
    node_latency_ms_p99: float
    """99th percentile inside the node: joint state taken → command published (ms)."""
    missed_deadlines: int
    """Steps for which the command came later than one period."""
    overruns: int
    """Steps the simulated robot itself took more than half a period late (CPU starvation)."""
    successes: tuple[bool, ...]
    """Per-episode success, in seed order."""
    final_obs: tuple[tuple[float, ...], ...]
    """Per-episode observation after the last step."""
    bags: tuple[str, ...] = ()
    """Episode bag directories written by the node."""
    details: dict[str, Any] = field(default_factory=dict)
    """The raw summaries of the robot and the node."""

    def as_summary(self) -> dict[str, Any]:
        """The ``robot_loop`` entry of a run's summary.json."""
        return {"episodes": self.episodes, "success_rate": self.success_rate, "latency_ms_p99": self.latency_ms_p99}


def send_signed_command(transport, config: RobotConfig, key, command: str, policy_sha256: str,
                        until, args: dict[str, str] | None = None, timeout_s: float = 60.0,
                        alive=lambda: True, on_send=lambda cmd: None) -> SafetyState:
    """Sign ``command`` with ``key`` and publish it to the node of ``config`` until its safety state
    satisfies ``until(state)``; returns that state.

    The command topic is volatile, so the command goes out only once the node's reader is matched,
    and again (freshly signed: a repeat would be refused as replayed) every 2 s until the node
    shows it took effect. RobotError when ``alive()`` turns false or ``timeout_s`` passes.
    ``on_send(cmd)`` sees each signed command as it goes out.
    """
    from steer.robot import messages as msg
    from steer.robot.keys import sign_command
    from steer.robot.spec import SafetyState, WireError

    c = config
    pub = transport.publisher(c.topic(c.operator_command_topic), msg.DiagnosticStatus)
    safety = transport.subscription(c.topic(c.safety_topic), msg.DiagnosticStatus)
    end, sent_at, last = time.monotonic() + timeout_s, None, None
    while time.monotonic() < end:
        if not alive():
            raise RobotError(f"the policy node exited before it took the signed {command}.")
        if pub.matched() and (sent_at is None or time.monotonic() - sent_at > 2.0):
            cmd = sign_command(key, command, c.namespace, policy_sha256, args)
            pub.publish(cmd.to_message(c.name))
            on_send(cmd)
            sent_at = time.monotonic()
        transport.wait(0.02)
        for m, _ in safety.take():
            try:
                last = SafetyState.from_message(m)
            except WireError:
                continue
            if sent_at is not None and until(last):
                return last
    why = f" (last refusal: {last.last_refusal})" if last is not None and last.last_refusal else ""
    raise RobotError(f"the policy node did not take the signed {command} within {timeout_s:g} s{why}.")


def _pick_domain() -> int:
    # Valid ids for the default port mapping are 0..232; spread by pid so concurrent runs differ.
    return 120 + os.getpid() % 100


def run_closed_loop(policy: str | Path, episodes: int = 20, seed: int = 0, domain_id: int | None = None,
                    limits: str | None = None, task: str = DEFAULT_TASK, bag_dir: str | Path | None = None,
                    timeout_s: float | None = None, loopback: bool = True,
                    task_kwargs: dict[str, Any] | None = None, progress: bool = False,
                    rt_priority: int = 0) -> ClosedLoopResult:
    """Run ``episodes`` episodes (seeds ``seed, seed+1, …``) with the simulated robot and the policy
    node in two processes talking DDS; returns success rate and latencies.

    The policy is checked in this process first, so a bad file fails with one sentence.
    ``progress`` shows a bar fed by the robot's per-episode progress file. ``rt_priority`` > 0
    runs both processes under SCHED_FIFO (where allowed), as control loops on a robot run.
    """
    from steer.robot.config import load_robot_config
    from steer.robot.onnx_policy import OnnxPolicy

    config = load_robot_config(limits)
    onnx_policy = OnnxPolicy(policy, robot=config)  # refuses a mismatched file before any process starts
    domain_id = _pick_domain() if domain_id is None else domain_id
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if loopback:
        from steer.robot.dds_transport import use_loopback_config

        env["CYCLONEDDS_URI"] = use_loopback_config()
    work = Path(tempfile.mkdtemp(prefix="steer-closed-loop-"))
    # The node obeys only signed commands: this run is its operator, with a key of its own.
    from steer.robot.keys import init_keys, load_private_key, public_key_hex
    from steer.robot.promotion import file_sha256

    key = load_private_key(init_keys(work / "operator")[0])
    robot = {"limits": limits, "trusted_operator_keys": [public_key_hex(key.public_key())]}
    node_kwargs = {"robot": robot, "policy": str(policy), "domain_id": domain_id, "stats": str(work / "node.json"),
                   "bag_dir": str(bag_dir) if bag_dir else None, "rt_priority": rt_priority}
    sim_kwargs = {"robot": robot, "domain_id": domain_id, "task": task, "episodes": episodes, "seed": seed,
                  "wait_for_node_s": 60.0, "require_node": True, "results": str(work / "sim.json"),
                  "progress_file": str(work / "episodes.jsonl"), "rt_priority": rt_priority,
                  "task_kwargs": task_kwargs}
    max_steps = int((task_kwargs or {}).get("max_steps", 1000))
    budget = timeout_s or (60.0 + episodes * max_steps * config.control_period_s * 1.5)
    cmd = [sys.executable, "-m", "steer.robot.processes"]
    # stderr goes to files: a pipe nobody reads could fill up and stall a control loop.
    node_err, sim_err = open(work / "node.err", "w"), open(work / "sim.err", "w")
    node = subprocess.Popen(cmd + ["node", json.dumps(node_kwargs)], env=env, stderr=node_err)
    sim, bar = None, None
    try:
        arm_node(config, domain_id, env, key, file_sha256(policy), alive=lambda: node.poll() is None)
        sim = subprocess.Popen(cmd + ["sim", json.dumps(sim_kwargs)], env=env, stderr=sim_err)
        bar = _EpisodeProgress(work / "episodes.jsonl", episodes) if progress else None
        deadline = time.monotonic() + budget
        while sim.poll() is None:
            if bar is not None:
                bar.update()
            if node.poll() is not None:  # a node that died leaves the robot holding: fail now, not at the end
                raise RobotError(f"the policy node exited early: {_last_line(work / 'node.err')} "
                                 f"(log: {work / 'node.err'})")
            if time.monotonic() > deadline:
                raise RobotError(f"closed-loop episodes did not finish within {budget:.0f} s; "
                                 "check that the policy node starts (run `steer robot run` by hand).")
            time.sleep(0.2)
    finally:
        if bar is not None:
            bar.close()
        procs = [p for p in (sim, node) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        node_err.close()
        sim_err.close()
    if sim is None or sim.returncode != 0 or not (work / "sim.json").exists():
        raise RobotError(f"the simulated robot failed: {_last_line(work / 'sim.err')} (log: {work / 'sim.err'})")
    if not (work / "node.json").exists():
        raise RobotError(f"the policy node failed: {_last_line(work / 'node.err')} (log: {work / 'node.err'})")
    sim_summary = json.loads((work / "sim.json").read_text())
    node_summary = json.loads((work / "node.json").read_text())
    results = sorted(sim_summary["results"], key=lambda r: r["seed"])
    return ClosedLoopResult(
        episodes=len(results), success_rate=float(np.mean([r["success"] for r in results])) if results else 0.0,
        latency_ms_p50=_ms(sim_summary["latency_p50_ms"]), latency_ms_p99=_ms(sim_summary["latency_p99_ms"]),
        node_latency_ms_p99=_ms(node_summary.get("latency_p99_ms")),
        missed_deadlines=sim_summary["missed_deadlines"], overruns=sim_summary["overruns"],
        successes=tuple(bool(r["success"]) for r in results),
        final_obs=tuple(tuple(r["final_obs"]) for r in results), bags=tuple(node_summary.get("bags", ())),
        details={"robot": sim_summary, "node": node_summary, "domain_id": domain_id})


def _ms(value) -> float:
    """A latency from a summary file: null there (nothing measured) is NaN here."""
    return float("nan") if value is None else float(value)


def arm_node(config, domain_id: int, env: dict[str, str], key, policy_sha256: str, alive=lambda: True) -> None:
    """Arm a node process over DDS with ``key``'s signed arm (DDS config from ``env``), then leave the domain,
    so the robot started next sees only the node."""
    from steer.robot.dds_transport import DdsTransport

    previous = os.environ.get("CYCLONEDDS_URI")
    if env.get("CYCLONEDDS_URI"):
        os.environ["CYCLONEDDS_URI"] = env["CYCLONEDDS_URI"]
    transport = DdsTransport(domain_id)
    try:
        send_signed_command(transport, config, key, "arm", policy_sha256, until=lambda s: s.armed, alive=alive)
    finally:
        transport.close()
        if previous is None:
            os.environ.pop("CYCLONEDDS_URI", None)
        else:
            os.environ["CYCLONEDDS_URI"] = previous


class _EpisodeProgress:
    """A progress bar that follows the robot's progress file (no DDS here: an extra reader in
    the robot's domain would count as the node during the robot's discovery handshake)."""

    def __init__(self, path: Path, episodes: int):
        from tqdm import tqdm

        self._path = path
        self._bar = tqdm(total=episodes, desc="robot loop (DDS)", unit="ep")
        self._seen = 0
        self._successes = 0

    def update(self) -> None:
        if not self._path.exists():
            return
        lines = self._path.read_text().splitlines()
        for line in lines[self._seen:]:
            try:
                self._successes += bool(json.loads(line)["success"])
            except (ValueError, KeyError):
                return  # a line still being written: read it next time
            self._seen += 1
            self._bar.update(1)
            self._bar.set_postfix(success=f"{self._successes}/{self._seen}")

    def close(self) -> None:
        self.update()
        self._bar.close()


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


def evaluate_in_process(policy: str | Path, episodes: int = 20, seed: int = 0, task: str = DEFAULT_TASK,
                        limits: str | None = None, task_kwargs: dict[str, Any] | None = None,
                        ) -> tuple[float, list[bool], list[np.ndarray]]:
    """The same episodes without DDS: (success rate, per-episode success, per-episode final observation)."""
    import gymnasium as gym

    import steer.sim  # noqa: F401 - registers the steer tasks
    from steer.robot.config import load_robot_config
    from steer.robot.onnx_policy import ChunkExecutor, OnnxPolicy

    config = load_robot_config(limits)
    onnx_policy = OnnxPolicy(policy, robot=config)
    env = gym.make(task, **(task_kwargs or {}))
    successes, finals = [], []
    for k in range(episodes):
        executor = ChunkExecutor(onnx_policy)
        obs, info = env.reset(seed=seed + k)
        while True:
            obs, _, terminated, truncated, info = env.step(executor.act(obs))
            if terminated or truncated:
                break
        successes.append(bool(info.get("is_success", False)))
        finals.append(np.asarray(obs, dtype=np.float64))
    env.close()
    return float(np.mean(successes)) if successes else 0.0, successes, finals


