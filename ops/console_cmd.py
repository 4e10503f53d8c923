"""``steer console``: the operator console (a thin layer over :mod:`steer.ops.console.app`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from steer.ops.console import ConsoleError
from steer.ops.robot_cmd import check_domain_id
from steer.robot.errors import RobotError

# As in ROS 2: the domain comes from the environment unless given.
_ROS_DOMAIN_ID = int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID", "").isdigit() else 0


@dataclass(frozen=True)
class ConsoleConfig:
    """Options of ``steer console``."""

    runs: Path = Path("runs")
    """Folder of the run directories to watch."""
    policies: Path | None = None
    """Folder of exported ONNX policies, the robot's policies directory (or a copy kept in sync); promoted
    runs are exported here and promotions name files relative to it (default: the robot config's
    policies_dir, else ./policies)."""
    robot: bool = True
    """Connect to a robot's ROS 2 topics over DDS (the Robots screen and the e-stop)."""
    limits: str | None = None
    """Robot config YAML with joints, limits and topics (default: the packaged PlanarPush one)."""
    namespace: str | None = None
    """Namespace in front of the robot's relative topic names (default: the YAML's)."""
    domain_id: int = field(default=_ROS_DOMAIN_ID, metadata={"range": "[0, 232]"})
    """DDS domain id (default: $ROS_DOMAIN_ID, else 0)."""
    loopback: bool = True
    """Keep DDS traffic on loopback (ignored when CYCLONEDDS_URI is set); false to reach a robot on the network."""
    refresh_s: float = field(default=1.0, metadata={"range": "(0, inf)"})
    """Seconds between rescans of the runs and redraws of the plots."""
    key: Path = Path("~/.config/steer/operator_ed25519")
    """The operator's private key (``steer keys init``) that signs release, arm and promote; without a
    readable one the console still shows everything and still e-stops."""


def console(cfg: ConsoleConfig) -> int:
    """Watch runs, drive robots and promote policies from the terminal (fits 80x24, works over SSH;
    press ? for every key binding)."""
    from steer.ops.console.app import ConsoleApp

    ConsoleApp(console_settings(cfg)).run()
    return 0


def console_settings(cfg: ConsoleConfig):
    """The :class:`~steer.ops.console.app.ConsoleSettings` of ``cfg``, every option checked first."""
    if not cfg.refresh_s > 0 or cfg.refresh_s == float("inf"):
        raise ConsoleError(f"--refresh-s must be a positive number of seconds, got {cfg.refresh_s}.")
    check_domain_id(cfg.domain_id)
    try:
        from steer.ops.console.app import ConsoleSettings
    except ImportError as err:
        raise ConsoleError(f"the console needs {err.name!r}; install steer-rl[console].") from None
    robot_config = None
    if cfg.robot:
        from steer.robot.processes import robot_config as load

        robot_config = load(cfg.limits, namespace=cfg.namespace)
    key, key_error = None, ""
    try:
        from steer.robot.keys import load_private_key

        key = load_private_key(cfg.key)
    except ImportError as err:  # no key: the console still watches and e-stops
        key_error = f"the operator key needs {err.name!r}"
    except RobotError as err:
        key_error = str(err)
    policies = cfg.policies
    if policies is None:
        policies = (robot_config.policies_path if robot_config is not None else None) or Path("policies")
    return ConsoleSettings(runs=cfg.runs, policies=policies, robot_config=robot_config,
                           domain_id=cfg.domain_id, loopback=cfg.loopback, refresh_s=cfg.refresh_s,
                           operator_key=key, operator_key_error=key_error)
