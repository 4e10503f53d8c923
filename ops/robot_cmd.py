"""``steer robot sim`` and ``steer robot run``: the simulated robot and the policy node over ROS 2 topics.

A thin layer: each command turns its config into a :class:`steer.robot.config.RobotConfig`
and calls :mod:`steer.robot.processes`, which holds the logic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

# As in ROS 2: the domain comes from the environment unless given.
_ROS_DOMAIN_ID = int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID", "").isdigit() else 0

DOMAIN_ID_MAX = 232
"""Largest DDS domain id (with the default port mapping its ports must still fit in 16 bits)."""


def _check_common(cfg) -> None:
    """Options both commands share, checked before anything starts."""
    from steer.robot.errors import RobotError

    check_domain_id(cfg.domain_id)
    if not 0 <= cfg.status_every_s < float("inf"):
        raise RobotError(f"--status-every-s must be 0 (off) or a positive number of seconds, got {cfg.status_every_s}.")


def check_domain_id(domain_id: int) -> int:
    """``domain_id`` when it is a usable DDS domain id, else one sentence (exit 2)."""
    from steer.robot.errors import RobotError

    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= DOMAIN_ID_MAX:
        raise RobotError(f"--domain-id must be between 0 and {DOMAIN_ID_MAX}, got {domain_id}.")
    return domain_id


@dataclass(frozen=True)
class RobotSimConfig:
    """Options of ``steer robot sim``."""

    domain_id: int = field(default=_ROS_DOMAIN_ID, metadata={"range": "[0, 232]"})
    """DDS domain id (default: $ROS_DOMAIN_ID, else 0)."""
    task: str = "steer/PlanarPush-v0"
    """Gymnasium id of the MuJoCo task to simulate."""
    limits: str | None = None
    """Robot config YAML with joints, limits, topics and rates (default: the packaged PlanarPush one)."""
    rate_hz: float | None = field(default=None, metadata={"range": "(0, inf)"})
    """Control rate (Hz); must match the task's (default: the YAML's)."""
    namespace: str | None = None
    """Namespace in front of relative topic names (e.g. ``robot1``; default: the YAML's)."""
    joint_state_topic: str | None = None
    """Joint-state topic, sensor_msgs/JointState (default: the YAML's)."""
    controller: str | None = None
    """Controller whose ``<controller>/commands`` topic takes the commands (default: the YAML's)."""
    estop_topic: str | None = None
    """E-stop topic, std_msgs/Bool, transient-local (default: the YAML's)."""
    safety_topic: str | None = None
    """Safety-state topic, diagnostic_msgs/DiagnosticStatus (default: the YAML's)."""
    episodes: int = 0
    """Episodes to run; 0 runs until interrupted."""
    seed: int = 0
    """Seed of the first episode; episode k uses seed + k."""
    duration_s: float | None = field(default=None, metadata={"range": "(0, inf)"})
    """Stop after this many seconds (default: no limit)."""
    wait_for_node_s: float = 0.0
    """Wait up to this long for a policy node before the first episode."""
    results: str | None = None
    """Write the episode results and timing as JSON to this path."""
    loopback: bool = True
    """Keep DDS traffic on loopback (ignored when CYCLONEDDS_URI is set)."""
    transport: Literal["dds", "rclpy"] = "dds"
    """``dds`` (Cyclone DDS, no ROS install needed) or ``rclpy`` (on a robot with ROS 2)."""
    rt_priority: int = field(default=0, metadata={"range": "[0, 99]"})
    """SCHED_FIFO priority (1-99) for the control loop and its DDS threads; 0: normal scheduling."""
    status_every_s: float = 5.0
    """Print a one-line status to stderr every this many seconds (0: never)."""
    time_scale: float | None = field(default=None, metadata={"range": "(0, 20]"})
    """Simulated robots only: run this many times faster than real time (give the node the same value);
    default: the YAML's (1)."""
    reset_mode: Literal["auto", "operator"] | None = None
    """How the next episode starts: ``auto`` (at once, as a robot with its own reset routine) or ``operator``
    (the robot holds still after each episode until the operator confirms the reset with a signed reset_done,
    key C on the console's Adapt screen; needs trusted_operator_keys). Default: the YAML's (auto)."""


@dataclass(frozen=True)
class RobotRunConfig:
    """Options of ``steer robot run``."""

    policy: str
    """ONNX policy exported by ``steer export``."""
    domain_id: int = field(default=_ROS_DOMAIN_ID, metadata={"range": "[0, 232]"})
    """DDS domain id (default: $ROS_DOMAIN_ID, else 0)."""
    limits: str | None = None
    """Robot config YAML with joints, limits, topics and rates (default: the packaged PlanarPush one)."""
    rate_hz: float | None = field(default=None, metadata={"range": "(0, inf)"})
    """Control rate (Hz); must match the policy's (default: the YAML's)."""
    namespace: str | None = None
    """Namespace in front of relative topic names (e.g. ``robot1``; default: the YAML's)."""
    joint_state_topic: str | None = None
    """Joint-state topic, sensor_msgs/JointState (default: the YAML's)."""
    controller: str | None = None
    """Controller whose ``<controller>/commands`` topic takes the commands (default: the YAML's)."""
    estop_topic: str | None = None
    """E-stop topic, std_msgs/Bool, transient-local (default: the YAML's)."""
    safety_topic: str | None = None
    """Safety-state topic, diagnostic_msgs/DiagnosticStatus (default: the YAML's)."""
    operator_command_topic: str | None = None
    """Signed operator commands (release, arm, promote) from ``steer console``,
    diagnostic_msgs/DiagnosticStatus, volatile (default: the YAML's)."""
    duration_s: float | None = field(default=None, metadata={"range": "(0, inf)"})
    """Stop after this many seconds (default: until interrupted)."""
    bag_dir: str | None = None
    """Record each episode as a ROS 2 MCAP bag in this folder."""
    stats: str | None = None
    """Write the node's timing summary as JSON to this path on exit."""
    trigger: Literal["observation", "timer"] = "observation"
    """Tick on each joint state (robots that publish at the control rate) or on a timer."""
    loopback: bool = True
    """Keep DDS traffic on loopback (ignored when CYCLONEDDS_URI is set)."""
    transport: Literal["dds", "rclpy"] = "dds"
    """``dds`` (Cyclone DDS, no ROS install needed) or ``rclpy`` (on a robot with ROS 2)."""
    rt_priority: int = field(default=0, metadata={"range": "[0, 99]"})
    """SCHED_FIFO priority (1-99) for the control loop and its DDS threads; 0: normal scheduling."""
    status_every_s: float = 5.0
    """Print a one-line status to stderr every this many seconds (0: never)."""
    time_scale: float | None = field(default=None, metadata={"range": "(0, 20]"})
    """Simulated robots only: run this many times faster than real time (give the node the same value);
    default: the YAML's (1)."""
    steered: bool = False
    """Steered mode (BC diffusion policies): the policy's noise comes chunk by chunk from the learner of
    ``steer adapt`` on the latent topic, inside a session armed by a signed adapt_start; a late or missing
    latent runs the baseline's noise. Each episode opens with a one-tick lead-in holding still, while the
    learner chooses the first steered chunk."""


def _robot(cfg: RobotSimConfig | RobotRunConfig, **topics: str | None):
    from steer.robot.processes import robot_config

    return robot_config(cfg.limits, namespace=cfg.namespace, rate_hz=cfg.rate_hz, time_scale=cfg.time_scale,
                        joint_state_topic=cfg.joint_state_topic, controller=cfg.controller,
                        estop_topic=cfg.estop_topic, safety_topic=cfg.safety_topic, **topics)


def sim(cfg: RobotSimConfig) -> int:
    """Run the task's MuJoCo robot in real time, publishing /joint_states and the goal and taking
    commands on /<controller>/commands (with a command timeout that holds the robot)."""
    from steer.robot.processes import run_sim

    _check_common(cfg)
    summary = run_sim(_robot(cfg, reset_mode=cfg.reset_mode), domain_id=cfg.domain_id, task=cfg.task,
                      episodes=cfg.episodes, seed=cfg.seed, duration_s=cfg.duration_s,
                      wait_for_node_s=cfg.wait_for_node_s, results=cfg.results, loopback=cfg.loopback,
                      transport=cfg.transport, rt_priority=cfg.rt_priority, status_every_s=cfg.status_every_s)
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    return 0


def run(cfg: RobotRunConfig) -> int:
    """Run an ONNX policy as a ROS 2 node: observations by name from the topics, every command
    through the safety shield, the safety state on /safety_state, episodes recorded as bags.
    The node starts unarmed and moves the robot only after an operator's signed arm."""
    from steer.robot.processes import run_node

    _check_common(cfg)
    robot = _robot(cfg, operator_command_topic=cfg.operator_command_topic)
    summary = run_node(robot, cfg.policy, domain_id=cfg.domain_id, duration_s=cfg.duration_s, bag_dir=cfg.bag_dir,
                       stats=cfg.stats, trigger=cfg.trigger, loopback=cfg.loopback,
                       transport=cfg.transport, rt_priority=cfg.rt_priority, status_every_s=cfg.status_every_s,
                       steered=cfg.steered)
    print(json.dumps(summary))
    return 0
