"""The safety shield: the only way a command reaches a transport.

Every command the policy proposes goes through :meth:`SafetyShield.filter`, which

* sends the safe command unless the mode is RUNNING (idle, armed, stopped, e-stopped);
* trips on a stale or missing observation (watchdog) and sends hold or zero, per config;
* replaces a non-finite or wrongly shaped command by the safe command (NaN/Inf guard);
* stops the robot (mode STOPPED) when a measured effort exceeds its bound;
* limits the rate of change of the command per second of measured time (faster ticks get
  smaller steps), keeps the joints inside their position
  bounds, and clips to the velocity / effort box, in that order, so the box wins.

The e-stop latches: only :meth:`SafetyShield.reset_estop`, an explicit operator action,
leaves it. Mode machine::

    IDLE --arm--> ARMED --start--> RUNNING --stop--> STOPPED --arm--> ARMED
      any --estop--> ESTOPPED --reset_estop--> IDLE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from steer.robot.config import RobotConfig
from steer.robot.spec import SafetyState


class Mode(enum.Enum):
    """Mode of the shield's state machine."""

    IDLE = "idle"
    ARMED = "armed"
    RUNNING = "running"
    STOPPED = "stopped"
    ESTOPPED = "estopped"


TICK_JITTER = 0.05
"""A tick at most this fraction of a period early still gets a full period's rate-limit step."""


class ModeError(Exception):
    """A mode transition that the state machine does not allow."""

    user_facing = True


@dataclass(frozen=True)
class ShieldOutput:
    """What the shield let through for one tick."""

    command: np.ndarray
    """The command to send (float64, one entry per commanded joint); always finite and in bounds."""
    mode: Mode
    """Mode after this tick."""
    reasons: tuple[str, ...]
    """Why the command differs from the proposal (empty when it passed untouched)."""
    from_policy: bool
    """True when the command is the (possibly clipped) policy proposal, false for a safe command."""


@dataclass
class SafetyEvent:
    """A mode change or a trip, for the safety-state topic and the episode bag."""

    time_ns: int
    """Monotonic time of the change (ns)."""
    mode: Mode
    """Mode entered."""
    reason: str
    """Why, in a few words."""


@dataclass
class _Counters:
    """What the shield did so far (published in the safety state)."""

    ticks: int = 0
    clipped: int = 0
    watchdog: int = 0
    non_finite: int = 0
    events: list[SafetyEvent] = field(default_factory=list)


