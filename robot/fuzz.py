"""Hostile traffic against a running policy node, over DDS, between real processes.

:func:`run_fuzz` starts the node as its own process (as ``steer robot run`` does), plays a
well-behaved robot at the control rate from this process, and meanwhile sends random and
malformed messages on every topic the node subscribes to. It measures what the robot and the
operator would care about: whether the node stayed up, whether any command left the limits,
how steep the commands got against the rate limit, how much the node's memory grew, and how
often the node's mode, arming or active policy changed because of a hostile message.

The first part of the run leaves out the messages anyone may use to stop the robot (an e-stop,
a measured effort over its bound), so the policy keeps commanding and the rate limit is
exercised; the last part sends everything. Used by ``tests/robot/test_robot_fuzz.py`` (a short
run) and ``bench/robot_fuzz.py`` (≥ 10⁵ messages).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from steer.robot import messages as msg
from steer.robot.config import RobotConfig, load_robot_config
from steer.robot.spec import EpisodeStatus, SafetyState

FUZZ_RATE_MAX = 2.0
"""command_rate_max of the fuzzed robot: low enough that the rate limit binds on most ticks."""


def _rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc; NaN where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


_ALPHABET = string.printable + "\u00e9\u202e\U0001f600\x00"


class _Generator:
    """Random and malformed messages for each kind of topic."""

    def __init__(self, config: RobotConfig, rng: random.Random, policy_path: Path):
        self.config, self.rng, self.policy_path = config, rng, policy_path
        self.effort_max = min(j.effort_max for j in config.command_joints)
        self.np_rng = np.random.default_rng(rng.randrange(2**32))
        self.serial = 0
        self.policy_sha256 = ""
        self.forger = None  # a private key the robot does not trust
        self.genuine = None  # the operator's signed arm, once it went out (replayed by the fuzz)

    def text(self, longest: int = 40) -> str:
        r = self.rng
        n = r.randint(0, longest)
        chunk = "".join(r.choices(_ALPHABET, k=min(n, 24))) or "x"
        return (chunk * (n // len(chunk) + 1))[:n]  # long strings repeat a random chunk: cheap to make

    def number(self, stopping: bool) -> float:
        r = self.rng
        pick = r.random()
        if pick < (0.1 if stopping else 0.03):
            return r.choice([float("nan"), float("inf"), -float("inf")])
        if pick < (0.15 if stopping else 0.05):
            return r.choice([1e308, -1e308, 5e-324, 0.0, -0.0])
        return r.uniform(-2.0, 2.0)

    def values(self, n: int, stopping: bool, effort: bool = False) -> list[float]:
        if n > 8:  # long lists: numpy makes them (specials sprinkled in), Python would be the bottleneck
            out = self.np_rng.uniform(-2.0, 2.0, n)
            out[self.np_rng.random(n) < 0.1] = float("nan")
            if stopping or not effort:
                out[self.np_rng.random(n) < 0.05] = float("inf")
            else:
                out = np.clip(out, -self.effort_max, self.effort_max)
            return out.tolist()
        if effort and not stopping:
            # Efforts anyone could use to stop the robot are kept for the last part of the run.
            return [float("nan") if self.rng.random() < 0.03 else self.rng.uniform(-self.effort_max, self.effort_max)
                    for _ in range(n)]
        return [self.number(stopping) for _ in range(n)]

    def joint_state(self, stopping: bool) -> msg.JointState:
        r = self.rng
        joints = list(self.config.joints)
        kind = r.random()
        if kind < 0.3:
            names = r.sample(joints, r.randint(1, len(joints)))  # a subset of the real joints
        elif kind < 0.6:  # unknown joints, never seen before: few, many, too many, far too many (rare: costly)
            self.serial += 1
            count = r.choice([r.randint(1, 64)] * 8 + [r.randint(65, 1024), r.randint(1025, 3000)])
            names = [f"j{self.serial}_{i}" for i in range(20000 if r.random() < 0.02 else count)]
        elif kind < 0.7:
            names = [self.text(5000) for _ in range(r.randint(1, 3))]  # long names
        else:
            names = joints + [self.text(10) for _ in range(r.randint(0, 3))]
        n = len(names)
        lengths = [n, n, n]
        if r.random() < 0.1:
            lengths = [r.choice([0, n, n + 1, max(0, n - 1), 2000 if r.random() < 0.95 else 200_000]) for _ in range(3)]
        stamp = msg.Time()
        pick = r.random()
        now = time.time_ns()
        if pick < 0.3:
            stamp = msg.stamp_of(now)
        elif pick < 0.4:
            stamp = msg.stamp_of(now + r.randint(1, 10**12))  # in the future
        elif pick < 0.45:
            stamp = msg.stamp_of(max(0, now - r.randint(1, 10**11)))  # old
        elif pick < 0.55:
            stamp = msg.Time(sec=r.randint(-2**31, 2**31 - 1), nanosec=r.randint(0, 2**32 - 1))
        return msg.JointState(header=msg.Header(stamp=stamp, frame_id=self.text(20)), name=names,
                              position=self.values(lengths[0], stopping), velocity=self.values(lengths[1], stopping),
                              effort=self.values(lengths[2], stopping, effort=True))

    def vector(self, stopping: bool) -> msg.Float64MultiArray:
        n = self.rng.choice([0, 1, 2, 2, 2, 3, 1025, 5000])
        n = 200_000 if self.rng.random() < 0.02 else n  # far too long (costly to send: rare)
        count = 1025 if self.rng.random() < 0.01 else self.rng.choice([0, 1, 2])  # long lists of structs: rare
        dims = [msg.MultiArrayDimension("d", self.rng.randint(0, 2**32 - 1), self.rng.randint(0, 2**32 - 1))
                for _ in range(count)]
        return msg.Float64MultiArray(layout=msg.MultiArrayLayout(dim=dims), data=self.values(n, stopping))

    def boolean(self, stopping: bool) -> msg.Bool:
        return msg.Bool(self.rng.random() < 0.5)

    def status(self, keys: tuple[str, ...]) -> msg.DiagnosticStatus:
        r = self.rng
        values = []
        for _ in range(1025 if r.random() < 0.01 else r.choice([0, 1, 3, 6, 6, 6, 20])):
            key = r.choice(keys) if r.random() < 0.7 else self.text(20)
            values.append(msg.KeyValue(key, self.text(r.choice([10, 10, 10, 10, 10, 10, 10, 10, 10_000]))))
        return msg.DiagnosticStatus(level=r.randrange(256), name=self.text(), message=self.text(), hardware_id=self.text(), values=values)

    def episode(self, stopping: bool) -> msg.DiagnosticStatus:
        r = self.rng
        if r.random() < 0.1:  # a well-formed episode event with a small index
            return EpisodeStatus(event=r.choice(["start", "end", "connect"]),
                                 episode=str(r.randrange(4))).to_message(self.config.name)
        m = self.status(("event", "episode", "seed", "steps", "is_success"))
        for kv in m.values:
            if kv.key == "episode" and r.random() < 0.5:
                kv.value = r.choice(["abc", "-1", "1e9", "99999999999999999999", "", " 3", "٣"])
        return m

    def operator_command(self, stopping: bool) -> msg.DiagnosticStatus:
        """Operator commands an attacker can make: garbage, well-formed but unsigned or forged (a key the
        robot does not trust), stale, for another robot, or a replay of the operator's genuine arm."""
        r = self.rng
        pick = r.random()
        if pick < 0.3 or self.forger is None:
            m = self.status(("command", "namespace", "policy_sha256", "timestamp", "nonce", "args", "key_id",
                             "signature"))
            for kv in m.values:
                if kv.key == "command" and r.random() < 0.7:
                    kv.value = r.choice(["arm", "release", "promote", "adapt_start", "ARM"])
            return m
        if pick < 0.45 and self.genuine is not None:
            return self.genuine.to_message(self.config.name)  # replayed
        from steer.robot.keys import sign_command

        command = r.choice(["arm", "release", "promote"])
        cmd = sign_command(self.forger, command, r.choice([self.config.namespace, "/other"]), self.policy_sha256,
                           args={"policy": r.choice([self.policy_path.name, "../x.onnx", "/dev/zero"])},
                           now=time.time() - r.choice([0.0, 0.0, 3600.0]))
        if r.random() < 0.3:  # unsigned, or a signature that does not match
            cmd = dataclasses.replace(cmd, signature=r.choice(["", cmd.signature[::-1]]))
        return cmd.to_message(self.config.name)


