"""The simulated robot: a MuJoCo task driven over ROS 2 topics, paced in real time.

Every control period it applies the latest command, steps the task once and
publishes what a ros2_control robot would: ``sensor_msgs/JointState`` for all joints
(positions and velocities), the task's other observations (the goal) as
``std_msgs/Float64MultiArray``, and the episode status as
``diagnostic_msgs/DiagnosticStatus``. Its own command timeout makes it hold (zero
velocity) when no fresh command arrived, as a hardware interface with a
command watchdog does.

Per step it publishes the episode status and vectors before the joint states, so a
node that ticks on joint states always has the matching goal and episode.

Resets: with ``reset_mode: auto`` the next episode starts right after one ends (a robot with its
own reset routine). With ``reset_mode: operator`` the robot holds still after each episode, keeps
publishing its joint states (so the node's watchdog stays quiet) and an ``awaiting_reset`` episode
status about once a second, and starts the next episode only when the operator confirms the reset
with a signed ``reset_done`` for that episode on ``<ns>/operator_command``. Anyone can stop, only the
operator can start: the command is checked like the node's (:class:`steer.robot.keys.CommandVerifier`
against ``trusted_operator_keys``); refusals are counted and reported in the ``awaiting_reset`` status.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from steer.robot import messages as msg
from steer.robot.config import RobotConfig
from steer.robot.errors import RobotError
from steer.robot.keys import CommandRefused, CommandVerifier
from steer.robot.spec import EpisodeStatus, OperatorCommand, SafetyState, WireError
from steer.robot.transport import Transport

DEFAULT_TASK = "steer/PlanarPush-v0"
MAX_RESET_COMMANDS_PER_PASS = 8
"""Operator commands checked per wait (each costs a signature check); more are refused unchecked."""
AWAITING_EVERY_S = 1.0
"""Wall-clock seconds between two ``awaiting_reset`` statuses while the robot waits (late listeners learn it)."""


@dataclass
class EpisodeResult:
    """Outcome of one simulated episode."""

    episode: int
    seed: int
    success: bool
    ret: float
    steps: int
    late_steps: int
    """Steps for which no command arrived within the period (the robot used an older one)."""
    held_steps: int
    """Steps for which the command timeout made the robot hold."""
    final_obs: list[float] = field(default_factory=list)
    """Observation after the last step (to compare trajectories with an in-process run)."""


@dataclass
class SimStats:
    """Everything the simulated robot measured."""

    episodes: list[EpisodeResult] = field(default_factory=list)
    """Finished episodes (one cut short by a stop is not among them)."""
    late_steps: int = 0
    """Steps, over all episodes, whose command had not arrived within the period."""
    overruns: int = 0
    """Steps the robot itself took more than half a period after their deadline (starved of CPU)."""
    late_step_indices: list[int] = field(default_factory=list)
    """Index (over the whole run) of the first late steps, to see where they happen."""
    held_steps: int = 0
    """Steps, over all episodes, for which the command timeout made the robot hold."""
    latencies_ns: list[int] = field(default_factory=list)
    """Joint state published → first command received, per step."""
    step_times_ns: list[int] = field(default_factory=list)
    """Monotonic time of every physics step."""
    unacked_starts: int = 0
    """Episode starts whose goal and status the node had not acknowledged when the first joint state went out."""
    awaiting_reset: str = ""
    """Operator reset mode: the episode after which the robot now waits for a signed reset_done (empty: not)."""
    resets_confirmed: int = 0
    """Resets the operator confirmed with a valid signed reset_done."""
    reset_wait_s: list[float] = field(default_factory=list)
    """Seconds the robot waited for each confirmed reset."""
    operator_refusals: int = 0
    """reset_done commands refused (unsigned, untrusted, stale, replayed, foreign, another episode, not waiting)."""
    last_refusal: str = ""
    """The last refusal's one sentence."""

    def summary(self, period_s: float) -> dict[str, Any]:
        """Success rate, latency percentiles (ms), tick jitter and missed deadlines; a figure with nothing to
        measure (no episode ended, no command came) is None, which JSON writes as null (NaN is not JSON)."""
        lat = np.asarray(self.latencies_ns, dtype=float) / 1e6
        steps = np.diff(np.asarray(self.step_times_ns, dtype=float)) / 1e6
        jitter = np.abs(steps - period_s * 1e3) if len(steps) else np.zeros(0)
        n = len(self.episodes)
        return {
            "episodes": n,
            "success_rate": float(np.mean([e.success for e in self.episodes])) if n else None,
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "jitter_p99_ms": float(np.percentile(jitter, 99)) if len(jitter) else None,
            "missed_deadlines": int(self.late_steps),
            "missed_deadline_steps": list(self.late_step_indices),
            "overruns": int(self.overruns),
            "latency_max_ms": float(lat.max()) if len(lat) else None,
            "held_steps": int(self.held_steps),
            "steps": int(len(self.step_times_ns)),
            "unacked_starts": int(self.unacked_starts),
            "resets_confirmed": int(self.resets_confirmed),
            "reset_wait_s": [round(w, 3) for w in self.reset_wait_s],
            "operator_refusals": int(self.operator_refusals),
            "last_refusal": self.last_refusal,
            "results": [asdict(e) for e in self.episodes],
        }