class SafetyShield:
    """Box, rate, position and effort limits, a watchdog, a latched e-stop and the mode machine."""

    def __init__(self, config: RobotConfig):
        if not config.command_joints:
            raise ValueError("the robot config has no commanded joints; the shield has nothing to guard")
        self.config = config
        joints = config.command_joints
        self.position_min = np.array([j.position_min for j in joints])
        self.position_max = np.array([j.position_max for j in joints])
        self.velocity_max = np.array([j.velocity_max for j in joints])
        self.effort_max = np.array([j.effort_max for j in joints])
        # Per wall-clock second: a robot that runs time_scale times faster than real time changes as fast.
        self.rate_max = np.array([j.command_rate_max for j in joints]) * config.time_scale
        self.dt = config.control_period_s
        self.watchdog_ns = int(config.watchdog_ms * 1e6)
        self.mode = Mode.IDLE
        self.last_reason = "started"
        self.counters = _Counters()
        self._previous: np.ndarray | None = None
        self._previous_ns: int | None = None  # when _previous was decided: rate limits are per second
        self._last_position: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of commanded joints."""
        return len(self.position_min)

    # -- mode machine ------------------------------------------------------------
    def _enter(self, mode: Mode, reason: str, now_ns: int) -> None:
        if mode != self.mode:
            self.mode = mode
            self.last_reason = reason
            self.counters.events.append(SafetyEvent(now_ns, mode, reason))

    def arm(self, now_ns: int = 0) -> None:
        """IDLE or STOPPED → ARMED."""
        if self.mode not in (Mode.IDLE, Mode.STOPPED):
            raise ModeError(f"cannot arm while {self.mode.value}; arm works from idle or stopped.")
        self._enter(Mode.ARMED, "armed", now_ns)

    def start(self, now_ns: int = 0) -> None:
        """ARMED → RUNNING; the rate limit starts from the safe command."""
        if self.mode != Mode.ARMED:
            raise ModeError(f"cannot start while {self.mode.value}; arm first.")
        self._previous = None
        self._enter(Mode.RUNNING, "running", now_ns)

    def stop(self, reason: str = "stopped by operator", now_ns: int = 0) -> None:
        """Any mode but ESTOPPED → STOPPED."""
        if self.mode != Mode.ESTOPPED:
            self._enter(Mode.STOPPED, reason, now_ns)

    def estop(self, reason: str = "e-stop", now_ns: int = 0) -> None:
        """Any mode → ESTOPPED; latched until :meth:`reset_estop`."""
        self._enter(Mode.ESTOPPED, reason, now_ns)

    def reset_estop(self, now_ns: int = 0) -> None:
        """ESTOPPED → IDLE: the explicit operator reset of a latched e-stop."""
        if self.mode == Mode.ESTOPPED:
            self._enter(Mode.IDLE, "e-stop reset by operator", now_ns)

    def mark_sent(self, now_ns: int) -> None:
        """Tell the shield when its last command left (monotonic ns): the next rate limit counts from then."""
        if self._previous_ns is None or now_ns > self._previous_ns:
            self._previous_ns = now_ns

    # -- commands ------------------------------------------------------------------
    def safe_command(self, position: np.ndarray | None = None, action: str | None = None) -> np.ndarray:
        """The command that keeps the robot still (``hold``) or zero (``zero``)."""
        action = action or self.config.watchdog_action
        interface = self.config.command_interface
        if interface == "position" and action == "hold":
            # Hold where the joints are; without a measurement, hold the last target.
            for candidate in (position, self._last_position, self._previous):
                if candidate is not None and np.all(np.isfinite(candidate)):
                    return np.clip(np.asarray(candidate, dtype=np.float64), self.position_min, self.position_max)
            return np.clip(np.zeros(self.n), self.position_min, self.position_max)
        if interface == "position":
            return np.clip(np.zeros(self.n), self.position_min, self.position_max)
        # Velocity and effort: zero is still (hold) and zero (zero).
        return np.zeros(self.n)

    def _safe(self, reasons: list[str], position: np.ndarray | None, action: str | None = None) -> ShieldOutput:
        cmd = self.safe_command(position, action)
        self._previous = cmd
        return ShieldOutput(cmd, self.mode, tuple(reasons), False)

    def filter(self, proposal: np.ndarray | None, now_ns: int, observation_ns: int | None,
               position: np.ndarray | None = None, effort: np.ndarray | None = None,
               observation_ok: bool = True) -> ShieldOutput:
        """Let a proposed command through, made safe.

        ``observation_ns`` is when the observation behind the proposal was received
        (None: none yet); ``position`` and ``effort`` are the measured values of the
        commanded joints (NaN or None where unknown); ``observation_ok`` false (e.g. NaN in a
        message) makes the command the safe one.
        """
        self.counters.ticks += 1
        # Rate limits are per second of measured time, never per tick: ticks faster than the control
        # rate get proportionally smaller steps; a late tick gets at most one period's step. A tick
        # early by less than TICK_JITTER of a period counts as on time (a jittery robot's trajectory
        # stays the one of its fixed-rate simulation), so the slope stays within 1/(1 - TICK_JITTER)
        # of its limit at any tick rate.
        elapsed = self.dt
        if self._previous_ns is not None:
            elapsed = max(0.0, (now_ns - self._previous_ns) / 1e9)
            elapsed = self.dt if elapsed >= (1.0 - TICK_JITTER) * self.dt else elapsed
        self._previous_ns = now_ns
        position = None if position is None else np.asarray(position, dtype=np.float64)
        if position is not None and np.all(np.isfinite(position)):
            self._last_position = position
        if self.mode != Mode.RUNNING:
            return self._safe([self.mode.value], position, "hold")
        if observation_ns is None or now_ns - observation_ns > self.watchdog_ns:
            self.counters.watchdog += 1
            return self._safe(["watchdog: observation too old"], position)
        if not observation_ok:
            self.counters.non_finite += 1
            return self._safe(["non-finite observation"], position)
        if effort is not None:
            effort = np.asarray(effort, dtype=np.float64)
            if effort.shape == (self.n,) and np.any(np.abs(np.nan_to_num(effort)) > self.effort_max):
                self.stop("measured effort over its bound", now_ns)
                return self._safe(["measured effort over its bound"], position, "hold")
        try:
            cmd = np.asarray(proposal, dtype=np.float64).reshape(self.n)
        except (TypeError, ValueError):
            self.counters.non_finite += 1
            return self._safe(["malformed command"], position)
        if not np.all(np.isfinite(cmd)):
            self.counters.non_finite += 1
            return self._safe(["non-finite command"], position)

        reasons: list[str] = []
        interface = self.config.command_interface
        previous = self._previous if self._previous is not None else self.safe_command(position, "hold")
        if interface == "position":
            step = self.velocity_max * elapsed  # a position target may move at most vmax per second
        else:
            step = self.rate_max * elapsed
        limited = np.clip(cmd, previous - step, previous + step)
        if not np.array_equal(limited, cmd):
            reasons.append("rate limit")
        if interface == "velocity" and position is not None and np.all(np.isfinite(position)):
            # Never drive a joint further out of its range; moving back in (or zero) is always allowed.
            hi = np.maximum(0.0, (self.position_max - position) / self.dt)
            lo = np.minimum(0.0, (self.position_min - position) / self.dt)
            bounded = np.clip(limited, lo, hi)
            if not np.array_equal(bounded, limited):
                reasons.append("position bound")
            limited = bounded
        if interface == "velocity":
            box_lo, box_hi = -self.velocity_max, self.velocity_max
        elif interface == "effort":
            box_lo, box_hi = -self.effort_max, self.effort_max
        else:
            box_lo, box_hi = self.position_min, self.position_max
        out = np.clip(limited, box_lo, box_hi)
        if not np.array_equal(out, limited):
            reasons.append("box limit")
        if reasons:
            self.counters.clipped += 1
        self._previous = out
        return ShieldOutput(out, self.mode, tuple(reasons), True)

    def state(self) -> SafetyState:
        """The shield's part of the safety state (the node fills in the rest)."""
        c = self.counters
        return SafetyState(mode=self.mode.value, reason=self.last_reason, ticks=c.ticks, clipped=c.clipped,
                           watchdog_trips=c.watchdog, non_finite=c.non_finite,
                           estop_latched=self.mode == Mode.ESTOPPED)