def fuzz_topics(config: RobotConfig, gen: _Generator) -> list[tuple[str, type, bool, Callable[[bool], Any], bool]]:
    """Every topic the node subscribes to: (topic, type, latched, generator, stopping-only)."""
    c = config
    topics = [(c.topic(c.joint_state_topic), msg.JointState, False, gen.joint_state, False),
              *[(c.topic(v.topic), msg.Float64MultiArray, False, gen.vector, False) for v in c.vectors],
              (c.topic(c.estop_topic), msg.Bool, True, gen.boolean, True),
              (c.topic(c.operator_command_topic), msg.DiagnosticStatus, False, gen.operator_command, False)]
    if c.episode_topic:
        topics.append((c.topic(c.episode_topic), msg.DiagnosticStatus, False, gen.episode, False))
    return topics


def _slope_ratio(times_ns: list[int], commands: np.ndarray, rate_max: np.ndarray) -> tuple[float, int]:
    """Largest |Δcommand| / (Δt · rate limit) between consecutive commands, and how many pairs were checked.

    A step that only brings a command closer to zero (a stop: the safe command of a velocity
    interface, or the position bound) is not a slope the rate limit governs, so it is left out.
    """
    worst, checked = 0.0, 0
    for k in range(1, len(times_ns)):
        dt = (times_ns[k] - times_ns[k - 1]) / 1e9
        if dt <= 0:
            continue
        old, new = commands[k - 1], commands[k]
        braking = (np.abs(new) <= np.abs(old)) & ((np.sign(new) == np.sign(old)) | (new == 0))
        moving = ~braking
        if np.any(moving):
            checked += 1
            worst = max(worst, float(np.max(np.abs(new - old)[moving] / (dt * rate_max[moving]))))
    return worst, checked


