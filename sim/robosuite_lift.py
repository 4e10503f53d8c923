"""robosuite Lift (Panda, OSC_POSE) as a gymnasium env (``steer/Lift-v0``), plus an imperfect scripted expert.

The DSRL paper's own setting, as an optional extra: robosuite 1.5 pins MuJoCo 3.3.7, so
it lives in its own environment (``pip install -e ".[train,lift]"``); ``bench/lift.py``
uses it, the test suite skips it when robosuite is missing.

Observation (float32, 15-D, names in ``LiftEnv.obs_names``):
    eef_pos (3), eef_quat (4, xyzw), gripper_qpos (2), cube_pos (3),
    cube_rel_eef (3, cube_pos - eef_pos).
Action: robosuite's 7-D OSC_POSE delta action in [-1, 1]
    (dx, dy, dz, droll, dpitch, dyaw, gripper), gripper -1 = open, +1 = close.
    Position inputs are scaled by the controller to at most 5 cm per step,
    rotation inputs to at most 0.5 rad per step.
Reward: 1.0 on the step the cube is lifted (robosuite ``_check_success``), which
also terminates the episode; 0.0 otherwise. Truncation at ``max_steps``.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

OBS_NAMES = [
    "eef_pos_x", "eef_pos_y", "eef_pos_z",
    "eef_quat_x", "eef_quat_y", "eef_quat_z", "eef_quat_w",
    "gripper_qpos_0", "gripper_qpos_1",
    "cube_pos_x", "cube_pos_y", "cube_pos_z",
    "cube_rel_eef_x", "cube_rel_eef_y", "cube_rel_eef_z",
]

_OBS_KEYS = [
    ("robot0_eef_pos", 3),
    ("robot0_eef_quat", 4),
    ("robot0_gripper_qpos", 2),
    ("cube_pos", 3),
    ("gripper_to_cube_pos", 3),
]

# robosuite controller output limits for the default OSC_POSE config
POS_SCALE = 0.05  # metres per unit action
ROT_SCALE = 0.5  # radians per unit action


class _QuietRobosuite:
    """Drop robosuite's INFO/WARNING console chatter (macro file, optional models) while active."""

    def __init__(self):
        import logging

        self._logger = logging.getLogger("robosuite_logs")
        self._filter = lambda record: record.levelno >= logging.ERROR

    def __enter__(self):
        self._logger.addFilter(self._filter)
        return self

    def __exit__(self, *exc):
        self._logger.removeFilter(self._filter)
        return False


