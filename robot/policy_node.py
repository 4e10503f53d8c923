"""The policy node: observations in, shielded commands out, over any transport.

The node builds the observation vector by name from ``sensor_msgs/JointState`` and
``std_msgs/Float64MultiArray`` topics, runs the ONNX policy chunk by chunk, passes
every command through the :class:`~steer.robot.shield.SafetyShield`, publishes it as
``std_msgs/Float64MultiArray`` on ``<controller>/commands`` and publishes the safety
state as ``diagnostic_msgs/DiagnosticStatus``.

Ticks follow the joint states (``trigger="observation"``: one tick per joint-state
message, at most at the control rate on average however fast they come; for robots that
publish joint states at the control rate, such as the simulated one) or a timer
(``trigger="timer"``). Between ticks the node checks the watchdog, so a robot that
goes silent gets a safe command within the watchdog time plus a quarter period.

Anyone can stop, only an operator can start: any participant may latch the e-stop on
``<ns>/estop``, but releasing it, arming and promoting a policy take a signed
:class:`~steer.robot.spec.OperatorCommand` on ``<ns>/operator_command`` (volatile), checked by
:class:`~steer.robot.keys.CommandVerifier` against the robot config's ``trusted_operator_keys``;
``release`` and ``arm`` must name the sha256 of the running policy. The node starts unarmed and
is unarmed again after an e-stop. Refused commands change nothing; they are counted and the last
reason is in the safety state and on stderr.

Steered mode (``steered=True``, ``steer robot run --steered``): the policy's ``noise`` input comes, chunk by
chunk, from the learner's :class:`~steer.robot.spec.LatentChunk` messages on ``<ns>/latent``, accepted only
inside the adaptation session a signed ``adapt_start`` armed (an e-stop ends it) and checked like any input
(:class:`~steer.robot.intake.LatentIntake`). The node never waits for a latent: a chunk whose latent has not
arrived runs the baseline's noise, counted in the safety state. An episode's chunk 0 is a lead-in: the
node holds still for :data:`~steer.robot.spec.STEERED_LEAD_IN_STEPS` tick(s), on time, while the learner
chooses chunk 1 from the episode's first observation. Every query's noise goes out on
``<ns>/latent_executed`` with the observation it ran on, so the learner learns from what ran. The commands
pass the shield as always.

A signed ``promote`` names a file in the policies directory (see :mod:`steer.robot.promotion`); it
is read, checked and loaded on a background thread, and the node swaps it in between two ticks, at
a chunk boundary (or at once when not running), and reports it (or why it was refused) in the
safety state.

Hostile traffic cannot crash the node or grow its memory: received messages over the size
bounds (:data:`~steer.robot.intake.MAX_BYTES` before decoding where the transport allows, :data:`~steer.robot.intake.MAX_SEQUENCE`,
:data:`~steer.robot.intake.MAX_TEXT`) are dropped and counted in ``rejected_messages``, only configured joints are
kept, each observed joint must be fresh (a joint state for other joints refreshes nothing),
malformed fields are refused, and bags are written by a background thread with a bounded queue.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from steer.robot import messages as msg
from steer.robot.intake import (MAX_STAMP_AHEAD_NS, BoundedTransport, IntakeCounters, LatentIntake,
                                ObservationAssembler)
from steer.robot.bag import EpisodeBagWriter
from steer.robot.config import RobotConfig
from steer.robot.errors import PolicyRefused, RobotError
from steer.robot.keys import CommandRefused, CommandVerifier
from steer.robot.onnx_policy import ChunkExecutor, OnnxPolicy
from steer.robot.promotion import PolicyLoader, PromotionRequest, file_sha256
from steer.robot.shield import Mode, SafetyShield
from steer.robot.spec import (ROBOT_COMMANDS, STEERED_LEAD_IN_STEPS, EpisodeStatus, LatentChunk, OperatorCommand,
                              SafetyState)
from steer.robot.transport import Transport


MAX_OPERATOR_COMMANDS_PER_SPIN = 8
"""Operator commands checked per spin (a quarter period at most); more are refused unchecked."""


class Clock(Protocol):
    """The node's time source; tests pass a fake one so that time passes only when they say."""

    def monotonic_ns(self) -> int:
        """Monotonic time (ns): ticks, the watchdog, latencies. Receive times of messages use the same clock."""

    def time_ns(self) -> int:
        """Wall-clock time since the epoch (ns): message stamps and bag times."""