def _bag_commands(bag_dir: Path, topic: str) -> tuple[list[int], np.ndarray]:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    rows = []
    bags = sorted(p for p in bag_dir.iterdir() if p.is_dir() and any(p.glob("*.mcap")))
    store = get_typestore(Stores.ROS2_JAZZY)
    for path in bags:
        try:
            with AnyReader([path], default_typestore=store) as reader:
                for conn, t, raw in reader.messages():
                    if conn.topic == topic:
                        rows.append((t, list(reader.deserialize(raw, conn.msgtype).data)))
        except Exception:  # noqa: BLE001 - a bag cut short by the node's end: its readable part is enough
            continue
    rows.sort(key=lambda row: row[0])
    return [t for t, _ in rows], np.array([c for _, c in rows], dtype=float).reshape(len(rows), -1)


def run_fuzz(policy: str | Path, work: str | Path, domain_id: int, messages: int = 5000, seed: int = 0,
             rate_hz: float = 2500.0, env: dict[str, str] | None = None, python: str = sys.executable,
             rt_priority: int = 0, quiet_fraction: float = 0.8) -> dict[str, Any]:
    """Fuzz a node process on ``domain_id``; returns ``{"figures": {...}, "details": {...}}``.

    ``messages`` hostile messages go out at about ``rate_hz`` while a well-behaved robot publishes
    joint states and the goal at the control rate. The first ``quiet_fraction`` of them leave out
    stopping messages (see the module docstring).
    """
    from steer.robot.closed_loop import send_signed_command
    from steer.robot.dds_transport import DdsTransport
    from steer.robot.keys import init_keys, load_private_key, public_key_hex
    from steer.robot.promotion import file_sha256

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    operator = load_private_key(init_keys(work / "operator", overwrite=True)[0])
    base = load_robot_config()
    data = json.loads(json.dumps(base.to_dict()))
    data["trusted_operator_keys"] = [public_key_hex(operator.public_key())]
    for j in data["command_joints"]:
        j["command_rate_max"] = FUZZ_RATE_MAX
    limits = work / "fuzz_robot.yaml"
    limits.write_text(yaml.safe_dump(data))
    config = RobotConfig.from_yaml(limits)
    rate_max = np.array([j.command_rate_max for j in config.command_joints])
    vmax = np.array([j.velocity_max for j in config.command_joints])
    bag_dir, stats_file, ready = work / "bags", work / "node_stats.json", work / "node_ready"
    for p in (stats_file, ready):
        p.unlink(missing_ok=True)
    # The node's stderr goes to a file: a pipe read only at the end fills up (refusals are logged) and
    # would block the node on a write.
    node_err_path = work / "node.err"
    node_err = open(node_err_path, "w")
    node = subprocess.Popen(
        [python, "-m", "steer.robot.processes", "node",
         json.dumps({"robot": {"limits": str(limits)}, "policy": str(policy), "domain_id": domain_id,
                     "bag_dir": str(bag_dir), "stats": str(stats_file), "ready_file": str(ready),
                     "rt_priority": rt_priority})],
        env=env, stderr=node_err)
    rng = random.Random(seed)
    gen = _Generator(config, rng, Path(policy).resolve())
    gen.policy_sha256 = file_sha256(policy)
    gen.forger = load_private_key(init_keys(work / "forger", overwrite=True)[0])
    transport = DdsTransport(domain_id)
    try:
        topics = fuzz_topics(config, gen)
        pubs = {t: transport.publisher(t, ty, latched=lat) for t, ty, lat, _, _ in topics}
        joint_pub = pubs[config.topic(config.joint_state_topic)]
        goal_pub = pubs[config.topic(config.vectors[0].topic)]
        cmd_sub = transport.subscription(config.command_topic, msg.Float64MultiArray)
        safety_sub = transport.subscription(config.topic(config.safety_topic), msg.DiagnosticStatus)
        commands: list[np.ndarray] = []
        states: list[tuple[str, str, bool]] = []

        def robot_tick() -> None:
            joint_pub.publish(msg.JointState(header=msg.Header(stamp=msg.stamp_now()), name=list(config.joints),
                                             position=[0.0] * len(config.joints),
                                             velocity=[0.0] * len(config.joints)))
            goal_pub.publish(msg.Float64MultiArray(data=[0.1, -0.1]))

        def drain() -> None:
            for m, _ in cmd_sub.take():
                commands.append(np.asarray(m.data, dtype=float))
            for m, _ in safety_sub.take():
                try:
                    s = SafetyState.from_message(m)
                except Exception:  # noqa: BLE001 - only the node publishes here
                    continue
                key = (s.mode, s.policy_sha256, bool(getattr(s, "armed", False)))
                if not states or states[-1] != key:
                    states.append(key)

        deadline = time.monotonic() + 60
        while not (ready.exists() and joint_pub.matched() and cmd_sub.matched()):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start: {node_err_path.read_text()[-2000:]}")
            time.sleep(0.05)
        # The operator arms the node (signed); the fuzz later replays this very message.
        signed = []
        send_signed_command(transport, config, operator, "arm", gen.policy_sha256, until=lambda s: s.armed,
                            alive=lambda: node.poll() is None, on_send=signed.append)
        gen.genuine = signed[-1]
        period = config.control_period_s
        next_tick = time.monotonic()
        while time.monotonic() < deadline:  # the node runs the policy on the robot's stream
            robot_tick()
            time.sleep(period)
            drain()
            if states and states[-1][0] == "running" and len(commands) > 5:
                break
        else:
            raise RuntimeError("the node did not start running on the robot's joint states.")
        baseline_states = len(states)
        rss_start = _rss_mb(node.pid)
        rss_max = rss_start
        commands_before = len(commands)
        sent = 0
        per_topic: dict[str, int] = {}
        quiet = [t for t in topics if not t[4]]
        start = time.monotonic()
        next_tick = start
        next_rss = start
        while sent < messages and node.poll() is None:
            now = time.monotonic()
            if now >= next_tick:
                robot_tick()
                next_tick += period
                drain()
            if now >= next_rss:
                rss_max = max(rss_max, _rss_mb(node.pid))
                next_rss = now + 0.1
            stopping = sent >= quiet_fraction * messages
            burst = min(messages - sent, max(1, int(rate_hz * period / 5)))
            for _ in range(burst):
                topic, _, _, make, _ = rng.choice(topics if stopping else quiet)
                pubs[topic].publish(make(stopping))
                per_topic[topic] = per_topic.get(topic, 0) + 1
                sent += 1
            target = start + sent / rate_hz
            pause = min(target, next_tick) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        fuzz_s = time.monotonic() - start
        for _ in range(int(0.5 / period)):  # the robot goes on a little: the node must still answer
            robot_tick()
            time.sleep(period)
            drain()
            rss_max = max(rss_max, _rss_mb(node.pid))
        alive = node.poll() is None
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        drain()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        transport.close()
    node_err.close()
    stderr = node_err_path.read_text(errors="replace")
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    received = np.array(commands[commands_before:], dtype=float) if commands else np.zeros((0, len(vmax)))
    out_of_limit = int(sum(1 for c in received if c.shape != vmax.shape or not np.all(np.isfinite(c))
                           or np.any(np.abs(c) > vmax + 1e-12)))
    times, bagged = _bag_commands(bag_dir, config.command_topic) if bag_dir.exists() else ([], np.zeros((0, 2)))
    ratio, pairs = _slope_ratio(times, bagged, rate_max)
    # Any participant may stop the robot; anything else (running again, arming, another policy) is a
    # change only an operator may make.
    changes = 0
    for before, after in zip(states[baseline_states - 1:], states[baseline_states:]):
        if after[1] != before[1] or (after[2] and not before[2]) or after[0] not in ("stopped", "estopped"):
            changes += 1
    figures = {"messages": sent, "crashes": int(not alive or node.returncode not in (0, -signal.SIGINT)),
               "out_of_limit": out_of_limit, "max_slope_ratio": ratio,
               "rss_growth_mb": max(0.0, rss_max - rss_start), "unauthenticated_state_changes": changes}
    details = {"fuzz_seconds": fuzz_s, "messages_per_topic": per_topic, "commands_received": len(received),
               "commands_in_bags": len(times), "slope_pairs_checked": pairs, "rss_start_mb": rss_start,
               "rss_max_mb": rss_max, "node_returncode": node.returncode, "state_changes": states,
               "node_stats": stats, "node_stderr_tail": stderr[-2000:]}
    return {"figures": figures, "details": details}


def main(argv: list[str] | None = None) -> int:
    """``python -m steer.robot.fuzz POLICY WORK DOMAIN [MESSAGES]``: one run, its figures as JSON."""
    from steer.robot.dds_transport import use_loopback_config

    argv = sys.argv[1:] if argv is None else argv
    use_loopback_config()
    result = run_fuzz(argv[0], argv[1], int(argv[2]), int(argv[3]) if len(argv) > 3 else 5000,
                      env=dict(os.environ))
    print(json.dumps(result["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
