"""PlanarPush: push a puck onto a goal disc with a velocity-controlled pusher.

A small, fast MuJoCo manipulation task with a sparse success criterion. The robot is
a spherical pusher on two slide joints (``pusher_x``, ``pusher_y``) commanded with
velocity targets, as a ros2_control velocity ``forward_command_controller`` would
drive it. The puck slides on ``puck_x``, ``puck_y``. Success: the puck's centre is
within ``success_radius`` of the goal; the episode then terminates with reward 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

OBS_NAMES = (
    "pusher_x.pos", "pusher_y.pos", "puck_x.pos", "puck_y.pos",
    "pusher_x.vel", "pusher_y.vel", "puck_x.vel", "puck_y.vel",
    "goal.x", "goal.y",
)
ACTION_NAMES = ("pusher_x", "pusher_y")
JOINT_NAMES = ("pusher_x", "pusher_y", "puck_x", "puck_y")


@dataclass(frozen=True)
class PushTaskConfig:
    """Geometry and timing of the PlanarPush task."""

    max_steps: int = 100
    """Control steps before the episode is truncated (5 s at 20 Hz)."""
    frame_skip: int = 5
    """Physics steps (10 ms each) per control step: 20 Hz control."""
    success_radius: float = 0.03
    """Puck-to-goal distance (m) that counts as success."""
    goal_x_range: tuple[float, float] = (0.14, 0.24)
    """Goal x is drawn uniformly from this range (m)."""
    goal_abs_y_range: tuple[float, float] = (0.10, 0.20)
    """|goal y| is drawn from this range, with a random sign (m)."""
    start_jitter: float = 0.03
    """Half-width of the uniform jitter of the puck and pusher start positions (m)."""


def _load_model() -> mujoco.MjModel:
    xml = resources.files("steer.sim").joinpath("assets/planar_push.xml").read_text()
    return mujoco.MjModel.from_xml_string(xml)


class PlanarPushEnv(gym.Env):
    """Gymnasium env of the PlanarPush task (id ``steer/PlanarPush-v0``).

    Observation (float32, 10): pusher position, puck position, pusher velocity, puck
    velocity, goal position (names in ``obs_names``). Action (float32, 2): pusher
    velocity targets in m/s, bounded by ``action_space``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    obs_names = OBS_NAMES
    action_names = ACTION_NAMES
    joint_names = JOINT_NAMES

    def __init__(self, config: PushTaskConfig | None = None, render_mode: str | None = None, **overrides: Any):
        self.config = config or PushTaskConfig(**overrides)
        self.model = _load_model()
        self.data = mujoco.MjData(self.model)
        self.render_mode = render_mode
        self._renderer: mujoco.Renderer | None = None
        self.control_rate_hz = 1.0 / (self.model.opt.timestep * self.config.frame_skip)
        self._qpos_adr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._qvel_adr = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        high = self.model.actuator_ctrlrange[:, 1].astype(np.float32)
        self.action_space = gym.spaces.Box(-high, high, dtype=np.float32)
        obs_high = np.full(len(OBS_NAMES), 5.0, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-obs_high, obs_high, dtype=np.float32)
        self.goal = np.zeros(2)
        self._steps = 0

    # -- state -----------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        q = self.data.qpos[self._qpos_adr]
        v = self.data.qvel[self._qvel_adr]
        return np.concatenate([q, v, self.goal]).astype(np.float32)

    def puck_to_goal(self) -> float:
        """Distance (m) from the puck's centre to the goal."""
        return float(np.linalg.norm(self.data.qpos[self._qpos_adr[2:4]] - self.goal))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        cfg, rng = self.config, self.np_random
        mujoco.mj_resetData(self.model, self.data)
        j = cfg.start_jitter
        puck = rng.uniform(-j, j, size=2)
        pusher = np.array([-0.15, 0.0]) + rng.uniform(-j, j, size=2)
        gy = rng.uniform(*cfg.goal_abs_y_range) * rng.choice([-1.0, 1.0])
        self.goal = np.array([rng.uniform(*cfg.goal_x_range), gy])
        self.data.qpos[self._qpos_adr] = np.concatenate([pusher, puck])
        self.data.mocap_pos[0, :2] = self.goal
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(2)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"PlanarPush got a non-finite action {action}; actions must be finite velocities in m/s.")
        self.data.ctrl[:] = np.clip(action, self.action_space.low, self.action_space.high)
        mujoco.mj_step(self.model, self.data, nstep=self.config.frame_skip)
        self._steps += 1
        success = self.puck_to_goal() < self.config.success_radius
        truncated = (not success) and self._steps >= self.config.max_steps
        return self._obs(), float(success), success, truncated, {"is_success": success}

    def render(self):
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, 240, 240)
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