class SystemClock:
    """The real clocks (:func:`time.monotonic_ns`, :func:`time.time_ns`)."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def time_ns(self) -> int:
        return time.time_ns()


@dataclass
class NodeStats:
    """Timing of the node's ticks."""

    latencies_ns: list[int] = field(default_factory=list)
    """Joint state received → command published, per policy tick."""
    tick_times_ns: list[int] = field(default_factory=list)
    """Monotonic time of every policy tick."""
    commands: int = 0
    """Commands published."""
    safe_commands: int = 0
    """Of those, safe (hold or zero) commands from the shield instead of the policy."""
    queries: int = 0
    """Policy calls (one per chunk)."""
    promotions: int = 0
    """Promoted policies swapped in."""
    refusals: int = 0
    """Promoted policies refused (the running policy kept commanding)."""
    operator_refusals: int = 0
    """Operator commands refused (unsigned, untrusted, stale, replayed, foreign, other policy)."""

    def summary(self) -> dict[str, float]:
        """p50/p99 latency (ms), tick jitter p99 (ms) and counts."""
        lat = np.asarray(self.latencies_ns, dtype=float) / 1e6
        out = {"ticks": float(len(self.tick_times_ns)), "commands": float(self.commands),
               "safe_commands": float(self.safe_commands), "queries": float(self.queries),
               "promotions": float(self.promotions), "refusals": float(self.refusals),
               "operator_refusals": float(self.operator_refusals)}
        if len(lat):
            out |= {"latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
                    "latency_max_ms": float(lat.max())}
        return out