class SimRobot:
    """A gymnasium MuJoCo task exposed as a ROS 2 robot."""

    def __init__(self, config: RobotConfig, transport: Transport, task: str = DEFAULT_TASK, seed: int = 0,
                 env: Any = None, task_kwargs: dict[str, Any] | None = None, progress_file: str | None = None):
        self.config, self.transport, self.seed = config, transport, seed
        self.progress_file = progress_file
        if env is None:
            import gymnasium as gym

            import steer.sim  # noqa: F401 - registers the steer tasks

            env = gym.make(task, **(task_kwargs or {}))
        self.env = env
        base = env.unwrapped
        names = tuple(getattr(base, "obs_names", ()))
        action_names = tuple(getattr(base, "action_names", ()))
        if not names or not action_names:
            raise RobotError(f"task {task!r} has no obs_names/action_names, so its robot cannot be published by name.")
        try:
            self._joint_pos = [names.index(f"{j}.pos") for j in config.joints]
            self._joint_vel = [names.index(f"{j}.vel") for j in config.joints]
            self._vectors = [(v, [names.index(f"{v.name}.{f}") for f in v.fields]) for v in config.vectors]
            # Commands arrive in the robot's command order; the task takes its own order.
            self._to_task = [config.command_joint_names.index(a.split(".")[0]) for a in action_names]
        except ValueError as err:
            raise RobotError(f"robot config {config.name!r} does not fit task {task!r} ({err}); "
                             "use the task's robot config.") from None
        rate = float(getattr(base, "control_rate_hz", config.control_rate_hz))
        if abs(rate - config.control_rate_hz) > 1e-6 * rate:
            raise RobotError(f"task {task!r} steps at {rate:g} Hz but the robot config says "
                             f"{config.control_rate_hz:g} Hz; set control_rate_hz to {rate:g}.")
        c = config
        self._status_pub = transport.publisher(c.topic(c.episode_topic), msg.DiagnosticStatus) \
            if c.episode_topic else None
        self._vector_pubs = {v.name: transport.publisher(c.topic(v.topic), msg.Float64MultiArray)
                             for v in c.vectors}
        self._joint_pub = transport.publisher(c.topic(c.joint_state_topic), msg.JointState)
        self._command_sub = transport.subscription(c.command_topic, msg.Float64MultiArray)
        self._safety_sub = transport.subscription(c.topic(c.safety_topic), msg.DiagnosticStatus) \
            if c.safety_topic else None
        self.period_ns = int(c.control_period_s * 1e9)
        self.reset_ack_budget_s = 0.25 * c.control_period_s
        """Longest wait, at an episode start, for the node to acknowledge the new goal and status."""
        self.timeout_ns = int(c.command_timeout_ms / min(c.time_scale, 1.0) * 1e6)
        self.stats = SimStats()
        self._command = np.zeros(len(c.command_joints))
        self._command_ns: int | None = None
        self._operator_sub = self.verifier = None
        if c.reset_mode == "operator":
            if not c.trusted_operator_keys:
                raise RobotError("reset_mode operator needs trusted_operator_keys in the robot config (the operator "
                                 "confirms each reset with a signed reset_done); add the line `steer keys init` "
                                 "printed.")
            # Volatile, as for the node: a restarted robot never sees an old confirmation again.
            self._operator_sub = transport.subscription(c.topic(c.operator_command_topic), msg.DiagnosticStatus)
            self.verifier = CommandVerifier(c.trusted_operator_keys, c.namespace, c.command_max_age_s)
        self._reset_confirmed = False
        self._last_refusal_report = -float("inf")
        self._last_obs: np.ndarray | None = None  # where the last episode left the robot (it holds there)

    def wait_for_node(self, timeout_s: float) -> bool:
        """Wait until a node subscribes to everything the robot publishes and publishes commands.

        Every publisher must be matched: endpoints are discovered one by one, and a goal or
        episode status sent before its reader is known would be lost (the topics are volatile).
        """
        publishers = [self._joint_pub, *self._vector_pubs.values()]
        if self._status_pub is not None:
            publishers.append(self._status_pub)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._node_reads_everything(publishers):
                return self._handshake(publishers, end)
            time.sleep(0.02)
        return False

    def _node_reads_everything(self, publishers: list) -> bool:
        if self._command_sub.matched() == 0 or any(p.matched() == 0 for p in publishers):
            return False
        # Where the transport tells participants apart, the node (whoever sends commands) itself
        # must read every topic: a console or a recorder reading the joint states does not count.
        nodes = getattr(self._command_sub, "matched_participants", lambda: None)()
        if nodes is None:
            return True
        return all(nodes & p.matched_participants() for p in publishers)

    def _handshake(self, publishers: list, end: float) -> bool:
        """Send one harmless message per topic and wait until the node acknowledged each.

        A writer can match a reader before the reader knows the writer; what it sends then
        arrives only after a retransmission, which would put the first episode's goal or
        status behind its first joint state. The node ignores all of these messages: a
        ``connect`` status, zero vectors, and a joint state without joints.
        """
        if self._status_pub is not None:
            self._status_pub.publish(EpisodeStatus("connect").to_message(self.config.name))
        for v, idx in self._vectors:
            self._vector_pubs[v.name].publish(msg.Float64MultiArray(data=[0.0] * len(idx)))
        self._joint_pub.publish(msg.JointState())
        if not all(p.wait_acked(max(0.0, end - time.monotonic())) for p in publishers):
            return False
        return self._node_sees_command_reader(end)

    def _node_sees_command_reader(self, end: float) -> bool:
        """Wait until the node reports that its command writer knows this robot's reader.

        Discovery is per direction: until then the node's first commands would go nowhere
        (volatile topic). The node says so in its safety state; a commander without a safety
        state (a plain teleop node) is taken as ready.
        """
        if self._safety_sub is None:
            return True
        grace = time.monotonic() + 1.0  # time for the node's safety writer to be discovered
        while time.monotonic() < end:
            if self._safety_sub.matched() == 0 and time.monotonic() > grace:
                return True
            for status, _ in self._safety_sub.take():
                try:
                    if SafetyState.from_message(status).command_subscribers > 0:
                        return True
                except WireError:
                    continue  # not a policy node's safety state
            self.transport.wait(0.01)
        return False

    # -- publishing --------------------------------------------------------------
    def _publish(self, obs: np.ndarray, status: EpisodeStatus | None) -> int:
        if status is not None and self._status_pub is not None:
            self._status_pub.publish(status.to_message(self.config.name))
        for v, idx in self._vectors:
            self._vector_pubs[v.name].publish(msg.Float64MultiArray(data=[float(obs[i]) for i in idx]))
        if status is not None:
            # A new episode changes the goal: the node should hold the new status and vectors
            # before it sees the episode's first joint state (a lost and resent sample would
            # otherwise arrive after it). The wait is bounded so that joint states keep their
            # cadence through the reset: a robot that goes quiet trips the node's watchdog.
            end = time.monotonic() + self.reset_ack_budget_s
            for pub in [self._status_pub, *self._vector_pubs.values()]:
                if pub is not None and not pub.wait_acked(max(0.0, end - time.monotonic())):
                    self.stats.unacked_starts += 1
                    break
        state = msg.JointState(header=msg.Header(stamp=msg.stamp_now()), name=list(self.config.joints),
                               position=[float(obs[i]) for i in self._joint_pos],
                               velocity=[float(obs[i]) for i in self._joint_vel])
        sent = time.monotonic_ns()  # before the write: the latency covers serialization and both hops
        self._joint_pub.publish(state)
        return sent

    def _absorb_commands(self, since_ns: int) -> bool:
        """Take pending commands; True if one arrived after ``since_ns``."""
        if self._safety_sub is not None:
            self._safety_sub.take()  # read only during the handshake; drained so waits do not return at once
        if self._operator_sub is not None:
            self._take_operator_commands()
        fresh = False
        for m, recv in self._command_sub.take():
            data = np.asarray(m.data, dtype=np.float64)
            if data.shape == self._command.shape and np.all(np.isfinite(data)):
                self._command, self._command_ns = data, recv
                fresh = fresh or recv >= since_ns
        return fresh

    # -- operator resets --------------------------------------------------------
    def _take_operator_commands(self) -> None:
        """Check pending signed commands addressed to the robot (reset_done); the node's ones pass by."""
        for i, (m, _) in enumerate(self._operator_sub.take()):
            if i >= MAX_RESET_COMMANDS_PER_PASS:  # a flood must not stall the control loop
                self._refuse("reset_done refused: more than "
                             f"{MAX_RESET_COMMANDS_PER_PASS} operator commands arrived at once.")
                continue
            try:
                cmd = OperatorCommand.from_message(m)
                if cmd.command != "reset_done":
                    continue  # release, arm, promote, adapt_start: the node's
                self.verifier.verify(cmd, "reset_done")
                waiting = self.stats.awaiting_reset
                if not waiting:
                    raise CommandRefused("reset_done refused: the robot is not waiting for a reset.")
                if cmd.args.get("episode", "") != waiting:
                    raise CommandRefused(f"reset_done refused: it confirms the reset after episode "
                                         f"{cmd.args.get('episode', '')[:12]!r}; the robot waits after episode "
                                         f"{waiting}.")
                self._reset_confirmed = True
            except RobotError as err:  # WireError (malformed) or CommandRefused
                self._refuse(str(err))

    def _refuse(self, reason: str) -> None:
        self.stats.operator_refusals += 1
        self.stats.last_refusal = reason
        if time.monotonic() - self._last_refusal_report >= 0.1:  # a flood must not flood stderr
            self._last_refusal_report = time.monotonic()
            print(f"sim robot: {reason}", file=sys.stderr, flush=True)

    def _awaiting_status(self, episode: str, seed: int) -> EpisodeStatus:
        return EpisodeStatus("awaiting_reset", episode, seed=seed, operator_refusals=self.stats.operator_refusals,
                             last_refusal=self.stats.last_refusal)

    def _await_reset(self, index: int, end: float | None, should_stop) -> bool:
        """Hold still after episode ``index`` until a signed reset_done for it arrives; False when stopped first.

        Joint states keep their cadence (the last positions, zero velocities) so the node's watchdog stays
        quiet; its commands are taken and ignored. The ``awaiting_reset`` status goes out at once, about
        once a second, and after each refusal (so the operator sees it)."""
        episode, seed = str(index), self.seed + index
        held = np.array(self._last_obs, dtype=float)
        held[self._joint_vel] = 0.0  # holding still
        self.stats.awaiting_reset, self._reset_confirmed = episode, False
        started = time.monotonic()
        next_status, refusals = started, self.stats.operator_refusals
        deadline = time.monotonic_ns()
        try:
            while not should_stop() and (end is None or time.monotonic() < end):
                if self._status_pub is not None and (time.monotonic() >= next_status
                                                     or self.stats.operator_refusals != refusals):
                    self._status_pub.publish(self._awaiting_status(episode, seed).to_message(self.config.name))
                    next_status, refusals = time.monotonic() + AWAITING_EVERY_S, self.stats.operator_refusals
                self._publish(held, None)
                deadline += self.period_ns
                while (now := time.monotonic_ns()) < deadline:
                    self.transport.wait((deadline - now) / 1e9)
                    self._absorb_commands(deadline)
                    if self._reset_confirmed:
                        self.stats.resets_confirmed += 1
                        self.stats.reset_wait_s.append(time.monotonic() - started)
                        return True
                deadline = max(deadline, time.monotonic_ns() - self.period_ns)  # after a stall: no burst
            return False
        finally:
            self.stats.awaiting_reset = ""

    # -- the loop ----------------------------------------------------------------
    def run(self, episodes: int, duration_s: float | None = None, should_stop=lambda: False) -> SimStats:
        """Run ``episodes`` episodes (0: until stopped) in real time; seeds ``seed, seed+1, …``.

        In operator reset mode each episode after the first starts only on the operator's signed reset_done."""
        end = None if duration_s is None else time.monotonic() + duration_s
        index = 0
        while not should_stop() and (episodes <= 0 or index < episodes):
            if end is not None and time.monotonic() >= end:
                break
            if not self._episode(index, end, should_stop):
                break
            index += 1
            more = episodes <= 0 or index < episodes
            if more and self.config.reset_mode == "operator" and not self._await_reset(index - 1, end, should_stop):
                break
        return self.stats

    def _episode(self, index: int, end: float | None, should_stop) -> bool:
        seed = self.seed + index
        obs, _ = self.env.reset(seed=seed)
        status = EpisodeStatus("start", str(index), seed=seed)
        published = self._publish(obs, status)
        deadline = published + self.period_ns
        ret, steps, late, held, success = 0.0, 0, 0, 0, False
        while True:
            got = False
            while (now := time.monotonic_ns()) < deadline:
                self.transport.wait((deadline - now) / 1e9)
                if self._absorb_commands(published) and not got:
                    got = True
                    self.stats.latencies_ns.append(self._command_ns - published)
            got = self._absorb_commands(published) or got
            if time.monotonic_ns() - deadline > self.period_ns // 2:
                self.stats.overruns += 1
            late += int(not got)
            if not got:
                self.stats.late_steps += 1
                if len(self.stats.late_step_indices) < 20:
                    self.stats.late_step_indices.append(len(self.stats.step_times_ns))
            if self._command_ns is None or time.monotonic_ns() - self._command_ns > self.timeout_ns:
                command = np.zeros_like(self._command)  # command timeout: hold still
                held += 1
                self.stats.held_steps += 1
            else:
                command = self._command
            self.stats.step_times_ns.append(time.monotonic_ns())
            obs, reward, terminated, truncated, info = self.env.step(command[self._to_task])
            ret += float(reward)
            steps += 1
            done = terminated or truncated
            stop = should_stop() or (end is not None and time.monotonic() >= end)
            if done or stop:
                self._last_obs = obs
                success = bool(info.get("is_success", False))
                if done:
                    result = EpisodeResult(index, seed, success, ret, steps, late, held, [float(x) for x in obs])
                    self.stats.episodes.append(result)
                    if self.progress_file:
                        with open(self.progress_file, "a") as f:  # one JSON line per finished episode
                            f.write(json.dumps(asdict(result)) + "\n")
                if self._status_pub is not None:
                    self._status_pub.publish(EpisodeStatus("end", str(index), seed=seed, steps=steps,
                                                           is_success=success).to_message(self.config.name))
                return done and not stop
            published = self._publish(obs, None)
            # Absolute deadlines keep the rate; after a late step the node still gets at least
            # 0.6 of a period to answer (the node merges joint states closer than a quarter period).
            deadline = max(deadline + self.period_ns, published + int(0.6 * self.period_ns))
