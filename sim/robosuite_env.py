"""robosuite plumbing shared by the manipulation tasks (``steer/Lift-v0``, ``steer/Can-v0``).

One gymnasium base env around ``robosuite.make(<task>, robots="Panda", ...)`` with the OSC_POSE
controller at 20 Hz, a low-dimensional observation, a sparse success that ends the episode,
and ``reset(seed)`` that reproduces the initial state; plus the servo that the scripted
experts use to move the hand. A task module names its robosuite environment, picks its
observation and defines its success; this module knows nothing about a particular task.

Action: robosuite's 7-D OSC_POSE delta action in [-1, 1]
    (dx, dy, dz, droll, dpitch, dyaw, gripper), gripper -1 = open, +1 = close.
    The controller scales position inputs to at most 5 cm per step and rotation inputs
    to at most 0.5 rad per step.
Reward: 1.0 on the step the task succeeds, which also terminates the episode; 0.0
otherwise. Truncation at ``max_steps``.
"""

from __future__ import annotations

import logging
from typing import Optional

import gymnasium as gym
import numpy as np

# robosuite controller output limits for the default OSC_POSE config
POS_SCALE = 0.05  # metres per unit action
ROT_SCALE = 0.5  # radians per unit action
CONTROL_RATE_HZ = 20
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


class _QuietRobosuite:
    """Drop robosuite's INFO/WARNING console chatter (macro file, optional models) while active."""

    def __init__(self):
        self._logger = logging.getLogger("robosuite_logs")
        self._filter = lambda record: record.levelno >= logging.ERROR

    def __enter__(self):
        self._logger.addFilter(self._filter)
        return self

    def __exit__(self, *exc):
        self._logger.removeFilter(self._filter)
        return False


