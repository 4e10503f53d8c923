"""The console's connection to a robot's ROS 2 topics, without a terminal.

:class:`RobotLink` subscribes to the joint states, the commands and the safety state
of one robot (as configured by its limits YAML), publishes the latched e-stop and the
operator's signed commands, and folds what arrives into a :class:`RobotView`.

Anyone may stop a robot: the e-stop (``std_msgs/Bool`` on ``<ns>/estop``, latched) needs no key.
Releasing it, arming and promoting are :class:`steer.robot.spec.OperatorCommand` messages signed
with the operator's Ed25519 key (:func:`steer.robot.keys.sign_command`) on
``<ns>/operator_command`` (reliable, volatile: a restarted node never re-applies one). Release and
arm bind the sha256 of the policy the node reports in its safety state; a promotion binds the new
file's sha256 and names it relative to the robot's policies directory, never by an absolute path.
Without a key the link still shows everything and still e-stops.

An adaptation session (issue 15) rides on the same link: the learner's status on ``<ns>/adapt_status``
is folded into :attr:`RobotView.adapt`, the unsigned session controls go out on ``<ns>/adapt_control``
and the start is the signed ``adapt_start`` operator command (see :mod:`steer.ops.console.adapt`). A robot
that waits for the operator after each episode (``reset_mode: operator``) gets a signed ``reset_done``.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from steer.robot import messages as msg
from steer.robot.config import RobotConfig
from steer.ops.console import ConsoleError
from steer.ops.console.adapt import AdaptView
from steer.robot.spec import ADAPT_COMMANDS, AdaptControl, AdaptStatus, SafetyState, WireError


def no_key(what: str) -> str:
    """What the console says when asked to ``what`` without a readable operator key."""
    return f"no operator key: cannot {what} (steer keys init)"


NO_KEY = no_key("release, arm or promote")
"""What the console says when asked to release, arm or promote without a readable key."""
NO_KEY_ADAPT = no_key("start an adaptation session")
"""What it says when asked to start an adaptation session without one."""
NO_KEY_RESET = no_key("confirm a reset")
"""What it says when asked to confirm a robot's reset without one."""

SILENT_AFTER_S = 0.5
"""No joint state for this long: the robot is shown as silent."""

RATE_WINDOW_S = 3.0
"""The command rate is averaged over this many seconds: long enough that a robot catching up
after a stall (it may step faster than its period for a while) reads as its mean rate."""


def command_rate(times_ns, now_ns: int, window_s: float = RATE_WINDOW_S) -> float:
    """Commands per second over the last ``window_s`` seconds of receive times (ns).

    Zero when fewer than two commands arrived in the window or the last is older than 1 s.
    """
    start = now_ns - int(window_s * 1e9)
    recent = [t for t in times_ns if t >= start]
    if len(recent) < 2 or now_ns - recent[-1] > 1e9:
        return 0.0
    span = (recent[-1] - recent[0]) / 1e9
    return (len(recent) - 1) / span if span > 0 else 0.0


@dataclass
class RobotView:
    """Everything the Robots screen shows, as plain values."""

    connected: bool = False
    joints: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Joint name → (position, velocity) of the newest joint state."""
    joint_age_s: float | None = None
    """Seconds since the newest joint state (None: none yet)."""
    command: list[float] = field(default_factory=list)
    """The newest command sent to the robot."""
    command_age_s: float | None = None
    commands_per_s: float = 0.0
    mode: str = "unknown"
    """Shield mode from the safety state (idle, armed, running, stopped, estopped)."""
    reason: str = ""
    estop_latched: bool = False
    watchdog_tripped: bool = False
    interventions: dict[str, int] = field(default_factory=dict)
    """Shield counters: clipped, watchdog_trips, non_finite."""
    latency_ms: float | None = None
    """Median over recent ticks of joint state seen → command seen, both as received here."""
    latency_max_ms: float | None = None
    policy: str = ""
    """Active policy as the node reports it (empty: not reported)."""
    policy_sha256: str = ""
    """sha256 of that policy as the node reports it (signed release and arm name it)."""
    promote_error: str = ""
    armed: bool | None = None
    """Whether a signed arm lets the policy move the robot (None: no safety state yet)."""
    operator_refusals: int = 0
    """Operator commands the node refused."""
    last_refusal: str = ""
    """The node's sentence for the last refusal."""
    safety_age_s: float | None = None
    domain_id: int | None = None
    """DDS domain the link listens on."""
    namespace: str = ""
    """Robot namespace the link listens in."""
    steered: bool = False
    """The node runs in steered mode (a learner's latents choose its noise)."""
    adapt_session: str = ""
    """The adaptation session the node accepts latents for (empty: none armed)."""
    latents: dict[str, int] = field(default_factory=dict)
    """The node's latent counters: used, late, fallback, rejected."""
    adapt: AdaptView = field(default_factory=AdaptView)
    """The learner's adaptation session, as its status reports it."""

    @property
    def silent(self) -> bool:
        """True when joint states stopped arriving (or never came)."""
        return self.joint_age_s is None or self.joint_age_s > SILENT_AFTER_S

    @property
    def heard_nothing(self) -> bool:
        """True when neither joint states nor a safety state arrive: wrong domain, namespace or no robot."""
        return self.silent and (self.safety_age_s is None or self.safety_age_s > 2.0)

    def nothing_heard_text(self) -> str:
        """One sentence naming where the console listens."""
        ns = f"namespace /{self.namespace.strip('/')}" if self.namespace.strip("/") else "no namespace"
        return f"Nothing heard on domain {self.domain_id} ({ns})"