class PolicyNode:
    """Transport-agnostic policy node; ``spin_once`` does one round of work."""

    def __init__(self, config: RobotConfig, policy: OnnxPolicy, transport: Transport,
                 bag: EpisodeBagWriter | None = None, trigger: str = "observation",
                 clock: Clock | None = None, steered: bool = False):
        if trigger not in ("observation", "timer"):
            raise ValueError("trigger must be 'observation' or 'timer'")
        policy.check_robot(config)
        if steered and not policy.spec.noise_input:
            raise PolicyRefused(f"policy {str(policy.path)!r} has no 'noise' input, so it cannot be steered; "
                                "run a BC diffusion policy exported with `steer export` on a BC run.")
        self.steered = steered
        self.config, self.policy, self.transport, self.bag = config, policy, transport, bag
        self.trigger = trigger
        self.clock = SystemClock() if clock is None else clock
        self.shield = SafetyShield(config)
        self.executor = ChunkExecutor(policy)
        self.order = policy.command_order(config)
        self.assembler = ObservationAssembler(config, policy.spec.obs_names)
        self.stats = NodeStats()
        self.period_ns = int(config.control_period_s * 1e9)
        self.joints = config.command_joint_names
        c = config
        # Every subscription drops (and counts) messages over the size bounds before the node reads them.
        self.intake = IntakeCounters()
        transport = BoundedTransport(self.transport, self.intake)
        self._joint_sub = transport.subscription(c.topic(c.joint_state_topic), msg.JointState)
        self._vector_subs = {v.name: transport.subscription(c.topic(v.topic), msg.Float64MultiArray)
                             for v in c.vectors}
        self._estop_sub = transport.subscription(c.topic(c.estop_topic), msg.Bool, latched=True)
        # Volatile: a restarted node never sees (and so never re-applies) an old command.
        self._operator_sub = transport.subscription(c.topic(c.operator_command_topic), msg.DiagnosticStatus)
        self.verifier = CommandVerifier(c.trusted_operator_keys, c.namespace, c.command_max_age_s,
                                        clock=lambda: self.clock.time_ns() / 1e9)
        self.last_refusal = ""
        self._last_refusal_report_ns = -(1 << 62)
        self._episode_sub = (transport.subscription(c.topic(c.episode_topic), msg.DiagnosticStatus)
                             if c.episode_topic else None)
        self.loader = PolicyLoader(config)
        self.policy_path = policy.path.resolve()
        self.policy_sha256 = file_sha256(policy.path)
        self.promote_error = ""
        self._command_type = {"Float64MultiArray": msg.Float64MultiArray, "JointTrajectory": msg.JointTrajectory,
                              "Twist": msg.Twist}[c.command_message]
        self._command_pub = transport.publisher(c.command_topic, self._command_type)
        self._safety_pub = transport.publisher(c.topic(c.safety_topic), msg.DiagnosticStatus)
        spec = policy.spec
        self.latents = LatentIntake((spec.chunk_len, spec.action_dim), spec.latent_noise_bound)
        if steered:
            # Volatile, keep-last: a latent is only worth anything for its own chunk.
            self._latent_sub = transport.subscription(c.topic(c.latent_topic), msg.DiagnosticStatus)
            self._executed_pub = transport.publisher(c.topic(c.latent_executed_topic), msg.DiagnosticStatus)
        self._estop_pressed = False
        self._episode: str | None = None
        self._last_tick_ns: int | None = None
        self._next_observed_tick_ns: int | None = None  # earliest time a joint state may tick again
        self._pending_recv_ns: int | None = None  # a joint state not yet acted on (it came before its tick)
        self._bag_error = ""
        self._intake_error_reported = False
        self._last_command_ns = 0
        self._last_safety_ns = 0
        self._stale = False
        self._lead_in_left = 0
        """Steered mode: lead-in ticks (holding still) left before chunk 1 starts."""
        self._events_seen = 0
        self._command_subscribers = 0
        self._safety_listeners = 0
        if self.bag is not None and not c.episode_topic:
            # Robots without an episode topic get one bag for the whole run.
            self.bag.start_episode(0)

    # -- operator commands -------------------------------------------------------
    def _handle_operator_command(self, m: msg.DiagnosticStatus, now_ns: int) -> None:
        """Release, arm or promote, if signed by a trusted operator for this robot and policy; else report it."""
        try:
            cmd = OperatorCommand.from_message(m)
            if cmd.command in ROBOT_COMMANDS:
                return  # for the robot itself (reset_done), which checks it; nothing the node does
            handlers = {"release": self._release, "arm": self._arm, "promote": self._promote,
                        "adapt_start": self._adapt_start}
            if cmd.command not in handlers:
                raise CommandRefused(f"operator command {cmd.command[:40]!r} refused: this node takes "
                                     f"{', '.join(handlers)}.")
            # release and arm name the policy that runs now; promote names the new file (checked on loading).
            # release, arm and adapt_start name the policy that runs now; promote names the new file.
            self.verifier.verify(cmd, cmd.command, None if cmd.command == "promote" else self.policy_sha256)
            handlers[cmd.command](cmd, now_ns)
        except RobotError as err:  # WireError (malformed) or CommandRefused
            self._refuse_command(str(err), now_ns)

    def _refuse_command(self, reason: str, now_ns: int) -> None:
        self.last_refusal = reason
        self.stats.operator_refusals += 1
        # A flood of bad commands must not flood stderr, the safety topic or the bag: at most ten
        # reports a second; the count and the last reason still reach the next safety state.
        if now_ns - self._last_refusal_report_ns >= 100_000_000:
            self._last_refusal_report_ns = now_ns
            print(f"policy node: {reason}", file=sys.stderr, flush=True)
            self._publish_safety(now_ns, force=True, record=True)

    def _release(self, cmd: OperatorCommand, now_ns: int) -> None:
        """Clear a latched e-stop; the robot still needs a signed arm to move."""
        if self._estop_pressed:
            raise CommandRefused("release refused: the e-stop still reads pressed; release the button first.")
        if self.shield.mode == Mode.ESTOPPED:
            self.shield.reset_estop(now_ns)
            self.executor.reset()
            self._publish_safety(now_ns, force=True, record=True)

    def _arm(self, cmd: OperatorCommand, now_ns: int) -> None:
        """Let the policy command the robot: it starts on the next fresh observation."""
        if self.shield.mode == Mode.ESTOPPED:
            raise CommandRefused("arm refused: the e-stop is latched; send a signed release first.")
        if self.shield.mode in (Mode.IDLE, Mode.STOPPED):
            self.shield.arm(now_ns)
            self.executor.reset()
            self._publish_safety(now_ns, force=True, record=True)

    def _adapt_start(self, cmd: OperatorCommand, now_ns: int) -> None:
        """Arm an adaptation session: latents of this session may steer the policy's noise until an e-stop."""
        if not self.steered:
            raise CommandRefused("adapt_start refused: this node is not in steered mode (start it with --steered).")
        session = cmd.args.get("session", "")
        if not (session and len(session) <= 64 and session.isprintable()):
            raise CommandRefused("adapt_start refused: the command names no session (args.session, at most 64 "
                                 "printable characters).")
        if self.shield.mode == Mode.ESTOPPED:
            raise CommandRefused("adapt_start refused: the e-stop is latched; send a signed release first.")
        self.latents.arm(session)
        self._publish_safety(now_ns, force=True, record=True)

    def _promote(self, cmd: OperatorCommand, now_ns: int) -> None:
        name = cmd.args.get("policy", "")
        if not name:
            raise CommandRefused("promote refused: the command names no policy (args.policy).")
        request = PromotionRequest(name, cmd.policy_sha256.lower())
        if self.loader.requested == request:
            return  # already loading exactly these bytes
        if self.promote_error:
            self.promote_error = ""  # a new request: the last refusal no longer describes it
            self._publish_safety(now_ns, force=True)
        if request.sha256 == self.policy_sha256:
            self.loader.cancel()  # the newest request wins, and it asks for what already runs
            return
        self.loader.submit(request)

    def _refuse(self, reason: str, now_ns: int) -> None:
        self.promote_error = reason
        self.stats.refusals += 1
        print(f"policy node: {reason}", file=sys.stderr, flush=True)
        self._publish_safety(now_ns, force=True, record=True)

    def _swap_policy(self) -> None:
        """Take a finished load between two ticks: at a chunk boundary, or at once when not running.

        A refusal changes nothing that runs, so it is reported at once.
        """
        if not self.loader.ready():
            return
        running = self.shield.mode == Mode.RUNNING and not self._stale
        if running and not self.executor.at_boundary and self.loader.loaded():
            return  # the chunk in progress finishes open loop, as in training
        now = self.clock.monotonic_ns()
        request, policy, error = self.loader.take()
        if policy is None:
            self._refuse(error, now)  # the running policy keeps commanding
            return
        # The shield is left alone: its rate limit smooths the step between the two policies.
        self.policy, self.policy_path = policy, policy.path
        self.executor = ChunkExecutor(policy)
        self.order = policy.command_order(self.config)
        self.assembler.obs_names = policy.spec.obs_names
        self.policy_sha256 = request.sha256
        self.promote_error = ""
        self.stats.promotions += 1
        self._publish_safety(now, force=True, record=True)  # the bag shows which policy ran when

    # -- inputs ------------------------------------------------------------------
    def _handle_inputs(self) -> list[int]:
        """Consume every pending message; returns receive times of new joint states."""
        now = self.clock.monotonic_ns()
        for m, _ in self._estop_sub.take():  # before any command: a press in the same batch wins
            self._estop_pressed = bool(m.data)
            if m.data:
                self.shield.estop("e-stop pressed", now)
                self.latents.end()  # an e-stop ends the adaptation session
                self._publish_command(self.shield.filter(None, now, None).command, now, safe=True)
        for i, (m, _) in enumerate(self._operator_sub.take()):
            if i < MAX_OPERATOR_COMMANDS_PER_SPIN:
                self._handle_operator_command(m, now)
            else:  # each check costs a signature verification: a flood must not stall the control loop
                self._refuse_command(f"operator command refused: more than {MAX_OPERATOR_COMMANDS_PER_SPIN} "
                                     "arrived at once.", now)
        if self._episode_sub is not None:
            for m, _ in self._episode_sub.take():
                self._take_episode(m)
        for name, sub in self._vector_subs.items():
            for m, _ in sub.take():
                try:
                    self.assembler.update_vector(name, m)
                except Exception:  # noqa: BLE001 - a malformed message never stops the node
                    self.intake.malformed += 1
                    continue
                self._record(self.config.topic(next(v.topic for v in self.config.vectors if v.name == name)), m)
        if self.steered:
            for m, _ in self._latent_sub.take():
                self.latents.offer(m, self._episode or "", self.executor.chunk_index)
        arrivals = []
        for m, recv in self._joint_sub.take():
            if self._take_joint_state(m, recv):
                arrivals.append(recv)
        return arrivals

    def _take_episode(self, m: msg.DiagnosticStatus) -> None:
        try:
            status = EpisodeStatus.from_message(m)
        except RobotError:
            self.intake.malformed += 1
            return  # not an episode event this node understands
        episode = status.episode
        if status.event in ("connect", "awaiting_reset"):
            return  # the robot's discovery handshake, or its wait after an episode: no new episode
        if not episode or episode == self._episode:
            return
        if not (episode.isascii() and episode.isdigit() and len(episode) <= 9):
            self.intake.malformed += 1  # an episode is a small non-negative integer
            return
        self._episode = episode
        self.executor.reset()
        if self.bag is not None:
            self.bag.start_episode(int(episode))

    def _take_joint_state(self, m: msg.JointState, recv: int) -> bool:
        """Take one joint state; True when it brought fresh values of a known joint."""
        if not m.name:
            return False  # no joints: the robot's discovery handshake, nothing to act on
        observed = self._stamp_time(m, recv)
        if observed is None:
            self.intake.stale_or_future += 1
            return False
        try:
            ok = self.assembler.update_joints(m, recv, observed)
        except Exception:  # noqa: BLE001 - a malformed message never stops the node
            ok = False
        if not ok:
            self.intake.malformed += 1
            return False
        self._record(self.config.topic(self.config.joint_state_topic), m)
        return True

    def _stamp_time(self, m: msg.JointState, recv: int) -> int | None:
        """Monotonic time the values were measured: the header stamp where it is set, else ``recv``.

        None for a stamp that cannot be right (nanoseconds out of range, or further ahead of this
        node's wall clock than :data:`MAX_STAMP_AHEAD_NS`). A stamp older than the receive time
        makes the values that much older (the watchdog sees it); this assumes robot and node
        clocks agree, as ROS stamps do.
        """
        stamp = m.header.stamp
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
        if sec == 0 and nanosec == 0:
            return recv  # unstamped
        if not 0 <= nanosec < 1_000_000_000:
            return None
        age = self.clock.time_ns() - msg.stamp_to_ns(stamp)  # how long ago (wall) the values were measured
        if age < -MAX_STAMP_AHEAD_NS:
            return None
        return min(recv, self.clock.monotonic_ns() - max(0, age))

    def _record(self, topic: str, m) -> None:
        if self.bag is not None:
            self.bag.record(topic, m, self.clock.time_ns())

    # -- outputs -----------------------------------------------------------------
    def command_message(self, command: np.ndarray):
        """The shielded command as the configured ROS message."""
        values = [float(x) for x in command]
        if self._command_type is msg.Twist:
            twist = msg.Twist()
            for field_name, value in zip(self.config.twist_fields, values):
                part, axis = field_name.split(".")
                setattr(getattr(twist, part), axis, value)
            return twist
        if self._command_type is msg.JointTrajectory:
            # One point, reached one period from now: a trajectory controller then tracks the
            # same command a forward controller would apply.
            sec, nsec = divmod(self.period_ns, 1_000_000_000)
            point = msg.JointTrajectoryPoint(time_from_start=msg.Duration(int(sec), int(nsec)))
            setattr(point, {"position": "positions", "velocity": "velocities", "effort": "effort"}[
                self.config.command_interface], values)
            return msg.JointTrajectory(header=msg.Header(stamp=msg.stamp_of(self.clock.time_ns())),
                                       joint_names=list(self.joints), points=[point])
        return msg.Float64MultiArray(
            layout=msg.MultiArrayLayout(dim=[msg.MultiArrayDimension("joints", len(values), len(values))]),
            data=values)

    def _publish_command(self, command: np.ndarray, now_ns: int, safe: bool) -> None:
        out = self.command_message(command)
        self._command_pub.publish(out)
        # The next command's rate limit counts from when this one went out, not from when it was decided;
        # the bag gets the same instant (read before anything else can delay it), so a reader of the bag
        # sees the slopes the shield allowed.
        sent_ns, sent_wall_ns = self.clock.monotonic_ns(), self.clock.time_ns()
        self.shield.mark_sent(sent_ns)
        self._last_command_ns = now_ns
        self.stats.commands += 1
        self.stats.safe_commands += int(safe)
        if self.bag is not None:
            self.bag.record(self.config.command_topic, out, sent_wall_ns)

    def safety_state(self) -> SafetyState:
        """The shield's state and the node's (watchdog, episode, policy, promotion)."""
        return replace(self.shield.state(), watchdog_tripped=self._stale, episode=self._episode or "",
                       command_subscribers=self._command_subscribers, policy=str(self.policy_path),
                       policy_sha256=self.policy_sha256, promote_error=self.promote_error,
                       armed=self.shield.mode in (Mode.ARMED, Mode.RUNNING),
                       operator_refusals=self.stats.operator_refusals, last_refusal=self.last_refusal,
                       rejected_messages=self.intake.total(), bag_error=self._bag_error,
                       bag_dropped=0 if self.bag is None else self.bag.dropped, steered=self.steered,
                       adapt_session=self.latents.session, latents_used=self.latents.used,
                       latents_late=self.latents.late, latents_fallback=self.latents.fallback,
                       latents_rejected=self.latents.rejected)

    def safety_message(self) -> msg.DiagnosticStatus:
        """The safety state as a DiagnosticStatus."""
        return self.safety_state().to_message(self.config.name)

    def _publish_safety(self, now_ns: int, force: bool = False, record: bool = False) -> None:
        subscribers = self._command_pub.matched()
        listeners = self._safety_pub.matched()
        if subscribers != self._command_subscribers or listeners != self._safety_listeners:
            # Tells the robot at once that its command reader is known here (see SimRobot.wait_for_node).
            self._command_subscribers, self._safety_listeners, force = subscribers, listeners, True
        changed = len(self.shield.counters.events) != self._events_seen
        bag_error = "" if self.bag is None else self.bag.error
        if bag_error != self._bag_error:
            self._bag_error, force = bag_error, True  # the writer thread already said so on stderr
        if force or changed or now_ns - self._last_safety_ns > 1_000_000_000:
            m = self.safety_message()
            self._safety_pub.publish(m)
            self._last_safety_ns = now_ns
            self._events_seen = len(self.shield.counters.events)
            if changed or record:
                self._record(self.config.topic(self.config.safety_topic), m)

    def _chunk_noise(self, obs: np.ndarray) -> np.ndarray:
        """Steered mode, at a chunk boundary: the learner's latent for this chunk, else the baseline's noise.

        What ran goes out on the executed-latent topic with the observation; it never waits."""
        episode, chunk = self._episode or "", self.executor.chunk_index
        latent = self.latents.take_for(episode, chunk)
        noise = latent.array() if latent is not None else self.policy.base_noise()
        executed = LatentChunk(session=self.latents.session, episode=episode, chunk=chunk,
                               chunk_len=noise.shape[0], action_dim=noise.shape[1],
                               noise=tuple(float(x) for x in noise.ravel()),
                               source="learner" if latent is not None else "baseline",
                               obs=tuple(float(x) for x in obs), sent_ns=self.clock.time_ns())
        self._executed_pub.publish(executed.to_message(self.config.name))
        return noise

    # -- ticks -------------------------------------------------------------------
    def tick(self, recv_ns: int | None) -> np.ndarray:
        """One control tick: observe, act (if running and fresh), shield, publish."""
        self._swap_policy()
        now = self.clock.monotonic_ns()
        obs_time = self.assembler.joint_time_ns
        obs = self.assembler.vector()
        if self.shield.mode == Mode.ARMED and obs is not None:  # a signed arm, and something to act on
            self.shield.start(now)
            self.executor.reset()
        fresh = obs_time is not None and now - obs_time <= self.shield.watchdog_ns
        proposal = None
        position = self.assembler.joint_values(self.joints, 0)
        finite = obs is None or bool(np.all(np.isfinite(obs)))
        if self.shield.mode == Mode.RUNNING and fresh and obs is not None and finite:
            if self._stale:  # back from a watchdog trip: start a fresh chunk
                self.executor.restart_chunk()
            if self.steered and self.executor.chunk_index == 0 and self.executor.at_boundary:
                # Steered: chunk 0 is a lead-in that holds still while the learner chooses chunk 1 from the
                # episode's first observation (see STEERED_LEAD_IN_STEPS).
                self._lead_in_left = STEERED_LEAD_IN_STEPS
                self.executor.skip_chunk()
            if self._lead_in_left > 0:
                self._lead_in_left -= 1
                proposal = self.shield.safe_command(position, "hold")
            else:
                queried = self.executor.at_boundary
                noise = self._chunk_noise(obs) if self.steered and queried else None
                proposal = self.executor.act(obs, noise)[self.order]
                self.stats.queries += int(queried)
        self._stale = self.shield.mode == Mode.RUNNING and not fresh
        effort = self.assembler.joint_values(self.joints, 2)
        out = self.shield.filter(proposal, now, obs_time if obs is not None else None, position, effort,
                                 observation_ok=finite)
        if self.shield.mode != Mode.IDLE and self.shield.mode != Mode.ARMED:
            self._publish_command(out.command, self.clock.monotonic_ns(), safe=not out.from_policy)
        if recv_ns is not None and out.from_policy:
            self.stats.latencies_ns.append(self._last_command_ns - recv_ns)
        self.stats.tick_times_ns.append(now)
        self._last_tick_ns = now
        if recv_ns is not None:
            # Joint states tick at most at the control rate on average (a burst cannot drive the
            # policy faster), yet a late one still ticks a quarter period after the last tick.
            due = self._next_observed_tick_ns
            self._next_observed_tick_ns = max(now + self.period_ns // 4,
                                              now if due is None else due + self.period_ns)
        self._publish_safety(now)
        return out.command

    def spin_once(self, timeout_s: float | None = None) -> None:
        """Wait for input (at most a quarter period), then do whatever is due."""
        quarter = self.period_ns / 4e9
        # A caller's deadline may already have passed: never a negative wait (rclpy blocks forever on one).
        wait = quarter if timeout_s is None else max(0.0, min(timeout_s, quarter))
        if self._pending_recv_ns is not None and self._next_observed_tick_ns is not None:
            # A joint state waits for its tick: wake up when it is due.
            wait = min(wait, max(0.0, (self._next_observed_tick_ns - self.clock.monotonic_ns()) / 1e9))
        self.transport.wait(wait)
        try:
            arrivals = self._handle_inputs()
        except Exception as err:  # noqa: BLE001 - no received message may stop the node; it keeps commanding
            self.intake.malformed += 1
            if not self._intake_error_reported:
                self._intake_error_reported = True
                print(f"policy node: a received message could not be handled ({type(err).__name__}: {err}); "
                      "it was dropped and counted in rejected_messages.", file=sys.stderr)
            arrivals = []
        if self.shield.mode != Mode.RUNNING:
            self._swap_policy()  # a node that is not ticking still takes (and reports) a promotion
        now = self.clock.monotonic_ns()
        if self.trigger == "observation":
            # One tick per joint state, at most at the control rate on average (see tick): a burst
            # is merged into the ticks that are due, and a joint state that comes early is acted on
            # when its tick is due, so traffic cannot run the policy faster and none is left without
            # a tick. Only ticks on joint states count: a watchdog tick just before a late joint
            # state must not swallow it.
            if arrivals:
                self._pending_recv_ns = arrivals[-1]
            due = self._next_observed_tick_ns
            if self._pending_recv_ns is not None and (due is None or now >= due):
                recv, self._pending_recv_ns = self._pending_recv_ns, None
                self.tick(recv)
                return
        if self.trigger == "timer" and (self._last_tick_ns is None or now - self._last_tick_ns >= self.period_ns):
            self.tick(arrivals[-1] if arrivals else None)
            return
        # Watchdog between ticks: a silent robot gets the safe command at once, then once a period.
        obs_time = self.assembler.joint_time_ns
        running = self.shield.mode == Mode.RUNNING
        if running and obs_time is not None and now - obs_time > self.shield.watchdog_ns:
            if not self._stale or now - self._last_command_ns >= self.period_ns:
                self.tick(None)
        elif self.shield.mode == Mode.ESTOPPED and now - self._last_command_ns >= self.period_ns:
            self.tick(None)
        self._publish_safety(now)

    def run(self, duration_s: float | None = None, should_stop=lambda: False) -> NodeStats:
        """Spin until ``duration_s`` passes or ``should_stop()`` is true; writes the last bag."""
        end = None if duration_s is None else self.clock.monotonic_ns() + int(duration_s * 1e9)
        try:
            while not should_stop() and (end is None or self.clock.monotonic_ns() < end):
                self.spin_once()
        finally:
            self.loader.close()
            self.shield.stop("node shutting down", self.clock.monotonic_ns())
            self._publish_command(self.shield.safe_command(self.assembler.joint_values(self.joints, 0), "hold"),
                                  self.clock.monotonic_ns(), safe=True)
            self._publish_safety(self.clock.monotonic_ns(), force=True)
            if self.bag is not None:
                self.bag.close()
        return self.stats