class LiftEnv(gym.Env):
    """Gymnasium wrapper around ``robosuite.make("Lift", robots="Panda", ...)``.

    ``reset(seed=s)`` reseeds robosuite's RNG (used by the cube placement sampler and
    the robot's initial joint noise), so the same seed gives the same initial state.
    ``hard_reset=False`` (default) keeps the MuJoCo model between episodes, which is much
    faster; the cube's size is then fixed by ``build_seed`` at construction.
    """

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = 120, hard_reset: bool = False, build_seed: int = 0):
        super().__init__()
        self.max_steps = int(max_steps)
        with _QuietRobosuite():
            import robosuite
            from robosuite.controllers import load_composite_controller_config

            # Panda default: "BASIC" composite controller = OSC_POSE arm + GRIP gripper.
            controller_config = load_composite_controller_config(robot="Panda")
            self._env = robosuite.make(
                "Lift",
                robots="Panda",
                controller_configs=controller_config,
                has_renderer=False,
                has_offscreen_renderer=False,
                use_camera_obs=False,
                use_object_obs=True,
                reward_shaping=False,
                control_freq=20,
                horizon=self.max_steps,
                ignore_done=True,  # truncation is handled by this wrapper
                hard_reset=hard_reset,
                seed=build_seed,
            )
        self.obs_names = list(OBS_NAMES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(len(OBS_NAMES),), dtype=np.float32)
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._t = 0

    @property
    def robosuite_env(self):
        return self._env

    @staticmethod
    def _flatten(obs_dict: dict) -> np.ndarray:
        return np.concatenate([np.asarray(obs_dict[k], dtype=np.float64).reshape(n) for k, n in _OBS_KEYS]).astype(
            np.float32
        )

    def _reseed(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._env.rng = rng
        sampler = getattr(self._env, "placement_initializer", None)
        if sampler is not None:
            sampler.rng = rng
            for sub in getattr(sampler, "samplers", {}).values():
                sub.rng = rng

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._reseed(int(seed))
        obs = self._env.reset()
        self._t = 0
        return self._flatten(obs), {"is_success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        obs, _, _, _ = self._env.step(action)
        self._t += 1
        success = bool(self._env._check_success())
        reward = 1.0 if success else 0.0
        terminated = success
        truncated = (not terminated) and self._t >= self.max_steps
        return self._flatten(obs), reward, terminated, truncated, {"is_success": success}

    def close(self):
        try:
            self._env.close()
        except Exception:
            pass


def _quat_mul(q1, q0):
    """Hamilton product q1 * q0, quaternions in xyzw order."""
    x0, y0, z0, w0 = q0
    x1, y1, z1, w1 = q1
    return np.array(
        [
            x1 * w0 + y1 * z0 - z1 * y0 + w1 * x0,
            -x1 * z0 + y1 * w0 + z1 * x0 + w1 * y0,
            x1 * y0 - y1 * x0 + z1 * w0 + w1 * z0,
            -x1 * x0 - y1 * y0 - z1 * z0 + w1 * w0,
        ]
    )


def _quat_to_rotvec(q):
    q = np.asarray(q, dtype=np.float64)
    q = q / (np.linalg.norm(q) + 1e-12)
    if q[3] < 0:
        q = -q
    s = np.linalg.norm(q[:3])
    if s < 1e-9:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(s, q[3])
    return q[:3] / s * angle


class LiftExpert:
    """Scripted pick-and-lift operator with a per-episode hidden mode.

    Modes:
      * ``"careful"``: aims the grasp at the cube centre.
      * ``"offset"``: a calibration error shifts the grasp point by ``offset_m`` along
        ``offset_axis`` (always towards ``offset_sign``; ``None`` draws the sign per
        episode). With the default 2.4 cm along y (the finger-closing axis) one finger
        lands on the cube's top edge, the hand stops ~2 cm high, and on closing the
        fingers usually slide off the cube (success ~10%, vs ~100% when careful).
    Both modes add Gaussian noise (``noise_std``) to the translation/rotation inputs.
    Call ``start_episode()``, ``begin_episode(seed)`` or ``reset(rng)`` before each episode.
    """

    # phase names
    APPROACH, DESCEND, CLOSE, LIFT = "approach", "descend", "close", "lift"

    def __init__(
        self,
        p_offset: float = 0.5,
        offset_m: float = 0.024,
        offset_axis: int = 1,
        offset_sign: Optional[int] = 1,
        noise_std: float = 0.05,
        gain: float = 10.0,
        hover_height: float = 0.06,
        grasp_depth: float = 0.0,
        close_steps: int = 8,
        lift_height: float = 0.15,
        obs_names: Optional[list] = None,
        seed: int = 0,
    ):
        self.p_offset = p_offset
        self.offset_m = offset_m
        self.offset_axis = offset_axis
        self.offset_sign = offset_sign
        self.noise_std = noise_std
        self.gain = gain
        self.hover_height = hover_height
        self.grasp_depth = grasp_depth
        self.close_steps = close_steps
        self.lift_height = lift_height
        names = list(obs_names) if obs_names is not None else OBS_NAMES
        idx = {n: i for i, n in enumerate(names)}
        self._i_eef = [idx["eef_pos_x"], idx["eef_pos_y"], idx["eef_pos_z"]]
        self._i_quat = [idx["eef_quat_x"], idx["eef_quat_y"], idx["eef_quat_z"], idx["eef_quat_w"]]
        self._i_cube = [idx["cube_pos_x"], idx["cube_pos_y"], idx["cube_pos_z"]]
        self._episodes = np.random.default_rng(seed)
        self.reset(np.random.default_rng(0))

    def start_episode(self) -> str:
        """Draw the next episode's mode and noise from the expert's own seed (what ``collect_demos`` calls)."""
        return self.reset(np.random.default_rng(int(self._episodes.integers(2**63))))

    def begin_episode(self, seed: int) -> str:
        return self.reset(np.random.default_rng([int(seed), 7919]))

    def reset(self, rng: np.random.Generator) -> str:
        self.rng = rng
        self.mode = "offset" if rng.random() < self.p_offset else "careful"
        self.offset = np.zeros(3)
        if self.mode == "offset":
            sign = self.offset_sign if self.offset_sign is not None else (1 if rng.random() < 0.5 else -1)
            self.offset[self.offset_axis] = self.offset_m * float(np.sign(sign))
        self.phase = self.APPROACH
        self.phase_t = 0
        self.grasp_target = None
        self.lift_z = None
        self.ref_quat = None
        return self.mode

    def _set_phase(self, phase):
        self.phase = phase
        self.phase_t = 0

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        eef = obs[self._i_eef]
        quat = obs[self._i_quat]
        cube = obs[self._i_cube]
        if self.ref_quat is None:
            self.ref_quat = quat.copy()

        gripper = -1.0
        if self.phase == self.APPROACH:
            target = cube + self.offset + np.array([0.0, 0.0, self.hover_height])
            err = target - eef
            if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02 or self.phase_t > 60:
                self.grasp_target = cube + self.offset + np.array([0.0, 0.0, self.grasp_depth])
                self._set_phase(self.DESCEND)
        if self.phase == self.DESCEND:
            target = self.grasp_target
            err = target - eef
            if abs(err[2]) < 0.008 or self.phase_t > 30:
                self._set_phase(self.CLOSE)
        if self.phase == self.CLOSE:
            target = self.grasp_target
            gripper = 1.0
            if self.phase_t >= self.close_steps:
                self.lift_z = self.grasp_target[2] + self.lift_height
                self._set_phase(self.LIFT)
        if self.phase == self.LIFT:
            target = np.array([self.grasp_target[0], self.grasp_target[1], self.lift_z])
            gripper = 1.0
        self.phase_t += 1

        dpos = np.clip(self.gain * (target - eef), -1.0, 1.0)
        rot_err = _quat_to_rotvec(_quat_mul(self.ref_quat, np.array([-quat[0], -quat[1], -quat[2], quat[3]])))
        drot = np.clip(2.0 * rot_err / ROT_SCALE, -1.0, 1.0)
        action = np.concatenate([dpos, drot, [gripper]])
        action[:6] += self.rng.normal(0.0, self.noise_std, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