class RobotLink:
    """Topics of one robot, read and written from the console's thread."""

    def __init__(self, config: RobotConfig, domain_id: int = 0, loopback: bool = True, transport=None,
                 key=None, key_error: str = ""):
        """``key``: the operator's Ed25519 private key (None: this link can only e-stop; ``key_error``
        says why there is none)."""
        self.config = config
        self.key = key
        self.key_error = key_error
        self.domain_id = domain_id
        if transport is None:
            from steer.robot.dds_transport import DdsTransport, use_loopback_config

            if loopback:
                use_loopback_config()
            transport = DdsTransport(domain_id)
        self.transport = transport
        c = config
        self._joint_sub = transport.subscription(c.topic(c.joint_state_topic), msg.JointState)
        self._command_sub = transport.subscription(c.command_topic, msg.Float64MultiArray)
        self._safety_sub = transport.subscription(c.topic(c.safety_topic), msg.DiagnosticStatus)
        self._estop_pub = transport.publisher(c.topic(c.estop_topic), msg.Bool, latched=True)
        self._operator_pub = transport.publisher(self.operator_topic, msg.DiagnosticStatus)
        self._adapt_sub = transport.subscription(c.topic(c.adapt_status_topic), msg.DiagnosticStatus)
        self._adapt_pub = transport.publisher(c.topic(c.adapt_control_topic), msg.DiagnosticStatus)
        self._adapt_ns: int | None = None
        self.view = RobotView(connected=True, domain_id=domain_id, namespace=c.namespace)
        self._joint_ns: int | None = None
        self._command_ns: int | None = None
        self._safety_ns: int | None = None
        self._pending_js_ns: int | None = None  # joint state waiting for its command
        self._latencies: deque[float] = deque(maxlen=50)
        self._command_times: deque[int] = deque(maxlen=400)
        self.estop_sent_ns: int | None = None

    @property
    def operator_topic(self) -> str:
        """Topic of the signed operator commands."""
        return self.config.topic(self.config.operator_command_topic)

    @property
    def topics(self) -> dict[str, str]:
        """The topics this link uses, by role."""
        c = self.config
        return {"joint states": c.topic(c.joint_state_topic), "commands": c.command_topic,
                "safety": c.topic(c.safety_topic), "e-stop": c.topic(c.estop_topic),
                "operator": self.operator_topic, "adapt status": c.topic(c.adapt_status_topic),
                "adapt control": c.topic(c.adapt_control_topic)}

    # -- out -----------------------------------------------------------------------
    def estop(self) -> int:
        """Publish the latched e-stop (true); returns the monotonic time it was sent (ns)."""
        self._estop_pub.publish(msg.Bool(True))
        self.estop_sent_ns = time.monotonic_ns()
        return self.estop_sent_ns

    def _sign(self, command: str, policy_sha256: str, args: dict[str, str] | None = None, missing: str = NO_KEY):
        from steer.robot.keys import sign_command

        if self.key is None:
            raise ConsoleError(missing)
        return sign_command(self.key, command, self.config.namespace, policy_sha256, args)

    def _active_sha256(self, command: str) -> str:
        if not self.view.policy_sha256:
            raise ConsoleError(f"the robot has not reported its policy's sha256 yet: cannot sign {command}; "
                               "wait for its safety state.")
        return self.view.policy_sha256

    def release(self, ack_timeout_s: float = 0.5) -> None:
        """Let go of the e-stop, then a signed ``release`` (the operator confirmed); the robot stays
        unarmed until :meth:`arm`.

        The node refuses a release while the e-stop still reads pressed, so letting go goes first
        and is acknowledged before the signed command is sent. Without a key nothing is sent.
        """
        cmd = self._sign("release", self._active_sha256("release"))
        self._estop_pub.publish(msg.Bool(False))
        self._estop_pub.wait_acked(ack_timeout_s)
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def arm(self) -> None:
        """A signed ``arm``: the policy may move the robot (the operator confirmed)."""
        cmd = self._sign("arm", self._active_sha256("arm"))
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def promote(self, name: str, sha256: str) -> None:
        """A signed ``promote`` of the file ``name`` (relative to the robot's policies directory)
        whose content has ``sha256``."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConsoleError(f"{name!r} is not a file name inside the policies directory.")
        cmd = self._sign("promote", sha256, {"policy": Path(name).as_posix()})
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def adapt_start(self, session: str) -> None:
        """A signed ``adapt_start`` of the learner's session ``session`` (the operator confirmed): the node
        then runs that learner's latents while it is armed. Bound to the node's active policy."""
        if not session:
            raise ConsoleError("no adaptation session to start: the learner has not reported one yet.")
        cmd = self._sign("adapt_start", self._active_sha256("adapt_start"), {"session": session}, NO_KEY_ADAPT)
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def reset_done(self, episode: str) -> None:
        """A signed ``reset_done`` for the robot (the operator confirmed the scene is reset after ``episode``):
        a robot in operator reset mode then starts its next episode. Bound to that episode, not to a policy
        (the robot checks it, and it does not know the policy)."""
        if not episode:
            raise ConsoleError("the robot is not waiting for a reset.")
        cmd = self._sign("reset_done", "", {"episode": episode}, NO_KEY_RESET)
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def adapt_control(self, command: str) -> AdaptControl:
        """An unsigned session control (pause, resume, stop, mark_success, mark_failure, takeover) for the
        session the learner reports (empty before one is heard: the learner takes it as its own)."""
        if command not in ADAPT_COMMANDS:
            raise ConsoleError(f"{command!r} is not one of {', '.join(ADAPT_COMMANDS)}.")
        control = AdaptControl(command=command, session=self.view.adapt.session, stamp_ns=time.time_ns())
        self._adapt_pub.publish(control.to_message(self.config.name))
        return control

    # -- in ------------------------------------------------------------------------
    def poll(self, now_ns: int | None = None) -> RobotView:
        """Take everything that arrived and return the updated view."""
        v = self.view
        for m, recv in self._joint_sub.take():
            if not m.name:
                continue  # the robot's discovery handshake
            n = len(m.name)
            for i, name in enumerate(m.name):
                pos = float(m.position[i]) if len(m.position) == n else float("nan")
                vel = float(m.velocity[i]) if len(m.velocity) == n else float("nan")
                v.joints[name] = (pos, vel)
            self._joint_ns = recv
            if self._pending_js_ns is None:
                self._pending_js_ns = recv
        for m, recv in self._command_sub.take():
            v.command = [float(x) for x in m.data]
            self._command_ns = recv
            self._command_times.append(recv)
            if self._pending_js_ns is not None:
                self._latencies.append((recv - self._pending_js_ns) / 1e6)
                self._pending_js_ns = None
        for m, recv in self._safety_sub.take():
            try:
                state = SafetyState.from_message(m)
            except WireError:
                continue  # not a policy node's safety state
            self._safety_ns = recv
            v.mode, v.reason = state.mode, state.reason or m.message
            v.estop_latched, v.watchdog_tripped = state.estop_latched, state.watchdog_tripped
            v.interventions = state.interventions
            v.policy = state.policy or v.policy
            v.policy_sha256 = state.policy_sha256 or v.policy_sha256
            v.promote_error = state.promote_error
            v.armed, v.operator_refusals, v.last_refusal = state.armed, state.operator_refusals, state.last_refusal
            v.steered, v.adapt_session = state.steered, state.adapt_session
            v.latents = {"used": state.latents_used, "late": state.latents_late, "fallback": state.latents_fallback,
                         "rejected": state.latents_rejected}
        for m, recv in self._adapt_sub.take():
            try:
                status = AdaptStatus.from_message(m)
            except WireError:
                continue  # not a steer learner's status (or the writer's exit sample)
            self._adapt_ns = recv
            v.adapt.update(status)
        now = time.monotonic_ns() if now_ns is None else now_ns
        v.joint_age_s = None if self._joint_ns is None else (now - self._joint_ns) / 1e9
        v.command_age_s = None if self._command_ns is None else (now - self._command_ns) / 1e9
        v.safety_age_s = None if self._safety_ns is None else (now - self._safety_ns) / 1e9
        v.adapt.age_s = None if self._adapt_ns is None else (now - self._adapt_ns) / 1e9
        v.commands_per_s = command_rate(self._command_times, now, RATE_WINDOW_S)
        if self._latencies:
            v.latency_ms = statistics.median(self._latencies)
            v.latency_max_ms = max(self._latencies)
        return v

    def close(self) -> None:
        """Drop the endpoints."""
        self.transport.close()
