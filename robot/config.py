"""Robot configuration: joints, limits, topics, rates. Loaded from a limits YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from steer.robot.errors import RobotError

COMMAND_INTERFACES = ("velocity", "position", "effort")
COMMAND_MESSAGES = ("Float64MultiArray", "JointTrajectory", "Twist")
TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")
WATCHDOG_ACTIONS = ("hold", "zero")
RESET_MODES = ("auto", "operator")


@dataclass(frozen=True)
class JointLimits:
    """Limits of one commanded joint; the shield enforces every one of them."""

    name: str
    """Joint name, as in ``sensor_msgs/JointState.name``."""
    position_min: float
    """Lowest allowed position (m or rad)."""
    position_max: float
    """Highest allowed position (m or rad)."""
    velocity_max: float
    """Largest allowed |velocity| (m/s or rad/s)."""
    effort_max: float
    """Largest allowed |effort| (N or N m), commanded or measured."""
    command_rate_max: float
    """Largest change of the command per second (velocity interface: an acceleration)."""


@dataclass(frozen=True)
class VectorSource:
    """An observation read from a ``std_msgs/Float64MultiArray`` topic (e.g. the goal)."""

    name: str
    """Prefix of the observation names it provides (``goal`` gives ``goal.x``, ``goal.y``)."""
    topic: str
    """Topic it arrives on (relative names get the namespace)."""
    fields: tuple[str, ...]
    """Name of each element of ``data``, in order."""


@dataclass(frozen=True)
class RobotConfig:
    """Everything the policy node and the simulated robot must agree on."""

    name: str = "planar_push"
    """Robot name, written into bags and the safety state."""
    joints: tuple[str, ...] = ("pusher_x", "pusher_y", "puck_x", "puck_y")
    """Joints published on the joint-state topic."""
    command_joints: tuple[JointLimits, ...] = ()
    """Commanded joints with their limits, in command order."""
    command_interface: str = "velocity"
    """What a command sets: ``velocity``, ``position`` or ``effort``."""
    vectors: tuple[VectorSource, ...] = ()
    """Further observation sources beside the joint states."""
    control_rate_hz: float = 20.0
    """Control rate of the policy (Hz, in the robot's own time)."""
    time_scale: float = 1.0
    """Robot seconds per wall-clock second: 1 on a real robot. A simulated robot and its node may both run
    faster than real time (tests, benchmarks): they tick at control_rate_hz × time_scale wall-clock Hz and the
    shield's rate limits count robot time. The watchdog and the command timeout grow on a slowed robot
    (time_scale < 1) and keep their wall-clock values on a faster one. Both processes must be given the same
    value."""
    watchdog_ms: float = 75.0
    """An observation older than this stops the policy's commands (ms)."""
    watchdog_action: str = "hold"
    """What the shield sends while the watchdog is tripped: ``hold`` (keep still) or ``zero``."""
    command_timeout_ms: float = 100.0
    """The simulated robot holds when no command arrived for this long (ms)."""
    controller: str = "pusher_velocity_controller"
    """ros2_control controller that takes the commands on ``<controller>/commands``."""
    command_message: str = "Float64MultiArray"
    """Command message: ``Float64MultiArray`` (forward_command_controller, on ``<controller>/commands``),
    ``JointTrajectory`` (trajectory controller, on ``<controller>/joint_trajectory``) or ``Twist``
    (mobile base, on ``cmd_vel_topic``)."""
    twist_fields: tuple[str, ...] = ()
    """For ``Twist`` commands: the Twist field of each commanded joint (e.g. ``linear.x``, ``angular.z``)."""
    cmd_vel_topic: str = "cmd_vel"
    """Topic of ``Twist`` commands."""
    joint_state_topic: str = "joint_states"
    """Joint-state topic (relative names get the namespace)."""
    estop_topic: str = "estop"
    """E-stop topic, ``std_msgs/Bool`` (true stops and latches)."""
    operator_command_topic: str = "operator_command"
    """Signed operator commands (release, arm, promote, adapt_start; reset_done for the robot),
    ``diagnostic_msgs/DiagnosticStatus``; volatile, so a restarted node never re-applies an old one (see
    :class:`steer.robot.spec.OperatorCommand`)."""
    safety_topic: str = "safety_state"
    """Safety state for the console, ``diagnostic_msgs/DiagnosticStatus``."""
    episode_topic: str = "episode"
    """Episode status of the simulated robot (``diagnostic_msgs/DiagnosticStatus``); empty: none."""
    latent_topic: str = "latent"
    """Steered mode: the learner's latent noise per chunk (:class:`steer.robot.spec.LatentChunk`), volatile."""
    latent_executed_topic: str = "latent_executed"
    """Steered mode: the noise the node ran per chunk, with its observation (node -> learner)."""
    adapt_status_topic: str = "adapt_status"
    """The learner's :class:`steer.robot.spec.AdaptStatus`, for the console."""
    adapt_control_topic: str = "adapt_control"
    """The console's :class:`steer.robot.spec.AdaptControl` (pause, resume, stop, marks, takeover) to the learner."""
    namespace: str = ""
    """Namespace put in front of relative topic names."""
    trusted_operator_keys: tuple[str, ...] = ()
    """Ed25519 public keys (64 hex each, from ``steer keys init``) whose signed commands (release, arm,
    promote, adapt_start, reset_done) this robot obeys; empty: it obeys none (it still stops on the e-stop)."""
    policies_dir: str = ""
    """The only directory promoted policies are read from (empty: promotion is refused); in a YAML, a
    relative path is relative to the YAML's directory."""
    max_policy_bytes: int = 64 * 1024 * 1024
    """Largest policy file a promotion may name (bytes)."""
    command_max_age_s: float = 30.0
    """A signed command older (or further in the future) than this is refused as stale (s)."""
    reset_mode: str = "auto"
    """How a (simulated) robot gets to its next episode: ``auto`` (its own reset routine, at once) or
    ``operator`` (it holds still after each episode until an operator's signed ``reset_done`` confirms the
    scene is reset; needs ``trusted_operator_keys``)."""

    def __post_init__(self) -> None:
        # YAML and JSON give lists; a frozen config holds tuples.
        keys = self.trusted_operator_keys
        object.__setattr__(self, "trusted_operator_keys",
                           (str(keys),) if isinstance(keys, str) else tuple(str(k) for k in keys))
        for text in self.trusted_operator_keys:
            hexkey = text.split()[1] if text.startswith("ed25519 ") and len(text.split()) > 1 else text.strip()
            if len(hexkey) != 64 or any(ch not in "0123456789abcdefABCDEF" for ch in hexkey):
                raise RobotError(f"trusted_operator_keys entry {text[:80]!r} is not a 64-hex Ed25519 public key; "
                                 "paste the line `steer keys init` printed.")
        if not (isinstance(self.max_policy_bytes, int) and self.max_policy_bytes > 0):
            raise RobotError(f"max_policy_bytes must be a positive number of bytes, not {self.max_policy_bytes!r}; "
                             "fix the robot config.")
        if not (isinstance(self.command_max_age_s, (int, float)) and 0 < self.command_max_age_s < float("inf")):
            raise RobotError(f"command_max_age_s must be a positive number of seconds, not "
                             f"{self.command_max_age_s!r}; fix the robot config.")
        if self.command_interface not in COMMAND_INTERFACES:
            raise RobotError(f"command_interface must be one of {COMMAND_INTERFACES}, not "
                             f"{self.command_interface!r}; fix the robot config.")
        if self.watchdog_action not in WATCHDOG_ACTIONS:
            raise RobotError(f"watchdog_action must be one of {WATCHDOG_ACTIONS}, not {self.watchdog_action!r}; "
                             "fix the robot config.")
        if self.reset_mode not in RESET_MODES:
            raise RobotError(f"reset_mode must be one of {RESET_MODES}, not {self.reset_mode!r}; fix the robot config.")
        if not (isinstance(self.time_scale, (int, float)) and 0 < self.time_scale <= 20):
            raise RobotError(f"time_scale must be in (0, 20], not {self.time_scale!r}; fix the robot config.")
        if self.control_rate_hz <= 0 or self.watchdog_ms <= 0 or self.command_timeout_ms <= 0:
            raise RobotError("control_rate_hz, watchdog_ms and command_timeout_ms must be positive; "
                             "fix the robot config.")
        if self.command_message not in COMMAND_MESSAGES:
            raise RobotError(f"command_message must be one of {COMMAND_MESSAGES}, not {self.command_message!r}; "
                             "fix the robot config.")
        if self.command_message == "Twist" and (len(self.twist_fields) != len(self.command_joints)
                                                or not set(self.twist_fields) <= set(TWIST_FIELDS)):
            raise RobotError(f"Twist commands need one of {TWIST_FIELDS} per commanded joint in twist_fields; "
                             "fix the robot config.")
        for j in self.command_joints:
            if not (j.position_min < j.position_max and j.velocity_max > 0 and j.effort_max > 0
                    and j.command_rate_max > 0):
                raise RobotError(f"joint {j.name!r} has empty or non-positive limits; fix the robot config.")
            if j.name not in self.joints:
                raise RobotError(f"commanded joint {j.name!r} is not among the published joints {list(self.joints)}.")

    @property
    def control_period_s(self) -> float:
        """Wall-clock seconds between two control ticks (the robot's period divided by ``time_scale``)."""
        return 1.0 / (self.control_rate_hz * self.time_scale)

    @property
    def watchdog_wall_ms(self) -> float:
        """The watchdog in wall-clock ms: ``watchdog_ms``, longer on a robot slowed below real time."""
        return self.watchdog_ms / min(self.time_scale, 1.0)

    @property
    def command_joint_names(self) -> tuple[str, ...]:
        """Names of the commanded joints, in command order."""
        return tuple(j.name for j in self.command_joints)

    def topic(self, name: str) -> str:
        """Fully qualified ROS topic name of a configured topic (``/ns/joint_states``)."""
        if name.startswith("/"):
            return name
        ns = self.namespace.strip("/")
        return f"/{ns}/{name}" if ns else f"/{name}"

    @property
    def command_topic(self) -> str:
        """Topic of the commands (``<controller>/commands`` for a forward command controller)."""
        if self.command_message == "Twist":
            return self.topic(self.cmd_vel_topic)
        if self.command_message == "JointTrajectory":
            return self.topic(f"{self.controller}/joint_trajectory")
        return self.topic(f"{self.controller}/commands")

    def observation_names(self) -> tuple[str, ...]:
        """Every observation name this robot can provide."""
        names = [f"{j}.{k}" for k in ("pos", "vel", "eff") for j in self.joints]
        names += [f"{v.name}.{f}" for v in self.vectors for f in v.fields]
        return tuple(names)

    def replace(self, **changes: Any) -> RobotConfig:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- YAML ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobotConfig:
        """Build a config from the mapping of a limits YAML."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RobotError(f"unknown robot config keys {sorted(unknown)}; allowed: {sorted(known)}.")
        try:
            if "command_joints" in data:
                data["command_joints"] = tuple(JointLimits(**j) for j in data["command_joints"])
            if "vectors" in data:
                data["vectors"] = tuple(VectorSource(name=v["name"], topic=v["topic"], fields=tuple(v["fields"]))
                                        for v in data["vectors"])
            for key in ("joints", "twist_fields", "trusted_operator_keys"):
                if key in data:
                    data[key] = tuple(data[key])
            return cls(**data)
        except (TypeError, KeyError) as err:
            raise RobotError(f"malformed robot config ({err}); see robot/config/planar_push.yaml.") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RobotConfig:
        """Load a limits YAML; one clear sentence if it is missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise RobotError(f"robot config {str(path)!r} does not exist; pass a limits YAML such as "
                             "robot/config/planar_push.yaml.")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise RobotError(f"robot config {str(path)!r} is not valid YAML ({err}).") from None
        if not isinstance(data, dict):
            raise RobotError(f"robot config {str(path)!r} must be a mapping of config keys.")
        policies = data.get("policies_dir")
        if isinstance(policies, str) and policies and not Path(policies).expanduser().is_absolute():
            # A relative policies directory means one beside the config, wherever the node is started.
            data["policies_dir"] = str(path.resolve().parent / policies)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (YAML/JSON-ready) of this config."""
        return dataclasses.asdict(self)

    @property
    def policies_path(self) -> Path | None:
        """The policies directory, resolved (None when promotion is off)."""
        return Path(self.policies_dir).expanduser().resolve() if self.policies_dir else None


def default_config_path() -> Path:
    """Path of the packaged PlanarPush robot config."""
    return Path(str(resources.files("steer.robot").joinpath("config/planar_push.yaml")))


def load_robot_config(path: str | Path | None = None) -> RobotConfig:
    """The robot config at ``path``, or the packaged PlanarPush one."""
    return RobotConfig.from_yaml(path or default_config_path())


