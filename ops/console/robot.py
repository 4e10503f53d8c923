"""The console's connection to a robot's ROS 2 topics, without a terminal.

:class:`RobotLink` subscribes to the joint states, the commands and the safety state
of one robot (as configured by its limits YAML), publishes the latched e-stop and the
operator's signed commands, and folds what arrives into a :class:`RobotView`.

Release, arm and promote are :class:`steer.robot.spec.OperatorCommand` messages signed with the
operator's key on ``<ns>/operator_command`` (volatile); without a key the link still e-stops.
A promotion names the file in the robot's policies directory; the node loads and checks it off its
control thread, swaps it in between two control ticks at a chunk boundary, and reports ``policy``
and ``policy_sha256`` (or ``promote_error``) in its safety state (:class:`steer.robot.spec.SafetyState`).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from steer.robot import messages as msg
from steer.robot.config import RobotConfig
from steer.robot.errors import RobotError
from steer.robot.spec import SafetyState, WireError

NO_KEY = "no operator key: cannot release, arm or promote (steer keys init)"

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
    """sha256 of that policy, as the node reports it (signed release and arm name it)."""
    promote_error: str = ""
    safety_age_s: float | None = None

    @property
    def silent(self) -> bool:
        """True when joint states stopped arriving (or never came)."""
        return self.joint_age_s is None or self.joint_age_s > SILENT_AFTER_S


class RobotLink:
    """Topics of one robot, read and written from the console's thread."""

    def __init__(self, config: RobotConfig, domain_id: int = 0, loopback: bool = True, transport=None,
                 key=None):
        """``key``: the operator's Ed25519 private key (None: this link can only e-stop)."""
        self.config = config
        self.key = key
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
        self._operator_pub = transport.publisher(c.topic(c.operator_command_topic), msg.DiagnosticStatus)
        self.view = RobotView(connected=True)
        self._joint_ns: int | None = None
        self._command_ns: int | None = None
        self._safety_ns: int | None = None
        self._pending_js_ns: int | None = None  # joint state waiting for its command
        self._latencies: deque[float] = deque(maxlen=50)
        self._command_times: deque[int] = deque(maxlen=400)
        self.estop_sent_ns: int | None = None

    @property
    def topics(self) -> dict[str, str]:
        """The topics this link uses, by role."""
        c = self.config
        return {"joint states": c.topic(c.joint_state_topic), "commands": c.command_topic,
                "safety": c.topic(c.safety_topic), "e-stop": c.topic(c.estop_topic),
                "operator": c.topic(c.operator_command_topic)}

    # -- out -----------------------------------------------------------------------
    def estop(self) -> int:
        """Publish the latched e-stop (true); returns the monotonic time it was sent (ns)."""
        self._estop_pub.publish(msg.Bool(True))
        self.estop_sent_ns = time.monotonic_ns()
        return self.estop_sent_ns

    def _signed(self, command: str, policy_sha256: str, args: dict[str, str] | None = None) -> None:
        from steer.robot.keys import sign_command

        if self.key is None:
            raise RobotError(NO_KEY)
        cmd = sign_command(self.key, command, self.config.namespace, policy_sha256, args)
        self._operator_pub.publish(cmd.to_message(self.config.name))

    def reset(self, ack_timeout_s: float = 0.5) -> None:
        """Let go of the e-stop, then a signed release and a signed arm (the operator confirmed).

        The node refuses a release while the e-stop still reads pressed, so letting go goes
        first and is acknowledged before the signed commands are sent.
        """
        if self.key is None:
            raise RobotError(NO_KEY)
        self._estop_pub.publish(msg.Bool(False))
        self._estop_pub.wait_acked(ack_timeout_s)
        self._signed("release", self.view.policy_sha256)
        self._signed("arm", self.view.policy_sha256)

    def promote(self, policy: Path, sha256: str, source_run: str = "") -> None:  # noqa: ARG002
        """Ask the node, with a signed promote, to make ``policy`` (by its name in the robot's policies
        directory) its active policy."""
        self._signed("promote", sha256, {"policy": Path(policy).name})

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
        now = time.monotonic_ns() if now_ns is None else now_ns
        v.joint_age_s = None if self._joint_ns is None else (now - self._joint_ns) / 1e9
        v.command_age_s = None if self._command_ns is None else (now - self._command_ns) / 1e9
        v.safety_age_s = None if self._safety_ns is None else (now - self._safety_ns) / 1e9
        v.commands_per_s = command_rate(self._command_times, now, RATE_WINDOW_S)
        if self._latencies:
            v.latency_ms = statistics.median(self._latencies)
            v.latency_max_ms = max(self._latencies)
        return v

    def close(self) -> None:
        """Drop the endpoints."""
        self.transport.close()
