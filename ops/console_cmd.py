"""``steer console``: the operator console (a thin layer over :mod:`steer.ops.console.app`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from steer.ops.console import ConsoleError

# As in ROS 2: the domain comes from the environment unless given.
_ROS_DOMAIN_ID = int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID", "").isdigit() else 0


@dataclass(frozen=True)
class ConsoleConfig:
    """Options of ``steer console``."""

    runs: Path = Path("runs")
    """Folder of the run directories to watch."""
    policies: Path = Path("policies")
    """Folder of exported ONNX policies; promoted runs are exported here."""
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


def console(cfg: ConsoleConfig) -> int:
    """Watch runs, drive robots and promote policies from the terminal (fits 80x24, works over SSH;
    press ? for every key binding)."""
    if cfg.refresh_s <= 0:
        raise ConsoleError(f"--refresh-s must be positive, got {cfg.refresh_s}.")
    try:
        from steer.ops.console.app import ConsoleApp, ConsoleSettings
    except ImportError as err:
        raise ConsoleError(f"the console needs {err.name!r}; install steer-rl[console].") from None
    robot_config = None
    if cfg.robot:
        from steer.robot.processes import robot_config as load

        robot_config = load(cfg.limits, namespace=cfg.namespace)
    settings = ConsoleSettings(runs=cfg.runs, policies=cfg.policies, robot_config=robot_config,
                               domain_id=cfg.domain_id, loopback=cfg.loopback, refresh_s=cfg.refresh_s)
    ConsoleApp(settings).run()
    return 0
