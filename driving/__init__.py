"""steer.driving: vectorized driving simulator, maps and routes, CaRL reward and BEV, SUMO and CARLA backends.

Importing this package registers ``steer/Drive-v0`` with gymnasium: :class:`DriveEnv` for
``gym.make`` and the native :class:`DriveVectorEnv` (same-step autoreset) for
``gym.make_vec(..., vectorization_mode="vector_entry_point")``, which the PPO trainer uses.
"""

from __future__ import annotations

import gymnasium as gym

from steer.driving.bev import BEV_CHANNELS, BevConfig
from steer.driving.env import MEASUREMENTS, OBSERVATIONS, REWARDS, VALUE_INPUTS, DriveEnv, DriveEnvConfig, DriveVectorEnv
from steer.driving.expert import ExpertConfig, ExpertDriver
from steer.driving.rewards import CarlRewardConfig, RoachRewardConfig
from steer.driving.simulator import INFRACTIONS, DrivingSim, SimConfig
from steer.driving.town import TownConfig, generate_town

ENV_ID = "steer/Drive-v0"
"""Gymnasium id of :class:`DriveEnv`."""

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="steer.driving.env:DriveEnv", vector_entry_point="steer.driving.env:DriveVectorEnv",
                 max_episode_steps=None)

__all__ = [
    "BEV_CHANNELS", "BevConfig", "CarlRewardConfig", "DriveEnv", "DriveEnvConfig", "DriveVectorEnv", "DrivingSim",
    "ENV_ID", "ExpertConfig", "ExpertDriver", "INFRACTIONS", "MEASUREMENTS", "OBSERVATIONS", "REWARDS", "RoachRewardConfig",
    "SimConfig", "TownConfig", "VALUE_INPUTS", "generate_town",
]