class ChunkSafeSet:
    """Says whether an action chunk, executed from an observation, keeps the robot in its safe set.

    The safe set is the shield's position box of the commanded joints, shrunk by ``margin`` on every
    side. With a velocity interface the joint positions are predicted by integrating the commands over
    the control period (first-order: a velocity-controlled joint tracks its command within a tick), and a
    command outside the velocity box is out of the set as well (the shield would change it, so the plan
    is not the one that would run). With a position interface every target must lie in the shrunk box.
    An effort interface has no kinematic prediction: every chunk is accepted.

    ``position_index`` picks the commanded joints' positions out of the observation, in the order of
    the config's commanded joints; the chunk's columns are those joints' commands.
    """

    def __init__(self, config: RobotConfig, position_index: list[int], margin: float = 0.0):
        joints = config.command_joints
        if len(position_index) != len(joints):
            raise ValueError(f"position_index has {len(position_index)} entries for {len(joints)} commanded joints.")
        self.lo = np.array([j.position_min for j in joints]) + margin
        self.hi = np.array([j.position_max for j in joints]) - margin
        if np.any(self.lo > self.hi):
            raise ValueError(f"margin {margin} leaves no room between the position bounds.")
        self.vmax = np.array([j.velocity_max for j in joints])
        self.dt = 1.0 / config.control_rate_hz  # the robot's own time: positions integrate over it
        self.interface = config.command_interface
        self.position_index = list(position_index)
        self.checks = 0
        self.rejections = 0

    def __call__(self, observation: np.ndarray, chunk: np.ndarray) -> bool:
        self.checks += 1
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, len(self.lo))
        if self.interface == "effort":
            return True
        if self.interface == "position":
            ok = bool(np.all(chunk >= self.lo) and np.all(chunk <= self.hi))
        else:
            pos = np.asarray(observation, dtype=np.float64)[self.position_index]
            path = pos + np.cumsum(chunk, axis=0) * self.dt
            ok = bool(np.all(np.abs(chunk) <= self.vmax + 1e-9) and np.all(path >= self.lo)
                      and np.all(path <= self.hi))
        self.rejections += int(not ok)
        return ok