class _SeededGlobalRandom:
    """Run a block with numpy's global RNG seeded, then restore it.

    robosuite 1.5.1 draws object placements, object sizes and the robot's initial joint
    noise from ``np.random``; seeding it only around robosuite's own calls keeps episodes
    reproducible without touching anyone else's random stream.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self._state = np.random.get_state()
        np.random.seed(self.seed % 2**32)
        return self

    def __exit__(self, *exc):
        np.random.set_state(self._state)
        return False


class RobosuiteTaskEnv(gym.Env):
    """Gymnasium env around one robosuite manipulation task (Panda, OSC_POSE, 20 Hz, no cameras).

    Subclasses set ``ROBOSUITE_ENV`` (the robosuite environment name), ``OBS_NAMES``
    and ``make_kwargs`` (extra ``robosuite.make`` arguments), and implement
    ``_observe(obs_dict)``; success is robosuite's ``_check_success()``.
    ``reset(seed=s)`` gives the same initial state for the same ``s``. ``hard_reset=False``
    (default) keeps the MuJoCo model between episodes, which is much faster; anything
    robosuite draws when it builds the model (e.g. Lift's cube size) is then fixed by
    ``build_seed``.
    """

    metadata = {"render_modes": []}
    ROBOSUITE_ENV: str = ""
    OBS_NAMES: list[str] = []
    control_rate_hz = float(CONTROL_RATE_HZ)
    action_names = list(ACTION_NAMES)

    def __init__(self, max_steps: int, hard_reset: bool = False, build_seed: int = 0):
        super().__init__()
        self.max_steps = int(max_steps)
        with _QuietRobosuite(), _SeededGlobalRandom(build_seed):
            import robosuite
            from robosuite.controllers import load_composite_controller_config

            # Panda default: "BASIC" composite controller = OSC_POSE arm + GRIP gripper.
            controller_config = load_composite_controller_config(robot="Panda")
            self._env = robosuite.make(
                self.ROBOSUITE_ENV,
                robots="Panda",
                controller_configs=controller_config,
                has_renderer=False,
                has_offscreen_renderer=False,
                use_camera_obs=False,
                use_object_obs=True,
                reward_shaping=False,
                control_freq=CONTROL_RATE_HZ,
                horizon=self.max_steps,
                ignore_done=True,  # truncation is handled by this wrapper
                hard_reset=hard_reset,
                **self.make_kwargs(),
            )
        self.obs_names = list(self.OBS_NAMES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(len(self.obs_names),), dtype=np.float32)
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._t = 0

    def make_kwargs(self) -> dict:
        """Task-specific arguments of ``robosuite.make``."""
        return {}

    def _observe(self, obs_dict: dict) -> np.ndarray:
        raise NotImplementedError

    @property
    def robosuite_env(self):
        return self._env

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        rng = np.random.default_rng(int(seed))
        # robosuite >= 1.5.2 draws from its own generators instead of np.random: seed those too.
        if hasattr(self._env, "rng"):
            self._env.rng = rng
        sampler = getattr(self._env, "placement_initializer", None)
        for s in [sampler, *getattr(sampler, "samplers", {}).values()]:
            if s is not None and hasattr(s, "rng"):
                s.rng = rng
        with _SeededGlobalRandom(int(seed)):
            obs = self._env.reset()
        self._t = 0
        return self._observe(obs), {"is_success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        obs, _, _, _ = self._env.step(action)
        self._t += 1
        success = bool(self._env._check_success())
        truncated = (not success) and self._t >= self.max_steps
        return self._observe(obs), float(success), success, truncated, {"is_success": success}

    def close(self):
        try:
            self._env.close()
        except Exception:
            pass


def flatten(obs_dict: dict, keys: list[tuple[str, int]]) -> np.ndarray:
    """Concatenate robosuite observations ``[(key, size), ...]`` into one float32 vector."""
    return np.concatenate([np.asarray(obs_dict[k], dtype=np.float64).reshape(n) for k, n in keys]).astype(np.float32)


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


class ScriptedOperator:
    """Base of the scripted experts: per-episode hidden mode, seeding, and the hand servo.

    The episode's hidden mode is the grasp offset of :meth:`_draw_mode` (a subclass may override
    it: it returns the mode name and sets its per-episode state). A subclass implements ``act(obs)``, which picks a hand target and a gripper command and returns
    ``self.servo(...)``. Call ``start_episode()``, ``begin_episode(seed)`` or ``reset(rng)``
    before each episode.
    """

    def __init__(self, obs_names: list, obj: str, p_offset: float, offset_m: float, offset_axis: int,
                 offset_sign: int | None, hover_height: float, grasp_depth: float, close_steps: int,
                 noise_std: float, gain: float, seed: int):
        self.p_offset = p_offset
        self.offset_m = offset_m
        self.offset_axis = offset_axis
        self.offset_sign = offset_sign
        self.hover_height = hover_height
        self.grasp_depth = grasp_depth
        self.close_steps = close_steps
        self.noise_std = noise_std
        self.gain = gain
        # Where the hand's position and orientation and the object's position sit in the observation.
        idx = {n: i for i, n in enumerate(obs_names)}
        self._i_eef = [idx["eef_pos_x"], idx["eef_pos_y"], idx["eef_pos_z"]]
        self._i_quat = [idx["eef_quat_x"], idx["eef_quat_y"], idx["eef_quat_z"], idx["eef_quat_w"]]
        self._i_obj = [idx[f"{obj}_pos_x"], idx[f"{obj}_pos_y"], idx[f"{obj}_pos_z"]]
        self._episodes = np.random.default_rng(seed)
        self.reset(np.random.default_rng(0))

    def start_episode(self) -> str:
        """Draw the next episode's mode and noise from the expert's own seed (what ``collect_demos`` calls)."""
        return self.reset(np.random.default_rng(int(self._episodes.integers(2**63))))

    def begin_episode(self, seed: int) -> str:
        """Draw the mode and noise of the episode with this seed (reproducible per seed)."""
        return self.reset(np.random.default_rng([int(seed), 7919]))

    def reset(self, rng: np.random.Generator) -> str:
        self.rng = rng
        self.mode = self._draw_mode(rng)
        self.phase = None
        self.phase_t = 0
        self.ref_quat = None
        self._begin()
        return self.mode

    def _draw_mode(self, rng: np.random.Generator) -> str:
        """The grasp-offset operator both tasks use: with probability ``p_offset`` a calibration error
        shifts the grasp point by ``offset_m`` along ``offset_axis`` (sign ``offset_sign``, or random
        when None)."""
        mode = "offset" if rng.random() < self.p_offset else "careful"
        self.offset = np.zeros(3)
        if mode == "offset":
            sign = self.offset_sign if self.offset_sign is not None else (1 if rng.random() < 0.5 else -1)
            self.offset[self.offset_axis] = self.offset_m * float(np.sign(sign))
        return mode

    def _begin(self) -> None:
        """Per-episode state of the subclass (phase, targets)."""

    def _set_phase(self, phase) -> None:
        self.phase = phase
        self.phase_t = 0

    def servo(self, target: np.ndarray, eef: np.ndarray, quat: np.ndarray, gripper: float) -> np.ndarray:
        """Action that moves the hand towards ``target`` holding the episode's first orientation, plus noise."""
        if self.ref_quat is None:
            self.ref_quat = np.asarray(quat, dtype=np.float64).copy()
        dpos = np.clip(self.gain * (target - eef), -1.0, 1.0)
        rot_err = _quat_to_rotvec(_quat_mul(self.ref_quat, np.array([-quat[0], -quat[1], -quat[2], quat[3]])))
        drot = np.clip(2.0 * rot_err / ROT_SCALE, -1.0, 1.0)
        action = np.concatenate([dpos, drot, [gripper]])
        action[:6] += self.rng.normal(0.0, self.noise_std, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
